"""Summaries with uncertainty: means with percentile-bootstrap confidence intervals."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with a ``level`` bootstrap confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap CI (AxBench: 1000 resamples, 95%).

    Deterministic for a given ``seed``. One value gives a zero-width interval; no values raise.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size), level)
