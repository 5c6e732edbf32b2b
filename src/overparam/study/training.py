"""Section (b): training curves over width against the theorems' linear rate.

Each (activation, width) is one shared `TrainingRun` (all seeds as one batch on fixed data, lr =
1/lambda_max(Theta(W(0)))). Shown per width: the residual curves, the DZPS19 bound
||F(t) - y||^2 <= (1 - eta_eff lambda / 2)^t ||F(0) - y||^2 with eta_eff = lr m kappa^2 and
lambda = lambda_min(H*) (docs/mathematics.md#predictions), and the kernel-regime curve
||(I - lr Theta(0))^t (F(0) - y)||^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.colors import to_rgba
import numpy as np

from .. import plots
from ..activations import resolve
from .framework import Plot, Report, StudySection, table
from .report import Fact
from .stats import mean_and_error
from .training_run import SeedRun, TrainingRecord, TrainingRun, TrainingSettings, training_units


@dataclass(frozen=True)
class Config(TrainingSettings):
    """n points on the sphere, widths m, seeds per width, GD step budget (training ends sooner at tol)."""


@dataclass
class WidthRow:
    """Means over the seeds that ran at one width. observed_rate: geometric-mean per-step contraction of
    ||F - y||^2 (± its standard error); bound_rate: 1 - eta_eff lambda / 2 at the mean eta_eff;
    kernel_final_loss2 and kernel_steps: the linearised dynamics' final ||F - y||^2 and steps to tol
    (NaN where a seed's never reached tol within the budget)."""

    activation: str
    width: int
    converged: int
    seeds: int
    steps: float
    lr: float
    eta_eff: float
    lam: float
    observed_rate: float
    observed_rate_se: float
    bound_rate: float
    kernel_final_loss2: float
    final_loss2: float
    kernel_steps: float

    @property
    def converged_of(self) -> str:
        return f"{self.converged}/{self.seeds}"


COLUMNS = [("activation", "activation"), ("m", "width"), ("converged", "converged_of"), ("steps", "steps"),
           ("lr", "lr"), ("eta_eff", "eta_eff"), ("lambda", "lam"), ("observed rate", "observed_rate"),
           ("± se", "observed_rate_se"), ("bound rate 1-eta_eff*lambda/2", "bound_rate"),
           ("kernel-pred. final loss2", "kernel_final_loss2"), ("final loss2", "final_loss2"),
           ("kernel-pred. steps", "kernel_steps")]


def observed_rate(run: SeedRun) -> float:
    """Geometric-mean per-step contraction of ||F - y||^2 over the run."""
    steps = run.step[-1]
    if steps == 0 or run.loss2[0] <= 0:
        return float("nan")
    return (run.loss2[-1] / run.loss2[0]) ** (1 / steps)


def width_row(activation: str, record: TrainingRecord) -> WidthRow | None:
    runs = record.ok
    if not runs:
        return None
    eta_eff = float(np.mean([r.eta_eff for r in runs]))
    kernel_steps = [r.kernel_steps for r in runs]
    return WidthRow(
        activation, record.width, sum(r.converged for r in runs), len(runs), float(np.mean([r.steps for r in runs])),
        float(np.mean([r.lr for r in runs])), eta_eff, record.lam, *mean_and_error([observed_rate(r) for r in runs]),
        1 - eta_eff * record.lam / 2, float(np.mean([r.kernel_loss2[-1] for r in runs])),
        float(np.mean([r.loss2[-1] for r in runs])),
        float("nan") if any(s is None for s in kernel_steps) else float(np.mean(kernel_steps)))


class Training(StudySection):
    KEY, TITLE, Config = "training", "(b) Training: loss curves over width and the linear rate", Config

    def units(self, study, cfg) -> list[TrainingRun]:
        return training_units(study, cfg)

    def report(self, study, cfg, records) -> Report:
        found = {(u.activation, u.width): r for u, r in records.items()}
        rows = [row for a in study.activations for m in cfg.widths
                if (row := width_row(a, found[a, m])) is not None]
        return Report(
            reading=reading(study, rows),
            tables=[table("training", "Training runs per activation and width (means over seeds)", rows, COLUMNS)],
            facts=[Fact(r.activation, f"GD steps to tol at m = {r.width} (n = {cfg.n})", r.steps) for r in rows],
            plots=[Plot("training", "Squared residual against step for each width (solid: every seed; dashed: the "
                        "DZPS19 bound (1 - eta_eff lambda/2)^t ||F(0) - y||^2; dotted: the kernel-regime prediction "
                        "||(I - eta Theta(0))^t (F(0) - y)||^2; grey: tol^2).", figure(study, cfg, found))])


def figure(study, cfg, found: dict):
    fig, axes = plots.figure(1, len(study.activations), size=(5 * len(study.activations), 4.2), squeeze=False)
    shades = np.linspace(0.35, 1.0, len(cfg.widths))
    for ax, activation in zip(axes[0], study.activations):
        for shade, width in zip(shades, cfg.widths):
            record = found[activation, width]
            runs = record.ok
            if not runs:
                continue
            color = to_rgba(resolve(activation).color, shade)
            for i, r in enumerate(runs):
                ax.semilogy(r.step, r.loss2, color=color, lw=1.2, label=f"m = {width}" if i == 0 else None)
            first = runs[0]
            t = np.asarray(first.step, dtype=float)
            ax.semilogy(t, (1 - first.eta_eff * record.lam / 2) ** t * first.loss2[0], color=color, ls="--", lw=1)
            ax.semilogy(t, first.kernel_loss2, color=color, ls=":", lw=1)
        ax.axhline(study.tol**2, color="grey", lw=0.8)
        ax.set(xlabel="step t", ylabel=r"$\|F(t) - y\|_2^2$", title=f"{activation} ({study.init} init, n = {cfg.n})")
        plots.finish(ax)
    return fig


def reading(study, rows: list[WidthRow]) -> list[str]:
    text = []
    for activation in study.activations:
        mine = [r for r in rows if r.activation == activation]
        if not mine:
            continue
        held = [r for r in mine if r.observed_rate <= r.bound_rate + 1e-12]
        faster = np.median([math.log(r.observed_rate) / math.log(r.bound_rate) for r in mine
                            if 0 < r.observed_rate < 1 and 0 < r.bound_rate < 1] or [np.nan])
        converged = ", ".join(f"m = {r.width}: {r.converged_of} in {r.steps:.0f} steps" for r in mine)
        text.append(
            f"{activation}: converged to ||F - y|| <= {study.tol:g} — {converged}. The observed per-step contraction "
            f"of ||F - y||^2 was at least as fast as the theorems' rate 1 - eta_eff lambda/2 at {len(held)} of "
            f"{len(mine)} widths (median: {faster:.1f}x the predicted log-rate; the bound is a worst case over "
            "directions, the kernel-regime curve is the exact linearised prediction).")
        text.append(
            f"{activation}: steps to reach tol, measured against the linearised (kernel-regime) dynamics "
            "F_lin(t) = y + (I - lr Theta(0))^t (F(0) - y): "
            + ", ".join(f"m = {r.width}: {r.steps:.0f} vs " + (f"{r.kernel_steps:.0f}" if r.kernel_steps == r.kernel_steps
                                                             else "never") for r in mine)
            + ". " + _agreement(mine))
    return text


def _agreement(rows: list[WidthRow]) -> str:
    """How far the measured steps are from the kernel-regime prediction, per width."""
    gaps = {r.width: abs(r.steps - r.kernel_steps) / r.kernel_steps for r in rows if r.kernel_steps == r.kernel_steps}
    if not gaps:
        return "The linearised dynamics never reached tol within the budget."
    if max(gaps.values()) <= 0.02:
        return (f"Within {max(gaps.values()):.1%} at every width: the network trains exactly as its "
                "initial kernel predicts (the lazy regime the proofs rely on).")
    first, last = min(gaps), max(gaps)
    return (f"The gap was {gaps[first]:.0%} at m = {first} and {gaps[last]:.0%} at m = {last}: "
            + ("it closes with width, as the lazy-regime argument predicts." if gaps[last] < gaps[first]
               else "it does not close over this grid."))


SECTION = Training()
