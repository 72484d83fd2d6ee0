"""Sweeps as work units on a real local Ray cluster (2 CPU worker processes, the tiny model, a
rule-based test judge; not a mock of Ray): the same files as the in-process run, a worker killed
with SIGKILL mid-unit, a driver killed with SIGKILL, a unit failing on bad data, and bad input."""

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch

ray = pytest.importorskip(
    "ray", reason="the Ray tests need the ray extra (bash install.sh installs it)"
)

from prosv_lens.errors import RayUnavailableError, SweepError, UnitError  # noqa: E402
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating  # noqa: E402
from prosv_lens.experiments import ray_executor  # noqa: E402
from prosv_lens.experiments.sweeps import (  # noqa: E402
    HeatmapConfig,
    PositionSweepConfig,
    SweepJob,
    execute_sweep,
)
from prosv_lens.experiments.units import UnitStore, WorkUnit, check_units, compare_runs  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get these judges

SIZES = {"model": "tiny", "layer": 1, "epochs": 1, "batch_size": 4, "n_train": 4,
         "n_heldout": 2, "n_eval": 2, "max_new_tokens": 3}  # fmt: skip
POS = PositionSweepConfig(specs=("all", "f2+l2", "l2"), **SIZES)  # 7 units


class HashJudge(Judge):
    """Test double: ratings are a deterministic hash of the answer (not a real judge)."""

    name = "hash-test-judge"

    def __init__(self, die_once: str | None = None) -> None:
        self.die_once = die_once

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        if self.die_once and not Path(self.die_once).exists():
            Path(self.die_once).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9 of this worker, mid-unit
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


def hash_judge(model, die_once: str | None = None) -> Judge:  # noqa: ANN001
    return HashJudge(die_once)


@contextlib.contextmanager
def one_thread():
    """torch on one thread for the block (the Ray workers' default, ``--cpus-per-worker 1``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; the executor joins it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    """The reference: the same sweep in this process, one unit after another."""
    out = tmp_path_factory.mktemp("sequential")
    with one_thread():  # as each 1-core worker: CPU float rounding depends on the thread count
        run = execute_sweep(SweepJob(POS, judge_factory=hash_judge), out, progress=False)
    assert run.summary.complete and run.summary.ran == 7
    return out


def _timeless(folder: Path) -> dict:
    sweep = json.loads((folder / "sweep.json").read_text())
    sweep["cells"] = [{k: v for k, v in c.items() if k != "seconds"} for c in sweep["cells"]]
    return sweep


def _same_files(a: Path, b: Path) -> None:
    """Same sweep (timings aside), same judged rows, same unit results and vectors, bit for bit."""
    assert _timeless(a) == _timeless(b)
    assert (a / "rows.jsonl").read_bytes() == (b / "rows.jsonl").read_bytes()
    assert compare_runs(a, b) == []
    assert all((u / "DONE").exists() for u in (b / "units").iterdir())


def _rows(folder: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    return [(r["method"], r["instruction_id"]) for r in rows]


def test_two_ray_workers_give_the_sequential_files(local_ray, sequential, tmp_path):
    run = execute_sweep(
        SweepJob(POS, judge_factory=hash_judge), tmp_path, workers=2, progress=False
    )
    assert run.summary.complete and run.summary.ran == 7 and run.summary.workers == 2
    assert not run.summary.failed and not list((tmp_path / "units").glob(".tmp-*"))
    _same_files(sequential, tmp_path)
    # a rerun finds every unit done: nothing runs, the files stay the same
    again = execute_sweep(
        SweepJob(POS, judge_factory=hash_judge), tmp_path, workers=2, progress=False
    )
    assert again.summary.ran == 0 and again.summary.already_done == 7
    _same_files(sequential, tmp_path)


def test_a_worker_killed_mid_unit_is_restarted_and_its_unit_retried(
    local_ray, sequential, tmp_path
):
    marker = tmp_path / "killed-once"
    job = SweepJob(POS, judge_factory=functools.partial(hash_judge, die_once=str(marker)))
    out = tmp_path / "out"
    run = execute_sweep(job, out, workers=2, progress=False)
    assert marker.exists()  # a worker really died with SIGKILL while judging a unit
    assert run.summary.retried >= 1 and not run.summary.failed and run.summary.complete
    assert len(list((out / "units").iterdir())) == 7  # every unit exactly once, no temp folder
    rows = _rows(out)
    assert len(rows) == len(set(rows)) == 2 * 4  # no duplicated or lost judged answer
    _same_files(sequential, out)


RAY_DRIVER = """
import sys, functools
sys.path.insert(0, {tests!r})
import test_ray_sweeps as t
from prosv_lens.experiments.sweeps import SweepJob, execute_sweep
cfg = t.PositionSweepConfig(specs=("all", "f2+l2", "l2", "f4", "l4", "f4+l4"), **t.SIZES)
execute_sweep(SweepJob(cfg, judge_factory=t.hash_judge), {out!r}, workers=2, progress=False)
"""


def test_a_killed_driver_is_resumed_by_rerunning_the_same_command(tmp_path):
    out = tmp_path / "out"
    script = RAY_DRIVER.format(tests=str(Path(__file__).parent), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if len(list(out.glob("units/*/DONE"))) >= 3:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the driver ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    time.sleep(2)  # the driver's local Ray processes share its fate: let them go
    done_before = len(list(out.glob("units/*/DONE")))
    assert 3 <= done_before < 13
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(out.glob("units/*/DONE"))) == 13 and not list(out.glob("units/.tmp-*"))
    cfg = PositionSweepConfig(specs=("all", "f2+l2", "l2", "f4", "l4", "f4+l4"), **SIZES)
    with one_thread():
        straight = execute_sweep(
            SweepJob(cfg, judge_factory=hash_judge), tmp_path / "straight", progress=False
        )
    assert straight.summary.ran == 13
    _same_files(tmp_path / "straight", out)


def _axbench_with_a_short_concept(root: Path) -> Path:
    """Three AxBench concepts in the release layout; concept 1 has only 3 examples."""
    concepts = [(0, "the ocean", "text"), (1, "tiny data", "text"), (2, "mountains", "text")]
    root.mkdir(parents=True)
    meta = [{"concept_id": i, "concept": c, "ref": "", "concept_genres_map": {c: [g]}}
            for i, c, g in concepts]  # fmt: skip
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    rows = [dict(input=f"Tell me fact {j}.", output=f"Fact {j} is about {c}.", output_concept=c,
                 concept_genre=g, category="positive", concept_id=i, dataset_category="instruction")
            for i, c, g in concepts for j in range(3 if i == 1 else 7)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "train_data.parquet")
    return root


@pytest.mark.parametrize("workers", [None, 2], ids=["in-process", "ray"])
def test_a_unit_failing_on_bad_data_is_reported_and_the_rest_finish(local_ray, tmp_path, workers):
    axbench = _axbench_with_a_short_concept(tmp_path / "axbench")
    cfg = HeatmapConfig(betas=(2.0,), lr_alphas=(1.0,), optimizers=("adam",), axbench=str(axbench),
                        n_concepts=3, **SIZES)  # fmt: skip
    out = tmp_path / "out"
    run = execute_sweep(
        SweepJob(cfg, judge_factory=hash_judge), out, workers=workers, progress=False
    )
    failed = {f.label: f for f in run.summary.failed}
    assert set(failed) == {"unsteered / concept 1", "train adam beta=2 lr_alpha=1 / concept 1"}
    for f in failed.values():
        assert f.attempts == 2 and "has 3 examples" in f.error
    assert run.summary.skipped == ["eval adam beta=2 lr_alpha=1 / concept 1"]
    assert run.summary.ran == 6 and not run.summary.complete
    saved = json.loads((out / "failed.json").read_text())
    assert {f["label"] for f in saved} == set(failed)
    for concept in (0, 2):  # the other concepts finished
        sweep = json.loads((out / f"concept_{concept}" / "sweep.json").read_text())
        assert sweep["baseline"] is not None and len(sweep["cells"]) == 1
    assert json.loads((out / "concept_1" / "sweep.json").read_text())["cells"] == []


def test_units_with_one_id_are_refused():
    a = WorkUnit("train", {"beta": 2.0}, "cell a")
    with pytest.raises(UnitError, match="same settings"):
        check_units([a, WorkUnit("train", {"beta": 2.0}, "cell b")])
    with pytest.raises(UnitError, match="unknown or later"):
        check_units([WorkUnit("eval", {}, "e", after=(a.id,)), a])
    assert a.id == WorkUnit("train", {"beta": 2.0}, "renamed").id  # the label is not the id
    assert a.id != WorkUnit("train", {"beta": 2.5}).id


def test_a_committed_unit_is_never_overwritten(tmp_path):
    from prosv_lens.experiments.units import UnitOutput

    store, unit = UnitStore(tmp_path), WorkUnit("train", {"x": 1})
    assert store.commit(unit, UnitOutput({"v": 1}))
    assert not store.commit(unit, UnitOutput({"v": 2}))  # a late duplicate is discarded
    assert store.output(unit).result == {"v": 1}


def test_no_ray_installed_is_one_line_saying_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'prosv-lens\[ray\]'") as e:
        execute_sweep(SweepJob(POS, judge_factory=hash_judge), tmp_path, workers=2, progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_an_unreachable_cluster_is_a_clear_error(address):
    with pytest.raises(RayUnavailableError, match=f"cannot reach the Ray cluster at {address}"):
        ray_executor.connect(ray, workers=None, address=address, cpus_per_worker=1)
    with pytest.raises(RayUnavailableError, match="not HOST:PORT"):
        ray_executor.connect(ray, workers=None, address="nowhere", cpus_per_worker=1)


def test_a_folder_of_another_run_is_refused_before_any_unit(local_ray, sequential, tmp_path):
    other = PositionSweepConfig(specs=("all", "f4"), **SIZES)
    with pytest.raises(SweepError, match="another config"):
        execute_sweep(SweepJob(other, judge_factory=hash_judge), sequential, workers=2,
                      progress=False)  # fmt: skip
    assert len(list((sequential / "units").iterdir())) == 7  # nothing added or replaced


def test_the_cli_without_ray_says_how_to_install_and_writes_nothing(monkeypatch, tmp_path, capsys):
    from prosv_lens.cli import main

    config = tmp_path / "s.json"
    config.write_text(json.dumps({"kind": "positions", "model": "tiny", "layer": 1}))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["sweep", str(config), "--workers", "2", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "pip install 'prosv-lens[ray]'" in err
    assert not (tmp_path / "o").exists()


def test_compare_runs_names_what_differs(sequential, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sequential / "units", copy / "units")
    assert compare_runs(sequential, copy) == []
    key = "heldout_loss"  # in the baseline's and every training unit's result
    result = next(p for p in sorted((copy / "units").glob("*/result.json")) if key in p.read_text())
    data = json.loads(result.read_text())
    concept = next(iter(data["concepts"].values()))
    concept[key] *= 1 + 1e-7
    result.write_text(json.dumps(data))
    assert compare_runs(sequential, copy, rtol=1e-5) == []
    (diff,) = compare_runs(sequential, copy)
    assert diff.startswith(f"{result.parent.name}/result.json.concepts.") and key in diff
    shutil.rmtree(result.parent)
    assert compare_runs(sequential, copy, rtol=1e-5) == [
        f"unit {result.parent.name} only in {sequential}"
    ]
