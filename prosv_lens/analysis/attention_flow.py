"""Attention to the steered positions: how much each continuation token reads from them.

Method. A prompt-only edit reaches a continuation token only through attention to the steered
columns at layers above ``L``. For every such layer and every query head we take the attention
pattern (``blocks.{l}.attn.hook_pattern``, post-softmax, ``[batch, head_index, query_pos,
key_pos]``) at the ``gen_pos`` query columns and sum it over the steered key columns: the
attention mass on the steered positions, in ``[0, 1]``. We do it in the unsteered and the steered
teacher-forced run over the same sequence, so the difference shows whether steering makes later
tokens look at the steered columns more or less (the steered keys change, so the pattern can).

The mass is also kept per steered column ("slot"): the first steered column is usually the start
token, which most heads use as an attention sink, so its mass is large in both runs and says
little by itself; the other slots are where a change in attention stands out.
"""

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
    layers_above,
)
from prosv_lens.analysis.results import SavedResult
from prosv_lens.interventions import AbstractIntervention
from prosv_lens.models import LoadedModel


@dataclass(frozen=True, eq=False)
class AttentionFlowResult(SavedResult):
    """Attention mass from continuation tokens to the steered columns.

    Attributes:
        layer: the vector's layer ``L``.
        layers: the analysed layers (those above ``L``).
        slot_columns: ``[batch, slot]`` the steered columns of each row in order (-1 = none).
        gen_valid: ``[batch, gen_pos]``.
        mass_unsteered, mass_steered: ``[layer, head_index, batch, gen_pos]`` total mass on the
            steered columns (0 where ``gen_valid`` is False).
        slot_unsteered, slot_steered: ``[layer, head_index, batch, gen_pos, slot]`` the mass on
            each steered column.
    """

    layer: int
    layers: tuple[int, ...]
    slot_columns: np.ndarray
    gen_valid: np.ndarray
    mass_unsteered: np.ndarray
    mass_steered: np.ndarray
    slot_unsteered: np.ndarray
    slot_steered: np.ndarray

    def mean_mass(self, steered: bool = True) -> np.ndarray:
        """``[layer, head_index, gen_pos]`` mass averaged over the rows that have ``gen_pos``."""
        mass = self.mass_steered if steered else self.mass_unsteered
        n = self.gen_valid.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return mass.sum(axis=2) / n


def _slots(seq: PairedSequences) -> Tensor:
    rows = [r.nonzero().flatten() for r in seq.steered]
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _recorder(seq: PairedSequences, slots: Tensor, store: dict[int, Tensor], layer: int) -> HookFn:
    def hook(pattern: Tensor, hook: Any) -> None:  # noqa: ARG001 - TL hook signature
        cols = seq.gen_columns.to(pattern.device)  # [batch, gen_pos]
        heads = pattern.shape[1]
        idx = cols[:, None, :, None].expand(-1, heads, -1, pattern.shape[-1])
        rows = pattern.gather(2, idx)  # [batch, head, gen_pos, key_pos]
        s = slots.to(pattern.device).clamp(min=0)[:, None, None, :]
        per_slot = rows.gather(3, s.expand(-1, heads, rows.shape[2], -1))
        per_slot = per_slot * (slots >= 0).to(pattern.device)[:, None, None, :]
        per_slot = per_slot * seq.gen_valid.to(pattern.device)[:, None, :, None]
        store[layer] = per_slot.double().cpu()  # [batch, head, gen_pos, slot]

    return hook


def attention_flow(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    *,
    layers: tuple[int, ...] | None = None,
) -> AttentionFlowResult:
    """Attention mass from each ``gen_pos`` query to the steered columns, unsteered and steered.

    Args:
        model, seq, vector: the model, paired sequences and the vector.
        layers: layers to read (default every layer above ``L``; lower layers are allowed).

    Returns:
        An :class:`AttentionFlowResult`. Two forward passes.
    """
    layers = layers_above(model, vector) if layers is None else tuple(layers)
    for layer in layers:
        model.hook_name(layer)  # raises on a layer out of range
    slots = _slots(seq)
    out = []
    for vectors in ((), vector):
        store: dict[int, Tensor] = {}
        hooks = [(attn_hook_name(ly, "pattern"), _recorder(seq, slots, store, ly)) for ly in layers]
        forward(model, seq, vectors, hooks=hooks)
        per_slot = torch.stack([store[ly].transpose(0, 1) for ly in layers]) if layers else None
        out.append(per_slot)
    if out[0] is None or out[1] is None:
        raise ValueError("attention_flow needs at least one layer")
    slot_u, slot_s = out[0].numpy(), out[1].numpy()
    return AttentionFlowResult(
        layer=vector.layer,
        layers=layers,
        slot_columns=slots.numpy(),
        gen_valid=seq.gen_valid.numpy(),
        mass_unsteered=slot_u.sum(axis=-1),
        mass_steered=slot_s.sum(axis=-1),
        slot_unsteered=slot_u,
        slot_steered=slot_s,
    )
