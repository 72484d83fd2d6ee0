import pytest
import torch

from prosv_lens.directions import mean_difference
from prosv_lens.interventions import check_compatible

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


def test_mean_difference_as_a_vector_fits_its_model(tiny):
    md = mean_difference(tiny, POS, NEG, layer=1)
    sv = md.vector(tiny, 1, info={"method": "diffmean"})
    assert torch.equal(sv.v, md.direction) and float(sv.alpha) == 1.0
    assert sv.layer == 1 and str(sv.positions) == "all" and sv.info == {"method": "diffmean"}
    assert sv.model_id == tiny.model_id and sv.chat_template_hash == tiny.chat_template_hash
    check_compatible(tiny, sv)  # raises if the vector does not fit the model
