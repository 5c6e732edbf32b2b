"""What every figure shares (matplotlib, headless Agg backend): a figure of panels in constrained layout, the
panels' finish (log grid, legend) and an atomic save. Each figure of the package is drawn with these."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Dots per inch of a saved PNG.
DPI = 120


def figure(rows: int = 1, columns: int = 1, *, size: tuple[float, float], **options):
    """(fig, axes) of rows x columns panels in a size = (width, height) inch figure, constrained layout;
    options go to `plt.subplots` (sharex, squeeze, ...)."""
    return plt.subplots(rows, columns, figsize=size, constrained_layout=True, **options)


def finish(ax, legend: float | str | None = 8) -> None:
    """Grid on major and minor ticks; a legend in font size `legend` where the panel labels anything."""
    ax.grid(True, which="both", alpha=0.3)
    if legend is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend)


def save(fig, path, *, dpi: int = DPI, close: bool = True) -> Path:
    """Write the figure to `path` (format from its suffix) through a temporary name unique to this process,
    so two processes writing one folder never leave a half-written file; close it unless close=False."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(temporary, format=path.suffix[1:], dpi=dpi)
    temporary.replace(path)
    if close:
        plt.close(fig)
    return path


def loss_curve(history, path, title: str | None = None) -> Path:
    """Training loss L(W(t)) and ||F - y||_2 against step t, log scale."""
    fig, ax = figure(size=(6, 4))
    positive = history.loss > 0
    ax.semilogy(history.step[positive], history.loss[positive], label="loss L(W(t))")
    ax.semilogy(history.step[positive], history.residual_norm[positive], label=r"$\|F - y\|_2$", ls="--")
    ax.set_xlabel("step t")
    ax.set_ylabel("value (log scale)")
    ax.set_title(title or f"training ({history.optimizer}, lr = {history.lr:.3g}): {history.status}")
    finish(ax, legend="medium")
    return save(fig, path)
