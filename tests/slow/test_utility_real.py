"""Utility under steering on the real SmolLM2-135M-Instruct (slow)."""

import pytest
import torch

from prosv_lens.evaluation.utility import (
    KLConfig,
    UtilityConfig,
    evaluate_utility,
    kl_damage,
    load_utility_items,
)
from prosv_lens.interventions import SteeringVector

pytestmark = pytest.mark.slow

NORM = 16.0  # |alpha * v| of a random unit direction at layer 10 (FSSV KL ~0.06 nats, PrOSV ~0.006)


def test_unsteered_accuracy_on_the_builtin_set(smol):
    items = load_utility_items()
    result = evaluate_utility(smol, None, items, UtilityConfig(max_new_tokens=32, batch_size=16))
    # The set is sized for this model: neither hopeless nor trivial.
    assert 0.4 <= result.accuracy.mean <= 0.9, result.accuracy
    assert result.accuracy.n == len(items)


def test_full_sequence_vector_damages_more_than_the_same_prompt_only_vector(smol):
    prompts = [it.prompt for it in load_utility_items()[::10]]
    v = torch.randn(smol.d_model, generator=torch.Generator().manual_seed(0))
    cfg = KLConfig(max_new_tokens=12, batch_size=8)
    kl = {
        spec: kl_damage(
            smol, SteeringVector(v / v.norm(), layer=10, positions=spec, alpha=NORM), prompts, cfg
        )  # fmt: skip
        for spec in ("all", "f2+l2")
    }
    assert kl["all"].mean > kl["f2+l2"].mean > 0.0, {k: str(r.estimate) for k, r in kl.items()}
