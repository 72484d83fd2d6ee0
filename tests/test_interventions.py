import pytest
import torch
from _shared import PROMPTS, SPECS

from prosv_lens.errors import SteeringStateError, VectorMismatchError
from prosv_lens.interventions import SteeringVector, active_hook_count, run_with_steering, steering
from prosv_lens.prompts import encode_prompts


def _forward(model, batch):
    return model.bridge(
        batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    )


def _resid_post(model, batch, vectors=()):
    """Every layer's hook_resid_post, [n_layers, batch, pos, d_model], under the given vectors."""
    store = {}

    def grabber(name):
        def grab(resid, hook):
            store[name] = resid.detach().clone()

        return grab

    names = [model.hook_name(layer) for layer in range(model.n_layers)]
    with (
        steering(model, vectors, batch),
        model.bridge.hooks(fwd_hooks=[(n, grabber(n)) for n in names]),
    ):
        _forward(model, batch)
    return torch.stack([store[n] for n in names])


@pytest.mark.parametrize("spec", ["all", "f2+l2", "role:user"])
def test_zero_vector_is_bit_identical(tiny, spec):
    batch = encode_prompts(tiny, PROMPTS, padding_side="right")
    base = _forward(tiny, batch)
    steered = run_with_steering(
        tiny, SteeringVector.zeros(tiny.d_model, layer=1, positions=spec), batch
    )
    assert torch.equal(base, steered)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("spec", SPECS)
def test_edit_is_local_to_its_positions_and_causal(tiny, side, spec):
    layer = 1
    batch = encode_prompts(tiny, PROMPTS, padding_side=side)
    sv = SteeringVector(torch.randn(tiny.d_model), layer=layer, positions=spec, alpha=3.0)
    base, steered = _resid_post(tiny, batch), _resid_post(tiny, batch, [sv])
    mask = sv.positions.resolve(batch).mask
    # Layers below L: untouched everywhere.
    assert torch.equal(base[:layer], steered[:layer])
    # Layer L: exactly +alpha*v at the spec's positions, bit-identical everywhere else.
    assert torch.equal(base[layer][~mask], steered[layer][~mask])
    assert torch.allclose(
        steered[layer][mask] - base[layer][mask],
        sv.delta.detach().expand(int(mask.sum()), -1),
        atol=1e-5,
    )
    # Every layer: real tokens before each row's first steered column are unchanged (padding
    # columns compute garbage that no real token reads, so they are not compared).
    for b in range(batch.batch_size):
        first = int(mask[b].nonzero()[0])
        real = batch.attention_mask[b].nonzero().flatten()
        before, after = real[real < first], real[real >= first]
        assert torch.equal(base[:, b, before], steered[:, b, before])
        assert not torch.equal(base[-1, b, after], steered[-1, b, after])


def test_vectors_compose_additively(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    v1, v2 = torch.randn(tiny.d_model), torch.randn(tiny.d_model)
    a = SteeringVector(v1, layer=1, positions="f2+l2", alpha=2.0)
    b = SteeringVector(v2, layer=1, positions="f2+l2", alpha=0.5)
    both = run_with_steering(tiny, [a, b], batch)
    summed = run_with_steering(
        tiny, SteeringVector(2.0 * v1 + 0.5 * v2, layer=1, positions="f2+l2"), batch
    )
    assert torch.allclose(both, summed, atol=1e-5)
    c = SteeringVector(v2, layer=2, positions="all")
    assert torch.equal(
        run_with_steering(tiny, [a, c], batch), run_with_steering(tiny, [c, a], batch)
    )
    assert not torch.allclose(
        run_with_steering(tiny, [a, c], batch), run_with_steering(tiny, a, batch)
    )


def test_hooks_are_removed_when_the_body_raises(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    sv = SteeringVector(torch.randn(tiny.d_model), layer=1)
    with pytest.raises(RuntimeError, match="boom"), steering(tiny, sv, batch):
        assert active_hook_count(tiny) == 1
        raise RuntimeError("boom")
    assert active_hook_count(tiny) == 0


def test_bad_spec_attaches_nothing(tiny):
    batch = encode_prompts(tiny, ["Hi"], chat_template=False)
    sv = SteeringVector(torch.randn(tiny.d_model), layer=1, positions="f2")
    bad = SteeringVector(torch.randn(tiny.d_model), layer=1, positions="f50")
    with pytest.raises(Exception, match="example 0"), steering(tiny, [sv, bad], batch):
        pass
    assert active_hook_count(tiny) == 0


def test_vector_for_another_model_is_rejected(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    with pytest.raises(VectorMismatchError, match="d_model 64.*d_model 32"):
        run_with_steering(tiny, SteeringVector(torch.randn(64), layer=1), batch)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        run_with_steering(tiny, SteeringVector(torch.randn(tiny.d_model), layer=7), batch)


def test_running_another_batch_inside_the_context_is_an_error(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    sv = SteeringVector(torch.randn(tiny.d_model), layer=1)
    with steering(tiny, sv, batch):
        with pytest.raises(SteeringStateError, match="batch of 3"):
            tiny.bridge(batch.input_ids[:1])
        with pytest.raises(SteeringStateError, match="prosv_lens.generate"):
            tiny.bridge(batch.input_ids[:, :4])


def test_gradients_reach_alpha_and_v_and_no_weight(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    sv = SteeringVector(torch.randn(tiny.d_model), layer=1, positions="f2+l2", alpha=2.0)
    sv.requires_grad_(True)
    logits = run_with_steering(tiny, sv, batch)
    logits[:, -1].logsumexp(-1).sum().backward()
    assert sv.v.grad is not None and float(sv.v.grad.norm()) > 0
    assert sv.alpha.grad is not None and float(sv.alpha.grad.abs()) > 0
    assert all(p.grad is None for p in tiny.bridge.parameters())


def test_constructor_validates_inputs():
    with pytest.raises(ValueError, match="1-d float tensor"):
        SteeringVector(torch.zeros(2, 3), layer=0)
    with pytest.raises(ValueError, match="layer must be >= 0"):
        SteeringVector(torch.zeros(3), layer=-1)
    sv = SteeringVector(torch.ones(3), layer=0, alpha=2.0)
    assert float(sv.scaled(0.5).alpha) == 1.0 and float(sv.alpha) == 2.0
    assert "positions='f2+l2'" in repr(sv)
