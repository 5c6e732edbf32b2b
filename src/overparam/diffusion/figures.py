"""Figures of a diffusion run (matplotlib, headless): each `*_figure` writes one PNG and returns its path.

Each is a `plot_*` function (plain arrays in, a matplotlib figure out; the study saves those as
PNG and SVG) and a few lines that save it:

- samples.png: p_0 and the samples of every score side by side (first two coordinates);
- score_field.png: learned against true score field (quiver) at a few t (2-D data only);
- score_error.png: E_{p_t}||s - grad log p_t||^2 against t, plain and times h_t (exact data only);
- training.png: training and held-out mean squared error against GD step, with the Bayes floor;
- `plot_twin_distance` (no file of its own): each network's distance to its kernel twin against width m.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import plots
from ..activations import resolve

#: The panel of p_0's own draws in `plot_samples`.
REFERENCE = "p_0 (fresh draws)"
#: Colours of the baselines; a learned score takes its activation's colour.
BASELINE_COLORS = {"exact": "black", "trivial": "tab:gray", REFERENCE: "tab:purple"}


def score_color(name: str) -> str:
    """The colour of a score: a baseline's, or the activation's (`Activation.color`; a twin such as
    'relu twin_theta0' takes its network's)."""
    return BASELINE_COLORS.get(name) or resolve(name.split(" ")[0]).color


def score_style(name: str) -> str:
    """The line style of a score's curves: solid for a network or baseline, dashed for its Theta(W(0)) twin,
    dotted for its H* twin."""
    return "--" if "twin_theta0" in name else ":" if "twin_hstar" in name else "-"


def plot_twin_distance(couplings: dict, slopes: dict):
    """RMS distance between each network and its Theta(W(0)) twin at the network's kept step against width m
    (log-log), with the fitted power law. couplings: activation -> list of `twin_study.Coupling`; slopes:
    activation -> `twin_study.Slope` or None; returns the figure."""
    fig, ax = plots.figure(size=(5.5, 4))
    for activation, links in couplings.items():
        color = resolve(activation).color
        widths = np.array([link.m for link in links], dtype=float)
        ax.loglog(widths, [link.distance for link in links], marker="o", color=color, linestyle="none")
        slope = slopes.get(activation)
        label = activation if slope is None else f"{activation}: slope {slope.exponent:.2f}"
        if slope is not None:
            grid = np.geomspace(widths.min(), widths.max(), 20)
            ax.loglog(grid, slope.constant * grid ** slope.exponent, color=color, label=label)
        else:
            ax.plot([], [], color=color, marker="o", label=label)
    ax.set_xlabel("width m")
    ax.set_ylabel(r"RMS$_i\,\|F(z_i) - f_s(z_i)\|$ (held-out inputs)")
    ax.set_title("network against its Theta(W(0)) twin at the kept step s")
    plots.finish(ax, legend="medium")
    return fig


def plot_limits(reference: np.ndarray) -> tuple[float, float, float, float]:
    """Axis limits (x0, x1, y0, y1) of the first two coordinates: the reference's 0.1%-99.9% range, padded."""
    low, high = np.quantile(reference[:, :2], [0.001, 0.999], axis=0)
    pad = 0.15 * (high - low)
    return low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1]


def plot_samples(reference: np.ndarray, samples: dict[str, np.ndarray], title: str = ""):
    """Scatter of p_0 draws, then each score's samples, one panel each, shared axes; returns the figure."""
    panels = {REFERENCE: reference, **samples}
    fig, axes = plots.figure(1, len(panels), size=(3.2 * len(panels), 3.4), sharex=True, sharey=True, squeeze=False)
    x0, x1, y0, y1 = plot_limits(reference)
    for ax, (name, points) in zip(axes[0], panels.items()):
        finite = np.isfinite(points).all(1)
        ax.scatter(points[finite, 0], points[finite, 1], s=2, alpha=0.4, color=score_color(name))
        ax.set_title(name if finite.all() else f"{name} ({(~finite).sum()} non-finite)", fontsize=10)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
    if reference.shape[1] > 2:
        fig.supxlabel("first two coordinates")
    fig.suptitle(title or "samples against the truth")
    return fig


def samples_figure(reference: np.ndarray, samples: dict[str, np.ndarray], path, title: str = "") -> Path:
    """`plot_samples` written to path."""
    return plots.save(plot_samples(reference, samples, title), path, dpi=110)


def field_grid(limits, grid: int = 13) -> np.ndarray:
    """The grid x grid points (grid^2, 2) of the score-field figure, row by row over `limits`."""
    x0, x1, y0, y1 = limits
    gx, gy = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    return np.stack([gx.ravel(), gy.ravel()], 1)


def evaluate_field(score, points: np.ndarray, times) -> np.ndarray:
    """score(x, t) at every point for each t: shape (len(times), len(points), 2), float64 on the CPU."""
    x = torch.as_tensor(points, dtype=torch.float64)
    return np.stack([score(x, torch.full((len(x),), float(t), dtype=torch.float64)).detach().cpu().numpy()
                     for t in times])


def plot_score_field(points: np.ndarray, times, fields: dict[str, np.ndarray], truth: np.ndarray | None):
    """Quiver of each learned field (colour) over the true one (black); rows scores, columns t.

    points (grid^2, 2) from `field_grid`; fields[name] and truth (len(times), grid^2, 2) from
    `evaluate_field`; truth may be None (sample-only data): then only the learned fields are drawn.
    """
    grid = int(round(np.sqrt(len(points))))
    gx, gy = points[:, 0].reshape(grid, grid), points[:, 1].reshape(grid, grid)
    fig, axes = plots.figure(len(fields), len(times), size=(3.3 * len(times), 3.4 * len(fields) + 0.4),
                             squeeze=False)
    for col, t in enumerate(times):
        for row, (name, field) in enumerate(fields.items()):
            ax = axes[row, col]
            learned = np.asarray(field[col])
            reference = truth[col] if truth is not None else learned
            # one arrow scale per panel, set by the true field so mismatches in size show
            scale = np.linalg.norm(reference, axis=1).max() * grid + 1e-12
            if truth is not None:
                ax.quiver(gx, gy, truth[col][:, 0], truth[col][:, 1], color="black", alpha=0.45, scale=scale,
                          width=0.004)
            ax.quiver(gx, gy, learned[:, 0], learned[:, 1], color=score_color(name), scale=scale,
                      width=0.004)
            ax.set_title(f"{name}, t = {t:g}", fontsize=10)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("learned score (colour) over true score (black)" if truth is not None else "learned score fields")
    return fig


def score_field_figure(true_score, scores: dict, times, limits, path, grid: int = 13) -> Path:
    """Quiver of each learned score (colour) over the true score (black); rows scores, columns t.

    true_score may be None (sample-only data): then only the learned fields are drawn.
    """
    points = field_grid(limits, grid)
    truth = evaluate_field(true_score, points, times) if true_score is not None else None
    fields = {name: evaluate_field(score, points, times) for name, score in scores.items()}
    return plots.save(plot_score_field(points, times, fields, truth), path, dpi=100)


def plot_score_error(curves: dict):
    """E_{p_t}||s - grad log p_t||^2 against t (log-log), unweighted and times h_t, +-2 standard errors.

    curves: name -> `ScoreErrorCurve`; returns the figure.
    """
    from .process import h

    fig, axes = plots.figure(1, 2, size=(11, 4))
    for ax, weighted in zip(axes, (False, True)):
        for name, curve in curves.items():
            if name == "exact":  # identically zero
                continue
            weight = h(torch.as_tensor(curve.times)).numpy() if weighted else 1.0
            value, stderr = curve.value * weight, curve.stderr * weight
            color = score_color(name)
            ax.loglog(curve.times, value, marker="o", ms=3, label=name, color=color, linestyle=score_style(name))
            ax.fill_between(curve.times, np.maximum(value - 2 * stderr, value * 1e-3), value + 2 * stderr,
                            color=color, alpha=0.2)
        ax.set_xlabel("t")
        ax.set_ylabel((r"$h_t\,$" if weighted else "") + r"$E_{x\sim p_t}\|\hat s(x,t) - \nabla\log p_t(x)\|^2$")
        ax.set_title("weighted by h_t (its mean over t is the score error)" if weighted else "score error against t")
        plots.finish(ax, legend="medium")
    return fig


def score_error_figure(curves: dict, path) -> Path:
    """`plot_score_error` written to path."""
    return plots.save(plot_score_error(curves), path, dpi=120)


def plot_training(records: dict[str, dict], bayes_val_loss: float | None):
    """Training and held-out mean ||F - x_0||^2 against step; the best (kept) step is marked.

    records: name -> `experiment.training_record(fit)` (step, train_mse, val_step, val_loss, best_step).
    """
    fig, ax = plots.figure(size=(6, 4))
    for name, record in records.items():
        color = score_color(name)
        ax.semilogy(record["step"], np.asarray(record["train_mse"], dtype=float), color=color, alpha=0.6,
                    label=f"{name} train")
        ax.semilogy(record["val_step"], np.asarray(record["val_loss"], dtype=float), color=color, ls="--",
                    marker=".", label=f"{name} held out")
        ax.axvline(record["best_step"], color=color, ls=":", alpha=0.7)
    if bayes_val_loss is not None:
        ax.axhline(bayes_val_loss, color="black", ls="-.", label="exact denoiser, held out")
    ax.set_xlabel("step")
    ax.set_ylabel(r"mean $\|F(z) - x_0\|^2$")
    ax.set_title("denoiser training (dotted: kept step)")
    plots.finish(ax)
    return fig


def training_figure(records: dict, bayes_val_loss: float | None, path) -> Path:
    """`plot_training` of the training records (name -> `experiment.training_record(fit)`) written to path."""
    return plots.save(plot_training(records, bayes_val_loss), path, dpi=120)


def all_figures(result, out_dir) -> list[Path]:
    """Every figure that applies to `result` (a DiffusionResult), written into out_dir."""
    out = Path(out_dir)
    written = [samples_figure(result.reference, result.samples, out / "samples.png",
                              f"{result.config.data}: {result.config.sampler} sampler, "
                              f"{result.config.sampler_steps} steps")]
    learned = {name: result.scores[name] for name in result.fits}
    if result.reference.shape[1] == 2 and learned:
        true_score = result.truth.score if result.truth is not None else None
        written.append(score_field_figure(true_score, learned, result.config.quiver_times,
                                          plot_limits(result.reference), out / "score_field.png"))
    if result.curves:
        written.append(score_error_figure(result.curves, out / "score_error.png"))
    if result.fits:
        written.append(training_figure(result.training_records(), result.bayes_val_loss, out / "training.png"))
    return written
