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
# # How a prompt-only steering vector reaches the answer: attention, keys and values
#
# A prompt-only steering vector (PrOSV) adds `alpha * v` to the residual stream of layer `L` at
# four prompt tokens (the first two and the last two). No answer token is ever edited. Yet the
# answer changes. How?
#
# In a decoder-only transformer a token can only learn about another token through
# **attention**: at every layer, a query at the current token is compared with the **keys** of
# earlier tokens, and the result weights their **values**. Layers `0..L` run before the edit, so
# they are unchanged everywhere. From layer `L+1` on, the four steered tokens expose *edited*
# keys and values. So the effect of the vector on every later token travels through exactly one
# route: the keys and values of the steered positions at layers above `L`. This notebook
# measures that route with the analyses of `prosv_lens.analysis`:
#
# 1. **attention flow** — how much the answer tokens attend to the steered positions;
# 2. **path patching** — put back (restore) or transplant (inject) only those keys and values;
# 3. **knock-out** — cut attention to the steered positions altogether;
# 4. **decay** — does the effect fade along the answer? (PrOSV vs FSSV)
# 5. **logit lens** — which words the vector and its downstream effect push up or down.
#
# Every analysis returns a result object that is saved to disk; the figures are drawn from the
# saved files alone (`prosv figures` redraws them without a model). Set `PROSV_SMOKE=1` for toy
# sizes (CI); the model is always the real SmolLM2-135M-Instruct.
#
# **The saved outputs** in `03_attention_flow.ipynb` come from a run at those toy sizes (1 epoch
# on 12 examples, one prompt, an answer of at most 8 tokens; about 2 minutes on 2 CPU cores):
# they show what each analysis returns and draws, not the findings. The full sizes take over 11
# minutes of training there; the full-size analysis of the same concept, with its figures, is
# [`reports/attention_ocean.md`](../reports/attention_ocean.md).

# %%
import json
import os
from pathlib import Path

import circuitsvis as cv
import numpy as np
from IPython.display import HTML

from prosv_lens import TrainConfig, load_model, train
from prosv_lens.analysis import (
    AttentionFlowResult,
    DecayResult,
    KnockoutResult,
    PathPatchingResult,
    ResidualLensResult,
    VectorLensResult,
    pair_sequences,
    run_attention_analysis,
    run_pair,
)
from prosv_lens.concepts import builtin_instructions, load_builtin_concept
from prosv_lens.figures import (
    attention_heatmap_figure,
    decay_figure,
    knockout_figure,
    kv_path_figure,
    logit_lens_table,
    regenerate_figures,
)
from prosv_lens.figures.analysis import attention_mass

SMOKE = os.environ.get("PROSV_SMOKE") == "1"
N_EXAMPLES, EPOCHS, N_TOKENS, N_PROMPTS = (12, 1, 8, 1) if SMOKE else (64, 12, 48, 3)
RESULTS, FIGURES = Path("results/attention_notebook"), Path("figures")
# prosv_lens.figures selects matplotlib's file-only Agg backend; Jupyter's draws inline:
# %matplotlib inline
print(f"{'toy' if SMOKE else 'full'} sizes: {N_EXAMPLES} examples, {EPOCHS} epochs, "
      f"{N_TOKENS} answer tokens, {N_PROMPTS} prompts")  # fmt: skip

# %% [markdown]
# ## 1. A PrOSV and an FSSV for the same concept
# Both are trained jointly (factor and direction) on the built-in "the ocean" data at layer
# `L = round(0.4 * n_layers)` = 12 of SmolLM2's 30 layers, with the paper's presets (12 epochs;
# about 7 + 4 minutes on 2 CPU cores). With 4 epochs the PrOSV barely changes the answers.

# %%
model = load_model("smollm2-135m-instruct")
data = load_builtin_concept("the ocean").subset(range(N_EXAMPLES))
layer = round(0.4 * model.n_layers)
prosv = train(model, data, TrainConfig.prosv(layer, epochs=EPOCHS)).vectors[data.name]
fssv = train(model, data, TrainConfig.fssv(layer, epochs=EPOCHS)).vectors[data.name]
prompts = builtin_instructions("eval")[:N_PROMPTS]
print(prosv, fssv, sep="\n")

# %% [markdown]
# ## 2. Run every analysis once and save the results
# The analyses share one set of **paired sequences**: each prompt followed by the PrOSV-steered
# model's own greedy answer, run twice teacher-forced, without and with the vector. Since both
# runs see the same tokens, any difference in the next-token predictions along the answer is
# caused by the steering alone. We measure it as `KL(steered || unsteered)` per answer token.

# %%
index = run_attention_analysis(
    model,
    prosv,
    prompts,
    RESULTS,
    max_new_tokens=N_TOKENS,
    compare={"fssv": fssv},
    log=print,
    overwrite=True,  # a rerun of the notebook replaces its own earlier results
)
for prompt, answer in zip(index["prompts"], index["answers"], strict=True):
    print(f"{prompt!r}\n  -> {answer!r}")

# %% [markdown]
# ## 3. Attention to the steered positions
# For every layer above `L` and every head, the share of attention that the answer tokens put
# on the four steered positions, steered minus unsteered, averaged over all answer tokens
# (left), and the steered run's share itself (right). The first steered position is the start
# token, which most heads use as an "attention sink" (a place to park attention), so the
# right panel is large in many heads without meaning much; the change is what to look at.

# %%
flow = AttentionFlowResult.load(RESULTS / "flow")
change = attention_mass(flow) - attention_mass(flow, steered=False)
top = np.unravel_index(np.abs(change).argmax(), change.shape)
print(f"largest change: layer {flow.layers[top[0]]} head {top[1]}: {change[top]:+.4f}")
fig = attention_heatmap_figure(flow)  # Jupyter draws the figures a cell leaves open

# %% [markdown]
# ### The most changed head, up close (interactive)
# The same head's full attention pattern on the first prompt and its answer, unsteered and
# steered, drawn by [CircuitsVis](https://github.com/TransformerLensOrg/CircuitsVis)
# (TransformerLens's companion). Each row is a query token, each column a key token; tokens
# marked `▶` are the four steered positions. Click a head to enlarge it and hover a token to
# see where it looks. What to look at: the **answer rows** (the bottom part, below the
# prompt) in the `▶` columns — how much more (or less) the answer reads from the steered
# positions once they carry the edit, and whether the change sits on the first `▶` column (the
# start token, which most heads use as an attention sink) or on the other three.
#
# The view needs JavaScript loaded from the internet (unpkg.com); GitHub's notebook preview
# runs none, so open the `.ipynb` in Jupyter to see it. Offline, replace the last line with
# `view`, which embeds the whole script (1.3 MB).

# %%
top_layer, top_head = flow.layers[top[0]], int(top[1])
pattern_hook = f"blocks.{top_layer}.attn.hook_pattern"
seq = pair_sequences(model, prompts[:1], prosv, continuation=index["answers"][:1])
cached = run_pair(model, seq, prosv, cache=[pattern_hook])
tokens = [
    ("▶" if steered else "") + model.tokenizer.decode([token])
    for token, steered in zip(seq.batch.input_ids[0].tolist(), seq.steered[0].tolist(), strict=True)
]
patterns = [c[pattern_hook][0, top_head] for c in (cached.cache_unsteered, cached.cache_steered)]
view = cv.attention.attention_heads(
    attention=np.round(np.stack([p.double().cpu().numpy() for p in patterns]), 3),  # a lighter page
    tokens=tokens,
    attention_head_names=[f"L{top_layer}H{top_head} {n}" for n in ("unsteered", "steered")],
)
HTML(view.show_code())  # loads circuitsvis's script from its CDN: the saved notebook stays small

# %% [markdown]
# ## 4. Path patching: keys vs values
# *Restore*: run the steered model, but overwrite the steered positions' keys and/or values at
# chosen layers with their unsteered values; the share of the effect that disappears is what
# those keys/values were **necessary** for. *Inject*: run the unsteered model and transplant
# only the steered keys/values; the share of the effect that appears is what they are
# **sufficient** for. Restoring keys *and* values at all layers above `L` removes the effect
# exactly (nothing else can carry it). Keys decide *where* a token looks; values decide *what*
# it reads.

# %%
pp = PathPatchingResult.load(RESULTS / "patching")
carried = dict(zip(pp.labels, pp.effect_carried("kl"), strict=True))
for label in [lb for lb in pp.labels if len(pp.patch_layers[pp.labels.index(lb)]) > 1]:
    print(f"{label:28s} carries {carried[label]:.3f} of the effect")
print("layers ranked by restore kv:", pp.ranking("restore", "kv")[:3])
fig = kv_path_figure(pp)

# %% [markdown]
# ## 5. Knock-out: a blunter tool
# Zero the attention from every later token to the steered positions (and renormalise), in both
# runs. The steering effect then vanishes — but the knock-out also changes the *unsteered*
# model, because it removes the start-token sink every head relies on. The grey bar measures
# that damage: compare it with the steering effect before trusting a knock-out result.

# %%
kos = [KnockoutResult.load(RESULTS / s) for s in ("knockout_renorm", "knockout_plain")]
for ko in kos:
    print("renormalised" if ko.renormalize else "plain", ko.summary())
fig = knockout_figure(kos)

# %% [markdown]
# ## 6. Decay along the answer: PrOSV vs FSSV
# The FSSV edits every answer token itself; the PrOSV reaches them only through attention to
# four prompt tokens. Does the PrOSV's effect fade as the answer grows?

# %%
decay = DecayResult.load(RESULTS / "decay")
for name, row in zip(decay.names, decay.mean_kl(), strict=True):
    half = max(1, len(row) // 2)
    print(
        f"{name}: mean KL first half {np.nanmean(row[:half]):.3f}, second {np.nanmean(row[half:]):.3f}"
    )
fig = decay_figure(decay, log_scale=True)

# %% [markdown]
# ## 7. What the vector says in words
# The logit lens reads a residual-stream vector through the model's final norm and unembedding.
# We read `alpha * v` itself and the steered-minus-unsteered residual at the last layer along the
# answer (what the edit has become after travelling through attention).

# %%
lenses = [
    VectorLensResult.load(RESULTS / "vector_lens"),
    ResidualLensResult.load(RESULTS / "residual_lens"),
]
print(logit_lens_table(lenses, k=8))

# %% [markdown]
# ## 8. Every figure, from the saved results only
# `regenerate_figures` (the `prosv figures` command) redraws all of them without a model.

# %%
written = regenerate_figures(RESULTS.parent, FIGURES)
print(json.dumps([str(p) for p in written if p.suffix == ".png"], indent=1))
