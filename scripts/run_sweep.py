"""Run (or resume) a hyper-parameter sweep from a config file, then draw its figure.

    .venv/bin/python scripts/run_sweep.py configs/heatmap_small.json results/heatmap_small
        [--figures figures] [--device cpu]

The config's ``kind`` picks the sweep (``heatmap``: beta x lr_alpha per optimizer;
``positions``: one vector per position spec); see :mod:`prosv_lens.evaluation.sweeps`. Answers
are judged by the offline judge with the model as its fluency reference. Rerunning the same
command skips finished cells. Prints one line per cell and the total time.
"""

import argparse
import time
from pathlib import Path

from prosv_lens.evaluation.offline_judge import OfflineJudge
from prosv_lens.evaluation.sweeps import load_sweep_config, run_sweep
from prosv_lens.figures.regenerate import sweep_figures
from prosv_lens.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("out_dir")
    ap.add_argument("--figures", default="figures", help="folder for the figure (PNG + PDF)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    cfg = load_sweep_config(args.config)
    t0 = time.perf_counter()
    model = load_model(cfg.model, device=args.device)
    sweep = run_sweep(model, cfg, args.out_dir, OfflineJudge(reference=model))
    base = sweep["baseline"]
    print(f"unsteered: held-out loss {base['heldout_loss']:.3f}, "
          f"overall {base['scores']['overall']['mean']:.3f}")  # fmt: skip
    for c in sweep["cells"]:
        if c["diverged"]:
            print(f"{c['key']}: diverged ({c['diverged']})")
            continue
        o, s = c["scores"]["overall"], c["seconds"]
        print(f"{c['key']}: train loss {c['train_loss_first']:.3f} -> {c['train_loss_final']:.3f}, "
              f"held-out {c['heldout_loss']:.3f}, alpha {c['alpha']:.1f}, overall {o['mean']:.3f} "
              f"[{o['low']:.3f}, {o['high']:.3f}], concept {c['scores']['concept']['mean']:.3f}, "
              f"{s['train']:.0f} s train + {s['eval']:.0f} s eval")  # fmt: skip
    prefix = Path(args.out_dir).name + "_"
    for p in sweep_figures(sweep, Path(args.figures), prefix):
        print("wrote", p)
    print(f"total {time.perf_counter() - t0:.0f} s (this invocation)")


if __name__ == "__main__":
    main()
