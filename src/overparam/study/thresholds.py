"""Section (d): the two width thresholds m*(n), their exponents, and the proven widths (SPEC §5, §7, §8).

Optimisation threshold: a width sweep (`overparam.sweep`) over n and m with a step budget scaled by the
predicted rate; its runs live in the study's runs.db. Kernel threshold (||H(W(0)) - H*||_2 <= lambda/4):
the nested-width pass (`overparam.nested_ntk`) over `threshold_kernel_widths` on the sweep's own data
and init, one unit per (activation, n, seed) kept in runs.db. Both are fitted as m* ~ C n^p. lambda(n) =
lambda_min(H*) on the sphere up to `lambda_ns`, and the proven widths (theory.py, every constant 1: orders
of growth) evaluated at the measured lambda(n), delta and n, drawn on the same axes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import activations, data, theory
from ..models import initial_weights
from ..nested_ntk import width_profile
from ..ntk import lambda_min
from ..sweep import run_sweep
from ..sweep.executors import torch_threads
from ..sweep.analysis import fit_power_law, thresholds, thresholds_from_rows
from ..sweep.spec import DEFAULTS
from .framework import SectionConfig, require_even, require_grid, require_positive, require_seeds
from .legacy import LegacySection
from .report import Figure, Section, Table, save_figure
from .stats import power_law

KEY, TITLE = "threshold", "(d) The width GD needs and the width the proofs need: m*(n)"

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


SECTION = LegacySection(sys.modules[__name__])


def units(cfg) -> int:
    sweep = len(cfg.activations) * len(cfg.threshold_widths) * len(cfg.threshold_ns) * cfg.threshold_seeds
    return sweep + kernel_units(cfg) + len(cfg.activations) * len(lambda_points(cfg))


def kernel_units(cfg) -> int:
    return len(cfg.activations) * len(cfg.threshold_ns) * cfg.threshold_seeds


def lambda_points(cfg) -> list[int]:
    """The n at which lambda(n) is measured: `lambda_ns` and the thresholds' n."""
    return sorted(set(cfg.lambda_ns) | set(cfg.threshold_ns))


def sweep_table(cfg) -> dict:
    return {
        "activations": list(cfg.activations), "widths": list(cfg.threshold_widths), "n": list(cfg.threshold_ns),
        "d": cfg.d, "seeds": cfg.threshold_seeds, "init": cfg.train_init, "data": "sphere", "lr": "auto",
        "tol": cfg.tol, "steps": cfg.threshold_budget, "max_steps": cfg.threshold_max_steps, "sigma": cfg.sigma,
    }


def sweep_inputs(cfg, n: int) -> torch.Tensor:
    """The sweep's inputs at n (its data and data seed), on which both thresholds are measured."""
    return torch.from_numpy(data.builtin(sweep_table(cfg)["data"], n, cfg.d, 1, DEFAULTS["data_seed"]).X)


def kernel_key(cfg, activation: str, n: int, seed: int) -> str:
    widths = cfg.threshold_kernel_widths
    return (f"{KEY}:kernel:{activation}:n={n}:d={cfg.d}:sigma={cfg.sigma}:init={cfg.train_init}:"
            f"widths={widths[0]}..{widths[-1]}x{len(widths)}:seed={seed}")


def lambda_key(cfg, activation: str, n: int) -> str:
    return f"{KEY}:lambda:{activation}:n={n}:d={cfg.d}:sigma={cfg.sigma}"


def kernel_profiles(cfg, ctx) -> dict:
    """{(activation, n, seed): WidthProfile.to_dict()} from the cache or the nested pass; each seed's
    W(0) at the largest width is drawn once and shared by every n and activation. One torch thread, as
    the sweep's tasks: at n <= 64 the GEMMs are small, and on 2 cores under load 8 a second thread made
    the passes 2-6x slower."""
    with torch_threads(1):
        return _kernel_profiles(cfg, ctx)


def _kernel_profiles(cfg, ctx) -> dict:
    results = {}
    for seed in range(cfg.threshold_seeds):
        weights = []  # drawn on the first unit that needs them

        def profile(activation, n, seed=seed):
            if not weights:
                weights.append(initial_weights(max(cfg.threshold_kernel_widths), cfg.d, 1, cfg.train_init,
                                               cfg.sigma, seed, device=ctx.device))
            return width_profile(sweep_inputs(cfg, n), activation, cfg.threshold_kernel_widths,
                                 init=cfg.train_init, sigma=cfg.sigma, weights=weights[0]).to_dict()

        for n in cfg.threshold_ns:
            for activation in cfg.activations:
                results[activation, n, seed] = ctx.cache.compute(
                    kernel_key(cfg, activation, n, seed), KEY, lambda a=activation, n=n: profile(a, n))
                ctx.tick()
    return results


def kernel_rows(cfg, profiles: dict) -> list[dict]:
    """The nested-pass measurements as run rows for `thresholds_from_rows` (kind "kernel")."""
    rows = []
    for (activation, n, seed), profile in profiles.items():
        config = {"activation": activation, "init": cfg.train_init, "n": n, "d": cfg.d}
        for width, distance in zip(profile["widths"], profile["distance"]):
            rows.append({"config": {**config, "width": width}, "width": width, "seed": seed, "status": "measured",
                         "kernel_distance": distance, "lambda_min": profile["lambda"]})
    return rows


def lambdas(cfg, ctx) -> tuple[dict, dict]:
    """({(activation, n): lambda_min(H*)}, {(activation, n): how it was found}) on the sweep's data: dense
    eigvalsh, Lanczos above ntk.DENSE_LIMIT ("lanczos, not converged" where it missed its tolerance)."""
    values, methods = {}, {}
    for activation in cfg.activations:
        for n in lambda_points(cfg):
            unit = ctx.cache.compute(lambda_key(cfg, activation, n), KEY, lambda a=activation, n=n: _lambda(a, n, cfg))
            values[activation, n] = unit["lambda"]
            methods[activation, n] = unit["method"] + ("" if unit["converged"] else ", not converged")
            ctx.tick()
    return values, methods


def _lambda(activation: str, n: int, cfg) -> dict:
    found = lambda_min(activation, sweep_inputs(cfg, n), sigma=cfg.sigma)
    return {"lambda": found.value, "method": found.method, "converged": found.converged}


def extrapolated_width(widths, distances_per_width, lam: float, seed: int = 0) -> float:
    """A labelled ESTIMATE, not a measurement: the width where the fitted mean distance C m^p (upper half of
    the grid, p < 0) falls to lambda/4; inf where the distance does not fall."""
    half = len(widths) // 2
    fit = power_law(widths[half:], distances_per_width[half:], bootstrap=1, seed=seed)
    if not (fit["p"] < 0):
        return math.inf
    return (lam / 4 / fit["C"]) ** (1 / fit["p"])


def proven_widths(activation: str, n: int, lam: float, delta: float) -> list[tuple[str, str, float]]:
    """(work, formula, width) of the works proven for this activation and the kernel condition's own order, at
    constant 1 (orders of growth, theory.py); none where lambda is not positive (then no order is defined)."""
    if not (lam > 0 and math.isfinite(lam)):
        return []
    rows = [(row.work, row.width_formula, row.width) for row in theory.orders(n, lam, delta)
            if row.activation == activation]
    return rows + [("kernel condition", "n^2 log(n/delta) / lambda^2", theory.kernel_width(n, lam, delta))]


def study_sweep(table: dict, ctx):
    """run_sweep of a [sweep] table into the study's store, one tick per finished (or reused) run."""
    seen = [0]

    def progress(counts) -> None:
        finished = counts.done + counts.failed + counts.skipped
        if finished > seen[0]:
            ctx.tick(finished - seen[0])
            seen[0] = finished

    return run_sweep(table, ctx.store_path, backend=ctx.backend, device=ctx.device, progress=progress)


def run(cfg, ctx) -> Section:
    table = sweep_table(cfg)
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        "sweep": table, "delta": cfg.delta, "kernel_widths": list(cfg.threshold_kernel_widths),
        "lambda_ns": list(cfg.lambda_ns)})
    counts = study_sweep(table, ctx)
    swept = thresholds(ctx.store_path, delta=cfg.delta, seed=cfg.seed, d=cfg.d, init=cfg.train_init)
    profiles = kernel_profiles(cfg, ctx)
    measured = thresholds_from_rows(kernel_rows(cfg, profiles), delta=cfg.delta, seed=cfg.seed, kinds=("kernel",))
    found = [t for t in swept.thresholds if t.kind == "optimization"] + measured.thresholds
    fits = [f for f in swept.fits if f.kind == "optimization"] + measured.fits
    lam, methods = lambdas(cfg, ctx)
    estimates = {}
    for t in measured.thresholds:
        if not math.isfinite(t.width):
            activation, n = t.family["activation"], t.family["n"]
            per_width = [[profiles[activation, n, s]["distance"][i] for s in range(cfg.threshold_seeds)]
                         for i in range(len(cfg.threshold_kernel_widths))]
            estimates[activation, n] = extrapolated_width(cfg.threshold_kernel_widths, per_width,
                                                          profiles[activation, n, 0]["lambda"], cfg.seed)
    points = lambda_points(cfg)
    decay = {}
    for a in cfg.activations:  # over every n, and over the last doubling (the decay need not be a power law)
        positive = [(n, lam[a, n]) for n in points if lam[a, n] > 0]
        decay[a] = (fit_power_law(*zip(*positive))[0], fit_power_law(*zip(*positive[-2:]))[0], positive[-2][0])

    _figure(cfg, found, fits, estimates, lam, ctx.out)
    section.figures.append(Figure("thresholds", f"Per activation: the smallest width m* at which at least "
                                  f"{1 - cfg.delta:.0%} of seeds pass, against n. Circles: GD reaches the target "
                                  "(optimisation); squares: ||H(W(0)) - H*||_2 <= lambda/4 (kernel), bootstrap 95% "
                                  "intervals, fitted power laws; open triangles: beyond the largest width measured; "
                                  "crosses: extrapolated ESTIMATES; dashed: the proven widths at the measured "
                                  "lambda(n), ORDERS OF GROWTH with every constant 1."))
    rows = [[t.kind, t.family.get("activation"), t.family.get("n"), _width(t.width), _width(t.low), _width(t.high),
             " ".join(f"{s}/{r}" for s, r in zip(t.successes, t.runs))] for t in found]
    section.tables.append(Table("thresholds", "Thresholds per activation and n (successes/runs along the width grid: "
                                f"optimisation {list(cfg.threshold_widths)}, kernel {_grid(cfg)})",
                                ["kind", "activation", "n", "m*", "low", "high", "successes"], rows))
    section.tables.append(Table("threshold_exponents", "Fitted exponents m* ~ C n^p (95% bootstrap interval) "
                                "beside the theory's orders", ["kind", "activation", "points", "p", "low", "high",
                                                               "C", "theory"],
                                [[f.kind, f.family.get("activation"), len(f.ns), f.p, f.p_low, f.p_high, f.C,
                                  "; ".join(f"{name} {order}" for name, order in f.theory)] for f in fits]))
    section.tables.append(Table("lambda", "lambda(n) = lambda_min(H*) on the sweep's data, and the proven widths "
                                f"there (delta = {cfg.delta}; ORDERS OF GROWTH, every constant 1)",
                                ["activation", "n", "lambda", "method", "work", "width order", "value"],
                                [[a, n, lam[a, n], methods[a, n], work, formula, value] for a in cfg.activations
                                 for n in lambda_points(cfg) for work, formula, value in
                                 proven_widths(a, n, lam[a, n], cfg.delta)]))
    section.reading += _reading(cfg, counts, found, fits, estimates, decay, methods)
    section.status = "complete" if counts.failed == 0 else "partial"
    if counts.failed:
        section.note = f"{counts.failed} run(s) failed; see `overparam results {ctx.store_path}`"
    return section


def _grid(cfg) -> str:
    widths = cfg.threshold_kernel_widths
    return f"{widths[0]}..{widths[-1]} ({len(widths)} widths)"


def _width(value: float) -> str:
    return "beyond grid" if math.isinf(value) else f"{value:g}"


def _by(found, kind: str) -> dict:
    return {(t.family["activation"], t.family["n"]): t for t in found if t.kind == kind}


def _figure(cfg, found, fits, estimates, lam, out) -> None:
    optimisation, kernel = _by(found, "optimization"), _by(found, "kernel")
    figure, axes = plt.subplots(1, len(cfg.activations), figsize=(4.6 * len(cfg.activations), 4.4),
                                squeeze=False, sharey=True, constrained_layout=True)
    ns = np.array(cfg.threshold_ns, dtype=float)
    for axis, activation in zip(axes[0], cfg.activations):
        color = activations.resolve(activation).color
        for kind, marker, found_kind, largest in (("optimization", "o", optimisation, max(cfg.threshold_widths)),
                                                  ("kernel", "s", kernel, max(cfg.threshold_kernel_widths))):
            inside = [found_kind[activation, n] for n in cfg.threshold_ns if (activation, n) in found_kind
                      and not found_kind[activation, n].censored]
            beyond = [n for n in cfg.threshold_ns if (activation, n) in found_kind
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
        guesses = [(n, estimates[activation, n]) for n in cfg.threshold_ns
                   if math.isfinite(estimates.get((activation, n), math.inf))]
        if guesses:
            axis.scatter(*zip(*guesses), marker="x", color=color, label="kernel m*: extrapolated estimate")
        proven = [proven_widths(activation, n, lam[activation, n], cfg.delta) for n in cfg.threshold_ns]
        if all(proven):
            for index, (work, _, _) in enumerate(proven[0]):
                axis.plot(ns, [row[index][2] for row in proven], ls="--", lw=0.9, color=str(0.2 + 0.15 * index),
                          label=f"{work} (order, c = 1)")
        axis.set(xscale="log", yscale="log", xlabel="n (points)", title=activation)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel(f"width m* (rate >= {1 - cfg.delta:g})")
    save_figure(figure, out, "thresholds")


def _reading(cfg, counts, found, fits, estimates, decay, methods) -> list[str]:
    optimisation, kernel = _by(found, "optimization"), _by(found, "kernel")
    text = [f"{counts.total} GD runs ({counts.skipped} reused from earlier runs of this study), step budget "
            f"{cfg.threshold_budget} (a multiple of the predicted 2 log(||F(0) - y|| / eps) / (eta_eff lambda) steps, "
            f"capped at {cfg.threshold_max_steps}); kernel condition measured at {_grid(cfg)} by one nested pass per "
            f"seed; success level 1 - delta = {1 - cfg.delta:.0%}."]
    for fit in fits:
        text.append(f"{fit.kind} threshold, {fit.family.get('activation')}: m* grew as n^{fit.p:.2f} (95% interval "
                    f"[{fit.p_low:.2f}, {fit.p_high:.2f}], from {len(fit.ns)} values of n).")
    for activation in cfg.activations:
        parts = []
        for n in cfg.threshold_ns:
            opt, ker = optimisation.get((activation, n)), kernel.get((activation, n))
            if opt is None or ker is None or opt.censored:
                continue
            if math.isinf(ker.width):
                guess = estimates.get((activation, n), math.inf)
                parts.append(f"more than {max(cfg.threshold_kernel_widths) / opt.width:.3g} at n = {n}"
                             + (f" (extrapolated estimate {guess / opt.width:.3g})" if math.isfinite(guess) else ""))
            else:
                parts.append(f"{ker.width / opt.width:.3g} at n = {n}")
        if parts:
            text.append(f"{activation}: the proofs' kernel condition needed m*_ker / m*_opt = " + "; ".join(parts)
                        + " times the width GD needed (the measured ratio of the two thresholds).")
        q, last, start = decay[activation]
        text.append(f"{activation}: lambda(n) = lambda_min(H*) fell as n^{q:.2f} over n = {min(lambda_points(cfg))}.."
                    f"{max(lambda_points(cfg))} (fitted), and as n^{last:.2f} from n = {start} to "
                    f"{max(lambda_points(cfg))}" + ("" if abs(last - q) < 0.25 else
                                                    ": the decay is not one power law over this range")
                    + "; the proven widths (dashed, orders with constant 1) scale with it.")
    unresolved = [f"{a} n = {n}" for (a, n), method in methods.items() if method.endswith("not converged")]
    if unresolved:
        text.append(f"Lanczos did not reach its tolerance for lambda(n) at {', '.join(unresolved)}: those values are "
                    "its best estimates.")
    beyond = [f"{a} n = {n}" for (a, n), t in kernel.items() if math.isinf(t.width)]
    if beyond:
        text.append(f"The kernel threshold lies beyond the largest width {max(cfg.threshold_kernel_widths)} at "
                    f"{', '.join(beyond)}: no exponent uses those points, and the crosses are extrapolated "
                    "estimates from the fitted distance C m^p, not measurements.")
    return text
