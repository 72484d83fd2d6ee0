"""The ``hf`` generation backend (Hugging Face ``generate``) against the bridge reference.

Tolerance: fp32 next-token logits within ``ATOL = 1e-4`` of the bridge backend's (observed: 0 for
left padding, ~1e-6 for re-padded right padding), greedy tokens, lengths and texts equal.
"""

import pytest
import torch
from _shared import PROMPTS, SPECS

from prosv_lens.errors import PositionSpecError, ProsvError
from prosv_lens.generation import GenerationConfig, generate, resolve_backend
from prosv_lens.hf_generation import decoder_layers, generate_hf, hf_causal_lm, left_padded
from prosv_lens.interventions import AbstractIntervention, SteeringVector, active_hook_count
from prosv_lens.models import make_tiny_model
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts

ATOL = 1e-4
STEPS = 8
_MODELS = {}
_PLAIN = {}  # unsteered greedy tokens of PROMPTS per architecture


def _model(arch):
    if arch not in _MODELS:
        _MODELS[arch] = make_tiny_model(arch=arch)
    return _MODELS[arch]


def _hf_hooks(model):
    """prosv-lens hooks anywhere in the bridge's Hugging Face tree (the bridge's decoder layers,
    the layers they wrap, ...). transformers' own output-capturing hooks, which it installs
    there when the bridge runs, are not counted."""
    hooks = [
        fn
        for m in model.bridge.original_model.modules()
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    ]
    return sum(getattr(fn, "__module__", "").startswith("prosv_lens") for fn in hooks)


@pytest.fixture(autouse=True)
def _no_leaked_hooks():
    yield
    for model in _MODELS.values():
        assert active_hook_count(model) == 0 and _hf_hooks(model) == 0


def _vector(model, spec, layer=0, alpha=32.0):
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    return SteeringVector(v / v.norm(), layer=layer, positions=spec, alpha=alpha)


def _both(model, batch, ivs, **cfg):
    """(bridge, hf) generations with logits recorded."""
    return tuple(
        generate(model, batch, ivs, GenerationConfig(backend=b, **cfg), record_logits=True)
        for b in ("bridge", "hf")
    )


def _assert_same(ref, out):
    assert ref.tokens.shape == out.tokens.shape and torch.equal(ref.tokens, out.tokens)
    assert ref.lengths == out.lengths and ref.texts == out.texts
    assert (ref.step_logits - out.step_logits).abs().max() <= ATOL


def _cases():
    for arch in ("llama", "gemma2"):
        for spec in SPECS:
            if not (arch.startswith("gemma") and spec == "role:system"):  # Gemma has no system role
                yield arch, spec
    for arch in ("qwen2", "gemma3"):
        yield from ((arch, "all"), (arch, "f2+l2"))


@pytest.mark.parametrize(("arch", "spec"), list(_cases()))
def test_hf_matches_bridge_for_every_spec(arch, spec):
    """Left-padded prompts of different lengths; the vector is strong enough to change the tokens."""
    model = _model(arch)
    batch = encode_prompts(model, PROMPTS, padding_side="left")
    assert len(set(batch.prompt_lengths)) == len(PROMPTS)  # three different paddings
    ref, out = _both(model, batch, _vector(model, spec), max_new_tokens=STEPS)
    _assert_same(ref, out)
    if arch not in _PLAIN:
        _PLAIN[arch] = generate(model, batch, (), GenerationConfig(max_new_tokens=STEPS)).tokens
    plain = _PLAIN[arch]
    assert plain.shape != out.tokens.shape or not torch.equal(plain, out.tokens)


def test_gemma_system_role_fails_the_same_way():
    model = _model("gemma2")
    batch = encode_prompts(model, PROMPTS)
    for backend in ("bridge", "hf"):
        with pytest.raises(PositionSpecError, match="system"):
            generate(model, batch, _vector(model, "role:system"), GenerationConfig(backend=backend))


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_decoder_layer_output_is_hook_resid_post(arch):
    model = _model(arch)
    batch = encode_prompts(model, PROMPTS)
    _, cache = model.bridge.run_with_cache(
        batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    )
    hf, seen = hf_causal_lm(model), {}
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
        for i, layer in enumerate(decoder_layers(hf))
    ]
    try:
        hf(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    finally:
        for h in handles:
            h.remove()
    real = batch.attention_mask.bool()
    for i in range(model.n_layers):
        out = seen[i][0] if isinstance(seen[i], tuple) else seen[i]
        ref = cache[f"blocks.{i}.hook_resid_post"]
        assert torch.allclose(out[real], ref[real], atol=1e-5), i


def test_plain_model_shares_the_bridge_weights():
    model = _model("llama")
    generate(model, PROMPTS, (), GenerationConfig(max_new_tokens=1))  # transformers adds hooks
    hf = hf_causal_lm(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in hf.modules())
    bridge_tensors = {p.data_ptr() for p in model.bridge.original_model.parameters()}
    assert {p.data_ptr() for p in hf.parameters()} <= bridge_tensors
    assert not any("transformer_lens" in type(m).__module__ for m in hf.modules())
    assert type(decoder_layers(hf)[0]).__name__ == "LlamaDecoderLayer"


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_right_padding_is_repadded_to_the_left(arch):
    model = _model(arch)
    sv = _vector(model, "f2+l2")
    right = encode_prompts(model, PROMPTS, padding_side="right")
    left = encode_prompts(model, PROMPTS, padding_side="left")
    repadded = left_padded(right)
    assert torch.equal(repadded.input_ids, left.input_ids)
    assert torch.equal(repadded.prompt_mask, left.prompt_mask)
    assert repadded.role_spans == left.role_spans
    cfg = GenerationConfig(max_new_tokens=STEPS, backend="hf")
    a = generate(model, right, sv, cfg, record_logits=True)
    b = generate(model, left, sv, cfg, record_logits=True)
    assert torch.equal(a.tokens, b.tokens) and (a.step_logits - b.step_logits).abs().max() <= ATOL
    assert a.prompt is not None and torch.equal(a.prompt.input_ids, right.input_ids)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_hf_generation_matches_one_at_a_time(side):
    """On Gemma-2 (sliding window 8, shorter than every prompt) in either padding."""
    model = _model("gemma2")
    sv = _vector(model, "f2+l2")
    cfg = GenerationConfig(max_new_tokens=STEPS, backend="hf")
    batched = generate(model, encode_prompts(model, PROMPTS, padding_side=side), sv, cfg)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], sv, GenerationConfig(max_new_tokens=STEPS))  # bridge
        assert batched.tokens[i, : alone.lengths[0]].tolist() == alone.tokens[0].tolist()


def test_padding_inside_a_row_is_refused():
    model = _model("llama")
    batch = encode_prompts(model, PROMPTS)
    mask = batch.attention_mask.clone()
    mask[2, 3] = 0
    holed = type(batch)(batch.input_ids, mask, batch.prompt_mask & mask.bool())
    with pytest.raises(ProsvError, match="padding between"):
        generate(model, holed, (), GenerationConfig(backend="hf"))


class _Recording(AbstractIntervention):
    """Wraps a vector and records the mask of every edit it is asked to make."""

    def __init__(self, inner, fail_at=None):
        super().__init__()
        self.inner, self.layer, self.positions = inner, inner.layer, inner.positions
        self.calls, self.fail_at = [], fail_at

    @property
    def d_model(self):
        return self.inner.d_model

    def edit(self, resid, mask):
        self.calls.append(mask.clone())
        if len(self.calls) == self.fail_at:
            raise RuntimeError("edit failed on purpose")
        return self.inner.edit(resid, mask)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_prompt_only_vector_never_edits_a_decoded_token(arch):
    model = _model(arch)
    batch = encode_prompts(model, PROMPTS)
    cfg = GenerationConfig(max_new_tokens=5, stop_at_eos=False, backend="hf")
    prosv, fssv = _Recording(_vector(model, "f2+l2")), _Recording(_vector(model, "all"))
    generate(model, batch, prosv, cfg)
    generate(model, batch, fssv, cfg)
    assert len(prosv.calls) == 1  # prefill only; the 4 decoding steps were never edited
    assert torch.equal(prosv.calls[0], PositionSpec.parse("f2+l2").resolve(batch).mask)
    assert len(fssv.calls) == 5  # prefill + every decoded token
    assert torch.equal(fssv.calls[0], batch.attention_mask.bool())
    assert all(c.shape == (3, 1) and bool(c.all()) for c in fssv.calls[1:])


@pytest.mark.parametrize("spec", ["all", "f2+l2"])
def test_uncached_hf_generation_matches(spec):
    model = _model("llama")
    batch = encode_prompts(model, PROMPTS)
    sv = _vector(model, spec)
    ref = generate(model, batch, sv, GenerationConfig(max_new_tokens=6), record_logits=True)
    cfg = GenerationConfig(max_new_tokens=6, use_cache=False, backend="hf")
    _assert_same(ref, generate(model, batch, sv, cfg, record_logits=True))


def test_several_vectors_compose_like_the_bridge():
    model = _model("llama")
    batch = encode_prompts(model, PROMPTS)
    ivs = [_vector(model, "f2+l2"), _vector(model, "all", alpha=8.0), _vector(model, "l3", layer=2)]
    _assert_same(*_both(model, batch, ivs, max_new_tokens=6))


def test_hooks_are_removed_when_generation_raises():
    model = _model("llama")
    batch = encode_prompts(model, PROMPTS)
    hf = hf_causal_lm(model)
    failing = _Recording(_vector(model, "all"), fail_at=3)  # fails while decoding
    with pytest.raises(RuntimeError, match="on purpose"):
        generate_hf(model, batch, failing, GenerationConfig(max_new_tokens=5), hf=hf)
    assert len(failing.calls) == 3
    assert all(not layer._forward_hooks for layer in decoder_layers(hf))
    generate_hf(model, batch, _vector(model, "f2+l2"), GenerationConfig(max_new_tokens=2), hf=hf)
    assert all(not layer._forward_hooks for layer in decoder_layers(hf))


def test_seeded_sampling_repeats_and_leaves_the_global_rng_alone():
    model = _model("llama")
    sv = _vector(model, "f2+l2")
    cfg = GenerationConfig(
        max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, seed=7, backend="hf"
    )
    state = torch.get_rng_state()
    a, b = generate(model, PROMPTS, sv, cfg), generate(model, PROMPTS, sv, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    c = generate(model, PROMPTS, sv, GenerationConfig(**{**cfg.__dict__, "seed": 8}))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    nucleus = GenerationConfig(**{**cfg.__dict__, "top_p": 1e-6})  # top-p keeps the argmax only
    greedy = GenerationConfig(max_new_tokens=12, backend="hf")
    assert torch.equal(
        generate(model, PROMPTS, sv, nucleus).tokens, generate(model, PROMPTS, sv, greedy).tokens
    )


def test_stops_at_end_of_turn_and_pads_after():
    model = _model("llama")
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    direction = model.bridge.W_U[:, eos].detach().clone()
    sv = SteeringVector(direction / direction.norm(), layer=2, positions="all", alpha=500.0)
    out = generate(model, PROMPTS, sv, GenerationConfig(max_new_tokens=5, backend="hf"))
    assert out.lengths == (1, 1, 1) and out.tokens.shape[1] == 1
    assert out.tokens[:, 0].tolist() == [eos] * 3 and out.texts == ("", "", "")
    # Rows that stop early are padded with the pad id while the others go on.
    ref, out = _both(model, PROMPTS, sv.replace(alpha=20.0), max_new_tokens=8)
    _assert_same(ref, out)
    assert min(out.lengths) < max(out.lengths) == out.tokens.shape[1]
    for row, n in zip(out.tokens, out.lengths, strict=True):
        if n < out.tokens.shape[1]:
            assert int(row[n - 1]) in model.stop_token_ids
            assert (row[n:] == model.tokenizer.pad_token_id).all()


def test_float64_left_padding_is_finite():
    """Hugging Face's eager attention gives NaN pad columns in float64 (as TransformerLens does);
    the hf backend zeroes them, so real tokens match the bridge to float64 rounding."""
    model = make_tiny_model(dtype=torch.float64)
    batch = encode_prompts(model, PROMPTS)
    ref, out = _both(model, batch, _vector(model, "f2+l2"), max_new_tokens=6)
    assert torch.equal(ref.tokens, out.tokens) and not out.step_logits.isnan().any()
    assert (ref.step_logits - out.step_logits).abs().max() <= 1e-9
    assert active_hook_count(model) == 0 and _hf_hooks(model) == 0


def test_backend_setting():
    with pytest.raises(ValueError, match="backend"):
        GenerationConfig(backend="vllm")
    assert resolve_backend("auto", torch.device("cpu")) == "bridge"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "hf"
    assert resolve_backend("hf", torch.device("cpu")) == "hf"
