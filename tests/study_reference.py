"""Independent references for the study's tables: kernels from autograd Jacobians, H* from the closed forms of
docs/mathematics.md#ntk written out in numpy, and training by the plain gradient-descent loop of plain_gd.py.
Nothing here calls overparam's kernels, training engines or kernel-regime code (the initial weights and the
output scale kappa, which are the runs' inputs, come from the library)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import plain_gd


def autograd_kernel(activation: str, W, a, X, kappa) -> torch.Tensor:
    """H(W) = J J^T / (m kappa^2), J = dF(X)/dW by autograd (one output)."""
    J = torch.autograd.functional.jacobian(lambda V: plain_gd.output(V, a, X, activation, kappa)[:, 0], W)
    J = J.reshape(X.shape[0], -1)
    return J @ J.T / (W.shape[0] * kappa**2)


def limit_kernel(activation: str, X, sigma: float = 1.0) -> np.ndarray:
    """H*_ij in numpy: relu <x_i,x_j>(pi - angle)/(2 pi) with the angle as 2 atan2(|u - v|, |u + v|) of unit
    vectors (accurate near 0); exp <x_i,x_j> exp(sigma^2 |x_i + x_j|^2 / 2); softmax <x_i,x_j> exp(sigma^2 <x_i,x_j>)."""
    X = np.asarray(X, dtype=float)
    gram = X @ X.T
    if activation == "relu":
        unit = X / np.linalg.norm(X, axis=1, keepdims=True)
        angle = 2 * np.arctan2(np.linalg.norm(unit[:, None] - unit[None], axis=-1),
                               np.linalg.norm(unit[:, None] + unit[None], axis=-1))
        return gram * (np.pi - angle) / (2 * np.pi)
    if activation == "exp":
        return gram * np.exp(sigma**2 * np.linalg.norm(X[:, None] + X[None], axis=-1) ** 2 / 2)
    if activation == "softmax":
        return gram * np.exp(sigma**2 * gram)
    raise ValueError(activation)


def spectral_norm(A) -> float:
    return float(np.linalg.norm(np.asarray(A, dtype=float), ord=2))


@dataclass
class PlainRun:
    """One seed trained by plain GD to tol: the step count, lr, the squared residual at every step, the
    linearised dynamics' squared residual at every step (r <- r - lr Theta(0) r, iterated), and the weights."""

    steps: int
    converged: bool
    lr: float
    loss2: np.ndarray
    kernel_loss2: np.ndarray
    W0: torch.Tensor
    WT: torch.Tensor
    a: torch.Tensor
    kappa: float


def power_iteration_lr(theta: torch.Tensor, iters: int = 100, rtol: float = 1e-4) -> float:
    """lr='auto' as documented (`ntk.lambda_max`): 1 / the Rayleigh quotient of power iteration v <- Theta v /
    ||Theta v|| from a N(0, I) start drawn with torch seed 0, kept at the first iteration where it changes by at
    most rtol (relative). Written out on a dense Theta."""
    v = torch.randn((theta.shape[0], 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm()
    estimate = 0.0
    for _ in range(iters):
        w = theta @ v
        quotient = float((v * w).sum())
        if abs(quotient - estimate) <= rtol * abs(quotient):
            break
        v, estimate = w / w.norm(), quotient
    return 1 / quotient


def plain_run(activation: str, W0, a, X, y, kappa: float, steps: int, tol: float) -> PlainRun:
    """lr as lr='auto' picks it (`power_iteration_lr`, within 1e-4 of 1 / lambda_max(J J^T)); GD for `steps`
    steps; the run ends at the first t with ||F - y|| <= tol."""
    theta = autograd_kernel(activation, W0, a, X, kappa) * (W0.shape[0] * kappa**2)
    lr = power_iteration_lr(theta)
    assert abs(lr * float(torch.linalg.eigvalsh(theta)[-1]) - 1) < 1e-3
    weights, losses = plain_gd.descend(W0, a, X, y, activation, kappa, lr, steps)
    loss2 = 2 * losses.numpy()
    reached = np.nonzero(np.sqrt(loss2) <= tol)[0]
    end = int(reached[0]) if len(reached) else steps
    r = plain_gd.output(W0, a, X, activation, kappa)[:, 0] - y[:, 0]
    kernel = [float(r @ r)]
    for _ in range(steps):
        r = r - lr * theta @ r
        kernel.append(float(r @ r))
    return PlainRun(end, len(reached) > 0, lr, loss2[: end + 1], np.array(kernel), W0, weights[end], a, kappa)


def kernel_steps(run: PlainRun, tol: float, steps: int) -> float:
    """First t <= steps with the linearised ||r(t)|| <= tol, NaN if none."""
    reached = np.nonzero(np.sqrt(run.kernel_loss2[: steps + 1]) <= tol)[0]
    return float(reached[0]) if len(reached) else math.nan


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
