"""Steered response log-probabilities of a training batch, by the fast path or the full path.

A :class:`RowBatch` holds rows gathered from one or more concepts' encoded data; each row carries
its own edit ``delta[row] = alpha_k * v_k`` (the vector of the row's concept), applied at the
row's steered columns. Both paths apply the identical edit and return
:class:`~prosv_lens.training.objectives.SequenceLogprobs`:

* :func:`logprobs_fast` — cached residual at L, blocks above L only, logits only at response
  positions and in bounded memory (:mod:`prosv_lens.training.fastpath`,
  :mod:`prosv_lens.training.bounded_ce`);
* :func:`logprobs_full` — the way reference implementations train: the whole model with a hook
  on ``blocks.{L}.hook_resid_post``, logits and log-softmax at every position.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from prosv_lens.interventions import add_at_positions
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import TokenBatch, position_ids_from_mask
from prosv_lens.training.fastpath import ResidualCache, UpperStack
from prosv_lens.training.objectives import SequenceLogprobs
from prosv_lens.types import AttentionMask, PosMask, Resid, Tokens

Deltas = Float[Tensor, "batch d_model"]


@dataclass(frozen=True)
class RowBatch:
    """Right-padded rows gathered from several encoded datasets.

    Attributes:
        input_ids / attention_mask: the tokens, padded to the longest row.
        steer_mask: the columns each row's vector edits.
        response_mask: the teacher-forced response tokens (the loss targets).
        sources: ``(dataset index, example index)`` of each row.
    """

    input_ids: Tokens
    attention_mask: AttentionMask
    steer_mask: PosMask
    response_mask: PosMask
    sources: tuple[tuple[int, int], ...]

    @property
    def position_ids(self) -> Tokens:
        return position_ids_from_mask(self.attention_mask)


def gather_rows(
    batches: Sequence[TokenBatch],
    masks: Sequence[Tensor],
    sources: Sequence[tuple[int, int]],
    *,
    pad_multiple: int = 1,
) -> RowBatch:  # masks: Bool[batch_k, pos_k] per dataset (shapes differ across datasets)
    """Rows ``sources`` (``(dataset, example)`` pairs) of right-padded batches, re-padded to the
    longest row rounded up to a multiple of ``pad_multiple`` (padding no real token attends to:
    it only makes widths repeat across steps)."""
    lengths = [int(batches[k].attention_mask[i].sum()) for k, i in sources]
    width = -(-max(lengths) // pad_multiple) * pad_multiple
    rows = len(sources)
    ids = torch.zeros(rows, width, dtype=torch.long)
    attn = torch.zeros(rows, width, dtype=torch.long)
    steer = torch.zeros(rows, width, dtype=torch.bool)
    resp = torch.zeros(rows, width, dtype=torch.bool)
    for r, ((k, i), n) in enumerate(zip(sources, lengths, strict=True)):
        ids[r, :n] = batches[k].input_ids[i, :n]
        attn[r, :n] = 1
        steer[r, :n] = masks[k][i, :n]
        resp[r, :n] = batches[k].response_mask[i, :n]
    return RowBatch(ids, attn, steer, resp, tuple(sources))


def _targets(rows: RowBatch) -> tuple[PosMask, Tensor, Tensor]:
    """Predictor positions (``t`` predicts token ``t+1``), target ids and row ids."""
    sel = rows.response_mask[:, 1:]
    targets = rows.input_ids[:, 1:][sel]
    row_ids = torch.arange(rows.input_ids.shape[0])[:, None].expand_as(sel)[sel]
    return sel, targets, row_ids


def _reduce(logprobs: Tensor, row_ids: Tensor, sel: PosMask) -> SequenceLogprobs:
    rows = sel.shape[0]
    total = torch.zeros(rows, dtype=logprobs.dtype, device=logprobs.device)
    total = total.index_add(0, row_ids.to(logprobs.device), logprobs)
    return SequenceLogprobs(total, sel.sum(dim=1).to(logprobs))


def logprobs_fast(
    upper: UpperStack,
    caches: Sequence[ResidualCache],
    rows: RowBatch,
    deltas: Deltas,
    *,
    logits_budget_bytes: int = 1 << 30,
) -> SequenceLogprobs:
    """Fast path: cached residuals, blocks above L, unembedding at response positions only.

    The response tokens' logits are never all materialised: they are computed, soft-capped and
    log-softmaxed in chunks of at most ``logits_budget_bytes`` (forward and backward; see
    :mod:`prosv_lens.training.bounded_ce`), so memory no longer grows with tokens x vocabulary.
    """
    device = deltas.device
    width = rows.input_ids.shape[1]
    dtype = caches[rows.sources[0][0]].dtype
    resid = torch.zeros(len(rows.sources), width, deltas.shape[1], device=device, dtype=dtype)
    by_source: dict[int, list[int]] = {}
    for r, (k, _) in enumerate(rows.sources):
        by_source.setdefault(k, []).append(r)
    for k, row_list in by_source.items():
        resid[row_list] = caches[k].padded([rows.sources[r][1] for r in row_list], width, device)
    resid = add_at_positions(resid, rows.steer_mask.to(device), deltas)
    hidden = upper.hidden(resid, rows.attention_mask.to(device), rows.position_ids.to(device))
    sel, targets, row_ids = _targets(rows)
    picked = upper.token_logprobs(
        hidden[:, :-1][sel.to(device)], targets.to(device), logits_budget_bytes
    )
    return _reduce(picked, row_ids, sel)


def logprobs_full(
    model: LoadedModel, layer: int, rows: RowBatch, deltas: Deltas
) -> SequenceLogprobs:
    """Reference path: whole model with a steering hook, logits at every position."""
    device = deltas.device
    steer = rows.steer_mask.to(device)

    def hook(resid: Resid, hook: object) -> Resid:  # noqa: ARG001 - TL hook signature
        return add_at_positions(resid, steer, deltas)

    with model.bridge.hooks(fwd_hooks=[(model.hook_name(layer), hook)]):
        logits = model.bridge(
            rows.input_ids.to(device),
            attention_mask=rows.attention_mask.to(device),
            position_ids=rows.position_ids.to(device),
        )
    # fp32 at least (as the fast path's chunked loss): a float64 model keeps float64
    logprobs = torch.log_softmax(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1
    )[:, :-1]
    sel, targets, row_ids = _targets(rows)
    picked = logprobs[sel.to(device)].gather(1, targets.to(device)[:, None]).squeeze(1)
    return _reduce(picked, row_ids, sel)
