"""Figures of the kernel and of the theorems on a run (matplotlib, headless): each writes one PNG.

- `spectrum`: eigenvalues of H(W(0)) and/or H*, descending, log scale.
- `diagnostics`: a run's ||F - y||^2 against the DZPS19 bound and the kernel-regime prediction,
  observed vs predicted per-step contraction, lambda_min(H(W(t))) and kernel drift against
  lambda/2 and lambda/4, and the weights' movement against the DZPS19 radius.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots


def spectrum(eigenvalues: dict[str, np.ndarray], path, title: str = "NTK spectrum") -> Path:
    """eigenvalues: label -> values (descending; all of them, or the leading ones)."""
    path = Path(path)
    fig, ax = plots.figure(size=(6, 4))
    for label, values in eigenvalues.items():
        values = np.asarray(values, dtype=float)
        positive = values > 0
        index = np.arange(1, len(values) + 1)
        ax.loglog(index[positive], values[positive], marker=".", ms=3, lw=1, label=label)
    ax.set(xlabel="index i (descending)", ylabel=r"eigenvalue $\lambda_i$", title=title)
    plots.finish(ax)
    return plots.save(fig, path)


def diagnostics(history, check, path, regime=None, title: str | None = None) -> Path:
    """Four panels from History.extra (KernelDiagnostics columns) and its TheoryCheck.

    regime: an optional `KernelRegime` whose ||F_lin(t) - y||^2 is overlaid on the run's.
    """
    path = Path(path)
    extra = history.extra
    steps = np.asarray(extra["kernel_step"], dtype=float)
    lam = check.reference_lambda
    fig, axes = plots.figure(2, 2, size=(11, 7.5))

    ax = axes[0, 0]
    t = np.asarray(history.step, dtype=float)
    residual2 = np.asarray(history.residual_norm, dtype=float) ** 2
    ax.semilogy(t, residual2, label="network")
    ax.semilogy(t, max(check.predicted_rate, 0.0) ** t * residual2[0], ls="--",
                label=r"DZPS19 bound $(1-\eta_{eff}\lambda/2)^t\|F(0)-y\|^2$")
    if regime is not None:
        ax.semilogy(t, regime.residual_norm(history.step) ** 2, ls=":", label=r"kernel regime $F_{lin}(t)$")
    ax.set(xlabel="step t", ylabel=r"$\|F(t) - y\|_2^2$", title="residual")

    ax = axes[0, 1]
    observed = np.asarray(extra["observed_rate"], dtype=float)
    ax.plot(steps, observed, marker="o", ms=3, label="observed (per step, between records)")
    ax.plot(steps, np.asarray(extra["predicted_rate"], dtype=float), ls="--",
            label=r"predicted $1 - \eta_{eff}\lambda/2$")
    ax.set(xlabel="step t", ylabel=r"contraction of $\|F - y\|^2$ per step", title="linear rate")

    ax = axes[1, 0]
    ax.semilogy(steps, np.asarray(extra["lambda_min"], dtype=float), marker="o", ms=3,
                label=r"$\lambda_{min}(H(W(t)))$")
    drift = np.asarray(extra["kernel_drift"], dtype=float)
    ax.semilogy(steps[drift > 0], drift[drift > 0], marker="s", ms=3, label=r"$\|H(W(t)) - H(W(0))\|_2$")
    ax.axhline(lam / 2, color="grey", ls="--", lw=1, label=r"$\lambda/2$")
    ax.axhline(lam / 4, color="grey", ls=":", lw=1, label=r"$\lambda/4$")
    ax.set(xlabel="step t", ylabel="value", title=f"kernel ({check.lambda_source}: lambda = {lam:.3g})")

    ax = axes[1, 1]
    ax.plot(t, history.max_movement, label=r"$\max_r \|w_r(t) - w_r(0)\|_2$")
    if check.dzps19_radius is not None:
        ax.axhline(check.dzps19_radius, color="grey", ls="--", lw=1, label="DZPS19 radius R' (order)")
    ax.set(xlabel="step t", ylabel="movement", title="laziness")

    for ax in axes.flat:
        plots.finish(ax, legend=7)
    verdict = "theorems' conditions held" if check.holds else "some condition failed"
    fig.suptitle(title or f"theory check: {verdict}")
    return plots.save(fig, path)
