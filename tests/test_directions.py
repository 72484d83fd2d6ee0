import pytest
import torch

from prosv_lens.directions import mean_difference

POS = ["the sea and the waves", "ocean water, salty spray"]
NEG = ["a quiet office meeting", "bread and milk at the shop"]


def test_mean_difference_is_unit_and_antisymmetric(tiny):
    a = mean_difference(tiny, POS, NEG, layer=1)
    b = mean_difference(tiny, NEG, POS, layer=1)
    assert a.direction.shape == (tiny.d_model,)
    assert abs(float(a.direction.norm()) - 1) < 1e-5
    assert torch.allclose(a.direction, -b.direction, atol=1e-5)
    assert a.resid_norm > 0 and a.raw_norm > 0


def test_mean_difference_needs_texts(tiny):
    with pytest.raises(ValueError, match="at least one positive"):
        mean_difference(tiny, [], NEG, layer=1)
