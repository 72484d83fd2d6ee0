"""Attention knock-out: cut the attention from later tokens to the steered positions.

Method. At chosen layers we edit the post-softmax attention pattern
(``blocks.{l}.attn.hook_pattern``): for every query column that is not itself steered, the
weights on the steered key columns are set to 0. We do this in the unsteered and in the steered
run over the same sequence and compare them: if the steering effect vanishes under the
knock-out, it travelled through attention to the steered positions at those layers.

Renormalisation. With ``renormalize=True`` (the default) each knocked-out row is divided by its
remaining mass, which equals masking the steered keys before the softmax: the query then sees a
sequence in which the steered columns do not exist. This cuts both routes of the edit — the
steered values *and* the steered keys, which otherwise still shape the other weights through the
softmax denominator — so at every layer above ``L`` the knocked-out steered and unsteered runs
agree exactly at non-steered columns. With ``renormalize=False`` only the value contribution of
the steered columns is removed and the other weights keep their size (a milder edit of the
unsteered computation, but the key route stays open).

What a knock-out does to the unsteered model itself. The steered positions of the default spec
``f2+l2`` include the start token, which most heads use as an attention sink: they park most of
their weight on it, and its value vector is small. Renormalised, that parked weight is spread
over the other tokens, so heads that "did nothing" start mixing in content — a large change of
the unsteered model, unrelated to steering. Without renormalisation the parked weight simply
disappears, which changes little (the sink's value is small). Either way the damage is measured,
not assumed: :attr:`KnockoutResult.kl_damage` is ``KL(unsteered || unsteered knocked out)``, to be
read next to the steering effect under the knock-out.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from prosv_lens.analysis.paired import (
    HookFn,
    PairedSequences,
    attn_hook_name,
    forward,
    gen_logprobs,
    kl_div,
    layers_above,
    target_logprobs,
)
from prosv_lens.analysis.results import SavedResult
from prosv_lens.interventions import AbstractIntervention
from prosv_lens.models import LoadedModel
from prosv_lens.types import HookName, PosMask


def knockout_hook(steered: PosMask, *, renormalize: bool) -> HookFn:
    """A ``hook_pattern`` hook zeroing the weights from non-steered queries to steered keys."""

    def hook(pattern: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 - TL hook signature
        s = steered.to(pattern.device)
        if pattern.shape[2] != s.shape[1] or pattern.shape[3] != s.shape[1]:
            raise ValueError(
                f"knock-out prepared for {s.shape[1]} columns saw a pattern of shape "
                f"{tuple(pattern.shape)}: it works on full teacher-forced passes only"
            )
        cut = (~s)[:, None, :, None] & s[:, None, None, :]
        out = pattern.masked_fill(cut, 0.0)
        if renormalize:
            total = out.sum(dim=-1, keepdim=True)
            out = torch.where(total > 0, out / total.clamp_min(torch.finfo(out.dtype).tiny), out)
        return out

    return hook


def knockout_hooks(
    layers: Sequence[int], steered: PosMask, *, renormalize: bool
) -> list[tuple[HookName, HookFn]]:
    return [
        (attn_hook_name(ly, "pattern"), knockout_hook(steered, renormalize=renormalize))
        for ly in layers
    ]


@dataclass(frozen=True, eq=False)
class KnockoutResult(SavedResult):
    """The steering effect with and without the knock-out, and the knock-out's own damage.

    All arrays are ``[batch, gen_pos]`` (0 where not valid).

    Attributes:
        layer: the vector's layer; layers: the knocked-out layers; renormalize: see module doc.
        kl_effect: ``KL(steered || unsteered)``.
        kl_effect_knocked: ``KL(steered knocked out || unsteered knocked out)``.
        kl_damage: ``KL(unsteered || unsteered knocked out)``: what the knock-out does alone.
        kl_damage_steered: ``KL(steered || steered knocked out)``.
        logprob_*: log-prob of the steered continuation in the four runs.
    """

    layer: int
    layers: tuple[int, ...]
    renormalize: bool
    gen_valid: np.ndarray
    target_valid: np.ndarray
    kl_effect: np.ndarray
    kl_effect_knocked: np.ndarray
    kl_damage: np.ndarray
    kl_damage_steered: np.ndarray
    logprob_unsteered: np.ndarray
    logprob_steered: np.ndarray
    logprob_unsteered_knocked: np.ndarray
    logprob_steered_knocked: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean over valid positions of each KL array (nats per token)."""
        n = max(int(self.gen_valid.sum()), 1)
        names = ("kl_effect", "kl_effect_knocked", "kl_damage", "kl_damage_steered")
        return {k: float(getattr(self, k).sum() / n) for k in names}


def knockout(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    *,
    layers: Sequence[int] | None = None,
    renormalize: bool = True,
) -> KnockoutResult:
    """Knock out attention to the steered columns at ``layers`` (default: all above ``L``).

    Returns:
        A :class:`KnockoutResult`. Four forward passes.
    """
    layers = layers_above(model, vector) if layers is None else tuple(layers)
    for layer in layers:
        model.hook_name(layer)  # raises on a layer out of range
    hooks = knockout_hooks(layers, seq.steered, renormalize=renormalize)
    lp = {}
    for name, vectors, extra in (
        ("u", (), ()),
        ("s", vector, ()),
        ("uk", (), hooks),
        ("sk", vector, hooks),
    ):
        lp[name] = gen_logprobs(forward(model, seq, vectors, hooks=extra)[0], seq)
    valid = seq.gen_valid

    def kl(a: str, b: str) -> np.ndarray:
        return kl_div(lp[a], lp[b], valid).numpy()

    def tlp(a: str) -> np.ndarray:
        return target_logprobs(lp[a], seq).numpy()

    return KnockoutResult(
        layer=vector.layer,
        layers=layers,
        renormalize=renormalize,
        gen_valid=valid.numpy(),
        target_valid=seq.target_valid.numpy(),
        kl_effect=kl("s", "u"),
        kl_effect_knocked=kl("sk", "uk"),
        kl_damage=kl("u", "uk"),
        kl_damage_steered=kl("s", "sk"),
        logprob_unsteered=tlp("u"),
        logprob_steered=tlp("s"),
        logprob_unsteered_knocked=tlp("uk"),
        logprob_steered_knocked=tlp("sk"),
    )
