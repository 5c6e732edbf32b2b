"""Section (f): diffusion. How well each network learns the score, and how good its samples are (SPEC §6).

One unit per activation: train the Tweedie denoiser F ~ E[x_0 | x_t, t] on n draws of p_0 by
full-batch GD with early stopping, measure its exact score error E_t h_t E_{p_t}||s - grad log p_t||^2
(overall and per t), sample with it and measure the samples (W2, MMD, NLL, recovered weights).
One unit for the baselines: the exact score (the sampler's own discretisation floor), the trivial
score -x, and fresh draws of p_0 (the finite-sample floor of W2 and MMD). Every unit runs the pieces
of `overparam.diffusion.experiment` on the same draws and seeds, so the rows are those that
`overparam diffusion` reports for the same settings and differ only by their scores.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import json
import math
from dataclasses import asdict, replace

import numpy as np
from scipy.stats import spearmanr

from ..diffusion import experiment, figures
from ..diffusion.datasets import parse_data
from ..diffusion.experiment import DiffusionConfig
from ..diffusion.mixtures import GaussianMixture
from ..diffusion.score import ScoreErrorCurve
from ..diffusion.training import TrainingConfig
from ..sweep.analysis import fit_power_law
from .framework import SectionConfig, require_grid, require_positive
from .legacy import LegacySection
from .report import Figure, Section, Table, save_figure

KEY, TITLE = "diffusion", "(f) Diffusion: score estimation and sample quality"
BASELINES = "baselines"
METRICS = ("score_error", "w2", "mmd", "nll")

@dataclass(frozen=True)
class Config(SectionConfig):
    """data: p_0's spec; n draws of it to learn from; width m; GD step budget (early stopping may end
    sooner); sampler and its steps; samples per score (W2, MMD, NLL); score-error Monte Carlo draws; the
    learning curves: every width at n, every n at m (one seed per point)."""

    data: str = "gmm:k=4,d=2"
    n: int = 1024
    width: int = 512
    steps: int = 1500
    sampler: str = "sde"
    sampler_steps: int = 100
    samples: int = 1000
    score_samples: int = 4096
    widths: tuple[int, ...] = (64, 256, 512)
    ns: tuple[int, ...] = (256, 512, 1024)

    def check(self) -> None:
        for name in ("n", "width", "steps", "sampler_steps", "samples", "score_samples"):
            require_positive(name, getattr(self, name))
        require_grid("widths", self.widths)
        require_grid("ns", self.ns)
        if self.sampler not in ("sde", "ode"):
            raise ValueError(f"sampler must be sde or ode, got {self.sampler!r}")


SECTION = LegacySection(sys.modules[__name__])


def units(cfg) -> int:
    return len(cfg.activations) * len(curve_grid(cfg)) + 1


def curve_grid(cfg) -> list[tuple[int, int]]:
    """(n, m) of the learning curves: the main point, every width at n = diffusion_n, every n at
    m = diffusion_width."""
    pairs = [(cfg.diffusion_n, cfg.diffusion_width)] + [(cfg.diffusion_n, m) for m in cfg.diffusion_widths]
    return list(dict.fromkeys(pairs + [(n, cfg.diffusion_width) for n in cfg.diffusion_ns]))


def config_at(config: DiffusionConfig, n: int, width: int) -> DiffusionConfig:
    """The same run with n draws of p_0 and networks of width m."""
    return replace(config, n=n, training=replace(config.training, width=width))


def diffusion_config(cfg, device: str = "cpu") -> DiffusionConfig:
    """The `overparam diffusion` settings of this section (the library's defaults where the study sets none)."""
    training = TrainingConfig(width=cfg.diffusion_width, steps=cfg.diffusion_steps, sigma=cfg.sigma, device=device)
    return DiffusionConfig(data=cfg.diffusion_data, activations=tuple(cfg.activations), n=cfg.diffusion_n,
                           training=training, sampler=cfg.diffusion_sampler,
                           sampler_steps=cfg.diffusion_sampler_steps, n_samples=cfg.diffusion_samples,
                           n_score=cfg.diffusion_score_samples, seed=cfg.seed)


def unit_key(name: str, config: DiffusionConfig) -> str:
    """Cache key of one unit: every setting its result depends on (not the device, nor the other activations)."""
    settings = asdict(config)
    settings.pop("activations")
    training = settings.pop("training")
    training.pop("device")
    if name == BASELINES:
        settings.pop("quiver_times")
    else:
        settings["training"] = {**training, "activation": name}
    return f"{KEY}:{name}:{json.dumps(settings, sort_keys=True)}"


def _curve(curve: ScoreErrorCurve | None) -> dict | None:
    if curve is None:
        return None
    return {"times": curve.times.tolist(), "value": curve.value.tolist(), "stderr": curve.stderr.tolist()}


def learned_unit(activation: str, config: DiffusionConfig) -> dict:
    """Train, score and sample one activation; plain data (its metrics row, samples, curves, training record)."""
    draws = experiment.draw(config)
    fit, score = experiment.fit_score(activation, config, draws)
    measured = experiment.measure(score, config, draws)
    unit = {"row": measured.row, "samples": measured.samples.tolist(), "curve": _curve(measured.curve),
            "summary": fit.summary(), "training": experiment.training_record(fit), "field": None,
            "bayes_val_loss": experiment.bayes_val_loss(draws.truth, fit) if draws.truth is not None else None}
    if draws.reference.shape[1] == 2:
        points = figures.field_grid(figures.plot_limits(draws.reference))
        unit["field"] = figures.evaluate_field(score, points, config.quiver_times).tolist()
    return unit


def baselines_unit(config: DiffusionConfig) -> dict:
    """The exact and trivial scores through the same measurements, the p_0 row and the reference sample."""
    draws = experiment.draw(config)
    measured = {name: experiment.measure(score, config, draws)
                for name, score in experiment.baseline_scores(draws.truth).items()}
    return {"rows": {name: m.row for name, m in measured.items()},
            "samples": {name: m.samples.tolist() for name, m in measured.items()},
            "curves": {name: _curve(m.curve) for name, m in measured.items()},
            "p0": experiment.p0_row(config, draws), "reference": draws.reference.tolist()}


def collect(cfg, ctx) -> tuple[DiffusionConfig, dict, dict, dict]:
    """(config, baselines unit, {activation: unit at the main point}, {(activation, n, m): unit} over
    `curve_grid`), each unit cached in the study's runs.db."""
    config = diffusion_config(cfg, ctx.device)
    base = ctx.cache.compute(unit_key(BASELINES, config), KEY, lambda: baselines_unit(config))
    ctx.tick()
    curves = {}
    for activation in cfg.activations:
        for n, width in curve_grid(cfg):
            at = config_at(config, n, width)
            curves[activation, n, width] = ctx.cache.compute(unit_key(activation, at), KEY,
                                                             lambda: learned_unit(activation, at))
            ctx.tick()
    learned = {a: curves[a, cfg.diffusion_n, cfg.diffusion_width] for a in cfg.activations}
    return config, base, learned, curves


def run(cfg, ctx) -> Section:
    config, base, learned, curves = collect(cfg, ctx)
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        "activations": list(cfg.activations), **{k: v for k, v in asdict(config).items() if k != "activations"}})
    metrics = experiment.metrics_dict({**{a: u["row"] for a, u in learned.items()}, **base["rows"]}, base["p0"],
                                      {a: u["summary"] for a, u in learned.items()})
    bayes = next(iter(learned.values()))["bayes_val_loss"]
    section.figures += _figures(config, base, learned, bayes, ctx.out)
    section.tables.append(Table("diffusion", "Score error (weighted, ± standard error), sample quality against "
                                f"{config.n_samples} fresh draws of p_0, and position between -x (0) and the exact "
                                "score (1); exact = the sampler's discretisation floor, p0 = a second fresh sample "
                                "of p_0 (the finite-sample floor)",
                                ["score", "score error", "± se", "W2", "MMD^2", "NLL", "weights TV", "precision",
                                 "recall", *(f"between: {m}" for m in METRICS)], _rows(metrics, cfg.activations)))
    section.tables.append(Table("diffusion_training", "Denoiser training (full-batch GD, lr = 1/lambda_max, "
                                "early stopping on held-out pairs)",
                                ["activation", "steps run", "kept step", "lr", "held-out loss", "exact denoiser",
                                 "excess", "seconds"], _training_rows(metrics, cfg.activations, bayes)))
    section.reading += _reading(metrics, base, learned, cfg.activations, config, bayes)
    curve_rows = learning_curve_rows(curves, cfg)
    slopes = curve_slopes(curve_rows, cfg)
    save_figure(_curve_figure(curve_rows, slopes, base, cfg), ctx.out, "diffusion_curves")
    section.figures.append(Figure("diffusion_curves", "Learning curves: score error, W2 and MMD^2 of each network "
                                  f"against width m at n = {cfg.diffusion_n} (top) and against the number of draws n "
                                  f"at m = {cfg.diffusion_width} (bottom), one seed per point; dashed: the exact "
                                  "score's value (the sampler's floor), dotted: a fresh sample of p_0 (the "
                                  "finite-sample floor), both at the main point."))
    section.tables.append(Table("diffusion_curves", "Learning curves: each network at every (n, m) of the grid (one "
                                "seed each), with what ended its training", CURVE_COLUMNS, curve_rows))
    section.reading += _learning_curve_reading(curve_rows, slopes, metrics, cfg)
    section.status = "complete"
    return section


def _figures(config: DiffusionConfig, base: dict, learned: dict, bayes, out) -> list[Figure]:
    """Draw the section's figures from the cached units (no network is needed)."""
    shown = []
    reference = np.asarray(base["reference"], dtype=float)
    samples = {**{a: np.asarray(u["samples"], dtype=float) for a, u in learned.items()},
               **{name: np.asarray(s, dtype=float) for name, s in base["samples"].items()}}
    title = (f"samples against the truth ({config.data}, n = {config.n}, m = {config.training.width}, "
             f"{config.sampler} sampler with {config.sampler_steps} steps)")
    save_figure(figures.plot_samples(reference, samples, title), out, "diffusion_samples")
    shown.append(Figure("diffusion_samples", f"{config.n_samples} samples from each score, first two coordinates, "
                        "beside fresh draws of p_0: each network's Tweedie score, the exact score (what the sampler "
                        "gives with no score error) and -x (the score of N(0, I))."))
    truth = parse_data(config.data)
    exact_data = isinstance(truth, GaussianMixture)
    if exact_data:
        curves = {name: ScoreErrorCurve(*(np.asarray(c[k], dtype=float) for k in ("times", "value", "stderr")))
                  for name, c in {**{a: u["curve"] for a, u in learned.items()}, **base["curves"]}.items()}
        save_figure(figures.plot_score_error(curves), out, "diffusion_score_error")
        shown.append(Figure("diffusion_score_error", "Score error E_(p_t)||s - grad log p_t||^2 against t (left) and "
                            "weighted by h_t (right; its mean over t is the score error), "
                            f"{config.curve_samples} draws per t, ± 2 standard errors."))
    save_figure(figures.plot_training({a: u["training"] for a, u in learned.items()}, bayes), out,
                "diffusion_training")
    shown.append(Figure("diffusion_training", "Denoiser training: mean ||F - x_0||^2 on the training pairs (solid) "
                        "and the held-out pairs (dashed) against GD step; dotted: the kept (best held-out) step; "
                        "dash-dotted: the exact denoiser's held-out loss."))
    fields = {a: np.asarray(u["field"], dtype=float) for a, u in learned.items() if u["field"] is not None}
    if fields:
        points = figures.field_grid(figures.plot_limits(reference))
        true_field = figures.evaluate_field(truth.score, points, config.quiver_times) if exact_data else None
        save_figure(figures.plot_score_field(points, config.quiver_times, fields, true_field), out,
                    "diffusion_score_field")
        shown.append(Figure("diffusion_score_field", "Learned score field (colour) over the true one (black) at a "
                            "few t; arrows share one scale per panel, set by the true field."))
    return shown


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _rows(metrics: dict, activations) -> list[list]:
    rows = []
    scores = {**{a: metrics[a] for a in activations}, **{k: v for k, v in metrics["baselines"].items() if v}}
    for name, row in scores.items():
        between = row.get("between", {})
        rows.append([name, _number(row["score_error"]), _number(row["score_error_stderr"]), _number(row["w2"]),
                     _number(row["mmd"]), _number(row["nll"]), _number(row["weight_error"]),
                     _number(row.get("precision")), _number(row.get("recall")),
                     *(_number(between.get(m)) if between else float("nan") for m in METRICS)])
    return rows


def _training_rows(metrics: dict, activations, bayes) -> list[list]:
    rows = []
    for activation in activations:
        t = metrics[activation]["training"]
        excess = t["best_val_loss"] - bayes if bayes is not None else float("nan")
        rows.append([activation, t["steps"], t["best_step"], t["lr"], t["best_val_loss"], _number(bayes), excess,
                     t["wall_seconds"]])
    return rows


def _listing(values: dict, digits: str = ".3g") -> str:
    return ", ".join(f"{name} {format(value, digits)}" for name, value in values.items())


def _position(value) -> str:
    if value is None:
        return "position undefined"
    if value < 0:
        return f"{value:.2f}: worse than -x"
    return f"{value:.2f} of the way from -x to exact"


def _reading(metrics: dict, base: dict, learned: dict, activations, config: DiffusionConfig, bayes) -> list[str]:
    exact, trivial, p0 = (metrics["baselines"][name] for name in ("exact", "trivial", "p0"))
    rows = {a: metrics[a] for a in activations}
    text = []
    if exact is not None:
        text.append(_score_error_reading(rows, trivial, config))
        text.append(_curve_reading(learned, base["curves"]["trivial"]))
    else:
        text.append(f"{config.data} is known only through samples: there is no exact score, so neither the score "
                    "error, nor the likelihood, nor the exact-score baseline could be measured.")
    text.append(_sample_reading(rows, exact, trivial, p0, config))
    if exact is not None:
        text.append(
            f"Under the true p_0: the negative log-likelihood per sample was {p0['nll']:.3g} for fresh draws, "
            f"{exact['nll']:.3g} with the exact score, {trivial['nll']:.3g} with -x, and "
            f"{_listing({a: r['nll'] for a, r in rows.items()})} with the networks. Recovered mixture weights (total "
            f"variation to the true weights): p_0 {p0['weight_error']:.3g}, exact {exact['weight_error']:.3g}, -x "
            f"{trivial['weight_error']:.3g}, {_listing({a: r['weight_error'] for a, r in rows.items()})}.")
    text.append(_training_reading(metrics, activations, config, bayes))
    return text


def _score_error_reading(rows: dict, trivial: dict, config: DiffusionConfig) -> str:
    described = "; ".join(f"{a} {r['score_error']:.3g} ± {r['score_error_stderr']:.2g} "
                          f"({_position(r['between']['score_error'])})" for a, r in rows.items())
    text = (f"Score error E_t h_t E_(p_t)||s - grad log p_t||^2 over t ~ U[{config.t0:g}, {config.T:g}] "
            f"({config.n_score} draws, the same for every score): -x scored {trivial['score_error']:.3g} ± "
            f"{trivial['score_error_stderr']:.2g}, the exact score 0. The networks (m = {config.training.width}, "
            f"trained on n = {config.n} draws of {config.data}): {described}.")
    errors = {a: r["score_error"] for a, r in rows.items()}
    ordered = sorted(errors, key=errors.get)
    if len(ordered) > 1:
        best, second, worst = ordered[0], ordered[1], ordered[-1]
        gap = errors[second] - errors[best]
        noise = math.hypot(rows[best]["score_error_stderr"], rows[second]["score_error_stderr"])
        text += (f" {best} had the lowest score error, {errors[worst] / errors[best]:.2g}x below {worst}; its lead "
                 f"over {second} was {gap:.2g}, {gap / noise:.1f} combined standard errors.")
    return text


def _curve_reading(learned: dict, trivial_curve: dict) -> str:
    times, trivial = np.asarray(trivial_curve["times"]), np.asarray(trivial_curve["value"], dtype=float)
    parts = []
    for activation, unit in learned.items():
        value = np.asarray(unit["curve"]["value"], dtype=float)
        above = times[value >= trivial]
        where = f" (at or above it at t = {', '.join(f'{t:.2g}' for t in above)})" if len(above) else ""
        parts.append(f"{activation} below -x's at {len(value) - len(above)} of {len(value)} times{where}, largest "
                     f"at t = {times[int(np.argmax(value))]:.2g} ({value.max():.3g})")
    return "Per t, the unweighted error E_(p_t)||s - grad log p_t||^2 (figure) was: " + "; ".join(parts) + "."


def _sample_reading(rows: dict, exact: dict | None, trivial: dict, p0: dict, config: DiffusionConfig) -> str:
    text = (f"Samples ({config.n_samples} per score, {config.sampler} sampler, {config.sampler_steps} steps from "
            f"t = {config.T:g} down to t0 = {config.t0:g}) against {config.n_samples} fresh draws of p_0. W2: a "
            f"second fresh sample of p_0 (the finite-sample floor) {p0['w2']:.3g}")
    if exact is not None:
        text += (f", the exact score {exact['w2']:.3g} (the sampler's discretisation floor, "
                 f"{exact['w2'] / p0['w2']:.2g}x the p_0 floor)")
    positions = {a: (f" ({_position(r['between']['w2'])})" if r["between"]["w2"] is not None else "")
                 for a, r in rows.items()}
    text += f", -x {trivial['w2']:.3g}; " + "; ".join(f"{a} {r['w2']:.3g}{positions[a]}" for a, r in rows.items())
    closest = min(rows, key=lambda a: rows[a]["w2"])
    text += f". {closest} came closest in W2"
    if exact is not None and rows[closest]["w2"] < exact["w2"]:
        text += (f", {exact['w2'] - rows[closest]['w2']:.2g} below the exact score (W2 between two samples of p_0 "
                 f"is {p0['w2']:.3g} here, so differences of that size are within sampling noise)")
    return (text + f". MMD^2 (Gaussian kernel, median-distance width): p_0 {p0['mmd']:.2g}"
            + (f", exact {exact['mmd']:.2g}" if exact is not None else "")
            + f", -x {trivial['mmd']:.2g}, " + _listing({a: r["mmd"] for a, r in rows.items()}, ".2g") + ".")


def _training_reading(metrics: dict, activations, config: DiffusionConfig, bayes) -> str:
    summaries = {a: metrics[a]["training"] for a in activations}
    parts = []
    for activation, t in summaries.items():
        excess = "" if bayes is None else f" (excess {t['best_val_loss'] - bayes:+.3g})"
        parts.append(f"{activation} {t['best_val_loss']:.4g}{excess} at step {t['best_step']} of {t['steps']}")
    text = "Held-out loss mean ||F - x_0||^2 of the kept network"
    if bayes is not None:
        text += (f", against {bayes:.4g} for the exact denoiser E[x_0 | x_t, t] on the same held-out pairs (the "
                 "floor: the labels x_0 are noisy)")
    text += ": " + "; ".join(parts) + "."
    budget = [a for a, t in summaries.items() if t["best_step"] == config.training.steps]
    stopped = [f"{a} at step {t['steps']}" for a, t in summaries.items() if t["steps"] < config.training.steps]
    if budget:
        text += (f" {', '.join(budget)} kept the last step of the {config.training.steps}-step budget: the held-out "
                 "loss was still falling when training stopped.")
    if stopped:
        text += f" Early stopping ended {', '.join(stopped)}."
    matched = config.training.time_law == "matched"
    if matched and bayes is not None and metrics["baselines"]["exact"] is not None and len(summaries) > 1:
        by_loss = sorted(summaries, key=lambda a: summaries[a]["best_val_loss"])
        by_error = sorted(summaries, key=lambda a: metrics[a]["score_error"])
        text += (" Training times follow the matched law, under which the expected excess loss is proportional to "
                 f"the score error; the order by held-out loss ({', '.join(by_loss)}) "
                 + ("matches" if by_loss == by_error else "differs from")
                 + f" the order by measured score error ({', '.join(by_error)}).")
    return text


CURVE_COLUMNS = ["activation", "n", "m", "score error", "± se", "W2", "MMD^2", "precision", "recall", "held-out loss",
                 "kept step", "steps run", "ended by"]
CURVE_METRICS = {"score error": 3, "W2": 5, "MMD^2": 6}


def ended_by(training: dict, budget: int) -> str:
    """What ended a denoiser's training: early stopping, or the step budget (with the held-out loss still
    falling when the kept step is the last one)."""
    if training["steps"] < budget:
        return "early stopping"
    return "budget, held-out loss still falling" if training["best_step"] == budget else "budget"


def learning_curve_rows(curves: dict, cfg) -> list[list]:
    rows = []
    for (activation, n, width), unit in curves.items():
        row, summary = unit["row"], unit["summary"]
        rows.append([activation, n, width, _number(row["score_error"]), _number(row["score_error_stderr"]),
                     _number(row["w2"]), _number(row["mmd"]), _number(row.get("precision")),
                     _number(row.get("recall")), summary["best_val_loss"], summary["best_step"], summary["steps"],
                     ended_by(summary, cfg.diffusion_steps)])
    return rows


def _series(rows: list, activation: str, axis: str, cfg) -> list[list]:
    """The rows of one curve: over m at n = diffusion_n (axis "m") or over n at m = diffusion_width (axis "n")."""
    if axis == "m":
        return sorted((r for r in rows if r[0] == activation and r[1] == cfg.diffusion_n and r[2] in
                       cfg.diffusion_widths), key=lambda r: r[2])
    return sorted((r for r in rows if r[0] == activation and r[2] == cfg.diffusion_width and r[1] in cfg.diffusion_ns),
                  key=lambda r: r[1])


def curve_slopes(rows: list, cfg) -> dict:
    """Least-squares log-log slope of each metric against m and against n, per activation (NaN where fewer than
    two points are positive; one seed per point, so no interval)."""
    slopes = {}
    for activation in cfg.activations:
        for axis, column in (("m", 2), ("n", 1)):
            series = _series(rows, activation, axis, cfg)
            for name, index in CURVE_METRICS.items():
                points = [(r[column], r[index]) for r in series if r[index] == r[index] and r[index] > 0]
                slopes[activation, axis, name] = (fit_power_law(*zip(*points))[0] if len(points) > 1
                                                  else float("nan"))
    return slopes


def _curve_figure(rows: list, slopes: dict, base: dict, cfg):
    import matplotlib.pyplot as plt

    from ..activations import resolve

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    floors = {"W2": [(base["rows"].get("exact") or {}).get("w2"), base["p0"]["w2"]],
              "MMD^2": [(base["rows"].get("exact") or {}).get("mmd"), base["p0"]["mmd"]]}
    for row_axes, axis, column, label in ((axes[0], "m", 2, "width m"), (axes[1], "n", 1, "draws n")):
        for ax, (name, index) in zip(row_axes, CURVE_METRICS.items()):
            for activation in cfg.activations:
                series = _series(rows, activation, axis, cfg)
                ax.plot([r[column] for r in series], [r[index] for r in series], marker="o",
                        color=resolve(activation).color, label=f"{activation}: slope "
                        f"{slopes[activation, axis, name]:+.2f}")
            for value, style in zip(floors.get(name, []), ("--", ":")):
                if value is not None and value > 0:
                    ax.axhline(value, color="grey", ls=style, lw=1)
            ax.set(xscale="log", yscale="log", xlabel=label, ylabel=name)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    return fig


def _endings(rows: list) -> str:
    """What ended the trainings of `rows`, each reason once with its count (the points named where few)."""
    unique = {(r[1], r[2]): r for r in rows}
    reasons = {}
    for (n, m), r in unique.items():
        reasons.setdefault(r[12], []).append(f"(n = {n}, m = {m})")
    return "Training ended by: " + "; ".join(
        f"{reason} at {len(points)} of {len(unique)} points" + (f" {', '.join(points)}" if len(points) <= 2 else "")
        for reason, points in reasons.items()) + "."


def _learning_curve_reading(rows: list, slopes: dict, metrics: dict, cfg) -> list[str]:
    text = []
    for activation in cfg.activations:
        by_m, by_n = _series(rows, activation, "m", cfg), _series(rows, activation, "n", cfg)
        text.append(
            f"{activation} learning curves (one seed per point): score error {by_m[0][3]:.3g} at m = {by_m[0][2]} "
            f"to {by_m[-1][3]:.3g} at m = {by_m[-1][2]} (slope {slopes[activation, 'm', 'score error']:+.2f}), W2 "
            f"slope {slopes[activation, 'm', 'W2']:+.2f}, MMD^2 slope {slopes[activation, 'm', 'MMD^2']:+.2f} in m; "
            f"score error {by_n[0][3]:.3g} at n = {by_n[0][1]} to {by_n[-1][3]:.3g} at n = {by_n[-1][1]} (slope "
            f"{slopes[activation, 'n', 'score error']:+.2f}), W2 slope {slopes[activation, 'n', 'W2']:+.2f}, MMD^2 "
            f"slope {slopes[activation, 'n', 'MMD^2']:+.2f} in n. " + _endings(by_m + by_n))
    widest = max(cfg.diffusion_widths + (cfg.diffusion_width,))
    p0 = metrics["baselines"]["p0"]
    exact = metrics["baselines"]["exact"]
    if p0.get("precision") is None:
        return text
    floor = p0["precision"]
    parts = []
    for activation in cfg.activations:
        row = next(r for r in rows if r[0] == activation and r[1] == cfg.diffusion_n and r[2] == widest)
        separated = row[7] >= floor - 0.05 and row[8] == 1.0
        verdict = ("separates the modes" if separated else
                   f"bridges them: {1 - row[7]:.1%} of its samples lie more than 3 standard deviations from every "
                   f"mode (fresh draws of p_0: {1 - floor:.1%}), recall {row[8]:.2f}; its training ended by "
                   f"{row[12]} at step {row[11]} with held-out loss {row[9]:.4g}")
        parts.append(f"{activation} precision {row[7]:.3f}, recall {row[8]:.2f}: {verdict}")
    if len(rows) > 2:
        rho = spearmanr([r[7] for r in rows], [r[9] for r in rows])[0]
        text.append(f"Over all {len(rows)} learning-curve runs, precision and held-out loss had Spearman rank "
                    f"correlation {rho:+.2f}" + (": the runs that fit the denoiser better put fewer samples between "
                                                 "the modes." if rho < -0.5 else "."))
    text.append(f"Mode separation by the widest networks (m = {widest}, n = {cfg.diffusion_n}), against fresh draws "
                f"of p_0 (precision {floor:.3f}, recall {p0['recall']:.2f})"
                + (f" and the exact score (precision {exact['precision']:.3f}, recall {exact['recall']:.2f})"
                   if exact is not None else "") + ": " + "; ".join(parts) + ".")
    return text
