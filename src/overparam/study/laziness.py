"""Section (c): laziness. How far the weights and the kernel move during training, against width.

Requests the shared `TrainingRun`s (the training section's, when both have the same settings: trained
once). The DZPS19 picture: max_r ||w_r(T) - w_r(0)|| shrinks with m (radius R' = sqrt(n) ||y - F(0)|| /
(sqrt(m) lambda) for the 1/sqrt(m) ReLU model) and ||H(W(T)) - H(W(0))||_2 stays below lambda/4
(docs/mathematics.md#predictions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import plots, theory
from ..activations import resolve
from .framework import Plot, Report, StudySection, require_seeds, table
from .report import Fact
from .stats import format_slope, mean_and_error, power_law
from .training_run import TrainingSettings, training_units


@dataclass(frozen=True)
class Config(TrainingSettings):
    """The training runs to measure (n, widths, seeds, steps); seeds >= 2 for the slopes' intervals."""

    def check(self) -> None:
        super().check()
        require_seeds("seeds", self.seeds)


@dataclass
class WidthRow:
    """Means ± standard errors over seeds at one width; within: share of seeds whose drift stayed <= lambda/4."""

    activation: str
    width: int
    movement: float
    movement_se: float
    drift: float
    drift_se: float
    quarter_lambda: float
    within: float
    lambda_min_HT: float


COLUMNS = [("activation", "activation"), ("m", "width"), ("max movement", "movement"), ("± se", "movement_se"),
           ("kernel drift", "drift"), ("± se", "drift_se"), ("lambda/4", "quarter_lambda"),
           ("P(drift <= lambda/4)", "within"), ("lambda_min(H(W(T)))", "lambda_min_HT")]


class Laziness(StudySection):
    KEY, TITLE, Config = "laziness", "(c) Laziness: weight movement and kernel drift against width", Config

    def units(self, study, cfg):
        return training_units(study, cfg)

    def report(self, study, cfg, records) -> Report:
        found = {(u.activation, u.width): r for u, r in records.items()}
        widths = np.array(cfg.widths, dtype=float)
        fig, (left, right) = plots.figure(1, 2, size=(11, 4.2))
        rows, reading, facts = [], [], []
        for activation in study.activations:
            color = resolve(activation).color
            runs = [found[activation, m].ok for m in cfg.widths]
            lam = found[activation, cfg.widths[0]].lam
            movement = [[r.max_movement for r in group] for group in runs]
            drift = [[r.drift for r in group] for group in runs]
            move_fit = power_law(widths, movement, seed=study.seed)
            drift_fit = power_law(widths, drift, seed=study.seed)
            mine = [WidthRow(activation, m, *mean_and_error(mv), *mean_and_error(dr), lam / 4,
                             float(np.mean([r.drift <= lam / 4 for r in group])) if group else float("nan"),
                             float(np.mean([r.lambda_min_HT for r in group])) if group else float("nan"))
                    for m, group, mv, dr in zip(cfg.widths, runs, movement, drift)]
            rows += mine
            left.errorbar(widths, [r.movement for r in mine], yerr=[r.movement_se for r in mine], marker="o",
                          capsize=3, color=color, label=f"{activation}: slope {format_slope(move_fit)}")
            right.errorbar(widths, [r.drift for r in mine], yerr=[r.drift_se for r in mine], marker="o", capsize=3,
                           color=color, label=f"{activation}: slope {format_slope(drift_fit)}")
            right.axhline(lam / 4, color=color, ls="--", lw=1)
            dzps19 = any(work == "DZPS19" for work, _ in theory.proven_widths(activation, study.init))
            if dzps19 and all(runs):
                radius = [math.sqrt(cfg.n) * np.mean([r.initial_residual for r in group]) / (math.sqrt(m) * lam)
                          for m, group in zip(cfg.widths, runs)]
                left.plot(widths, radius, color=color, ls=":", label=f"{activation}: DZPS19 radius R'")
            facts.append(Fact(activation, "kernel drift slope in m", drift_fit["p"], drift_fit["low"], drift_fit["high"]))
            held = sum(r.within == 1.0 for r in mine)
            reading.append(
                f"{activation}: the largest neuron moved as m^{format_slope(move_fit)} and the kernel drifted as "
                f"m^{format_slope(drift_fit)}. The drift stayed below lambda/4 = {lam / 4:.3g} for every seed at {held} "
                f"of {len(mine)} widths (largest drift {max(r.drift for r in mine):.3g}); the smallest eigenvalue of "
                f"the final kernel was {min(r.lambda_min_HT for r in mine):.3g} against lambda = {lam:.3g}.")
        left.set(xscale="log", yscale="log", xlabel="width m", ylabel=r"$\max_r \|w_r(T) - w_r(0)\|_2$",
                 title="weight movement at the end of training")
        right.set(xscale="log", yscale="log", xlabel="width m", ylabel=r"$\|H(W(T)) - H(W(0))\|_2$",
                  title=r"kernel drift; dashed: $\lambda/4$")
        for ax in (left, right):
            plots.finish(ax)
        return Report(
            reading=reading, facts=facts,
            tables=[table("laziness", "Movement and kernel drift per activation and width", rows, COLUMNS)],
            plots=[Plot("laziness", "Largest neuron movement and kernel drift at the end of training against width "
                        "(mean ± standard error over seeds, fitted log-log slopes with 95% bootstrap intervals).", fig)])


SECTION = Laziness()
