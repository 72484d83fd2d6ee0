"""``prosv reproduce`` mechanics on the tiny model, a tiny AxBench-like folder and a rule-based
test judge (not a real judge): errors before any work, dry-run plans without downloads, a device
too small refused by stage, resume without repeating finished work (also after a kill), and
fingerprint changes refused."""

import inspect
import json
import shutil
import zlib
from pathlib import Path

import pandas as pd
import pytest
from _faults import Holder

import prosv_lens.experiments.reproduce as reproduce
from prosv_lens.cli import main
from prosv_lens.errors import DeviceFitError, ExperimentError, RunLockedError, RunMismatchError
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.experiments import (
    SETTINGS,
    DeviceInfo,
    ModelShape,
    ReproduceConfig,
    Resources,
    RunSizes,
    Setting,
    make_config,
    plan_run,
    run_reproduce,
)
from prosv_lens.models import make_tiny_model

CONCEPTS = [(0, "the deep sea", "text"), (1, "loops in code", "code"), (2, "prime numbers", "math")]
SIZES = RunSizes(n_concepts=2, n_train=4, epochs=1, batch_size=2, max_response_tokens=8, n_eval=4,
                 max_new_tokens=3, eval_batch_size=4, n_utility=2, utility_tokens=2,
                 n_kl_prompts=1, utility_batch_size=4)  # fmt: skip
# A plan-only device: no probing (memory given), generous rates.
BIG_CPU = DeviceInfo("cpu", "test CPU", 64e9, 64e9, 1e11, 1e10, "given")


class HashJudge(Judge):
    """Test double: ratings are a deterministic hash of the response text; counts its calls
    per concept and can simulate a kill (``KeyboardInterrupt``) at its ``kill_at``-th call."""

    name = "hash-test-judge"

    def __init__(self, kill_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.kill_at = kill_at

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        self.calls.append(items[0].concept)
        if self.kill_at is not None and len(self.calls) >= self.kill_at:
            raise KeyboardInterrupt("simulated kill")
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


def make_axbench_folder(root: Path) -> Path:
    """Three concepts in AxBench's release layout: 6 positives each, 6 negatives per genre."""
    root.mkdir(parents=True, exist_ok=True)
    meta = [{"concept_id": i, "concept": c, "ref": "", "concept_genres_map": {c: [g]}}
            for i, c, g in CONCEPTS]  # fmt: skip
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    common = {"dataset_category": "instruction"}
    rows = [dict(input=f"Tell me fact {j}.", output=f"Fact {j} is about {c}.", output_concept=c,
                 concept_genre=g, category="positive", concept_id=i, **common)
            for i, c, g in CONCEPTS for j in range(6)]  # fmt: skip
    rows += [dict(input=f"Say {g} {j}.", output=f"Plain answer {j}.", output_concept="EEEEE",
                  concept_genre=g, category="negative", concept_id=-1, **common)
             for g in ("text", "code", "math") for j in range(6)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "train_data.parquet")
    return root


def make_setting(axbench: Path) -> Setting:
    """A toy setting on the tiny model over ``axbench`` (see :func:`make_axbench_folder`)."""
    tiny = make_tiny_model()
    shape = ModelShape(3, 32, 64, 4, 2, 8, len(tiny.tokenizer))
    return Setting(name="tiny-test", model="tiny", layer=1, dtype="float32",
                   axbench=str(axbench), local_folder=None, shape=shape,
                   diffmean_factors=(0.2, 0.8), sizes=SIZES)  # fmt: skip


@pytest.fixture(scope="module")
def axbench_folder(tmp_path_factory) -> Path:
    return make_axbench_folder(tmp_path_factory.mktemp("axbench"))


@pytest.fixture(scope="module")
def setting(axbench_folder) -> Setting:
    return make_setting(axbench_folder)


@pytest.fixture
def counted(monkeypatch):
    """Counts training passes (concepts per pass) and judged-steering calls (per concept)."""
    calls = {"train": [], "evaluate": []}
    real_train, real_eval = reproduce.train, reproduce.evaluate_steering

    def train(model, data, cfg, **kw):
        calls["train"].append((cfg.positions, [d.name for d in data]))
        return real_train(model, data, cfg, **kw)

    def evaluate(model, concept, *args, **kw):
        calls["evaluate"].append(concept)
        return real_eval(model, concept, *args, **kw)

    monkeypatch.setattr(reproduce, "train", train)
    monkeypatch.setattr(reproduce, "evaluate_steering", evaluate)
    return calls


def _run(tiny, setting, out, judge=None, **changes):
    cfg = ReproduceConfig(setting, out_dir=str(out), **changes)
    return run_reproduce(
        cfg, model=tiny, judge=judge or HashJudge(), device=BIG_CPU, progress=False
    )


def _results(out: Path) -> dict:
    """Everything a run produced except timings: summary, per-concept results, judged rows."""
    drop = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    got = {"summary": drop(json.loads((out / "summary.json").read_text()))}
    for d in sorted((out / "concepts").iterdir()):
        got[d.name] = drop(json.loads((d / "result.json").read_text()))
        got[d.name + "/rows"] = (d / "rows.jsonl").read_text()
    return got


@pytest.fixture(scope="module")
def finished(tmp_path_factory, setting) -> Path:
    """An uninterrupted run of 2 concepts (copied by the tests that need one)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    _run(make_tiny_model(), setting, out)
    return out


def test_unknown_setting_is_a_one_line_error(capsys):
    assert main(["reproduce", "gemma-7-l99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prosv reproduce: error: unknown setting 'gemma-7-l99': choose one of ")
    assert "gemma-2-9b-l31" in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--help"])
    assert e.value.code == 0 and "usage: prosv reproduce" in capsys.readouterr().out


def test_registry_embeds_the_public_shapes():
    assert set(SETTINGS) == {"gemma-2-2b-l10", "gemma-2-2b-l20", "gemma-2-9b-l20", "gemma-2-9b-l31",
                             "smollm2-l12"}  # fmt: skip
    g2, g9 = SETTINGS["gemma-2-2b-l10"], SETTINGS["gemma-2-9b-l31"]
    assert g2.shape.n_params == pytest.approx(2.61e9, rel=0.01)  # Gemma-2-2B: 2.61 B
    assert g9.shape.n_params == pytest.approx(9.24e9, rel=0.01)  # Gemma-2-9B: 9.24 B
    assert (g9.model, g9.layer, g9.dtype, g9.axbench) == (
        "google/gemma-2-9b-it",
        31,
        "bfloat16",
        "hf:pyvene/axbench-concept10/9b/l31",
    )
    assert (g9.shape.final_softcap, g9.shape.attn_softcap, g9.shape.d_vocab) == (30.0, 50.0, 256000)
    assert SETTINGS["smollm2-l12"].dtype == "float32"
    assert g2.sizes.epochs is None and g2.sizes.batch_size == 12 and g2.sizes.n_eval == 10
    assert make_config("gemma-2-9b-l20").setting.fssv == (("beta", 2.0), ("lr_alpha", 0.1), ("c", 8.0), ("epochs", 18))  # fmt: skip


def test_dry_run_plans_gemma_9b_without_loading_or_downloading(capsys, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run must not load a model or download anything")

    monkeypatch.setattr(reproduce, "load_model", forbidden)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", forbidden)
    monkeypatch.setattr("huggingface_hub.snapshot_download", forbidden)
    monkeypatch.setattr(
        "transformer_lens.model_bridge.TransformerBridge.boot_transformers", forbidden
    )
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    argv = ["reproduce", "gemma-2-9b-l31", "--dry-run", "--device-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "plan for gemma-2-9b-l31: 9.24 B parameters in bfloat16, layer 31" in out
    for stage in ("| load model |", "| train prosv |", "| train fssv |", "| diffmean |",
                  "| steering eval |", "| utility |", "**total**"):  # fmt: skip
        assert stage in out
    assert "weights 18.48" in out and "matmul rate measured now" in out
    assert "These are estimates" in out and "does not fit" not in out
    assert "HF_HUB_OFFLINE=1" in out  # neither the model nor the data is here, and it says so


def test_a_device_too_small_is_refused_naming_the_stage(capsys):
    given = ["--device-tflops", "1", "--device-bandwidth", "10"]
    assert main(["reproduce", "gemma-2-9b-l31", "--dry-run", "--device-memory", "22", *given]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "stage 'train prosv' needs 24.1 GB" in err and "19.8 GB is usable" in err
    assert "**does not fit**" in captured.out  # the plan is printed before the refusal
    flags = err.split("it fits with ")[1].split()
    assert flags[0] == "--micro-rows"
    assert main(["reproduce", "gemma-2-9b-l31", "--dry-run", "--device-memory", "22", *given, *flags]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["reproduce", "gemma-2-9b-l31", "--dry-run", "--device-memory", "16", *given]) == 2
    err = capsys.readouterr().err
    assert "stage 'load model' needs 18.5 GB" in err and "use a device with at least 22 GB" in err


def test_plan_grows_with_the_knobs_it_names():
    s = SETTINGS["gemma-2-2b-l10"]
    small = plan_run(s, s.sizes, BIG_CPU, Resources(micro_rows=1), n_concepts=10)
    large = plan_run(s, s.sizes, BIG_CPU, Resources(micro_rows=64), n_concepts=10)
    train = [next(x for x in p.stages if x.name == "train prosv") for p in (small, large)]
    assert train[0].peak < train[1].peak and train[0].seconds == train[1].seconds
    assert small.seconds > 0 and all(st.peak >= 2.61e9 * 2 * 0.99 for st in small.stages)
    with pytest.raises(DeviceFitError, match="stage 'load model'"):
        plan_run(s, s.sizes, DeviceInfo("cpu", "x", 4e9, 4e9, 1e11, 1e10, "given"),
                 Resources(), n_concepts=1).check()  # fmt: skip


def test_run_writes_the_summary_and_a_rerun_skips_finished_work(tiny, setting, finished, tmp_path, counted):  # fmt: skip
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    summary = json.loads((out / "summary.json").read_text())
    assert [m["method"] for m in summary["methods"]] == ["unsteered", "prompt", "diffmean", "prosv", "fssv"]  # fmt: skip
    for m in summary["methods"]:
        assert 0 <= m["overall"]["mean"] <= 2 and m["n_answers"] == 2 * 2
        assert 0 <= m["utility_accuracy"]["mean"] <= 1
        assert (m["kl"] is None) == (m["method"] == "unsteered")
    assert len(summary["per_concept"]) == 2 * 5
    md = (out / "summary.md").read_text()
    assert "| prosv |" in md and "## Per concept" in md and "| loops in code | fssv |" in md
    fp = json.loads((out / "fingerprint.json").read_text())
    assert (
        fp["train"]["prosv"]["positions"] == "f2+l2" and fp["train"]["fssv"]["positions"] == "all"
    )
    assert {"setting", "model", "dtype", "data_source", "sizes", "judge", "package_version"} <= set(fp)  # fmt: skip
    assert not (out / "checkpoints").exists()

    again = _run(tiny, setting, out)  # same command: nothing left to do
    assert counted == {"train": [], "evaluate": []}
    saved_again = json.loads(json.dumps(again.to_dict()))  # as the file holds it
    assert {k: v for k, v in saved_again.items() if k != "seconds"} == _results(out)["summary"]

    sizes3 = SIZES.replace(n_concepts=3)  # one more concept: only it is trained and judged
    _run(tiny, setting, out, sizes=sizes3)
    assert counted["train"] == [("f2+l2", ["prime numbers"]), ("all", ["prime numbers"])]
    assert counted["evaluate"] == ["prime numbers"]


def test_a_killed_run_resumes_without_repeating_a_finished_concept(tiny, setting, finished, tmp_path, counted):  # fmt: skip
    out = tmp_path / "run"
    # 7 judge calls per concept (5 methods' test batches + 2 DiffMean factors' selection
    # batches): the 10th is in the middle of the second concept's steering evaluation.
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, setting, out, judge=HashJudge(kill_at=10))
    assert (out / "concepts" / "0000" / "result.json").exists()
    assert not (out / "concepts" / "0001" / "result.json").exists()
    assert (out / "concepts" / "0001" / "rows.jsonl").read_text().count("\n") > 0
    counted["train"].clear()
    counted["evaluate"].clear()
    judge = HashJudge()
    _run(tiny, setting, out, judge=judge)
    assert counted["train"] == []  # both vectors of both concepts were saved before the kill
    assert counted["evaluate"] == ["loops in code"]
    assert set(judge.calls) == {"loops in code"} and len(judge.calls) == 7 - 2
    assert _results(out) == _results(finished)  # the same results as the uninterrupted run


def test_a_reproduction_folder_is_locked(tiny, setting, finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = _results(out)
    with Holder(out), pytest.raises(RunLockedError, match="in use by another run"):
        _run(tiny, setting, out)
    assert _results(out) == before


def test_a_different_fingerprint_is_refused(tiny, setting, finished, tmp_path, counted):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = (out / "fingerprint.json").read_text()
    with pytest.raises(RunMismatchError) as e:
        _run(tiny, setting, out, sizes=SIZES.replace(epochs=2))
    msg = str(e.value)
    assert "\n" not in msg and "sizes.epochs 1 -> 2" in msg and "train.prosv.epochs 1 -> 2" in msg
    assert "use another --out" in msg
    with pytest.raises(RunMismatchError, match="judge 'hash-test-judge' -> 'other-judge'"):
        other = HashJudge()
        other.name = "other-judge"
        _run(tiny, setting, out, judge=other)
    assert counted == {"train": [], "evaluate": []}
    assert (out / "fingerprint.json").read_text() == before
    # Memory knobs change rounding only, so they do not count as a different run.
    _run(tiny, setting, out, resources=Resources(micro_rows=3, logits_budget_mb=64))
    assert counted == {"train": [], "evaluate": []}
    # A concept whose data changed is refused too.
    record = out / "concepts" / "0001" / "concept.json"
    record.write_text(record.read_text().replace('"data_sha256": "', '"data_sha256": "0'))
    with pytest.raises(RunMismatchError, match="holds results for other data of concept 1"):
        _run(tiny, setting, out)


def test_foreign_unwritable_and_offline_sources_fail_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (
            ["smollm2-l12", "--out", str(foreign)],
            "is not empty and holds no prosv-lens/reproduce run",
        ),  # fmt: skip
        (["smollm2-l12", "--out", str(afile / "sub")], "is not writable"),
        (
            [
                "smollm2-l12",
                "--out",
                str(tmp_path / "a"),
                "--axbench",
                "hf:pyvene/axbench-concept10/9b/l20",
            ],
            "the hub is disabled (HF_HUB_OFFLINE=1)",
        ),  # fmt: skip
    ]
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    cases.append((["gemma-2-2b-l10", "--out", str(tmp_path / "b")],
                  "model google/gemma-2-2b-it is not in the Hugging Face cache and the hub is disabled"))  # fmt: skip
    for argv, expected in cases:
        assert main(["reproduce", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no empty folder left


def test_unknown_concept_ids_fail_before_any_work(axbench_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    cfg = ReproduceConfig(SETTINGS["smollm2-l12"], out_dir=str(tmp_path / "c"),
                          axbench=str(axbench_folder), concept_ids=(1, 7))  # fmt: skip
    with pytest.raises(ExperimentError, match="concept ids \\[7\\] are not in"):
        run_reproduce(cfg, device=BIG_CPU)
    assert not (tmp_path / "c" / "fingerprint.json").exists()


@pytest.mark.skipif("arch" not in inspect.signature(make_tiny_model).parameters,
                    reason="make_tiny_model has no Gemma-2 variant in this checkout")  # fmt: skip
def test_f2_l2_on_gemma_2s_template_steers_bos_start_of_turn_and_the_last_two_tokens():
    """What docs/reproduce.md states: on Gemma's template shape f2 includes <bos>."""
    from prosv_lens.positions import PositionSpec
    from prosv_lens.prompts import encode_prompts

    model = make_tiny_model(arch="gemma2")
    batch = encode_prompts(model, ["Hi"])
    cols = PositionSpec.parse("f2+l2").resolve(batch).mask[0].nonzero().flatten().tolist()
    tokens = model.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert [tokens[c] for c in cols] == ["<bos>", "<start_of_turn>", "l", "\n"]  # ...model\n
    assert "".join(tokens[-7:]) == "<start_of_turn>model\n"
