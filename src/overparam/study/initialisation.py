"""Section (e): coupled (symmetric, MOSW22) against independent initialisation.

Same data, width and seeds; the only difference is the initialisation. Coupled init gives F(W(0), .) = 0
exactly; independent exp/softmax outputs start at size Theta(sqrt(m)) (docs/mathematics.md#networks).
Each arm is one shared `TrainingRun`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import plots
from ..activations import resolve
from .framework import Plot, Report, SectionConfig, StudySection, require_even, require_positive, table
from .stats import mean_and_error
from .training_run import TrainingRun

INITS = ("independent", "coupled")


@dataclass(frozen=True)
class Config(SectionConfig):
    """n points on the sphere, one width m, seeds per arm, GD step budget."""

    n: int = 24
    width: int = 1024
    seeds: int = 3
    steps: int = 3000

    def check(self) -> None:
        for name in ("n", "width", "seeds", "steps"):
            require_positive(name, getattr(self, name))
        require_even("width", (self.width,), "coupled")


@dataclass
class ArmRow:
    """One arm's means and standard errors over the seeds that ran."""

    activation: str
    init: str
    converged: int
    seeds: int
    initial_residual: float
    initial_residual_se: float
    steps: float
    steps_se: float
    movement: float
    movement_se: float
    drift: float
    drift_se: float
    final_residual: float

    @property
    def converged_of(self) -> str:
        return f"{self.converged}/{self.seeds}"


COLUMNS = [("activation", "activation"), ("init", "init"), ("converged", "converged_of"),
           ("||F(0) - y||", "initial_residual"), ("± se", "initial_residual_se"), ("steps", "steps"),
           ("± se", "steps_se"), ("max movement", "movement"), ("± se", "movement_se"), ("kernel drift", "drift"),
           ("± se", "drift_se"), ("final ||F - y||", "final_residual")]


class Initialisation(StudySection):
    KEY, TITLE, Config = "initialisation", "(e) Coupled against independent initialisation", Config

    def units(self, study, cfg) -> list[TrainingRun]:
        return [TrainingRun(a, cfg.width, init, cfg.n, study.d, study.sigma, study.seed, cfg.seeds, cfg.steps,
                            study.tol) for a in study.activations for init in INITS]

    def report(self, study, cfg, records) -> Report:
        found = {(u.activation, u.init): r for u, r in records.items()}
        fig, axes = plots.figure(1, len(study.activations), size=(5 * len(study.activations), 4), squeeze=False)
        rows = []
        for ax, activation in zip(axes[0], study.activations):
            for init, style in zip(INITS, ("-", "--")):
                runs = found[activation, init].ok
                for i, r in enumerate(runs):
                    ax.semilogy(r.step, r.loss2, color=resolve(activation).color, ls=style, lw=1.1,
                                label=init if i == 0 else None)
                if runs:
                    rows.append(ArmRow(activation, init, sum(r.converged for r in runs), len(runs),
                                       *mean_and_error([r.initial_residual for r in runs]),
                                       *mean_and_error([r.steps for r in runs]),
                                       *mean_and_error([r.max_movement for r in runs]),
                                       *mean_and_error([r.drift for r in runs]),
                                       float(np.mean([r.final_residual for r in runs]))))
            ax.axhline(study.tol**2, color="grey", lw=0.8)
            ax.set(xlabel="step t", ylabel=r"$\|F(t) - y\|_2^2$", title=f"{activation}, m = {cfg.width}, n = {cfg.n}")
            plots.finish(ax)
        return Report(
            reading=reading(study, rows),
            tables=[table("initialisation", "Coupled against independent initialisation (mean, standard error)",
                          rows, COLUMNS)],
            plots=[Plot("initialisation", "Squared residual against step, coupled (dashed) and independent (solid) "
                        "initialisation, every seed.", fig)])


def reading(study, rows: list[ArmRow]) -> list[str]:
    text = []
    for activation in study.activations:
        pair = {r.init: r for r in rows if r.activation == activation}
        if len(pair) < 2:
            continue
        ind, cou = pair["independent"], pair["coupled"]
        text.append(
            f"{activation}: the initial residual was {ind.initial_residual:.3g} (independent) against "
            f"{cou.initial_residual:.3g} (coupled, where F(W(0)) = 0 and the residual is ||y||); reaching tol took "
            f"{ind.steps:.0f} against {cou.steps:.0f} steps ({ind.converged_of} and {cou.converged_of} seeds "
            f"converged), the largest neuron moved {ind.movement:.3g} against {cou.movement:.3g} "
            f"({ind.movement / cou.movement:.2g}x), and the kernel drifted {ind.drift:.3g} against {cou.drift:.3g}.")
    return text


SECTION = Initialisation()
