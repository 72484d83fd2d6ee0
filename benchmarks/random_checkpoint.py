"""Write a random-weights checkpoint with a real model's architecture and tokenizer.

    python benchmarks/random_checkpoint.py SRC OUT [--seed 0]

``SRC`` is a checkpoint folder (``config.json`` and tokenizer files; its weights are not read),
e.g. the cached SmolLM2 folder ``~/.cache/prosv_lens/models/smollm2-135m-instruct``. ``OUT`` gets
the same config and tokenizer with weights drawn by the architecture's own initialiser.

For timing only: training throughput depends on the shapes (layers, widths, vocabulary, sequence
lengths), not on the weight values, so this stands in for the real model on a machine the real
weights cannot reach (the GPU machine here takes 64 MiB of files per call; SmolLM2's fp32 weights
are 538 MB). Losses and vectors trained on it mean nothing.
"""

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.src / "config.json").exists():
        raise SystemExit(f"{args.src} has no config.json: pass a checkpoint folder")
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.src.iterdir():
        if f.is_file() and (f.suffix in (".json", ".jinja", ".txt", ".model")):
            shutil.copy2(f, args.out / f.name)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.src))
    model.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n / 1e6:.1f}M random parameters ({model.config.model_type})")


if __name__ == "__main__":
    main()
