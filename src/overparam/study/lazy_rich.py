"""Section lazy_rich: where the kernel regime ends, per activation (docs/mathematics.md#output-scale).

Every network here starts from coupled initialisation (F(W(0)) = 0) and is trained by full-batch GD on
L_alpha(W) = ||alpha F(W, X) - y||^2 / (2 alpha^2) (Chizat-Oyallon-Bach 2019) with lr = 1 / lambda_max(Theta(W(0)))
(the kernel that moves u = alpha F; halved after a divergence) until ||alpha F - y||_2 <= tol or the step
budget ends. Measured at the end, W(T):

- drift = ||Theta(W(T)) - Theta(W(0))||_2 / ||Theta(W(0))||_2 (spectral norms; Theta = J J^T of F, so the
  same for alpha F's kernel alpha^2 Theta);
- movement = ||W(T) - W(0)||_F / ||W(0)||_F;
- kernel-target alignment A(Theta) = y^T Theta y / (||Theta||_F ||y||^2) at W(0) and W(T);
- test MSE of alpha F(W(T), .) on the smooth ridge teacher (`data.cosine_teacher`, noisy labels as in the
  generalisation section, `data.teacher_split`), beside kernel regression with H* (the m -> infinity, alpha -> infinity limit).

alpha*(m) is where the drift crosses `level` (0.1), interpolated linearly in (log alpha, log drift) between the
grid points around the crossing; its exponent in m is compared with Geiger-Spigler-Jacot-Wyart's m^(-1/2)
(relu), and the drift's slope in alpha on the lazy side with docs/mathematics.md#output-scale's -1 (relu) and
-2 (smooth activations). Mean-field relu (kappa = 1/m at alpha = 1, the same network as alpha = m^(-1/2) in the
kappa = 1/sqrt(m) parametrisation) is a reference row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import plots, theory
from ..activations import resolve
from ..data import teacher_split
from ..kernels.regime import KernelRegime
from ..models import TwoLayerNet
from ..kernels.finite import ntk
from ..training.loop import train
from .framework import (Plot, Report, SectionConfig, StudySection, Unit, require_even, require_grid, require_positive,
                        require_seeds, table)
from .report import Fact

KEY = "lazy_rich"
TITLE = "(i) Where the kernel regime ends: the lazy-to-rich transition in the output scale alpha"
#: The drift level that defines alpha*(m).
LEVEL = 0.1
#: The label of the mean-field reference rows (kappa = 1/m, alpha = 1).
MEAN_FIELD = f"{theory.MEAN_FIELD_ACTIVATION} (kappa = 1/m)"
TABLE_COLUMNS = ("activation", "m", "alpha", "seed", "drift", "movement", "steps", "alignment_0", "alignment_T",
                 "test_mse", "status")
CROSSOVER_COLUMNS = ("activation", "m", "alpha_star", "low", "high")


@dataclass(frozen=True)
class Config(SectionConfig):
    """The grid: the study's activations x widths x alphas x seeds, plus mean-field relu at every width and
    seed (mean_field). alphas: the output scales, a log grid wide enough that every activation crosses
    `level`; n training points and `test` test points on S^{d-1}, labels with noise of sd `noise`; steps:
    the budget per run; halvings: how often a diverging run is restarted at half the step. The networks
    always start from coupled initialisation (F(W(0)) = 0 at every alpha), whatever the study's init."""

    widths: tuple[int, ...] = (256, 1024, 4096)
    alphas: tuple[float, ...] = tuple(10 ** (k / 2) for k in range(-6, 3))
    seeds: int = 3
    n: int = 32
    test: int = 500
    noise: float = 0.1
    steps: int = 3000
    halvings: int = 6
    level: float = LEVEL
    mean_field: bool = True

    def check(self) -> None:
        require_grid("widths", self.widths, minimum=2)
        require_even("widths", self.widths, "coupled")
        require_grid("alphas", self.alphas, minimum=2)
        require_seeds("seeds", self.seeds)
        for name in ("n", "test", "steps", "level"):
            require_positive(name, getattr(self, name))
        if self.noise < 0 or self.halvings < 0:
            raise ValueError(f"noise and halvings must be >= 0, got {self.noise!r} and {self.halvings!r}")


@dataclass
class LazyRichRecord:
    """What one run measured (module docstring). status: converged | max_steps | diverged (after every
    halving); lr: the step the run used, after `halvings` halvings of 1 / lambda_max(Theta(W(0)))."""

    activation: str
    m: int
    alpha: float
    seed: int
    drift: float
    movement: float
    steps: int
    alignment_0: float
    alignment_T: float
    test_mse: float
    status: str
    lr: float
    halvings: int
    final_residual: float


@dataclass(frozen=True)
class LazyRichRun(Unit):
    """One unit of work: one network (activation, width, alpha, seed) trained and measured.
    mean_field: kappa = 1/m instead of the activation's default scale."""

    RECORD = LazyRichRecord

    activation: str
    width: int
    alpha: float
    seed: int
    mean_field: bool
    n: int
    d: int
    sigma: float
    data_seed: int
    noise: float
    test: int
    tol: float
    steps: int
    halvings: int

    @property
    def label(self) -> str:
        return MEAN_FIELD if self.mean_field else self.activation

    def compute(self, ctx) -> LazyRichRecord:
        return compute_run(self, ctx.device)


@dataclass
class KernelBaseline:
    """Kernel regression with H* on the same data: the interpolant H*(x, X) H*(X, X)^-1 y."""

    activation: str
    kernel_test_mse: float


@dataclass(frozen=True)
class KernelBaselineUnit(Unit):
    """The H* interpolant's test MSE on the runs' data (what GD approaches as alpha, m -> infinity)."""

    RECORD = KernelBaseline

    activation: str
    n: int
    d: int
    sigma: float
    data_seed: int
    noise: float
    test: int

    def compute(self, ctx) -> KernelBaseline:
        X, y, X_test, y_test = problem(self.n, self.d, self.test, self.noise, self.data_seed)
        prediction = KernelRegime.infinite(self.activation, X, y, eta_eff=1.0, sigma=self.sigma).predict(X_test)
        return KernelBaseline(self.activation, float((prediction - y_test).square().mean()))


@dataclass
class Crossover:
    """alpha*(m) of one activation and width: the geometric mean of the seeds' crossings, with their range
    [low, high]; NaN where a seed's drift does not cross `level` on the grid."""

    activation: str
    m: int
    alpha_star: float
    low: float
    high: float
    per_seed: tuple[float, ...]


def runs(study, cfg: Config) -> list[LazyRichRun]:
    """Every run of the grid, then the mean-field reference runs (relu, alpha = 1)."""
    shared = dict(n=cfg.n, d=study.d, sigma=study.sigma, data_seed=study.seed, noise=cfg.noise, test=cfg.test,
                  tol=study.tol, steps=cfg.steps, halvings=cfg.halvings)
    grid = [LazyRichRun(activation, m, float(alpha), seed, False, **shared)
            for activation in study.activations for m in cfg.widths for alpha in cfg.alphas
            for seed in range(cfg.seeds)]
    if cfg.mean_field:
        grid += [LazyRichRun(theory.MEAN_FIELD_ACTIVATION, m, 1.0, seed, True, **shared) for m in cfg.widths
                 for seed in range(cfg.seeds)]
    return grid


def problem(n: int, d: int, test: int, noise: float, seed: int) -> tuple[torch.Tensor, ...]:
    """`data.teacher_split` as float64 tensors: X (n, d), y (n, 1), X_test (test, d), y_test (test, 1)."""
    return tuple(torch.from_numpy(v) for v in teacher_split(n, d, test, noise, seed))


def relative_drift(initial: torch.Tensor, final: torch.Tensor) -> float:
    """||Theta(W(T)) - Theta(W(0))||_2 / ||Theta(W(0))||_2 (spectral norms)."""
    return float(torch.linalg.matrix_norm(final - initial, 2) / torch.linalg.matrix_norm(initial, 2))


def alignment(kernel: torch.Tensor, y: torch.Tensor) -> float:
    """Kernel-target alignment A(Theta) = y^T Theta y / (||Theta||_F ||y||^2)."""
    y = y.reshape(-1)
    return float(y @ kernel @ y / (torch.linalg.matrix_norm(kernel) * y.dot(y)))


def compute_run(run: LazyRichRun, device: str = "cpu") -> LazyRichRecord:
    """Train the run's network on L_alpha (module docstring) and measure it at the end."""
    X, y, X_test, y_test = problem(run.n, run.d, run.test, run.noise, run.data_seed)
    lr: float | str = "auto"
    for halvings in range(run.halvings + 1):
        net = TwoLayerNet(run.d, run.width, 1, run.activation, scale="1/m" if run.mean_field else None,
                          init="coupled", sigma=run.sigma, seed=run.seed, device=device)
        W0 = net.W.clone()
        history = train(net, X, y, lr=lr, steps=run.steps, tol=run.tol, record_every=run.steps,
                        output_scale=run.alpha)
        if history.status != "diverged":
            break
        lr = history.lr / 2
    final, movement = ntk(net, X, normalized=False).cpu(), float((net.W - W0).norm() / W0.norm())
    prediction = run.alpha * net(X_test).cpu()
    net.W = W0
    initial = ntk(net, X, normalized=False).cpu()
    return LazyRichRecord(
        activation=run.label, m=run.width, alpha=run.alpha, seed=run.seed,
        drift=relative_drift(initial, final), movement=movement,
        steps=history.steps, alignment_0=alignment(initial, y), alignment_T=alignment(final, y),
        test_mse=float((prediction - y_test).square().mean()), status=history.status, lr=float(history.lr),
        halvings=halvings,
        final_residual=float(history.residual_norm[-1]),
    )


# ----------------------------------------------------------------------------- the crossover and its fits


def crossing(alphas: Sequence[float], drifts: Sequence[float], level: float = LEVEL) -> float:
    """The alpha where the drift falls through `level`: linear interpolation in (log alpha, log drift)
    between the grid points around the crossing (the last one, from the rich side, where the drift is not
    monotone); NaN where it does not cross on the grid. alphas increasing, drifts >= 0: a drift of exactly 0
    (relu's kernel is constant while no activation pattern flips) is log drift = -inf, the limit of which
    puts the crossing at the grid point before it."""
    a, v = np.log(np.asarray(alphas, dtype=float)), np.asarray(drifts, dtype=float)
    keep = np.isfinite(v) & (v >= 0)
    with np.errstate(divide="ignore"):
        a, v = a[keep], np.log(v[keep])
    target = math.log(level)
    found = [j for j in range(len(a) - 1) if v[j] >= target > v[j + 1]]
    if not found:
        return float("nan")
    j = found[-1]
    return float(math.exp(a[j] + (target - v[j]) * (a[j + 1] - a[j]) / (v[j + 1] - v[j])))


def crossovers(records: Sequence[LazyRichRecord], level: float = LEVEL) -> list[Crossover]:
    """alpha*(m) per (activation, width) of the alpha grid, from the runs that did not diverge (a diverged
    run's drift is that of its last finite weights, not of a trained network); mean-field rows have no grid."""
    out = []
    groups = sorted({(r.activation, r.m) for r in records if r.activation != MEAN_FIELD},
                    key=lambda key: (key[0], key[1]))
    for activation, m in groups:
        mine = [r for r in records if r.activation == activation and r.m == m]
        per_seed = []
        for seed in sorted({r.seed for r in mine}):
            curve = sorted((r.alpha, r.drift) for r in mine if r.seed == seed and r.status != "diverged")
            per_seed.append(crossing([c[0] for c in curve], [c[1] for c in curve], level))
        values = np.asarray(per_seed)
        if np.all(np.isfinite(values)):
            star, low, high = float(np.exp(np.log(values).mean())), float(values.min()), float(values.max())
        else:
            star = low = high = float("nan")
        out.append(Crossover(activation, m, star, low, high, tuple(per_seed)))
    return out


def width_exponent(found: Sequence[Crossover]) -> dict:
    """p in alpha*(m) ~ m^p for one activation: numpy.polyfit of log alpha* against log m, with the range of
    the seeds' own slopes (seed s's crossings at every width) as [low, high]; NaN below two widths."""
    usable = [c for c in found if math.isfinite(c.alpha_star)]
    if len(usable) < 2:
        return {"p": float("nan"), "low": float("nan"), "high": float("nan")}
    logs = np.log([c.m for c in usable])
    p = float(np.polyfit(logs, np.log([c.alpha_star for c in usable]), 1)[0])
    slopes = [float(np.polyfit(logs, np.log(seed_values), 1)[0]) for seed_values in zip(*(c.per_seed for c in usable))]
    return {"p": p, "low": min(slopes), "high": max(slopes)}


def drift_slope(records: Sequence[LazyRichRecord], activation: str, m: int, level: float = LEVEL) -> float:
    """d log drift / d log alpha on the lazy side: numpy.polyfit over the grid points whose drift (geometric
    mean over seeds) is below `level` and positive for every seed (a drift of 0, no relu pattern flipped,
    has no logarithm); NaN with fewer than two such points."""
    mine = [r for r in records if r.activation == activation and r.m == m and r.status != "diverged"]
    alphas = sorted({r.alpha for r in mine})
    means = [_geometric([r.drift for r in mine if r.alpha == a]) for a in alphas]
    positive = [all(r.drift > 0 for r in mine if r.alpha == a) for a in alphas]
    lazy = [(a, v) for a, v, usable in zip(alphas, means, positive) if v < level and usable]
    if len(lazy) < 2:
        return float("nan")
    return float(np.polyfit(np.log([a for a, _ in lazy]), np.log([v for _, v in lazy]), 1)[0])


def predicted_drift_slope(activation: str) -> float:
    return theory.predicted_drift_slope(activation)


# ----------------------------------------------------------------------------- figures and reading


def _geometric(values) -> float:
    values = np.asarray([v for v in values if v > 0 and math.isfinite(v)], dtype=float)
    return float(np.exp(np.log(values).mean())) if len(values) else float("nan")


def drift_figure(records: Sequence[LazyRichRecord], study, cfg: Config):
    """One panel per activation: drift against alpha, one line per width (geometric mean over seeds, bars
    the seeds' range); the level that defines alpha*, alpha = 1 (the papers' scaling) and, on relu's panel,
    the mean-field runs at their equivalent alpha = m^(-1/2)."""
    import matplotlib.pyplot as plt

    fig, axes = plots.figure(1, len(study.activations), size=(4.6 * len(study.activations), 4), squeeze=False)
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, len(cfg.widths)))
    for ax, activation in zip(axes[0], study.activations):
        for shade, m in zip(shades, cfg.widths):
            mine = [r for r in records if r.activation == activation and r.m == m and r.status != "diverged"]
            alphas = sorted({r.alpha for r in mine})
            groups = [[r.drift for r in mine if r.alpha == a] for a in alphas]
            centre = np.array([_geometric(g) for g in groups])
            ax.errorbar(alphas, centre, yerr=[centre - [min(g) for g in groups], [max(g) for g in groups] - centre],
                        marker="o", ms=3, capsize=2, color=shade, label=f"m = {m}")
            if activation == theory.MEAN_FIELD_ACTIVATION and cfg.mean_field:
                field = [r.drift for r in records if r.activation == MEAN_FIELD and r.m == m]
                if field:
                    ax.plot([m ** -0.5], [_geometric(field)], marker="*", ms=11, color=shade, ls="none")
        ax.axhline(cfg.level, color="grey", ls="--", lw=1)
        ax.axvline(1.0, color="black", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="output scale alpha", ylabel="relative kernel drift",
               title=activation)
        plots.finish(ax, legend=7)
    return fig


DRIFT_CAPTION = ("Relative kernel drift ||Theta(W(T)) - Theta(W(0))||_2 / ||Theta(W(0))||_2 at the end of training "
                 "against the output scale alpha, one line per width (geometric mean over seeds, bars: the seeds' "
                 "range). Dashed: the level that defines alpha*; dotted: alpha = 1, the papers' scaling; stars on "
                 "relu's panel: mean-field relu (kappa = 1/m) at its equivalent alpha = m^(-1/2).")


def crossover_figure(found: Sequence[Crossover], study, cfg: Config):
    """alpha*(m) per activation with the seeds' range, GSJW's m^(-1/2) through relu's smallest width, and
    alpha = 1."""
    import matplotlib.pyplot as plt

    fig, ax = plots.figure(size=(5.5, 4.2))
    for activation in study.activations:
        mine = [c for c in found if c.activation == activation and math.isfinite(c.alpha_star)]
        if not mine:
            continue
        fit = width_exponent(mine)
        ms, stars = [c.m for c in mine], np.array([c.alpha_star for c in mine])
        ax.errorbar(ms, stars, yerr=[stars - [c.low for c in mine], [c.high for c in mine] - stars], marker="o",
                    capsize=3, color=resolve(activation).color,
                    label=f"{activation}: m^{fit['p']:+.2f} [{fit['low']:+.2f}, {fit['high']:+.2f}]")
        if activation in theory.LAZY_RICH_EXPONENTS:
            exponent, source = theory.LAZY_RICH_EXPONENTS[activation]
            ax.plot(ms, stars[0] * (np.array(ms) / ms[0]) ** exponent, color="grey", ls="--", lw=1,
                    label=f"m^{exponent:+.1f} ({source})")
    ax.axhline(1.0, color="black", ls=":", lw=1, label="alpha = 1 (papers)")
    ax.set(xscale="log", yscale="log", xlabel="width m", ylabel=f"alpha* (drift = {cfg.level:g})",
           title="where the kernel regime ends")
    ax.set_xticks(list(cfg.widths), [str(m) for m in cfg.widths])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    plots.finish(ax, legend=7)
    return fig


CROSSOVER_CAPTION = ("alpha*(m), the output scale at which the kernel drift crosses the level (interpolated on the "
                     "log grid), per activation: geometric mean over seeds, bars the seeds' range; legend: the "
                     "fitted exponent with the range of the seeds' own slopes. Above alpha* training is lazy.")


def _mean_and_error(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def reading(records: Sequence[LazyRichRecord], found: Sequence[Crossover], baselines: Sequence[KernelBaseline],
            study, cfg: Config) -> list[str]:
    """The section's reading, every statement derived from the records."""
    text = []
    grid = [r for r in records if r.activation != MEAN_FIELD]

    def where(rows) -> str:
        return ", ".join(sorted({f"{r.activation} m = {r.m} alpha = {r.alpha:.3g}" for r in rows}))

    budget = [r for r in records if r.status == "max_steps"]
    diverged = [r for r in records if r.status == "diverged"]
    halved = [r for r in records if r.halvings and r.status != "diverged"]
    text.append(
        f"{len(records)} networks (n = {cfg.n}, d = {study.d}, coupled init, {cfg.seeds} seeds; alpha from "
        f"{min(cfg.alphas):.3g} to {max(cfg.alphas):.3g}), each trained by GD on L_alpha to ||alpha F - y|| <= "
        f"{study.tol:g} within {cfg.steps} steps: {len(records) - len(budget) - len(diverged)} converged."
        + (f" {len(budget)} spent the budget first ({where(budget)}): their rows are measured where it ended."
           if budget else "")
        + (f" {len(halved)} diverged at lr = 1/lambda_max(Theta(W(0))) and converged or ran out of budget at a "
           f"halved step ({where(halved)})." if halved else "")
        + (f" {len(diverged)} diverged even after {cfg.halvings} halvings of the step ({where(diverged)}): they "
           "are left out of alpha*, the slopes and the figure." if diverged else ""))
    level = cfg.level
    largest = max(cfg.widths)
    stars = {(c.activation, c.m): c for c in found}
    parts = []
    for activation in study.activations:
        mine = [stars[activation, m] for m in cfg.widths if (activation, m) in stars]
        fit = width_exponent(mine)
        values = ", ".join(f"m = {c.m}: {c.alpha_star:.3g} [{c.low:.3g}, {c.high:.3g}]" for c in mine)
        exponent, source = theory.LAZY_RICH_EXPONENTS.get(activation, (None, ""))
        reference = (f" against {source}'s {exponent:+.1f}: "
                     + ("within the seeds' range" if fit["low"] - 1e-9 <= exponent <= fit["high"] + 1e-9
                        else "outside the seeds' range")
                     if exponent is not None and math.isfinite(fit["p"]) else "")
        parts.append(f"{activation}: {values}; exponent {fit['p']:+.2f} (seeds {fit['low']:+.2f} to "
                     f"{fit['high']:+.2f}){reference}")
    text.append(f"alpha*(m), where the drift crosses {level:g} (geometric mean over seeds [seeds' range]): "
                + "; ".join(parts) + ".")
    positions = []
    for activation in study.activations:
        ratios = [1.0 / stars[activation, m].alpha_star for m in cfg.widths
                  if (activation, m) in stars and math.isfinite(stars[activation, m].alpha_star)]
        if ratios:
            where = ("lazy at every width" if min(ratios) > 1 else "rich at every width" if max(ratios) < 1
                     else "rich at the small widths and lazy at the large")
            positions.append(f"{activation} {min(ratios):.3g}x to {max(ratios):.3g}x alpha* ({where})")
    text.append("The papers' scaling alpha = 1 sits at " + "; ".join(positions) + " on this grid.")
    at_largest = [(stars[a, largest].alpha_star, a) for a in study.activations
                  if (a, largest) in stars and math.isfinite(stars[a, largest].alpha_star)]
    if at_largest:
        order = [a for _, a in sorted(at_largest, reverse=True)]
        text.append(f"Lowering alpha at m = {largest}, {order[0]} leaves the kernel regime first (largest alpha*), "
                    + (f"then {', '.join(order[1:])}." if len(order) > 1 else "alone on this grid."))
    slopes = []
    for activation in study.activations:
        values = [drift_slope(grid, activation, m, level) for m in cfg.widths]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            slopes.append(f"{activation} {min(finite):+.2f} to {max(finite):+.2f} (predicted "
                          f"{predicted_drift_slope(activation):+.0f})")
    text.append("Slope of log drift against log alpha on the lazy side (drift below the level), over the widths: "
                + "; ".join(slopes) + ".")
    kernel = {b.activation: b.kernel_test_mse for b in baselines}
    verdicts = []
    for activation in study.activations:
        mine = [r for r in grid if r.activation == activation and r.m == largest]
        done = sorted({r.alpha for r in mine if all(s.status == "converged" for s in mine if s.alpha == r.alpha)})
        if len(done) < 2:
            continue
        rich, lazy = ([r.test_mse for r in mine if r.alpha == a] for a in (done[0], done[-1]))
        (rich_mean, rich_se), (lazy_mean, lazy_se) = _mean_and_error(rich), _mean_and_error(lazy)
        gap = (rich_mean - lazy_mean) / (math.hypot(rich_se, lazy_se) or math.inf)
        verdict = "helps" if gap <= -2 else "hurts" if gap >= 2 else "makes no measurable difference"
        verdicts.append(f"{activation}: {rich_mean:.3g} ± {rich_se:.2g} at alpha = {done[0]:.3g} against "
                        f"{lazy_mean:.3g} ± {lazy_se:.2g} at alpha = {done[-1]:.3g} (H* regression "
                        f"{kernel.get(activation, float('nan')):.3g}): leaving the kernel regime {verdict} "
                        f"({(rich_mean - lazy_mean) / lazy_mean:+.0%}, {gap:+.1f} combined standard errors)")
    if verdicts:
        text.append(f"Test MSE at m = {largest} (mean ± standard error over seeds; noise floor "
                    f"{cfg.noise ** 2:.3g}), the smallest alpha at which every seed converged against the largest: "
                    + "; ".join(verdicts) + ".")
    aligned = []
    for activation in study.activations:
        mine = [r for r in grid if r.activation == activation and r.m == largest and r.status != "diverged"]
        smallest = min(r.alpha for r in mine)
        rich = [r for r in mine if r.alpha == smallest]
        before, after = np.mean([r.alignment_0 for r in rich]), np.mean([r.alignment_T for r in rich])
        aligned.append(f"{activation} {before:.3f} -> {after:.3f} ({'rises' if after > before else 'falls'})")
    text.append(f"Kernel-target alignment A(Theta) at W(0) -> W(T), m = {largest}, smallest alpha (mean over seeds): "
                + "; ".join(aligned) + ".")
    field = [r for r in records if r.activation == MEAN_FIELD]
    if field:
        by_width = [(m, _geometric([r.drift for r in field if r.m == m])) for m in cfg.widths]
        text.append("Mean-field relu (kappa = 1/m, alpha = 1; the alpha = m^(-1/2) network of the NTK "
                    "parametrisation): drift " + ", ".join(f"{v:.3g} at m = {m}" for m, v in by_width)
                    + f"; {'above' if min(v for _, v in by_width) >= level else 'not everywhere above'} the level "
                    f"{level:g}, the rich reference.")
    return text


class LazyRich(StudySection):
    KEY, TITLE, Config = KEY, TITLE, Config

    def units(self, study, cfg):
        baselines = [KernelBaselineUnit(a, cfg.n, study.d, study.sigma, study.seed, cfg.noise, cfg.test)
                     for a in study.activations]
        return runs(study, cfg) + baselines

    def report(self, study, cfg, records) -> Report:
        measured = [r for u, r in records.items() if isinstance(u, LazyRichRun)]
        baselines = [r for u, r in records.items() if isinstance(u, KernelBaselineUnit)]
        found = crossovers(measured, cfg.level)
        facts = []
        for activation in study.activations:
            fit = width_exponent([c for c in found if c.activation == activation])
            facts.append(Fact(activation, "alpha* exponent in m (lazy_rich)", fit["p"], fit["low"], fit["high"]))
        columns = [(name, name) for name in TABLE_COLUMNS]
        return Report(
            reading=reading(measured, found, baselines, study, cfg), facts=facts,
            tables=[
                table("lazy_rich", f"One row per network trained on L_alpha to ||alpha F - y|| <= {study.tol:g} "
                      "(coupled init): relative kernel drift, relative movement ||W(T) - W(0)||_F / ||W(0)||_F, "
                      "steps, kernel-target alignment at W(0) and W(T), test MSE of alpha F; mean-field relu "
                      f"rows ({MEAN_FIELD}) at alpha = 1", measured, columns),
                table("lazy_rich_crossover", f"alpha*(m), where the drift crosses {cfg.level:g}: geometric mean "
                      "over seeds of the log-log interpolation, [low, high] the seeds' range", found,
                      [(name, name) for name in CROSSOVER_COLUMNS]),
            ],
            plots=[Plot("lazy_rich_drift", DRIFT_CAPTION, drift_figure(measured, study, cfg)),
                   Plot("lazy_rich_crossover", CROSSOVER_CAPTION, crossover_figure(found, study, cfg))])


SECTION = LazyRich()
