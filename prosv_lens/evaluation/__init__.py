"""Evaluation: judges, steering evaluation, utility under steering and robustness."""

from prosv_lens.evaluation.judges import CRITERIA, Judge, JudgeItem, Rating, harmonic_mean

__all__ = ["CRITERIA", "Judge", "JudgeItem", "Rating", "harmonic_mean"]
