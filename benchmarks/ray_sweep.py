"""The same sweep in this process and on 2 local Ray workers: wall time and what Ray adds per unit.

Runs the default 7-spec position sweep on SmolLM2-135M-Instruct (15 units: 1 unsteered baseline,
7 trainings, 7 judged evaluations) three times, into fresh folders, in the same invocation:

* **in-process** (the baseline): ``prosv sweep CONFIG`` as before Ray, one process, the model
  loaded once, torch's default threads (2 on this machine);
* **in-process, 1 thread**: the same with ``torch.set_num_threads(1)``, the arithmetic of a
  1-core worker;
* **ray**: ``prosv sweep CONFIG --workers 2`` (a local Ray instance, 2 workers of 1 core each,
  each loading the model once).

It prints the wall times and their ratios to the baseline, the mean compute time of a unit,
Ray's start-up (the instance, the workers, the input check), the model loading per worker, and
the scheduling overhead per unit (each unit's round trip seen by the driver minus its compute
and loading in the worker) as a fraction of a unit's time; and compares the Ray run's units with
both in-process runs (:func:`~prosv_lens.experiments.units.compare_runs`): CPU float rounding
depends on the number of threads, so only the 1-thread run can match the 1-core workers bit for
bit.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ray_sweep.py [--out results/benchmarks/ray_sweep.json]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prosv_lens.experiments.sweeps import (
    PositionSweepConfig,
    SweepJob,
    SweepRun,
    execute_sweep,
    offline_judge,
)
from prosv_lens.experiments.units import compare_runs
from prosv_lens.models import load_model
from prosv_lens.safe_io import write_json

CONFIG = PositionSweepConfig(
    model="smollm2-135m-instruct",
    layer=12,
    epochs=2,
    batch_size=8,
    n_train=16,
    n_heldout=8,
    n_eval=4,
    max_new_tokens=24,
)


def _fields(differences: list[str]) -> list[str]:
    """The field names in ``compare_runs`` lines (``where.field: a vs b``)."""
    return sorted({d.rsplit(": ", 1)[0].rsplit(".", 1)[-1] for d in differences})


def _in_process(out: Path) -> tuple[SweepRun, float]:
    """The sweep in this process (model loaded once, counted in the wall time)."""
    t0 = time.perf_counter()
    model = load_model(CONFIG.model, dtype=CONFIG.dtype)
    run = execute_sweep(
        SweepJob(CONFIG, model=model, judge=offline_judge(model)), out, progress=False
    )
    return run, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the measurements as JSON here")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prosv-ray-bench-") as tmp:
        runs = Path(tmp)
        threads = torch.get_num_threads()
        seq, t_seq = _in_process(runs / "sequential")
        torch.set_num_threads(1)
        one, t_one = _in_process(runs / "one_thread")
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        par = execute_sweep(SweepJob(CONFIG), runs / "ray", workers=args.workers, progress=False)
        t_ray = time.perf_counter() - t0
        vs_one = compare_runs(runs / "one_thread", runs / "ray")
        vs_seq = compare_runs(runs / "sequential", runs / "ray")
        vs_seq_close = compare_runs(runs / "sequential", runs / "ray", rtol=1e-5)
    s, r = seq.summary, par.summary
    unit = s.unit_seconds / s.ran
    result = {
        "config": CONFIG.to_dict(),
        "units": s.total,
        "workers": args.workers,
        "torch_threads_in_process": threads,
        "sequential_wall_s": t_seq,
        "sequential_one_thread_wall_s": t_one,
        "ray_wall_s": t_ray,
        "speedup": t_seq / t_ray,
        "sequential_unit_mean_s": unit,
        "one_thread_unit_mean_s": one.summary.unit_seconds / one.summary.ran,
        "ray_unit_mean_s": r.unit_seconds / r.ran,
        "ray_startup_s": r.startup_seconds,
        "ray_model_load_s_per_worker": r.load_seconds / args.workers,
        "ray_overhead_per_unit_s": r.overhead_seconds / r.ran,
        "ray_overhead_fraction_of_unit": r.overhead_seconds / r.unit_seconds,
        "differences_ray_vs_one_thread": vs_one,
        "differences_ray_vs_sequential": vs_seq,
        "differences_ray_vs_sequential_rtol_1e-5": vs_seq_close,
    }
    print(f"sweep of {s.total} units on {CONFIG.model} (this machine's CPU)")
    print(
        f"  in-process, {threads} torch threads: {t_seq:7.1f} s wall, {unit:.1f} s per unit  "
        "(the baseline)"
    )
    print(f"  in-process, 1 torch thread:  {t_one:7.1f} s wall  (x{t_seq / t_one:.2f})")
    print(
        f"  ray --workers {args.workers} (1 core each): {t_ray:7.1f} s wall  (x{t_seq / t_ray:.2f})"
    )
    print(
        f"  ray start-up {r.startup_seconds:.1f} s, model load "
        f"{result['ray_model_load_s_per_worker']:.1f} s per worker, "
        f"{result['ray_unit_mean_s']:.1f} s per unit on a 1-core worker"
    )
    print(
        f"  scheduling overhead {result['ray_overhead_per_unit_s'] * 1000:.0f} ms per unit = "
        f"{100 * result['ray_overhead_fraction_of_unit']:.2f}% of a unit's compute"
    )
    print(f"  ray vs in-process on 1 thread: {len(vs_one)} values differ (bit for bit)")
    print(
        f"  ray vs in-process on {threads} threads: {len(vs_seq)} values differ "
        f"({', '.join(_fields(vs_seq)) or 'none'}), {len(vs_seq_close)} beyond 1e-5 relative"
    )
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
