"""Analysis on SmolLM2-135M-Instruct (fp32): the restore/inject invariants hold on a real model."""

import pytest
import torch

from prosv_lens.analysis import KVPatch, pair_sequences, patched_logits, run_pair
from prosv_lens.analysis.paired import kv_cache_names, layers_above
from prosv_lens.interventions import SteeringVector

pytestmark = pytest.mark.slow

PROMPTS = ["Name three colors.", "Write a haiku about autumn leaves."]


def test_restoring_or_injecting_all_keys_and_values_on_smollm2(smol):
    v = torch.randn(smol.d_model, generator=torch.Generator().manual_seed(0))
    sv = SteeringVector(v / v.norm(), layer=10, positions="f2+l2", alpha=12.0)
    seq = pair_sequences(smol, PROMPTS, sv, max_new_tokens=16)
    above = layers_above(smol, sv)
    pair = run_pair(smol, seq, sv, cache=kv_cache_names(above))
    restored = patched_logits(smol, seq, sv, KVPatch(above), "restore", pair.cache_unsteered)
    injected = patched_logits(smol, seq, sv, KVPatch(above), "inject", pair.cache_steered)
    keep = seq.batch.attention_mask.bool() & ~seq.steered
    assert (pair.steered - pair.unsteered)[keep].abs().max() > 1.0  # the edit reaches them
    assert (restored - pair.unsteered)[keep].abs().max() <= 1e-3
    assert (injected - pair.steered)[keep].abs().max() <= 1e-3
