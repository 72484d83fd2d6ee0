"""Path patching of the steered positions' keys and values.

Method. Later tokens read a prompt-only edit only through the keys and values the steered
columns expose at layers above ``L``. So we patch exactly those cached tensors, at chosen layers
(or single key/value heads) and for keys, values or both:

* **restore** (necessity): in the steered run, set the steered columns' keys/values back to their
  unsteered values. Restoring keys *and* values at every layer above ``L`` makes every
  non-steered column compute exactly what the unsteered model computes (by induction over
  layers: its own residual never changed, and everything it attends to is unsteered again). The
  steered columns themselves compute a mix (edited residual, partly restored context) and are
  not measured.
* **inject** (sufficiency): in the unsteered run, give the steered columns only their steered
  keys/values. At every layer above ``L`` together this reproduces the steered logits at every
  non-steered column.

Patching one layer, one component or one head in between tells how much of the effect that part
carries. Measures, over the ``gen_pos`` columns (see :mod:`prosv_lens.analysis.paired`):
``KL(steered || patched)`` of the next-token distribution and the log-probability of the steered
continuation. :meth:`PathPatchingResult.fraction_present` turns them into the share of the
steering effect present in the patched run (1 = fully steered, 0 = unsteered): for a restore,
``1 - fraction`` is the share it removes; for an injection, ``fraction`` is the share it recovers.

Keys and values are patched at ``hook_rot_k`` / ``hook_v`` — where the KV cache stores them:
after RoPE, before the grouped-query expansion. A "head" here is therefore a **key/value head**;
with grouped-query attention it serves ``n_heads // n_key_value_heads`` query heads. (Patching
before RoPE would be the same: both runs rotate the same columns by the same angles.)

Regeneration under a patch (:func:`generate_under_patch`) uses the project's KV-cache decoder:
the steered columns are prompt columns, so their keys/values are written to the cache once,
during prefill, and a patch applied in prefill holds for every decoded token. A judge can then
rate the regenerated text (:func:`judge_under_patch`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
    kv_cache_names,
    layers_above,
    run_pair,
    target_logprobs,
)
from prosv_lens.analysis.results import SavedResult
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.generation import Generation, GenerationConfig, generate
from prosv_lens.interventions import AbstractIntervention
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import TokenBatch
from prosv_lens.types import HookName, Logits, PosMask

Mode = Literal["restore", "inject"]
MODES = ("restore", "inject")
COMPONENTS = ("k", "v", "kv")


@dataclass(frozen=True)
class KVPatch:
    """Which cached keys/values of the steered columns to patch.

    Attributes:
        layers: the layers (each above the vector's layer).
        component: ``"k"``, ``"v"`` or ``"kv"``.
        heads: key/value head indices, or ``None`` for all of them.
    """

    layers: tuple[int, ...]
    component: str = "kv"
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a KVPatch needs at least one layer")
        if self.component not in COMPONENTS:
            raise ValueError(f"component must be one of {COMPONENTS}, got {self.component!r}")
        if self.heads is not None and not self.heads:
            raise ValueError("heads=() patches nothing: pass None for all heads or some indices")

    @property
    def label(self) -> str:
        layers = ",".join(map(str, self.layers))
        heads = "" if self.heads is None else "/h" + ",".join(map(str, self.heads))
        return f"{self.component}/L{layers}{heads}"

    def hook_names(self) -> list[HookName]:
        kinds = {"k": ("rot_k",), "v": ("v",), "kv": ("rot_k", "v")}[self.component]
        return [attn_hook_name(layer, k) for layer in self.layers for k in kinds]


def _replace_hook(source: Tensor, mask: PosMask, heads: tuple[int, ...] | None) -> HookFn:
    """Put ``source`` at the masked columns (and heads) of a ``[batch, pos, kv_head, d_head]``
    activation whose first ``mask.shape[1]`` columns are the ones ``source`` was cached on.

    A pass narrower than that is a KV-cache decoding step (one new token, never a steered
    prompt column; prompts are longer than one token): it is left alone, since the patch was
    written into the cache during prefill. A wider pass is an uncached decoding step, which
    starts at column 0 again."""

    def hook(act: Tensor, hook: Any) -> Tensor | None:  # noqa: ARG001 - TL hook signature
        known = mask.shape[1]
        if act.shape[1] < known:  # a KV-cache decoding step: no prompt column in it
            return None
        select = mask[:, :, None].to(act.device).expand(-1, -1, act.shape[2]).clone()
        if heads is not None:
            keep = torch.zeros(act.shape[2], dtype=torch.bool, device=act.device)
            keep[list(heads)] = True
            select &= keep
        out = act.clone()
        out[:, :known] = torch.where(
            select[..., None], source.to(act.device, act.dtype), act[:, :known]
        )
        return out

    return hook


def patch_hooks(
    patch: KVPatch, source: dict[str, Tensor], steered: PosMask
) -> list[tuple[HookName, HookFn]]:
    """Hooks that write ``source`` (cached keys/values) at the steered columns for ``patch``."""
    missing = [n for n in patch.hook_names() if n not in source]
    if missing:
        raise ValueError(f"the source cache lacks {missing}: cache kv_cache_names(layers) first")
    return [(n, _replace_hook(source[n], steered, patch.heads)) for n in patch.hook_names()]


def patched_logits(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    patch: KVPatch,
    mode: str,
    source: dict[str, Tensor],
) -> Logits:
    """Logits of the steered run with ``patch`` restored from ``source`` (``mode="restore"``,
    ``source`` = the unsteered cache), or of the unsteered run with it injected from ``source``
    (``mode="inject"``, ``source`` = the steered cache)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    above = set(layers_above(model, vector))
    if not set(patch.layers) <= above:
        raise ValueError(
            f"patch layers {patch.layers} must be above the vector's layer {vector.layer} "
            f"(the steered keys/values differ only at {min(above, default=None)}..)"
        )
    hooks = patch_hooks(patch, source, seq.steered)
    vectors = vector if mode == "restore" else ()
    return forward(model, seq, vectors, hooks=hooks)[0]


@dataclass(frozen=True, eq=False)
class PathPatchingResult(SavedResult):
    """Teacher-forced measures of every patch, and the unpatched baselines.

    Arrays are ``[batch, gen_pos]`` (baselines) or ``[patch, batch, gen_pos]``; entries where
    ``gen_valid`` (KL) or ``target_valid`` (log-prob) is False are 0.

    Attributes:
        layer, n_layers, n_heads, n_kv_heads: the vector's layer and the model's shape.
        labels, modes, components, patch_layers, patch_heads: one entry per patch
            (``patch_heads`` entry ``None`` = all key/value heads).
        kl_unsteered: ``KL(steered || unsteered)``, the full effect.
        logprob_steered, logprob_unsteered: log-prob of the steered continuation.
        kl: ``KL(steered || patched)``; logprob: log-prob under the patch.
    """

    layer: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    labels: tuple[str, ...]
    modes: tuple[str, ...]
    components: tuple[str, ...]
    patch_layers: tuple[tuple[int, ...], ...]
    patch_heads: tuple[tuple[int, ...] | None, ...]
    gen_valid: np.ndarray
    target_valid: np.ndarray
    kl_unsteered: np.ndarray
    logprob_steered: np.ndarray
    logprob_unsteered: np.ndarray
    kl: np.ndarray
    logprob: np.ndarray

    def fraction_present(self, measure: str = "kl") -> np.ndarray:
        """Share of the steering effect present under each patch, ``[patch]``, pooled over rows
        and positions: ``1 - sum KL(s||patched) / sum KL(s||u)`` for ``"kl"``, or
        ``(lp_patched - lp_u) / (lp_s - lp_u)`` (summed log-probs) for ``"logprob"``.
        NaN when the steering has no effect (a zero denominator)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            if measure == "kl":
                return 1.0 - self.kl.sum(axis=(1, 2)) / self.kl_unsteered.sum()
            if measure == "logprob":
                gap = self.logprob_steered.sum() - self.logprob_unsteered.sum()
                return (self.logprob.sum(axis=(1, 2)) - self.logprob_unsteered.sum()) / gap
        raise ValueError(f"measure must be 'kl' or 'logprob', got {measure!r}")

    def effect_carried(self, measure: str = "kl") -> np.ndarray:
        """Share of the effect each patch shows to be carried, ``[patch]``: removed by a restore
        (``1 - fraction_present``), recovered by an injection (``fraction_present``)."""
        present = self.fraction_present(measure)
        restore = np.array([m == "restore" for m in self.modes])
        return np.where(restore, 1.0 - present, present)

    def ranking(
        self, mode: str = "restore", component: str = "kv", *, heads: bool = False
    ) -> list[tuple[str, float]]:
        """Single-layer (``heads=False``) or single-head patches of one mode and component,
        sorted by :meth:`effect_carried` (KL measure), largest first."""
        carried = self.effect_carried("kl")
        rows = [
            (self.labels[i], float(carried[i]))
            for i in range(len(self.labels))
            if self.modes[i] == mode
            and self.components[i] == component
            and len(self.patch_layers[i]) == 1
            and (self.patch_heads[i] is not None) == heads
        ]
        return sorted(rows, key=lambda r: -np.nan_to_num(r[1], nan=-np.inf))


def path_patching(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    patches: Sequence[KVPatch] | None = None,
    *,
    modes: Sequence[str] = MODES,
    layer_components: Sequence[str] = ("kv",),
    top_layers: int = 3,
) -> PathPatchingResult:
    """Measure restore/inject patches of the steered columns' keys and values.

    Args:
        model, seq, vector: the model, the paired sequences and the (prompt-only) vector.
        patches: the patches to run in every mode. ``None`` runs the default sweep: all layers
            above ``L`` together for ``k``, ``v`` and ``kv``; each single layer for
            ``layer_components``; then every single key/value head (``kv``) of the
            ``top_layers`` layers whose ``kv`` restore removes most of the effect.
        modes: ``"restore"`` and/or ``"inject"``.
        layer_components: components of the single-layer sweep (default sweep only; must
            include ``"kv"``, which ranks the layers). ``("k", "v", "kv")`` triples its cost.
        top_layers: how many layers get a per-head sweep (default sweep only).

    Returns:
        A :class:`PathPatchingResult`; one forward pass per patch and mode, plus two.
    """
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {m!r}")
    if patches is None and (
        "kv" not in layer_components or set(layer_components) - set(COMPONENTS)
    ):
        raise ValueError(f"layer_components must include 'kv' (and only {COMPONENTS})")
    above = layers_above(model, vector)
    if not above:
        raise ValueError(
            f"the vector edits the last layer ({vector.layer}): no attention layer reads it"
        )
    run = run_pair(model, seq, vector, cache=kv_cache_names(above))
    lp_u, lp_s = gen_logprobs(run.unsteered, seq), gen_logprobs(run.steered, seq)
    source = {"restore": run.cache_unsteered, "inject": run.cache_steered}
    done: list[tuple[KVPatch, str, torch.Tensor, torch.Tensor]] = []

    def measure(todo: Sequence[KVPatch]) -> None:
        for patch in todo:
            for mode in modes:
                logits = patched_logits(model, seq, vector, patch, mode, source[mode])
                lp = gen_logprobs(logits, seq)
                done.append(
                    (patch, mode, kl_div(lp_s, lp, seq.gen_valid), target_logprobs(lp, seq))
                )

    if patches is not None:
        measure(patches)
    else:
        measure([KVPatch(above, c) for c in COMPONENTS])
        measure([KVPatch((layer,), c) for layer in above for c in layer_components])
        total = float(kl_div(lp_s, lp_u, seq.gen_valid).sum())
        restore_kv = [
            (layer, float(kl.sum()))
            for p, m, kl, _ in done
            if m == "restore" and p.component == "kv" and len(p.layers) == 1
            for layer in p.layers
        ]
        if total > 0 and restore_kv:
            best = sorted(restore_kv, key=lambda r: -r[1])[:top_layers]
            n_kv = int(model.bridge.cfg.n_key_value_heads or model.bridge.cfg.n_heads)
            measure([KVPatch((layer,), "kv", (h,)) for layer, _ in best for h in range(n_kv)])

    cfg = model.bridge.cfg

    def stack(per_patch: list[torch.Tensor]) -> np.ndarray:
        return torch.stack(per_patch).numpy() if per_patch else np.zeros((0, *lp_u.shape[:2]))

    return PathPatchingResult(
        layer=vector.layer,
        n_layers=model.n_layers,
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(cfg.n_key_value_heads or cfg.n_heads),
        labels=tuple(f"{m}/{p.label}" for p, m, _, _ in done),
        modes=tuple(m for _, m, _, _ in done),
        components=tuple(p.component for p, _, _, _ in done),
        patch_layers=tuple(p.layers for p, _, _, _ in done),
        patch_heads=tuple(p.heads for p, _, _, _ in done),
        gen_valid=seq.gen_valid.numpy(),
        target_valid=seq.target_valid.numpy(),
        kl_unsteered=kl_div(lp_s, lp_u, seq.gen_valid).numpy(),
        logprob_steered=target_logprobs(lp_s, seq).numpy(),
        logprob_unsteered=target_logprobs(lp_u, seq).numpy(),
        kl=stack([kl for _, _, kl, _ in done]),
        logprob=stack([lp for _, _, _, lp in done]),
    )


# ----------------------------------------------------------------------------- regeneration


def generate_under_patch(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    patch: KVPatch,
    mode: Mode,
    config: GenerationConfig | None = None,
    *,
    record_logits: bool = False,
) -> Generation:
    """Decode the prompts of ``seq`` again with ``patch`` applied (KV cache by default).

    The source keys/values come from a prompt-only pass (unsteered for ``restore``, steered for
    ``inject``), so they do not depend on the old continuation. The patch acts on the prompt
    columns of the prefill pass (or of every pass with ``use_cache=False``); decoding steps with
    the cache never recompute them.
    """
    prompt = _prompt_only(seq)
    above = layers_above(model, vector)
    names = kv_cache_names(above)
    src_vectors = vector if mode == "inject" else ()
    source = forward(model, prompt, src_vectors, cache=names)[1]
    hooks = patch_hooks(patch, source, prompt.steered.to(model.device))
    run_vectors = vector if mode == "restore" else ()
    with model.bridge.hooks(fwd_hooks=hooks):
        return generate(model, prompt.batch, run_vectors, config, record_logits=record_logits)


def _prompt_only(seq: PairedSequences) -> PairedSequences:
    n = int(seq.gen_columns[seq.gen_valid].min()) if bool(seq.gen_valid.any()) else seq.batch.n_pos
    b = seq.batch
    batch = TokenBatch(
        b.input_ids[:, :n], b.attention_mask[:, :n], b.prompt_mask[:, :n], b.role_spans, b.texts
    )
    empty = torch.zeros((b.batch_size, 0), dtype=torch.long)
    none = torch.zeros((b.batch_size, 0), dtype=torch.bool)
    return PairedSequences(batch, seq.steered[:, :n], empty, none, none, ())


def judge_under_patch(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    patch: KVPatch,
    mode: Mode,
    judge: Judge,
    *,
    concept: str,
    instructions: Sequence[str],
    config: GenerationConfig | None = None,
) -> tuple[Generation, list[Rating]]:
    """Regenerate under ``patch`` (:func:`generate_under_patch`) and rate each answer with
    ``judge`` for ``concept``; ``instructions`` are the user prompts, one per row."""
    if len(instructions) != seq.batch.batch_size:
        raise ValueError(f"{len(instructions)} instructions for {seq.batch.batch_size} rows")
    judge.check()
    gen = generate_under_patch(model, seq, vector, patch, mode, config)
    items = [JudgeItem(i, r, concept) for i, r in zip(instructions, gen.texts, strict=True)]
    return gen, judge.rate(items)
