"""Constants and helpers shared by several test modules (imported as ``_shared``)."""

from pathlib import Path

import pytest
import torch

from prosv_lens.concepts import ConceptData
from prosv_lens.generation import GenerationConfig, check_cache_equivalence, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.training.fastpath import UpperStack, build_residual_cache
from prosv_lens.training.forward import RowBatch, logprobs_fast, logprobs_full
from prosv_lens.training.trainer import _Runner

AXBENCH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "axbench-concept10"
needs_axbench = pytest.mark.skipif(
    not AXBENCH.exists(), reason="shared AxBench Concept10 data not present"
)

PROMPTS = ["Name three colors.", "Hi", "Write a haiku about autumn leaves."]
SPECS = [
    "all",
    "prompt",
    "f2+l2",
    "f1",
    "l3",
    "idx:0,-1",
    "role:system",
    "role:user",
    "role:assistant",
]


def fast_and_full_grads(model, batch, rows: RowBatch, layer: int, alpha0: float, v0: torch.Tensor):
    """(loss, d loss/d alpha, d loss/d v) by the fast path and by the full-model hook path."""
    cache, upper = build_residual_cache(model, batch, layer), UpperStack(model, layer)
    alpha = torch.tensor(alpha0, requires_grad=True)
    v = v0.clone().requires_grad_()
    n = len(rows.sources)

    def run(fn):
        alpha.grad = v.grad = None
        seq = fn((alpha * v)[None].expand(n, -1))
        loss = (-seq.total / seq.n_tokens).mean()
        loss.backward()
        return loss.detach(), alpha.grad.clone(), v.grad.clone()

    fast = run(lambda d: logprobs_fast(upper, [cache], rows, d))
    full = run(lambda d: logprobs_full(model, layer, rows, d))
    return fast, full


def assert_cached_equals_uncached(model, batch, *, layer, alpha, specs, max_new_tokens, atol=1e-4):
    """For each spec: a unit random vector times ``alpha`` gives equal cached and uncached greedy
    decoding (logits within ``atol``) and moves the first-step logits by more than 1."""
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    first_step = GenerationConfig(max_new_tokens=1)
    plain = generate(model, batch, (), first_step, record_logits=True).step_logits
    for spec in specs:
        sv = SteeringVector(v / v.norm(), layer=layer, positions=spec, alpha=alpha)
        report = check_cache_equivalence(model, batch, sv, max_new_tokens=max_new_tokens)
        assert report.tokens_equal and report.max_abs_diff <= atol, (spec, report)
        steered = generate(model, batch, sv, first_step, record_logits=True).step_logits
        assert (steered - plain).abs().max() > 1.0, spec


SEA8 = ConceptData(
    name="sea",
    prompts=("Hi there", "Name three colors.", "Write a haiku.", "What is 2+2?") * 2,
    responses=("The sea is deep and blue.", "Blue, green, sea-grey.", "Waves fold in", "Four.") * 2,
)


def first_step_grads(model, cfg, data=SEA8):
    """(loss, d loss/d alpha, d loss/d v) of the first training step, as the trainer computes
    them (fp32 copies)."""
    runner = _Runner(model, [data], cfg)
    try:
        losses, _ = runner.backward(runner.step_sources(0))
        c = runner.concepts[0]
        return losses[0].float(), c.alpha.grad.float().clone(), c.v.grad.float().clone()
    finally:
        for cache in runner.caches:
            cache.close()
