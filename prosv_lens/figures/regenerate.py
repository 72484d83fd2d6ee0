"""Redraw every figure from saved results, without a model (the ``prosv figures`` command).

:func:`regenerate_figures` walks a results folder and draws what it finds:

* ``results.json`` with ``steering`` / ``robustness`` / ``utility`` / ``training`` (a demo or
  evaluation run): steering scores, the utility-robustness trade-off and training curves, each
  drawn when its keys are present;
* saved analysis results (``<stem>.json`` + ``<stem>.npz`` from :meth:`SavedResult.save`, e.g. a
  folder written by :func:`prosv_lens.experiments.analysis.run_attention_analysis`): per folder, one
  attention heatmap per flow result, one decay curve, one knock-out chart for all knock-outs,
  one key-vs-value chart per path-patching result, one logit-lens figure (plus a markdown table)
  for all lenses, one head-attribution heatmap;
* ``sweep.json`` of a hyper-parameter sweep (:mod:`prosv_lens.experiments.sweeps`): kind
  ``heatmap`` gives ``<folder>_heatmap``, kind ``positions`` gives ``<folder>_positions``.

Figures are named ``<folder>_<figure>`` after the results folder relative to ``results_dir``
(``/`` becomes ``_``; the root folder itself gives no prefix), e.g.
``results/attention_ocean/flow.json`` -> ``figures/attention_ocean_attention_heatmap.png``.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from matplotlib.figure import Figure

from prosv_lens.analysis import (
    AttentionFlowResult,
    DecayResult,
    HeadAttributionResult,
    KnockoutResult,
    PathPatchingResult,
    ResidualLensResult,
    SavedResult,
    VectorLensResult,
)
from prosv_lens.errors import FiguresError, ProsvError, ResultFileError  # noqa: F401 - re-exported
from prosv_lens.figures.analysis import (
    attention_heatmap_figure,
    decay_figure,
    head_attribution_figure,
    knockout_figure,
    kv_path_figure,
    logit_lens_figure,
    logit_lens_table,
)
from prosv_lens.figures.evaluation import steering_scores_figure, tradeoff_figure
from prosv_lens.figures.style import save
from prosv_lens.figures.sweeps import (
    SWEEP_KINDS,
    SavedSweep,
    as_sweep,
    heatmap_figure,
    position_sweep_figure,
)
from prosv_lens.figures.training import training_curves_figure
from prosv_lens.safe_io import parse_json_text, read_text_file

KINDS: dict[str, type[SavedResult]] = {
    k.__name__: k
    for k in (
        AttentionFlowResult,
        DecayResult,
        HeadAttributionResult,
        KnockoutResult,
        PathPatchingResult,
        ResidualLensResult,
        VectorLensResult,
    )
}


_R = TypeVar("_R", bound=SavedResult)


def _of_kind(found: dict[str, list[SavedResult]], kind: type[_R]) -> list[_R]:
    """``found``'s results of ``kind`` (grouped under their class name when read)."""
    items: list[_R] = []
    for r in found.get(kind.__name__, []):
        assert isinstance(r, kind), f"{type(r).__name__} filed under {kind.__name__}"
        items.append(r)
    return items


def _saved_kind(path: Path) -> str | None:
    """The result kind of a ``.json`` written by :meth:`SavedResult.save`, else ``None``."""
    if not path.with_suffix(".npz").exists():
        return None
    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    kind = header.get("kind") if isinstance(header, dict) else None
    return kind if kind in KINDS else None


def _read_result(path: Path) -> Any:
    """The JSON of a saved ``results.json`` / ``sweep.json``.

    Raises:
        ResultFileError: it is unreadable, not UTF-8, or not valid JSON (``FILE:LINE``).
    """
    fix = "rerun the command that writes it, or move the file out of the results folder"
    text = read_text_file(path, what="a saved result file", error=ResultFileError)
    return parse_json_text(text, path, fix=fix, error=ResultFileError)


def _prefix(folder: Path, root: Path) -> str:
    rel = folder.relative_to(root).as_posix()
    return "" if rel == "." else rel.replace("/", "_") + "_"


def evaluation_figures(results: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """The figures of one evaluation run's ``results.json`` (those whose keys are present)."""
    title = " — ".join(
        str(results[k]) for k in ("concept", "model") if results.get(k) is not None
    ) + (f" L{results['layer']}" if results.get("layer") is not None else "")
    paths: list[Path] = []
    if results.get("steering"):
        paths += save(
            steering_scores_figure(results["steering"], title), out / f"{prefix}steering_scores"
        )
    if results.get("utility") and results.get("robustness"):
        robust = {s["method"]: s["overall"] for s in results["robustness"]}
        points = [
            {"method": m, "utility": u["accuracy"], "robustness": robust[m]}
            for m, u in results["utility"].items()
            if m in robust
        ]
        if points:
            paths += save(tradeoff_figure(points, title), out / f"{prefix}utility_vs_robustness")
    if results.get("training"):
        logs = {n: t["log"] for n, t in results["training"].items() if t.get("log")}
        if logs:
            paths += save(training_curves_figure(logs, title), out / f"{prefix}training_curves")
    return paths


def analysis_figures(
    found: dict[str, list[SavedResult]], out: Path, prefix: str = ""
) -> list[Path]:
    """The figures of one folder's analysis results, grouped by kind (see module doc)."""
    paths: list[Path] = []

    def many(kind: type[_R], stem: str, draw: Callable[[_R], Figure]) -> None:
        items = _of_kind(found, kind)
        for n, res in enumerate(items):
            suffix = "" if len(items) == 1 else f"_{n + 1}"
            paths.extend(save(draw(res), out / f"{prefix}{stem}{suffix}"))

    many(AttentionFlowResult, "attention_heatmap", attention_heatmap_figure)
    many(DecayResult, "decay", decay_figure)
    many(PathPatchingResult, "kv_paths", kv_path_figure)
    many(HeadAttributionResult, "head_attribution", head_attribution_figure)
    if knockouts := _of_kind(found, KnockoutResult):
        paths += save(knockout_figure(knockouts), out / f"{prefix}knockout")
    lenses: list[VectorLensResult | ResidualLensResult] = [
        *_of_kind(found, VectorLensResult),
        *_of_kind(found, ResidualLensResult),
    ]
    if lenses:
        paths += save(logit_lens_figure(lenses), out / f"{prefix}logit_lens")
        table = out / f"{prefix}logit_lens.md"
        table.write_text(logit_lens_table(lenses))
        paths.append(table)
    return paths


def sweep_figures(sweep: SavedSweep | Any, out: Path, prefix: str = "") -> list[Path]:
    """The figure of one sweep: a :class:`~prosv_lens.experiments.sweep_results.SweepResult`,
    or the parsed JSON of its ``sweep.json`` (none if it is not a sweep or has no cells yet)."""
    if isinstance(sweep, Mapping):
        sweep = as_sweep(sweep)
    if getattr(sweep, "kind", None) not in SWEEP_KINDS or not sweep.cells:
        return []
    if sweep.kind == "heatmap":
        return save(heatmap_figure(sweep), out / f"{prefix}heatmap")
    return save(position_sweep_figure(sweep), out / f"{prefix}positions")


def regenerate_figures(results_dir: str | Path, figures_dir: str | Path) -> list[Path]:
    """Draw every figure that ``results_dir`` (searched recursively) has results for.

    Args:
        results_dir: a folder of saved results (run folders, analysis folders, or both).
        figures_dir: where the PNG + PDF files (and logit-lens markdown tables) go.

    Returns:
        Every file written, in a stable order. Nothing here touches a model.

    Raises:
        FiguresError: ``results_dir`` does not exist or holds no results this module can draw.
    """
    root, out = Path(results_dir), Path(figures_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise FiguresError(f"results folder {root} {what}: pass the folder of saved results")
    analysis: dict[Path, dict[str, list[SavedResult]]] = defaultdict(lambda: defaultdict(list))
    runs: list[Path] = []
    sweeps: list[Path] = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "results.json":
            runs.append(path)
        elif path.name == "sweep.json":
            sweeps.append(path)
        elif (kind := _saved_kind(path)) is not None:
            analysis[path.parent][kind].append(KINDS[kind].load(path))
    written: list[Path] = []
    for path in runs:
        data = _read_result(path)
        if isinstance(data, dict):
            written += evaluation_figures(data, out, _prefix(path.parent, root))
    for folder in sorted(analysis):
        written += analysis_figures(analysis[folder], out, _prefix(folder, root))
    for path in sweeps:
        written += sweep_figures(_read_result(path), out, _prefix(path.parent, root))
    if not written:
        raise FiguresError(
            f"no results to draw under {root}: expected results.json files of evaluation runs, "
            "sweep.json files of sweeps, or analysis results saved with .save() (e.g. by prosv "
            "analyse)"
        )
    return written
