# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Steering vectors on AxBench concepts: the saved results
#
# [AxBench](https://github.com/stanfordnlp/axbench) gives, for each concept (a natural-language
# description such as "references to video and multimedia content"), 72 instructions answered
# with the concept woven in. A steering method is judged on held-out instructions by three 0-2
# ratings, **concept**, **instruction** and **fluency**, combined per answer into their harmonic
# mean (0 when any rating is 0) and averaged.
#
# The experiment is a command, not this notebook:
#
# ```bash
# prosv axbench-eval --axbench ../shared/data/axbench-concept10/prod_2b_l10_v1 --concepts 5 \
#     --out results/axbench_l10            # add --sizes smoke for a toy run
# ```
#
# It trains a prompt-only vector (PrOSV, `f2+l2`) and a full-sequence vector (FSSV) for all
# concepts in one pass each, builds the baselines (no steering, the steering *prompt*, DiffMean
# with its factor chosen on a selection half), judges answers to held-out instructions with the
# offline judge and saves `scores.json` and the judged answers `rows.jsonl` (a rerun resumes).
# This notebook reads what it saved (no model).

# %%
from pathlib import Path

from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import KEY_FIELDS
from prosv_lens.experiments.axbench_results import AxBenchScores
from prosv_lens.figures import steering_scores_figure

RESULTS = Path("../results/axbench_l10")  # run from notebooks/, as Jupyter does
# prosv_lens.figures selects matplotlib's file-only Agg backend; Jupyter's draws inline:
# %matplotlib inline

# %% [markdown]
# ## Scores per method
# With several concepts the CI is a bootstrap over concepts (each concept's mean), as AxBench
# reports. The jointly trained vectors are used at their learned factor: no factor search.

# %%
scores = AxBenchScores.load(RESULTS / "scores.json")  # typed: a wrong field is named on load
for s in scores.methods:
    o = s.overall
    print(
        f"{s.method:<10} overall {o.mean:.3f} [{o.low:.3f}, {o.high:.3f}]  "
        f"concept {s.concept.mean:.2f}  instruct {s.instruct.mean:.2f}  "
        f"fluency {s.fluency.mean:.2f}  ({s.n_answers} answers)"
    )
fig = steering_scores_figure(scores.methods, f"AxBench Concept10, {scores.n_concepts} concepts")

# %% [markdown]
# ## Per concept
# The mean overall score of each method on each concept's test half.

# %%
rows = ResultLog(RESULTS / "rows.jsonl", KEY_FIELDS).rows
per_concept: dict[str, dict[str, list[float]]] = {}
for r in rows:
    if r["suite"] == "steering" and r["split"] == "test":
        per_concept.setdefault(r["concept"], {}).setdefault(r["method"], []).append(r["overall"])
methods = [s.method for s in scores.methods]
print(f"{'concept':<52}" + "".join(f"{m:>10}" for m in methods))
for concept, by_method in per_concept.items():
    means = (sum(by_method[m]) / len(by_method[m]) for m in methods)
    print(f"{concept[:50]:<52}" + "".join(f"{x:10.2f}" for x in means))
