"""Figures of the evaluation stage, drawn from saved results only (no model access).

* :func:`steering_scores_figure`: concept / instruct / fluency / overall per method, 95% CIs.
* :func:`tradeoff_figure`: utility (x) against robustness (y) per method, both with CIs; the
  paper's claim is that PrOSV sits high on both while FSSV buys utility back only by shrinking
  its factor, which costs robustness.
"""

from collections.abc import Sequence

from matplotlib.figure import Figure

from prosv_lens.figures.style import color, figure

PANELS = ("concept", "instruct", "fluency", "overall")
MARKERS = ("o", "s", "^", "D", "v")


def _err(est: dict) -> tuple[list[float], list[float]]:
    return [est["mean"] - est["low"]], [est["high"] - est["mean"]]


def steering_scores_figure(scores: Sequence[dict], title: str = "") -> Figure:
    """Bars per method for each judged criterion, with bootstrap CIs.

    Args:
        scores: :meth:`MethodScore.to_dict` rows (``method`` and an estimate dict per panel).
        title: figure title (e.g. the concept and model).
    """
    if not scores:
        raise ValueError("no scores to plot")
    fig, axes = figure(1.9, 2.6, ncols=len(PANELS), sharey=True)
    for ax, panel in zip(axes, PANELS, strict=True):
        for i, s in enumerate(scores):
            est = s[panel]
            lo, hi = _err(est)
            ax.bar(i, est["mean"], color=color(s["method"], i), yerr=[lo, hi], capsize=2)
        ax.set_xticks(range(len(scores)), [s["method"] for s in scores], rotation=45, ha="right")
        ax.set_ylim(0, 2)
        ax.set_title(panel)
    axes[0].set_ylabel("judge rating (0-2)")
    if title:
        fig.suptitle(title)
    return fig


def tradeoff_figure(points: Sequence[dict], title: str = "") -> Figure:
    """Utility accuracy (x) vs robustness score (y), one point per method.

    Args:
        points: ``{"method", "utility": estimate dict, "robustness": estimate dict}`` rows.
        title: figure title.
    """
    if not points:
        raise ValueError("no points to plot")
    fig, ax = figure(3.6, 3.0)
    seen: dict[str, int] = {}
    for i, p in enumerate(points):
        u, r = p["utility"], p["robustness"]
        c = color(p["method"], i)
        seen[c] = seen.get(c, -1) + 1  # variants of one family (fssv 80%, 50%): new markers
        marker = MARKERS[seen[c] % len(MARKERS)]
        ax.errorbar(
            u["mean"],
            r["mean"],
            xerr=list(_err(u)),
            yerr=list(_err(r)),
            fmt=marker,
            color=c,
            capsize=2,
            label=p["method"],
        )
    ax.set_xlabel("utility accuracy")
    ax.set_ylabel("robustness (judge overall, 0-2)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return fig
