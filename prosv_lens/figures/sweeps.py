"""Figures of the hyper-parameter sweeps, drawn from a saved ``sweep.json`` only (no model).

* :func:`heatmap_figure`: factor init ``beta`` (rows of each panel) x factor learning rate
  ``lr_alpha`` (columns), one row of panels per optimizer: held-out response loss and the judged
  overall steering score, each cell annotated; diverged cells are marked "div".
* :func:`position_sweep_figure`: the overall steering score per position spec with its bootstrap
  CI (and the unsteered score as a dashed line), next to the held-out loss.

Both take a :class:`~prosv_lens.experiments.sweep_results.SweepResult` (anything with the
attributes of :class:`SavedSweep`), or the parsed JSON of a ``sweep.json``.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from prosv_lens.figures.style import FALLBACK, RC, color

SWEEP_KINDS = ("heatmap", "positions")


@runtime_checkable
class SavedEstimate(Protocol):
    """A judged score with its CI, as the figures read it
    (:class:`~prosv_lens.evaluation.stats.Estimate`)."""

    @property
    def mean(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...


@runtime_checkable
class SavedSweepBaseline(Protocol):
    """The unsteered model of a sweep, as the figures read it
    (:class:`~prosv_lens.experiments.sweep_results.SweepBaseline`)."""

    @property
    def heldout_loss(self) -> float: ...
    @property
    def scores(self) -> Mapping[str, SavedEstimate]: ...


@runtime_checkable
class SavedSweepCell(Protocol):
    """One sweep cell, as the figures read it
    (:class:`~prosv_lens.experiments.sweep_results.SweepCell`)."""

    @property
    def key(self) -> str: ...
    @property
    def diverged(self) -> str | None: ...
    @property
    def optimizer(self) -> str | None: ...
    @property
    def beta(self) -> float | None: ...
    @property
    def lr_alpha(self) -> float | None: ...
    @property
    def positions(self) -> str | None: ...
    @property
    def heldout_loss(self) -> float | None: ...
    @property
    def scores(self) -> Mapping[str, SavedEstimate] | None: ...


@runtime_checkable
class SavedSweep(Protocol):
    """A sweep as the figures read it: the attributes of
    :class:`~prosv_lens.experiments.sweep_results.SweepResult` they use."""

    @property
    def kind(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def model(self) -> str: ...
    @property
    def concept(self) -> str: ...
    @property
    def layer(self) -> int: ...
    @property
    def baseline(self) -> SavedSweepBaseline | None: ...
    @property
    def cells(self) -> Sequence[SavedSweepCell]: ...


class _JsonView:
    """Attribute access to the parsed JSON of a ``sweep.json``, its baseline or one of its cells
    (a key it lacks reads as ``None``, as the typed result's optional fields do), for callers
    holding the JSON rather than the result."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        value = self._data.get(name)
        if name == "scores" and isinstance(value, Mapping):
            return {k: _JsonView(v) for k, v in value.items()}
        if name == "baseline" and isinstance(value, Mapping):
            return _JsonView(value)
        if name == "cells" and isinstance(value, list):
            return tuple(_JsonView(c) for c in value)
        return value


def as_sweep(sweep: SavedSweep | Mapping[str, Any]) -> SavedSweep:
    """``sweep`` with the attributes of :class:`SavedSweep`: a typed result as it is, the parsed
    JSON of a ``sweep.json`` wrapped (this package cannot import the typed result, so
    :func:`~prosv_lens.figures.regenerate.regenerate_figures` reads the JSON)."""
    return _JsonView(sweep) if isinstance(sweep, Mapping) else sweep


def _value(cell: SavedSweepCell, what: str) -> float:
    if cell.diverged:
        return math.nan
    x = (
        cell.heldout_loss
        if what == "loss"
        else cell.scores["overall"].mean
        if cell.scores
        else None
    )
    return math.nan if x is None else x


def _title(sweep: SavedSweep, what: str) -> str:
    return f"{what}: {sweep.concept} — {sweep.model} L{sweep.layer}"


def heatmap_figure(sweep: SavedSweep | Mapping[str, Any]) -> Figure:
    """beta x lr_alpha heatmaps of held-out loss and steering score, one row per optimizer.

    Args:
        sweep: a sweep of kind ``heatmap`` (a
            :class:`~prosv_lens.experiments.sweep_results.SweepResult`, or the parsed JSON of
            its ``sweep.json``; see :mod:`prosv_lens.experiments.sweeps`).
    """
    sweep = as_sweep(sweep)
    if sweep.kind != "heatmap" or not sweep.cells:
        raise ValueError("heatmap_figure needs a sweep.json of kind 'heatmap' with cells")
    cfg = sweep.config
    betas, lrs = [float(b) for b in cfg["betas"]], [float(x) for x in cfg["lr_alphas"]]
    optimizers = [o for o in cfg["optimizers"] if any(c.optimizer == o for c in sweep.cells)]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            len(optimizers),
            2,
            figsize=(7.2, 2.7 * len(optimizers)),
            squeeze=False,
            layout="constrained",
        )
    base = sweep.baseline
    unsteered = {
        "loss": None if base is None else base.heldout_loss,
        "score": None if base is None else base.scores["overall"].mean,
    }
    panels = tuple(
        (
            what,
            label + ("" if unsteered[what] is None else f", unsteered {unsteered[what]:.2f}"),
            cmap,
        )
        for what, label, cmap in (
            ("loss", "held-out loss (NLL)", "viridis_r"),
            ("score", "steering score (0-2)", "viridis"),
        )
    )
    # One loss scale for every optimizer row, so rows compare by colour.
    losses = [_value(c, "loss") for c in sweep.cells]
    finite = [x for x in losses if math.isfinite(x)]
    loss_range = {"vmin": min(finite), "vmax": max(finite)} if finite else {}
    for row, opt in zip(axes, optimizers, strict=True):
        cells = {(c.beta, c.lr_alpha): c for c in sweep.cells if c.optimizer == opt}
        for ax, (what, label, cmap) in zip(row, panels, strict=True):
            grid = np.full((len(betas), len(lrs)), math.nan)
            for i, b in enumerate(betas):
                for j, lr in enumerate(lrs):
                    if (b, lr) in cells:
                        grid[i, j] = _value(cells[(b, lr)], what)
            kw = {"vmin": 0.0, "vmax": 2.0} if what == "score" else loss_range
            im = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto", **kw)
            for i, b in enumerate(betas):
                for j, lr in enumerate(lrs):
                    cell = cells.get((b, lr))
                    text = "" if cell is None else "div" if cell.diverged else f"{grid[i, j]:.2f}"
                    red, green, blue, _ = im.cmap(im.norm(grid[i, j]))  # dark text on light cells
                    ink = "k" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "w"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=ink)
            ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs])
            ax.set_yticks(range(len(betas)), [f"{x:g}" for x in betas])
            ax.set_xlabel("factor learning rate lr_alpha")
            ax.set_ylabel("factor init beta")
            ax.set_title(f"{opt}: {label}")
            fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(_title(sweep, f"factor init x factor LR ({cfg['positions']})"))
    return fig


def position_sweep_figure(sweep: SavedSweep | Mapping[str, Any]) -> Figure:
    """Overall steering score (95% bootstrap CI) and held-out loss per position spec.

    Args:
        sweep: a sweep of kind ``positions`` (a
            :class:`~prosv_lens.experiments.sweep_results.SweepResult`, or the parsed JSON of
            its ``sweep.json``).
    """
    sweep = as_sweep(sweep)
    if sweep.kind != "positions" or not sweep.cells:
        raise ValueError("position_sweep_figure needs a sweep.json of kind 'positions' with cells")
    cells = sweep.cells
    names = [str(c.positions) for c in cells]
    fam = {"all": "fssv", "f2+l2": "prosv"}
    colors = [
        color(fam.get(n, n), i) if n in fam else FALLBACK[i % len(FALLBACK)]
        for i, n in enumerate(names)
    ]
    with plt.rc_context(RC):
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 2.8), layout="constrained")
    for i, c in enumerate(cells):
        if c.diverged or c.scores is None:
            left.text(i, 0.05, "div", ha="center", fontsize=7)
            continue
        est = c.scores["overall"]
        err = [[est.mean - est.low], [est.high - est.mean]]
        left.bar(i, est.mean, yerr=err, color=colors[i], capsize=2)
        right.plot(
            i, _value(c, "loss"), "o", color=colors[i], ms=6
        )  # dots: the axis starts near the data
    base = sweep.baseline
    if base is not None:
        left.axhline(base.scores["overall"].mean, ls="--", color="0.5", label="unsteered")
        right.axhline(base.heldout_loss, ls="--", color="0.5", label="unsteered")
        left.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlabel("steered positions")
    left.set_ylim(0, 2)
    left.set_ylabel("steering score (0-2)")
    right.margins(x=0.08, y=0.15)
    right.set_ylabel("held-out loss (NLL)")
    fig.suptitle(_title(sweep, f"position sweep ({sweep.config['preset']} preset)"))
    return fig
