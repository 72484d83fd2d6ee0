"""Figures drawn from saved results (never from a model), in one style, saved as PNG and PDF."""

from prosv_lens.figures.evaluation import steering_scores_figure, tradeoff_figure
from prosv_lens.figures.style import save
from prosv_lens.figures.training import training_curves_figure

__all__ = ["save", "steering_scores_figure", "tradeoff_figure", "training_curves_figure"]
