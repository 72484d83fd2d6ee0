"""Real-model tests on the embedded Gemma-3-270m base (no chat template; slow: converts once)."""

import pytest
import torch
from _shared import assert_cached_equals_uncached, fast_and_full_grads

from prosv_lens.errors import PositionSpecError
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts
from prosv_lens.training.forward import gather_rows

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "Three primary colors are"]


def test_plain_prompts_get_one_bos_and_no_chat_roles(gemma64):
    assert not gemma64.has_chat_template and gemma64.chat_template_hash == "none"
    batch = encode_prompts(gemma64, PROMPTS, padding_side="left")
    for i in range(2):
        real = batch.input_ids[i, batch.attention_mask[i].bool()].tolist()
        assert real[0] == 2 and real[1] != 2  # <bos> exactly once
    with pytest.raises(PositionSpecError, match="no 'system' role span"):
        PositionSpec.parse("role:system").resolve(batch)


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_equals_uncached_on_gemma3(gemma64, side):
    batch = encode_prompts(gemma64, PROMPTS, padding_side=side)
    assert_cached_equals_uncached(
        gemma64,
        batch,
        layer=7,
        alpha=20000.0,
        specs=["f2+l2", "all", "role:user"],
        max_new_tokens=4,
    )


@pytest.mark.parametrize("spec", ["f2+l2", "all"])
def test_training_fast_path_matches_full_path_on_gemma3(gemma64, spec):
    """The fast path cuts Gemma-3's decoder (and its sliding/full layer types) to [L+1:]."""
    batch = encode_prompts(
        gemma64,
        PROMPTS,
        padding_side="right",
        responses=[" Paris, of course.", " red, blue and yellow."],
    )
    rows = gather_rows([batch], [PositionSpec.parse(spec).resolve(batch).mask], [(0, 1), (0, 0)])
    v0 = (
        torch.rand(gemma64.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        - 0.5
    )
    fast, full = fast_and_full_grads(gemma64, batch, rows, 7, 400.0, v0)
    for a, b in zip(fast, full, strict=True):
        assert (a - b).norm() <= 1e-5 * b.norm()
