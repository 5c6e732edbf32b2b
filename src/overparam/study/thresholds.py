"""Section (d): the two width thresholds m*(n), their exponents, the input dimension, and the proven widths
(docs/mathematics.md#thresholds, #nested-widths).

Every (n, d) point is measured on `draws` independent data draws (data seed j for draw j) with `seeds`
weight seeds each (draw j: seeds j * SEED_STRIDE + 0..seeds-1). Optimisation threshold: GD at increasing
widths (`sweeps.WidthScan`, one unit per activation, n, d and draw, its runs in the study's runs.db) with a
step budget scaled by the predicted rate; a seed's scan ends once GD reached the target at two successive
widths. Kernel threshold (||H(W(0)) - H*||_2 <= lambda/4): the nested-width pass (`overparam.kernels.nested`)
over `kernel_widths`, one unit per activation, draw and seed for every n (`KernelScan`). Each draw has its own
threshold; the pooled m*(n) is their median, with a hierarchical bootstrap interval (`draws`). The
exponents: m* ~ C n^p over n, local exponents between successive n, and m*_opt ~ C n^p d^q over the
input dimension. lambda(n) = lambda_min(H*) on draw 0 up to `lambda_ns`, and the proven widths (theory.py,
every constant 1: orders of growth) evaluated at the measured lambda(n), delta and n, drawn on the same axes.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .. import activations, data, plots, theory
from ..models import initial_weights
from ..kernels.nested import width_profile
from ..kernels.spectra import lambda_min
from ..sweep.analysis import estimate_threshold, fit_power_law, interval, kernel_condition, theory_orders
from ..sweep.executors import torch_threads
from ..sweep.spec import DEFAULTS
from . import draws as pooled
from .framework import (Plot, Report, SectionConfig, StudySection, Unit, require_even, require_grid,
                        require_positive, require_seeds, table)
from .report import Fact
from .stats import power_law
from .sweeps import WidthScan, scan_outcomes

DATA = "sphere"
SEED_STRIDE = 1000  # draw j's weight seeds are j * SEED_STRIDE + 0..seeds-1
FIRST_PASS = 5  # without a smaller n to start from, a kernel scan's first pass ends at the 6th width


@dataclass(frozen=True)
class Config(SectionConfig):
    """ns: the n of the optimisation threshold; kernel_ns: the n of the kernel threshold; widths: GD's widths;
    draws: independent data draws per point; seeds: weight seeds per draw; budget: the step budget rule
    (`theory:c` = c times the predicted steps) capped at max_steps; kernel_widths: the nested pass's widths;
    dimension_ds, dimension_ns: the input dimensions and n of the d-axis (optimisation threshold);
    lambda_ns: where lambda(n) = lambda_min(H*) is measured (draw 0)."""

    ns: tuple[int, ...] = (8, 16, 32, 64)
    kernel_ns: tuple[int, ...] = (8, 16, 32, 64, 128)
    widths: tuple[int, ...] = tuple(2**p for p in range(1, 11))
    draws: int = 4
    seeds: int = 2
    budget: str = "theory:3"
    max_steps: int = 8000
    kernel_widths: tuple[int, ...] = tuple(2**p for p in range(6, 23))
    dimension_ds: tuple[int, ...] = (8, 16, 32)  # d = 4 (in paper and full) took 300 of the quick study's 770 s
    dimension_ns: tuple[int, ...] = (16, 32)
    lambda_ns: tuple[int, ...] = tuple(2**p for p in range(3, 12))

    def check(self) -> None:
        require_grid("ns", self.ns, minimum=2)
        require_grid("kernel_ns", self.kernel_ns, minimum=2)
        require_grid("widths", self.widths)
        require_grid("kernel_widths", self.kernel_widths)
        require_grid("dimension_ds", self.dimension_ds)
        require_grid("dimension_ns", self.dimension_ns)
        require_grid("lambda_ns", self.lambda_ns)
        require_positive("draws", self.draws)
        require_seeds("seeds", self.seeds)
        if self.seeds > SEED_STRIDE:
            raise ValueError(f"seeds must be at most {SEED_STRIDE} (each draw's seeds are numbered from "
                             f"draw * {SEED_STRIDE}), got {self.seeds}")
        require_positive("max_steps", self.max_steps)

    def check_with(self, core) -> None:
        require_even("widths", self.widths, core.init)
        require_even("kernel_widths", self.kernel_widths, core.init)


def lambda_points(cfg: Config) -> list[int]:
    """The n at which lambda(n) is measured: `lambda_ns` and the thresholds' n."""
    return sorted(set(cfg.lambda_ns) | set(cfg.ns) | set(cfg.kernel_ns))


def data_seed(draw: int) -> int:
    return DEFAULTS["data_seed"] + draw


def weight_seeds(draw: int, seeds: int) -> tuple[int, ...]:
    return tuple(draw * SEED_STRIDE + s for s in range(seeds))


def sweep_inputs(n: int, d: int, draw: int = 0) -> torch.Tensor:
    """Data draw `draw` at n: the sweep's data with data seed `data_seed(draw)`; the first n points of the
    draw at 2n are the draw at n (nested)."""
    return torch.from_numpy(data.builtin(DATA, n, d, 1, data_seed(draw)).X)


def dimension_points(study, cfg: Config) -> list[tuple[int, int]]:
    """Every (n, d) at which the optimisation threshold is measured: the n-axis at the study's d, the d-axis."""
    points = {(n, study.d) for n in cfg.ns} | {(n, d) for n in cfg.dimension_ns for d in cfg.dimension_ds}
    return sorted(points, key=lambda point: (point[1] != study.d, point[1], point[0]))


# ------------------------------------------------------------------------------------- units


@dataclass
class KernelScanRecord:
    """At n: ||H(m) - H*||_2 at the grid's first len(distance) widths of one seed's nested pass, lam =
    lambda_min(H*); skipped: not measured, as the condition held at no width at the next smaller n (then it
    cannot hold here)."""

    n: int
    distance: list[float]
    lam: float
    skipped: bool


@dataclass
class KernelScanRecords:
    scans: list[KernelScanRecord]


@functools.lru_cache(maxsize=1)
def _weights(width: int, d: int, init: str, sigma: float, seed: int, device: str):
    """One seed's W(0) at the largest width (its first m rows are the network of width m), kept for the
    next unit: the units run seed by seed."""
    return initial_weights(width, d, 1, init, sigma, seed, device=device)


def held_twice(distance, lam: float) -> int | None:
    """The first index i with the condition distance <= lam/4 held at widths i-1 and i, None if none."""
    held = [kernel_condition(value, lam) for value in distance]
    return next((i for i in range(1, len(held)) if held[i - 1] and held[i]), None)


def kernel_outcomes(widths, record: KernelScanRecord) -> np.ndarray:
    """(widths,) outcomes of one seed's scan: measured widths by the condition; above them 0 for a skipped
    scan, 1 for a scan that ended after the condition held at two successive widths."""
    measured = [float(kernel_condition(value, record.lam)) for value in record.distance]
    fill = 0.0 if record.skipped or len(measured) == len(widths) else 1.0
    return np.array(measured + [fill] * (len(widths) - len(measured)))


@dataclass(frozen=True)
class KernelScan(Unit):
    """The kernel condition along `widths` at each n of `ns` (increasing) for one seed on one data draw, by
    nested passes over a W(0) drawn once at the largest width. The pass at n ends once the condition held at
    two successive widths: the first pass reaches 3 widths above where it first held at the previous n
    (below that width it cannot hold: ||H - H*||_2 of the first n/2 points is at most that of n points, and
    lambda_min(H*) at n at most that at n/2), or FIRST_PASS at the first n; each further pass 2 widths more.
    Where it held at no width at the previous n, the scan at n is skipped (`KernelScanRecord.skipped`)."""

    RECORD = KernelScanRecords
    VERSION = 2  # the mixed-precision nested pass (float32 chunk products, float64 sums)

    activation: str
    ns: tuple[int, ...]
    d: int
    draw: int
    seed: int
    sigma: float
    init: str
    widths: tuple[int, ...]

    def compute(self, ctx) -> KernelScanRecords:
        scans = []
        for n in self.ns:
            last = FIRST_PASS
            if scans:
                held = np.flatnonzero(kernel_outcomes(self.widths, scans[-1]))
                if not len(held):
                    scans.append(KernelScanRecord(n, [], math.nan, True))
                    continue
                last = int(held[0]) + 3
            scans.append(self.scan(n, last, ctx.device))
        return KernelScanRecords(scans)

    def scan(self, n: int, last: int, device: str) -> KernelScanRecord:
        X = sweep_inputs(n, self.d, self.draw)
        weights = _weights(max(self.widths), self.d, self.init, self.sigma, self.seed, device)
        # One torch thread, as the sweep's tasks: at n <= 128 the GEMMs are small, and on 2 cores under
        # load a second thread made the passes 2-6x slower.
        with torch_threads(1):
            while True:
                last = min(last, len(self.widths) - 1)
                found = width_profile(X, self.activation, self.widths[:last + 1], init=self.init, sigma=self.sigma,
                                      weights=weights, products="float32")
                stop = held_twice(found.distance, found.lam)
                if stop is not None or last == len(self.widths) - 1:
                    distance = found.distance if stop is None else found.distance[:stop + 1]
                    return KernelScanRecord(n, distance, found.lam, False)
                last += 2


@dataclass
class LambdaRecord:
    """lambda_min(H*) and how it was found: method is the solver `kernels.eigensolvers.choose` picked (dense
    eigvalsh, cholesky, nystrom or lanczos)."""

    lam: float
    method: str
    converged: bool

    @property
    def how(self) -> str:
        return self.method + ("" if self.converged else ", not converged")


@dataclass(frozen=True)
class LambdaPoint(Unit):
    """lambda(n) = lambda_min(H*) on the sweep's inputs at n (docs/mathematics.md#ntk)."""

    RECORD = LambdaRecord

    activation: str
    n: int
    d: int
    sigma: float

    def compute(self, ctx) -> LambdaRecord:
        found = lambda_min(self.activation, sweep_inputs(self.n, self.d), sigma=self.sigma)
        return LambdaRecord(found.value, found.method, found.converged)


# ------------------------------------------------------------------------------------ report


@dataclass
class LambdaRow:
    """lambda(n) and one proven width there (an order of growth, every constant 1)."""

    activation: str
    n: int
    lam: float
    method: str
    work: str
    formula: str
    width: float


@dataclass
class Decay:
    """lambda(n) ~ n^q fitted over every n, and over the last doubling from n = start (q_last)."""

    q: float
    q_last: float
    start: int


def extrapolated_width(widths, distances_per_width, lam: float, seed: int = 0) -> float:
    """A labelled ESTIMATE, not a measurement: the width where the fitted mean distance C m^p (upper half of
    the grid, p < 0) falls to lambda/4; inf where the distance does not fall."""
    half = len(widths) // 2
    fit = power_law(widths[half:], distances_per_width[half:], bootstrap=1, seed=seed)
    if not (fit["p"] < 0):
        return math.inf
    return (lam / 4 / fit["C"]) ** (1 / fit["p"])


@dataclass
class ProvenWidth:
    """A proven width at n, lambda and delta: an order of growth with every constant 1 (theory.py)."""

    work: str
    formula: str
    width: float


def proven_widths(activation: str, n: int, lam: float, delta: float) -> list[ProvenWidth]:
    """The works proven for this activation and the kernel condition's own order, at constant 1 (orders of
    growth, docs/mathematics.md#predictions); none where lambda is not positive (then no order is defined)."""
    if not (lam > 0 and math.isfinite(lam)):
        return []
    rows = [ProvenWidth(row.work, row.width_formula, row.width) for row in theory.orders(n, lam, delta)
            if row.activation == activation]
    return rows + [ProvenWidth("kernel condition", "n^2 log(n/delta) / lambda^2", theory.kernel_width(n, lam, delta))]


@dataclass
class ThresholdRow:
    """m* of one draw (data_draw "0", "1", ...) or pooled over the draws (data_draw "all": the log-median,
    hierarchical bootstrap interval); successes: per width, successes/runs (runs implied by a finished scan
    included)."""

    kind: str
    activation: str
    n: int
    d: int
    data_draw: str
    width: float
    low: float
    high: float
    successes: str


@dataclass
class Series:
    """One threshold kind and activation at one d along n: outcomes (D, widths, S) per n, the rows per draw
    and pooled, and the pooled thresholds of the hierarchical bootstrap's replicates (bootstrap, len(ns))."""

    kind: str
    activation: str
    d: int
    widths: tuple[int, ...]
    ns: list[int]
    draws: dict
    pooled: dict
    replicates: np.ndarray

    def usable(self, n: int) -> bool:
        """The pooled m* lies inside the grid (not beyond it, not at its smallest width)."""
        width = self.pooled[n].width
        return math.isfinite(width) and width > self.widths[0]

    def column(self, n: int) -> np.ndarray:
        return self.replicates[:, self.ns.index(n)]


def series_seed(study, kind: str, activation: str, d: int) -> list[int]:
    """The bootstrap seed of a series: the study seed and a checksum of its name (stable across runs)."""
    return [study.seed, zlib.crc32(f"{kind}/{activation}/{d}".encode())]


def _counts(outcomes: np.ndarray) -> str:
    """successes/runs per width of outcomes (..., widths, seeds)."""
    flat = np.moveaxis(outcomes, -2, 0).reshape(outcomes.shape[-2], -1)
    return " ".join(f"{int(np.nansum(row))}/{int((~np.isnan(row)).sum())}" for row in flat)


def measure_series(study, kind, activation, d, widths, outcomes: dict) -> Series:
    """Rows per draw (seed-bootstrap interval within the draw) and pooled (hierarchical bootstrap) for
    outcomes {n: (D, widths, S)}."""
    level = 1 - study.delta
    seed = series_seed(study, kind, activation, d)
    ns = sorted(outcomes)
    replicates = pooled.hierarchical_replicates(widths, [outcomes[n] for n in ns], level, seed)
    per_draw, together = {}, {}
    for index, n in enumerate(ns):
        rows = []
        for j, draw in enumerate(outcomes[n]):
            width, _, samples = estimate_threshold(widths, draw, study.delta, pooled.BOOTSTRAP, [*seed, n, j])
            rows.append(ThresholdRow(kind, activation, n, d, str(j), width, *interval(samples, pooled.LEVEL),
                                     _counts(draw)))
        per_draw[n] = rows
        low, high = interval(replicates[:, index], pooled.LEVEL)
        together[n] = ThresholdRow(kind, activation, n, d, "all", float(pooled.log_median([r.width for r in rows])),
                                   low, high, _counts(outcomes[n]))
    return Series(kind, activation, d, tuple(widths), ns, per_draw, together, replicates)


@dataclass
class Exponent:
    """m* ~ C n^p over the series' usable n (least squares on log m*), bootstrap interval for p."""

    kind: str
    activation: str
    points: int
    p: float
    low: float
    high: float
    C: float
    replicates: int
    theory: str


@dataclass
class LocalExponent:
    """log(m*(n_to) / m*(n_from)) / log(n_to / n_from) of the pooled thresholds, bootstrap interval."""

    kind: str
    activation: str
    n_from: int
    n_to: int
    exponent: float
    low: float
    high: float
    replicates: int


@dataclass
class DrawSpread:
    """At n: log2 of the largest over the smallest per-draw m* inside the grid (beyond: draws above the grid),
    beside log2 of the pooled m*'s change to the next n (per doubling of n)."""

    kind: str
    activation: str
    n: int
    beyond: int
    spread: float
    change: float


@dataclass
class DimensionFit:
    """m*_opt ~ C n^p d^q over the (n, d) points inside the grid, least squares on log m*, bootstrap intervals."""

    activation: str
    kind: str
    points: int
    p: float
    p_low: float
    p_high: float
    q: float
    q_low: float
    q_high: float
    C: float
    replicates: int


def exponent(series: Series, ns, study) -> Exponent | None:
    usable = [n for n in ns if series.usable(n)]
    if len(usable) < 2:
        return None
    design = np.column_stack([np.ones(len(usable)), np.log(usable)])
    values = [series.pooled[n].width for n in usable]
    beta, low, high, used = pooled.least_squares(design, values, np.column_stack([series.column(n) for n in usable]))
    theory_text = "; ".join(f"{name} {order}" for name, order in theory_orders(series.kind, series.activation,
                                                                                study.init))
    return Exponent(series.kind, series.activation, len(usable), float(beta[1]), float(low[1]), float(high[1]),
                    float(math.exp(beta[0])), used, theory_text)


def local_exponents(series: Series, ns) -> list[LocalExponent]:
    values = [series.pooled[n].width if series.usable(n) else math.inf for n in ns]
    replicates = np.column_stack([series.column(n) for n in ns])
    return [LocalExponent(series.kind, series.activation, ns[i], ns[i + 1], *row)
            for i, row in enumerate(pooled.local_exponents(ns, values, replicates))]


def draw_spread(series: Series, ns) -> list[DrawSpread]:
    rows = []
    for i, n in enumerate(ns):
        widths = [r.width for r in series.draws[n]]
        inside = [w for w in widths if math.isfinite(w)]
        spread = math.log2(max(inside) / min(inside)) if inside else math.nan
        change = math.nan
        if i + 1 < len(ns) and series.usable(n) and series.usable(ns[i + 1]):
            change = math.log2(series.pooled[ns[i + 1]].width / series.pooled[n].width) / math.log2(ns[i + 1] / n)
        rows.append(DrawSpread(series.kind, series.activation, n, len(widths) - len(inside), spread, change))
    return rows


def dimension_fit(study, cfg, activation: str, found: dict) -> DimensionFit | None:
    points = [(n, d) for d in cfg.dimension_ds for n in cfg.dimension_ns
              if found["optimization", activation, d].usable(n)]
    if len(points) < 3 or len({n for n, _ in points}) < 2 or len({d for _, d in points}) < 2:
        return None  # three parameters: at least three points, two values of n and of d
    design = np.column_stack([np.ones(len(points)), np.log([n for n, _ in points]), np.log([d for _, d in points])])
    values = [found["optimization", activation, d].pooled[n].width for n, d in points]
    replicates = np.column_stack([found["optimization", activation, d].column(n) for n, d in points])
    beta, low, high, used = pooled.least_squares(design, values, replicates)
    return DimensionFit(activation, "optimization", len(points), float(beta[1]), float(low[1]), float(high[1]),
                        float(beta[2]), float(low[2]), float(high[2]), float(math.exp(beta[0])), used)


def _width(value: float) -> str:
    return "beyond grid" if math.isinf(value) else f"{value:.15g}"


THRESHOLD_COLUMNS = [("kind", "kind"), ("activation", "activation"), ("n", "n"), ("data_draw", "data_draw"),
                     ("m*", lambda t: _width(t.width)), ("low", lambda t: _width(t.low)),
                     ("high", lambda t: _width(t.high)), ("successes", "successes")]
DIMENSION_COLUMNS = [("activation", "activation"), ("kind", "kind"), ("n", "n"), ("d", "d"),
                     ("data_draw", "data_draw"), ("m*", lambda t: _width(t.width)), ("low", lambda t: _width(t.low)),
                     ("high", lambda t: _width(t.high))]
EXPONENT_COLUMNS = [("kind", "kind"), ("activation", "activation"), ("points", "points"), ("p", "p"), ("low", "low"),
                    ("high", "high"), ("C", "C"), ("replicates", "replicates"), ("theory", "theory")]
LOCAL_COLUMNS = [("kind", "kind"), ("activation", "activation"), ("n from", "n_from"), ("n to", "n_to"),
                 ("exponent", "exponent"), ("low", "low"), ("high", "high"), ("replicates", "replicates")]
SPREAD_COLUMNS = [("kind", "kind"), ("activation", "activation"), ("n", "n"), ("draws beyond grid", "beyond"),
                  ("log2 spread between draws", "spread"), ("log2 change per doubling of n", "change")]
FIT_COLUMNS = [("activation", "activation"), ("kind", "kind"), ("points", "points"), ("p (n)", "p"),
               ("p low", "p_low"), ("p high", "p_high"), ("q (d)", "q"), ("q low", "q_low"), ("q high", "q_high"),
               ("C", "C"), ("replicates", "replicates")]
LAMBDA_COLUMNS = [("activation", "activation"), ("n", "n"), ("lambda", "lam"), ("method", "method"),
                  ("work", "work"), ("width order", "formula"), ("value", "width")]


class ThresholdSection(StudySection):
    KEY, TITLE, Config = "threshold", "(d) The width GD needs and the width the proofs need: m*(n)", Config

    def units(self, study, cfg) -> list[Unit]:
        scans = [WidthScan(a, n, cfg.widths, d, 1, weight_seeds(j, cfg.seeds), study.init, DATA, data_seed(j),
                           study.sigma, study.tol, cfg.budget, cfg.max_steps)
                 for n, d in dimension_points(study, cfg) for a in study.activations for j in range(cfg.draws)]
        kernels = [KernelScan(a, cfg.kernel_ns, study.d, j, seed, study.sigma, study.init, cfg.kernel_widths)
                   for j in range(cfg.draws) for seed in weight_seeds(j, cfg.seeds) for a in study.activations]
        lambdas = [LambdaPoint(a, n, study.d, study.sigma) for a in study.activations for n in lambda_points(cfg)]
        return [*scans, *kernels, *lambdas]

    def report(self, study, cfg, records) -> Report:
        found = {}
        scans = {(u.activation, u.n, u.d, u.data_seed): (u, r) for u, r in records.items() if isinstance(u, WidthScan)}
        for a in study.activations:
            for d in sorted({d for _, d in dimension_points(study, cfg)}):
                outcomes = {}
                for n in sorted(n for n, e in dimension_points(study, cfg) if e == d):
                    outcomes[n] = np.stack([scan_outcomes(cfg.widths, unit.seeds, record.runs) for unit, record in
                                            (scans[a, n, d, data_seed(j)] for j in range(cfg.draws))])
                found["optimization", a, d] = measure_series(study, "optimization", a, d, cfg.widths, outcomes)
        kernels = {(u.activation, scan.n, u.draw, u.seed): scan for u, r in records.items()
                   if isinstance(u, KernelScan) for scan in r.scans}
        for a in study.activations:
            outcomes = {n: np.stack([np.stack([kernel_outcomes(cfg.kernel_widths, kernels[a, n, j, seed])
                                               for seed in weight_seeds(j, cfg.seeds)], 1) for j in range(cfg.draws)])
                        for n in cfg.kernel_ns}
            found["kernel", a, study.d] = measure_series(study, "kernel", a, study.d, cfg.kernel_widths, outcomes)
        axis = {"optimization": list(cfg.ns), "kernel": list(cfg.kernel_ns)}
        main = [found[kind, a, study.d] for kind in axis for a in study.activations]
        rows = [row for s in main for n in axis[s.kind] for row in (*s.draws[n], s.pooled[n])]
        fits = [fit for fit in (exponent(s, axis[s.kind], study) for s in main) if fit is not None]
        local = [row for s in main for row in local_exponents(s, axis[s.kind])]
        spread = [row for s in main for row in draw_spread(s, axis[s.kind])]
        dimension = [row for a in study.activations for d in cfg.dimension_ds for n in cfg.dimension_ns
                     for row in (*found["optimization", a, d].draws[n], found["optimization", a, d].pooled[n])]
        dimension_fits = [fit for fit in (dimension_fit(study, cfg, a, found) for a in study.activations) if fit]
        estimates = _estimates(study, cfg, found, kernels)
        lam = {(u.activation, u.n): r for u, r in records.items() if isinstance(u, LambdaPoint)}
        decay = {}
        for a in study.activations:  # over every n, and over the last doubling (the decay need not be a power law)
            ns = [n for n in lambda_points(cfg) if lam[a, n].lam > 0]
            values = [lam[a, n].lam for n in ns]
            decay[a] = Decay(fit_power_law(ns, values)[0], fit_power_law(ns[-2:], values[-2:])[0], ns[-2])
        lambda_rows = [LambdaRow(a, n, lam[a, n].lam, lam[a, n].how, proven.work, proven.formula, proven.width)
                       for a in study.activations for n in lambda_points(cfg)
                       for proven in proven_widths(a, n, lam[a, n].lam, study.delta)]
        runs = [run for _, record in scans.values() for run in record.runs]
        level = f"{1 - study.delta:.0%}"
        return Report(
            reading=_reading(study, cfg, runs, found, fits, local, spread, dimension_fits, estimates, decay, lam),
            tables=[
                table("thresholds", f"Thresholds per activation and n at d = {study.d}: one row per data draw and the "
                      "pooled row (data_draw = all: the median over draws, hierarchical bootstrap 95% interval); "
                      f"successes/runs along the width grid: optimisation {list(cfg.widths)}, kernel {_grid(cfg)}",
                      rows, THRESHOLD_COLUMNS),
                table("threshold_exponents", "Fitted exponents m* ~ C n^p of the pooled thresholds (95% hierarchical "
                      "bootstrap interval) beside the theory's orders", fits, EXPONENT_COLUMNS),
                table("threshold_local_exponents", "Local exponents: the log-slope of the pooled m* between successive "
                      "n (95% hierarchical bootstrap interval)", local, LOCAL_COLUMNS),
                table("threshold_draw_spread", "The spread of m* between data draws at each n beside its change with "
                      "n (log2 units: 1 = a factor 2)", spread, SPREAD_COLUMNS),
                table("threshold_dimension", f"The optimisation threshold over the input dimension d (rate >= {level}"
                      "), per data draw and pooled", dimension, DIMENSION_COLUMNS),
                table("threshold_dimension_fit", "m*_opt ~ C n^p d^q by least squares on the pooled thresholds "
                      "(95% hierarchical bootstrap intervals); the n/d prediction is p = 1, q = -1", dimension_fits,
                      FIT_COLUMNS),
                table("lambda", "lambda(n) = lambda_min(H*) on data draw 0, and the proven widths there "
                      f"(delta = {study.delta}; ORDERS OF GROWTH, every constant 1)", lambda_rows, LAMBDA_COLUMNS)],
            plots=[Plot("thresholds", f"Per activation: the smallest width m* at which at least {level} of seeds "
                        "pass, against n. Circles: GD reaches the target (optimisation); squares: ||H(W(0)) - H*||_2 "
                        "<= lambda/4 (kernel); large markers: the median over data draws with hierarchical bootstrap "
                        "95% intervals, small dots: each draw; lines: fitted power laws; open triangles: beyond the "
                        "largest width measured; crosses: extrapolated ESTIMATES; dashed: the proven widths at the "
                        "measured lambda(n), ORDERS OF GROWTH with every constant 1.",
                        _figure(study, cfg, found, fits, estimates, lam)),
                   Plot("threshold_dimension", "The optimisation threshold m*_opt (median over draws, 95% intervals) "
                        "against n/d for each input dimension d; solid grey: the trivial bound m d = n k (fewer "
                        "parameters than equations cannot interpolate), dashed: the fitted C n^p d^q; each d has one "
                        "colour in every panel.",
                        _dimension_figure(study, cfg, found, dimension_fits))],
            facts=_facts(study, fits, local, dimension_fits, decay))


def _estimates(study, cfg, found, kernels) -> dict:
    """(activation, n) -> extrapolated kernel width (an ESTIMATE) where the pooled kernel m* is beyond the grid:
    the log-median over the draws beyond the grid whose seeds were all measured along the whole grid."""
    estimates = {}
    for a in study.activations:
        series = found["kernel", a, study.d]
        for n in cfg.kernel_ns:
            if math.isfinite(series.pooled[n].width):
                continue
            guesses = []
            for j, row in enumerate(series.draws[n]):
                scans = [kernels[a, n, j, seed] for seed in weight_seeds(j, cfg.seeds)]
                if math.isinf(row.width) and all(len(s.distance) == len(cfg.kernel_widths) for s in scans):
                    per_width = [[s.distance[i] for s in scans] for i in range(len(cfg.kernel_widths))]
                    guesses.append(extrapolated_width(cfg.kernel_widths, per_width, scans[0].lam, study.seed))
            if guesses:
                estimates[a, n] = float(pooled.log_median(guesses))
    return estimates


def _facts(study, fits, local, dimension_fits, decay: dict) -> list[Fact]:
    facts = []
    names = {"optimization": "m*_opt", "kernel": "m*_ker"}
    for a in study.activations:
        for kind, name in names.items():
            fit = next((f for f in fits if f.kind == kind and f.activation == a), None)
            if fit is not None:
                facts.append(Fact(a, f"{name} exponent p (m* ~ C n^p)", fit.p, fit.low, fit.high))
            last = [row for row in local if row.kind == kind and row.activation == a and math.isfinite(row.exponent)]
            if last:
                facts.append(Fact(a, f"{name} local exponent at the largest n measured", last[-1].exponent,
                                  last[-1].low, last[-1].high))
        fit = next((f for f in dimension_fits if f.activation == a), None)
        if fit is not None:
            facts.append(Fact(a, "m*_opt ~ C n^p d^q: p", fit.p, fit.p_low, fit.p_high))
            facts.append(Fact(a, "m*_opt ~ C n^p d^q: q", fit.q, fit.q_low, fit.q_high))
        facts.append(Fact(a, "lambda(n) decay exponent q (lambda ~ n^q)", decay[a].q))
        proven = theory.proven_widths(a, study.init)
        facts.append(Fact(a, "proven widths (orders of growth)",
                          "; ".join(f"{work} n^{power}" for work, power in proven) or "none proven"))
    return facts


def _grid(cfg) -> str:
    widths = cfg.kernel_widths
    return f"{widths[0]}..{widths[-1]} ({len(widths)} widths)"


def _figure(study, cfg, found, fits, estimates, lam):
    fig, axes = plots.figure(1, len(study.activations), size=(4.6 * len(study.activations), 4.4),
                             squeeze=False, sharey=True)
    for axis, activation in zip(axes[0], study.activations):
        color = activations.resolve(activation).color
        for kind, marker, ns, largest in (("optimization", "o", cfg.ns, max(cfg.widths)),
                                          ("kernel", "s", cfg.kernel_ns, max(cfg.kernel_widths))):
            series = found[kind, activation, study.d]
            draws = [(n, r.width) for n in ns for r in series.draws[n] if math.isfinite(r.width)]
            if draws:
                axis.scatter(*zip(*draws), s=6, color=color, alpha=0.35, marker=marker)
            inside = [series.pooled[n] for n in ns if series.usable(n)]
            beyond = [n for n in ns if math.isinf(series.pooled[n].width)]
            if inside:
                x = np.array([t.n for t in inside], dtype=float)
                m = np.array([t.width for t in inside])
                low = np.array([min(t.low, t.width) for t in inside])
                high = np.array([min(t.high, largest) for t in inside])
                axis.errorbar(x, m, yerr=[m - low, np.maximum(high - m, 0)], fmt=marker, capsize=3, color=color,
                              mfc="white" if kind == "kernel" else color, label=f"{kind} m* (median of draws)")
            if beyond:
                axis.scatter(beyond, [largest] * len(beyond), marker="^", facecolors="none", edgecolors=color,
                             label=f"{kind}: beyond {int(largest)}")
            fit = next((f for f in fits if f.kind == kind and f.activation == activation), None)
            if fit is not None:
                grid = np.geomspace(min(ns), max(ns), 20)
                axis.plot(grid, fit.C * grid**fit.p, color=color, lw=1, ls="-" if kind == "kernel" else ":",
                          label=f"{kind} fit n^{fit.p:.2f}")
        guesses = [(n, estimates[activation, n]) for n in cfg.kernel_ns
                   if math.isfinite(estimates.get((activation, n), math.inf))]
        if guesses:
            axis.scatter(*zip(*guesses), marker="x", color=color, label="kernel m*: extrapolated estimate")
        ns = sorted(set(cfg.ns) | set(cfg.kernel_ns))
        proven = [proven_widths(activation, n, lam[activation, n].lam, study.delta) for n in ns]
        if all(proven):
            for index, first in enumerate(proven[0]):
                axis.plot(ns, [row[index].width for row in proven], ls="--", lw=0.9, color=str(0.2 + 0.15 * index),
                          label=f"{first.work} (order, c = 1)")
        axis.set(xscale="log", yscale="log", xlabel="n (points)", title=activation)
        plots.finish(axis, legend=6)
    axes[0][0].set_ylabel(f"width m* (rate >= {1 - study.delta:g})")
    return fig


def _dimension_figure(study, cfg, found, dimension_fits):
    """One panel per activation; each d keeps one colour (its place in `dimension_ds`) in every panel."""
    fig, axes = plots.figure(1, len(study.activations), size=(4.6 * len(study.activations), 4.2),
                             squeeze=False, sharey=True)
    ratios = [n / d for n in cfg.dimension_ns for d in cfg.dimension_ds]
    grid = np.geomspace(min(ratios), max(ratios), 20)
    markers = "ovs^Dp*h"
    colours = dimension_colours(cfg.dimension_ds)
    for axis, activation in zip(axes[0], study.activations):
        for index, d in enumerate(cfg.dimension_ds):
            series = found["optimization", activation, d]
            inside = [series.pooled[n] for n in cfg.dimension_ns if series.usable(n)]
            if inside:
                x = np.array([t.n / d for t in inside])
                m = np.array([t.width for t in inside])
                low = np.array([min(t.low, t.width) for t in inside])
                high = np.array([min(t.high, max(cfg.widths)) for t in inside])
                axis.errorbar(x, m, yerr=[m - low, np.maximum(high - m, 0)], fmt=markers[index % len(markers)],
                              capsize=3, color=colours[d], label=f"d = {d}")
            beyond = [n / d for n in cfg.dimension_ns if math.isinf(series.pooled[n].width)]
            if beyond:
                axis.scatter(beyond, [max(cfg.widths)] * len(beyond), marker="^", facecolors="none",
                             edgecolors=colours[d], label=f"d = {d}: beyond {max(cfg.widths)}")
        axis.plot(grid, grid, color="0.5", lw=1, label="trivial bound m = n k / d")
        fit = next((f for f in dimension_fits if f.activation == activation), None)
        if fit is not None:
            for d in cfg.dimension_ds:
                n = grid * d
                inside = (n >= min(cfg.dimension_ns)) & (n <= max(cfg.dimension_ns))
                axis.plot(grid[inside], fit.C * n[inside] ** fit.p * d**fit.q, ls="--", lw=0.8, color=colours[d],
                          label=f"_fit d = {d}")
        axis.set(xscale="log", yscale="log", xlabel="n / d", title=activation)
        plots.finish(axis, legend=6)
    axes[0][0].set_ylabel(f"m*_opt (rate >= {1 - study.delta:g})")
    return fig


def dimension_colours(ds) -> dict:
    """d -> its colour in the dimension figure: matplotlib's colour cycle by d's place in `ds`."""
    return {d: f"C{index % 10}" for index, d in enumerate(ds)}


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]"


def _reading(study, cfg, runs, found, fits, local, spread, dimension_fits, estimates, decay, lam) -> list[str]:
    failed = sum(run.status == "failed" for run in runs)
    text = [f"{len(runs)} GD runs on {cfg.draws} data draws x {cfg.seeds} weight seeds per point, step budget "
            f"{cfg.budget} (a multiple of the predicted 2 log(||F(0) - y|| / eps) / (eta_eff lambda) steps, capped at "
            f"{cfg.max_steps}), each seed's width scan ended after two successive successes; kernel condition at "
            f"{_grid(cfg)} by nested passes per seed; success level 1 - delta = {1 - study.delta:.0%}. m*(n) is the "
            "median over the draws of each draw's threshold, with a 95% hierarchical bootstrap interval (draws, then "
            "seeds within a draw)."]
    if failed:
        text.append(f"{failed} run(s) failed and count as neither success nor failure; see `overparam results` "
                    "on this study's runs.db.")
    capped = {}
    for run in runs:
        if run.status == "max_steps" and run.budget is not None and run.budget >= cfg.max_steps:
            key = (run.config["activation"], run.config["n"], run.config["d"])
            capped[key] = capped.get(key, 0) + 1
    if capped:
        total = {}
        for run in runs:
            key = (run.config["activation"], run.config["n"], run.config["d"])
            total[key] = total.get(key, 0) + 1
        text.append("The step cap max_steps = " + f"{cfg.max_steps} cut short runs whose predicted budget was larger at "
                    + ", ".join(f"{a} n = {n}, d = {d} ({count} of {total[a, n, d]} runs)"
                                for (a, n, d), count in sorted(capped.items()))
                    + ": where most runs of a point hit the cap, its threshold measures the cap, not the width.")
    for fit in fits:
        text.append(f"{fit.kind} threshold, {fit.activation}: m* grew as n^{fit.p:.2f} (95% interval "
                    f"{_interval(fit.low, fit.high)}, from {fit.points} values of n).")
    text += _drift(study, local)
    text += _spread(study, spread)
    text += _dimension(study, cfg, found, dimension_fits)
    for activation in study.activations:
        optimisation, kernel = found["optimization", activation, study.d], found["kernel", activation, study.d]
        parts = []
        for n in cfg.kernel_ns:
            if n not in optimisation.pooled or not optimisation.usable(n):
                continue
            opt, ker = optimisation.pooled[n].width, kernel.pooled[n].width
            if math.isinf(ker):
                guess = estimates.get((activation, n), math.inf)
                parts.append(f"more than {max(cfg.kernel_widths) / opt:.3g} at n = {n}"
                             + (f" (extrapolated estimate {guess / opt:.3g})" if math.isfinite(guess) else ""))
            else:
                parts.append(f"{ker / opt:.3g} at n = {n}")
        if parts:
            text.append(f"{activation}: the proofs' kernel condition needed m*_ker / m*_opt = " + "; ".join(parts)
                        + " times the width GD needed (the ratio of the pooled thresholds).")
        fall = decay[activation]
        points = lambda_points(cfg)
        text.append(f"{activation}: lambda(n) = lambda_min(H*) on draw 0 fell as n^{fall.q:.2f} over n = "
                    f"{min(points)}..{max(points)} (fitted), and as n^{fall.q_last:.2f} from n = {fall.start} to "
                    f"{max(points)}" + ("" if abs(fall.q_last - fall.q) < 0.25 else
                                        ": the decay is not one power law over this range")
                    + "; the proven widths (dashed, orders with constant 1) scale with it.")
    unresolved = [f"{a} n = {n} ({found_lam.method})" for (a, n), found_lam in lam.items() if not found_lam.converged]
    if unresolved:
        text.append(f"The iterative eigensolver did not reach its tolerance for lambda(n) at {', '.join(unresolved)}: "
                    "those values are its best estimates.")
    beyond = [f"{a} n = {n}" for a in study.activations for n in cfg.kernel_ns
              if math.isinf(found["kernel", a, study.d].pooled[n].width)]
    if beyond:
        text.append(f"The pooled kernel threshold lies beyond the largest width {max(cfg.kernel_widths)} at "
                    f"{', '.join(beyond)}: no exponent uses those points, and the crosses are extrapolated "
                    "estimates from the fitted distance C m^p, not measurements.")
    return text


def _drift(study, local) -> list[str]:
    """Whether the local exponents drift with n, and whether each activation's differ from relu's."""
    text = []
    for kind in ("optimization", "kernel"):
        for a in study.activations:
            rows = [r for r in local if r.kind == kind and r.activation == a and math.isfinite(r.exponent)]
            if len(rows) < 2:
                continue
            first, last = rows[0], rows[-1]
            if last.low > first.high:
                verdict = "drifted upward with n (the intervals of the first and last step do not overlap)"
            elif last.high < first.low:
                verdict = "drifted downward with n (the intervals of the first and last step do not overlap)"
            else:
                verdict = "stayed flat within the intervals (the first and last step overlap)"
            steps = "; ".join(f"{r.exponent:.2f} {_interval(r.low, r.high)} for n = {r.n_from}->{r.n_to}" for r in rows)
            text.append(f"{kind} threshold, {a}: local exponents {steps}: it {verdict}.")
        baseline = activations.RELU.name  # the activation whose width n/d and DZPS19 predict
        if baseline in study.activations:
            relu = {(r.n_from, r.n_to): r for r in local if r.kind == kind and r.activation == baseline
                    and math.isfinite(r.exponent)}
            for a in study.activations:
                if a == baseline:
                    continue
                mine = [r for r in local if r.kind == kind and r.activation == a and math.isfinite(r.exponent)
                        and (r.n_from, r.n_to) in relu]
                if not mine:
                    continue
                apart = [f"n = {r.n_from}->{r.n_to}" for r in mine
                         if r.low > relu[r.n_from, r.n_to].high or r.high < relu[r.n_from, r.n_to].low]
                text.append(f"{kind} threshold: {a}'s local exponents are distinguishable from relu's (intervals do "
                            f"not overlap) at {', '.join(apart)}, and not at the other {len(mine) - len(apart)} steps."
                            if apart else f"{kind} threshold: {a}'s local exponents are not distinguishable from "
                            f"relu's at any of the {len(mine)} steps (the intervals overlap).")
    return text


def _spread(study, spread) -> list[str]:
    """The spread between draws beside the change with n, per kind and activation (medians over n)."""
    text = []
    for kind in ("optimization", "kernel"):
        for a in study.activations:
            rows = [r for r in spread if r.kind == kind and r.activation == a]
            spreads = [r.spread for r in rows if math.isfinite(r.spread)]
            changes = [r.change for r in rows if math.isfinite(r.change)]
            if not spreads or not changes:
                continue
            s, c = float(np.median(spreads)), float(np.median(changes))
            larger = ("the spread between draws is larger than the change from n to 2n" if s > c else
                      "the change from n to 2n is larger than the spread between draws")
            text.append(f"{kind} threshold, {a}: between data draws at the same n, m* spanned a factor 2^{s:.2f} "
                        f"(median over n; largest 2^{max(spreads):.2f}); from n to 2n the pooled m* changed by a "
                        f"factor 2^{c:.2f} (median): {larger}.")
    return text


def _dimension(study, cfg, found, dimension_fits) -> list[str]:
    """The d-fit against the n/d prediction, and the trivial bound m d >= n k at each point."""
    text = []
    for fit in dimension_fits:
        holds_p, holds_q = fit.p_low <= 1 <= fit.p_high, fit.q_low <= -1 <= fit.q_high
        verdict = ("consistent with the n/d prediction (p = 1 and q = -1 inside the intervals)" if holds_p and holds_q
                   else "not the n/d prediction: " + ", ".join(
                       part for part, ok in ((f"p = 1 lies outside {_interval(fit.p_low, fit.p_high)}", holds_p),
                                             (f"q = -1 lies outside {_interval(fit.q_low, fit.q_high)}", holds_q))
                       if not ok))
        text.append(f"d-axis, {fit.activation}: m*_opt ~ n^{fit.p:.2f} d^{fit.q:.2f} (p in "
                    f"{_interval(fit.p_low, fit.p_high)}, q in {_interval(fit.q_low, fit.q_high)}, {fit.points} "
                    f"points n = {list(cfg.dimension_ns)}, d = {list(cfg.dimension_ds)}): {verdict}.")
    for a in study.activations:
        parts = []
        for d in cfg.dimension_ds:
            series = found["optimization", a, d]
            values = [f"{series.pooled[n].width * d / n:.3g}" if math.isfinite(series.pooled[n].width)
                      else f"> {max(cfg.widths) * d / n:.3g}" for n in cfg.dimension_ns]
            parts.append(f"d = {d}: {', '.join(values)}")
        text.append(f"d-axis, {a}: m*_opt d / (n k) at n = {list(cfg.dimension_ns)} (the trivial bound says >= 1; a "
                    "constant across d is the n/d law): " + "; ".join(parts) + ".")
    return text


SECTION = ThresholdSection()
