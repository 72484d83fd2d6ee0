"""Log-probabilities of target tokens under a large vocabulary, in bounded memory.

The trainer's loss needs one number per response token, ``log softmax(W_U x)[target]``, but the
plain way materialises ``[tokens, d_vocab]`` fp32 logits, their log-softmax and both gradients:
with Gemma-2's 256k vocabulary, 8 concepts x 12 rows x 128 response tokens is 12.6 GB per copy.
:func:`token_logprobs` computes the same numbers with a fixed memory ceiling:

* **Chunks over tokens.** Tokens are processed in near-equal chunks of at most
  :func:`rows_per_chunk`, so that one chunk's logits working set (every ``[chunk, d_vocab]``
  tensor alive at once, see :func:`logit_bytes`) fits in ``budget_bytes``; nothing of size
  ``d_vocab`` outlives its chunk except the weight.
* **Same arithmetic as the model.** Per chunk: ``x @ W.T (+ b)`` in the weight's dtype (as the
  model's ``nn.Linear``), upcast to fp32 (fp64 stays fp64), Gemma's final soft-cap
  ``cap * tanh(z / cap)`` when the model has one (the cap is part of the model, so it stays in the
  loss), log-sum-exp, the target's logit.
* **Recompute instead of store.** The forward keeps only the inputs and one log-sum-exp per token.
  The backward recomputes each chunk's logits and returns ``d/dx = ((onehot - softmax) * cap'(z)
  * grad) @ W`` (``cap'(z) = 1 - tanh(z / cap)**2``), cast to ``x``'s dtype: one extra unembedding
  matmul per chunk, no ``[tokens, d_vocab]`` tensor ever.
* **Frozen head.** The unembedding weight and bias get no gradient (steering trains only ``alpha``
  and ``v``); passing a weight that requires one raises rather than silently dropping it.

Pure torch: runs on CPU and GPU, no host synchronisation per chunk. ``tests/test_bounded_ce.py``
shows it equals ``log_softmax`` of the full logits (values and gradients; ``gradcheck`` in fp64),
that the trainer's loss and gradients equal the full-model path on Llama, Qwen2 and Gemma-2 (both
soft-caps), and measures its peak memory at a 256k vocabulary against the plain way.
"""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from prosv_lens.errors import MemoryBudgetError

Normed = Float[Tensor, "token d_model"]
TokenLogprobs = Float[Tensor, " token"]


def logit_bytes(weight: Tensor, *, softcap: float | None) -> int:
    """Bytes one token's row of logits costs at the peak of a chunk (forward or backward).

    Counted from what the chunk really allocates, in the compute dtype (fp32; fp64 for an fp64
    weight): the backward's two copies with a soft-cap (``tanh(z / cap)``, kept for the cap's
    derivative, and the softmax gradient), one without; and, for a bf16/fp16 weight, one copy
    plus the matmul output before its upcast (or the gradient cast down before the matmul with
    ``W``), which never coexist with the second copy. The forward needs at most this.
    """
    compute = torch.promote_types(weight.dtype, torch.float32).itemsize
    low = 0 if weight.dtype.itemsize >= compute else weight.dtype.itemsize
    per = max(compute * (2 if softcap else 1), compute + low)
    return per * weight.shape[0]


def rows_per_chunk(weight: Tensor, *, softcap: float | None, budget_bytes: int) -> int:
    """How many tokens one chunk may hold so its logits working set stays within ``budget_bytes``.

    Raises:
        MemoryBudgetError: the budget cannot hold even one token's row of logits.
    """
    need = logit_bytes(weight, softcap=softcap)
    if budget_bytes < need:
        raise MemoryBudgetError(
            f"a logits budget of {budget_bytes} bytes cannot hold one token's logits: a chunk of one "
            f"token needs {need} bytes ({weight.shape[0]} vocabulary entries); raise the budget "
            f"(TrainConfig.logits_budget_mb) to at least {math.ceil(need / 2**20)} MB"
        )
    return budget_bytes // need


def _logits(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ W.T (+ b)`` in the weight's dtype, then upcast to fp32 (fp64 stays fp64)."""
    x = x.to(weight.dtype)
    z = x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)
    return z.to(torch.promote_types(weight.dtype, torch.float32))


class _TokenLogprobs(torch.autograd.Function):
    """Chunked ``log_softmax(cap(x @ W.T + b))[target]``; gradient for ``x`` only."""

    @staticmethod
    def forward(ctx, x, weight, bias, targets, softcap, chunk):
        compute = torch.promote_types(weight.dtype, torch.float32)
        out = torch.empty(x.shape[0], dtype=compute, device=x.device)
        lse = torch.empty_like(out)
        for s in range(0, x.shape[0], chunk):
            z = _logits(x[s : s + chunk], weight, bias)
            if softcap:
                z.div_(softcap).tanh_().mul_(softcap)
            picked = z.gather(1, targets[s : s + chunk, None]).squeeze(1)
            top = z.amax(dim=1, keepdim=True)
            lse[s : s + chunk] = z.sub_(top).exp_().sum(dim=1).log_() + top.squeeze(1)
            out[s : s + chunk] = picked - lse[s : s + chunk]
            del z  # the next chunk's logits replace these, never add to them
        ctx.save_for_backward(x, weight, bias, targets, lse)
        ctx.softcap, ctx.chunk = softcap, chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight, bias, targets, lse = ctx.saved_tensors
        softcap, chunk = ctx.softcap, ctx.chunk
        grad_x = torch.empty_like(x)
        for s in range(0, x.shape[0], chunk):
            g = grad_out[s : s + chunk, None].to(lse.dtype)
            z = _logits(x[s : s + chunk], weight, bias)
            if softcap:
                th = z.div_(softcap).tanh_()  # tanh(z / cap), in place: kept for cap'(z)
                p = th * softcap
            else:
                th, p = None, z
            del z
            p.sub_(lse[s : s + chunk, None]).exp_().mul_(-g)  # -softmax * grad
            p.scatter_add_(1, targets[s : s + chunk, None], g)  # + onehot * grad
            if th is not None:
                p.mul_(th.square_().neg_().add_(1))  # * cap'(z) = 1 - tanh^2
                del th  # freed before the cast below: the two never coexist
            grad_x[s : s + chunk] = (p.to(weight.dtype) @ weight).to(x.dtype)
            del p
        return grad_x, None, None, None, None, None


def token_logprobs(
    normed: Normed,
    weight: Float[Tensor, "d_vocab d_model"],
    targets: Int[Tensor, " token"],
    *,
    bias: Float[Tensor, " d_vocab"] | None = None,
    softcap: float | None,
    budget_bytes: int,
) -> TokenLogprobs:
    """``log_softmax(logits)[target]`` per token, with ``logits = cap(normed @ weight.T + bias)``.

    Equals ``torch.log_softmax(head(normed).float(), -1).gather(...)`` (up to float rounding),
    but no tensor of more than ``budget_bytes`` of logits (:func:`logit_bytes` per token) exists
    at once, forward or backward. Differentiable with respect to ``normed`` only.

    Args:
        normed: final-normed residual at the predicting positions, ``[token, d_model]``.
        weight: the unembedding in Hugging Face layout ``[d_vocab, d_model]``; frozen.
        targets: the token each position predicts, ``[token]``.
        bias: the unembedding bias, if the model has one (frozen).
        softcap: Gemma's ``final_logit_softcapping`` (``None`` or 0: no cap).
        budget_bytes: ceiling on one chunk's logits working set.

    Returns:
        Log-probabilities of ``targets``, ``[token]``, in fp32 (fp64 for an fp64 weight).

    Raises:
        MemoryBudgetError: ``budget_bytes`` cannot hold one token's row of logits.
        ValueError: ``weight`` or ``bias`` requires a gradient (this function never computes one).
    """
    if any(t is not None and t.requires_grad for t in (weight, bias)):
        raise ValueError(
            "token_logprobs computes no gradient for the unembedding: freeze weight and bias "
            "(requires_grad=False) or use torch.log_softmax on full logits"
        )
    most = rows_per_chunk(weight, softcap=softcap, budget_bytes=budget_bytes)
    n = normed.shape[0]
    # Near-equal chunks (no small tail): an allocator reuses one chunk's freed block for the next.
    chunk = math.ceil(n / math.ceil(n / most)) if n else most
    return _TokenLogprobs.apply(normed, weight, bias, targets.long(), softcap, chunk)
