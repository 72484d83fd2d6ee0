"""Real training on the embedded SmolLM2 with AxBench Concept10 data (slow: ~1.5 min)."""

import pytest
import torch
from _shared import AXBENCH, fast_and_full_grads, needs_axbench

from prosv_lens.concepts import load_axbench_concept
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts
from prosv_lens.training import TrainConfig, response_loss, train
from prosv_lens.training.forward import gather_rows
from prosv_lens.vector_io import load_vector, save_vector

pytestmark = pytest.mark.slow
DATA = AXBENCH / "prod_2b_l10_v1"
LAYER = 12  # 40% of SmolLM2's 30 layers, the paper's relative depth


@needs_axbench
@pytest.mark.parametrize("spec", ["f2+l2", "all"])
@pytest.mark.parametrize(("fixture", "rtol"), [("smol64", 1e-7), ("smol", 1e-4)])
def test_fast_path_matches_full_path_on_smollm2(request, fixture, rtol, spec):
    """In float64 the two paths are the same function (measured: <= 1.2e-8 relative). In fp32 the
    fast path's chunked loss sums the log-sum-exp over 49k logits in another order than the full
    path's log_softmax, which moves the gradients by about 1e-5 relative (measured 1.4e-5 / 2.6e-5
    for f2+l2 / all): rounding, hence the looser fp32 tolerance."""
    model = request.getfixturevalue(fixture)
    data = load_axbench_concept(DATA, 0).subset(range(3))
    batch = encode_prompts(
        model,
        list(data.prompts),
        padding_side="right",
        responses=list(data.responses),
        max_response_tokens=48,
    )
    rows = gather_rows(
        [batch], [PositionSpec.parse(spec).resolve(batch).mask], [(0, 0), (0, 1), (0, 2)]
    )
    gen = torch.Generator().manual_seed(0)
    v0 = torch.rand(model.d_model, generator=gen, dtype=model.dtype) - 0.5
    fast, full = fast_and_full_grads(model, batch, rows, LAYER, 96.0, v0)
    for a, b in zip(fast, full, strict=True):
        assert (a - b).norm() <= rtol * b.norm()


@needs_axbench
def test_joint_prosv_lowers_held_out_loss_on_a_real_concept(smol, tmp_path):
    """Concept 0 ('references to specific dates and publication information'): train on 32
    positives, 6 epochs; held-out = positives 56..71. Measured here: 2.478 -> 2.348 nats/token;
    the threshold asks for at least 0.08 below the unsteered model."""
    data = load_axbench_concept(DATA, 0)
    train_part, held_out = data.subset(range(32)), data.subset(range(56, 72))
    cfg = TrainConfig.prosv(LAYER, epochs=6, batch_size=8, max_response_tokens=64)
    before = response_loss(smol, held_out, None, layer=LAYER, max_response_tokens=64).mean()
    result = train(smol, train_part, cfg, progress=False)
    vec = result.vectors[data.name]
    after = response_loss(smol, held_out, vec, layer=LAYER, max_response_tokens=64).mean()
    assert after <= before - 0.08, (float(before), float(after))
    assert float(vec.alpha) != pytest.approx(4 * 576**0.5)  # the factor was learned
    back = load_vector(save_vector(vec, tmp_path / "dates"), smol)
    assert len(back.info["train_log"]) == result.steps == 24
