"""Running work units on Ray: long-lived workers that keep the model loaded, a queue, retries.

:func:`run_units_on_ray` starts one Ray actor per worker (per GPU, or per group of CPU cores).
Each actor holds a copy of the :class:`~prosv_lens.experiments.units.UnitJob`, loads the model on
its first unit and keeps it. The driver hands out units one at a time to whichever actor is
free (a queue, not a fixed split: a slow worker takes fewer units), and commits each returned
output into the run folder itself, so workers need no shared filesystem and a unit is written
exactly once.

Faults:

* a worker process that dies (``kill -9``, out of memory, a lost node) is restarted by Ray
  (``max_restarts``) and its unit goes back on the queue, up to :data:`WORKER_DEATHS` times;
* a unit that raises a unit error (bad data or settings) is retried once, then recorded as
  failed with its error; the units that need it are skipped and the rest go on;
* a killed driver leaves every completed unit in place: rerunning the same command runs only
  the missing ones.

Ray is an optional extra (``pip install 'prosv-lens[ray]'``); without it, runs stay in-process
(:func:`~prosv_lens.experiments.units.run_units`).
"""

import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prosv_lens.errors import RayUnavailableError
from prosv_lens.experiments.units import (
    Progress,
    RunSummary,
    Scheduler,
    UnitJob,
    UnitOutput,
    UnitStore,
    WorkUnit,
    default_unit_error,
    one_line,
)

WORKER_DEATHS = 3  # a unit whose worker died this many times is recorded as failed
RESTART_SECONDS = 120.0  # how long the driver waits for Ray to restart a dead worker
INSTALL = "pip install 'prosv-lens[ray]'"


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed (names the install command).
    """
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            f"--workers and --address run on Ray, which is not installed: {INSTALL} "
            "(or drop the flags to run in this process)"
        ) from None
    return ray


class UnitWorker:
    """The Ray actor's class: one job copy, its model loaded once, one unit at a time."""

    def __init__(self, job: UnitJob, threads: int | None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.job = job

    def pid(self) -> int:
        """The worker's process id (tests kill it)."""
        return os.getpid()

    def prepare(self) -> dict[str, Any]:
        """``job.prepare()`` in this worker (loads the model)."""
        return self.job.prepare()

    def run(self, unit: WorkUnit, inputs: Mapping[str, UnitOutput]) -> UnitOutput:
        """``job.run(unit, inputs)`` in this worker."""
        return self.job.run(unit, inputs)


def connect(ray: Any, *, workers: int | None, address: str | None, cpus_per_worker: int) -> bool:
    """Join the cluster at ``address`` (also ``$RAY_ADDRESS``), or start a local instance sized
    for ``workers``; returns whether this call started Ray (and so must shut it down).

    Raises:
        RayUnavailableError: the cluster cannot be reached (names the address).
    """
    if address is not None and address != "auto":
        check_address(address)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "log_to_driver": False,
        "configure_logging": True,
    }
    try:
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            n = max(1, workers or 1) * cpus_per_worker
            ray.init(num_cpus=n, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayUnavailableError(
            f"cannot reach {where} ({one_line(e)}): check the address (ray://HOST:10001 or "
            "HOST:6379) and that the cluster is up (`ray status`)"
        ) from None
    return True


def check_address(address: str, timeout: float = 5.0) -> None:
    """Check that ``address`` (``[ray://]HOST:PORT``) is well formed and accepts a TCP connection
    within ``timeout`` seconds (Ray itself keeps retrying an unreachable address for minutes).

    Raises:
        RayUnavailableError: a malformed or unreachable address (one line naming it).
    """
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailableError(
            f"--address {address!r} is not HOST:PORT or ray://HOST:PORT (e.g. ray://10.0.0.5:10001)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}): check the address "
            "(ray://HOST:10001 or HOST:6379) and that the cluster is up (`ray status` on its head)"
        ) from None


def run_units_on_ray(
    job: UnitJob,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    before: Callable[[dict[str, Any]], None] | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
    is_unit_error: Callable[[BaseException], bool] = default_unit_error,
    on_started: Callable[[list[Any]], None] | None = None,
) -> RunSummary:
    """Run the job's missing units on Ray workers that keep the model loaded.

    Args:
        job: the run's units (pickled to each worker).
        out_dir: the run folder (the caller holds its lock); only this process writes in it.
        workers: actors to start (default: 1 per ``cpus_per_worker`` CPUs / per GPU of the
            cluster, at least 1).
        address: an existing cluster (``ray://HOST:PORT``, ``HOST:PORT``); ``None``: a local
            instance (or the one ``ray.init`` already started).
        before: called in the driver with the first worker's ``job.prepare()`` before any unit
            runs (also when every unit is done); raise in it to stop.
        cpus_per_worker: CPU cores (and torch threads) per worker.
        gpus_per_worker: GPUs per worker (1 on a multi-GPU machine: one worker per GPU).
        progress: show a progress bar over units.
        is_unit_error: as in :func:`~prosv_lens.experiments.units.run_units`.
        on_started: called with the actor handles once they are up (tests use it).

    Returns:
        The :class:`~prosv_lens.experiments.units.RunSummary`.

    Raises:
        RayUnavailableError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    store = UnitStore(out_dir)
    store.clean()
    sched = Scheduler(job.units(), store)
    t0 = time.perf_counter()
    started = connect(ray, workers=workers, address=address, cpus_per_worker=cpus_per_worker)
    try:
        if workers is None:
            total = ray.cluster_resources()
            by_gpu = int(total.get("GPU", 0) / gpus_per_worker) if gpus_per_worker else 0
            workers = max(1, by_gpu or int(total.get("CPU", 1) // cpus_per_worker))
        actor_cls = ray.remote(UnitWorker).options(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=-1,  # a dead worker comes back; WORKER_DEATHS bounds each unit's retries
            max_task_retries=0,  # the driver decides what to retry
        )
        threads = cpus_per_worker if not gpus_per_worker else None
        # Every invocation checks the run's inputs, even with every unit done (one worker).
        actors = [actor_cls.remote(job, threads) for _ in range(workers if sched.waiting else 1)]
        if on_started is not None:
            on_started(actors)
        info = _get(ray, actors[0].prepare.remote())
        if before is not None:
            before(info)
        sched.summary.workers = len(actors)
        sched.summary.startup_seconds = time.perf_counter() - t0
        _drive(ray, sched, actors, progress, is_unit_error)
    finally:
        sched.summary.wall_seconds = time.perf_counter() - t0
        store.record_failures(sched.summary.failed)
        if started:
            ray.shutdown()
    return sched.summary


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``, raising a worker's own exception (e.g. a model that cannot load)
    rather than Ray's wrapper of it."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as e:
        if isinstance(e.cause, BaseException):
            raise e.cause from None
        raise


def wait_restarted(ray: Any, actor: Any, timeout: float = RESTART_SECONDS) -> bool:
    """Wait until a dead worker's actor answers again (Ray restarts it), at most ``timeout``
    seconds; whether it did. A unit handed to it before then fails as if it had died once more,
    so without this wait one kill could use up a unit's :data:`WORKER_DEATHS` tries."""
    from ray.exceptions import GetTimeoutError, RayActorError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=max(0.1, deadline - time.monotonic()))
            return True
        except (RayActorError, GetTimeoutError):
            time.sleep(0.2)
    return False


def _drive(
    ray: Any,
    sched: Scheduler,
    actors: list[Any],
    progress: bool,
    is_unit_error: Callable[[BaseException], bool],
) -> None:
    """Hand units to free actors until none is left; commit, retry or record each result."""
    from ray.exceptions import RayActorError, RayTaskError

    bar = Progress(sched.summary.total, sched.summary.already_done, enabled=progress)
    idle = list(actors)
    in_flight: dict[Any, tuple[WorkUnit, Any, float]] = {}
    try:
        while True:
            while idle and (unit := sched.next_ready()) is not None:
                actor = idle.pop(0)
                ref = actor.run.remote(unit, sched.inputs(unit))
                in_flight[ref] = (unit, actor, time.perf_counter())
            bar.update(running=len(in_flight))
            if not in_flight:
                return
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                unit, actor, submitted = in_flight.pop(ref)
                idle.append(actor)
                try:
                    output = ray.get(ref)
                except RayActorError:  # the process died; Ray restarts the actor
                    failed = not sched.errored(unit, "its worker died", limit=WORKER_DEATHS)
                    bar.update(failed=int(failed))
                    wait_restarted(ray, actor)
                except RayTaskError as e:
                    cause = e.cause if isinstance(e.cause, BaseException) else e
                    if not is_unit_error(cause):
                        raise cause from None
                    failed = not sched.errored(unit, one_line(cause))
                    bar.update(failed=int(failed))
                else:
                    sched.finished(unit, output)
                    # what Ray added to this unit: moving it and its output, and queueing
                    latency = time.perf_counter() - submitted
                    sched.summary.overhead_seconds += latency - output.seconds - output.load_seconds
                    bar.update(finished=1)
    finally:
        bar.close()
