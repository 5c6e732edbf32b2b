"""Section (d): the empirical over-parameterization thresholds m*(n) and their exponent (SPEC §7).

A width sweep (`overparam.sweep`) over n and m with a step budget scaled by the predicted rate;
its runs live in the study's runs.db. The optimisation threshold (GD reaches tol) and the kernel
threshold (||H(W(0)) - H*||_2 <= lambda/4) are fitted as m* ~ C n^p beside the proven orders.
"""

from __future__ import annotations

import math

from ..sweep import run_sweep
from ..sweep.analysis import plot_thresholds, thresholds
from .report import Figure, Section, Table

KEY, TITLE = "threshold", "(d) Empirical over-parameterization thresholds m*(n)"
THEORY = "proven orders: DZPS19 n^6, SY19 ~n^4, MOSW22 (coupled) ~n^2, GMS23 (exp) n^(2+o(1)), SMX24 (softmax) ~exp"


def units(cfg) -> int:
    return len(cfg.activations) * len(cfg.threshold_widths) * len(cfg.threshold_ns) * cfg.threshold_seeds


def sweep_table(cfg) -> dict:
    return {
        "activations": list(cfg.activations), "widths": list(cfg.threshold_widths), "n": list(cfg.threshold_ns),
        "d": cfg.d, "seeds": cfg.threshold_seeds, "init": cfg.train_init, "data": "sphere", "lr": "auto",
        "tol": cfg.tol, "steps": cfg.threshold_budget, "max_steps": cfg.threshold_max_steps, "sigma": cfg.sigma,
    }


def run(cfg, ctx) -> Section:
    table = sweep_table(cfg)
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={"sweep": table, "delta": cfg.delta})
    seen = [0]

    def progress(counts) -> None:
        finished = counts.done + counts.failed + counts.skipped
        if finished > seen[0]:
            ctx.tick(finished - seen[0])
            seen[0] = finished

    counts = run_sweep(table, ctx.store_path, backend=ctx.backend, device=ctx.device, progress=progress)
    report = thresholds(ctx.store_path, delta=cfg.delta, seed=cfg.seed, d=cfg.d, init=cfg.train_init)
    for suffix in ("png", "svg"):
        (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
        plot_thresholds(report, ctx.out / "figures" / f"thresholds.{suffix}")
    section.figures.append(Figure("thresholds", f"Smallest width m* at which at least {1 - cfg.delta:.0%} of seeds "
                                  "pass, against n (bootstrap 95% intervals), with the fitted power law and "
                                  "reference slopes n^2, n^4, n^6 (dashed)."))
    rows = [[t.kind, t.family.get("activation"), t.family.get("n"), _width(t.width), _width(t.low), _width(t.high),
             " ".join(f"{s}/{r}" for s, r in zip(t.successes, t.runs))] for t in report.thresholds]
    section.tables.append(Table("thresholds", "Thresholds per activation and n (successes/runs along the width grid "
                                f"{list(cfg.threshold_widths)})", ["kind", "activation", "n", "m*", "low", "high",
                                                                    "successes"], rows))
    fits = [[f.kind, f.family.get("activation"), len(f.ns), f.p, f.p_low, f.p_high, f.C,
             "; ".join(f"{name} {order}" for name, order in f.theory)] for f in report.fits]
    section.tables.append(Table("threshold_exponents", "Fitted exponents m* ~ C n^p (95% bootstrap interval) "
                                "beside the theory's orders", ["kind", "activation", "points", "p", "low", "high",
                                                               "C", "theory"], fits))
    section.reading += _reading(report, cfg, counts)
    section.status = "complete" if counts.failed == 0 else "partial"
    if counts.failed:
        section.note = f"{counts.failed} run(s) failed; see `overparam results {ctx.store_path}`"
    return section


def _width(value: float) -> str:
    return "beyond grid" if math.isinf(value) else f"{value:g}"


def _reading(report, cfg, counts) -> list[str]:
    text = [f"{counts.total} runs ({counts.skipped} reused from earlier runs of this study), step budget "
            f"{cfg.threshold_budget} (a multiple of the predicted 2 log(||F(0) - y|| / eps) / (eta_eff lambda) steps, "
            f"capped at {cfg.threshold_max_steps}), success level 1 - delta = {1 - cfg.delta:.0%}. {THEORY}."]
    for fit in report.fits:
        name = fit.family.get("activation", "")
        text.append(f"{fit.kind} threshold, {name}: m* grew as n^{fit.p:.2f} (95% interval [{fit.p_low:.2f}, "
                    f"{fit.p_high:.2f}], from {len(fit.ns)} values of n), against the proven order "
                    + ", ".join(f"{order} ({source})" for source, order in fit.theory) + ".")
    found = [t for t in report.thresholds if t.kind == "optimization" and not t.censored]
    if found:
        ratios = [t.width * cfg.d / t.family["n"] for t in found]
        text.append(f"Capacity: Theta has rank at most m d, so m >= n k / d = n / {cfg.d} is necessary to interpolate. "
                    f"The measured optimisation thresholds were {min(ratios):.2g} to {max(ratios):.2g} times that "
                    "bound: plain GD needs far fewer neurons than the proofs' widths.")
    for kind in ("optimization", "kernel"):
        censored = [t for t in report.thresholds if t.kind == kind and t.censored]
        if censored:
            text.append(f"{kind}: at {len(censored)} (activation, n) the threshold lies beyond the largest width "
                        f"{max(cfg.threshold_widths)}; no exponent uses those points"
                        + (" (section (a) extrapolates the kernel threshold from the measured concentration rate)."
                           if kind == "kernel" else "."))
    if not report.fits:
        text.append("Too few thresholds fell inside the width grid to fit an exponent; widen the grid "
                    "(--preset paper) to measure it.")
    return text
