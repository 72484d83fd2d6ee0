"""Training throughput: the reference way vs prosv-lens's fast path, and K concepts in one pass.

    .venv/bin/python benchmarks/training_speed.py [--data ../shared/data/axbench-concept10/prod_2b_l10_v1]
        [--model smollm2-135m-instruct] [--steps 12] [--k 8] [--k-examples 24] [--k-epochs 1]
        [--device cpu] [--micro-rows N]

Each measurement runs in its own subprocess (so peak memory is per mode), on the same data,
settings (the paper's PrOSV preset, batch 12, responses cut to 128 tokens) and layer (40% depth):

* ``reference``: random mini-batches padded to their longest example, the whole model run with
  the steering hook, logits and log-softmax at every position (``TrainConfig(path="full")``);
* ``fast``: cached residual at L (its one-off cost included), blocks above L only, logits only
  at response positions, each step's examples length-sorted into micro-batches of the trainer's
  default ``micro_rows`` (``path="fast"``);
* ``K in one pass`` vs ``K single runs``: K concepts trained together vs one after another
  (fast path), total wall time including data encoding and caching.

On a GPU (``--device cuda``) each mode first trains one warm-up step (CUDA start-up, kernel
selection), untimed; the default ``micro_rows`` there is large, so the rows of all K concepts of a
step run in one forward pass. ``--model`` also takes a checkpoint folder, e.g. one written by
``benchmarks/random_checkpoint.py`` (same shapes, random weights: for timing only).

Achieved GFLOP/s counts the weight matmuls of forward and activation-gradient backward
(:func:`prosv_lens.training.fastpath.matmul_flops_per_token`) against the machine's fp32 matmul
peak measured in the same run.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _measure import matmul_peak, peak_memory_gb, sync

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "axbench-concept10"
    / "prod_2b_l10_v1"
)


def _response_fraction(model, data, max_response_tokens) -> float:  # noqa: ANN001
    from prosv_lens.prompts import encode_prompts

    n_resp = n_all = 0
    for d in data:
        b = encode_prompts(model, list(d.prompts), padding_side="right", responses=list(d.responses),
                           max_response_tokens=max_response_tokens)  # fmt: skip
        n_resp += int(b.response_mask.sum())
        n_all += int(b.attention_mask.sum())
    return n_resp / n_all


def _one(args: argparse.Namespace) -> dict:
    from prosv_lens.concepts import axbench_concepts, load_axbench_concept
    from prosv_lens.models import load_model
    from prosv_lens.training import TrainConfig, train
    from prosv_lens.training.fastpath import matmul_flops_per_token

    model = load_model(args.model, device=args.device)
    layer = round(0.4 * model.n_layers)
    if args.mode in ("reference", "fast"):
        data = [load_axbench_concept(args.data, 0)]
        epochs = max(1, round(args.steps / -(-len(data[0]) // 12)))
        cfg = TrainConfig.prosv(
            layer, epochs=epochs, batch_size=12, path="full" if args.mode == "reference" else "fast"
        )
        groups = [data]
    else:
        ids = [m["concept_id"] for m in axbench_concepts(args.data)][: args.k]
        data = [load_axbench_concept(args.data, i).subset(range(args.k_examples)) for i in ids]
        cfg = TrainConfig.prosv(layer, epochs=args.k_epochs, batch_size=12)
        groups = [data] if args.mode == "k_together" else [[d] for d in data]
    if args.device != "cpu":  # warm-up, untimed: CUDA start-up and kernel selection
        warm = TrainConfig.prosv(layer, epochs=1, batch_size=12, path=cfg.path)
        train(model, [data[0].subset(range(12))], warm, progress=False, micro_rows=12)
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
    # the reference runs each random mini-batch whole, padded to its longest example
    rows = cfg.batch_size if args.mode == "reference" else args.micro_rows
    t0 = time.perf_counter()
    runs = [train(model, g, cfg, progress=False, micro_rows=rows) for g in groups]
    sync(args.device)
    seconds = time.perf_counter() - t0
    examples = sum(r.examples for r in runs)
    tokens = sum(r.tokens for r in runs)
    above = model.n_layers - layer - 1
    per_layer = matmul_flops_per_token(model, 1, False)
    unembed = matmul_flops_per_token(model, 0, True)
    frac = _response_fraction(model, data, cfg.max_response_tokens)
    if (
        args.mode == "reference"
    ):  # fwd: every layer, unembed everywhere; bwd: layers above L, unembed
        flops_tok = (model.n_layers + above) * per_layer + 2 * unembed
    else:  # fwd and bwd: layers above L; unembedding only at response positions
        flops_tok = 2 * above * per_layer + 2 * frac * unembed
    return {
        "mode": args.mode, "seconds": seconds, "tokens": tokens, "examples": examples,
        "steps": sum(r.steps for r in runs), "gflops": flops_tok * tokens / seconds / 1e9,
        "peak_rss_gb": peak_memory_gb(args.device),
        "final_loss": [r.logs[n][-1]["loss"] for r in runs for n in r.logs],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--k-examples", type=int, default=24)
    ap.add_argument("--k-epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--micro-rows", type=int, default=None, help="rows per forward pass")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(_one(args)))
        return
    if not Path(args.data, "train_data.parquet").exists():
        sys.exit(f"no AxBench data at {args.data}: pass --data DIR")
    peak = matmul_peak(args.device)
    results = {}
    for mode in ("reference", "fast", "k_together", "k_single"):
        cmd = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"mode {mode} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"# {mode}: {json.dumps(results[mode])}", file=sys.stderr, flush=True)
    ref, fast = results["reference"], results["fast"]
    where = (
        f"{torch.get_num_threads()} CPU threads"
        if args.device == "cpu"
        else torch.cuda.get_device_name()
    )
    memory = "peak RSS" if args.device == "cpu" else "peak GPU memory"
    print(f"fp32 matmul peak on this machine: {peak:.0f} GFLOP/s ({where})\n")
    print(
        f"| trainer | steps | wall time | examples/s | tokens/s | speed-up | GFLOP/s (% of peak) | {memory} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("reference (full model, all logits)", ref), ("prosv-lens fast path", fast)):
        print(
            f"| {name} | {r['steps']} | {r['seconds']:.1f} s | {r['examples'] / r['seconds']:.2f} | "
            f"{r['tokens'] / r['seconds']:.0f} | {ref['seconds'] / r['seconds'] * r['tokens'] / ref['tokens']:.2f}x | "
            f"{r['gflops']:.0f} ({100 * r['gflops'] / peak:.0f}%) | {r['peak_rss_gb']:.2f} GB |"
        )
    together, single = results["k_together"], results["k_single"]
    print(
        f"\n| {args.k} concepts x {args.k_examples} examples, {args.k_epochs} epoch(s) | wall time "
        f"| speed-up | {memory} |"
    )
    print("|---|---|---|---|")
    print(
        f"| one pass (all concepts in each batch) | {together['seconds']:.1f} s | {single['seconds'] / together['seconds']:.2f}x | {together['peak_rss_gb']:.2f} GB |"
    )
    print(
        f"| {args.k} single-concept runs | {single['seconds']:.1f} s | 1.00x | {single['peak_rss_gb']:.2f} GB |"
    )


if __name__ == "__main__":
    main()
