"""Section (d): the two width thresholds m*(n), their exponents, and the proven widths
(docs/mathematics.md#thresholds, #nested-widths).

Optimisation threshold: a width sweep (`overparam.sweep`, one `sweeps.SweepSlice` unit per activation and
n) with a step budget scaled by the predicted rate; its runs live in the study's runs.db. Kernel threshold
(||H(W(0)) - H*||_2 <= lambda/4): the nested-width pass (`overparam.nested_ntk`) over `kernel_widths` on the
sweep's own data and init, one unit per seed (each seed's W(0) is drawn once at the largest width and
shared by every n and activation). Both are fitted as m* ~ C n^p. lambda(n) = lambda_min(H*) on the sphere
up to `lambda_ns`, and the proven widths (theory.py, every constant 1: orders of growth) evaluated at the
measured lambda(n), delta and n, drawn on the same axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import activations, data, theory
from ..models import initial_weights
from ..nested_ntk import width_profile
from ..ntk import lambda_min
from ..sweep.analysis import (NestedProfile, PowerLaw, Threshold, fit_power_law, kernel_thresholds,
                              thresholds_from_rows)
from ..sweep.executors import torch_threads
from ..sweep.spec import DEFAULTS
from .framework import (Plot, Report, SectionConfig, StudySection, Unit, require_even, require_grid,
                        require_positive, require_seeds, table)
from .report import Fact
from .stats import power_law
from .sweeps import SweepRecord, SweepSlice

DATA = "sphere"


@dataclass(frozen=True)
class Config(SectionConfig):
    """ns: the n of the thresholds; widths: the sweep's widths; seeds per point; budget: the step budget rule
    (`theory:c` = c times the predicted steps) capped at max_steps; kernel_widths: the nested pass's widths;
    lambda_ns: where lambda(n) = lambda_min(H*) is measured."""

    ns: tuple[int, ...] = (8, 16, 32, 64)
    widths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    seeds: int = 8
    budget: str = "theory:3"
    max_steps: int = 4000
    kernel_widths: tuple[int, ...] = tuple(2**p for p in range(6, 23))
    lambda_ns: tuple[int, ...] = tuple(2**p for p in range(3, 12))

    def check(self) -> None:
        require_grid("ns", self.ns, minimum=2)
        require_grid("widths", self.widths)
        require_grid("kernel_widths", self.kernel_widths)
        require_grid("lambda_ns", self.lambda_ns)
        require_seeds("seeds", self.seeds)
        require_positive("max_steps", self.max_steps)

    def check_with(self, core) -> None:
        require_even("widths", self.widths, core.init)
        require_even("kernel_widths", self.kernel_widths, core.init)


def lambda_points(cfg: Config) -> list[int]:
    """The n at which lambda(n) is measured: `lambda_ns` and the thresholds' n."""
    return sorted(set(cfg.lambda_ns) | set(cfg.ns))


def sweep_inputs(n: int, d: int) -> torch.Tensor:
    """The sweep's inputs at n (its data and data seed), on which both thresholds are measured."""
    return torch.from_numpy(data.builtin(DATA, n, d, 1, DEFAULTS["data_seed"]).X)


# ------------------------------------------------------------------------------------- units


@dataclass
class Profile:
    """||H(m) - H*||_2 at each width m of one seed's nested pass (`nested_ntk.width_profile`), lam = lambda_min(H*)."""

    activation: str
    n: int
    distance: list[float]
    lam: float


@dataclass
class SeedProfiles:
    profiles: list[Profile]


@dataclass(frozen=True)
class KernelProfiles(Unit):
    """The nested pass of one seed for every (activation, n): W(0) drawn once at the largest width, shared."""

    RECORD = SeedProfiles
    VERSION = 2  # the mixed-precision nested pass (float32 chunk products, float64 sums)

    activations: tuple[str, ...]
    ns: tuple[int, ...]
    d: int
    sigma: float
    init: str
    widths: tuple[int, ...]
    seed: int

    def compute(self, ctx) -> SeedProfiles:
        # One torch thread, as the sweep's tasks: at n <= 64 the GEMMs are small, and on 2 cores under
        # load a second thread made the passes 2-6x slower.
        with torch_threads(1):
            weights = initial_weights(max(self.widths), self.d, 1, self.init, self.sigma, self.seed, device=ctx.device)
            profiles = []
            for n in self.ns:
                for activation in self.activations:
                    found = width_profile(sweep_inputs(n, self.d), activation, self.widths, init=self.init,
                                          sigma=self.sigma, weights=weights, products="float32")
                    profiles.append(Profile(activation, n, found.distance, found.lam))
        return SeedProfiles(profiles)


@dataclass
class LambdaRecord:
    """lambda_min(H*) and how it was found: dense eigvalsh, or Lanczos above ntk.DENSE_LIMIT."""

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


def nested_profiles(study, profiles: dict) -> list[NestedProfile]:
    """The nested-pass measurements for `kernel_thresholds` (the function `overparam threshold` calls on a
    sweep's profiles); profiles: {(activation, n, seed): (Profile, the pass's widths)}."""
    return [NestedProfile({"activation": activation, "init": study.init, "n": n, "d": study.d}, seed, list(widths),
                          profile.distance, profile.lam)
            for (activation, n, seed), (profile, widths) in profiles.items()]


def _width(value: float) -> str:
    return "beyond grid" if math.isinf(value) else f"{value:g}"


THRESHOLD_COLUMNS = [("kind", "kind"), ("activation", lambda t: t.family.get("activation")),
                     ("n", lambda t: t.family.get("n")), ("m*", lambda t: _width(t.width)),
                     ("low", lambda t: _width(t.low)), ("high", lambda t: _width(t.high)),
                     ("successes", lambda t: " ".join(f"{s}/{r}" for s, r in zip(t.successes, t.runs)))]
EXPONENT_COLUMNS = [("kind", "kind"), ("activation", lambda f: f.family.get("activation")),
                    ("points", lambda f: len(f.ns)), ("p", "p"), ("low", "p_low"), ("high", "p_high"), ("C", "C"),
                    ("theory", lambda f: "; ".join(f"{name} {order}" for name, order in f.theory))]
LAMBDA_COLUMNS = [("activation", "activation"), ("n", "n"), ("lambda", "lam"), ("method", "method"),
                  ("work", "work"), ("width order", "formula"), ("value", "width")]


class ThresholdSection(StudySection):
    KEY, TITLE, Config = "threshold", "(d) The width GD needs and the width the proofs need: m*(n)", Config

    def units(self, study, cfg) -> list[Unit]:
        sweep = [SweepSlice(a, n, cfg.widths, study.d, 1, cfg.seeds, study.init, DATA, DEFAULTS["data_seed"],
                            study.sigma, study.tol, cfg.budget, cfg.max_steps)
                 for a in study.activations for n in cfg.ns]
        kernels = [KernelProfiles(study.activations, cfg.ns, study.d, study.sigma, study.init, cfg.kernel_widths, s)
                   for s in range(cfg.seeds)]
        lambdas = [LambdaPoint(a, n, study.d, study.sigma) for a in study.activations for n in lambda_points(cfg)]
        return [*sweep, *kernels, *lambdas]

    def report(self, study, cfg, records) -> Report:
        sweeps: list[SweepRecord] = [r for u, r in records.items() if isinstance(u, SweepSlice)]
        swept = thresholds_from_rows([run.as_row() for r in sweeps for run in r.runs], delta=study.delta,
                                     seed=study.seed, kinds=("optimization",))
        profiles = {(p.activation, p.n, u.seed): (p, u.widths) for u, r in records.items()
                    if isinstance(u, KernelProfiles) for p in r.profiles}
        measured = kernel_thresholds(nested_profiles(study, profiles), delta=study.delta, seed=study.seed)
        found = swept.thresholds + measured.thresholds
        fits = swept.fits + measured.fits
        lam = {(u.activation, u.n): r for u, r in records.items() if isinstance(u, LambdaPoint)}
        estimates = {}
        for t in measured.thresholds:
            if not math.isfinite(t.width):
                activation, n = t.family["activation"], t.family["n"]
                per_width = [[profiles[activation, n, s][0].distance[i] for s in range(cfg.seeds)]
                             for i in range(len(cfg.kernel_widths))]
                estimates[activation, n] = extrapolated_width(cfg.kernel_widths, per_width,
                                                              profiles[activation, n, 0][0].lam, study.seed)
        decay = {}
        for a in study.activations:  # over every n, and over the last doubling (the decay need not be a power law)
            ns = [n for n in lambda_points(cfg) if lam[a, n].lam > 0]
            values = [lam[a, n].lam for n in ns]
            decay[a] = Decay(fit_power_law(ns, values)[0], fit_power_law(ns[-2:], values[-2:])[0], ns[-2])
        lambda_rows = [LambdaRow(a, n, lam[a, n].lam, lam[a, n].how, proven.work, proven.formula, proven.width)
                       for a in study.activations for n in lambda_points(cfg)
                       for proven in proven_widths(a, n, lam[a, n].lam, study.delta)]
        runs = [run for r in sweeps for run in r.runs]
        return Report(
            reading=_reading(study, cfg, runs, found, fits, estimates, decay, lam),
            tables=[
                table("thresholds", "Thresholds per activation and n (successes/runs along the width grid: "
                      f"optimisation {list(cfg.widths)}, kernel {_grid(cfg)})", found, THRESHOLD_COLUMNS),
                table("threshold_exponents", "Fitted exponents m* ~ C n^p (95% bootstrap interval) beside the "
                      "theory's orders", fits, EXPONENT_COLUMNS),
                table("lambda", "lambda(n) = lambda_min(H*) on the sweep's data, and the proven widths there "
                      f"(delta = {study.delta}; ORDERS OF GROWTH, every constant 1)", lambda_rows, LAMBDA_COLUMNS)],
            plots=[Plot("thresholds", f"Per activation: the smallest width m* at which at least {1 - study.delta:.0%} "
                        "of seeds pass, against n. Circles: GD reaches the target (optimisation); squares: "
                        "||H(W(0)) - H*||_2 <= lambda/4 (kernel), bootstrap 95% intervals, fitted power laws; open "
                        "triangles: beyond the largest width measured; crosses: extrapolated ESTIMATES; dashed: the "
                        "proven widths at the measured lambda(n), ORDERS OF GROWTH with every constant 1.",
                        _figure(study, cfg, found, fits, estimates, lam))],
            facts=_facts(study, fits, decay))


def _facts(study, fits: list[PowerLaw], decay: dict) -> list[Fact]:
    facts = []
    for a in study.activations:
        for kind, name in (("optimization", "m*_opt"), ("kernel", "m*_ker")):
            fit = next((f for f in fits if f.kind == kind and f.family.get("activation") == a), None)
            if fit is not None:
                facts.append(Fact(a, f"{name} exponent p (m* ~ C n^p)", fit.p, fit.p_low, fit.p_high))
        facts.append(Fact(a, "lambda(n) decay exponent q (lambda ~ n^q)", decay[a].q))
        proven = theory.proven_widths(a, study.init)
        facts.append(Fact(a, "proven widths (orders of growth)",
                          "; ".join(f"{work} n^{power}" for work, power in proven) or "none proven"))
    return facts


def _grid(cfg) -> str:
    widths = cfg.kernel_widths
    return f"{widths[0]}..{widths[-1]} ({len(widths)} widths)"


def _by(found: list[Threshold], kind: str) -> dict:
    return {(t.family["activation"], t.family["n"]): t for t in found if t.kind == kind}


def _figure(study, cfg, found, fits, estimates, lam):
    optimisation, kernel = _by(found, "optimization"), _by(found, "kernel")
    figure, axes = plt.subplots(1, len(study.activations), figsize=(4.6 * len(study.activations), 4.4),
                                squeeze=False, sharey=True, constrained_layout=True)
    ns = np.array(cfg.ns, dtype=float)
    for axis, activation in zip(axes[0], study.activations):
        color = activations.resolve(activation).color
        for kind, marker, found_kind, largest in (("optimization", "o", optimisation, max(cfg.widths)),
                                                  ("kernel", "s", kernel, max(cfg.kernel_widths))):
            inside = [found_kind[activation, n] for n in cfg.ns if (activation, n) in found_kind
                      and not found_kind[activation, n].censored]
            beyond = [n for n in cfg.ns if (activation, n) in found_kind
                      and math.isinf(found_kind[activation, n].width)]
            if inside:
                x = np.array([t.family["n"] for t in inside], dtype=float)
                m = np.array([t.width for t in inside])
                low = np.array([min(t.low, t.width) for t in inside])
                high = np.array([min(t.high, largest) for t in inside])
                axis.errorbar(x, m, yerr=[m - low, np.maximum(high - m, 0)], fmt=marker, capsize=3, color=color,
                              mfc="white" if kind == "kernel" else color, label=f"{kind} m*")
            if beyond:
                axis.scatter(beyond, [largest] * len(beyond), marker="^", facecolors="none", edgecolors=color,
                             label=f"{kind}: beyond {int(largest)}")
            fit = next((f for f in fits if f.kind == kind and f.family.get("activation") == activation), None)
            if fit is not None:
                grid = np.geomspace(ns.min(), ns.max(), 20)
                axis.plot(grid, fit.C * grid**fit.p, color=color, lw=1, ls="-" if kind == "kernel" else ":",
                          label=f"{kind} fit n^{fit.p:.2f}")
        guesses = [(n, estimates[activation, n]) for n in cfg.ns
                   if math.isfinite(estimates.get((activation, n), math.inf))]
        if guesses:
            axis.scatter(*zip(*guesses), marker="x", color=color, label="kernel m*: extrapolated estimate")
        proven = [proven_widths(activation, n, lam[activation, n].lam, study.delta) for n in cfg.ns]
        if all(proven):
            for index, first in enumerate(proven[0]):
                axis.plot(ns, [row[index].width for row in proven], ls="--", lw=0.9, color=str(0.2 + 0.15 * index),
                          label=f"{first.work} (order, c = 1)")
        axis.set(xscale="log", yscale="log", xlabel="n (points)", title=activation)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel(f"width m* (rate >= {1 - study.delta:g})")
    return figure


def _reading(study, cfg, runs, found, fits, estimates, decay, lam) -> list[str]:
    optimisation, kernel = _by(found, "optimization"), _by(found, "kernel")
    failed = sum(run.status == "failed" for run in runs)
    text = [f"{len(runs)} GD runs, step budget {cfg.budget} (a multiple of the predicted 2 log(||F(0) - y|| / eps) "
            f"/ (eta_eff lambda) steps, capped at {cfg.max_steps}); kernel condition measured at {_grid(cfg)} by one "
            f"nested pass per seed; success level 1 - delta = {1 - study.delta:.0%}."]
    if failed:
        text.append(f"{failed} run(s) failed and count as neither success nor failure; see `overparam results` "
                    "on this study's runs.db.")
    for fit in fits:
        text.append(f"{fit.kind} threshold, {fit.family.get('activation')}: m* grew as n^{fit.p:.2f} (95% interval "
                    f"[{fit.p_low:.2f}, {fit.p_high:.2f}], from {len(fit.ns)} values of n).")
    points = lambda_points(cfg)
    for activation in study.activations:
        parts = []
        for n in cfg.ns:
            opt, ker = optimisation.get((activation, n)), kernel.get((activation, n))
            if opt is None or ker is None or opt.censored:
                continue
            if math.isinf(ker.width):
                guess = estimates.get((activation, n), math.inf)
                parts.append(f"more than {max(cfg.kernel_widths) / opt.width:.3g} at n = {n}"
                             + (f" (extrapolated estimate {guess / opt.width:.3g})" if math.isfinite(guess) else ""))
            else:
                parts.append(f"{ker.width / opt.width:.3g} at n = {n}")
        if parts:
            text.append(f"{activation}: the proofs' kernel condition needed m*_ker / m*_opt = " + "; ".join(parts)
                        + " times the width GD needed (the measured ratio of the two thresholds).")
        fall = decay[activation]
        text.append(f"{activation}: lambda(n) = lambda_min(H*) fell as n^{fall.q:.2f} over n = {min(points)}.."
                    f"{max(points)} (fitted), and as n^{fall.q_last:.2f} from n = {fall.start} to {max(points)}"
                    + ("" if abs(fall.q_last - fall.q) < 0.25 else ": the decay is not one power law over this range")
                    + "; the proven widths (dashed, orders with constant 1) scale with it.")
    unresolved = [f"{a} n = {n}" for (a, n), found_lam in lam.items() if not found_lam.converged]
    if unresolved:
        text.append(f"Lanczos did not reach its tolerance for lambda(n) at {', '.join(unresolved)}: those values are "
                    "its best estimates.")
    beyond = [f"{a} n = {n}" for (a, n), t in kernel.items() if math.isinf(t.width)]
    if beyond:
        text.append(f"The kernel threshold lies beyond the largest width {max(cfg.kernel_widths)} at "
                    f"{', '.join(beyond)}: no exponent uses those points, and the crosses are extrapolated "
                    "estimates from the fitted distance C m^p, not measurements.")
    return text


SECTION = ThresholdSection()
