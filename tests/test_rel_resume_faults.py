"""Reliability classes 3 and 5: every resumable artifact survives ``kill -9``, refuses a resume
with other inputs, and refuses a second concurrent run.

Artifacts: a training checkpoint folder, a demo run folder, a sweep folder and a reproduction
run folder (its fingerprint and lock tests are in ``test_reproduce.py``). Each job
runs in a child process (``_faults.py``) that sends itself SIGKILL mid-run; the resume runs here
and must give exactly what an uninterrupted run gives.
"""

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _faults import SEA, Holder, demo_job, reproduce_job, sweep_job, train_job

import prosv_lens.experiments.sweeps as sweeps
from prosv_lens.concepts import ConceptData
from prosv_lens.errors import ResultFileError, RunLockedError, RunMismatchError
from prosv_lens.models import make_tiny_model
from prosv_lens.training import TrainConfig, train

FAULTS = Path(__file__).with_name("_faults.py")


def _killed(job: str, folder: Path, kill_at: int) -> None:
    """Run ``job`` in a child that kills itself with SIGKILL at ``kill_at``."""
    proc = subprocess.run([sys.executable, str(FAULTS), job, str(folder), str(kill_at)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


# -- training checkpoints --------------------------------------------------------------------------


def test_a_killed_training_resumes_bit_identically(tmp_path):
    _killed("train", tmp_path / "ckpt", kill_at=3)
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()
    resumed = train_job(tmp_path / "ckpt", kill_at=0)
    straight = train_job(tmp_path / "straight", kill_at=0)
    assert resumed.steps == straight.steps - 3
    assert torch.equal(resumed.vectors["sea"].v, straight.vectors["sea"].v)
    assert torch.equal(resumed.vectors["sea"].alpha, straight.vectors["sea"].alpha)


def test_a_checkpoint_refuses_other_data_and_another_model(tmp_path):
    _killed("train", tmp_path, kill_at=2)
    other = ConceptData("sea", SEA.prompts, tuple(r + "!" for r in SEA.responses))
    with pytest.raises(RunMismatchError, match="data.sea"):
        train_job(tmp_path, kill_at=0, data=other)
    cfg = TrainConfig.prosv(1, epochs=3, batch_size=4)
    wider = make_tiny_model(d_model=48)
    with pytest.raises(RunMismatchError, match="model.d_model 32 -> 48"):
        train(wider, SEA, cfg, checkpoint_dir=tmp_path, progress=False)
    seeded = make_tiny_model(seed=1)  # same shapes and id scheme, other weights
    with pytest.raises(RunMismatchError, match="model."):
        train(seeded, SEA, cfg, checkpoint_dir=tmp_path, progress=False)


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    _killed("train", tmp_path, kill_at=2)
    raw = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception, match="not a readable checkpoint.*delete it") as e:
        train_job(tmp_path, kill_at=0)
    assert "\n" not in str(e.value)


def test_a_second_training_on_one_checkpoint_folder_is_refused(tmp_path):
    holder = Holder(tmp_path)
    with holder, pytest.raises(RunLockedError, match=f"pid {holder.proc.pid}"):
        train_job(tmp_path, kill_at=0)
    assert not (tmp_path / "checkpoint.pt").exists()


# -- demo run folders --------------------------------------------------------------------------------


def _rows(run: Path) -> list[str]:
    return sorted(run.joinpath("rows.jsonl").read_text().splitlines())


def test_a_killed_demo_resumes_to_the_uninterrupted_result(tmp_path):
    _killed("demo", tmp_path / "run", kill_at=3)  # during the judged steering answers
    partial = _rows(tmp_path / "run")
    assert partial and not (tmp_path / "run" / "results.json").exists()
    resumed, straight = demo_job(tmp_path / "run", 0), demo_job(tmp_path / "straight", 0)
    assert _rows(resumed) == _rows(straight)  # every row exactly once, none lost
    assert set(partial) <= set(_rows(resumed))
    a, b = (json.loads((r / "results.json").read_text()) for r in (resumed, straight))
    for key in ("steering", "robustness", "utility", "alphas", "diffmean_factor"):
        assert a[key] == b[key], key


def test_a_demo_folder_refuses_other_settings_and_a_concurrent_run(tmp_path):
    demo_job(tmp_path, 0)
    before = _rows(tmp_path)
    for changes, says in (({"max_new_tokens": 5}, "settings.max_new_tokens 4 -> 5"),
                          ({"epochs": 2}, "settings.epochs 1 -> 2"),
                          ({"seed": 1}, "settings.seed 0 -> 1")):  # fmt: skip
        with pytest.raises(RunMismatchError, match=says):
            demo_job(tmp_path, 0, **changes)
    with Holder(tmp_path), pytest.raises(RunLockedError, match="in use by another run"):
        demo_job(tmp_path, 0)
    assert _rows(tmp_path) == before


# -- sweep folders ----------------------------------------------------------------------------------


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    _killed("sweep", tmp_path / "sweep", kill_at=3)  # after the baseline and the first cell
    units = list((tmp_path / "sweep" / "units").iterdir())
    done = [u for u in units if (u / "DONE").exists()]
    assert 0 < len(done) < 7 and not (tmp_path / "sweep" / "sweep.json").exists()
    resumed = sweep_job(tmp_path / "sweep", 0)
    straight = sweep_job(tmp_path / "straight", 0)
    strip = lambda s: [dataclasses.replace(c, seconds={}) for c in s.cells]  # noqa: E731
    assert strip(resumed) == strip(straight) and resumed.baseline == straight.baseline
    assert _rows(tmp_path / "sweep") == _rows(tmp_path / "straight")


def test_a_sweep_folder_refuses_other_data_settings_and_a_concurrent_run(tmp_path, monkeypatch):
    sweep_job(tmp_path, 0)
    real = sweeps.sweep_data

    def edited(model, cfg, concept):  # the same config over a changed data file
        data = real(model, cfg, concept)
        return ConceptData(data.name, data.prompts, (data.responses[0] + "!", *data.responses[1:]))

    monkeypatch.setattr(sweeps, "sweep_data", edited)
    with pytest.raises(RunMismatchError, match="data"):
        sweep_job(tmp_path, 0)
    monkeypatch.undo()
    with pytest.raises(Exception, match="another config"):
        sweep_job(tmp_path, 0, max_new_tokens=4)
    with Holder(tmp_path), pytest.raises(RunLockedError):
        sweep_job(tmp_path, 0)


def test_a_corrupt_sweep_file_is_a_one_line_error(tmp_path):
    first = sweep_job(tmp_path, 0)
    # sweep.json is assembled from the units on every run: a damaged copy is rebuilt
    raw = (tmp_path / "sweep.json").read_text()
    (tmp_path / "sweep.json").write_text(raw[: len(raw) // 2])
    assert sweep_job(tmp_path, 0).cells == first.cells
    # a damaged unit result is named, in one line, not silently recomputed or mixed
    result = sorted((tmp_path / "units").glob("*/result.json"))[0]
    result.write_text(result.read_text()[:10])
    with pytest.raises(ResultFileError, match="result.json is not valid JSON") as e:
        sweep_job(tmp_path, 0)
    assert "\n" not in str(e.value)


# -- reproduction folders ----------------------------------------------------------------------------


def test_a_killed_reproduction_resumes_to_the_uninterrupted_result(tmp_path):
    from test_reproduce import _results

    # 7 judge calls per concept: the 10th is in the middle of the second concept's steering.
    _killed("reproduce", tmp_path / "run", kill_at=10)
    assert (tmp_path / "run" / "concepts" / "0000" / "result.json").exists()
    assert not (tmp_path / "run" / "summary.json").exists()
    reproduce_job(tmp_path / "run", 0)
    reproduce_job(tmp_path / "straight", 0)
    assert _results(tmp_path / "run") == _results(tmp_path / "straight")
