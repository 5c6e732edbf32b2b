"""Thresholds over data draws as a random factor (docs/mathematics.md#thresholds).

At each n a threshold is measured on D independent data draws with S weight seeds each: outcomes
(D, widths, S) of 1 (success), 0 (failure) or NaN (no run). Each draw has its own threshold m*_j, the
smallest grid width whose isotonic fit of the success rate over its seeds reaches the level 1 - delta
(`sweep.analysis.monotone_rates`). The pooled threshold is their median taken on the log scale,

    m*(n) = exp(median_j log m*_j),

(the middle draw for odd D, the geometric mean of the two middle draws for even D; inf where at least
half the draws lie beyond the grid). Its interval comes from a hierarchical bootstrap: a replicate
resamples the D draws with replacement, then the S seeds within each resampled draw with replacement,
recomputes each draw's threshold and takes the log-median. Data draws are nested in n (the first n points
of a draw at 2n are the draw at n), so one replicate uses the same resampled draws and seeds at every n of
a series, and its thresholds along n give replicates of the exponents.
"""

from __future__ import annotations

import math

import numpy as np

from ..sweep.analysis import grid_threshold, interval, monotone_rates

BOOTSTRAP = 1000
LEVEL = 0.95


def draw_thresholds(widths, outcomes, level: float) -> np.ndarray:
    """m*_j of each draw: outcomes (..., widths, seeds) -> (...); inf above the grid. A width no seed ran
    counts as a failure of weight ~0 (`sweep.analysis.estimate_threshold`)."""
    outcomes = np.asarray(outcomes, dtype=float)
    runs = (~np.isnan(outcomes)).sum(-1)
    fitted = monotone_rates(np.nansum(outcomes, -1), np.maximum(runs, 1e-12))
    return grid_threshold(widths, fitted, level)


def log_median(values, axis: int = -1) -> np.ndarray:
    """exp(median(log values)) along `axis` (inf stays inf)."""
    with np.errstate(divide="ignore"):
        return np.exp(np.median(np.log(np.asarray(values, dtype=float)), axis=axis))


def hierarchical_replicates(widths, series, level: float, seed, bootstrap: int = BOOTSTRAP) -> np.ndarray:
    """Pooled thresholds of `bootstrap` replicates, (bootstrap, len(series)).

    series: one outcomes array (D, widths, S) per n, the same D draws and S seeds at every n. With
    rng = numpy.random.default_rng(seed): draws = rng.integers(0, D, (bootstrap, D)), then
    seeds = rng.integers(0, S, (bootstrap, D, S)); replicate b uses draw draws[b, j] with its seeds
    seeds[b, j] in place of draw j, at every n.
    """
    arrays = [np.asarray(o, dtype=float) for o in series]
    D, _, S = arrays[0].shape
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, D, size=(bootstrap, D))
    seeds = rng.integers(0, S, size=(bootstrap, D, S))
    pooled = []
    for outcomes in arrays:
        resampled = outcomes[draws[:, :, None, None], np.arange(outcomes.shape[1])[None, None, :, None],
                             seeds[:, :, None, :]]  # (bootstrap, D, widths, S)
        pooled.append(log_median(draw_thresholds(widths, resampled, level)))
    return np.stack(pooled, 1)


def local_exponents(ns, pooled, replicates) -> list[tuple[float, float, float, int]]:
    """(exponent, low, high, replicates used) of log(m*(n_{i+1}) / m*(n_i)) / log(n_{i+1} / n_i) for each
    successive pair; NaN where either pooled m* is beyond the grid. In a replicate, a threshold beyond the
    grid at the larger n gives +inf, at the smaller n -inf (order statistics keep them), at both: left out."""
    rows = []
    for i in range(len(ns) - 1):
        step = math.log(ns[i + 1] / ns[i])
        if not (math.isfinite(pooled[i]) and math.isfinite(pooled[i + 1])):
            rows.append((math.nan, math.nan, math.nan, 0))
            continue
        low, high = replicates[:, i], replicates[:, i + 1]
        keep = np.isfinite(low) | np.isfinite(high)
        with np.errstate(invalid="ignore"):
            slopes = np.where(np.isinf(high), np.inf, np.where(np.isinf(low), -np.inf,
                                                                np.log(high / low) / step))[keep]
        a, b = interval(slopes, LEVEL)
        rows.append((math.log(pooled[i + 1] / pooled[i]) / step, a, b, int(keep.sum())))
    return rows


def least_squares(design, values, replicates) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Coefficients of log m* = design @ beta by least squares, and their percentile intervals from the
    replicates (bootstrap, points) whose thresholds are all finite: (beta, low, high, replicates used)."""
    design = np.asarray(design, dtype=float)
    beta = np.linalg.lstsq(design, np.log(values), rcond=None)[0]
    keep = np.isfinite(replicates).all(1)
    if keep.any():
        fitted = np.linalg.lstsq(design, np.log(replicates[keep]).T, rcond=None)[0].T  # (used, parameters)
        bounds = np.array([interval(column, LEVEL) for column in fitted.T])
    else:
        bounds = np.full((len(beta), 2), math.nan)
    return beta, bounds[:, 0], bounds[:, 1], int(keep.sum())
