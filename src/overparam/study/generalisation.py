"""Section (g): generalisation. Test error of GD-trained networks against width and data, beside the
kernel predictors GD approaches (docs/mathematics.md#generalisation).

Data: `data.teacher_split`: x uniform on S^{d-1}, labels y = f*(x) + noise with the smooth teacher
`data.cosine_teacher` and Gaussian noise of standard deviation `noise`. Training sets are nested in n (the
first n points of one draw); the test set is fixed and separate, with its own noisy labels, so a test MSE
of noise^2 is the floor.

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

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .. import plots, theory
from ..activations import resolve
from ..training.batched import train_batched
from ..data import teacher_split
from ..kernels.regime import KernelRegime, complexity
from ..models import TwoLayerNet
from ..kernels.infinite import infinite_ntk
from .framework import (Plot, Report, RunStatus, SectionConfig, StudySection, Unit, require_even, require_grid,
                        require_positive, require_seeds, table)
from .report import Fact
from .stats import format_slope, mean_and_error, power_law


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


@dataclass
class SeedFit(RunStatus):
    """One seed's network after training (module docstring); NaN where its training failed (`error`)."""

    seed: int
    status: str
    steps: int = 0
    final_residual: float = float("nan")
    test_mse: float = float("nan")
    finite_kernel_test_mse: float = float("nan")
    distance_to_kernel: float = float("nan")
    distance_travelled: float = float("nan")
    predicted_distance: float = float("nan")
    error: str = ""


@dataclass
class FitRecord:
    """lam = lambda_min(H*) on the training inputs; the H* interpolant's test MSE; ADHLW19's complexity;
    one SeedFit per seed."""

    lam: float
    kernel_test_mse: float
    complexity: float
    runs: list[SeedFit]

    @property
    def ok(self) -> list[SeedFit]:
        return [r for r in self.runs if r.ok]


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float((prediction - target).square().mean())


@dataclass(frozen=True)
class TeacherFit(Unit):
    """Train `seeds` networks (coupled init, seeds 0..seeds-1) of width m on the first n points of
    `data.teacher_split(n, d, test, noise, data_seed)` to tol, and measure them against the kernel predictors."""

    RECORD = FitRecord

    activation: str
    n: int
    width: int
    d: int
    sigma: float
    data_seed: int
    noise: float
    test: int
    seeds: int
    steps: int
    tol: float

    def compute(self, ctx) -> FitRecord:
        split = teacher_split(self.n, self.d, self.test, self.noise, self.data_seed)
        X, y, X_test, y_test = (torch.from_numpy(v) for v in split)
        limit = KernelRegime.infinite(self.activation, X, y, eta_eff=1.0, sigma=self.sigma)
        kernel_prediction = limit.predict(X_test)
        nets = [TwoLayerNet(self.d, self.width, 1, self.activation, init="coupled", sigma=self.sigma, seed=s,
                            device=ctx.device) for s in range(self.seeds)]
        W0 = torch.stack([net.W for net in nets])
        W = W0.clone()
        histories = train_batched(X.to(ctx.device), y.to(ctx.device), W, torch.stack([net.a for net in nets]),
                                  self.activation, nets[0].kappa, lr="auto", steps=self.steps, tol=self.tol,
                                  record_every=self.steps, paired=True)
        runs = []
        for seed, (net, history) in enumerate(zip(nets, histories)):
            if isinstance(history, Exception):
                runs.append(SeedFit(seed, "failed", error=str(history)))
                continue
            linear = KernelRegime.of_network(net, X, y, history.lr)  # net still holds W(0)
            net.W = W[seed]
            prediction = net(X_test.to(ctx.device)).cpu()
            runs.append(SeedFit(
                seed, history.status, steps=history.steps, final_residual=float(history.residual_norm[-1]),
                test_mse=_mse(prediction, y_test), finite_kernel_test_mse=_mse(linear.predict(X_test), y_test),
                distance_to_kernel=math.sqrt(_mse(prediction, kernel_prediction)),
                distance_travelled=float((W[seed] - W0[seed]).norm()),
                # (y - F_0)^T Theta^{-1} (y - F_0) in Theta(W(0))'s eigenbasis: sum_i c_i^2 / mu_i
                predicted_distance=float((linear.coordinates.square() / linear.eigenvalues).sum().sqrt())))
        return FitRecord(float(limit.eigenvalues[0]), _mse(kernel_prediction, y_test),
                         complexity(infinite_ntk(self.activation, X, self.sigma), y), runs)


@dataclass
class Row:
    """One (activation, n, m) of the grid: the per-seed quantities averaged over the seeds that ran."""

    activation: str
    n: int
    m: int
    test_mse: float
    kernel_test_mse: float
    finite_kernel_test_mse: float
    distance_to_kernel: float
    distance_travelled: float
    predicted_distance: float
    complexity: float


COLUMNS = [(f.name, f.name) for f in fields(Row)]
AVERAGED = ("test_mse", "finite_kernel_test_mse", "distance_to_kernel", "distance_travelled", "predicted_distance")


def grid(cfg) -> list[tuple[int, int]]:
    """(n, m) pairs: every width at n = cfg.n, then every n of cfg.ns at the largest width."""
    largest = max(cfg.widths)
    pairs = [(cfg.n, m) for m in cfg.widths]
    return pairs + [(n, largest) for n in cfg.ns if (n, largest) not in pairs]


def row(activation: str, n: int, m: int, record: FitRecord) -> Row:
    runs = record.ok
    mean = {k: float(np.mean([getattr(r, k) for r in runs])) if runs else float("nan") for k in AVERAGED}
    return Row(activation, n, m, mean["test_mse"], record.kernel_test_mse, mean["finite_kernel_test_mse"],
               mean["distance_to_kernel"], mean["distance_travelled"], mean["predicted_distance"], record.complexity)


class Generalisation(StudySection):
    KEY = "generalisation"
    TITLE = "(g) Generalisation: test error against width and data, beside the kernel predictors"
    Config = Config

    def units(self, study, cfg) -> list[TeacherFit]:
        return [TeacherFit(a, n, m, study.d, study.sigma, study.seed, cfg.noise, cfg.test, cfg.seeds, cfg.steps,
                           study.tol) for a in study.activations for n, m in grid(cfg)]

    def report(self, study, cfg, records) -> Report:
        found = {(u.activation, u.n, u.width): r for u, r in records.items()}
        rows = [row(a, n, m, found[a, n, m]) for a in study.activations for n, m in grid(cfg)]
        fits = {a: _fits(study, cfg, found, a) for a in study.activations}
        largest = max(cfg.widths)
        at = {r.activation: r for r in rows if r.n == cfg.n and r.m == largest}
        return Report(
            reading=reading(study, cfg, found, rows, fits),
            tables=[table("generalisation", "Test MSE (fixed test set, noisy labels) of GD-trained networks (coupled "
                          f"init, trained to ||F - y|| <= {study.tol:g}; mean over {cfg.seeds} seeds), of kernel "
                          "regression with H* and with Theta(W(0)), the distance to the H* predictor on the test "
                          "points, the distance travelled ||W(T) - W(0)||_F and its kernel-regime prediction, and "
                          "ADHLW19's complexity sqrt(2 y^T H*^-1 y / n)", rows, COLUMNS)],
            facts=[fact for a in study.activations for fact in (
                Fact(a, f"test MSE at m = {largest} (n = {cfg.n})", at[a].test_mse),
                Fact(a, f"test MSE of kernel regression with H* (n = {cfg.n})", at[a].kernel_test_mse))],
            plots=[Plot("generalisation", "Left: test MSE against width at fixed n (solid: networks; dotted: kernel "
                        "regression with their Theta(W(0)); dashed: with H*; grey: the noise floor). Middle: against "
                        "n at the largest width, with the square of ADHLW19's complexity term. Right: RMS distance "
                        "between the network and the H* predictor on the test points (mean ± standard error over "
                        "seeds, fitted slope with a 95% bootstrap interval).",
                        figure(study, cfg, found, rows, fits))])


def _fits(study, cfg, found: dict, activation: str) -> dict:
    """Log-log slopes: distance to the kernel predictor against m, test MSE against n."""
    largest = max(cfg.widths)
    widths = sorted(cfg.widths)
    ns = sorted({n for n, m in grid(cfg) if m == largest})
    return {
        "distance": power_law(widths, [[r.distance_to_kernel for r in found[activation, cfg.n, m].ok]
                                       for m in widths], seed=study.seed),
        "test_n": power_law(ns, [[r.test_mse for r in found[activation, n, largest].ok] for n in ns], seed=study.seed),
    }


def figure(study, cfg, found: dict, rows: list[Row], fits: dict):
    largest = max(cfg.widths)
    fig, axes = plots.figure(1, 3, size=(15, 4.2))
    by_width, by_size, distance = axes
    for activation in study.activations:
        color = resolve(activation).color
        mine = [r for r in rows if r.activation == activation]
        by_m = sorted((r for r in mine if r.n == cfg.n), key=lambda r: r.m)
        by_n = sorted((r for r in mine if r.m == largest), key=lambda r: r.n)
        ms, ns = [r.m for r in by_m], [r.n for r in by_n]
        by_width.plot(ms, [r.test_mse for r in by_m], marker="o", color=color, label=f"{activation}: network")
        by_width.plot(ms, [r.finite_kernel_test_mse for r in by_m], ls=":", marker="x", color=color,
                      label=f"{activation}: Theta(W(0))")
        by_width.axhline(by_m[0].kernel_test_mse, ls="--", color=color, lw=1, label=f"{activation}: H*")
        by_size.plot(ns, [r.test_mse for r in by_n], marker="o", color=color, label=f"{activation}: network")
        by_size.plot(ns, [r.kernel_test_mse for r in by_n], ls="--", color=color, label=f"{activation}: H*")
        by_size.plot(ns, [r.complexity ** 2 for r in by_n], ls="-.", color=color, lw=1,
                     label=f"{activation}: complexity^2")
        stats = [mean_and_error([r.distance_to_kernel for r in found[activation, cfg.n, m].ok]) for m in ms]
        distance.errorbar(ms, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, color=color,
                          label=f"{activation}: slope {format_slope(fits[activation]['distance'])}")
    by_width.axhline(cfg.noise ** 2, color="grey", lw=0.8)
    by_size.axhline(cfg.noise ** 2, color="grey", lw=0.8)
    by_width.set(xscale="log", yscale="log", xlabel="width m", ylabel="test MSE",
                 title=f"test error against width (n = {cfg.n})")
    by_size.set(xscale="log", yscale="log", xlabel="training points n", ylabel="test MSE",
                title=f"test error against n (m = {largest})")
    distance.set(xscale="log", yscale="log", xlabel="width m", ylabel=r"RMS of $f_{net} - f_{H^*}$ on test points",
                 title="distance to the kernel predictor")
    for ax in axes:
        plots.finish(ax, legend=7)
    return fig


def reading(study, cfg, found: dict, rows: list[Row], fits: dict) -> list[str]:
    largest, n0 = max(cfg.widths), cfg.n
    text = []
    at = {r.activation: r for r in rows if r.n == n0 and r.m == largest}
    stats = {a: mean_and_error([r.test_mse for r in found[a, n0, largest].ok]) for a in study.activations}
    ordered = sorted(study.activations, key=lambda a: stats[a][0])
    budget = [f"{a} (n = {n}, m = {m}: {sum(r.converged for r in record.ok)}/{len(record.runs)})"
              for (a, n, m), record in found.items() if sum(r.converged for r in record.ok) < len(record.runs)]
    text.append(
        f"Teacher f* on S^{study.d - 1} with label noise sd {cfg.noise:g} (test MSE floor {cfg.noise ** 2:.3g}); "
        f"{cfg.test} test points. "
        + ("Every network reached ||F - y|| <= " + f"{study.tol:g} within {cfg.steps} steps."
           if not budget else f"Not every network reached tol within {cfg.steps} steps: "
           + ", ".join(budget) + "; those rows measure the network where the budget ended it."))
    described = "; ".join(f"{a} {stats[a][0]:.3g} ± {stats[a][1]:.2g} (H* {at[a].kernel_test_mse:.3g}, Theta(W(0)) "
                          f"{at[a].finite_kernel_test_mse:.3g})" for a in ordered)
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
    by_kernel = sorted(study.activations, key=lambda a: at[a].kernel_test_mse)
    shared = [(a, b) for a, b in zip(by_kernel, by_kernel[1:])
              if abs(at[a].kernel_test_mse - at[b].kernel_test_mse) <= 1e-9 * at[a].kernel_test_mse]
    same = [f"{a} and {b}" for a, b in shared]
    text.append(best + f"; by the H* interpolant the order is {', '.join(by_kernel)}"
                + (f" ({'; '.join(same)} give the same interpolant to 1e-9: their limit kernels are proportional on "
                   "these inputs)" if same else "") + ".")
    parts = []
    for a in study.activations:
        fit = fits[a]["distance"]
        mine = sorted((r for r in rows if r.activation == a and r.n == n0), key=lambda r: r.m)
        verdict = ("shrinks with m: the networks converge to their kernel predictor" if fit["high"] < 0 else
                   "grows with m" if fit["low"] > 0 else "has no clear trend over this grid")
        parts.append(f"{a}: {mine[0].distance_to_kernel:.3g} at m = {mine[0].m} to {mine[-1].distance_to_kernel:.3g} "
                     f"at m = {mine[-1].m}, slope {format_slope(fit)}, {verdict}")
    text.append("RMS distance between the trained network and the H* predictor on the test points: "
                + "; ".join(parts) + ".")
    ratios = [r.distance_travelled / r.predicted_distance for r in rows
              if r.predicted_distance > 0 and r.distance_travelled == r.distance_travelled]
    text.append(f"Distance travelled ||W(T) - W(0)||_F against the kernel-regime value "
                f"sqrt((y - F_0)^T Theta(W(0))^-1 (y - F_0)): ratio {min(ratios):.3g} to {max(ratios):.3g} over "
                f"the {len(ratios)} rows (1 = exactly as the linearised network moves).")
    parts = []
    for a in study.activations:
        mine = sorted((r for r in rows if r.activation == a and r.m == largest), key=lambda r: r.n)
        above = sum(r.complexity >= math.sqrt(r.test_mse) for r in mine)
        parts.append(f"{a} ({theory.complexity_source(a)}): {mine[0].complexity:.3g} at n = {mine[0].n} to "
                     f"{mine[-1].complexity:.3g} at n = {mine[-1].n} against a root test MSE of "
                     f"{math.sqrt(mine[0].test_mse):.3g} to {math.sqrt(mine[-1].test_mse):.3g}, above it at {above} "
                     f"of {len(mine)} n; test MSE against n slope {format_slope(fits[a]['test_n'])}")
    scale = [f"{a} and {b} share their interpolant but their complexities differ by a factor "
             f"{max(at[a].complexity, at[b].complexity) / min(at[a].complexity, at[b].complexity):.3g}"
             for a, b in shared if at[a].complexity > 0 and at[b].complexity > 0]
    text.append("ADHLW19's complexity term sqrt(2 y^T H*^-1 y / n) (the leading term of a bound on a 1-Lipschitz "
                "loss; compared here with the root test MSE): " + "; ".join(parts) + "."
                + (f" At n = {n0}, {'; '.join(scale)}: the term scales as the kernel's size^-1/2, the predictor does "
                   "not." if scale else ""))
    return text


SECTION = Generalisation()
