"""Checks for numbers where they enter the library: finite, in range, of the right kind.

Each raises :class:`~prosv_lens.errors.ConfigError` (also a ``ValueError``) naming the field, the
value and the allowed range, and returns the value so a check reads as an assignment. NaN fails
every check (a comparison with NaN is always false, so ranges are written as ``not (ok)``).
"""

import math
from typing import Any

import torch

from prosv_lens.errors import ConfigError


def finite(name: str, value: Any) -> float:
    """``value`` as a float; refuses NaN, infinities, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value.detach())
        else:
            raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    return float(value)


def in_range(
    name: str,
    value: Any,
    low: float | int | None = None,
    high: float | int | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """``value`` finite and within ``[low, high]`` (an open end with ``*_open``; ``None`` =
    unbounded). ``hint`` is appended to the message (e.g. how to get greedy decoding)."""
    x = finite(name, value)
    ok_low = low is None or (x > low if low_open else x >= low)
    ok_high = high is None or (x < high if high_open else x <= high)
    if not (ok_low and ok_high):
        left = "-inf" if low is None else f"{low}"
        right = "inf" if high is None else f"{high}"
        bounds = f"{'(' if low_open or low is None else '['}{left}, {right}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{name} must be in {bounds}, got {x}{'; ' + hint if hint else ''}")
    return x


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def finite_tensor(name: str, tensor: torch.Tensor, fix: str) -> torch.Tensor:
    """``tensor`` if every entry is finite; else a ConfigError saying how many are not."""
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ConfigError(f"{name} has {bad} non-finite value(s) (NaN or inf): {fix}")
    return tensor
