"""The threshold of docs/mathematics.md#thresholds as plain loops, for the study tests: an isotonic fit of
success rates by its max-min formula, the seed bootstrap and its percentile interval."""

import math

import numpy as np

BOOTSTRAP = 1000


def isotonic_threshold(widths, rates, level: float) -> float:
    """First width whose isotonic (equal-weight) fit of the rates reaches `level`: the fit at j is
    max_{i <= j} min_{k >= j} mean(rates[i..k])."""
    rates = np.asarray(rates, dtype=float)
    for j, width in enumerate(widths):
        fit = max(min(rates[i:k + 1].mean() for k in range(j, len(rates))) for i in range(j + 1))
        if fit >= level - 1e-12:
            return float(width)
    return math.inf


def bootstrap(widths, outcomes: np.ndarray, level: float, seed: int) -> list[float]:
    """m* of each resample of the seeds (one draw of seeds for every width); outcomes (widths, seeds) of 0/1."""
    seeds = outcomes.shape[1]
    picks = np.random.default_rng(seed).integers(0, seeds, size=(BOOTSTRAP, seeds))
    return [isotonic_threshold(widths, outcomes[:, pick].mean(1), level) for pick in picks]


def percentiles(samples, level: float = 0.95) -> tuple[float, float]:
    """Central interval of the sorted samples by order statistics (floor and ceil of the tail ranks)."""
    ordered = sorted(samples)
    tail = (1 - level) / 2
    return ordered[math.floor(tail * (len(ordered) - 1))], ordered[math.ceil((1 - tail) * (len(ordered) - 1))]
