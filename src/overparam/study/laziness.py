"""Section (c): laziness. How far the weights and the kernel move during training, against width.

Uses the runs of section (b) (shared units, trained once). The DZPS19 picture: max_r ||w_r(T) - w_r(0)||
shrinks with m (radius R' = sqrt(n) ||y - F(0)|| / (sqrt(m) lambda) for the 1/sqrt(m) ReLU model) and
||H(W(T)) - H(W(0))||_2 stays below lambda/4 (SPEC §5).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .. import theory
from ..activations import resolve
from . import training
from .report import Figure, Section, Table, save_figure
from .stats import format_slope, mean_and_error, power_law

KEY, TITLE = "laziness", "(c) Laziness: weight movement and kernel drift against width"


def units(cfg) -> int:
    return training.units(cfg)


def run(cfg, ctx) -> Section:
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        k: getattr(cfg, k) for k in ("activations", "train_n", "d", "train_widths", "train_seeds", "train_steps",
                                     "train_init", "tol", "seed")})
    results = training.collect(cfg, ctx)
    widths = np.array(cfg.train_widths, dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    rows = []
    for activation in cfg.activations:
        color = resolve(activation).color
        dzps19 = any(work == "DZPS19" for work, _ in theory.proven_widths(activation, cfg.train_init))
        runs = [[r for r in results[activation, m]["runs"] if r["status"] != "failed"] for m in cfg.train_widths]
        movement = [[r["max_movement"] for r in group] for group in runs]
        drift = [[r["drift"] for r in group] for group in runs]
        lam = results[activation, cfg.train_widths[0]]["lambda"]
        move_fit, drift_fit = power_law(widths, movement, seed=cfg.seed), power_law(widths, drift, seed=cfg.seed)
        move_stats, drift_stats = [mean_and_error(v) for v in movement], [mean_and_error(v) for v in drift]
        left.errorbar(widths, [s[0] for s in move_stats], yerr=[s[1] for s in move_stats], marker="o", capsize=3,
                      color=color, label=f"{activation}: slope {format_slope(move_fit)}")
        right.errorbar(widths, [s[0] for s in drift_stats], yerr=[s[1] for s in drift_stats], marker="o", capsize=3,
                       color=color, label=f"{activation}: slope {format_slope(drift_fit)}")
        right.axhline(lam / 4, color=color, ls="--", lw=1)
        if dzps19 and all(group for group in runs):
            radius = [math.sqrt(cfg.train_n) * np.mean([r["initial_residual"] for r in group]) / (math.sqrt(m) * lam)
                      for m, group in zip(cfg.train_widths, runs)]
            left.plot(widths, radius, color=color, ls=":", label=f"{activation}: DZPS19 radius R'")
        for m, group, ms, ds in zip(cfg.train_widths, runs, move_stats, drift_stats):
            within = np.mean([r["drift"] <= lam / 4 for r in group]) if group else float("nan")
            rows.append([activation, m, ms[0], ms[1], ds[0], ds[1], lam / 4, within,
                         np.mean([r["lambda_min_HT"] for r in group]) if group else float("nan")])
        section.reading.append(_reading(activation, move_fit, drift_fit, rows, lam))
    left.set(xscale="log", yscale="log", xlabel="width m", ylabel=r"$\max_r \|w_r(T) - w_r(0)\|_2$",
             title="weight movement at the end of training")
    right.set(xscale="log", yscale="log", xlabel="width m", ylabel=r"$\|H(W(T)) - H(W(0))\|_2$",
              title=r"kernel drift; dashed: $\lambda/4$")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, ctx.out, "laziness")
    section.figures.append(Figure("laziness", "Largest neuron movement and kernel drift at the end of training "
                                  "against width (mean ± standard error over seeds, fitted log-log slopes with 95% "
                                  "bootstrap intervals)."))
    section.tables.append(Table("laziness", "Movement and kernel drift per activation and width",
                                ["activation", "m", "max movement", "± se", "kernel drift", "± se", "lambda/4",
                                 "P(drift <= lambda/4)", "lambda_min(H(W(T)))"], rows))
    section.status = "complete"
    return section


def _reading(activation, move_fit, drift_fit, rows, lam) -> str:
    mine = [r for r in rows if r[0] == activation]
    held = sum(r[7] == 1.0 for r in mine)
    return (f"{activation}: the largest neuron moved as m^{format_slope(move_fit)} and the kernel drifted as "
            f"m^{format_slope(drift_fit)}. The drift stayed below lambda/4 = {lam / 4:.3g} for every seed at {held} "
            f"of {len(mine)} widths (largest drift {max(r[4] for r in mine):.3g}); the smallest eigenvalue of the "
            f"final kernel was {min(r[8] for r in mine):.3g} against lambda = {lam:.3g}.")
