import pytest
import torch
from _shared import PROMPTS, SPECS

from prosv_lens.generation import GenerationConfig, check_cache_equivalence, generate
from prosv_lens.interventions import (
    AbstractIntervention,
    SteeringVector,
    run_with_steering,
    steering,
)
from prosv_lens.models import make_tiny_model
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts


def _vector(model, spec, layer=1, alpha=4.0):
    return SteeringVector(torch.randn(model.d_model), layer=layer, positions=spec, alpha=alpha)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("spec", SPECS)
def test_cached_equals_uncached_for_every_spec(tiny, side, spec):
    batch = encode_prompts(tiny, PROMPTS, padding_side=side)
    sv = _vector(tiny, spec)
    report = check_cache_equivalence(tiny, batch, sv, max_new_tokens=6)
    assert report.tokens_equal and report.steps_compared == 6
    assert report.max_abs_diff <= 1e-4
    # The tolerance is meaningful: the vector moves these logits by orders of magnitude more.
    cfg = GenerationConfig(max_new_tokens=1)
    steered = generate(tiny, batch, sv, cfg, record_logits=True).step_logits
    plain = generate(tiny, batch, (), cfg, record_logits=True).step_logits
    assert (steered - plain).abs().max() > 1e-2  # >= 100x the tolerance (f1 edits only BOS)


class _LengthBasedEdit(AbstractIntervention):
    """The classic bug: 'last 2 positions of whatever the hook sees' instead of absolute columns."""

    def __init__(self, inner: SteeringVector) -> None:
        super().__init__()
        self.inner, self.layer, self.positions = inner, inner.layer, inner.positions

    @property
    def d_model(self) -> int:
        return self.inner.d_model

    def edit(self, resid, mask):
        naive = torch.zeros_like(mask)
        naive[:, -2:] = True
        return self.inner.edit(resid, naive)


def test_equivalence_check_catches_length_based_positions(tiny):
    """Negative control: the check has teeth. A naive hook that re-derives positions from the
    activation length edits every decoded token under the KV cache and fails the check."""
    batch = encode_prompts(tiny, PROMPTS)
    naive = _LengthBasedEdit(_vector(tiny, "all", alpha=20.0))
    report = check_cache_equivalence(tiny, batch, naive, max_new_tokens=6)
    assert not report.ok(1e-4)


class _Recording(AbstractIntervention):
    """Wraps a vector and records the mask of every edit it is asked to make."""

    def __init__(self, inner: SteeringVector) -> None:
        super().__init__()
        self.inner, self.layer, self.positions = inner, inner.layer, inner.positions
        self.calls: list[torch.Tensor] = []

    @property
    def d_model(self) -> int:
        return self.inner.d_model

    def edit(self, resid, mask):
        self.calls.append(mask.clone())
        return self.inner.edit(resid, mask)


def test_prompt_only_vector_acts_in_prefill_only(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    rec = _Recording(_vector(tiny, "f2+l2"))
    out = generate(tiny, batch, rec, GenerationConfig(max_new_tokens=5, stop_at_eos=False))
    assert out.tokens.shape[1] == 5
    assert len(rec.calls) == 1  # prefill only; the 4 decoding steps were never edited
    assert torch.equal(rec.calls[0], PositionSpec.parse("f2+l2").resolve(batch).mask)


def test_fssv_edits_every_decoded_token(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    rec = _Recording(_vector(tiny, "all"))
    generate(tiny, batch, rec, GenerationConfig(max_new_tokens=5, stop_at_eos=False))
    assert len(rec.calls) == 5
    assert all(c.shape == (3, 1) and bool(c.all()) for c in rec.calls[1:])


def _decode_residual_delta(model, batch, vector, steps=5):
    """For each decoding step: resid_post[L] minus (resid_mid[L] + mlp_out[L]) at the new token,
    i.e. exactly what hooks added to the block output."""
    layer = vector.layer
    seen = {"post": [], "mid": [], "mlp": []}

    def grabber(key):
        def grab(act, hook):
            if act.shape[1] == 1:  # decoding steps only
                seen[key].append(act.detach().clone())

        return grab

    hooks = [
        (f"blocks.{layer}.hook_resid_mid", grabber("mid")),
        (f"blocks.{layer}.hook_mlp_out", grabber("mlp")),
    ]
    cfg = GenerationConfig(max_new_tokens=steps, stop_at_eos=False)
    with model.bridge.hooks(fwd_hooks=hooks):
        # The recorder of the edited output must run after the steering hook: attach it inside.
        state_hook = [(model.hook_name(layer), grabber("post"))]
        original = steering

        def generate_with_late_recorder():
            from prosv_lens import generation

            def patched(*args, **kwargs):
                ctx = original(*args, **kwargs)

                class _Both:
                    def __enter__(self):
                        st = ctx.__enter__()
                        self.inner = model.bridge.hooks(fwd_hooks=state_hook)
                        self.inner.__enter__()
                        return st

                    def __exit__(self, *exc):
                        self.inner.__exit__(*exc)
                        return ctx.__exit__(*exc)

                return _Both()

            generation.steering, saved = patched, generation.steering
            try:
                return generate(model, batch, vector, cfg)
            finally:
                generation.steering = saved

        generate_with_late_recorder()
    return [p - (m + o) for p, m, o in zip(seen["post"], seen["mid"], seen["mlp"], strict=True)]


def test_decoded_residuals_carry_the_edit_for_fssv_only(tiny):
    batch = encode_prompts(tiny, PROMPTS)
    fssv, prosv = _vector(tiny, "all"), _vector(tiny, "f2+l2")
    for delta in _decode_residual_delta(tiny, batch, fssv):
        assert torch.allclose(delta, fssv.delta.detach().expand_as(delta), atol=1e-5)
    for delta in _decode_residual_delta(tiny, batch, prosv):
        assert delta.abs().max() <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_generation_matches_one_at_a_time(tiny, side):
    sv = _vector(tiny, "f2+l2")
    cfg = GenerationConfig(max_new_tokens=6)
    batched = generate(tiny, encode_prompts(tiny, PROMPTS, padding_side=side), sv, cfg)
    for i, p in enumerate(PROMPTS):
        alone = generate(tiny, [p], sv, cfg)
        assert batched.tokens[i, : alone.lengths[0]].tolist() == alone.tokens[0].tolist()
        assert batched.texts[i] == alone.texts[0]


def test_greedy_first_token_is_the_forward_argmax(tiny):
    batch = encode_prompts(tiny, ["Hi"])
    logits = tiny.bridge(batch.input_ids)
    out = generate(tiny, batch, (), GenerationConfig(max_new_tokens=1))
    assert int(out.tokens[0, 0]) == int(logits[0, -1].argmax())


def test_seeded_sampling_is_reproducible(tiny):
    cfg = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, seed=7)
    a = generate(tiny, PROMPTS, (), cfg)
    b = generate(tiny, PROMPTS, (), cfg)
    c = generate(tiny, PROMPTS, (), GenerationConfig(**{**cfg.__dict__, "seed": 8}))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


def test_top_p_keeps_only_the_nucleus(tiny):
    greedy = generate(tiny, PROMPTS, (), GenerationConfig(max_new_tokens=6))
    tiny_nucleus = generate(
        tiny, PROMPTS, (), GenerationConfig(max_new_tokens=6, do_sample=True, top_p=1e-6, seed=1)
    )
    assert torch.equal(greedy.tokens, tiny_nucleus.tokens)


def test_stops_at_end_of_turn_and_pads_after(tiny):
    """Steer the tiny model towards <|im_end|> through the unembedding so it stops at once."""
    eos = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    direction = tiny.bridge.W_U[:, eos].detach().clone()
    sv = SteeringVector(direction / direction.norm(), layer=2, positions="all", alpha=500.0)
    out = generate(tiny, PROMPTS, sv, GenerationConfig(max_new_tokens=5))
    assert out.lengths == (1, 1, 1) and out.tokens.shape[1] == 1
    assert out.tokens[:, 0].tolist() == [eos] * 3 and out.texts == ("", "", "")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_generation_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**kwargs)


def test_float64_left_padding_is_finite_inside_steering_contexts():
    """TransformerLens 4.3 gives NaN for left-padded float64 batches (fp32 softmax of a fully
    masked pad row); prosv-lens's steering context zeroes those patterns and changes nothing else."""
    model = make_tiny_model()
    model.bridge.to(torch.float64)
    batch = encode_prompts(model, PROMPTS, padding_side="left")
    bare = model.bridge(
        batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    )
    assert bool(bare.isnan().any())  # the upstream problem this guards against
    sv = _vector(model, "f2+l2")
    steered = run_with_steering(model, sv, batch)
    for i, p in enumerate(PROMPTS):
        alone = run_with_steering(model, sv, encode_prompts(model, [p]))[0]  # no padding, no NaN
        assert (steered[i, batch.attention_mask[i].bool()] - alone).abs().max() <= 1e-9
    report = check_cache_equivalence(model, batch, sv)
    assert report.tokens_equal and report.max_abs_diff <= 1e-9
