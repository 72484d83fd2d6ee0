"""Figures drawn from saved results (never from a model), in one style, saved as PNG and PDF."""

from prosv_lens.figures.evaluation import steering_scores_figure, tradeoff_figure
from prosv_lens.figures.style import save
from prosv_lens.figures.training import training_curves_figure

__all__ = ["save", "steering_scores_figure", "tradeoff_figure", "training_curves_figure"]

from prosv_lens.figures.analysis import (  # noqa: E402 - added after the evaluation exports
    attention_heatmap_figure,
    decay_figure,
    head_attribution_figure,
    knockout_figure,
    kv_path_figure,
    logit_lens_figure,
    logit_lens_table,
)
from prosv_lens.figures.regenerate import FiguresError, regenerate_figures  # noqa: E402

__all__ += [
    "FiguresError",
    "attention_heatmap_figure",
    "decay_figure",
    "head_attribution_figure",
    "knockout_figure",
    "kv_path_figure",
    "logit_lens_figure",
    "logit_lens_table",
    "regenerate_figures",
]

from prosv_lens.figures.sweeps import heatmap_figure, position_sweep_figure  # noqa: E402

__all__ += ["heatmap_figure", "position_sweep_figure"]
