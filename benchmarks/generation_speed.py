"""Generation speed: unsteered vs PrOSV-steered vs FSSV-steered, one run, same machine.

    .venv/bin/python benchmarks/generation_speed.py [--model smollm2-135m-instruct] [--batch 4]
        [--new-tokens 64] [--rounds 5]

Every condition decodes exactly ``--new-tokens`` tokens per row (no early stop) with the KV
cache, greedy. Conditions are interleaved round by round (order rotated) and the median round is
reported, so drift of the machine hits all of them alike. Ratios are time per generated token
relative to unsteered in the same run. Target: PrOSV <= 1.05x unsteered.
For reference, TransformerLens's own ``bridge.generate`` (unsteered, KV cache) is timed too.
"""

import argparse
import statistics
import time

import torch

from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import load_model
from prosv_lens.prompts import encode_prompts

PROMPTS = [
    "Give me three tips for staying focused while studying.",
    "What is the capital of France?",
    "Describe your ideal weekend.",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a child.",
    "List five fruits that are red.",
    "How do I boil an egg?",
    "Name three colors.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    model = load_model(args.model, device="cpu")
    layer = round(0.4 * model.n_layers)
    batch = encode_prompts(model, PROMPTS[: args.batch], padding_side="left")
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    conditions = {
        "unsteered": (),
        "PrOSV (f2+l2)": SteeringVector(v, layer=layer, positions="f2+l2", alpha=1000.0),
        "FSSV (all)": SteeringVector(v, layer=layer, positions="all", alpha=20.0),
    }
    cfg = GenerationConfig(max_new_tokens=args.new_tokens, stop_at_eos=False)

    def run_tl_generate() -> int:
        out = model.bridge.generate(
            batch.input_ids, max_new_tokens=args.new_tokens, do_sample=False,
            use_past_kv_cache=True, verbose=False, stop_at_eos=False,
        )  # fmt: skip
        return (out.shape[1] - batch.n_pos) * batch.batch_size

    generate(model, batch, (), GenerationConfig(max_new_tokens=4))  # warm-up
    times: dict[str, list[float]] = {
        name: [] for name in [*conditions, "TL bridge.generate (unsteered)"]
    }
    names = list(times)
    tokens = {}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            if name in conditions:
                out = generate(model, batch, conditions[name], cfg)
                tokens[name] = out.n_generated
            else:
                tokens[name] = run_tl_generate()
            times[name].append(time.perf_counter() - t0)

    base = statistics.median(times["unsteered"]) / tokens["unsteered"]
    print(
        f"model {model.model_id}, layer {layer}, batch {args.batch}, {args.new_tokens} new tokens "
        f"per row, greedy, KV cache, {torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    print()
    print("| condition | tokens/s | time per generated token | ratio vs unsteered |")
    print("|---|---|---|---|")
    for name in names:
        per_token = statistics.median(times[name]) / tokens[name]
        print(
            f"| {name} | {1 / per_token:.1f} | {per_token * 1e3:.2f} ms | {per_token / base:.3f}x |"
        )


if __name__ == "__main__":
    main()
