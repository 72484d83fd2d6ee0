"""Paper scale on one device: Gemma-2-2B's exact shapes, the authors' way of training vs this trainer.

    .venv/bin/python benchmarks/paper_scale.py --device cuda            # one command on a GPU
    .venv/bin/python benchmarks/paper_scale.py --device cpu --shape small   # this CPU, for ratios

The model is built on the spot from a Gemma-2 config with random weights (``--shape gemma-2-2b``:
26 layers, d_model 2304, d_mlp 9216, 8 heads / 4 key-value heads of 256, vocabulary 256000,
attention soft-cap 50, final soft-cap 30 — Gemma-2-2B's published config; ``small``: the same
depth and caps at a quarter of the width and an eighth of the vocabulary, for a CPU). Throughput
depends on shapes, not on weight values, so nothing is downloaded; losses mean nothing.
The tokenizer is character-level with Gemma's chat template, so a prompt of ``n`` characters is
``n`` tokens: the data are AxBench-like lengths drawn at random (instructions 24-96 tokens,
responses 64-160 tokens cut to the paper's 128).

Each mode runs in its own subprocess (peak memory per mode), at each ``--layers`` value:

* ``authors``: the authors' way — model in the benchmark dtype (bf16 on a GPU), the whole model
  run with a forward hook on decoder layer L that adds ``alpha * v`` (bf16 parameters, as in
  their code), logits and log-softmax at every position, random mini-batches of 12 padded to
  their longest row, one concept at a time, Adam;
* ``ours_1``: ``prosv_lens.training.train`` on the same concept (fast path: residual cached once,
  blocks above L, bounded-memory loss at response positions; fp32 alpha/v master copies);
* ``ours_k``: the same with K concepts trained in one pass;
* ``ours_k_compiled`` (with ``--compile BACKEND``; ``inductor`` by default on a GPU): the same with
  each block above L compiled (``TrainConfig.compile``; compilation happens in the untimed warm-up);
* ``generate``: greedy generation at batch ``--gen-batch`` (64) of ``--gen-tokens`` tokens with the
  Hugging Face model's own ``generate``: unsteered (plain ``hf.generate``), and prosv-lens's
  ``backend="hf"`` unsteered, PrOSV (``f2+l2``) and FSSV (``all``).

Printed: tokens/s, the FLOPs each mode executes (weight matmuls; forward plus activation
gradients) against the device's bf16 matmul peak measured in the same run (fp32 on a CPU), peak
memory vs the weights, and the exact-shortcut FLOP ratio from the shapes. Targets (an H200):
K = 8 in one pass at >= 40% of the bf16 matmul peak; per training token at least the FLOP ratio
faster than the authors' way at both layers; peak memory <= weights + 16 GB; steered generation
>= 0.9x the unsteered ``hf.generate`` throughput at batch 64.
"""

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _measure import matmul_peak, peak_memory_gb, sync

SHAPES = {  # Gemma-2-2B (google/gemma-2-2b-it config.json) and a CPU-sized cousin
    "gemma-2-2b": dict(hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=256, vocab_size=256000),
    "small": dict(hidden_size=576, intermediate_size=2304, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=144, vocab_size=32000),
}  # fmt: skip


def write_checkpoint(shape: str, out: Path, dtype: torch.dtype) -> int:
    """A random-weight Gemma-2 of ``shape`` with a character tokenizer; returns its parameters."""
    from transformers import AutoModelForCausalLM, Gemma2Config

    from prosv_lens.models import _tiny_tokenizer

    tok = _tiny_tokenizer(gemma=True)
    cfg = Gemma2Config(
        **SHAPES[shape], num_hidden_layers=26, max_position_embeddings=8192,
        query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        architectures=["Gemma2ForCausalLM"], dtype=str(dtype).removeprefix("torch."),
    )  # fmt: skip
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in hf.parameters())


def _concepts(k: int, n: int, seed: int = 0) -> list:
    from prosv_lens.concepts import ConceptData

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz     "

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(lo, hi))).strip() or "a"

    return [
        ConceptData(
            f"concept-{i}",
            tuple(text(24, 96) for _ in range(n)),
            tuple(text(64, 160) for _ in range(n)),
        )  # fmt: skip
        for i in range(k)
    ]


def _flops(model, layer: int, response_fraction: float) -> dict[str, float]:  # noqa: ANN001
    """Weight-matmul FLOPs per real training token (forward + activation gradients)."""
    from prosv_lens.training.fastpath import matmul_flops_per_token

    n, above = model.n_layers, model.n_layers - layer - 1
    block, unembed = matmul_flops_per_token(model, 1, False), matmul_flops_per_token(model, 0, True)
    return {
        # every block forward, blocks above L backward, unembedding forward and backward everywhere
        "authors": (n + above) * block + 2 * unembed,
        # blocks above L forward and backward, unembedding only at response positions
        "ours": 2 * above * block + 2 * response_fraction * unembed,
        "cache_once": (layer + 1) * block,  # blocks 0..L, once per example per run
    }


def _authors_way(model, data, layer: int, epochs: int, device: str) -> dict:  # noqa: ANN001
    """The authors' training loop: whole model, hook on layer L, full logits, bf16 alpha/v."""
    from prosv_lens.hf_model import hf_causal_lm
    from prosv_lens.positions import PositionSpec
    from prosv_lens.prompts import encode_prompts

    hf = hf_causal_lm(model)  # the plain HF model, as the authors run it (no TL wrappers)
    dtype = model.dtype
    batch = encode_prompts(model, list(data.prompts), padding_side="right",
                           responses=list(data.responses), max_response_tokens=128)  # fmt: skip
    steer = PositionSpec.parse("f2+l2").resolve(batch).mask
    d = model.d_model
    alpha = torch.nn.Parameter(torch.tensor(4.0 * math.sqrt(d), device=device, dtype=dtype))
    v = torch.nn.Parameter(((torch.rand(d) * 2 - 1) * 8 / math.sqrt(d)).to(device, dtype))
    opt = torch.optim.Adam([{"params": [v], "lr": 4e-2}, {"params": [alpha], "lr": 10.0}])
    current: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):  # noqa: ANN001, ANN202
        h = output[0] if isinstance(output, tuple) else output
        edit = (alpha * v).to(h.dtype)
        h = torch.where(current["mask"][..., None], h + edit, h)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = hf.get_decoder().layers[layer].register_forward_hook(hook)
    gen = torch.Generator().manual_seed(0)
    tokens = 0
    try:
        for _ in range(epochs):
            order = torch.randperm(batch.batch_size, generator=gen).tolist()
            for s in range(0, len(order), 12):
                rows = order[s : s + 12]
                width = int(batch.attention_mask[rows].sum(1).max())
                ids = batch.input_ids[rows, :width].to(device)
                mask = batch.attention_mask[rows, :width].to(device)
                current["mask"] = steer[rows, :width].to(device)
                target = batch.response_mask[rows, :width].to(device)[:, 1:]
                logits = hf(input_ids=ids, attention_mask=mask).logits
                logp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
                picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * target
                loss = (-picked.sum(1) / target.sum(1)).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([v], 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                tokens += int(mask.sum())
    finally:
        handle.remove()
    return {"tokens": tokens}


def _response_fraction(model, data) -> float:  # noqa: ANN001
    from prosv_lens.prompts import encode_prompts

    b = encode_prompts(model, list(data.prompts), padding_side="right",
                       responses=list(data.responses), max_response_tokens=128)  # fmt: skip
    return float(b.response_mask.sum() / b.attention_mask.sum())


def _generation(model, args) -> dict:  # noqa: ANN001
    from prosv_lens.generation import GenerationConfig, generate
    from prosv_lens.hf_model import hf_causal_lm
    from prosv_lens.interventions import SteeringVector
    from prosv_lens.prompts import encode_prompts

    prompts = [c for d in _concepts(1, args.gen_batch, seed=1) for c in d.prompts]
    batch = encode_prompts(model, prompts, padding_side="left").to(model.device)
    hf = hf_causal_lm(model)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    layer = args.layers[0]
    cfg = GenerationConfig(max_new_tokens=args.gen_tokens, stop_at_eos=False, backend="hf")
    runs = {
        "hf.generate (unsteered)": lambda: hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            do_sample=False,
            max_new_tokens=args.gen_tokens,
            min_new_tokens=args.gen_tokens,
            pad_token_id=model.tokenizer.pad_token_id,
        ),  # fmt: skip
        "prosv hf backend, unsteered": lambda: generate(model, batch, (), cfg),
        "prosv hf backend, PrOSV f2+l2": lambda: generate(
            model, batch, SteeringVector(v, layer=layer, positions="f2+l2", alpha=8.0), cfg
        ),
        "prosv hf backend, FSSV all": lambda: generate(
            model, batch, SteeringVector(v, layer=layer, positions="all", alpha=8.0), cfg
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.gen_rounds):  # interleaved rounds, median
            for name, fn in runs.items():
                sync(args.device)
                t0 = time.perf_counter()
                fn()
                sync(args.device)
                times[name].append(time.perf_counter() - t0)
    n_tokens = args.gen_batch * args.gen_tokens
    return {k: n_tokens / sorted(t)[len(t) // 2] for k, t in times.items()}


def _one(args: argparse.Namespace) -> dict:
    from prosv_lens.models import load_model
    from prosv_lens.training import TrainConfig, train

    model = load_model(args.checkpoint, device=args.device, dtype=args.dtype)
    if args.mode == "generate":
        return {"mode": "generate", "tokens_per_s": _generation(model, args),
                "peak_gb": peak_memory_gb(args.device)}  # fmt: skip
    layer = args.layer
    data = _concepts(1 if args.mode in ("authors", "ours_1") else args.k, args.examples)
    cfg = TrainConfig.prosv(layer, epochs=args.epochs,
                            compile=args.compile if args.mode == "ours_k_compiled" else None)  # fmt: skip
    warm = _concepts(1, 12, seed=2)
    if args.device.startswith("cuda"):  # untimed warm-up: CUDA start-up, kernel selection
        if args.mode == "authors":
            _authors_way(model, warm[0], layer, 1, args.device)
        else:
            train(model, warm, cfg.replace(epochs=1), progress=False)
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if args.mode == "authors":
        tokens = _authors_way(model, data[0], layer, args.epochs, args.device)["tokens"]
    else:
        result = train(model, data, cfg, progress=False)
        tokens = result.tokens
    sync(args.device)
    seconds = time.perf_counter() - t0
    fraction = _response_fraction(model, data[0])
    flops = _flops(model, layer, fraction)
    executed = flops["authors"] if args.mode == "authors" else flops["ours"]
    cache_tokens = 0 if args.mode == "authors" else tokens / args.epochs
    total_flops = executed * tokens + flops["cache_once"] * cache_tokens
    return {
        "mode": args.mode, "layer": layer, "seconds": seconds, "tokens": tokens,
        "tokens_per_s": tokens / seconds, "tflops": total_flops / seconds / 1e12,
        "flop_ratio": flops["authors"] / flops["ours"], "response_fraction": fraction,
        "gflop_per_token": {k: v / 1e9 for k, v in flops.items()}, "peak_gb": peak_memory_gb(args.device),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", choices=list(SHAPES), default=None,
                    help="gemma-2-2b (default on a GPU) or small (default on a CPU)")  # fmt: skip
    ap.add_argument("--dtype", default=None, help="bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--layers", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--examples", type=int, default=48, help="training examples per concept")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--gen-rounds", type=int, default=3)
    ap.add_argument("--compile", default=None,
                    help="also time K in one pass with compiled upper blocks (default on a GPU: "
                    "inductor; 'none' to skip)")  # fmt: skip
    ap.add_argument("--out", default=None, help="also write the JSON results here")
    ap.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layer", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--render", default=None, help="print the tables of a saved JSON and exit")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    gpu = args.device.startswith("cuda")
    args.shape = args.shape or ("gemma-2-2b" if gpu else "small")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.compile = args.compile or ("inductor" if gpu else "none")
    args.compile = None if args.compile == "none" else args.compile
    if args.mode:
        print(json.dumps(_one(args)))
        return
    from prosv_lens.models import parse_dtype

    dtype = parse_dtype(args.dtype)
    peak = matmul_peak(args.device, dtype) / 1e3
    with tempfile.TemporaryDirectory(prefix="prosv-paper-scale-") as folder:
        n_params = write_checkpoint(args.shape, Path(folder), dtype)
        weights_gb = n_params * dtype.itemsize / 1e9
        results = []
        modes = ("authors", "ours_1", "ours_k") + (("ours_k_compiled",) if args.compile else ())
        jobs = [(m, layer) for layer in args.layers for m in modes]
        for mode, layer in [*jobs, ("generate", args.layers[0])]:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--checkpoint", folder, "--mode", mode,
                   "--layer", str(layer), "--shape", args.shape, "--dtype", args.dtype,
                   "--device", args.device]  # fmt: skip
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"mode {mode} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"# {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name() if gpu else f"{torch.get_num_threads()} CPU threads"
    data = {"args": {k: v for k, v in vars(args).items() if k not in ("checkpoint", "mode", "layer")},
            "command": " ".join(sys.argv), "where": where, "n_params": n_params,
            "matmul_peak_tflops": peak, "weights_gb": weights_gb, "results": results}  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=2))
    print(render(data))


def render(data: dict) -> str:
    """The benchmark's tables (markdown) from its saved JSON."""
    a, peak, weights = data["args"], data["matmul_peak_tflops"], data["weights_gb"]
    lines = [
        f"# {a['shape']} shapes ({data['n_params'] / 1e9:.2f}B parameters, {weights:.1f} GB in "
        f"{a['dtype']}), {data['where']}; {a['dtype']} matmul peak measured now: {peak:.3g} TFLOP/s",
        "",
        "| layer | trainer | tokens/s | vs authors | FLOP ratio per step | FLOP ratio incl. cache "
        f"({a['epochs']} epochs) | TFLOP/s (% of peak) | peak memory (weights + extra) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    names = {"authors": "authors' way (whole model, all logits, batch 12)",
             "ours_1": "prosv-lens, 1 concept", "ours_k": f"prosv-lens, K = {a['k']} in one pass",
             "ours_k_compiled": f"prosv-lens, K = {a['k']}, compiled ({a['compile']})"}  # fmt: skip
    train_rows = [r for r in data["results"] if r["mode"] != "generate"]
    for r in train_rows:
        base = next(x for x in train_rows if x["layer"] == r["layer"] and x["mode"] == "authors")
        f = r["gflop_per_token"]
        with_cache = f["authors"] / (f["ours"] + f["cache_once"] / a["epochs"])
        lines.append(
            f"| {r['layer']} | {names[r['mode']]} | {r['tokens_per_s']:.0f} | "
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['flop_ratio']:.2f}x | "
            f"{with_cache:.2f}x | {r['tflops']:.3g} ({100 * r['tflops'] / peak:.0f}%) | "
            f"{r['peak_gb']:.1f} GB ({weights:.1f} + {r['peak_gb'] - weights:.1f}) |"
        )  # fmt: skip
    gen = next(r for r in data["results"] if r["mode"] == "generate")["tokens_per_s"]
    base = gen["hf.generate (unsteered)"]
    lines += ["", f"| generation, batch {a['gen_batch']} x {a['gen_tokens']} tokens, greedy "
              "| tokens/s | vs hf.generate |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {tps:.0f} | {tps / base:.3f}x |" for name, tps in gen.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
