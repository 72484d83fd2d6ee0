"""Runs a resumable job in a child process that kills itself with SIGKILL at a chosen point.

Used by ``test_rel_resume_faults.py``: ``python tests/_faults.py JOB FOLDER KILL_AT`` runs JOB
(``train``, ``demo``, ``sweep``, ``reproduce`` or ``hold``) in FOLDER and sends itself ``kill -9`` at its
KILL_AT-th checkpoint / judge call (0: never). ``hold`` takes the folder's run lock, prints
``locked`` and sleeps, to play a concurrent run.
"""

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

os.environ["HF_HUB_OFFLINE"] = "1"

from prosv_lens.concepts import ConceptData  # noqa: E402
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating  # noqa: E402

if TYPE_CHECKING:
    from prosv_lens.experiments.sweep_results import SweepResult

SEA = ConceptData(
    name="sea",
    prompts=("Hi there", "Name three colors.", "Write a haiku.", "What is 2+2?") * 2,
    responses=("The sea is deep and blue.", "Blue, green, sea-grey.", "Waves fold in", "Four.") * 2,
)
SWEEP = {"model": "tiny", "layer": 1, "epochs": 1, "batch_size": 4, "n_train": 4,
         "n_heldout": 2, "n_eval": 2, "max_new_tokens": 3, "specs": ("all", "f2+l2", "l2")}  # fmt: skip
DEMO = {"model": "tiny", "epochs": 1, "n_train": 4, "n_eval": 4, "max_new_tokens": 4,
        "n_utility": 2, "n_kl_prompts": 1}  # fmt: skip


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class HashJudge(Judge):
    """Deterministic ratings (a hash of the answer); dies at its ``kill_at``-th call."""

    name = "hash-test-judge"

    def __init__(self, kill_at: int = 0) -> None:
        self.calls, self.kill_at = 0, kill_at

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        self.calls += 1
        if self.calls == self.kill_at:
            _die()
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


def train_job(folder: Path, kill_at: int, data: ConceptData = SEA):  # noqa: ANN201
    from prosv_lens.models import make_tiny_model
    from prosv_lens.training import TrainConfig, train

    def maybe_die(step: int, rows: object) -> None:  # after the checkpoint of this step
        if step + 1 == kill_at:
            _die()

    cfg = TrainConfig.prosv(1, epochs=3, batch_size=4)
    return train(make_tiny_model(), data, cfg, checkpoint_dir=folder, checkpoint_every=1,
                 callbacks=[maybe_die], progress=False)  # fmt: skip


def demo_job(folder: Path, kill_at: int, **changes: object) -> Path:
    from prosv_lens.experiments import demo
    from prosv_lens.experiments.demo import DemoConfig, run_demo

    demo.make_judge = lambda kind, model: HashJudge(kill_at)
    return run_demo(DemoConfig(**{**DEMO, **changes}, run=str(folder)))


def sweep_job(folder: Path, kill_at: int, **changes: object) -> "SweepResult":
    from prosv_lens.experiments.sweeps import PositionSweepConfig, run_sweep
    from prosv_lens.models import make_tiny_model

    cfg = PositionSweepConfig(**{**SWEEP, **changes})
    return run_sweep(make_tiny_model(), cfg, folder, HashJudge(kill_at))


def reproduce_job(folder: Path, kill_at: int) -> dict:
    """A toy ``prosv reproduce`` run (two concepts of a fake AxBench folder beside ``folder``)."""
    from test_reproduce import BIG_CPU, make_axbench_folder, make_setting

    from prosv_lens.experiments import ReproduceConfig, run_reproduce
    from prosv_lens.models import make_tiny_model

    axbench = folder.parent / "axbench"
    if not axbench.exists():
        make_axbench_folder(axbench)
    cfg = ReproduceConfig(make_setting(axbench), out_dir=str(folder))
    return run_reproduce(
        cfg, model=make_tiny_model(), judge=HashJudge(kill_at), device=BIG_CPU, progress=False
    )


def hold(folder: Path) -> None:
    from prosv_lens.safe_io import RunLock

    with RunLock(folder):
        sys.stdout.write("locked\n")
        sys.stdout.flush()
        time.sleep(60)


class Holder:
    """A second process holding ``folder``'s run lock (a concurrent run)."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "hold", str(folder), "0"],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


if __name__ == "__main__":
    job, where, kill = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if job == "hold":
        hold(where)
    else:
        jobs = {
            "train": train_job,
            "demo": demo_job,
            "sweep": sweep_job,
            "reproduce": reproduce_job,
        }
        jobs[job](where, kill)
