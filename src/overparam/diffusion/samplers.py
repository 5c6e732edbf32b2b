"""Reverse-time samplers driven by any score function s(x, t) (docs/mathematics.md#diffusion).

Both start from y ~ N(0, I) at t = T and step down a `process.time_grid` T = t_0 > ... > t_N = t0,
with step delta_i = t_i - t_{i+1} > 0 (reversed time s = T - t runs forward):

- reverse SDE, Euler–Maruyama:  y <- y + delta (y + 2 s(y, t_i)) + sqrt(2 delta) xi;
- probability-flow ODE, Heun:   f(y, t) = y + s(y, t),
      k1 = f(y, t_i),  y' = y + delta k1,  k2 = f(y', t_{i+1}),  y <- y + delta (k1 + k2) / 2.

All samples move together (one batched score call per stage), in chunks of `batch` samples to
bound memory. The output approximates p_{t0}; the gap to p_0 is the discretisation floor that the
exact-score baseline measures.
"""

from __future__ import annotations

import math

import torch

from .process import Horizon, time_grid
from .score import ScoreFunction

SAMPLERS = ("sde", "ode")


def reverse_sde(score: ScoreFunction, y: torch.Tensor, grid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Euler–Maruyama for dy = [y + 2 s(y, T - s)] ds + sqrt(2) dB_s, from y at grid[0] to grid[-1]."""
    n = y.shape[0]
    for i in range(len(grid) - 1):
        delta = float(grid[i] - grid[i + 1])
        drift = y + 2 * score(y, grid[i].expand(n))
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        y = y + delta * drift + math.sqrt(2 * delta) * noise
    return y


def probability_flow(score: ScoreFunction, y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Heun's method for dy/ds = y + s(y, T - s), from y at grid[0] to grid[-1]."""
    n = y.shape[0]
    for i in range(len(grid) - 1):
        delta = float(grid[i] - grid[i + 1])
        k1 = y + score(y, grid[i].expand(n))
        guess = y + delta * k1
        k2 = guess + score(guess, grid[i + 1].expand(n))
        y = y + 0.5 * delta * (k1 + k2)
    return y


def sample(score: ScoreFunction, n: int, dim: int, horizon: Horizon, method: str = "sde", steps: int = 200,
           spacing: str = "quadratic", generator: torch.Generator | None = None, batch: int = 4096,
           dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """n samples (n, dim) of the reverse process driven by `score`: method 'sde' or 'ode'.

    `steps` time steps on `time_grid(horizon, steps, spacing)`; the ODE costs two score calls a step.
    Noise is drawn on the CPU from `generator` (the same samples on every device), then moved to `device`.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}: use 'sde' (reverse SDE) or 'ode' (probability flow)")
    if int(n) != n or n < 1:
        raise ValueError(f"number of samples must be a positive integer, got {n!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    grid = time_grid(horizon, steps, spacing, dtype=dtype).to(device)
    parts = []
    for start in range(0, int(n), int(batch)):
        size = min(int(batch), int(n) - start)
        y = torch.randn(size, dim, generator=generator, dtype=dtype).to(device)
        parts.append(reverse_sde(score, y, grid, generator) if method == "sde" else probability_flow(score, y, grid))
    return torch.cat(parts)
