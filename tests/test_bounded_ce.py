"""Response log-probabilities in bounded memory (``prosv_lens.training.bounded_ce``).

The chunked function equals ``log_softmax`` of the full logits (values and input gradients,
``gradcheck`` in float64); wired into the fast path it gives the full-model hook path's loss and
gradients on tiny Llama, Qwen2 and Gemma-2 (attention and final soft-caps both active) for both
objectives and both vector kinds; and its peak memory at a 256k vocabulary is measured against
the plain way.
"""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prosv_lens.concepts import ConceptData
from prosv_lens.errors import MemoryBudgetError
from prosv_lens.models import make_tiny_model
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts, position_ids_from_mask
from prosv_lens.training import TrainConfig, bounded_ce, train
from prosv_lens.training.bounded_ce import logit_bytes, token_logprobs
from prosv_lens.training.fastpath import UpperStack, build_residual_cache
from prosv_lens.training.forward import gather_rows, logprobs_fast, logprobs_full
from prosv_lens.training.objectives import SequenceLogprobs, lang_loss, simpo_loss
from prosv_lens.training.trainer import step_bytes_per_token

SEA = ConceptData(
    "sea",
    tuple(f"Tell me about item {i}." for i in range(4)),
    tuple(f"The sea near item {i} is deep blue, salty and wide." for i in range(4)),
    tuple(f"Item {i} is fine." for i in range(4)),
)
_MODELS: dict[str, object] = {}


def _tiny(arch):
    if arch not in _MODELS:
        _MODELS[arch] = make_tiny_model(arch=arch, n_layers=3)
    return _MODELS[arch]


def _reference(x, weight, bias, targets, softcap):
    """The plain way: all logits at once, ``log_softmax``, gather (autograd does the backward)."""
    z = F.linear(x, weight, bias).to(torch.promote_types(weight.dtype, torch.float32))
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    return torch.log_softmax(z, dim=-1).gather(1, targets[:, None]).squeeze(1)


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


# --------------------------------------------------------------------------- the function alone


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_logprobs_equal_log_softmax_values_and_gradient(softcap, with_bias):
    n, d, vocab = 37, 16, 101
    x = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(vocab, d)
    bias = torch.randn(vocab) if with_bias else None
    targets = torch.randint(0, vocab, (n,))
    grad_out = torch.randn(n)
    budget = 5 * logit_bytes(weight, softcap=softcap)  # 5 tokens a chunk: 8 chunks
    got = token_logprobs(x, weight, targets, bias=bias, softcap=softcap, budget_bytes=budget)
    (got * grad_out).sum().backward()
    got_grad, x.grad = x.grad, None
    want = _reference(x, weight, bias, targets, softcap)
    (want * grad_out).sum().backward()
    assert got.dtype == torch.float32 and got.shape == (n,)
    assert _rel(got, want) <= 1e-6 and _rel(got_grad, x.grad) <= 1e-6


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_gradcheck_in_float64(softcap):
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    targets = torch.tensor([0, 3, 8, 3, 1, 5])
    budget = 2 * logit_bytes(weight, softcap=softcap)  # 3 chunks of 2 tokens

    def fn(x):
        return token_logprobs(x, weight, targets, bias=bias, softcap=softcap, budget_bytes=budget)

    assert fn(x).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (x,))


def test_bf16_head_gives_the_gradient_autograd_gives_through_the_linear_layer():
    """A bf16 head: fp32 softmax, gradient cast to bf16 before the matmul with the weight, as the
    plain bf16 ``nn.Linear`` + fp32 ``log_softmax`` does: bit-identical input gradient."""
    n, d, vocab = 19, 16, 97
    x = torch.randn(n, d, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(vocab, d, dtype=torch.bfloat16)
    targets = torch.randint(0, vocab, (n,))
    budget = 4 * logit_bytes(weight, softcap=3.0)
    got = token_logprobs(x, weight, targets, softcap=3.0, budget_bytes=budget)
    got.sum().backward()
    got_grad, x.grad = x.grad, None
    want = _reference(x, weight, None, targets, 3.0)
    want.sum().backward()
    assert got.dtype == torch.float32 and _rel(got, want) <= 1e-6
    assert got_grad.dtype == torch.bfloat16 and torch.equal(got_grad, x.grad)


def test_too_small_budget_or_a_trainable_head_fail_clearly():
    weight = torch.randn(1000, 8)
    need = logit_bytes(weight, softcap=30.0)
    assert need == 1000 * 8  # two fp32 copies per logit with a soft-cap
    x, targets = torch.randn(3, 8), torch.tensor([1, 2, 3])
    with pytest.raises(
        MemoryBudgetError, match=r"7999 bytes .* needs 8000 bytes .*logits_budget_mb"
    ) as err:
        token_logprobs(x, weight, targets, softcap=30.0, budget_bytes=need - 1)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert token_logprobs(x, weight, targets, softcap=30.0, budget_bytes=need).shape == (3,)
    with pytest.raises(ValueError, match="no gradient for the unembedding"):
        token_logprobs(x, weight.requires_grad_(), targets, softcap=None, budget_bytes=1 << 20)


# --------------------------------------------------------------------------- peak memory


def _rss(key: str) -> int:
    return (
        int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) << 10
    )


def _peak_rss_increase(fn) -> int:
    """Resident-memory high-water mark reached while ``fn`` runs, above where it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current VmRSS
    except OSError as err:
        pytest.skip(f"cannot reset the peak resident memory here: {err}")
    start = _rss("VmRSS")
    fn()
    return _rss("VmHWM") - start


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS"
)
def test_peak_memory_at_a_256k_vocabulary_stays_within_the_budget():
    """Gemma-sized vocabulary (256k, soft-cap 30), 320 response tokens, forward + backward.

    Measured as the process's peak resident memory (``VmHWM``, reset just before each variant),
    so every page really touched counts, whoever allocated it. The budget (96 MiB) gives 7 chunks
    of 46 tokens whose two fp32 copies (45 MiB each) are above glibc's largest mmap threshold
    (32 MiB): mapped on allocation, unmapped on release, so the peak reads live bytes, not memory
    the heap keeps after a free. Measured here: plain 1.22 GiB, chunked 89.7 MiB.
    """
    n, d, vocab, cap = 320, 64, 256_000, 30.0
    weight = torch.randn(vocab, d) * 0.05
    x, targets = torch.randn(n, d), torch.randint(0, vocab, (n,))
    budget = 96 << 20
    out = {}

    def plain():
        h = x.clone().requires_grad_()
        _reference(h, weight, None, targets, cap).sum().backward()
        out["plain"] = h.grad

    def chunked():
        h = x.clone().requires_grad_()
        token_logprobs(h, weight, targets, softcap=cap, budget_bytes=budget).sum().backward()
        out["chunked"] = h.grad

    # One chunk first: the BLAS library's one-time set-up (~8 MiB) is not the chunk's working set.
    most = budget // logit_bytes(weight, softcap=cap)
    h = x[:most].clone().requires_grad_()
    token_logprobs(h, weight, targets[:most], softcap=cap, budget_bytes=budget).sum().backward()
    chunked_peak = _peak_rss_increase(chunked)
    plain_peak = _peak_rss_increase(plain)
    inputs = 4 * x.numel() * x.element_size()  # x, its clone, its gradient, slack
    assert chunked_peak <= budget + inputs + (2 << 20), chunked_peak
    assert plain_peak > 1 << 30 and plain_peak > 10 * budget, plain_peak
    assert _rel(out["chunked"], out["plain"]) <= 1e-6


# --------------------------------------------------------------------------- wired into training


def test_full_path_reference_includes_gemma2_final_softcap():
    """The bridge's output (the full path's logits) is the soft-capped Hugging Face output."""
    model = _tiny("gemma2")
    hf = model.bridge.original_model
    assert hf.config.final_logit_softcapping == 3.0 and hf.config.attn_logit_softcapping == 5.0
    batch = encode_prompts(
        model, list(SEA.prompts[:2]), padding_side="right", responses=list(SEA.responses[:2])
    )
    with torch.no_grad():
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        hidden = hf.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        raw = hf.get_output_embeddings()(hidden.last_hidden_state)
    assert float(raw.abs().max()) > 3.0  # the cap bites at this size
    torch.testing.assert_close(logits, 3.0 * torch.tanh(raw / 3.0), rtol=0, atol=1e-6)
    assert float(logits.abs().max()) < 3.0


def _loss_and_grads(model, spec, objective, budget_of):
    """(loss, d/d alpha, d/d v) by the fast path with a chunk budget and by the full path."""
    layer, n = 1, len(SEA.prompts)
    sides = [SEA.responses] if objective == "lang" else [SEA.responses, SEA.negatives]
    batches = [
        encode_prompts(model, list(SEA.prompts), padding_side="right", responses=list(r))
        for r in sides
    ]
    masks = [PositionSpec.parse(spec).resolve(b).mask for b in batches]
    rows = gather_rows(batches, masks, [(k, i) for k in range(len(batches)) for i in range(n)])
    upper = UpperStack(model, layer)
    caches = [build_residual_cache(model, b, layer) for b in batches]
    budget = budget_of(upper)
    paths = {
        "fast": lambda d: logprobs_fast(upper, caches, rows, d, logits_budget_bytes=budget),
        "full": lambda d: logprobs_full(model, layer, rows, d),
    }
    alpha = torch.tensor(5.0, requires_grad=True)
    v = (0.3 * torch.randn(model.d_model)).requires_grad_()
    out = {}
    for name, fn in paths.items():
        alpha.grad = v.grad = None
        with torch.no_grad():
            refs = fn(torch.zeros(len(rows.sources), model.d_model)).total
        seq = fn((alpha * v)[None].expand(len(rows.sources), -1))
        win = SequenceLogprobs(seq.total[:n], seq.n_tokens[:n])
        if objective == "lang":
            loss = lang_loss(win).mean()
        else:
            lose = SequenceLogprobs(seq.total[n:], seq.n_tokens[n:])
            loss = simpo_loss(win, lose, refs[:n], refs[n:]).mean()
        loss.backward()
        out[name] = (loss.detach(), alpha.grad.clone(), v.grad.clone())
    # d/d alpha = v . (d/d v) / alpha: its size of error is that of the terms it sums
    alpha_scale = float(v.detach().norm() * out["full"][2].norm() / alpha.detach())
    return out["fast"], out["full"], alpha_scale, int(rows.response_mask[:, 1:].sum())


@pytest.mark.parametrize("objective", ["lang", "simpo"])
@pytest.mark.parametrize("spec", ["f2+l2", "all"])
@pytest.mark.parametrize("arch", ["gemma2", "llama", "qwen2"])
def test_chunked_fast_path_equals_full_model_path(arch, spec, objective):
    """Loss, d/d alpha and d/d v of the fast path, in chunks of 3 tokens, against the full-model
    hook path (logits everywhere, ``log_softmax``), in fp32, to 1e-6 relative.

    d/d alpha is the dot product ``v . (d/d v) / alpha``, which nearly cancels in some settings
    (Llama, f2+l2, lang: 1.9e-4 where ``|v| |d/d v| / alpha`` is 1.0e-2), so its error is measured
    on that scale of its terms (the 1e-6 bound ``d/d v`` meets implies this one). Measured: loss
    and d/d v <= 1.7e-7; d/d alpha <= 4.5e-8 on that scale, <= 2.8e-7 of its own value except that
    Llama case (2.5e-6, where a float64 fast path differs from the full path by 1.9e-6 too: the
    reference's fp32 ``log_softmax``, not the chunking).
    """
    model = _tiny(arch)
    chunk = 3  # tokens per chunk: 196 or 256 response tokens, so 66+ chunks
    fast, full, alpha_scale, tokens = _loss_and_grads(
        model, spec, objective, lambda up: chunk * logit_bytes(up.weight, softcap=up.softcap)
    )
    assert tokens > 20 * chunk
    (loss, d_alpha, d_v), (ref_loss, ref_d_alpha, ref_d_v) = fast, full
    assert _rel(loss, ref_loss) <= 1e-6 and _rel(d_v, ref_d_v) <= 1e-6
    assert abs(float(d_alpha - ref_d_alpha)) <= 1e-6 * alpha_scale
    assert float(ref_d_alpha.abs()) > 0 and float(ref_d_v.norm()) > 0
    assert all(p.grad is None for p in model.bridge.parameters())


def test_an_lm_head_bias_is_kept_in_the_chunked_loss():
    """TransformerLens gives a bias-free head a zero bias buffer (dropped: nothing to add); a real
    bias (here: random values in that buffer) is applied on both paths."""
    model = make_tiny_model(arch="llama", n_layers=3, seed=1)
    head = model.bridge.original_model.get_output_embeddings().original_component
    assert UpperStack(model, 1).bias is None  # the zero placeholder
    head.bias.copy_(torch.randn_like(head.bias))
    assert UpperStack(model, 1).bias is head.bias
    fast, full, alpha_scale, _ = _loss_and_grads(
        model, "all", "lang", lambda up: 3 * logit_bytes(up.weight, softcap=up.softcap)
    )
    assert _rel(fast[0], full[0]) <= 1e-6 and _rel(fast[2], full[2]) <= 1e-6
    assert abs(float(fast[1] - full[1])) <= 1e-6 * alpha_scale


def test_trainer_passes_its_logits_budget_to_the_fast_path(tiny, monkeypatch):
    seen = []
    real = bounded_ce.rows_per_chunk

    def spy(weight, *, softcap, budget_bytes):
        seen.append(budget_bytes)
        return real(weight, softcap=softcap, budget_bytes=budget_bytes)

    monkeypatch.setattr(bounded_ce, "rows_per_chunk", spy)
    train(
        tiny, SEA, TrainConfig.prosv(1, epochs=1, batch_size=4, logits_budget_mb=3), progress=False
    )
    assert seen and set(seen) == {3 << 20}
    with pytest.raises(ValueError, match="logits_budget_mb must be an int > 0"):
        TrainConfig.prosv(1, logits_budget_mb=0)
    assert TrainConfig(layer=1).logits_budget_mb == 1024


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "gemma3"])
def test_row_memory_estimate_covers_what_autograd_saves(arch):
    """``step_bytes_per_token`` (which sizes the trainer's micro-batches on a GPU) against the
    bytes of every tensor autograd saves in the blocks above the layer (weights excluded)."""
    model = make_tiny_model(arch=arch, n_layers=4, d_model=64, n_heads=8)
    batch = encode_prompts(
        model, list(SEA.prompts), padding_side="right", responses=list(SEA.responses)
    )
    layer, width = 0, batch.input_ids.shape[1]
    upper = UpperStack(model, layer)
    resid = build_residual_cache(model, batch, layer).padded(range(4), width, model.device)
    weights = {
        t.untyped_storage().data_ptr()
        for t in [*model.bridge.parameters(), *model.bridge.buffers()]
    }
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        upper.hidden(
            resid.requires_grad_(),
            batch.attention_mask,
            position_ids_from_mask(batch.attention_mask),
        )
    measured = sum(saved.values()) / (4 * width)
    estimate = step_bytes_per_token(model, layer, path="fast", tokens_per_row=width)
    assert measured <= estimate <= 3 * measured, (measured, estimate)


def test_a_budget_too_small_for_one_token_is_refused_before_any_work(tiny, monkeypatch):
    """A 1 MiB budget cannot hold one token's logits over a 300k vocabulary with a soft-cap
    (2.4 MB): the trainer refuses before it caches a single residual."""
    from prosv_lens.training import trainer

    class WideHead(trainer.UpperStack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.weight, self.softcap = torch.zeros(300_000, tiny.d_model), 30.0

    def no_work(*args, **kwargs):
        raise AssertionError("the residual cache was built before the budget was checked")

    monkeypatch.setattr(trainer, "UpperStack", WideHead)
    monkeypatch.setattr(trainer, "build_residual_cache", no_work)
    data = ConceptData("sea", ("Hi",), ("The sea.",))
    with pytest.raises(MemoryBudgetError, match="raise the budget .* to at least 3 MB"):
        trainer.train(tiny, data, TrainConfig.prosv(1, logits_budget_mb=1), progress=False)
