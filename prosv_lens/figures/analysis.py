"""Figures of the mechanism analysis, drawn from saved analysis results only (no model access).

* :func:`attention_heatmap_figure`: layer x head, how much more (or less) the answer tokens attend
  to the steered positions when steered, averaged over every answer token.
* :func:`decay_figure`: the steering effect (``KL(steered || unsteered)``) at each answer
  position, one line per variant (PrOSV vs FSSV).
* :func:`knockout_figure`: the effect with and without knocking out attention to the steered
  positions, next to the knock-out's own damage to the unsteered model.
* :func:`kv_path_figure`: the share of the effect that restoring (removed) or injecting
  (recovered) the steered positions' keys, values or both carries, for all layers together, per
  layer and per key/value head.
* :func:`logit_lens_figure` / :func:`logit_lens_table`: the most promoted and suppressed tokens
  of ``alpha * v`` and of the steered-minus-unsteered residual.
* :func:`head_attribution_figure`: layer x head change of each head's direct logit attribution
  to the steered answer's next token.

Every function takes result objects (e.g. read back with ``AttentionFlowResult.load(path)``) and
returns a matplotlib Figure; :func:`prosv_lens.figures.save` writes it as PNG and PDF.
"""

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from prosv_lens.analysis import (
    AttentionFlowResult,
    DecayResult,
    HeadAttributionResult,
    KnockoutResult,
    PathPatchingResult,
    ResidualLensResult,
    VectorLensResult,
)
from prosv_lens.figures.style import color, figure

DIVERGING = "RdBu_r"
MODE_COLORS = {"restore": "#1f77b4", "inject": "#ff7f0e"}
MODE_WORDS = {"restore": "restore: share removed", "inject": "inject: share recovered"}


def _pooled(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over the trailing ``[batch, gen_pos]`` axes, counting only valid entries."""
    n = max(int(valid.sum()), 1)
    return np.asarray((values * valid).sum(axis=(-2, -1)) / n)


def _heatmap(ax, data: np.ndarray, layers: Sequence[int], label: str, *, diverging: bool):  # noqa: ANN001, ANN202 - matplotlib objects
    finite = np.abs(data[np.isfinite(data)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    kw = {"cmap": DIVERGING, "vmin": -vmax, "vmax": vmax} if diverging else {"cmap": "viridis"}
    im = ax.imshow(data, aspect="auto", origin="lower", interpolation="nearest", **kw)
    step = max(1, len(layers) // 10)
    ax.set_yticks(range(0, len(layers), step), [str(x) for x in layers[::step]])
    ax.set_ylabel("layer")
    ax.set_xlabel("head")
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.9)
    return im


def attention_mass(
    flow: AttentionFlowResult, *, steered: bool = True, skip_first_slot: bool = False
) -> np.ndarray:
    """``[layer, head_index]`` attention mass on the steered columns, averaged over every valid
    answer token of every row; ``skip_first_slot`` leaves out the first steered column (usually
    the start token, an attention sink)."""
    slots = flow.slot_steered if steered else flow.slot_unsteered
    mass = slots[..., 1:].sum(-1) if skip_first_slot else slots.sum(-1)
    return _pooled(mass, flow.gen_valid)


def attention_heatmap_figure(
    flow: AttentionFlowResult,
    *,
    show_steered: bool = True,
    skip_first_slot: bool = False,
    title: str = "",
) -> Figure:
    """Layer x head heatmap of the steered-minus-unsteered attention mass on the steered columns.

    Args:
        flow: an :class:`AttentionFlowResult`.
        show_steered: add a panel with the steered run's own mass (how much is read at all).
        skip_first_slot: leave the first steered column (the start-token sink) out of the mass.
        title: figure title.
    """
    diff = attention_mass(flow, skip_first_slot=skip_first_slot) - attention_mass(
        flow, steered=False, skip_first_slot=skip_first_slot
    )
    n_layers, n_heads = diff.shape
    height = 0.9 + 0.16 * n_layers
    width = 1.4 + 0.22 * n_heads
    fig, axes = figure(max(width, 2.8), max(height, 2.2), ncols=2 if show_steered else 1)
    axes = list(axes) if show_steered else [axes]
    sink = " (first one left out)" if skip_first_slot else ""
    _heatmap(axes[0], diff, flow.layers, "steered - unsteered", diverging=True)
    axes[0].set_title(f"change in attention to the steered positions{sink}", fontsize=8)
    if show_steered:
        steered = attention_mass(flow, skip_first_slot=skip_first_slot)
        _heatmap(axes[1], steered, flow.layers, "attention mass", diverging=False)
        axes[1].set_title(f"steered run: attention to the steered positions{sink}", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def decay_figure(decay: DecayResult, *, log_scale: bool = False, title: str = "") -> Figure:
    """Mean ``KL(steered || unsteered)`` at each answer position, one line per variant.

    Position ``t`` on the x axis is the answer token being predicted: 0 is predicted by the last
    prompt column (hollow marker; for ``f2+l2`` that column is itself steered), ``t >= 1`` by the
    column of answer token ``t - 1``.

    Args:
        decay: a :class:`DecayResult`.
        log_scale: logarithmic y axis (the FSSV effect can be orders larger).
        title: figure title.
    """
    fig, ax = figure(4.2, 2.8)
    mean = decay.mean_kl()
    for i, name in enumerate(decay.names):
        c = color(name, i)
        reached = decay.gen_valid[i].any(axis=0)
        x = np.arange(1, mean.shape[1] + 1)[reached]
        ax.plot(x, mean[i][reached], color=c, label=name, lw=1.2)
        ax.plot([0], [decay.prompt_end_kl[i].mean()], "o", mfc="none", color=c)
    ax.set_xlabel("answer token predicted")
    ax.set_ylabel("KL(steered || unsteered), nats")
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    n_rows = decay.gen_valid.shape[1]
    ax.set_title(title or f"effect along the answer ({n_rows} prompts)")
    return fig


def _knockout_label(ko: KnockoutResult) -> str:
    layers = ko.layers
    if not layers:
        where = "no layer"
    elif list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1:
        where = f"L{layers[0]}-{layers[-1]}"
    else:
        where = "L" + ",".join(map(str, layers))
    return f"{where}\n{'renormalised' if ko.renormalize else 'not renormalised'}"


def knockout_figure(
    knockouts: "KnockoutResult | Sequence[KnockoutResult]", title: str = ""
) -> Figure:
    """Bars per knock-out: steering effect without / with it, and its damage to the unsteered run.

    Bars are pooled means over every answer token (nats per token); dots are per-prompt means.

    Args:
        knockouts: one or several :class:`KnockoutResult` (e.g. with and without renormalising).
        title: figure title.
    """
    results = [knockouts] if isinstance(knockouts, KnockoutResult) else list(knockouts)
    if not results:
        raise ValueError("no knock-out results to plot")
    bars = (
        ("kl_effect", "steering effect", "#1f77b4"),
        ("kl_effect_knocked", "effect under knock-out", "#9ecae1"),
        ("kl_damage", "knock-out damage (unsteered)", "#7f7f7f"),
    )
    fig, ax = figure(1.6 + 1.5 * len(results), 2.8)
    width = 0.8 / len(bars)
    for j, (key, label, c) in enumerate(bars):
        for i, ko in enumerate(results):
            values = getattr(ko, key)
            x = i + (j - 1) * width
            ax.bar(
                x,
                float(_pooled(values, ko.gen_valid)),
                width,
                color=c,
                label=label if i == 0 else None,
            )
            n = np.maximum(ko.gen_valid.sum(axis=1), 1)
            per_row = (values * ko.gen_valid).sum(axis=1) / n
            ax.plot(np.full(per_row.shape, x), per_row, ".", color="black", ms=3)
    ax.set_xticks(range(len(results)), [_knockout_label(k) for k in results], fontsize=7)
    ax.set_ylabel("KL per answer token, nats")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "attention knock-out of the steered positions")
    return fig


def _patch_rows(pp: PathPatchingResult, pred) -> list[int]:  # noqa: ANN001 - a predicate
    return [i for i in range(len(pp.labels)) if pred(i)]


def kv_path_figure(pp: PathPatchingResult, *, measure: str = "kl", title: str = "") -> Figure:
    """Share of the steering effect carried by the steered positions' keys and/or values.

    Panels: (1) all layers above ``L`` together, for ``k``, ``v`` and ``kv``; (2) each single
    layer (each component swept); (3) each key/value head of the layers with a head sweep. A
    restore's bar is the share it removes, an injection's the share it recovers (1 = all of it).

    Args:
        pp: a :class:`PathPatchingResult`.
        measure: ``"kl"`` or ``"logprob"`` (see :meth:`PathPatchingResult.fraction_present`).
        title: figure title.
    """
    carried = pp.effect_carried(measure)
    modes = [m for m in ("restore", "inject") if m in pp.modes]
    all_layers = max((len(ls) for ls in pp.patch_layers), default=0)
    heads = [i for i in range(len(pp.labels)) if pp.patch_heads[i] is not None]
    fig, axes = figure(2.6, 2.8, ncols=3 if heads else 2)
    width = 0.8 / max(len(modes), 1)
    # (1) all layers together
    ax = axes[0]
    for j, mode in enumerate(modes):
        for k, comp in enumerate(("k", "v", "kv")):
            rows = _patch_rows(
                pp,
                lambda i, m=mode, c=comp: (
                    pp.modes[i] == m
                    and pp.components[i] == c
                    and len(pp.patch_layers[i]) == all_layers > 1
                    and pp.patch_heads[i] is None
                ),
            )
            if rows:
                ax.bar(k + (j - 0.5) * width, carried[rows[0]], width, color=MODE_COLORS[mode])
    ax.set_xticks(range(3), ["keys", "values", "both"])
    ax.set_title("all layers above L", fontsize=8)
    ax.set_ylabel(f"share of the effect ({measure})")
    # (2) single layers
    ax = axes[1]
    for mode in modes:
        for comp, style in (("kv", "-"), ("k", ":"), ("v", "--")):
            rows = _patch_rows(
                pp,
                lambda i, m=mode, c=comp: (
                    pp.modes[i] == m
                    and pp.components[i] == c
                    and len(pp.patch_layers[i]) == 1
                    and pp.patch_heads[i] is None
                ),
            )
            if rows:
                ax.plot(
                    [pp.patch_layers[i][0] for i in rows],
                    carried[rows],
                    style,
                    marker=".",
                    color=MODE_COLORS[mode],
                    label=f"{mode} {comp}",
                )
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("one layer at a time", fontsize=8)
    ax.legend(fontsize=6)
    # (3) single heads
    if heads:
        ax = axes[2]
        groups = sorted(
            {(pp.patch_layers[i][0], hs) for i in heads if (hs := pp.patch_heads[i]) is not None}
        )
        for j, mode in enumerate(modes):
            for g, (layer, hs) in enumerate(groups):
                rows = [
                    i
                    for i in heads
                    if pp.modes[i] == mode
                    and (pp.patch_layers[i][0], pp.patch_heads[i]) == (layer, hs)
                ]
                if rows:
                    ax.bar(g + (j - 0.5) * width, carried[rows[0]], width, color=MODE_COLORS[mode])
        names = [f"L{ly}h{','.join(map(str, hs))}" for ly, hs in groups]
        ax.set_xticks(range(len(groups)), names, rotation=60, fontsize=7)
        ax.set_title(
            f"one key/value head ({pp.n_heads // pp.n_kv_heads} query heads each)", fontsize=8
        )
    for ax in axes:
        ax.axhline(0, color="black", lw=0.5)
        ax.axhline(1, color="black", lw=0.5, ls=":")
    handles = [Patch(color=MODE_COLORS[m], label=MODE_WORDS[m]) for m in modes]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=len(handles))
    fig.suptitle(title or f"keys vs values of the steered positions (vector at L{pp.layer})")
    return fig


# ----------------------------------------------------------------------------- logit lens


def _byte_alphabet() -> dict[str, int]:
    """The printable stand-ins byte-level BPE tokenizers use for bytes: char -> byte."""
    direct = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, n = {}, 0
    for b in range(256):
        if b in direct:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


_BYTES = _byte_alphabet()


def _has_glyph(ch: str) -> bool:
    """Latin, Greek, Cyrillic and general punctuation: ranges the default font draws."""
    return ord(ch) < 0x0530 or 0x2000 <= ord(ch) < 0x2070


def display_token(token: str) -> str:
    """A readable form of a raw vocabulary string: byte-level BPE decoded to text, the
    sentencepiece space mark turned into a space, then spaces shown as ``␣``, newlines as ``⏎``,
    tabs as ``⇥``, and other control or non-Latin characters escaped (fonts lack them)."""
    if token and all(ch in _BYTES for ch in token):
        token = bytes(_BYTES[ch] for ch in token).decode("utf-8", errors="replace")
    token = token.replace("\u2581", " ").replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return "".join(
        ch if ch in "␣⏎⇥\ufffd" or (ch.isprintable() and _has_glyph(ch)) else f"\\u{ord(ch):04x}"
        for ch in token
    )


def _lens_rows(res: VectorLensResult | ResidualLensResult, k: int) -> tuple[list, list]:
    logits = res.logits if isinstance(res, VectorLensResult) else res.mean_logits
    top = [
        (display_token(t), float(logits[i]))
        for t, i in zip(res.top_tokens, res.top_ids, strict=True)
    ][:k]
    bottom = [
        (display_token(t), float(logits[i]))
        for t, i in zip(res.bottom_tokens, res.bottom_ids, strict=True)
    ][:k]
    return top, bottom


def _lens_name(res: VectorLensResult | ResidualLensResult) -> str:
    if isinstance(res, VectorLensResult):
        return f"alpha·v (L{res.layer}, alpha={res.alpha:.3g})"
    return f"steered - unsteered residual (L{res.read_layer}, at answer tokens)"


def logit_lens_table(results: Sequence[VectorLensResult | ResidualLensResult], k: int = 10) -> str:
    """A markdown table per result: rank, top promoted token and logit, top suppressed and logit."""
    if not results:
        raise ValueError("no logit-lens results for the table")
    parts = []
    for res in results:
        top, bottom = _lens_rows(res, k)
        lines = [f"**{_lens_name(res)}**", "", "| # | promoted | logit | suppressed | logit |"]
        lines.append("|---|---|---|---|---|")
        for r, ((tt, tv), (bt, bv)) in enumerate(zip(top, bottom, strict=True), start=1):
            lines.append(f"| {r} | `{tt}` | {tv:+.3f} | `{bt}` | {bv:+.3f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def logit_lens_figure(
    results: "VectorLensResult | ResidualLensResult | Sequence[VectorLensResult | ResidualLensResult]",
    k: int = 10,
    title: str = "",
) -> Figure:
    """Horizontal bars of the ``k`` most promoted and suppressed tokens, one column per result."""
    items = (
        [results] if isinstance(results, VectorLensResult | ResidualLensResult) else list(results)
    )
    if not items:
        raise ValueError("no logit-lens results to plot")
    fig, axes = figure(2.4, 0.6 + 0.19 * 2 * k, ncols=len(items))
    axes = [axes] if len(items) == 1 else list(axes)
    for ax, res in zip(axes, items, strict=True):
        top, bottom = _lens_rows(res, k)
        rows = top + bottom[::-1]
        y = np.arange(len(rows))[::-1]
        ax.barh(y, [v for _, v in rows], color=["#2ca02c"] * len(top) + ["#d62728"] * len(bottom))
        ax.set_yticks(y, [t for t, _ in rows], fontsize=7)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("logit (lens)")
        ax.set_title(_lens_name(res), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def head_attribution_figure(dla: HeadAttributionResult, title: str = "") -> Figure:
    """Layer x head: steered minus unsteered direct logit attribution of each query head to the
    steered answer's next token, averaged over answer tokens (logit units)."""
    change = dla.mean_head_change()
    fig, ax = figure(max(2.8, 1.4 + 0.22 * change.shape[1]), max(2.2, 0.9 + 0.16 * change.shape[0]))
    _heatmap(ax, change, dla.layers, "change in direct logit attribution", diverging=True)
    ax.set_title(title or "heads that write the steered answer")
    return fig
