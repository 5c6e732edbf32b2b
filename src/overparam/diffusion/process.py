"""The Ornstein–Uhlenbeck forward process of docs/mathematics.md#diffusion.

    dx = -x dt + sqrt(2) dB,   x_t = alpha_t x_0 + sqrt(h_t) xi,   xi ~ N(0, I),
    alpha_t = exp(-t),   h_t = 1 - exp(-2t),

so p_t -> N(0, I) as t -> infinity. Training times are drawn uniformly from [t0, T]; the
samplers run backwards from T to t0 on a `time_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SPACINGS = ("quadratic", "uniform", "log")
TIME_LAWS = ("uniform", "log", "matched")


def alpha(t: torch.Tensor) -> torch.Tensor:
    """alpha_t = exp(-t), elementwise."""
    return torch.exp(-t)


def h(t: torch.Tensor) -> torch.Tensor:
    """h_t = 1 - exp(-2t) = sigma_t^2 (computed as -expm1(-2t), accurate for small t)."""
    return -torch.expm1(-2 * t)


@dataclass(frozen=True)
class Horizon:
    """The time interval [t0, T] of training, score error and sampling (0 < t0 < T)."""

    t0: float = 1e-3
    T: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.t0 < self.T < math.inf):
            raise ValueError(f"need 0 < t0 < T < inf, got t0 = {self.t0}, T = {self.T}")

    def sample_times(self, n: int, generator: torch.Generator, dtype=torch.float64, law: str = "uniform") -> torch.Tensor:
        """n times in [t0, T], shape (n,), drawn by `law`:

        uniform: t ~ U[t0, T] (docs/mathematics.md#diffusion);
        log:     log t ~ U[log t0, log T];
        matched: density proportional to alpha_t^2 / h_t, i.e. log h_t ~ U[log h_t0, log h_T]
                 (t = -log(1 - h) / 2). Under this law E||F - x_0||^2 equals, up to a constant
                 factor and an additive constant, the weighted score error
                 E_{t ~ U} h_t E||s - grad log p_t||^2 of the Tweedie score, because
                 h_t ||s - grad log p_t||^2 = (alpha_t^2 / h_t) ||F - E[x_0 | x_t]||^2.
        """
        if law not in TIME_LAWS:
            raise ValueError(f"unknown time law {law!r}: use one of {', '.join(TIME_LAWS)}")
        u = torch.rand(n, generator=generator, dtype=dtype)
        if law == "uniform":
            return self.t0 + (self.T - self.t0) * u
        if law == "log":
            return self.t0 * (self.T / self.t0) ** u
        lo, hi = math.log(-math.expm1(-2 * self.t0)), math.log(-math.expm1(-2 * self.T))
        return (-0.5 * torch.log1p(-torch.exp(lo + (hi - lo) * u))).clamp(self.t0, self.T)


def forward_sample(x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x_t = alpha_t x_0 + sqrt(h_t) xi for x0 (n, d) and t (n,) or a scalar; returns (n, d).

    The noise is drawn on the CPU from `generator` (same draws on every device).
    """
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if t.dim() == 0:
        t = t.expand(x0.shape[0])
    if t.shape != x0.shape[:1]:
        raise ValueError(f"t must be a scalar or have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    xi = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    return alpha(t)[:, None] * x0 + h(t).sqrt()[:, None] * xi


def time_grid(horizon: Horizon, steps: int, spacing: str = "quadratic", dtype=torch.float64) -> torch.Tensor:
    """Decreasing times T = t_0 > t_1 > ... > t_steps = t0 for the reverse-time samplers.

    quadratic: uniform in sqrt(t) (steps shrink linearly towards t0, where the score changes fastest);
    uniform: uniform in t; log: uniform in log t.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"sampler steps must be a positive integer, got {steps!r}")
    u = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=dtype)
    start, end = horizon.T, horizon.t0
    if spacing == "uniform":
        grid = start + u * (end - start)
    elif spacing == "quadratic":
        grid = (math.sqrt(start) + u * (math.sqrt(end) - math.sqrt(start))) ** 2
    elif spacing == "log":
        grid = torch.exp(math.log(start) + u * (math.log(end) - math.log(start)))
    else:
        raise ValueError(f"unknown time spacing {spacing!r}: use one of {', '.join(SPACINGS)}")
    grid[0], grid[-1] = start, end  # exact end points despite rounding
    return grid
