"""Work units: a run split into independent pieces that any number of workers can finish.

A run (a sweep, a run over hundreds of AxBench concepts) is a list of :class:`WorkUnit` s, each
with a stable :attr:`~WorkUnit.id` derived from its settings (a hash of its kind and settings,
never of its position in the run or of the worker that ran it). A unit computes a
:class:`UnitOutput` (a JSON result plus named files, e.g. a trained vector); the *driver* (one
process) commits it into ``OUT/units/<id>/`` with :meth:`UnitStore.commit`: files are written into
a fresh temporary folder, the completion marker ``DONE`` last, and the folder is renamed into
place in one step. So:

* a unit is complete exactly when ``units/<id>/DONE`` exists; a killed worker or driver leaves a
  temporary folder, never a half-written unit;
* a unit is committed at most once: a second commit of the same id (a retried unit whose first
  try finished after all) is discarded;
* resuming means skipping marked units, whatever the number of workers was before.

Units run in list order on one process with :func:`run_units`, or on a Ray cluster with
:func:`prosv_lens.experiments.ray_executor.run_units_on_ray`; a :class:`UnitJob` says how to run
one unit and is the same object in both cases, so the files are the same whichever way the run
was executed (timings, kept apart in ``timing.json``, excepted).

A unit whose ``run`` raises is retried once (:data:`ATTEMPTS` tries in all); a unit that fails
every try is recorded in ``OUT/failed.json`` with its error, the units that depend on it are
skipped, and the run goes on. A rerun tries failed units again.
"""

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from prosv_lens.errors import ProsvError, RunMismatchError, UnitError  # noqa: F401 - re-exported
from prosv_lens.safe_io import read_json, sha256_json, write_json

UNITS_DIR = "units"
DONE_FILE = "DONE"
RESULT_FILE = "result.json"
UNIT_FILE = "unit.json"
TIMING_FILE = "timing.json"
FAILED_FILE = "failed.json"
ATTEMPTS = 2  # a unit that raises is tried twice before it is recorded as failed
ID_LENGTH = 16


@dataclass(frozen=True)
class WorkUnit:
    """One independent piece of a run.

    Attributes:
        kind: what the unit does, e.g. ``"train"``, ``"eval"`` (part of its id).
        settings: everything that determines its result, as JSON values (part of its id).
        label: a short human-readable name for progress lines and errors (not part of the id).
        after: ids of the units whose outputs it needs; they run first and their outputs are
            passed to :meth:`UnitJob.run`.
    """

    kind: str
    settings: Mapping[str, Any]
    label: str = ""
    after: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """A stable id: the first 16 hex digits of the SHA-256 of ``kind`` and ``settings``."""
        return sha256_json({"kind": self.kind, "settings": self.settings})[:ID_LENGTH]

    def describe(self) -> str:
        """``label (id)`` for messages."""
        return f"{self.label or self.kind} ({self.id})"


@dataclass(frozen=True)
class UnitOutput:
    """What a unit produced: a JSON ``result`` and named binary ``files`` (e.g. a vector).

    A file's name may be a relative path with ``/`` (``concepts/0003/vectors/prosv.json``): it is
    stored in that sub-folder of the unit's folder. Names are checked on commit
    (:func:`check_file_name`): no ``..``, not absolute, not one of the unit's own files.

    ``seconds`` (compute time in the worker, model loading excluded) and ``load_seconds`` (the
    time this call spent loading the model and data, 0 once they are loaded) go to
    ``timing.json``, apart from the result, so results compare equal across runs.
    """

    result: dict[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0
    load_seconds: float = 0.0


@runtime_checkable
class UnitJob(Protocol):
    """How to run the units of one run; pickled to every worker, so keep it small (settings,
    not a loaded model: load the model on the first :meth:`run` and keep it)."""

    def units(self) -> list[WorkUnit]:
        """Every unit of the run, dependencies before the units that need them."""
        ...

    def prepare(self) -> dict[str, Any]:
        """Load what units need (model, data); returns what identifies the run's inputs (JSON),
        which the driver checks against the folder before any unit runs."""
        ...

    def run(self, unit: WorkUnit, inputs: Mapping[str, UnitOutput]) -> UnitOutput:
        """Compute ``unit``; ``inputs`` maps each id in ``unit.after`` to its output."""
        ...


@dataclass(frozen=True)
class Failure:
    """A unit that failed every try: its id, label and the last error (one line)."""

    id: str
    label: str
    error: str
    attempts: int


@dataclass
class RunSummary:
    """What one invocation did: units complete before it, run now, failed and skipped."""

    total: int
    already_done: int = 0
    ran: int = 0
    failed: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # labels blocked by a failed unit
    retried: int = 0  # tries repeated after an error or a dead worker
    wall_seconds: float = 0.0
    unit_seconds: float = 0.0  # compute time summed over the units run now
    load_seconds: float = 0.0  # model/data loading summed over workers
    startup_seconds: float = 0.0  # before the first unit: starting workers, checking inputs
    overhead_seconds: float = 0.0  # Ray only: unit round trips minus their compute and loading
    workers: int = 1

    @property
    def complete(self) -> bool:
        """Every unit has its completion marker."""
        return self.already_done + self.ran == self.total

    def format(self) -> str:
        """A few lines for the end of a run."""
        lines = [
            f"units: {self.total} in all, {self.already_done} already done, {self.ran} run now "
            f"on {self.workers} worker(s), {len(self.failed)} failed, {len(self.skipped)} skipped"
            + (f", {self.retried} retried" if self.retried else ""),
        ]
        if self.ran:
            lines.append(
                f"time: {self.wall_seconds:.1f} s wall ({self.startup_seconds:.1f} s starting), "
                f"{self.unit_seconds:.1f} s of unit compute ({self.unit_seconds / self.ran:.2f} s "
                f"per unit), {self.load_seconds:.1f} s loading models, "
                f"{self.overhead_seconds / self.ran:.3f} s scheduling overhead per unit"
            )
        lines += [
            f"FAILED {f.label} ({f.id}) after {f.attempts} tries: {f.error}" for f in self.failed
        ]
        if self.failed:
            lines.append("fix the cause and rerun the same command: completed units are kept")
        return "\n".join(lines)


RESERVED = (DONE_FILE, RESULT_FILE, UNIT_FILE, TIMING_FILE)


def check_file_name(unit: WorkUnit, name: str) -> PurePosixPath:
    """A unit output's file name as a relative path.

    Raises:
        UnitError: the name is empty, absolute, has ``..``, ``.`` or empty parts or a
            backslash, or is one of the unit's own top-level files (``result.json``, ...).
    """
    path = PurePosixPath(name)
    bad = (
        not name
        or "\\" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
        or name in RESERVED
    )
    if bad:
        raise UnitError(f"unit {unit.describe()} returned a file named {name!r}")
    return path


def _files_under(folder: Path) -> list[str]:
    """The files in ``folder`` and its sub-folders as sorted ``/``-separated relative paths,
    the unit's own top-level files excluded."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(n for n in names if n not in RESERVED)


def check_units(units: Sequence[WorkUnit]) -> dict[str, WorkUnit]:
    """The units by id, in order.

    Raises:
        UnitError: two units share an id (their settings are identical: the config repeats a
            value), or a unit needs one that is not listed before it.
    """
    by_id: dict[str, WorkUnit] = {}
    for unit in units:
        if unit.id in by_id:
            raise UnitError(
                f"units {by_id[unit.id].label!r} and {unit.label!r} have the same settings (id "
                f"{unit.id}): remove the repeated value from the config"
            )
        missing = [a for a in unit.after if a not in by_id]
        if missing:
            raise UnitError(f"unit {unit.describe()} needs unknown or later units {missing}")
        by_id[unit.id] = unit
    return by_id


class UnitStore:
    """The ``units/`` folder of a run: which units are complete, their outputs, and commits.

    Only the driver writes here (workers return their outputs), so no worker needs the folder.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.root = self.out / UNITS_DIR

    def folder(self, unit_id: str) -> Path:
        """Where the unit's files live once committed."""
        return self.root / unit_id

    def is_done(self, unit_id: str) -> bool:
        """The unit's completion marker exists."""
        return (self.folder(unit_id) / DONE_FILE).exists()

    def output(self, unit: WorkUnit) -> UnitOutput:
        """A committed unit's output (its result and files, timing not included).

        Raises:
            RunMismatchError: the folder holds another unit (its ``unit.json`` differs).
            ResultFileError: a file is corrupt.
        """
        folder = self.folder(unit.id)
        saved = read_json(folder / UNIT_FILE, missing_ok=False)
        if saved != {"kind": unit.kind, "settings": json.loads(json.dumps(unit.settings))}:
            raise RunMismatchError(
                f"{folder} holds another unit than {unit.describe()}: move the folder away"
            )
        files = {name: (folder / name).read_bytes() for name in _files_under(folder)}
        return UnitOutput(read_json(folder / RESULT_FILE, missing_ok=False), files)

    def commit(self, unit: WorkUnit, output: UnitOutput) -> bool:
        """Write the unit's folder in one step; ``False`` (nothing changed) if it is already done."""
        if self.is_done(unit.id):
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{unit.id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            write_json(tmp / UNIT_FILE, {"kind": unit.kind, "settings": unit.settings})
            write_json(tmp / RESULT_FILE, output.result)
            for name, data in output.files.items():
                path = tmp / check_file_name(unit, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            timing = {"seconds": output.seconds, "load_seconds": output.load_seconds}
            write_json(tmp / TIMING_FILE, timing)
            (tmp / DONE_FILE).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
            final = self.folder(unit.id)
            if final.exists():  # a folder without DONE: a crash between rename steps; replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return True

    def clean(self) -> None:
        """Remove temporary folders left by a killed driver (call with the run lock held)."""
        if self.root.exists():
            for p in self.root.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)

    def record_failures(self, failures: Sequence[Failure]) -> None:
        """``failed.json``: this invocation's failed units (removed when none failed)."""
        path = self.out / FAILED_FILE
        if failures:
            write_json(path, [f.__dict__ for f in failures])
        elif path.exists():
            path.unlink()


class Progress:
    """A progress bar over units: done, running and failed counts, throughput and time left."""

    def __init__(self, total: int, done: int, *, enabled: bool = True) -> None:
        self.bar = tqdm(total=total, initial=done, unit="unit", disable=not enabled, smoothing=0)
        self.running = 0
        self.failed = 0

    def update(self, *, finished: int = 0, running: int | None = None, failed: int = 0) -> None:
        """Advance by ``finished`` units; set the running count; add failures."""
        if running is not None:
            self.running = running
        self.failed += failed
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=False)
        self.bar.update(finished)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


class Scheduler:
    """Which units can start: bookkeeping shared by the sequential and the Ray executors.

    Tracks done, running, failed and skipped units; a unit is ready when every unit it needs is
    done; a failed unit's dependents are skipped.
    """

    def __init__(self, units: Sequence[WorkUnit], store: UnitStore) -> None:
        self.units = check_units(units)
        self.store = store
        self.done = {uid for uid in self.units if store.is_done(uid)}
        self.waiting = [uid for uid in self.units if uid not in self.done]
        self.running: set[str] = set()
        self.tries: dict[str, int] = {}
        self.summary = RunSummary(total=len(self.units), already_done=len(self.done))

    def next_ready(self) -> WorkUnit | None:
        """The first waiting unit whose dependencies are done (taken off the queue), or None."""
        for uid in self.waiting:
            if all(a in self.done for a in self.units[uid].after):
                self.waiting.remove(uid)
                self.running.add(uid)
                return self.units[uid]
        return None

    def inputs(self, unit: WorkUnit) -> dict[str, UnitOutput]:
        """The outputs of the units ``unit`` needs."""
        return {a: self.store.output(self.units[a]) for a in unit.after}

    def finished(self, unit: WorkUnit, output: UnitOutput) -> None:
        """Commit a unit's output."""
        self.running.discard(unit.id)
        self.store.commit(unit, output)
        self.done.add(unit.id)
        self.summary.ran += 1
        self.summary.unit_seconds += output.seconds
        self.summary.load_seconds += output.load_seconds

    def errored(self, unit: WorkUnit, error: str, *, limit: int = ATTEMPTS) -> bool:
        """Count a failed try; True if the unit goes back on the queue (front), False if it is
        recorded as failed (its dependents are then skipped)."""
        self.running.discard(unit.id)
        self.tries[unit.id] = self.tries.get(unit.id, 0) + 1
        if self.tries[unit.id] < limit:
            self.summary.retried += 1
            self.waiting.insert(0, unit.id)
            return True
        self.summary.failed.append(Failure(unit.id, unit.label, error, self.tries[unit.id]))
        self._skip_dependents(unit.id)
        return False

    def _skip_dependents(self, failed: str) -> None:
        blocked = {failed}
        for uid in list(self.waiting):
            if any(a in blocked for a in self.units[uid].after):
                blocked.add(uid)
                self.waiting.remove(uid)
                self.summary.skipped.append(self.units[uid].label)


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (the first line of the message)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def default_unit_error(error: BaseException) -> bool:
    """Whether an exception is a unit's own failure (retried, then recorded) rather than the
    run's (raised at once): every :class:`ProsvError` except a model that cannot load."""
    from prosv_lens.errors import ModelLoadError

    return isinstance(error, ProsvError) and not isinstance(error, ModelLoadError)


def run_units(
    job: UnitJob,
    out_dir: str | Path,
    *,
    before: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    is_unit_error: Callable[[BaseException], bool] = default_unit_error,
) -> RunSummary:
    """Run the job's units not yet done, one after another in this process.

    Args:
        job: the run's units and how to compute one.
        out_dir: the run folder (the caller holds its :class:`~prosv_lens.safe_io.RunLock`).
        before: called with ``job.prepare()`` before the first unit runs (also when every unit
            is done); raise in it to stop the run (e.g. inputs of another run).
        progress: show a progress bar over units.
        is_unit_error: whether an exception is a unit's failure (retried once, then recorded and
            the run goes on) or the run's (raised at once).

    Returns:
        The :class:`RunSummary`; failures are also in ``OUT/failed.json``.
    """
    store = UnitStore(out_dir)
    store.clean()
    sched = Scheduler(job.units(), store)
    t0 = time.perf_counter()
    info = job.prepare()  # also when every unit is done: a rerun over changed inputs is refused
    if before is not None:
        before(info)
    sched.summary.startup_seconds = time.perf_counter() - t0
    bar = Progress(sched.summary.total, sched.summary.already_done, enabled=progress)
    try:
        while (unit := sched.next_ready()) is not None:
            bar.update(running=1)
            try:
                output = job.run(unit, sched.inputs(unit))
            except Exception as e:
                if not is_unit_error(e):
                    raise
                failed = not sched.errored(unit, one_line(e))
                bar.update(running=0, failed=int(failed))
                continue
            sched.finished(unit, output)
            bar.update(finished=1, running=0)
    finally:
        bar.close()
        sched.summary.wall_seconds = time.perf_counter() - t0
        store.record_failures(sched.summary.failed)
    return sched.summary


def execute_units(
    job: UnitJob,
    out_dir: str | Path,
    *,
    before: Callable[[dict[str, Any]], None] | None = None,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
) -> RunSummary:
    """Run the job's missing units in this process (``workers`` and ``address`` ``None``) or
    on Ray (:func:`~prosv_lens.experiments.ray_executor.run_units_on_ray`: a local instance with
    ``workers`` workers, or the cluster at ``address``, each worker with ``cpus_per_worker``
    cores and ``gpus_per_worker`` GPUs). Same units, same files either way."""
    if workers is None and address is None:
        return run_units(job, out_dir, before=before, progress=progress)
    from prosv_lens.experiments.ray_executor import run_units_on_ray

    return run_units_on_ray(
        job,
        out_dir,
        before=before,
        workers=workers,
        address=address,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        progress=progress,
    )


def compare_runs(a: str | Path, b: str | Path, *, rtol: float = 0.0) -> list[str]:
    """Where two run folders' completed units differ (an empty list: the same results).

    Every unit folder of either run is compared, sub-folders included: the same ids, binary files
    (vectors) byte for byte, and ``result.json`` and ``*.jsonl`` files value by value, numbers within ``rtol``
    relative tolerance; timings (``timing.json`` and every ``seconds`` field) are ignored.

    Two executions of one run give the same answers, vectors and scores, but a float computed
    on a CPU (e.g. an embedding model's cosine) can differ in its last digits (~1e-7) between
    processes with another number of threads: compare such runs with ``rtol=1e-5``.
    """
    a, b = Path(a) / UNITS_DIR, Path(b) / UNITS_DIR
    ids_a = {p.name for p in a.iterdir() if not p.name.startswith(".")} if a.exists() else set()
    ids_b = {p.name for p in b.iterdir() if not p.name.startswith(".")} if b.exists() else set()
    found = [f"unit {u} only in {a.parent}" for u in sorted(ids_a - ids_b)]
    found += [f"unit {u} only in {b.parent}" for u in sorted(ids_b - ids_a)]
    for uid in sorted(ids_a & ids_b):
        names = set(_files_under(a / uid)) | set(_files_under(b / uid)) | {RESULT_FILE, UNIT_FILE}
        for name in sorted(names):
            fa, fb = a / uid / name, b / uid / name
            if not (fa.exists() and fb.exists()):
                found.append(f"{uid}/{name} missing on one side")
            elif name.endswith(".json"):
                found += _value_differences(
                    json.loads(fa.read_text()), json.loads(fb.read_text()), f"{uid}/{name}", rtol
                )
            elif name.endswith(".jsonl"):
                rows_a, rows_b = fa.read_text().splitlines(), fb.read_text().splitlines()
                if len(rows_a) != len(rows_b):
                    found.append(f"{uid}/{name}: {len(rows_a)} vs {len(rows_b)} rows")
                for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=False)):
                    found += _value_differences(
                        json.loads(ra), json.loads(rb), f"{uid}/{name}:{i + 1}", rtol
                    )
            elif fa.read_bytes() != fb.read_bytes():
                found.append(f"{uid}/{name} differs")
    return found


def _value_differences(x: Any, y: Any, where: str, rtol: float) -> list[str]:
    """Dotted paths where two JSON values differ (numbers within ``rtol``; ``seconds`` ignored)."""
    if isinstance(x, dict) and isinstance(y, dict):
        keys = (set(x) | set(y)) - {"seconds"}
        return [
            d
            for k in sorted(keys)
            for d in _value_differences(x.get(k), y.get(k), f"{where}.{k}", rtol)
        ]
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [
            d
            for i, (p, q) in enumerate(zip(x, y, strict=True))
            for d in _value_differences(p, q, f"{where}[{i}]", rtol)
        ]
    numbers = (int, float)
    if isinstance(x, numbers) and isinstance(y, numbers) and not isinstance(x, bool):
        if x == y or abs(x - y) <= rtol * max(abs(x), abs(y)):
            return []
    elif x == y:
        return []
    return [f"{where}: {x!r} vs {y!r}"]
