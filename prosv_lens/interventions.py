"""Stage 3 — interventions on the residual stream, as TransformerLens hook functions.

A :class:`SteeringVector` carries its own location (layer -> ``blocks.{L}.hook_resid_post``,
position spec), factor ``alpha`` and direction ``v``; it adds ``alpha * v`` to the residual at its
steered positions and leaves every other position bit-for-bit untouched.

The public surface is plain TransformerLens forward hooks. :meth:`AbstractIntervention.fwd_hooks`
turns an intervention into ``[(hook_name, hook_fn)]`` for one batch, ready for
``bridge.run_with_hooks(..., fwd_hooks=...)``, ``with bridge.hooks(fwd_hooks=...)`` or a list of
the caller's own hooks; :func:`steering_hooks` builds the whole list for a model (every
intervention, checked against the model, plus the float64 attention fix). :func:`steering` (a
context manager that removes the hooks on exit, also when its body raises) and
:func:`run_with_steering` (one forward pass) attach exactly that list, so there is one code path.

Positions are resolved against the batch *before* any hook is attached, and each hook reads the
absolute column offset of the current forward pass from a :class:`DecodeState` the caller owns —
never from the activation's length, which under a KV cache is 1 for every decoded token. So a
prompt-only vector edits its prompt columns during prefill and no decoded token, and the same
hooks serve cached and uncached generation.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, final

import torch
from jaxtyping import Float
from torch import Tensor, nn

from prosv_lens.errors import ConfigError, SteeringStateError, VectorMismatchError
from prosv_lens.models import LoadedModel, hook_name, pattern_hook_name
from prosv_lens.positions import PositionSpec, ResolvedPositions
from prosv_lens.prompts import TokenBatch
from prosv_lens.types import FwdHook, HookName, Logits, PosMask, Resid, Vector
from prosv_lens.validate import finite, finite_tensor, integer


def add_at_positions(resid: Resid, mask: PosMask, delta: Float[Tensor, "*rows d_model"]) -> Resid:
    """``resid + delta`` where ``mask`` is True, ``resid`` bit-for-bit elsewhere.

    ``delta`` is one vector ``[d_model]`` for every row, or one per row ``[batch, d_model]``.
    """
    delta = delta.to(device=resid.device, dtype=resid.dtype)
    if delta.ndim == 2:
        delta = delta[:, None, :]
    return torch.where(mask[..., None], resid + delta, resid)


@dataclass
class DecodeState:
    """Absolute column of the first token in the forward pass about to run.

    Owned by the caller (a generation loop, :func:`prosv_lens.generate`'s or your own) and read
    by the steering hooks at every pass; 0 for an ordinary full-sequence forward.
    """

    offset: int = 0


class AbstractIntervention(nn.Module, ABC):
    """An edit of one hook point at the positions of a :class:`PositionSpec`.

    Subclasses implement :meth:`edit`; they must leave unmasked positions exactly unchanged.
    """

    layer: int
    positions: PositionSpec

    @property
    def hook_name(self) -> HookName:
        return hook_name(self.layer)

    @property
    @abstractmethod
    def d_model(self) -> int: ...

    @abstractmethod
    def edit(self, resid: Resid, mask: PosMask) -> Resid:
        """Return the edited residual; positions where ``mask`` is False are returned as is."""

    @final
    def fwd_hooks(self, batch: TokenBatch, *, state: DecodeState | None = None) -> list[FwdHook]:
        """This intervention as TransformerLens forward hooks for ``batch``.

        Pass the list to ``bridge.run_with_hooks(..., fwd_hooks=...)`` or
        ``bridge.hooks(fwd_hooks=...)``, alone or concatenated with other hooks (another
        intervention's, a cache of your own: hooks at one point run in list order). The
        positions are resolved here, so a bad spec raises before anything is attached.

        Contract of the returned ``(hook_name, hook_fn)`` pairs:

        * ``hook_fn`` edits the activation at ``hook_name`` (``blocks.{layer}.hook_resid_post``)
          at the columns the position spec selects in ``batch`` (padding never counts) and
          returns every other position bit-for-bit unchanged;
        * the forward pass must run on ``batch``'s rows and columns: the activation it sees
          covers absolute columns ``[state.offset, state.offset + pos)``. Columns past
          ``batch.n_pos`` are generated tokens, edited only by ``all`` (an FSSV); a prompt-only
          hook returns ``None`` (no edit, no cost) when it sees only such columns;
        * ``state=None`` gives a fresh :class:`DecodeState` at offset 0, right for any pass over
          the whole sequence (the batch, possibly with generated tokens appended). For KV-cache
          decoding give every intervention's hooks the same state and set ``state.offset`` to
          the first column of each pass before running it (as :func:`prosv_lens.generate` does);
        * a pass over another number of rows, or over fewer columns than ``batch`` at offset 0
          (e.g. ``bridge.generate``), raises :class:`SteeringStateError`; a residual of another
          width raises :class:`VectorMismatchError`, both when the hook runs.

        No model is given, so its d_model and layer count are checked only when the hook runs,
        and the float64 attention fix is not included: :func:`steering_hooks` checks the model
        before anything is attached and adds the fix. The hooks never modify model weights.
        TransformerLens 4.3's ``run_with_cache`` takes no ``fwd_hooks`` (it passes them on to a
        forward that ignores them): call it inside ``bridge.hooks(fwd_hooks=...)``.

        Args:
            batch: the batch the hooks will see (on any device; masks follow the activation).
            state: the decoding offset the hooks read; see above.

        Returns:
            ``[(hook_name, hook_fn)]``, one pair per edited hook point.

        Raises:
            PositionSpecError: the spec does not fit an example of ``batch``.
            ValueError: the edit (``alpha * v``) is not finite.
        """
        _check_finite(self)
        resolved = self.positions.resolve(batch)
        state = state if state is not None else DecodeState()
        return [(self.hook_name, _make_hook(self, resolved, state))]


@final
class SteeringVector(AbstractIntervention):
    """``h <- h + alpha * v`` at the spec's positions of ``blocks.{layer}.hook_resid_post``.

    ``alpha`` (a 0-d parameter) and ``v`` (``[d_model]``) are ``nn.Parameter`` so a trainer can
    optimise them; ``requires_grad`` is off until a trainer turns it on.

    Args:
        v: the direction, ``[d_model]`` (finite).
        layer: block index whose output (``hook_resid_post``) is edited.
        positions: a position spec (``"f2+l2"``, ``"all"``, ...; see :mod:`prosv_lens.positions`).
        alpha: the steering factor (finite).
        model_id: the model the vector was made for (checked when loading from disk).
        chat_template_hash: the chat template it was made with (positions depend on it).
        info: free-form provenance (training settings, data, ...), saved with the vector.
    """

    def __init__(
        self,
        v: torch.Tensor,  # validated below with a clearer message than a shape annotation
        *,
        layer: int,
        positions: "str | PositionSpec | Sequence[int]" = "f2+l2",
        alpha: float | torch.Tensor = 1.0,
        model_id: str | None = None,
        chat_template_hash: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        v = torch.as_tensor(v).detach()
        if v.ndim != 1 or not v.is_floating_point():
            raise ConfigError(f"v must be a 1-d float tensor [d_model], got shape {tuple(v.shape)}")
        finite_tensor("the steering direction v", v, "a vector with NaN/inf cannot steer")
        integer("layer", layer, minimum=0)
        finite("alpha", alpha)
        self.layer = layer
        self.positions = PositionSpec.parse(positions)
        self.v = nn.Parameter(v.clone().float(), requires_grad=False)
        self.alpha = nn.Parameter(
            torch.as_tensor(alpha, dtype=torch.float32).detach().clone().reshape(()),
            requires_grad=False,
        )
        self.model_id = model_id
        self.chat_template_hash = chat_template_hash
        self.info = dict(info or {})

    @classmethod
    def zeros(cls, d_model: int, **kwargs: Any) -> "SteeringVector":
        """A zero vector: attaching it leaves logits bit-identical."""
        return cls(torch.zeros(d_model), **kwargs)

    @property
    def d_model(self) -> int:
        return int(self.v.shape[0])

    @property
    def delta(self) -> Vector:
        """``alpha * v``, the vector actually added."""
        return self.alpha * self.v

    def edit(self, resid: Resid, mask: PosMask) -> Resid:
        return add_at_positions(resid, mask, self.delta)

    def scaled(self, factor: float) -> "SteeringVector":
        """A copy with ``alpha * factor`` (e.g. an FSSV at 50% of its learned factor)."""
        return self.replace(alpha=float(self.alpha) * finite("the scale factor", factor))

    def replace(self, **changes: Any) -> "SteeringVector":
        """A detached copy with some constructor arguments changed."""
        kwargs: dict[str, Any] = {
            "v": self.v.detach(),
            "layer": self.layer,
            "positions": self.positions,
            "alpha": self.alpha.detach(),
            "model_id": self.model_id,
            "chat_template_hash": self.chat_template_hash,
            "info": self.info,
        }
        kwargs.update(changes)
        return SteeringVector(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, positions='{self.positions}', alpha={float(self.alpha):.4g}, "
            f"|v|={float(self.v.norm()):.4g}, d_model={self.d_model}, model_id={self.model_id!r}"
        )


def check_compatible(model: LoadedModel, intervention: AbstractIntervention) -> None:
    """Raise :class:`VectorMismatchError` if the intervention cannot act on this model."""
    if intervention.d_model != model.d_model:
        raise VectorMismatchError(
            f"vector has d_model {intervention.d_model} but {model.model_id} has d_model "
            f"{model.d_model}: it was made for another model; train or load one for this model."
        )
    model.hook_name(intervention.layer)  # raises on a layer out of range
    _check_finite(intervention)


def _check_finite(intervention: AbstractIntervention) -> None:
    if isinstance(intervention, SteeringVector):  # parameters may have been edited in place
        with torch.no_grad():
            finite_tensor(
                "the steering edit alpha * v",
                intervention.delta,
                "alpha or v was set to NaN/inf after the vector was made",
            )


def _make_hook(
    intervention: AbstractIntervention, resolved: ResolvedPositions, state: DecodeState
) -> Callable[[Resid, Any], Resid | None]:
    batch, known = resolved.mask.shape

    def hook(resid: Resid, hook: Any) -> Resid | None:  # noqa: ARG001 - TL hook signature
        if resid.shape[0] != batch:
            raise SteeringStateError(
                f"steering was prepared for a batch of {batch} but the model ran on "
                f"{resid.shape[0]} rows: build the steering hooks with the batch you run."
            )
        if resid.shape[-1] != intervention.d_model:
            raise VectorMismatchError(
                f"{intervention.hook_name} has width {resid.shape[-1]} but the vector has d_model "
                f"{intervention.d_model}: it was made for another model; train or load one for "
                "this model."
            )
        width = resid.shape[1]
        if state.offset == 0 and width < known:
            raise SteeringStateError(
                f"steering was prepared for {known} columns but a forward pass at offset 0 has "
                f"{width}. Use prosv_lens.generate() for generation (it tracks the KV-cache "
                "offset); bridge.generate() with steering hooks attached is not supported."
            )
        mask = resolved.chunk(state.offset, width)
        if mask is None:  # a prompt-only vector during decoding: nothing to do, no cost
            return None
        return intervention.edit(resid, mask.to(resid.device))

    return hook


def _finite_pattern(pattern: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 - TL hook signature
    """Zero NaN attention patterns. TransformerLens 4.3 softmaxes rotary attention in float32
    even for a float64 model, so the -1.8e308 mask of a fully masked query row (a leading pad of
    a left-padded row) becomes -inf and the row NaN, which then reaches real tokens through
    0 * NaN. Real rows never hold NaN, so nothing else changes."""
    return torch.nan_to_num(pattern, nan=0.0)


def _as_list(
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
) -> list[AbstractIntervention]:
    if isinstance(interventions, AbstractIntervention):
        return [interventions]
    return list(interventions)


def steering_hooks(
    model: LoadedModel,
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
    batch: TokenBatch,
    *,
    state: DecodeState | None = None,
) -> list[FwdHook]:
    """Every hook that steering ``model`` on ``batch`` needs, as TransformerLens ``fwd_hooks``.

    The list :func:`steering` attaches: each intervention's :meth:`~AbstractIntervention.fwd_hooks`
    (same contract: the spec's columns edited, every other position bit-for-bit unchanged, the
    offset read from ``state``, the batch size must match), all sharing one ``state``. Unlike a
    single intervention's hooks, every intervention is first checked against the model (d_model,
    layer in range, finite edit) and every spec resolved, so nothing is returned, and nothing can
    be attached, unless all of them fit. Several interventions compose: at the same hook point
    their edits add up.

    For a float64 model the list ends with one hook per layer on the attention pattern that
    zeroes NaN rows (:func:`_finite_pattern`): TransformerLens 4.3 would otherwise turn the fully
    masked query rows of left padding into NaN that reaches real tokens. This fix belongs to the
    model, not to a vector (it is needed with no vector at all, and once however many vectors
    there are), so it is here and not in :meth:`~AbstractIntervention.fwd_hooks`; with no
    interventions the list holds only the fix (empty for other dtypes).

    Args:
        model: the model the hooks will run in.
        interventions: one intervention or several (different layers/positions are fine).
        batch: the batch the forward passes will run (its columns define the positions).
        state: the decoding offset every hook reads; a fresh one (offset 0) if ``None``.

    Raises:
        VectorMismatchError: an intervention's d_model is not the model's.
        ConfigError: an intervention's layer is out of range for the model.
        PositionSpecError: a spec does not fit an example of ``batch``.
    """
    interventions = _as_list(interventions)
    for iv in interventions:
        check_compatible(model, iv)
    state = state if state is not None else DecodeState()
    hooks = [pair for iv in interventions for pair in iv.fwd_hooks(batch, state=state)]
    if model.dtype == torch.float64:
        hooks += [(pattern_hook_name(i), _finite_pattern) for i in range(model.n_layers)]
    return hooks


@contextmanager
def steering(
    model: LoadedModel,
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
    batch: TokenBatch,
    *,
    state: DecodeState | None = None,
) -> Iterator[DecodeState]:
    """Attach :func:`steering_hooks` for the forward passes in the ``with`` body, then remove them.

    Everything is checked and resolved before anything is attached (a bad spec raises and
    attaches nothing); the hooks are removed on exit, also when the body raises.

    Args:
        model: the model to steer.
        interventions: one intervention or several (different layers/positions are fine).
        batch: the batch the body will run (its columns define the positions).
        state: the decoding offset tracker; a fresh one (offset 0) if ``None``.

    Yields:
        The :class:`DecodeState` the hooks read; a generation loop advances its ``offset``.
    """
    state = state if state is not None else DecodeState()
    hooks = steering_hooks(model, interventions, batch, state=state)
    with model.bridge.hooks(fwd_hooks=hooks):
        yield state


def run_with_steering(
    model: LoadedModel,
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
    batch: TokenBatch,
    **forward_kwargs: Any,
) -> Logits:
    """One steered forward pass over ``batch`` (hooks removed afterwards); returns logits.

    The same computation as ``bridge.run_with_hooks(batch.input_ids,
    attention_mask=batch.attention_mask, position_ids=batch.position_ids,
    fwd_hooks=steering_hooks(model, interventions, batch))`` (bit-identical logits; tested).
    Extra keyword arguments go to the bridge's forward (e.g. ``return_type``).
    """
    batch = batch.to(model.device)
    with steering(model, interventions, batch):
        return model.bridge(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            **forward_kwargs,
        )


def active_hook_count(model: LoadedModel) -> int:
    """Number of forward/backward hooks attached to the model's hook points (0 when clean)."""
    points = {id(hp): hp for hp in model.bridge.hook_dict.values()}  # aliases share a point
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in points.values())
