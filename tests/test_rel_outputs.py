"""Reliability classes 4 and 5: outputs are checked before any work, finished work is never
thrown away, nothing is overwritten without ``--force``, and concurrent writers never share a
temporary file."""

import hashlib
import json
import threading
from pathlib import Path

import pytest
from _faults import SEA

import prosv_lens.cli as cli
import prosv_lens.vector_io as vector_io
from prosv_lens.cli import main
from prosv_lens.errors import OutputError
from prosv_lens.safe_io import write_json
from prosv_lens.vector_io import load_vector


def _jsonl(tmp_path: Path) -> Path:
    rows = [{"prompt": p, "response": r} for p, r in zip(SEA.prompts, SEA.responses, strict=True)]
    path = tmp_path / "sea.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _train(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "tiny",
        "--jsonl",
        str(_jsonl(tmp_path)),
        "--layer",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_an_existing_vector_is_not_replaced_without_force(tmp_path, capsys, monkeypatch):
    assert main(_train(tmp_path, tmp_path / "vecs")) == 0
    capsys.readouterr()
    before = _digest(tmp_path / "vecs")
    trained = []
    monkeypatch.setattr("prosv_lens.training.train", lambda *a, **k: trained.append(1))
    assert main(_train(tmp_path, tmp_path / "vecs", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err and err.count("\n") == 1
    assert trained == [] and _digest(tmp_path / "vecs") == before  # refused before any work
    monkeypatch.undo()
    assert main(_train(tmp_path, tmp_path / "vecs", "--epochs", "2", "--force")) == 0
    assert load_vector(tmp_path / "vecs" / "sea").info["train_config"]["epochs"] == 2


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_an_unwritable_out_is_found_before_training(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "vecs" if where == "under_a_file" else tmp_path / "afile"
    monkeypatch.setattr("prosv_lens.training.train", lambda *a, **k: pytest.fail("trained"))
    assert main(_train(tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert ("cannot be created" in err or "is a file" in err) and err.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "x"


def test_a_failing_final_save_keeps_the_vectors_and_says_where(tmp_path, capsys, monkeypatch):
    real = vector_io.save_vector
    planned = tmp_path / "vecs"

    def disk_full(vector, path, **kw):
        if Path(path).parent == planned:
            raise OSError(28, "No space left on device")
        return real(vector, path, **kw)

    monkeypatch.setattr(vector_io, "save_vector", disk_full)
    assert main(_train(tmp_path, planned)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in err and "were saved in" in err
    rescue = Path(err.split("were saved in ")[1].split(" instead")[0])
    assert load_vector(rescue / "sea").d_model == 32


def test_two_concepts_that_would_share_a_file_are_refused_before_work(tmp_path):
    with pytest.raises(OutputError, match="would both be saved as"):
        vector_io.plan_saves(tmp_path, ["Sea!", "sea?"])


def test_concurrent_atomic_writes_never_share_a_temporary_file(tmp_path):
    """The old checkpoint writer used one fixed temporary name: two writers crashed."""
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(50):
                write_json(tmp_path / "state.json", {"writer": i, "j": j})
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads((tmp_path / "state.json").read_text())["j"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_the_cli_module_keeps_no_private_slug_copy():
    assert not hasattr(cli, "_slug")  # one slug function: prosv_lens.concepts.concept_slug


def test_an_analysis_folder_is_never_mixed_or_silently_replaced(tiny, tmp_path):
    import torch

    from prosv_lens.experiments.analysis import run_attention_analysis
    from prosv_lens.interventions import SteeringVector

    sv = SteeringVector(torch.ones(tiny.d_model), layer=0, alpha=2.0)
    out = tmp_path / "analysis"
    run_attention_analysis(tiny, sv, ["Hi there"], out, max_new_tokens=3, what=["flow", "lens"])
    before = _digest(out)
    with pytest.raises(OutputError, match="earlier analysis.*--force"):
        run_attention_analysis(
            tiny, sv.scaled(2.0), ["Hi there"], out, max_new_tokens=3, what=["flow"]
        )
    assert _digest(out) == before
    run_attention_analysis(
        tiny, sv.scaled(2.0), ["Hi there"], out, max_new_tokens=3, what=["flow"], overwrite=True
    )
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "index.json",
        "flow.json",
        "flow.npz",
    }  # the earlier run's lens results are gone, not mixed with the new flow
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds other files"):
        run_attention_analysis(
            tiny, sv, ["Hi there"], tmp_path / "other", max_new_tokens=3, overwrite=True
        )
