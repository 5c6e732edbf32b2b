"""embed(x_t, t): the network input z in the unit ball (docs/mathematics.md#data, #diffusion).

    z = ( x / (sqrt(2) sqrt(R^2 + ||x||^2)),  tau / 2,  1 / 2 ),
    tau = 2 (log t - log t0) / (log T - log t0) - 1  in [-1, 1],

so ||z||^2 < 1/2 + 1/4 + 1/4 = 1 for every x in R^d and t in [t0, T]:
- x / sqrt(R^2 + ||x||^2) is smooth and one-to-one from R^d onto the open unit ball, close to
  x / R for ||x|| << R; R is the root-mean-square norm of the training inputs x_t (recorded);
- log time spreads out the small times, where p_t and E[x_0 | x_t] change fastest;
- the constant coordinate 1/2 acts as a bias: without it a ReLU network would be positively
  homogeneous in z (`bias=False` drops it and puts x and tau at weight 1/sqrt(2) each).
The network therefore has in_dim = d + 2 (d + 1 without the bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .process import Horizon


@dataclass(frozen=True)
class Embedding:
    """z = embed(x, t) as in the module docstring; `radius` is R, `horizon` gives t0 and T."""

    radius: float
    horizon: Horizon
    bias: bool = True

    def __post_init__(self) -> None:
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise ValueError(f"embedding radius must be positive and finite, got {self.radius!r}")

    @classmethod
    def fit(cls, x: torch.Tensor, horizon: Horizon, bias: bool = True) -> "Embedding":
        """R = sqrt(mean_i ||x_i||^2) of the training inputs x_t."""
        radius = float(x.square().sum(1).mean().sqrt())
        return cls(radius if radius > 0 else 1.0, horizon, bias)

    def in_dim(self, d: int) -> int:
        """Dimension of z for data in R^d."""
        return d + 1 + int(self.bias)

    def time_feature(self, t: torch.Tensor) -> torch.Tensor:
        """tau = 2 (log t - log t0) / (log T - log t0) - 1."""
        lo, hi = math.log(self.horizon.t0), math.log(self.horizon.T)
        return 2 * (torch.log(t) - lo) / (hi - lo) - 1

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        """z for x (n, d) and t a scalar or (n,); shape (n, in_dim(d)), same dtype and device as x."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if x.dim() != 2 or t.shape != x.shape[:1]:
            raise ValueError(f"embed needs x (n, d) and t scalar or (n,), got {tuple(x.shape)} and {tuple(t.shape)}")
        if (t <= 0).any():
            raise ValueError("embed needs times t > 0 (the time feature is log t)")
        space = x / torch.sqrt(self.radius ** 2 + x.square().sum(1, keepdim=True))
        tau = self.time_feature(t)[:, None]
        if self.bias:
            return torch.cat([space / math.sqrt(2), tau / 2, torch.full_like(tau, 0.5)], 1)
        return torch.cat([space, tau], 1) / math.sqrt(2)

    def describe(self) -> dict:
        return {"formula": "z = (x/(sqrt2*sqrt(R^2+|x|^2)), tau/2, 1/2), tau = 2(log t - log t0)/(log T - log t0) - 1"
                if self.bias else "z = (x/sqrt(R^2+|x|^2), tau)/sqrt2, tau = 2(log t - log t0)/(log T - log t0) - 1",
                "radius": self.radius, "t0": self.horizon.t0, "T": self.horizon.T, "bias": self.bias}
