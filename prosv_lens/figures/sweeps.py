"""Figures of the hyper-parameter sweeps, drawn from a saved ``sweep.json`` only (no model).

* :func:`heatmap_figure`: factor init ``beta`` (rows of each panel) x factor learning rate
  ``lr_alpha`` (columns), one row of panels per optimizer: held-out response loss and the judged
  overall steering score, each cell annotated; diverged cells are marked "div".
* :func:`position_sweep_figure`: the overall steering score per position spec with its bootstrap
  CI (and the unsteered score as a dashed line), next to the held-out loss.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from prosv_lens.figures.style import FALLBACK, RC, color

SWEEP_KINDS = ("heatmap", "positions")


def _value(cell: dict, what: str) -> float:
    if cell.get("diverged"):
        return math.nan
    return cell["heldout_loss"] if what == "loss" else cell["scores"]["overall"]["mean"]


def _title(sweep: dict, what: str) -> str:
    return f"{what}: {sweep['concept']} — {sweep['model']} L{sweep['layer']}"


def heatmap_figure(sweep: dict) -> Figure:
    """beta x lr_alpha heatmaps of held-out loss and steering score, one row per optimizer.

    Args:
        sweep: a ``sweep.json`` of kind ``heatmap`` (see :mod:`prosv_lens.experiments.sweeps`).
    """
    if sweep.get("kind") != "heatmap" or not sweep.get("cells"):
        raise ValueError("heatmap_figure needs a sweep.json of kind 'heatmap' with cells")
    cfg = sweep["config"]
    betas, lrs = [float(b) for b in cfg["betas"]], [float(x) for x in cfg["lr_alphas"]]
    optimizers = [o for o in cfg["optimizers"] if any(c["optimizer"] == o for c in sweep["cells"])]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            len(optimizers),
            2,
            figsize=(7.2, 2.7 * len(optimizers)),
            squeeze=False,
            layout="constrained",
        )
    base = sweep.get("baseline") or {}
    unsteered = {
        "loss": base.get("heldout_loss"),
        "score": (base.get("scores") or {}).get("overall", {}).get("mean"),
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
    losses = [_value(c, "loss") for c in sweep["cells"]]
    finite = [x for x in losses if math.isfinite(x)]
    loss_range = {"vmin": min(finite), "vmax": max(finite)} if finite else {}
    for row, opt in zip(axes, optimizers, strict=True):
        cells = {(c["beta"], c["lr_alpha"]): c for c in sweep["cells"] if c["optimizer"] == opt}
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
                    text = (
                        ""
                        if cell is None
                        else "div"
                        if cell.get("diverged")
                        else f"{grid[i, j]:.2f}"
                    )
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


def position_sweep_figure(sweep: dict) -> Figure:
    """Overall steering score (95% bootstrap CI) and held-out loss per position spec.

    Args:
        sweep: a ``sweep.json`` of kind ``positions``.
    """
    if sweep.get("kind") != "positions" or not sweep.get("cells"):
        raise ValueError("position_sweep_figure needs a sweep.json of kind 'positions' with cells")
    cells = sweep["cells"]
    names = [c["positions"] for c in cells]
    fam = {"all": "fssv", "f2+l2": "prosv"}
    colors = [
        color(fam.get(n, n), i) if n in fam else FALLBACK[i % len(FALLBACK)]
        for i, n in enumerate(names)
    ]
    with plt.rc_context(RC):
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 2.8), layout="constrained")
    for i, c in enumerate(cells):
        if c.get("diverged"):
            left.text(i, 0.05, "div", ha="center", fontsize=7)
            continue
        est = c["scores"]["overall"]
        err = [[est["mean"] - est["low"]], [est["high"] - est["mean"]]]
        left.bar(i, est["mean"], yerr=err, color=colors[i], capsize=2)
        right.plot(
            i, c["heldout_loss"], "o", color=colors[i], ms=6
        )  # dots: the axis starts near the data
    base = sweep.get("baseline")
    if base:
        left.axhline(base["scores"]["overall"]["mean"], ls="--", color="0.5", label="unsteered")
        right.axhline(base["heldout_loss"], ls="--", color="0.5", label="unsteered")
        left.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlabel("steered positions")
    left.set_ylim(0, 2)
    left.set_ylabel("steering score (0-2)")
    right.margins(x=0.08, y=0.15)
    right.set_ylabel("held-out loss (NLL)")
    fig.suptitle(_title(sweep, f"position sweep ({sweep['config']['preset']} preset)"))
    return fig
