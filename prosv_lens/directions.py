"""Optimisation-free steering directions: the difference of mean activations (DiffMean).

``v = normalise(mean_{x in positive} h_L(x) - mean_{x in negative} h_L(x))`` where the means run
over every real token of every text except the first ``exclude_first`` tokens of each text
(position 0 is an attention sink whose residual norm is 100x the others in SmolLM2 and Gemma-3
and would dominate the mean). Only blocks ``0..L`` are run.

It is AxBench's DiffMean baseline and the quickest way to get a real, meaningful vector for a
concept without training; the jointly trained vectors of the paper come from the trainer.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, encode_prompts
from prosv_lens.types import Resid, Vector


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


def residuals(
    model: LoadedModel, texts: Sequence[Prompt], layer: int, *, chat_template: bool = False
) -> tuple[Resid, torch.Tensor]:
    """``blocks.{layer}.hook_resid_post`` of a batch of texts and its attention mask."""
    hook = model.hook_name(layer)
    batch = encode_prompts(model, texts, chat_template=chat_template, padding_side="right")
    batch = batch.to(model.device)
    store: dict[str, torch.Tensor] = {}

    def grab(resid: Resid, hook: object) -> None:  # noqa: ARG001 - TL hook signature
        store["resid"] = resid.detach()

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(hook, grab)]):
        model.bridge(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            stop_at_layer=layer + 1,
        )
    return store["resid"], batch.attention_mask


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
    means, norms = [], []
    for texts in (positive, negative):
        resid, mask = residuals(model, texts, layer, chat_template=chat_template)
        keep = mask.bool().clone()
        keep[:, :exclude_first] = False
        if not bool(keep.any()):
            raise ValueError(
                f"no token left after excluding the first {exclude_first} of each text"
            )
        tokens = resid[keep].double()
        means.append(tokens.mean(dim=0))
        norms.append(tokens.norm(dim=-1))
    diff = means[0] - means[1]
    return MeanDifference(
        direction=(diff / diff.norm()).float().cpu(),
        raw_norm=float(diff.norm()),
        resid_norm=float(torch.cat(norms).median()),
    )
