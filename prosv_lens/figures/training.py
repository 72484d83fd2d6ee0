"""Training curves from saved per-step logs: loss, the factor alpha and the direction norm |v|.

Joint training moves alpha far from its init within a few steps when its learning rate is large
enough (the paper's argument for ``lr_alpha`` from scaling theory); these curves show it.
"""

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from prosv_lens.figures.style import color, figure

CURVES = (("loss", "loss"), ("alpha", "factor alpha"), ("v_norm", "|v|"))


def training_curves_figure(logs: Mapping[str, Sequence[Mapping]], title: str = "") -> Figure:
    """One panel per quantity, one line per run.

    Args:
        logs: run name -> its per-step log rows (``step``, ``loss``, ``alpha``, ``v_norm``), e.g.
            ``TrainResult.logs[concept]`` saved as JSON.
        title: figure title.
    """
    if not logs or not any(logs.values()):
        raise ValueError("no training logs to plot")
    fig, axes = figure(2.6, 2.2, ncols=len(CURVES))
    for ax, (key, label) in zip(axes, CURVES, strict=True):
        for i, (name, rows) in enumerate(logs.items()):
            ax.plot(
                [r["step"] for r in rows], [r[key] for r in rows], color=color(name, i), label=name
            )
        ax.set_xlabel("step")
        ax.set_title(label)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig
