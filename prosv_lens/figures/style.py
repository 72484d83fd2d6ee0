"""One plotting style for every figure: a fixed palette per method, paper-sized axes, PNG + PDF.

Plotting code never touches a model: every function takes saved results (dicts / result objects
read from disk) and returns a matplotlib Figure; :func:`save` writes it as PNG and PDF.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files (CI, servers); notebooks still display them

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType  # matplotlib >= 3.11: the rcParams names

METHOD_COLORS = {
    "unsteered": "#7f7f7f",
    "prompt": "#9467bd",
    "diffmean": "#8c564b",
    "prosv": "#1f77b4",
    "fssv": "#d62728",
}
FALLBACK = ("#2ca02c", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2")
RC: "dict[RcKeyType, Any]" = {
    "figure.dpi": 120,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def color(method: str, index: int = 0) -> str:
    """The method's colour: keyed by its family (``"fssv 50%"`` -> the FSSV red)."""
    family = method.lower().split()[0].split("(")[0].split("-")[0]
    return METHOD_COLORS.get(family, FALLBACK[index % len(FALLBACK)])


def figure(
    width: float = 4.0, height: float = 2.8, ncols: int = 1, *, sharey: bool = False
) -> tuple:
    """A new figure in the house style: ``(fig, axes)`` (one axis, or a row of ``ncols``)."""
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            1,
            ncols,
            figsize=(width * ncols, height),
            squeeze=False,
            sharey=sharey,
            layout="constrained",
        )
    return fig, axes[0] if ncols > 1 else axes[0][0]


def save(fig: "plt.Figure", path: str | Path) -> list[Path]:
    """Write ``path`` with ``.png`` and ``.pdf`` suffixes (folder created); closes the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with plt.rc_context(RC):
        for suffix in (".png", ".pdf"):
            target = path.with_suffix(suffix)
            # No creation date in PDFs: redrawing the same results gives the same bytes.
            meta = {"CreationDate": None} if suffix == ".pdf" else None
            fig.savefig(target, bbox_inches="tight", metadata=meta)
            out.append(target)
    plt.close(fig)
    return out
