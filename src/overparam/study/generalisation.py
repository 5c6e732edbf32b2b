"""Section (g): generalisation. Test error of GD-trained networks against width and data, beside the
kernel predictors GD approaches (SPEC §9).

Data: x uniform on S^{d-1}, labels y = f*(x) + noise with the smooth teacher
f*(x) = c sum_j cos(2 <u_j, x> + b_j) (u_j on the sphere, b_j ~ U[0, 2 pi), J = 4,
c: variance one; smooth enough that kernel regression learns it from tens of points in d = 8) and
Gaussian noise of standard deviation `generalisation_noise`. Training sets are nested in n (the
first n points of one draw); the test set is fixed and separate, with its own noisy labels, so a
test MSE of noise^2 is the floor.

One unit per (activation, n, m): the seeds' networks (coupled init, F(W(0)) = 0) trained together
by full-batch GD to ||F - y|| <= tol, and per seed
- test_mse: mean (F(W(T), x) - y)^2 over the test set;
- finite_kernel_test_mse: the same for kernel regression with Theta(W(0)) (the network's own
  linearisation run to convergence, `KernelRegime.of_network(...).predict`);
- distance_to_kernel: sqrt(mean (F(W(T), x) - f_ker(x))^2) over the test set, f_ker the H* predictor;
- distance_travelled ||W(T) - W(0)||_F and its kernel-regime value
  predicted_distance = sqrt((y - F_0)^T Theta(W(0))^{-1} (y - F_0)) = sqrt(r^T H^{-1} r / (m kappa^2)).
Per (activation, n): kernel_test_mse of the H* interpolant H*(x, X) H*^{-1} y (the m -> infinity limit
of GD from coupled init) and ADHLW19's complexity sqrt(2 y^T H*^{-1} y / n).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import theory
from ..activations import resolve
from ..batched import train_batched
from ..data import ridge_teacher as teacher
from ..data import unit_sphere
from ..kernel_regime import KernelRegime, complexity
from ..models import TwoLayerNet
from ..ntk import infinite_ntk
from .framework import SectionConfig, require_even, require_grid, require_positive, require_seeds
from .legacy import LegacySection
from .report import Figure, Section, Table, save_figure
from .stats import format_slope, mean_and_error, power_law

KEY, TITLE = "generalisation", "(g) Generalisation: test error against width and data, beside the kernel predictors"
COLUMNS = ["activation", "n", "m", "test_mse", "kernel_test_mse", "finite_kernel_test_mse", "distance_to_kernel",
           "distance_travelled", "predicted_distance", "complexity"]

@dataclass(frozen=True)
class Config(SectionConfig):
    """A teacher on the sphere with label noise of sd `noise`: widths at n, then ns at the largest width;
    each network trained to tol within `steps`; `test` held-out points."""

    n: int = 64
    ns: tuple[int, ...] = (16, 32, 64)
    widths: tuple[int, ...] = (64, 256, 1024, 2048)
    seeds: int = 2
    steps: int = 20000
    noise: float = 0.1
    test: int = 1000

    def check(self) -> None:
        require_positive("n", self.n)
        require_grid("ns", self.ns)
        require_grid("widths", self.widths, minimum=2)
        require_seeds("seeds", self.seeds)
        require_positive("steps", self.steps)
        require_positive("test", self.test)
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")

    def check_with(self, core) -> None:
        require_even("widths", self.widths, "coupled")


SECTION = LegacySection(sys.modules[__name__])


def split(n: int, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X (n, d), y (n, 1), X_test, y_test): n training points (the first n of every larger set: the draws
    fill rows in order) and the fixed test set."""
    X = unit_sphere(n, cfg.d, cfg.seed)
    noise = np.random.default_rng(cfg.seed + 1).standard_normal(n)
    X_test = unit_sphere(cfg.generalisation_test, cfg.d, cfg.seed + 2)
    test_noise = np.random.default_rng(cfg.seed + 3).standard_normal(cfg.generalisation_test)
    y = teacher(X, cfg.seed) + cfg.generalisation_noise * noise
    y_test = teacher(X_test, cfg.seed) + cfg.generalisation_noise * test_noise
    return X, y[:, None], X_test, y_test[:, None]


def grid(cfg) -> list[tuple[int, int]]:
    """(n, m) pairs: every width at n = generalisation_n, then every n at the largest width."""
    largest = max(cfg.generalisation_widths)
    pairs = [(cfg.generalisation_n, m) for m in cfg.generalisation_widths]
    return pairs + [(n, largest) for n in cfg.generalisation_ns if (n, largest) not in pairs]


def units(cfg) -> int:
    return len(cfg.activations) * len(grid(cfg))


def unit_key(activation: str, n: int, m: int, cfg) -> str:
    return (f"{KEY}:{activation}:n={n}:m={m}:d={cfg.d}:sigma={cfg.sigma}:data={cfg.seed}:"
            f"noise={cfg.generalisation_noise}:test={cfg.generalisation_test}:"
            f"seeds={cfg.generalisation_seeds}:steps={cfg.generalisation_steps}:tol={cfg.tol}")


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float((prediction - target).square().mean())


def unit(activation: str, n: int, m: int, cfg, device: str = "cpu") -> dict:
    """Train the seeds' networks at (n, m) and measure them against the kernel predictors (module docstring)."""
    X_np, y_np, X_test_np, y_test_np = split(n, cfg)
    X, y, X_test, y_test = (torch.from_numpy(v) for v in (X_np, y_np, X_test_np, y_test_np))
    limit = KernelRegime.infinite(activation, X, y, eta_eff=1.0, sigma=cfg.sigma)
    kernel_prediction = limit.predict(X_test)
    nets = [TwoLayerNet(cfg.d, m, 1, activation, init="coupled", sigma=cfg.sigma, seed=s, device=device)
            for s in range(cfg.generalisation_seeds)]
    W0 = torch.stack([net.W for net in nets])
    W = W0.clone()
    histories = train_batched(X.to(device), y.to(device), W, torch.stack([net.a for net in nets]), activation,
                              nets[0].kappa, lr="auto", steps=cfg.generalisation_steps, tol=cfg.tol,
                              record_every=cfg.generalisation_steps, paired=True)
    runs = []
    for seed, (net, history) in enumerate(zip(nets, histories)):
        if isinstance(history, Exception):
            runs.append({"seed": seed, "status": "failed", "error": str(history)})
            continue
        linear = KernelRegime.of_network(net, X, y, history.lr)  # net still holds W(0)
        net.W = W[seed]
        prediction = net(X_test.to(device)).cpu()
        runs.append({
            "seed": seed, "status": history.status, "steps": history.steps,
            "final_residual": float(history.residual_norm[-1]),
            "test_mse": _mse(prediction, y_test),
            "finite_kernel_test_mse": _mse(linear.predict(X_test), y_test),
            "distance_to_kernel": math.sqrt(_mse(prediction, kernel_prediction)),
            "distance_travelled": float((W[seed] - W0[seed]).norm()),
            # (y - F_0)^T Theta^{-1} (y - F_0) in Theta(W(0))'s eigenbasis: sum_i c_i^2 / mu_i
            "predicted_distance": float((linear.coordinates.square() / linear.eigenvalues).sum().sqrt()),
        })
    return {"activation": activation, "n": n, "m": m, "lambda": float(limit.eigenvalues[0]),
            "kernel_test_mse": _mse(kernel_prediction, y_test),
            "complexity": complexity(infinite_ntk(activation, X, cfg.sigma), y), "runs": runs}


def collect(cfg, ctx) -> dict:
    results = {}
    for activation in cfg.activations:
        for n, m in grid(cfg):
            results[activation, n, m] = ctx.cache.compute(unit_key(activation, n, m, cfg), KEY,
                                                          lambda: unit(activation, n, m, cfg, ctx.device))
            ctx.tick()
    return results


def _ok(unit_: dict) -> list[dict]:
    return [r for r in unit_["runs"] if r["status"] != "failed"]


def table_rows(results: dict, cfg) -> list[list]:
    """One row per (activation, n, m) of the grid: per-seed quantities averaged over the seeds."""
    rows = []
    for activation in cfg.activations:
        for n, m in grid(cfg):
            found = results[activation, n, m]
            runs = _ok(found)
            mean = {k: float(np.mean([r[k] for r in runs])) if runs else float("nan")
                    for k in ("test_mse", "finite_kernel_test_mse", "distance_to_kernel", "distance_travelled",
                              "predicted_distance")}
            rows.append([activation, n, m, mean["test_mse"], found["kernel_test_mse"],
                         mean["finite_kernel_test_mse"], mean["distance_to_kernel"], mean["distance_travelled"],
                         mean["predicted_distance"], found["complexity"]])
    return rows


def run(cfg, ctx) -> Section:
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        k: getattr(cfg, k) for k in ("activations", "d", "sigma", "seed", "tol", "generalisation_n",
                                     "generalisation_ns", "generalisation_widths", "generalisation_seeds",
                                     "generalisation_steps", "generalisation_noise", "generalisation_test")})
    results = collect(cfg, ctx)
    rows = table_rows(results, cfg)
    fits = {a: _fits(results, a, cfg) for a in cfg.activations}
    section.figures.append(_figure(results, rows, fits, cfg, ctx.out))
    section.tables.append(Table(KEY, "Test MSE (fixed test set, noisy labels) of GD-trained networks (coupled init, "
                                f"trained to ||F - y|| <= {cfg.tol:g}; mean over {cfg.generalisation_seeds} seeds), of "
                                "kernel regression with H* and with Theta(W(0)), the distance to the H* predictor on "
                                "the test points, the distance travelled ||W(T) - W(0)||_F and its kernel-regime "
                                "prediction, and ADHLW19's complexity sqrt(2 y^T H*^-1 y / n)", COLUMNS, rows))
    section.reading += reading(results, rows, fits, cfg)
    section.status = "complete"
    return section


def _fits(results: dict, activation: str, cfg) -> dict:
    """Log-log slopes: distance to the kernel predictor against m, test MSE and complexity against n."""
    n0, largest = cfg.generalisation_n, max(cfg.generalisation_widths)
    widths = sorted(cfg.generalisation_widths)
    ns = sorted({n for n, m in grid(cfg) if m == largest})
    return {
        "distance": power_law(widths, [[r["distance_to_kernel"] for r in _ok(results[activation, n0, m])]
                                       for m in widths], seed=cfg.seed),
        "test_n": power_law(ns, [[r["test_mse"] for r in _ok(results[activation, n, largest])] for n in ns],
                            seed=cfg.seed),
    }


def _figure(results: dict, rows: list, fits: dict, cfg, out) -> Figure:
    largest = max(cfg.generalisation_widths)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for activation in cfg.activations:
        color = resolve(activation).color
        mine = [r for r in rows if r[0] == activation]
        by_m = sorted((r for r in mine if r[1] == cfg.generalisation_n), key=lambda r: r[2])
        by_n = sorted((r for r in mine if r[2] == largest), key=lambda r: r[1])
        ms, ns = [r[2] for r in by_m], [r[1] for r in by_n]
        axes[0].plot(ms, [r[3] for r in by_m], marker="o", color=color, label=f"{activation}: network")
        axes[0].plot(ms, [r[5] for r in by_m], ls=":", marker="x", color=color, label=f"{activation}: Theta(W(0))")
        axes[0].axhline(by_m[0][4], ls="--", color=color, lw=1, label=f"{activation}: H*")
        axes[1].plot(ns, [r[3] for r in by_n], marker="o", color=color, label=f"{activation}: network")
        axes[1].plot(ns, [r[4] for r in by_n], ls="--", color=color, label=f"{activation}: H*")
        axes[1].plot(ns, [r[9] ** 2 for r in by_n], ls="-.", color=color, lw=1,
                     label=f"{activation}: complexity^2")
        stats = [mean_and_error([r["distance_to_kernel"] for r in _ok(results[activation, cfg.generalisation_n, m])])
                 for m in ms]
        axes[2].errorbar(ms, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, color=color,
                         label=f"{activation}: slope {format_slope(fits[activation]['distance'])}")
    axes[0].axhline(cfg.generalisation_noise ** 2, color="grey", lw=0.8)
    axes[1].axhline(cfg.generalisation_noise ** 2, color="grey", lw=0.8)
    axes[0].set(xscale="log", yscale="log", xlabel="width m", ylabel="test MSE",
                title=f"test error against width (n = {cfg.generalisation_n})")
    axes[1].set(xscale="log", yscale="log", xlabel="training points n", ylabel="test MSE",
                title=f"test error against n (m = {largest})")
    axes[2].set(xscale="log", yscale="log", xlabel="width m", ylabel=r"RMS of $f_{net} - f_{H^*}$ on test points",
                title="distance to the kernel predictor")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out, KEY)
    return Figure(KEY, "Left: test MSE against width at fixed n (solid: networks; dotted: kernel regression with "
                  "their Theta(W(0)); dashed: with H*; grey: the noise floor). Middle: against n at the largest "
                  "width, with the square of ADHLW19's complexity term. Right: RMS distance between the network "
                  "and the H* predictor on the test points (mean ± standard error over seeds, fitted slope with a "
                  "95% bootstrap interval).")


def reading(results: dict, rows: list, fits: dict, cfg) -> list[str]:
    largest = max(cfg.generalisation_widths)
    n0 = cfg.generalisation_n
    text = []
    at = {a: next(r for r in rows if r[0] == a and r[1] == n0 and r[2] == largest) for a in cfg.activations}
    stats = {a: mean_and_error([r["test_mse"] for r in _ok(results[a, n0, largest])]) for a in cfg.activations}
    ordered = sorted(cfg.activations, key=lambda a: stats[a][0])
    budget = [f"{a} (n = {n}, m = {m}: {sum(r['status'] == 'converged' for r in _ok(u))}/{len(u['runs'])})"
              for (a, n, m), u in results.items()
              if sum(r["status"] == "converged" for r in _ok(u)) < len(u["runs"])]
    text.append(
        f"Teacher f* on S^{cfg.d - 1} with label noise sd {cfg.generalisation_noise:g} (test MSE floor "
        f"{cfg.generalisation_noise ** 2:.3g}); {cfg.generalisation_test} test points. "
        + ("Every network reached ||F - y|| <= " + f"{cfg.tol:g} within {cfg.generalisation_steps} steps."
           if not budget else f"Not every network reached tol within {cfg.generalisation_steps} steps: "
           + ", ".join(budget) + "; those rows measure the network where the budget ended it."))
    described = "; ".join(f"{a} {stats[a][0]:.3g} ± {stats[a][1]:.2g} (H* {at[a][4]:.3g}, Theta(W(0)) {at[a][5]:.3g})"
                          for a in ordered)
    best = f"At n = {n0} and m = {largest} the test MSE was: {described}. "
    if len(ordered) > 1:
        (low, low_se), (next_, next_se) = stats[ordered[0]], stats[ordered[1]]
        gap = (next_ - low) / math.hypot(low_se, next_se) if low_se or next_se else math.inf
        best += (f"{ordered[0]} generalised best" if gap >= 2 else f"{ordered[0]} had the lowest test MSE, but no "
                 "activation generalised measurably better at this n") + (
            f": {(next_ - low) / low:.1%} below {ordered[1]} ({gap:.1f} combined standard errors over seeds) and "
            f"{(stats[ordered[-1]][0] - low) / low:.1%} below {ordered[-1]}")
    else:
        best += f"{ordered[0]} alone was run"
    by_kernel = sorted(cfg.activations, key=lambda a: at[a][4])
    same = [f"{a} and {b}" for a, b in zip(by_kernel, by_kernel[1:]) if abs(at[a][4] - at[b][4]) <= 1e-9 * at[a][4]]
    text.append(best + f"; by the H* interpolant the order is {', '.join(by_kernel)}"
                + (f" ({'; '.join(same)} give the same interpolant to 1e-9: their limit kernels are proportional on "
                   "these inputs)" if same else "") + ".")
    parts = []
    for a in cfg.activations:
        fit = fits[a]["distance"]
        mine = sorted((r for r in rows if r[0] == a and r[1] == n0), key=lambda r: r[2])
        verdict = ("shrinks with m: the networks converge to their kernel predictor" if fit["high"] < 0 else
                   "grows with m" if fit["low"] > 0 else "has no clear trend over this grid")
        parts.append(f"{a}: {mine[0][6]:.3g} at m = {mine[0][2]} to {mine[-1][6]:.3g} at m = {mine[-1][2]}, slope "
                     f"{format_slope(fit)}, {verdict}")
    text.append("RMS distance between the trained network and the H* predictor on the test points: "
                + "; ".join(parts) + ".")
    ratios = [r[7] / r[8] for r in rows if r[8] > 0 and r[7] == r[7]]
    text.append(f"Distance travelled ||W(T) - W(0)||_F against the kernel-regime value "
                f"sqrt((y - F_0)^T Theta(W(0))^-1 (y - F_0)): ratio {min(ratios):.3g} to {max(ratios):.3g} over "
                f"the {len(ratios)} rows (1 = exactly as the linearised network moves).")
    parts = []
    for a in cfg.activations:
        mine = sorted((r for r in rows if r[0] == a and r[2] == largest), key=lambda r: r[1])
        above = sum(r[9] >= math.sqrt(r[3]) for r in mine)
        parts.append(f"{a} ({theory.complexity_source(a)}): {mine[0][9]:.3g} at n = {mine[0][1]} to "
                     f"{mine[-1][9]:.3g} at n = {mine[-1][1]} against a root test MSE of {math.sqrt(mine[0][3]):.3g} "
                     f"to {math.sqrt(mine[-1][3]):.3g}, above it at {above} of {len(mine)} n; test MSE against n "
                     f"slope {format_slope(fits[a]['test_n'])}")
    by_kernel = sorted(cfg.activations, key=lambda a: at[a][4])
    scale = [f"{a} and {b} share their interpolant but their complexities differ by a factor "
             f"{max(at[a][9], at[b][9]) / min(at[a][9], at[b][9]):.3g}" for a, b in zip(by_kernel, by_kernel[1:])
             if abs(at[a][4] - at[b][4]) <= 1e-9 * at[a][4] and at[a][9] > 0 and at[b][9] > 0]
    text.append("ADHLW19's complexity term sqrt(2 y^T H*^-1 y / n) (the leading term of a bound on a 1-Lipschitz "
                "loss; compared here with the root test MSE): " + "; ".join(parts) + "."
                + (f" At n = {n0}, {'; '.join(scale)}: the term scales as the kernel's size^-1/2, the predictor does "
                   "not." if scale else ""))
    return text
