"""Logit lens of the steering vector and of what it changes, and direct logit attribution.

Method. Three readings of the edit in vocabulary space, each through the model's own final norm
and unembedding (``unembed.W_U``; its bias, if any, is left out since no direction moves it):

* :func:`vector_logit_lens` — the vector ``alpha * v`` itself, passed through the final norm as if
  it were a residual. For RMSNorm that divides by one positive number (the vector's RMS) and
  multiplies by the norm's weight, so the token *ranking* depends only on ``weight * v``: a
  vector equal to ``W_U[:, i] / weight`` ranks token ``i`` first when ``i`` has the largest
  unembedding norm (Cauchy-Schwarz).
* :func:`residual_diff_lens` — the steered-minus-unsteered residual at the ``gen_pos`` columns
  (``blocks.{l}.hook_resid_post``, default the last layer). The norm is not linear, so it is
  frozen at the unsteered run's scale (``ln_final.hook_scale``): the difference is divided by
  that scale and multiplied by the weight, the usual linearisation of direct logit attribution.
  For the last layer ``exact_mean`` gives the true mean logit change next to it.
* :func:`head_attribution` — direct logit attribution of each query head's output
  (``hook_z`` per head times its slice of the output projection ``W_O``) at layers above ``L`` to
  the steered continuation's next token, in each run with that run's own final-norm scale; and
  of each layer's whole attention output (``hook_attn_out``), which the heads sum to when the
  output projection has no bias.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from prosv_lens.analysis.paired import (
    PairedSequences,
    attn_hook_name,
    attn_out_hook_name,
    final_scale_hook_name,
    forward,
    layers_above,
)
from prosv_lens.analysis.results import SavedResult
from prosv_lens.interventions import AbstractIntervention, SteeringVector
from prosv_lens.models import LoadedModel


def final_norm_weight(model: LoadedModel) -> Tensor:
    """The elementwise weight the final norm multiplies by (``1 + w`` for offset norms)."""
    ln: Any = model.bridge.ln_final
    weight = ln.weight.detach()
    return 1.0 + weight if getattr(ln, "uses_weight_offset", False) else weight


def _unembed(model: LoadedModel) -> Tensor:
    return model.bridge.unembed.W_U.detach()  # [d_model, d_vocab]


def _token_strings(model: LoadedModel, ids: np.ndarray) -> tuple[str, ...]:
    return tuple(model.tokenizer.convert_ids_to_tokens([int(i) for i in ids]))


@dataclass(frozen=True, eq=False)
class VectorLensResult(SavedResult):
    """Logit lens of ``alpha * v``: ``logits`` ``[d_vocab]`` and the extreme tokens."""

    layer: int
    alpha: float
    logits: np.ndarray
    top_ids: np.ndarray
    top_tokens: tuple[str, ...]
    bottom_ids: np.ndarray
    bottom_tokens: tuple[str, ...]


def vector_logit_lens(
    model: LoadedModel, vector: SteeringVector, *, k: int = 20
) -> VectorLensResult:
    """Logits of ``unembed(ln_final(alpha * v))`` without the unembedding bias.

    Returns:
        The ``k`` most promoted (``top``) and most suppressed (``bottom``) tokens, best first.
    """
    delta = vector.delta.detach().to(model.device, model.dtype)
    with torch.no_grad():
        normed = model.bridge.ln_final(delta[None, None])[0, 0]
        logits = (normed @ _unembed(model)).double().cpu()
    order = logits.argsort(descending=True).numpy()
    top, bottom = order[:k], order[::-1][:k].copy()
    return VectorLensResult(
        layer=vector.layer,
        alpha=float(vector.alpha),
        logits=logits.numpy(),
        top_ids=top,
        top_tokens=_token_strings(model, top),
        bottom_ids=bottom,
        bottom_tokens=_token_strings(model, bottom),
    )


def _at_gen(act: Tensor, seq: PairedSequences) -> Tensor:
    """``act[b, gen_columns[b, t]]`` -> ``[batch, gen_pos, ...]``."""
    cols = seq.gen_columns.to(act.device)
    idx = cols.reshape(*cols.shape, *([1] * (act.ndim - 2))).expand(-1, -1, *act.shape[2:])
    return act.gather(1, idx)


@dataclass(frozen=True, eq=False)
class ResidualLensResult(SavedResult):
    """Logit lens of the steered-minus-unsteered residual at the ``gen_pos`` columns.

    Attributes:
        layer: the vector's layer; read_layer: the residual read (``hook_resid_post``).
        gen_valid: ``[batch, gen_pos]``.
        mean_logits: ``[d_vocab]`` the lens averaged over valid positions.
        exact_mean: ``[d_vocab]`` true mean logit change (final layer only; else empty).
        top_ids / bottom_ids: ``[k]`` most promoted / suppressed by ``mean_logits``.
        position_top_ids: ``[batch, gen_pos, k]`` most promoted at each position.
    """

    layer: int
    read_layer: int
    gen_valid: np.ndarray
    mean_logits: np.ndarray
    exact_mean: np.ndarray
    top_ids: np.ndarray
    top_tokens: tuple[str, ...]
    bottom_ids: np.ndarray
    bottom_tokens: tuple[str, ...]
    position_top_ids: np.ndarray


def residual_diff_lens(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    *,
    read_layer: int | None = None,
    k: int = 20,
) -> ResidualLensResult:
    """Lens of ``resid_steered - resid_unsteered`` at ``read_layer`` (default the last layer),
    with the final norm frozen at the unsteered scale. Two forward passes."""
    read_layer = model.n_layers - 1 if read_layer is None else read_layer
    name = model.hook_name(read_layer)
    names = [name, final_scale_hook_name()]
    u_logits, u = forward(model, seq, (), cache=names)
    s_logits, s = forward(model, seq, vector, cache=names)
    diff = _at_gen(s[name] - u[name], seq).double()
    scale = _at_gen(u[final_scale_hook_name()], seq).double()
    w = final_norm_weight(model).double().to(diff.device)
    lens = ((diff / scale) * w) @ _unembed(model).double().to(diff.device)  # [b, t, vocab]
    valid = seq.gen_valid.to(lens.device)
    n = max(int(valid.sum()), 1)
    mean = (lens * valid[..., None]).sum(dim=(0, 1)).cpu() / n
    exact = torch.zeros(0, dtype=torch.float64)
    if read_layer == model.n_layers - 1:
        change = _at_gen(s_logits - u_logits, seq).double() * valid[..., None]
        exact = change.sum(dim=(0, 1)).cpu() / n
    order = mean.argsort(descending=True).numpy()
    top, bottom = order[:k], order[::-1][:k].copy()
    return ResidualLensResult(
        layer=vector.layer,
        read_layer=read_layer,
        gen_valid=seq.gen_valid.numpy(),
        mean_logits=mean.numpy(),
        exact_mean=exact.numpy(),
        top_ids=top,
        top_tokens=_token_strings(model, top),
        bottom_ids=bottom,
        bottom_tokens=_token_strings(model, bottom),
        position_top_ids=lens.topk(min(k, lens.shape[-1]), dim=-1).indices.cpu().numpy(),
    )


@dataclass(frozen=True, eq=False)
class HeadAttributionResult(SavedResult):
    """Direct logit attribution to the steered continuation's next token.

    Arrays ``[layer, head_index, batch, gen_pos]`` (heads) or ``[layer, batch, gen_pos]`` (whole
    attention outputs), 0 where ``target_valid`` is False.
    """

    layer: int
    layers: tuple[int, ...]
    target_valid: np.ndarray
    heads_unsteered: np.ndarray
    heads_steered: np.ndarray
    attn_unsteered: np.ndarray
    attn_steered: np.ndarray

    def mean_head_change(self) -> np.ndarray:
        """``[layer, head_index]`` steered minus unsteered attribution, mean over targets."""
        n = max(int(self.target_valid.sum()), 1)
        return (self.heads_steered - self.heads_unsteered).sum(axis=(2, 3)) / n


def head_attribution(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    *,
    layers: Sequence[int] | None = None,
) -> HeadAttributionResult:
    """Per-head and per-layer direct logit attribution at ``layers`` (default all above ``L``).

    Two forward passes; each run uses its own final-norm scale.
    """
    layers = layers_above(model, vector) if layers is None else tuple(layers)
    names = [final_scale_hook_name()]
    for ly in layers:
        model.hook_name(ly)  # raises on a layer out of range
        names += [attn_hook_name(ly, "z"), attn_out_hook_name(ly)]
    w = final_norm_weight(model).double()
    targets = _unembed(model).double()[:, seq.targets.to(model.device)]  # [d_model, b, t]
    u_dir = (targets.permute(1, 2, 0) * w).cpu()  # [b, t, d_model]
    valid = seq.target_valid.double()
    out: list[tuple[Tensor, Tensor]] = []
    for vectors in ((), vector):
        cache = forward(model, seq, vectors, cache=names)[1]
        scale = _at_gen(cache[final_scale_hook_name()], seq).double().cpu()  # [b, t, 1]
        direction = u_dir / scale * valid[..., None]
        heads, whole = [], []
        for ly in layers:
            z = _at_gen(cache[attn_hook_name(ly, "z")], seq).double().cpu()  # [b, t, h, d_head]
            w_o = model.bridge.blocks[ly].attn.o.original_component.weight.detach().double().cpu()
            w_o = w_o.reshape(w_o.shape[0], z.shape[2], z.shape[3])  # [d_model, h, d_head]
            per_head = torch.einsum("bthe,mhe->bthm", z, w_o)
            heads.append(torch.einsum("bthm,btm->hbt", per_head, direction))
            attn = _at_gen(cache[attn_out_hook_name(ly)], seq).double().cpu()
            whole.append((attn * direction).sum(dim=-1))
        out.append((torch.stack(heads), torch.stack(whole)))
    return HeadAttributionResult(
        layer=vector.layer,
        layers=layers,
        target_valid=seq.target_valid.numpy(),
        heads_unsteered=out[0][0].numpy(),
        heads_steered=out[1][0].numpy(),
        attn_unsteered=out[0][1].numpy(),
        attn_steered=out[1][1].numpy(),
    )
