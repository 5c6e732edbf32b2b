"""Section (e): coupled (symmetric, MOSW22) against independent initialisation.

Same data, width and seeds; the only difference is the initialisation. Coupled init gives
F(W(0), .) = 0 exactly; independent exp/softmax outputs start at size Theta(sqrt(m)) (SPEC §2).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import training
from ..activations import resolve
from .report import Figure, Section, Table, save_figure
from .stats import mean_and_error

KEY, TITLE = "initialisation", "(e) Coupled against independent initialisation"
INITS = ("independent", "coupled")


def units(cfg) -> int:
    return len(cfg.activations) * len(INITS)


def run(cfg, ctx) -> Section:
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        k: getattr(cfg, k) for k in ("activations", "init_n", "d", "init_width", "init_seeds", "train_steps", "tol",
                                     "seed")})
    results = {}
    for activation in cfg.activations:
        for init in INITS:
            key = training.unit_key(activation, cfg.init_width, init, cfg.init_n, cfg).replace(
                f"seeds={cfg.train_seeds}", f"seeds={cfg.init_seeds}")
            results[activation, init] = ctx.cache.compute(key, KEY, lambda: training.train_unit(
                activation, cfg.init_width, init, cfg.init_n, cfg.init_seeds, cfg, ctx.device))
            ctx.tick()
    fig, axes = plt.subplots(1, len(cfg.activations), figsize=(5 * len(cfg.activations), 4),
                             constrained_layout=True, squeeze=False)
    rows = []
    for ax, activation in zip(axes[0], cfg.activations):
        for init, style in zip(INITS, ("-", "--")):
            runs = [r for r in results[activation, init]["runs"] if r["status"] != "failed"]
            for i, r in enumerate(runs):
                ax.semilogy(r["step"], r["loss2"], color=resolve(activation).color, ls=style, lw=1.1,
                            label=init if i == 0 else None)
            if runs:
                rows.append([activation, init, f"{sum(r['status'] == 'converged' for r in runs)}/{len(runs)}",
                             *mean_and_error([r["initial_residual"] for r in runs]),
                             *mean_and_error([r["steps"] for r in runs]),
                             *mean_and_error([r["max_movement"] for r in runs]),
                             *mean_and_error([r["drift"] for r in runs]),
                             np.mean([r["final_residual"] for r in runs])])
        ax.axhline(cfg.tol**2, color="grey", lw=0.8)
        ax.set(xlabel="step t", ylabel=r"$\|F(t) - y\|_2^2$",
               title=f"{activation}, m = {cfg.init_width}, n = {cfg.init_n}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, ctx.out, "initialisation")
    section.figures.append(Figure("initialisation", "Squared residual against step, coupled (dashed) and "
                                  "independent (solid) initialisation, every seed."))
    section.tables.append(Table("initialisation", "Coupled against independent initialisation (mean, standard error)",
                                ["activation", "init", "converged", "||F(0) - y||", "± se", "steps", "± se",
                                 "max movement", "± se", "kernel drift", "± se", "final ||F - y||"], rows))
    for activation in cfg.activations:
        pair = {r[1]: r for r in rows if r[0] == activation}
        if len(pair) < 2:
            continue
        ind, cou = pair["independent"], pair["coupled"]
        section.reading.append(
            f"{activation}: the initial residual was {ind[3]:.3g} (independent) against {cou[3]:.3g} (coupled, "
            f"where F(W(0)) = 0 and the residual is ||y||); reaching tol took {ind[5]:.0f} against {cou[5]:.0f} "
            f"steps ({ind[2]} and {cou[2]} seeds converged), the largest neuron moved {ind[7]:.3g} against "
            f"{cou[7]:.3g} ({ind[7] / cou[7]:.2g}x), and the kernel drifted {ind[9]:.3g} against {cou[9]:.3g}.")
    section.status = "complete"
    return section
