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
# # Quickstart: steer SmolLM2 with a prompt-only steering vector
#
# A **steering vector** adds `alpha * v` to the residual stream at one layer. A *full-sequence*
# vector (FSSV) adds it at every token; a *prompt-only* vector (PrOSV) adds it at four prompt
# tokens only (the first two and the last two, `f2+l2`) and never touches the answer. Both are
# trained here the same way: the factor `alpha` and the direction `v` jointly, to make the
# model's answers to plain instructions look like answers that weave in a concept.
#
# Set `PROSV_SMOKE=1` to run everything at toy sizes (CI does); the model is always the real
# SmolLM2-135M-Instruct.
#
# **The saved outputs** in `01_quickstart.ipynb` come from a run at those toy sizes (1 epoch on
# 12 examples, one 8-token answer; about a minute on 2 CPU cores), so its steered answers are
# not about the ocean yet: the full sizes (12 epochs) take about 11 minutes of training there.
# Run it without `PROSV_SMOKE` for real answers.

# %%
import json
import os

from prosv_lens import GenerationConfig, TrainConfig, generate, load_model, save_vector, train
from prosv_lens.concepts import builtin_instructions, load_builtin_concept

SMOKE = os.environ.get("PROSV_SMOKE") == "1"
N_EXAMPLES, EPOCHS, N_TOKENS, N_PROMPTS = (12, 1, 8, 1) if SMOKE else (64, 12, 48, 3)
print(f"{'toy' if SMOKE else 'full'} sizes: {N_EXAMPLES} examples, {EPOCHS} epochs, "
      f"{N_TOKENS} answer tokens, {N_PROMPTS} questions")  # fmt: skip

# %% [markdown]
# ## The ten lines
# Load the model, load a built-in concept (instructions with concept-woven answers written by
# SmolLM2 itself), train a PrOSV and an FSSV at layer `round(0.4 * n_layers)`, and answer a few
# held-out instructions unsteered and with each vector (12 epochs: about 7 + 4 minutes on 2 CPU
# cores).

# %%
model = load_model("smollm2-135m-instruct")
data = load_builtin_concept("the ocean").subset(range(N_EXAMPLES))
layer = round(0.4 * model.n_layers)
prosv = train(model, data, TrainConfig.prosv(layer, epochs=EPOCHS)).vectors[data.name]
fssv = train(model, data, TrainConfig.fssv(layer, epochs=EPOCHS)).vectors[data.name]
questions = builtin_instructions("eval")[:N_PROMPTS]
config = GenerationConfig(max_new_tokens=N_TOKENS)
answers = {
    name: generate(model, questions, vector, config).texts
    for name, vector in (("unsteered", ()), ("prosv", prosv), ("fssv", fssv))
}

# %% [markdown]
# ## What came out
# The PrOSV changed four prompt tokens at layer 12 and nothing else, yet the whole answer
# moves towards the ocean: every answer token reads those four tokens through attention
# (see `03_attention_flow.py` for how).

# %%
for i, question in enumerate(questions):
    print(f"Q: {question}")
    for name, texts in answers.items():
        print(f"  [{name}] {texts[i]!r}")
print(prosv)
print(fssv)

# %% [markdown]
# Save the vector (a `.safetensors` tensor file plus a `.json` of its settings) and the answers,
# to load them later with `prosv_lens.load_vector`.

# %%
save_vector(prosv, "ocean_prosv", overwrite=True)  # a rerun replaces its own file
with open("quickstart_answers.json", "w") as fh:
    json.dump({"questions": list(questions), "answers": answers}, fh, indent=1)
