"""The same sweep in this process and on 2 local Ray workers: wall time and what Ray adds per unit.

Runs the default 7-spec position sweep on SmolLM2-135M-Instruct (15 units: 1 unsteered baseline,
7 trainings, 7 judged evaluations) twice, into fresh folders, measured in the same invocation:

* **sequential**: ``prosv sweep CONFIG`` as before Ray, one process (model loaded once, torch's
  default threads);
* **ray**: ``prosv sweep CONFIG --workers 2`` (a local Ray instance, 2 workers of 1 core each,
  each loading the model once).

It prints both wall times and their ratio, the mean compute time of a unit, Ray's start-up (the
instance, the workers, the input check), the model loading per worker, and the scheduling
overhead per unit (each unit's round trip seen by the driver minus its compute and loading in the
worker) as a fraction of a unit's time; and compares the two runs' units
(:func:`~prosv_lens.experiments.units.compare_runs`).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ray_sweep.py [--out results/benchmarks/ray_sweep.json]
"""

import argparse
import tempfile
import time
from pathlib import Path

from prosv_lens.evaluation.offline_judge import OfflineJudge
from prosv_lens.experiments.sweeps import PositionSweepConfig, SweepJob, execute_sweep
from prosv_lens.experiments.units import compare_runs
from prosv_lens.models import load_model
from prosv_lens.safe_io import write_json

CONFIG = PositionSweepConfig(
    model="smollm2-135m-instruct", layer=12, epochs=2, batch_size=8, n_train=16, n_heldout=8,
    n_eval=4, max_new_tokens=24,
)  # fmt: skip


def _fields(differences: list[str]) -> list[str]:
    """The field names in ``compare_runs`` lines (``where.field: a vs b``)."""
    return sorted({d.rsplit(": ", 1)[0].rsplit(".", 1)[-1] for d in differences})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the measurements as JSON here")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prosv-ray-bench-") as tmp:
        t0 = time.perf_counter()
        model = load_model(CONFIG.model, dtype=CONFIG.dtype)
        job = SweepJob(CONFIG, model=model, judge=OfflineJudge(reference=model))
        seq = execute_sweep(job, Path(tmp) / "sequential", progress=False)
        t_seq = time.perf_counter() - t0
        del job, model
        t0 = time.perf_counter()
        par = execute_sweep(
            SweepJob(CONFIG), Path(tmp) / "ray", workers=args.workers, progress=False
        )
        t_ray = time.perf_counter() - t0
        exact = compare_runs(Path(tmp) / "sequential", Path(tmp) / "ray")
        close = compare_runs(Path(tmp) / "sequential", Path(tmp) / "ray", rtol=1e-5)
    s, r = seq.summary, par.summary
    unit = s.unit_seconds / s.ran
    result = {
        "config": CONFIG.to_dict(),
        "units": s.total,
        "workers": args.workers,
        "sequential_wall_s": t_seq,
        "ray_wall_s": t_ray,
        "speedup": t_seq / t_ray,
        "sequential_unit_mean_s": unit,
        "ray_unit_mean_s": r.unit_seconds / r.ran,
        "ray_startup_s": r.startup_seconds,
        "ray_model_load_s_per_worker": r.load_seconds / args.workers,
        "ray_overhead_per_unit_s": r.overhead_seconds / r.ran,
        "ray_overhead_fraction_of_unit": r.overhead_seconds / r.unit_seconds,
        "differences_exact": exact,
        "differences_rtol_1e-5": close,
    }
    print(f"sweep of {s.total} units on {CONFIG.model} (this machine's CPU)")
    print(f"  sequential (in-process): {t_seq:7.1f} s wall, {unit:.1f} s per unit")
    print(
        f"  ray --workers {args.workers}:        {t_ray:7.1f} s wall  (x{t_seq / t_ray:.2f} vs sequential)"
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
    print(
        f"  same results: {len(close)} differences beyond 1e-5 relative; {len(exact)} values "
        f"differ in their last digits ({', '.join(_fields(exact)) or 'none'})"
    )
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
