"""Constants and helpers shared by several test modules (imported as ``_shared``)."""

import torch

from prosv_lens.training.fastpath import UpperStack, build_residual_cache
from prosv_lens.training.forward import RowBatch, logprobs_fast, logprobs_full

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
