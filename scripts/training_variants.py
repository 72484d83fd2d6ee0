"""Joint training vs its ablations on one real concept: held-out response loss, same data and budget.

    .venv/bin/python scripts/training_variants.py [--data ../shared/data/axbench-concept10/prod_2b_l10_v1]
        [--concept-id 0] [--epochs 12] [--n-train 56] [--max-response-tokens 64]

Trains on the first ``n-train`` positives of the concept and reports the mean per-token response
NLL on the remaining ones (held out), for: PrOSV joint (the paper's preset), PrOSV with alpha
fixed at 1 (the paper's "unusable" ablation), PrOSV trained with SGD instead of Adam, and a
jointly trained FSSV. Prints a markdown table.
"""

import argparse
import time
from pathlib import Path

from prosv_lens.concepts import load_axbench_concept
from prosv_lens.models import load_model
from prosv_lens.training import TrainConfig, response_loss, train

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "axbench-concept10"
    / "prod_2b_l10_v1"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--concept-id", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--n-train", type=int, default=56)
    ap.add_argument("--max-response-tokens", type=int, default=64)
    args = ap.parse_args()
    model = load_model(args.model, device="cpu")
    layer = round(0.4 * model.n_layers)
    data = load_axbench_concept(args.data, args.concept_id)
    train_part, held_out = data.split(args.n_train)
    common = {"epochs": args.epochs, "max_response_tokens": args.max_response_tokens}
    runs = {
        "PrOSV joint (paper preset)": TrainConfig.prosv(layer, **common),
        "PrOSV, alpha fixed at 1": TrainConfig.prosv(layer, variant="fixed_alpha", **common),
        "PrOSV, SGD instead of Adam": TrainConfig.prosv(layer, optimizer="sgd", **common),
        "FSSV joint (paper preset)": TrainConfig.fssv(layer, **common),
    }
    base = float(
        response_loss(
            model, held_out, None, layer=layer, max_response_tokens=args.max_response_tokens
        ).mean()
    )
    print(f"{model.model_id}, layer {layer}, concept {args.concept_id} ({data.name!r}), {len(train_part)} train / "
          f"{len(held_out)} held-out examples, {args.epochs} epochs, batch 12, responses cut to {args.max_response_tokens} tokens\n")  # fmt: skip
    print(
        "| run | train loss first -> last step | held-out loss | vs unsteered | alpha | norm of v | time |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| unsteered | - | {base:.3f} | - | - | - | - |")
    for name, cfg in runs.items():
        t0 = time.perf_counter()
        result = train(model, train_part, cfg, progress=False)
        seconds = time.perf_counter() - t0
        vec, log = result.vectors[data.name], result.logs[data.name]
        held = float(
            response_loss(
                model, held_out, vec, layer=layer, max_response_tokens=args.max_response_tokens
            ).mean()
        )
        print(f"| {name} | {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} | {held:.3f} | {held - base:+.3f} | "
              f"{float(vec.alpha):.1f} | {float(vec.v.norm()):.2f} | {seconds:.0f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
