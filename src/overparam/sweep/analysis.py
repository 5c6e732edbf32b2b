"""Empirical over-parameterisation thresholds (docs/mathematics.md#thresholds) from the runs of a sweep.

For each family of runs (all settings but width and seed: activation, init, n, d, ...):

    optimisation success:  GD reached ||F - y||_2 <= tol within its budget (status "converged")
    kernel success:        ||H(W(0)) - H*||_2 <= lambda / 4, lambda = lambda_min(H*)

rate(m) = successes / runs at width m is fitted by isotonic regression (non-decreasing in m,
weighted by the number of runs), and the threshold m* is the smallest grid width whose fitted
rate is >= 1 - delta. Its interval comes from a bootstrap over seeds: the seeds are resampled
with replacement, the same draw for every width (a seed's networks at different widths share
their first rows, so their outcomes are correlated), the fit and m* recomputed, and the central
percentiles taken. Across n, m* ~ C n^p is fitted by least squares on log m* vs log n; p's
interval comes from refitting on the bootstrap thresholds. A threshold outside the grid is
censored (m* > largest width, or m* <= smallest width) and left out of the fit.

The kernel threshold is measured on nested width profiles (`NestedProfile`: one seed's nested pass,
docs/mathematics.md#nested-widths) by `kernel_thresholds`, the one function the study's threshold section
and `overparam threshold` both call; a store written before sweeps recorded profiles falls back to the
dense kernel distance of each run.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

from .. import theory

KINDS = ("optimization", "kernel")
KERNEL_THEORY = [("n^2 log(n/delta) / lambda^2, the kernel condition", "2+o(1)")]
GD_STATUSES = ("converged", "max_steps", "diverged")


def theory_orders(kind: str, activation: str, init: str) -> list[tuple[str, str]]:
    """(source, exponent) pairs the theory predicts for this threshold (docs/mathematics.md#predictions, #thresholds)."""
    if kind == "kernel":
        return KERNEL_THEORY
    return theory.proven_widths(activation, init) if activation is not None else []


@dataclass
class Threshold:
    """m* of one family: `width` (inf above the grid), bootstrap interval [low, high]."""

    kind: str
    family: dict
    widths: list[int]
    runs: list[int]
    successes: list[int]
    fitted: list[float]
    width: float
    low: float
    high: float
    below_grid: bool
    samples: np.ndarray = field(repr=False)

    @property
    def censored(self) -> bool:
        return self.below_grid or not math.isfinite(self.width)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.family, "threshold": self.width, "low": self.low, "high": self.high,
                "below_grid": self.below_grid, "widths": self.widths, "runs": self.runs,
                "successes": self.successes, "fitted_rate": self.fitted}


@dataclass
class PowerLaw:
    """m* ~ C n^p over the uncensored thresholds of a family (all settings but n)."""

    kind: str
    family: dict
    ns: list[int]
    thresholds: list[float]
    p: float
    C: float
    p_low: float
    p_high: float
    replicates: int
    theory: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.family, "p": self.p, "C": self.C, "p_low": self.p_low,
                "p_high": self.p_high, "n": self.ns, "thresholds": self.thresholds,
                "bootstrap_replicates": self.replicates,
                "theory": [{"source": s, "order": o} for s, o in self.theory]}


@dataclass
class ThresholdReport:
    delta: float
    level: float
    thresholds: list[Threshold]
    fits: list[PowerLaw]

    def to_dict(self) -> dict:
        return {"delta": self.delta, "level": self.level,
                "thresholds": [t.to_dict() for t in self.thresholds], "fits": [f.to_dict() for f in self.fits]}


def monotone_rates(successes, runs) -> np.ndarray:
    """Isotonic (non-decreasing) least-squares fit of successes / runs, weighted by runs.

    successes, runs: (..., W) arrays; leading dimensions are fitted independently.
    """
    successes, runs = np.asarray(successes, dtype=float), np.asarray(runs, dtype=float)
    rates = np.divide(successes, runs, out=np.zeros_like(successes), where=runs > 0)
    flat = rates.reshape(-1, rates.shape[-1])
    weights = np.broadcast_to(runs, rates.shape).reshape(-1, rates.shape[-1])
    fitted = np.array([isotonic_regression(r, weights=w, increasing=True).x for r, w in zip(flat, weights)])
    return fitted.reshape(rates.shape)


def grid_threshold(widths, fitted, level: float) -> np.ndarray:
    """Smallest width whose fitted rate is >= level, inf where none is; fitted (..., W)."""
    widths = np.asarray(widths, dtype=float)
    reached = np.asarray(fitted) >= level - 1e-12
    first = reached.argmax(-1)
    return np.where(reached.any(-1), widths[first], np.inf)


def estimate_threshold(widths, outcomes, delta: float = 0.1, bootstrap: int = 1000,
                       seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """(m*, fitted rates, bootstrap samples of m*) for one family.

    widths increasing, (W,); outcomes (W, S): 1 success, 0 failure, NaN no run of that seed at
    that width. A width left without runs by a resample counts as a failure of weight ~0.
    """
    widths, outcomes = np.asarray(widths), np.asarray(outcomes, dtype=float)
    observed = ~np.isnan(outcomes)
    fitted = monotone_rates(np.nansum(outcomes, -1), observed.sum(-1))
    estimate = float(grid_threshold(widths, fitted, 1 - delta))
    picks = np.random.default_rng(seed).integers(0, outcomes.shape[1], size=(bootstrap, outcomes.shape[1]))
    resampled = outcomes[:, picks].transpose(1, 0, 2)  # (B, W, S)
    runs = (~np.isnan(resampled)).sum(-1)
    successes = np.nansum(resampled, -1)
    samples = grid_threshold(widths, monotone_rates(successes, np.maximum(runs, 1e-12)), 1 - delta)
    return estimate, fitted, samples


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Central percentile interval of bootstrap samples (inf allowed: order statistics)."""
    ordered = np.sort(np.asarray(samples, dtype=float))
    if len(ordered) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low = ordered[int(math.floor(tail * (len(ordered) - 1)))]
    high = ordered[int(math.ceil((1 - tail) * (len(ordered) - 1)))]
    return float(low), float(high)


def fit_power_law(ns, thresholds) -> tuple[float, float]:
    """(p, C) of log m* = log C + p log n by least squares."""
    p, log_c = np.polyfit(np.log(np.asarray(ns, dtype=float)), np.log(np.asarray(thresholds, dtype=float)), 1)
    return float(p), float(math.exp(log_c))


def kernel_condition(distance: float, lam: float) -> bool:
    """||H(W(0)) - H*||_2 <= lambda / 4 (DZPS19 Lemma 3.1; docs/mathematics.md#thresholds)."""
    return distance <= lam / 4


@dataclass
class NestedProfile:
    """One seed's nested pass for a family of runs (its settings but width and seed): ||H(m) - H*||_2 at each
    width m of `widths`, and lam = lambda_min(H*) (`kernels.nested.width_profile`)."""

    family: dict
    seed: int
    widths: list[int]
    distance: list[float]
    lam: float
    error: str | None = None


def kernel_thresholds(profiles: list[NestedProfile], delta: float = 0.1, bootstrap: int = 1000,
                      level: float = 0.95, seed: int = 0) -> ThresholdReport:
    """Kernel thresholds and fits (kind "kernel") from nested profiles: a seed succeeds at width m when
    `kernel_condition` holds there; then as `thresholds_from_rows`."""
    rows = [{"config": {**profile.family, "width": width}, "width": width, "seed": profile.seed, "status": "measured",
             "kernel_distance": distance, "lambda_min": profile.lam}
            for profile in profiles for width, distance in zip(profile.widths, profile.distance)]
    return thresholds_from_rows(rows, delta, bootstrap, level, seed, kinds=("kernel",))


def _successes(rows: list[dict], kind: str) -> list[tuple[dict, int, int, bool]]:
    """(config, width, seed, success) for the runs that count towards `kind`. A run whose lambda_min(H*)
    is rounding (lambda_rounding) is never a success: its kernel numbers, and a theory budget drawn
    from them, are not measurements."""
    out = []
    for row in rows:
        trusted = not row.get("lambda_rounding")
        if kind == "optimization" and row["status"] in GD_STATUSES:
            out.append((row["config"], row["width"], row["seed"], trusted and row["status"] == "converged"))
        elif kind == "kernel" and row["status"] != "running" and row.get("kernel_distance") is not None \
                and row.get("lambda_min") is not None:
            out.append((row["config"], row["width"], row["seed"],
                        trusted and kernel_condition(row["kernel_distance"], row["lambda_min"])))
    return out


def _key(config: dict, *drop: str) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True)


def _labels(keys: list[str], always=("activation", "init", "n", "d")) -> list[dict]:
    """The fields that name each family: the usual ones plus any that vary between families."""
    configs = [json.loads(key) for key in keys]
    varying = {name for name in set().union(*configs) if len({json.dumps(c.get(name)) for c in configs}) > 1}
    shown = [name for name in always if configs and name in configs[0]] + sorted(varying - set(always))
    return [{name: c.get(name) for name in shown} for c in configs]


def thresholds_from_rows(rows: list[dict], delta: float = 0.1, bootstrap: int = 1000, level: float = 0.95,
                         seed: int = 0, kinds=KINDS) -> ThresholdReport:
    """Thresholds and power-law fits from run rows (dicts with config, width, status,
    kernel_distance, lambda_min), as `Store.runs()` returns them."""
    if not (0 < delta < 1):
        raise ValueError(f"delta must be between 0 and 1, got {delta}")
    if not (0 < level < 1):
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1, got {bootstrap}")
    found, fits = [], []
    for kind in kinds:
        tables: dict[str, dict[tuple[int, int], bool]] = defaultdict(dict)
        for config, width, run_seed, success in _successes(rows, kind):
            tables[_key(config, "width")][width, run_seed] = success
        keys = sorted(tables)
        for number, (key, label) in enumerate(zip(keys, _labels(keys))):
            table = tables[key]
            widths = sorted({w for w, _ in table})
            seeds = sorted({s for _, s in table})
            outcomes = np.array([[float(table[w, s]) if (w, s) in table else np.nan for s in seeds] for w in widths])
            runs = [int(n) for n in (~np.isnan(outcomes)).sum(1)]
            wins = [int(n) for n in np.nansum(outcomes, 1)]
            estimate, fitted, samples = estimate_threshold(widths, outcomes, delta, bootstrap, seed + number)
            low, high = interval(samples, level)
            found.append(Threshold(kind, label, widths, runs, wins, [float(f) for f in fitted], estimate, low, high,
                                   math.isfinite(estimate) and estimate <= widths[0], samples))
        fits += _power_laws([t for t in found if t.kind == kind], level)
    return ThresholdReport(delta, level, found, fits)


def _power_laws(found: list[Threshold], level: float) -> list[PowerLaw]:
    series: dict[str, list[Threshold]] = defaultdict(list)
    for threshold in found:
        series[json.dumps({k: v for k, v in threshold.family.items() if k != "n"}, sort_keys=True)].append(threshold)
    fits = []
    for key, members in sorted(series.items()):
        usable = sorted((t for t in members if not t.censored), key=lambda t: t.family["n"])
        if len({t.family["n"] for t in usable}) < 2:
            continue
        ns = [t.family["n"] for t in usable]
        values = [t.width for t in usable]
        p, C = fit_power_law(ns, values)
        replicate = np.stack([t.samples for t in usable], 1)
        keep = np.isfinite(replicate).all(1)
        slopes = [fit_power_law(ns, r)[0] for r in replicate[keep]]
        p_low, p_high = interval(np.array(slopes), level)
        family = json.loads(key)
        fits.append(PowerLaw(members[0].kind, family, ns, values, p, C, p_low, p_high, int(keep.sum()),
                             theory_orders(members[0].kind, family.get("activation"), family.get("init"))))
    return fits


def thresholds(store: str | Path, delta: float = 0.1, bootstrap: int = 1000, level: float = 0.95,
               seed: int = 0, **filters) -> ThresholdReport:
    """Thresholds and fits for the runs in a store (optionally filtered by column = value): the optimisation
    threshold from its runs, the kernel threshold from its nested profiles (`kernel_thresholds`), or from the
    runs' dense kernel distances in a store without profiles."""
    from .store import Store

    path = Path(store)
    if not path.exists():
        raise ValueError(f"store {str(path)!r} does not exist; run `overparam sweep` first")
    with Store(path, create=False) as runs:
        rows = runs.runs(**filters)
        profiles = runs.profiles(**filters)
    if not rows:
        raise ValueError(f"store {str(path)!r} has no runs" + (" matching the filters" if filters else ""))
    if not profiles:
        return thresholds_from_rows(rows, delta, bootstrap, level, seed)
    optimisation = thresholds_from_rows(rows, delta, bootstrap, level, seed, kinds=("optimization",))
    kernel = kernel_thresholds(profiles, delta, bootstrap, level, seed)
    return ThresholdReport(delta, level, optimisation.thresholds + kernel.thresholds, optimisation.fits + kernel.fits)


def _series_label(family: dict) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in family.items() if k not in ("activation", "init", "n"))
    return " ".join(str(family[k]) for k in ("activation", "init") if k in family) + (f", {rest}" if rest else "")


def plot_thresholds(report: ThresholdReport, path: str | Path) -> Path:
    """Log-log figure of m* against n per family, with bootstrap intervals, the fitted n^p and
    reference slopes n^2, n^4, n^6; one panel per threshold kind."""
    import matplotlib

    from .. import plots  # matplotlib loads only when a figure is drawn

    path = Path(path)
    fig, axes = plots.figure(1, len(KINDS), size=(11, 4.5), squeeze=False, sharey=True)
    def family_key(t: Threshold) -> str:
        return json.dumps({k: v for k, v in t.family.items() if k != "n"}, sort_keys=True)

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = sorted({family_key(t) for t in report.thresholds if "n" in t.family})
    color = {key: cycle[i % len(cycle)] for i, key in enumerate(keys)}  # one colour per family in both panels
    for axis, kind in zip(axes[0], KINDS):
        series: dict[str, list[Threshold]] = defaultdict(list)
        for t in report.thresholds:
            if t.kind == kind and "n" in t.family:
                series[family_key(t)].append(t)
        anchor = None
        for key, everyone in sorted(series.items()):
            members = sorted((t for t in everyone if not t.censored), key=lambda t: t.family["n"])
            beyond = sorted((t for t in everyone if t.censored), key=lambda t: t.family["n"])
            if beyond:  # m* is above the largest width measured: drawn there as a lower bound
                spread = 1 + 0.04 * (keys.index(key) - (len(keys) - 1) / 2)  # side by side, not on top
                axis.scatter([t.family["n"] * spread for t in beyond], [max(t.widths) for t in beyond], marker="^",
                             facecolors="none", edgecolors=color[key],
                             label=f"{_series_label(beyond[0].family)}: m* > {max(beyond[0].widths):g}")
            if not members:
                continue
            ns = np.array([t.family["n"] for t in members], dtype=float)
            m = np.array([t.width for t in members])
            # an interval reaching past the grid is drawn up to the largest width measured
            low = np.array([min(t.low, t.width) for t in members])
            high = np.array([min(t.high, max(t.widths)) for t in members])
            line = axis.errorbar(ns, m, yerr=[m - low, np.maximum(high - m, 0)], fmt="o", capsize=3,
                                 color=color[key], label=_series_label(members[0].family))
            fit = next((f for f in report.fits if f.kind == kind
                        and json.dumps(f.family, sort_keys=True) == key), None)
            if fit is not None:
                grid = np.geomspace(ns.min(), ns.max(), 20)
                axis.plot(grid, fit.C * grid**fit.p, color=line[0].get_color(), lw=1,
                          label=f"fit n^{fit.p:.2f} [{fit.p_low:.2f}, {fit.p_high:.2f}]")
            anchor = anchor or (ns[0], m[0], ns.max())
        if anchor is None:
            axis.text(0.5, 0.5, "no threshold inside the width grid", ha="center", transform=axis.transAxes)
        else:
            n0, m0, n1 = anchor
            grid = np.geomspace(n0, max(n1, 2 * n0), 20)
            for order in (2, 4, 6):
                axis.plot(grid, m0 * (grid / n0) ** order, ls="--", color="0.6", lw=0.8)
                axis.annotate(f"n^{order}", (grid[-1], m0 * (grid[-1] / n0) ** order), fontsize=8, color="0.4")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("n (points)")
        axis.set_ylabel(f"m* (rate >= {1 - report.delta:g})")
        axis.set_title(f"{kind} threshold")
        plots.finish(axis, legend=7)
    return plots.save(fig, path)
