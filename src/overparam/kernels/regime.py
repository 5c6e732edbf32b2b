"""Kernel-regime predictions: discrete gradient descent on the network linearised at W(0).

Linearised GD on the training set moves the residual r = F - y by r(t+1) = (I - eta Theta) r(t)
(docs/mathematics.md#ntk), so with Theta = Q diag(mu) Q^T computed once

    F_lin(t) = y + (I - eta Theta)^t (F(0) - y) = y + Q diag((1 - eta mu)^t) Q^T (F(0) - y)

for every t at the cost of one eigendecomposition. At a test point x the linearised network moves
by -eta Theta(x, X) r(t) per step, so

    F_lin(x, t) = F(0, x) - Theta(x, X) Q diag(g_t(mu)) Q^T (F(0) - y),
    g_t(mu) = eta sum_{s<t} (1 - eta mu)^s = (1 - (1 - eta mu)^t) / mu      (g_t(0) = eta t),

and t -> infinity (0 < eta mu < 2) is kernel regression on the initial residual:
F(0, x) + Theta(x, X) Theta^+ (y - F(0)). These are the discrete steps the theorems analyse,
not the continuous gradient flow.

Vectors are output-major as in `kernels.finite.ntk`: entry l*n + i is output l at x_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .infinite import infinite_ntk
from .finite import ntk
from ..validation import as_inputs, as_targets


@dataclass
class KernelRegime:
    """GD with step `lr` on the linear model whose kernel is Theta = Q diag(mu) Q^T.

    Build it with `KernelRegime.of_network(net, X, y, lr)` (Theta(W(0)) of a network),
    `KernelRegime.infinite(activation, X, y, eta_eff)` (H*), or `from_kernel` (any kernel).

    eigenvalues mu (N,), eigenvectors Q (N, N), coordinates Q^T (F(0) - y) (N,), with N = n k;
    initial_outputs F(0) and targets y are (n, k). cross_kernel maps test inputs to
    Theta(X_test, X), initial_test_outputs maps them to F(0, X_test) (both optional).
    cross_map (optional) maps training-side weights V (n, k) to the function x -> Theta(x, X) V
    ((n_test, k) for X_test), a faster route than forming the cross kernel (`predictor` uses it).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    coordinates: torch.Tensor
    initial_outputs: torch.Tensor
    targets: torch.Tensor
    lr: float
    cross_kernel: Callable[[torch.Tensor], torch.Tensor] | None = None
    initial_test_outputs: Callable[[torch.Tensor], torch.Tensor] | None = None
    cross_map: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None = None

    @classmethod
    def from_kernel(cls, kernel, initial_outputs, targets, lr: float, cross_kernel=None,
                    initial_test_outputs=None, cross_map=None) -> "KernelRegime":
        """From a kernel matrix Theta (nk, nk) in the units of the step: r <- (I - lr Theta) r."""
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        size = kernel.shape[0]
        if kernel.dim() != 2 or kernel.shape[1] != size:
            raise ValueError(f"the kernel must be a square matrix, got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all():
            raise ValueError("the kernel has non-finite entries (NaN or inf)")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        targets = torch.as_tensor(targets, dtype=torch.float64, device=kernel.device)
        targets = targets[:, None] if targets.dim() == 1 else targets
        n, k = targets.shape
        if n * k != size:
            raise ValueError(f"the kernel is {size} x {size} but the targets give n k = {n} x {k} = {n * k}")
        mu, Q = torch.linalg.eigh((kernel + kernel.T) / 2)
        return cls.from_eigendecomposition(mu, Q, initial_outputs, targets, lr, cross_kernel, initial_test_outputs,
                                           cross_map)

    @classmethod
    def from_eigendecomposition(cls, eigenvalues, eigenvectors, initial_outputs, targets, lr: float,
                                cross_kernel=None, initial_test_outputs=None, cross_map=None) -> "KernelRegime":
        """From Theta = Q diag(mu) Q^T already decomposed (e.g. one eigendecomposition shared by several
        target columns); eigenvalues (N,), eigenvectors (N, N) with orthonormal columns, N = n k."""
        mu = torch.as_tensor(eigenvalues, dtype=torch.float64)
        Q = torch.as_tensor(eigenvectors, dtype=torch.float64)
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        targets = torch.as_tensor(targets, dtype=torch.float64, device=Q.device)
        targets = targets[:, None] if targets.dim() == 1 else targets
        n, k = targets.shape
        if mu.shape != (n * k,) or Q.shape != (n * k, n * k):
            raise ValueError(f"need eigenvalues ({n * k},) and eigenvectors ({n * k}, {n * k}) for targets of shape "
                             f"({n}, {k}), got {tuple(mu.shape)} and {tuple(Q.shape)}")
        initial_outputs = as_targets(initial_outputs, n, k, torch.float64, Q.device)
        coordinates = Q.T @ _flatten(initial_outputs - targets)
        return cls(mu, Q, coordinates, initial_outputs, targets, float(lr), cross_kernel, initial_test_outputs,
                   cross_map)

    @classmethod
    def of_network(cls, net, X, y, lr: float | str) -> "KernelRegime":
        """The network's own linearisation at its current weights W(0): Theta = Theta(W(0)) (not
        normalised), F(0) = net(X). lr: the GD step, or "auto" (1 / lambda_max(Theta), as `train`)."""
        from ..training.loop import auto_lr

        X = as_inputs(X, net.in_dim, net.dtype, net.device)
        y = as_targets(y, X.shape[0], net.out_dim, net.dtype, net.device)
        if lr == "auto":
            lr = auto_lr(net, X)
        frozen = net.copy()  # later training of `net` must not move the linearisation point
        theta = ntk(frozen, X, normalized=False)

        def cross(X_test: torch.Tensor) -> torch.Tensor:
            return ntk(frozen, X_test.to(frozen.dtype), normalized=False, X2=X)

        def start(X_test: torch.Tensor) -> torch.Tensor:
            return frozen(X_test.to(frozen.dtype))

        def cross_map(V: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            # Theta(x, X) V = J(x) (J(X)^T V): the weight move J^T V once, then one O(n_test m d) pass per call
            move = frozen.forward_pass(X, keep=False).vjp(V.to(dtype=frozen.dtype, device=frozen.device))
            return lambda Z: frozen.forward_pass(Z.to(dtype=frozen.dtype, device=frozen.device), keep=False) \
                .jvp(move).to(torch.float64).cpu()

        return cls.from_kernel(theta.cpu(), frozen(X).cpu(), y.cpu(), float(lr),
                                        lambda Z: cross(Z.to(frozen.device)).cpu(),
                                        lambda Z: start(Z.to(frozen.device)).cpu(), cross_map)

    @classmethod
    def infinite(cls, activation: str, X, y, eta_eff: float, sigma: float = 1.0,
                 initial_outputs=None) -> "KernelRegime":
        """The infinite-width limit: r <- (I - eta_eff H*) r with eta_eff = eta m kappa^2 (docs/mathematics.md#ntk)
        and I_k (x) H* for k outputs. F(0) defaults to 0 (the limit of coupled initialisation)."""
        X = as_inputs(X, None, torch.float64, torch.device("cpu"))
        targets = torch.as_tensor(np.asarray(y, dtype=np.float64))
        targets = targets[:, None] if targets.dim() == 1 else targets
        k = targets.shape[1]
        start = torch.zeros_like(targets) if initial_outputs is None else initial_outputs
        kernel = infinite_ntk(activation, X, sigma, out_dim=k)

        def cross(X_test: torch.Tensor) -> torch.Tensor:
            return torch.kron(torch.eye(k, dtype=torch.float64), infinite_ntk(activation, X_test, sigma, X2=X))

        def cross_map(V: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda Z: infinite_ntk(activation, Z, sigma, X2=X) @ V  # (I_k (x) H*) acts per output column

        return cls.from_kernel(kernel, start, targets, eta_eff, cross, cross_map=cross_map)

    @property
    def n(self) -> int:
        return self.targets.shape[0]

    @property
    def k(self) -> int:
        return self.targets.shape[1]

    def decay(self, steps) -> torch.Tensor:
        """(1 - lr mu)^t for each step t and eigenvalue mu, shape (T, N)."""
        t = _steps(steps, self.eigenvalues)
        base = 1 - self.lr * self.eigenvalues
        magnitude = base.abs()[None, :] ** t[:, None]
        odd = (t.remainder(2) == 1)[:, None] & (base < 0)[None, :]
        return torch.where(odd, -magnitude, magnitude)

    def residuals(self, steps) -> torch.Tensor:
        """r_lin(t) = (I - lr Theta)^t (F(0) - y) on the training set, shape (T, n, k)."""
        flat = (self.decay(steps) * self.coordinates) @ self.eigenvectors.T
        return _unflatten(flat, self.n, self.k)

    def outputs(self, steps) -> torch.Tensor:
        """F_lin(t) = y + r_lin(t) on the training set, shape (T, n, k)."""
        return self.targets + self.residuals(steps)

    def residual_norm(self, steps) -> np.ndarray:
        """||F_lin(t) - y||_2 = ||diag((1 - lr mu)^t) Q^T r(0)||_2 for each t, shape (T,)."""
        return (self.decay(steps) * self.coordinates).norm(dim=1).numpy()

    def loss(self, steps) -> np.ndarray:
        """L_lin(t) = ||F_lin(t) - y||^2 / 2, shape (T,)."""
        return 0.5 * self.residual_norm(steps) ** 2

    def steps_to(self, tol: float, max_steps: int = 10**7) -> int | None:
        """First t with ||F_lin(t) - y||_2 <= tol (None if not reached within max_steps)."""
        if self.residual_norm([0])[0] <= tol:
            return 0
        low, high = 0, 1
        while self.residual_norm([high])[0] > tol:  # the norm is not monotone when lr mu > 1
            low, high = high, 2 * high
            if high > max_steps:
                return None
        chunk = torch.arange(low, high + 1)
        reached = np.nonzero(self.residual_norm(chunk) <= tol)[0]
        return int(chunk[reached[0]])

    def predict(self, X_test, steps=None) -> torch.Tensor:
        """F_lin(x, t) at test inputs: (T, n_test, k) for `steps`, (n_test, k) for steps=None
        (t -> infinity: kernel regression F(0, x) + Theta(x, X) Theta^+ (y - F(0)))."""
        if self.cross_kernel is None:
            raise ValueError("this regime has no cross kernel: build it with KernelRegime.of_network or "
                             "KernelRegime.infinite, or pass cross_kernel to from_kernel")
        X_test = torch.as_tensor(X_test, dtype=torch.float64)
        cross = self.cross_kernel(X_test).to(torch.float64)
        start = self.initial_test_outputs(X_test).to(torch.float64) if self.initial_test_outputs else \
            torch.zeros(X_test.shape[0], self.k, dtype=torch.float64)
        weights = self._step_sums(steps) * self.coordinates  # (T, N) or (N,)
        moved = (weights @ self.eigenvectors.T) @ cross.T
        return start - _unflatten(moved, X_test.shape[0], self.k)

    def predictor(self, step: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """X_test -> F_lin(X_test, step), shape (n_test, k), for many calls at one step (a sampler's):
        the training-side weights V = Q diag(g_step(mu)) Q^T (F(0) - y) are computed once, and each call
        costs one product Theta(X_test, X) V (through `cross_map` when the regime has one)."""
        if self.cross_kernel is None and self.cross_map is None:
            raise ValueError("this regime has no cross kernel: build it with KernelRegime.of_network or "
                             "KernelRegime.infinite, or pass cross_kernel to from_kernel")
        flat = self.eigenvectors @ (self._step_sums([step])[0] * self.coordinates)
        weights = _unflatten(flat, self.n, self.k)
        if self.cross_map is not None:
            apply = self.cross_map(weights)
        else:
            def apply(X_test: torch.Tensor) -> torch.Tensor:
                return _unflatten(self.cross_kernel(X_test).to(torch.float64) @ flat, X_test.shape[0], self.k)

        def predict(X_test) -> torch.Tensor:
            X_test = torch.as_tensor(X_test, dtype=torch.float64)
            start = self.initial_test_outputs(X_test).to(torch.float64) if self.initial_test_outputs else 0.0
            return start - apply(X_test)

        return predict

    def held_out(self, X_val, y_val) -> "HeldOutLoss":
        """The held-out loss mean_i ||F_lin(x_i, t) - y_i||^2 of (X_val, y_val) as a function of the stopping
        time t (`HeldOutLoss`): one cross kernel Theta(X_val, X), then O(n_val k N) per t."""
        if self.cross_kernel is None:
            raise ValueError("this regime has no cross kernel: build it with KernelRegime.of_network or "
                             "KernelRegime.infinite, or pass cross_kernel to from_kernel")
        X_val = torch.as_tensor(X_val, dtype=torch.float64)
        y_val = torch.as_tensor(y_val, dtype=torch.float64)
        y_val = y_val[:, None] if y_val.dim() == 1 else y_val
        if y_val.shape != (X_val.shape[0], self.k):
            raise ValueError(f"held-out targets must have shape ({X_val.shape[0]}, {self.k}), got {tuple(y_val.shape)}")
        start = self.initial_test_outputs(X_val).to(torch.float64) if self.initial_test_outputs else \
            torch.zeros_like(y_val)
        projection = self.cross_kernel(X_val).to(torch.float64) @ self.eigenvectors
        return HeldOutLoss(projection, _flatten(start - y_val), self.eigenvalues, self.coordinates, self.lr,
                           X_val.shape[0])

    def _step_sums(self, steps) -> torch.Tensor:
        """g_t(mu) = lr sum_{s<t} (1 - lr mu)^s, or its limit 1/mu (pseudo-inverse) for steps=None."""
        mu = self.eigenvalues
        if steps is None:
            cutoff = mu.abs().max() * len(mu) * torch.finfo(mu.dtype).eps
            return torch.where(mu > cutoff, 1 / mu.clamp_min(cutoff), torch.zeros_like(mu))
        return step_sums(mu, self.lr, _steps(steps, mu))


@dataclass
class StoppingTime:
    """The held-out loss minimised over the stopping time t of linearised GD (`HeldOutLoss.minimise`).

    time: the minimiser t* over real t in [0, max_time]; step: the integer GD step next to it (floor or ceil)
    with the smaller loss; loss: the held-out loss at `step`; at_limit: t* is max_time (the loss was still
    falling there); times, losses: the scanned log grid and its losses.
    """

    time: float
    step: int
    loss: float
    at_limit: bool
    times: np.ndarray
    losses: np.ndarray


@dataclass
class HeldOutLoss:
    """L(t) = (1/n_val) sum_i ||F_lin(x_i, t) - y_i||^2 over held-out pairs, for any real t >= 0:

        F_lin(X_val, t) - y_val = e_0 - P (g(mu, t) * c),   P = Theta(X_val, X) Q,   c = Q^T (F(0) - y),

    with e_0 = F(0, X_val) - y_val (flattened output-major) and g = `step_sums`
    (docs/mathematics.md#the-kernel-twin). Each t costs one product with P.
    """

    projection: torch.Tensor
    offset: torch.Tensor
    eigenvalues: torch.Tensor
    coordinates: torch.Tensor
    lr: float
    n: int

    def __call__(self, times, batch: int = 512) -> np.ndarray:
        """L(t) for each t in `times`, shape (T,)."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        losses = []
        for start in range(0, len(times), batch):
            weights = step_sums(self.eigenvalues, self.lr, times[start:start + batch]) * self.coordinates
            errors = self.offset - weights @ self.projection.T
            losses.append((errors.square().sum(1) / self.n).numpy())
        return np.concatenate(losses) if losses else np.zeros(0)

    def minimise(self, max_time: float = 1e8, points: int = 2000) -> StoppingTime:
        """t* = argmin L(t) over [0, max_time] (`minimise_loss`)."""
        return minimise_loss(self, max_time, points)


def minimise_loss(loss: Callable[[np.ndarray], np.ndarray], max_time: float = 1e8, points: int = 2000) -> StoppingTime:
    """t* = argmin loss(t) over real t in [0, max_time], for loss(times) -> losses (T,) such as `HeldOutLoss`.

    loss on t = 0 and `points` log-spaced times in [1, max_time] (neighbours a factor max_time^(1/points)
    apart: 0.9 % at the defaults), then a bounded Brent search (scipy `minimize_scalar`, to 1e-10
    relative) between the grid neighbours of the best grid time; the step is the better of floor(t*) and
    ceil(t*). A local minimum narrower than the grid spacing could be missed.
    """
    from scipy.optimize import minimize_scalar

    if not (max_time >= 1 and math.isfinite(max_time)):
        raise ValueError(f"max_time must be a finite number >= 1, got {max_time!r}")
    if int(points) != points or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    times = np.concatenate([[0.0], np.geomspace(1.0, max_time, int(points))])
    losses = loss(times)
    if not np.isfinite(losses).all():
        raise FloatingPointError("the held-out loss is not finite on the scanned times (GD on a kernel with "
                                 "lr mu >= 2 diverges: lower lr)")
    best = int(np.argmin(losses))
    time = float(times[best])
    if 0 < best < len(times) - 1:
        low, high = times[best - 1], times[best + 1]
        found = minimize_scalar(lambda t: float(loss(np.array([t]))[0]), bounds=(low, high), method="bounded",
                                options={"xatol": 1e-10 * high})
        if found.fun <= losses[best]:
            time = float(found.x)
    candidates = sorted({math.floor(time), math.ceil(time)})
    values = loss(np.array(candidates, dtype=np.float64))
    step = candidates[int(np.argmin(values))]
    return StoppingTime(time, int(step), float(values.min()), best == len(times) - 1, times, losses)


def step_sums(eigenvalues: torch.Tensor, lr: float, times) -> torch.Tensor:
    """g(mu, t) = lr sum_{s<t} (1 - lr mu)^s = (1 - (1 - lr mu)^t) / mu for each time t and eigenvalue mu,
    shape (T, N); g(0, t) = lr t (docs/mathematics.md#the-kernel-twin).

    1 - b^t (b = 1 - lr mu) is computed as -expm1(t log1p(-lr mu)) where b > 0, so that eigenvalues
    near 0 keep their digits (a rounded 1 - b^t divided by a tiny mu would not). Times may be real:
    for b < 0 (lr mu > 1) b^t is extended as |b|^t cos(pi t), the real part of exp(t log b), which is
    (-1)^t |b|^t at every integer t (the value GD takes there) and smooth in t, so a minimiser over
    real t can be searched for; g(mu, 0) = 0.
    """
    mu = torch.as_tensor(eigenvalues, dtype=torch.float64)[None, :]
    t = torch.as_tensor(np.asarray(times, dtype=np.float64), dtype=mu.dtype).reshape(-1, 1)
    if (t < 0).any() or not torch.isfinite(t).all():
        raise ValueError("stopping times must be finite and >= 0")
    step_mu = lr * mu
    decayed = -torch.expm1(t * torch.log1p(-step_mu.clamp_max(1.0)))  # b >= 0 (b = 0: log1p(-1) = -inf)
    parity = torch.where(t == t.round(), 1 - 2 * t.remainder(2), torch.cos(torch.pi * t))
    alternating = 1 - torch.exp(t * torch.log1p((step_mu - 2).clamp_min(-1.0))) * parity  # b < 0: |b| = lr mu - 1
    ratio = torch.where(step_mu <= 1, decayed, alternating) / torch.where(mu == 0, torch.ones_like(mu), mu)
    sums = torch.where(mu == 0, lr * t, ratio)
    return torch.where(t == 0, torch.zeros_like(sums), sums)


def _steps(steps, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(steps), dtype=like.dtype).reshape(-1)
    if (t < 0).any() or (t != t.round()).any():
        raise ValueError("steps must be non-negative integers")
    return t


def _flatten(V: torch.Tensor) -> torch.Tensor:
    """(..., n, k) -> (..., n k), output-major."""
    return V.transpose(-1, -2).reshape(*V.shape[:-2], -1)


def _unflatten(flat: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(..., n k) output-major -> (..., n, k)."""
    return flat.reshape(*flat.shape[:-1], k, n).transpose(-1, -2)


def complexity(kernel, y) -> float:
    """ADHLW19's complexity term sqrt(2 y^T H^{-1} y / n) (docs/mathematics.md#generalisation), n = number of points.

    kernel: H (n, n), one output block (as `infinite_ntk` returns; then H is I_k (x) H for k
    outputs), or (nk, nk) output-major as `ntk` returns. y: (n,) or (n, k). Solved by a Cholesky
    factorisation in float64; a kernel that is not positive definite raises ValueError
    (lambda_min <= 0: no finite-norm interpolant, and the term is infinite).
    """
    targets = torch.as_tensor(y, dtype=torch.float64).reshape(len(y), -1)
    n, k = targets.shape
    H = torch.as_tensor(kernel, dtype=torch.float64)
    if H.shape == (n, n):
        right = targets  # I_k (x) H: one solve per output column
    elif H.shape == (n * k, n * k):
        right = _flatten(targets)[:, None]
    else:
        raise ValueError(f"kernel must be (n, n) or (nk, nk) = ({n}, {n}) or ({n * k}, {n * k}) for y of "
                         f"shape {tuple(targets.shape)}, got {tuple(H.shape)}")
    factor, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("the kernel is not positive definite (lambda_min <= 0): y^T H^{-1} y is not finite")
    solution = torch.cholesky_solve(right, factor)
    return math.sqrt(2 * float((right * solution).sum()) / n)
