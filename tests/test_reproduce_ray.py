"""``prosv reproduce`` as work units: in this process and on a real local Ray cluster (2 CPU
worker processes, the tiny model, the fake AxBench folder of tests/test_reproduce.py and a
rule-based test judge; not a mock of Ray). Same unit folders and summary either way, a rerun runs
nothing, a worker killed with SIGKILL mid-unit is restarted and its unit retried, bad input is
refused before any folder is made, and unit file names with sub-folders are checked."""

import contextlib
import json
import os
import signal
import sys
import zlib
from pathlib import Path

import pytest
import torch
from test_reproduce import BIG_CPU, make_axbench_folder, make_setting

from prosv_lens.cli import main
from prosv_lens.errors import ExperimentError, JudgeError, RayUnavailableError, UnitError
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.experiments import ReproduceConfig, Setting, run_reproduce
from prosv_lens.experiments.units import UnitOutput, UnitStore, WorkUnit, compare_runs

try:
    import ray
except ImportError:  # the in-process and bad-input tests run without Ray
    ray = None
else:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this judge

needs_ray = pytest.mark.skipif(
    ray is None, reason="the Ray tests need the ray extra (bash install.sh installs it)"
)
K = 2  # concepts per unit: blocks (0, 1) and (2,): 1 utility + 2 x 2 train + 3 eval units
UNITS = 8


class HashJudge(Judge):
    """Test double: ratings are a deterministic hash of the answer (not a real judge); with
    ``die_once`` (a path), the first call in any process kills that process with SIGKILL; with
    ``fail_on`` (a concept), rating that concept raises a :class:`JudgeError`."""

    name = "hash-test-judge"

    def __init__(self, die_once: str | None = None, fail_on: str | None = None) -> None:
        self.die_once = die_once
        self.fail_on = fail_on

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        if self.fail_on and items[0].concept == self.fail_on:
            raise JudgeError(f"cannot rate {self.fail_on!r} (test)")
        if self.die_once and not Path(self.die_once).exists():
            Path(self.die_once).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9 of this worker, mid-unit
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


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
def setting(tmp_path_factory) -> Setting:
    return make_setting(make_axbench_folder(tmp_path_factory.mktemp("axbench")))


def _run(setting: Setting, out: Path, judge: Judge | None = None, **kw) -> list[str]:
    """Run the 3 concepts in units (the model loaded by name, as each worker does); returns the
    log lines."""
    lines: list[str] = []
    cfg = ReproduceConfig(setting, out_dir=str(out), concept_ids=(0, 1, 2))
    run_reproduce(
        cfg, judge=judge or HashJudge(), device=BIG_CPU, progress=False, log=lines.append, **kw
    )
    return lines


def _timeless(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    del summary["seconds"]
    return summary


def _same_run(a: Path, b: Path) -> None:
    """The same unit folders (bit for bit, timings aside), summary and assembled concept files."""
    assert compare_runs(a, b) == []
    assert _timeless(a) == _timeless(b)
    for name in ("rows.jsonl", "vectors/prosv.safetensors", "vectors/diffmean.safetensors"):
        for c in ("0000", "0001", "0002"):
            assert (a / "concepts" / c / name).read_bytes() == (
                b / "concepts" / c / name
            ).read_bytes()
    units = [p for p in (b / "units").iterdir()]
    assert len(units) == UNITS and all((u / "DONE").exists() for u in units)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, setting) -> Path:
    """The reference: the units in this process, one after another, on one torch thread."""
    out = tmp_path_factory.mktemp("sequential") / "run"
    with one_thread():  # as each 1-core worker: CPU float rounding depends on the thread count
        lines = _run(setting, out, concepts_per_unit=K)
    assert any(f"units: {UNITS} in all, 0 already done, {UNITS} run now" in s for s in lines)
    return out


def test_in_process_units_assemble_a_reproduction_folder(sequential):
    from prosv_lens.experiments.reproduce_results import ConceptResult, ReproduceSummary

    summary = ReproduceSummary.load(sequential / "summary.json")
    assert [c[0] for c in summary.concepts] == [0, 1, 2]
    for c in ("0000", "0001", "0002"):
        folder = sequential / "concepts" / c
        assert ConceptResult.load(folder / "result.json").concept_id == int(c)
        for name in ("concept.json", "utility.json", "rows.jsonl", "vectors/fssv.json"):
            assert (folder / name).exists(), name
    assert (sequential / "shared" / "utility_unsteered.json").exists()
    assert (sequential / "summary.md").read_text().strip()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; the executor joins it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@needs_ray
def test_two_ray_workers_give_the_in_process_units(local_ray, setting, sequential, tmp_path):
    out = tmp_path / "run"
    lines = _run(setting, out, concepts_per_unit=K, workers=2)
    assert any(f"{UNITS} run now on 2 worker(s), 0 failed" in s for s in lines)
    _same_run(sequential, out)
    # a rerun finds every unit done: nothing runs, the files stay the same
    again = _run(setting, out, concepts_per_unit=K, workers=2)
    assert any(f"{UNITS} already done, 0 run now" in s for s in again)
    _same_run(sequential, out)


@needs_ray
def test_a_worker_killed_mid_unit_is_restarted_and_its_unit_retried(
    local_ray, setting, sequential, tmp_path
):
    marker = tmp_path / "killed-once"
    out = tmp_path / "run"
    lines = _run(setting, out, HashJudge(die_once=str(marker)), concepts_per_unit=K, workers=2)
    assert marker.exists()  # a worker really died with SIGKILL while judging a unit
    assert any("0 failed" in s and "retried" in s for s in lines), lines
    assert not list((out / "units").glob(".tmp-*"))  # every unit exactly once, no temp folder
    _same_run(sequential, out)


def test_one_block_of_every_concept_writes_what_the_run_without_units_writes(setting, tmp_path):
    """Units of all 3 concepts train them in one pass, as the run without units does: the same
    files (vectors, judged rows, results) and summary, timings aside."""

    def files(run: Path) -> dict[str, Path]:
        paths = {p.relative_to(run): p for p in run.rglob("*") if p.is_file()}
        return {k.as_posix(): p for k, p in paths.items() if k.parts[0] != "units"}

    with one_thread():
        _run(setting, tmp_path / "plain")
        _run(setting, tmp_path / "units", concepts_per_unit=3)
    plain, units = files(tmp_path / "plain"), files(tmp_path / "units")
    assert set(units) - set(plain) == {"inputs.json"} and set(plain) <= set(units)
    assert _timeless(tmp_path / "plain") == _timeless(tmp_path / "units")
    for name, path in plain.items():
        if name.endswith((".safetensors", ".jsonl")):
            assert path.read_bytes() == units[name].read_bytes(), name


def test_a_failing_unit_is_reported_the_rest_finish_and_a_rerun_runs_only_it(
    setting, sequential, tmp_path
):
    out = tmp_path / "run"
    with one_thread(), pytest.raises(ExperimentError, match="FAILED eval concept 1 .* 2 tries"):
        _run(setting, out, HashJudge(fail_on="loops in code"), concepts_per_unit=K)
    assert [f["label"] for f in json.loads((out / "failed.json").read_text())] == ["eval concept 1"]
    assert (out / "concepts/0000/result.json").exists() and (
        out / "concepts/0002/result.json"
    ).exists()
    assert not (out / "concepts/0001/result.json").exists() and not (out / "summary.json").exists()
    with one_thread():
        lines = _run(setting, out, concepts_per_unit=K)
    assert any(f"{UNITS - 1} already done, 1 run now" in s for s in lines), lines
    assert not (out / "failed.json").exists()
    _same_run(sequential, out)


def test_a_plain_run_refuses_a_folder_in_units_and_back(setting, sequential, tmp_path):
    with pytest.raises(ExperimentError, match="holds a run in work units"):
        _run(setting, sequential)
    plain = tmp_path / "plain"
    (plain / "shared").mkdir(parents=True)
    (plain / "fingerprint.json").write_text((sequential / "fingerprint.json").read_text())
    (plain / "shared" / "utility_unsteered.json").write_text("{}")
    with pytest.raises(ExperimentError, match="run without work units"):
        _run(setting, plain, concepts_per_unit=K)


def test_no_ray_installed_is_one_line_before_any_folder(monkeypatch, setting, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'prosv-lens\[ray\]'") as e:
        _run(setting, tmp_path / "o", workers=2)
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()


def test_the_cli_without_ray_says_how_to_install_and_writes_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["reproduce", "smollm2-l12", "--workers", "2", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "pip install 'prosv-lens[ray]'" in err
    assert not (tmp_path / "o").exists()


@needs_ray
def test_an_unreachable_cluster_is_refused_before_any_folder(setting, tmp_path):
    with pytest.raises(RayUnavailableError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        _run(setting, tmp_path / "o", address="127.0.0.1:9")
    assert not (tmp_path / "o").exists()


def test_concepts_per_unit_below_one_is_refused(setting, tmp_path):
    with pytest.raises(ExperimentError, match="concepts_per_unit must be >= 1"):
        _run(setting, tmp_path / "o", concepts_per_unit=0)
    assert not (tmp_path / "o").exists()


def test_unit_files_in_sub_folders_are_stored_read_and_compared(tmp_path):
    unit = WorkUnit("eval", {"concept": 3})
    files = {"concepts/0003/vectors/prosv.safetensors": b"\x00\x01", "shared/x.json": b"{}"}
    store = UnitStore(tmp_path / "a")
    assert store.commit(unit, UnitOutput({"ok": 1}, files))
    assert store.output(unit).files == files
    copy = UnitStore(tmp_path / "b")
    copy.commit(unit, UnitOutput({"ok": 1}, {**files, "shared/x.json": b"[]"}))
    assert compare_runs(tmp_path / "a", tmp_path / "b") == [f"{unit.id}/shared/x.json: {{}} vs []"]
    for bad in ("../x", "/abs", "a/../b", "a//b", "./a", "", "result.json", "DONE", "a\\b"):
        with pytest.raises(UnitError, match="returned a file named"):
            UnitStore(tmp_path / "c").commit(unit, UnitOutput({}, {bad: b""}))
    assert not (tmp_path / "c" / "units" / unit.id).exists()
