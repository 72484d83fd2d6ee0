"""Optimisation-free steering directions: the difference of mean activations (DiffMean).

``v = normalise(mean_{x in positive} h_L(x) - mean_{x in negative} h_L(x))`` where the means run
over every real token of every text except the first ``exclude_first`` tokens of each text
(position 0 is an attention sink whose residual norm is 100x the others in SmolLM2 and Gemma-3
and would dominate the mean). Only blocks ``0..L`` are run.

It is AxBench's DiffMean baseline and the quickest way to get a real, meaningful vector for a
concept without training; the jointly trained vectors of the paper come from the trainer.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, TokenBatch, encode_prompts, position_ids_from_mask
from prosv_lens.types import AttentionMask, Resid, Tokens, Vector


@dataclass(frozen=True)
class MeanDifference:
    """A DiffMean direction and the scale of the residual stream it lives in.

    Attributes:
        direction: unit-norm ``[d_model]`` direction.
        raw_norm: norm of the un-normalised mean difference.
        resid_norm: median per-token residual norm at the layer (sink tokens excluded), the
            natural unit for a steering factor.
    """

    direction: Vector
    raw_norm: float
    resid_norm: float

    def vector(
        self, model: LoadedModel, layer: int, *, info: Mapping[str, Any] | None = None
    ) -> SteeringVector:
        """The direction as a full-sequence :class:`SteeringVector` of ``model`` at ``layer``
        with ``alpha = 1`` (a factor search scales it, in units of :attr:`resid_norm`); ``info``
        is stored with it."""
        return SteeringVector(
            self.direction,
            layer=layer,
            positions="all",
            alpha=1.0,
            model_id=model.model_id,
            chat_template_hash=model.chat_template_hash,
            info=dict(info or {}),
        )


def resid_post(
    model: LoadedModel, input_ids: Tokens, attention_mask: AttentionMask, layer: int
) -> Resid:
    """``blocks.{layer}.hook_resid_post`` of a padded batch, running only blocks ``0..layer``
    (no gradient). The one place prosv-lens reads the residual stream at a layer."""
    hook = model.hook_name(layer)
    store: dict[str, torch.Tensor] = {}

    def grab(resid: Resid, hook: object) -> None:  # noqa: ARG001 - TL hook signature
        store["resid"] = resid.detach()

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(hook, grab)]):
        model.bridge(
            input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            position_ids=position_ids_from_mask(attention_mask).to(model.device),
            stop_at_layer=layer + 1,
        )
    return store["resid"]


def _token_statistics(
    model: LoadedModel, batches: Iterable[TokenBatch], layer: int, exclude_first: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean residual (float64) over every real token except each row's first ``exclude_first``
    (right-padded batches), and the per-token norms."""
    total = torch.zeros(model.d_model, dtype=torch.float64)
    count, norms = 0, []
    for batch in batches:
        resid = resid_post(model, batch.input_ids, batch.attention_mask, layer)
        keep = batch.attention_mask.bool().clone()
        keep[:, :exclude_first] = False
        tokens = resid[keep.to(resid.device)].double().cpu()
        total += tokens.sum(dim=0)
        count += tokens.shape[0]
        norms.append(tokens.norm(dim=-1))
    if count == 0:
        raise ValueError(f"no token left after excluding the first {exclude_first} of each text")
    return total / count, torch.cat(norms)


def mean_difference_of(
    model: LoadedModel,
    positive: Iterable[TokenBatch],
    negative: Iterable[TokenBatch],
    layer: int,
    *,
    exclude_first: int = 1,
) -> MeanDifference:
    """DiffMean direction from right-padded batches of positive and negative sequences."""
    pos, pos_norms = _token_statistics(model, positive, layer, exclude_first)
    neg, neg_norms = _token_statistics(model, negative, layer, exclude_first)
    diff = pos - neg
    return MeanDifference(
        direction=(diff / diff.norm()).float(),
        raw_norm=float(diff.norm()),
        resid_norm=float(torch.cat([pos_norms, neg_norms]).median()),
    )


def mean_difference(
    model: LoadedModel,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    layer: int,
    *,
    exclude_first: int = 1,
    chat_template: bool = False,
) -> MeanDifference:
    """DiffMean direction at ``blocks.{layer}.hook_resid_post`` from two sets of texts.

    Raises:
        ValueError: a set is empty or leaves no token after ``exclude_first``.
    """
    if not positive or not negative:
        raise ValueError("mean_difference needs at least one positive and one negative text")
    pos, neg = (
        encode_prompts(model, texts, chat_template=chat_template, padding_side="right")
        for texts in (positive, negative)
    )
    return mean_difference_of(model, [pos], [neg], layer, exclude_first=exclude_first)
