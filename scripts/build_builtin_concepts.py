"""Build the built-in concept datasets (``prosv_lens/resources/concepts/<slug>.jsonl``).

SmolLM2-135M-Instruct writes, for the first ``--n`` instructions of the built-in train split,
a concept answer (best of ``--candidates`` by keyword hits; see prosv_lens/builder.py) and its
plain answer. Each row: ``concept, prompt, response, negative, hits``. Prints the generation time,
how often the concept's words appear in responses and in the plain answers, and a few samples.

    .venv/bin/python scripts/build_builtin_concepts.py            # all built-in concepts
    .venv/bin/python scripts/build_builtin_concepts.py --only dogs --n 16

Results are cached (prosv_lens.builder), so a rerun with the same settings only rewrites files.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from prosv_lens.builder import BuildConfig, build_concept, concept_keywords, keyword_hits
from prosv_lens.concepts import concept_slug
from prosv_lens.models import load_model

# Concept -> related words that also count as a mention (beyond the concept's own words).
CONCEPTS = {
    "the ocean": ("sea", "wave", "beach", "tide", "marine", "coast", "shore", "underwater"),
    "coffee": ("espresso", "latte", "caffeine", "cappuccino", "barista", "brew", "cafe"),
    "space and astronomy": ("planet", "star", "galax", "moon", "orbit", "rocket", "astronaut",
                            "telescope", "universe", "cosmic"),
    "dogs": ("puppy", "puppies", "canine", "bark", "leash", "pup"),
    "music": ("song", "melod", "rhythm", "guitar", "piano", "singer", "singing", "concert",
              "tune", "musician"),
}  # fmt: skip
OUT = Path(__file__).resolve().parents[1] / "prosv_lens" / "resources" / "concepts"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="concept names (default: all)")
    ap.add_argument("--n", type=int, default=64, help="instructions per concept")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = BuildConfig(
        n_train=args.n, max_new_tokens=args.max_new_tokens, candidates=args.candidates
    )
    model = load_model("smollm2-135m-instruct", device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for name in args.only or CONCEPTS:
        t0 = time.time()
        words = concept_keywords(name)
        keys = words + CONCEPTS[name]
        built = build_concept(model, name, cfg=cfg, keywords=keys)
        d = built.data
        assert d.negatives is not None
        strict = sum(keyword_hits(r, words) > 0 for r in d.responses) / len(d)
        in_plain = sum(keyword_hits(n, keys) > 0 for n in d.negatives) / len(d)
        rows = [
            {"concept": name, "prompt": p, "response": r, "negative": n, "hits": h}
            for p, r, n, h in zip(d.prompts, d.responses, d.negatives, built.hits, strict=True)
        ]
        path = args.out / f"{concept_slug(name)}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(
            f"{name!r}: {len(d)} rows in {time.time() - t0:.0f}s (cached: {built.from_cache}); "
            f"responses with a concept word {strict:.0%}, with a concept or related word "
            f"{built.mention_rate:.0%}; plain answers with one {in_plain:.0%} -> {path.name}"
        )
        for i in range(0, len(d), max(1, len(d) // 3)):
            print(f"   [{d.prompts[i]}]\n     concept: {d.responses[i][:200]!r}")
    print(f"total {time.time() - start:.0f}s; {cfg}")


if __name__ == "__main__":
    main()
