"""Figures of the evaluation stage, drawn from saved results only (no model access).

* :func:`steering_scores_figure`: concept / instruct / fluency / overall per method, 95% CIs.
* :func:`tradeoff_figure`: utility (x) against robustness (y) per method, both with CIs; the
  paper's claim is that PrOSV sits high on both while FSSV buys utility back only by shrinking
  its factor, which costs robustness.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from matplotlib.figure import Figure

from prosv_lens.figures.style import color, figure
from prosv_lens.figures.sweeps import SavedEstimate

PANELS = ("concept", "instruct", "fluency", "overall")
MARKERS = ("o", "s", "^", "D", "v")


@runtime_checkable
class SavedScore(Protocol):
    """One method's judged scores, as the figures read them: the attributes of
    :class:`~prosv_lens.evaluation.steering_eval.MethodScore` and of its saved form
    (:class:`~prosv_lens.experiments.demo_results.SavedMethodScore`) that they use."""

    @property
    def method(self) -> str: ...
    @property
    def concept(self) -> SavedEstimate: ...
    @property
    def instruct(self) -> SavedEstimate: ...
    @property
    def fluency(self) -> SavedEstimate: ...
    @property
    def overall(self) -> SavedEstimate: ...


class _JsonScore:
    """Attribute access to the parsed JSON of one method's score (:meth:`MethodScore.to_dict`)
    and of its estimates, for callers holding the JSON rather than the result."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and the like find no such attributes
            raise AttributeError(name)
        value = self._data.get(name)
        return _JsonScore(value) if isinstance(value, Mapping) else value


def as_score(score: SavedScore | Mapping[str, Any]) -> SavedScore:
    """``score`` with the attributes of :class:`SavedScore`: a typed score as it is, the parsed
    JSON of one (a row of ``scores.json``, or of a demo's ``results.json`` ``steering``)
    wrapped (this package cannot import the typed results)."""
    return _JsonScore(score) if isinstance(score, Mapping) else score


def _err(est: SavedEstimate | Mapping[str, Any]) -> tuple[list[float], list[float]]:
    e: SavedEstimate = _JsonScore(est) if isinstance(est, Mapping) else est
    return [e.mean - e.low], [e.high - e.mean]


def steering_scores_figure(
    scores: Sequence[SavedScore | Mapping[str, Any]], title: str = ""
) -> Figure:
    """Bars per method for each judged criterion, with bootstrap CIs.

    Args:
        scores: per-method scores: :class:`SavedScore` objects (``MethodScore``, the typed
            saved score) or their JSON (:meth:`MethodScore.to_dict` rows: ``method`` and an
            estimate object per panel).
        title: figure title (e.g. the concept and model).
    """
    if not scores:
        raise ValueError("no scores to plot")
    shown = [as_score(s) for s in scores]
    fig, axes = figure(1.9, 2.6, ncols=len(PANELS), sharey=True)
    for ax, panel in zip(axes, PANELS, strict=True):
        for i, s in enumerate(shown):
            est: SavedEstimate = getattr(s, panel)
            lo, hi = _err(est)
            ax.bar(i, est.mean, color=color(s.method, i), yerr=[lo, hi], capsize=2)
        ax.set_xticks(range(len(shown)), [s.method for s in shown], rotation=45, ha="right")
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
