# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train and judge steering vectors on AxBench concepts
#
# [AxBench](https://github.com/stanfordnlp/axbench) gives, for each concept (a natural-language
# description such as "references to video and multimedia content"), 72 instructions answered
# with the concept woven in. A steering method is judged on held-out instructions by three 0-2
# ratings, **concept** (is the concept there?), **instruction** (does the answer address the
# instruction?) and **fluency**, combined per answer into their harmonic mean (0 when any rating
# is 0) and averaged.
#
# This notebook runs that protocol on the shared Concept10 data with SmolLM2-135M-Instruct:
#
# 1. train a prompt-only vector (PrOSV, `f2+l2`) and a full-sequence vector (FSSV) **for all
#    concepts in one pass each** (each concept keeps its own `alpha` and `v`);
# 2. build the baselines: no steering, the steering *prompt*, and DiffMean (mean difference of
#    positive and negative activations) with its factor chosen on a selection half;
# 3. generate answers to held-out instructions, judge them, and report scores with bootstrap CIs.
#
# The jointly trained vectors are used at their learned factor: no factor search.
#
# **Data.** `PROSV_AXBENCH` names an AxBench configuration folder (`metadata.jsonl` +
# `train_data.parquet`); the default is the shared Concept10 copy beside the repository. With the
# Hugging Face hub, `hf:pyvene/axbench-concept10/2b/l10` downloads the same data.
#
# **Judge.** The offline judge (MiniLM embeddings for concept and instruction, SmolLM2's own
# likelihood for fluency) runs anywhere. For the paper's LLM judge, set `judge = LLMJudge()` (an
# OpenAI-compatible endpoint; needs `OPENAI_API_KEY`). The held-out instructions are the
# package's built-in evaluation split (AxBench itself samples Alpaca-Eval instructions).
#
# Set `PROSV_SMOKE=1` for toy sizes (CI does), `PROSV_N_CONCEPTS` to judge fewer concepts, and
# `PROSV_OUT` for the output folder (default `axbench_eval`; a rerun resumes the judged rows).

# %%
import json
import os
from pathlib import Path

from prosv_lens import (
    EvalConfig,
    Method,
    OfflineJudge,
    TrainConfig,
    evaluate_steering,
    load_axbench_training_set,
    load_model,
    summarize,
    train,
)
from prosv_lens.baselines import diffmean
from prosv_lens.concepts import axbench_concepts, builtin_instructions
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import KEY_FIELDS, format_scores, tasks_from
from prosv_lens.figures import steering_scores_figure
from prosv_lens.figures.style import save
from prosv_lens.interventions import SteeringVector

SMOKE = os.environ.get("PROSV_SMOKE") == "1"
AXBENCH = os.environ.get("PROSV_AXBENCH", "../../shared/data/axbench-concept10/prod_2b_l10_v1")
N_CONCEPTS, N_TRAIN, EPOCHS, N_EVAL, N_TOKENS = (2, 12, 1, 4, 8) if SMOKE else (10, 72, 6, 20, 64)
N_CONCEPTS = int(os.environ.get("PROSV_N_CONCEPTS", N_CONCEPTS))  # the first N of the folder
DIFFMEAN_FACTORS = (0.1, 0.2, 0.4) if SMOKE else (0.05, 0.1, 0.2, 0.4, 0.8)  # x residual norm
OUT = Path(os.environ.get("PROSV_OUT", "axbench_eval"))  # rows, scores and figure go here

# %% [markdown]
# ## 1. Data
# Each concept's training set is its 72 positives; DiffMean also uses the 72 shared negatives of
# the concept's genre (other instructions answered without the concept). Smoke mode: 12 of each.

# %%
model = load_model("smollm2-135m-instruct")
layer = round(0.4 * model.n_layers)
concepts = axbench_concepts(AXBENCH)[:N_CONCEPTS]
sets = [load_axbench_training_set(AXBENCH, m["concept_id"]) for m in concepts]
positives = [s.positives.subset(range(min(N_TRAIN, len(s.positives)))) for s in sets]
negatives = [s.negatives.subset(range(min(N_TRAIN, len(s.negatives)))) for s in sets]
for s, p, n in zip(sets, positives, negatives, strict=True):
    print(f"{s.concept_id}: {s.concept!r} ({s.genre}), {len(p)} positives, {len(n)} negatives")

# %% [markdown]
# ## 2. Train every concept in one pass
# One `train` call per kind of vector: each batch mixes concepts, each example steered by its own
# concept's vector, and each vector's update equals that of training it alone.

# %%
prosv = train(model, positives, TrainConfig.prosv(layer, epochs=EPOCHS), progress=False)
fssv = train(model, positives, TrainConfig.fssv(layer, epochs=EPOCHS), progress=False)
for name, result in (("prosv", prosv), ("fssv", fssv)):
    print(f"{name}: {result.steps} steps, {result.examples / result.seconds:.1f} examples/s, "
          f"{result.seconds:.0f} s")  # fmt: skip
    for concept, vector in result.vectors.items():
        log = result.logs[concept]
        print(f"  {concept[:50]:<50} alpha {float(vector.alpha):6.1f}  loss "
              f"{log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}")  # fmt: skip

# %% [markdown]
# ## 3. Judge every method on held-out instructions
# Answers are sampled (temperature 1, seeded). DiffMean's factor (a multiple of the median
# residual norm) is chosen on the first half of the instructions; every method is scored on the
# second half. Rows go to `axbench_eval/rows.jsonl`: a rerun skips what is already judged.

# %%
judge = OfflineJudge(reference=model)
log = ResultLog(OUT / "rows.jsonl", KEY_FIELDS)
tasks = tasks_from(builtin_instructions("eval")[:N_EVAL])
eval_cfg = EvalConfig(max_new_tokens=N_TOKENS, batch_size=N_EVAL)
for s, p, n in zip(sets, positives, negatives, strict=True):
    md = diffmean(model, p, n, layer)
    direction = SteeringVector(md.direction, layer=layer, positions="all", alpha=1.0,
                               model_id=model.model_id, chat_template_hash=model.chat_template_hash)  # fmt: skip
    methods = [
        Method.unsteered(),
        Method.prompt(),
        Method.factor_search("diffmean", direction, DIFFMEAN_FACTORS, unit=md.resid_norm),
        Method.vector("prosv", prosv.vectors[s.concept]),
        Method.vector("fssv", fssv.vectors[s.concept]),
    ]
    evaluate_steering(model, s.concept, methods, tasks, judge, log, eval_cfg)

# %% [markdown]
# ## 4. Scores
# With several concepts the CI is a bootstrap over concepts (each concept's mean), as AxBench
# reports; the `factor` column is DiffMean's selected factor per concept.

# %%
scores = summarize(log.rows)
print(format_scores(scores))
title = f"AxBench {Path(AXBENCH).name}, {len(sets)} concepts — {model.model_id} L{layer}"
print(
    "saved",
    [
        str(p)
        for p in save(
            steering_scores_figure([s.to_dict() for s in scores], title), OUT / "steering_scores"
        )
    ],
)
(OUT / "scores.json").write_text(json.dumps([s.to_dict() for s in scores], indent=1))

per_concept = {}
for r in log.rows:
    if r["split"] == "test":
        per_concept.setdefault(r["concept"], {}).setdefault(r["method"], []).append(r["overall"])
methods = [s.method for s in scores]
print(f"{'concept':<52}" + "".join(f"{m:>10}" for m in methods))
for concept, by_method in per_concept.items():
    means = (sum(by_method[m]) / len(by_method[m]) for m in methods)
    print(f"{concept[:50]:<52}" + "".join(f"{x:10.2f}" for x in means))
