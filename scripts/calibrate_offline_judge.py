"""Fit the offline judge's constants on AxBench TRAIN data (never on latent_eval_data).

    python scripts/calibrate_offline_judge.py ../shared/data/axbench-concept10/prod_2b_l10_v1 \
        ../shared/data/axbench-concept10/prod_2b_l20_v1 [--reference smollm2-135m-instruct]

Prints, for pasting into prosv_lens/evaluation/offline_judge.py:

* concept: the grid of convex weights over (whole cosine, best-sentence cosine, top-2 mean,
  best contrast) ranked by mean per-concept train AUROC (a concept's 72 positives vs the 216
  shared negatives plus the other concepts' positives), and the 0|1 (Youden) and 1|2 (97.5th
  percentile of negatives) thresholds of the module's score, pooled over concepts;
* relevance: 0|1 (Youden, own vs another row's instruction) and 1|2 (10th percentile of the
  target model's own answers, the train negatives);
* fluency: percentiles of the degeneration statistics on real train responses and on synthetic
  corruptions (word shuffle, loops, random characters); with --reference, the response NLL
  percentiles for real and corrupted text.
"""

import argparse
import itertools
import random

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from prosv_lens.concepts import axbench_concepts
from prosv_lens.evaluation.offline_judge import (
    BANK_EXCLUDE_COSINE,
    CONCEPT_BANK,
    OfflineJudge,
    degeneration_stats,
    response_nll,
    split_sentences,
)


def youden(pos: np.ndarray, neg: np.ndarray) -> float:
    fpr, tpr, thr = roc_curve(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    return float(thr[np.argmax(tpr - fpr)])


def corruptions(texts: list[str], seed: int = 0) -> dict[str, list[str]]:
    """Word shuffle, a loop of the first 8 words, and 50% of words replaced by random letters."""
    rng = random.Random(seed)
    out: dict[str, list[str]] = {"shuffle": [], "loop": [], "random": []}
    for t in texts:
        words = t.split()
        shuffled = words[:]
        rng.shuffle(shuffled)
        out["shuffle"].append(" ".join(shuffled))
        out["loop"].append(" ".join((words[:8] * 40)[: max(len(words), 24)]))
        junk = ["".join(rng.choices("bcdfghjklmnpqrstvwxz", k=rng.randint(2, 7))) for _ in words]
        out["random"].append(
            " ".join(j if rng.random() < 0.5 else w for w, j in zip(words, junk, strict=True))
        )
    return out


def concept_features(judge: OfflineJudge, responses: list[str], concept: str) -> np.ndarray:
    c = judge.embed([concept])[0]
    bank = judge.embed(CONCEPT_BANK)
    bank = bank[bank @ c < BANK_EXCLUDE_COSINE]
    rows = []
    for r in responses:
        s = judge.embed(split_sentences(r))
        cos = np.sort(s @ c)[::-1]
        contrast = np.max(s @ c - (s @ bank.T).mean(axis=1))
        rows.append([judge.embed([r])[0] @ c, cos[0], cos[:2].mean(), contrast])
    return np.array(rows)


def fit_concept(judge: OfflineJudge, folders: list[str]) -> None:
    per_concept = []  # (features of positives, of all negatives, of genre negatives)
    for folder in folders:
        df = pd.read_parquet(f"{folder}/train_data.parquet")
        shared_neg = df[df.category == "negative"]
        for meta in axbench_concepts(folder):
            cid, concept = meta["concept_id"], meta["concept"]
            pos = df[(df.category == "positive") & (df.concept_id == cid)]
            other = df[(df.category == "positive") & (df.concept_id != cid)]
            f_pos = concept_features(judge, list(pos.output), concept)
            f_shared = concept_features(judge, list(shared_neg.output), concept)
            f_other = concept_features(judge, list(other.output), concept)
            per_concept.append((f_pos, np.r_[f_shared, f_other], f_shared))
    ranked = []
    for w in itertools.product(np.arange(0, 1.01, 0.1), repeat=4):
        if abs(sum(w) - 1) > 1e-6:
            continue
        w = np.array(w)
        aucs = [
            roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p @ w, n @ w])
            for p, n, _ in per_concept
        ]
        ranked.append((float(np.mean(aucs)), tuple(np.round(w, 1))))
    ranked.sort(reverse=True)
    print("concept weights (whole, best-sent, top2, contrast) by mean train AUROC:")
    for auc, w in ranked[:5]:
        print(f"  {auc:.4f} {w}")
    plain = np.array([1.0, 0, 0, 0])
    print(
        f"  plain whole cosine: {np.mean([roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p @ plain, n @ plain]) for p, n, _ in per_concept]):.4f}"
    )
    w = np.array(ranked[0][1])
    pos = np.concatenate([p @ w for p, _, _ in per_concept])
    neg = np.concatenate([g @ w for _, _, g in per_concept])
    print(f"concept thresholds with the best weights: 0|1 (Youden) {youden(pos, neg):.3f}, "
          f"1|2 (97.5th pct of negatives) {np.percentile(neg, 97.5):.3f}; "
          f"share of train positives >= 1|2: {(pos >= np.percentile(neg, 97.5)).mean():.2f}")  # fmt: skip


def fit_relevance(judge: OfflineJudge, folders: list[str]) -> None:
    own, mismatched, own_target = [], [], []
    rng = np.random.default_rng(0)
    for folder in folders:
        df = pd.read_parquet(f"{folder}/train_data.parquet")
        ins, outs = list(df.input), list(df.output)
        shift = rng.integers(1, len(df), len(df))
        other = [ins[(i + s) % len(ins)] for i, s in enumerate(shift)]
        own.append(judge.relevance_scores(ins, outs))
        mismatched.append(judge.relevance_scores(other, outs))
        own_target.append(own[-1][(df.category == "negative").to_numpy()])
    own, mismatched, own_target = map(np.concatenate, (own, mismatched, own_target))
    auc = roc_auc_score(np.r_[np.ones(len(own)), np.zeros(len(mismatched))], np.r_[own, mismatched])
    print(f"relevance: train AUROC own vs mismatched {auc:.4f}; thresholds 0|1 (Youden) "
          f"{youden(own, mismatched):.3f}, 1|2 (10th pct of target-model answers) "
          f"{np.percentile(own_target, 10):.3f}")  # fmt: skip


def fit_fluency(folders: list[str], reference: str | None, n_nll: int) -> None:
    df = pd.concat([pd.read_parquet(f"{f}/train_data.parquet") for f in folders])
    real = list(df.output)
    sets = {"real": real, **corruptions(real)}
    for key in ("repeat_3gram", "compression", "non_alpha"):
        for name, texts in sets.items():
            values = [
                degeneration_stats(t)[key]
                for t in texts
                if len(t.encode()) >= (200 if key == "compression" else 0)
            ]
            print(f"fluency {key:12s} {name:8s} pct 0.5/10/50/90/99.5: "
                  f"{np.round(np.percentile(values, [0.5, 10, 50, 90, 99.5]), 3)}")  # fmt: skip
    if reference is None:
        return
    from prosv_lens.models import load_model

    model = load_model(reference, device="cpu")
    pick = random.Random(0).sample(range(len(real)), n_nll)
    ins = [list(df.input)[i] for i in pick]
    for name, texts in sets.items():
        nll = response_nll(model, ins, [texts[i] for i in pick])
        print(f"fluency nll {name:8s} pct 2.5/10/50/90/97.5: "
              f"{np.round(np.percentile(nll, [2.5, 10, 50, 90, 97.5]), 3)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", nargs="+", help="AxBench configuration folders (train_data.parquet)"
    )
    parser.add_argument("--reference", default=None, help="fit fluency NLL under this model")
    parser.add_argument("--n-nll", type=int, default=200, help="train responses scored for NLL")
    parser.add_argument(
        "--skip", nargs="*", default=(), choices=("concept", "relevance", "fluency")
    )
    args = parser.parse_args()
    judge = OfflineJudge()
    if "concept" not in args.skip:
        fit_concept(judge, args.folders)
    if "relevance" not in args.skip:
        fit_relevance(judge, args.folders)
    if "fluency" not in args.skip:
        fit_fluency(args.folders, args.reference, args.n_nll)


if __name__ == "__main__":
    main()
