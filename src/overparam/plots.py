"""Figures (matplotlib, headless Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve(history, path, title: str | None = None) -> Path:
    """Training loss L(W(t)) and ||F - y||_2 against step t, log scale."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    positive = history.loss > 0
    ax.semilogy(history.step[positive], history.loss[positive], label="loss L(W(t))")
    ax.semilogy(history.step[positive], history.residual_norm[positive], label=r"$\|F - y\|_2$", ls="--")
    ax.set_xlabel("step t")
    ax.set_ylabel("value (log scale)")
    ax.set_title(title or f"training ({history.optimizer}, lr = {history.lr:.3g}): {history.status}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
