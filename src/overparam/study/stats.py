"""Error bars and fitted slopes for the study's figures."""

from __future__ import annotations

import numpy as np

from ..sweep.analysis import fit_power_law, interval


def mean_and_error(samples) -> tuple[float, float]:
    """Mean and its standard error (sd / sqrt(count)); error 0 for one sample."""
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(error)


def power_law(xs, samples_per_x, level: float = 0.95, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit mean(y) ~ C x^p over x, with a bootstrap interval for p from resampling seeds at each x.

    samples_per_x: one array of per-seed values for each x (positive values only are used).
    Returns {"p", "C", "low", "high"} (NaN where fewer than two x have positive means).
    """
    xs = np.asarray(xs, dtype=float)
    groups = [np.asarray(s, dtype=float) for s in samples_per_x]
    groups = [g[np.isfinite(g) & (g > 0)] for g in groups]
    usable = [i for i, g in enumerate(groups) if len(g)]
    if len(usable) < 2:
        return {"p": float("nan"), "C": float("nan"), "low": float("nan"), "high": float("nan")}
    p, c = fit_power_law(xs[usable], [groups[i].mean() for i in usable])
    rng = np.random.default_rng(seed)
    # every bootstrap draw at once: means (len(usable), bootstrap), one least-squares fit per column
    means = np.stack([rng.choice(groups[i], size=(bootstrap, len(groups[i]))).mean(1) for i in usable])
    slopes = np.polyfit(np.log(xs[usable]), np.log(means), 1)[0]
    low, high = interval(slopes, level)
    return {"p": p, "C": c, "low": low, "high": high}


def format_slope(fit: dict) -> str:
    return f"{fit['p']:+.2f} [{fit['low']:+.2f}, {fit['high']:+.2f}]"
