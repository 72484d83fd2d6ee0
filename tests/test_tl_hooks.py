"""Steering as plain TransformerLens hooks: ``vector.fwd_hooks(batch)`` and ``steering_hooks``.

The same hooks as ``steering()`` / ``run_with_steering``, so every check is bit-identity with them,
plus composition with the caller's own hooks and the KV-cache offset driven by hand.
"""

import pytest
import torch
from _shared import PROMPTS, SPECS

from prosv_lens.errors import PositionSpecError, SteeringStateError, VectorMismatchError
from prosv_lens.generation import GenerationConfig, check_cache_equivalence, generate
from prosv_lens.interventions import (
    DecodeState,
    SteeringVector,
    active_hook_count,
    run_with_steering,
    steering,
    steering_hooks,
)
from prosv_lens.models import make_tiny_model
from prosv_lens.prompts import encode_prompts


def _vector(model, spec="f2+l2", layer=1, alpha=4.0):
    return SteeringVector(torch.randn(model.d_model), layer=layer, positions=spec, alpha=alpha)


def _inputs(batch):
    return {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("spec", SPECS)
def test_tl_hooks_are_bit_identical_to_run_with_steering(tiny, side, spec):
    batch = encode_prompts(tiny, PROMPTS, padding_side=side)
    sv = _vector(tiny, spec)
    reference = run_with_steering(tiny, sv, batch)
    hooked = tiny.bridge.run_with_hooks(
        batch.input_ids, fwd_hooks=sv.fwd_hooks(batch), **_inputs(batch)
    )
    assert active_hook_count(tiny) == 0
    with tiny.bridge.hooks(fwd_hooks=sv.fwd_hooks(batch)):
        assert active_hook_count(tiny) == 1
        scoped = tiny.bridge(batch.input_ids, **_inputs(batch))
    assert active_hook_count(tiny) == 0
    # The bridge derives position ids from the attention mask itself, so they may be left out;
    # only padding columns (whose outputs nothing reads) then differ under right padding.
    mask_only = tiny.bridge.run_with_hooks(
        batch.input_ids, attention_mask=batch.attention_mask, fwd_hooks=sv.fwd_hooks(batch)
    )
    assert torch.equal(hooked, reference) and torch.equal(scoped, reference)
    real = batch.attention_mask.bool()
    assert torch.equal(mask_only[real], reference[real])
    assert not torch.equal(reference, tiny.bridge(batch.input_ids, **_inputs(batch)))


def test_hooks_compose_with_the_users_own_hooks(tiny):
    """A cache hook after the steering hook at the same point sees the edited residual (exactly
    +alpha*v at the spec's columns, bit-identical elsewhere); one before it sees the original."""
    batch = encode_prompts(tiny, PROMPTS)
    sv = _vector(tiny)
    name = sv.hook_name
    seen: dict[str, torch.Tensor] = {}

    def cache_as(key):
        def grab(resid, hook):
            seen[key] = resid.detach().clone()

        return grab

    hooks = [(name, cache_as("before")), *sv.fwd_hooks(batch), (name, cache_as("after"))]
    logits = tiny.bridge.run_with_hooks(batch.input_ids, fwd_hooks=hooks, **_inputs(batch))
    assert torch.equal(logits, run_with_steering(tiny, sv, batch))
    mask = sv.positions.resolve(batch).mask
    assert torch.equal(seen["after"][~mask], seen["before"][~mask])
    delta = (seen["after"] - seen["before"])[mask]
    assert torch.allclose(delta, sv.delta.detach().expand_as(delta), atol=1e-5)
    # run_with_cache inside the scope caches the steered residual (TL 4.3's run_with_cache has no
    # fwd_hooks argument: it would pass one on to forward, which ignores it).
    with tiny.bridge.hooks(fwd_hooks=sv.fwd_hooks(batch)):
        cached_logits, cache = tiny.bridge.run_with_cache(
            batch.input_ids, names_filter=[name], **_inputs(batch)
        )
    assert torch.equal(cached_logits, logits) and torch.equal(cache[name], seen["after"])
    assert active_hook_count(tiny) == 0


def test_two_vectors_hooks_compose_like_steering_both(tiny):
    batch = encode_prompts(tiny, PROMPTS, padding_side="right")
    same_layer = [_vector(tiny, "f2+l2"), _vector(tiny, "role:user", alpha=-2.0)]
    two_layers = [_vector(tiny, "all", layer=0), _vector(tiny, "l3", layer=2)]
    for v1, v2 in (same_layer, two_layers):
        hooks = v1.fwd_hooks(batch) + v2.fwd_hooks(batch)
        logits = tiny.bridge.run_with_hooks(batch.input_ids, fwd_hooks=hooks, **_inputs(batch))
        assert torch.equal(logits, run_with_steering(tiny, [v1, v2], batch))
        helper = steering_hooks(tiny, [v1, v2], batch)
        assert [n for n, _ in helper] == [n for n, _ in hooks]  # no float64 fix in float32
        with steering(tiny, [v1, v2], batch):
            assert torch.equal(logits, tiny.bridge(batch.input_ids, **_inputs(batch)))


def test_no_hook_stays_attached_even_when_a_hook_raises(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    sv = _vector(tiny)
    tiny.bridge.run_with_hooks(batch.input_ids, fwd_hooks=sv.fwd_hooks(batch), **_inputs(batch))
    assert active_hook_count(tiny) == 0
    # Another batch size fails inside the hook; run_with_hooks still removes it.
    with pytest.raises(SteeringStateError, match="batch of 3"):
        tiny.bridge.run_with_hooks(batch.input_ids[:1], fwd_hooks=sv.fwd_hooks(batch))
    assert active_hook_count(tiny) == 0
    with (
        pytest.raises(RuntimeError, match="boom"),
        tiny.bridge.hooks(fwd_hooks=sv.fwd_hooks(batch)),
    ):
        raise RuntimeError("boom")
    assert active_hook_count(tiny) == 0


def test_bad_spec_or_wrong_model_raises_before_anything_is_attached(tiny):
    batch = encode_prompts(tiny, ["Hi"], chat_template=False)
    good, too_long = _vector(tiny, "f2"), _vector(tiny, "f50")
    with pytest.raises(PositionSpecError, match="example 0"):
        too_long.fwd_hooks(batch)
    with pytest.raises(PositionSpecError, match="example 0"):
        steering_hooks(tiny, [good, too_long], batch)
    wide = SteeringVector(torch.randn(64), layer=1)
    with pytest.raises(VectorMismatchError, match="d_model 64.*d_model 32"):
        steering_hooks(tiny, [good, wide], batch)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        steering_hooks(tiny, _vector(tiny, layer=7), batch)
    nan = _vector(tiny, "f2")
    with torch.no_grad():
        nan.alpha.fill_(float("nan"))
    with pytest.raises(ValueError, match="alpha \\* v"):
        nan.fwd_hooks(batch)
    assert active_hook_count(tiny) == 0
    # Without a model, a wrong width is caught by the hook itself, and the hook is still removed.
    with pytest.raises(VectorMismatchError, match="width 32 but the vector has d_model 64"):
        tiny.bridge.run_with_hooks(batch.input_ids, fwd_hooks=wide.fwd_hooks(batch))
    assert active_hook_count(tiny) == 0


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("spec", SPECS)
def test_kv_cache_decoding_by_hand_matches_generate(tiny, side, spec):
    """A caller's own cached greedy loop, steered by ``fwd_hooks(batch, state=state)`` with the
    offset advanced by hand, gives ``prosv_lens.generate``'s logits; and generate's cached and
    uncached steered decoding still agree."""
    batch = encode_prompts(tiny, PROMPTS, padding_side=side)
    sv, steps = _vector(tiny, spec), 4
    want = generate(
        tiny,
        batch,
        sv,
        GenerationConfig(max_new_tokens=steps, stop_at_eos=False),
        record_logits=True,
    ).step_logits
    rows = torch.arange(batch.batch_size)
    last = (batch.attention_mask * torch.arange(batch.n_pos)).argmax(dim=1)
    next_pos = batch.position_ids[rows, last][:, None] + 1
    ids, mask, state, got = batch.input_ids, batch.attention_mask, DecodeState(), []
    with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=sv.fwd_hooks(batch, state=state)):
        logits, kv = tiny.bridge(
            ids, **_inputs(batch), return_type="logits_and_cache", use_cache=True
        )
        got.append(logits[rows, last])
        for _ in range(steps - 1):
            ids = torch.cat([ids, got[-1].argmax(-1)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            state.offset = ids.shape[1] - 1  # absolute column of the one token this pass feeds
            logits, kv = tiny.bridge(
                ids[:, -1:],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=kv,
                return_type="logits_and_cache",
            )
            next_pos = next_pos + 1
            got.append(logits[:, -1])
    assert torch.allclose(torch.stack(got, dim=1), want, atol=1e-5)
    report = check_cache_equivalence(tiny, batch, sv, max_new_tokens=steps)
    assert report.tokens_equal and report.max_abs_diff <= 1e-4


@pytest.fixture(scope="module")
def tiny64():
    model = make_tiny_model(dtype=torch.float64)
    yield model
    assert active_hook_count(model) == 0


def test_float64_left_padding_needs_the_model_aware_hooks(tiny64):
    """The float64 attention fix is the model's, not the vector's: ``steering_hooks`` carries it
    (finite logits, equal to ``run_with_steering``); the vector's own hooks alone do not."""
    batch = encode_prompts(tiny64, PROMPTS, padding_side="left")
    sv = _vector(tiny64)
    real = batch.attention_mask.bool()
    hooks = steering_hooks(tiny64, sv, batch)
    assert len(hooks) == 1 + tiny64.n_layers
    logits = tiny64.bridge.run_with_hooks(batch.input_ids, fwd_hooks=hooks, **_inputs(batch))
    assert bool(logits[real].isfinite().all())
    assert torch.equal(logits, run_with_steering(tiny64, sv, batch))
    bare = tiny64.bridge.run_with_hooks(
        batch.input_ids, fwd_hooks=sv.fwd_hooks(batch), **_inputs(batch)
    )
    assert bool(bare[real].isnan().any())  # why the fix is in the model-aware helper
    assert active_hook_count(tiny64) == 0
