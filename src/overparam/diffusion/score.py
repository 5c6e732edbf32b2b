"""Score functions s(x, t) ~ grad log p_t(x) and the exact score error (docs/mathematics.md#diffusion).

A score function is any callable `score(x, t)` with x (n, d) and t (n,) returning (n, d).

- learned (Tweedie): s(x, t) = (alpha_t F(embed(x, t)) - x) / h_t, F the trained denoiser;
- exact: grad log p_t of a `GaussianMixture`;
- trivial: s(x, t) = -x, the score of N(0, I) (= p_infinity).

Score error, with fresh x_0 ~ p_0, t ~ U[t0, T], x_t from the OU process:

    weighted:   E_t h_t E_{x ~ p_t} ||s(x, t) - grad log p_t(x)||^2   (one number)
    per time:   E_{x ~ p_t} ||s(x, t) - grad log p_t(x)||^2           (a curve over t)

Both are plain Monte Carlo averages over exact errors; the standard error is reported with each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import process
from .embedding import Embedding
from .mixtures import GaussianMixture
from .process import Horizon

ScoreFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LearnedScore:
    """s(x, t) = (alpha_t F(embed(x, t)) - x) / h_t for a trained network F: R^{d+2} -> R^d."""

    def __init__(self, net, embedding: Embedding) -> None:
        self.net = net
        self.embedding = embedding

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """F(embed(x, t)) ~ E[x_0 | x_t = x], shape (n, d), float64 on x's device."""
        z = self.embedding(x.to(self.net.dtype), t.to(self.net.dtype))
        return self.net(z.to(self.net.device)).to(dtype=x.dtype, device=x.device)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (process.alpha(t)[:, None] * self.denoiser(x, t) - x) / process.h(t)[:, None]


def trivial_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s(x, t) = -x: the score of N(0, I), the OU stationary law."""
    return -x


@dataclass
class ScoreError:
    """Monte Carlo estimate `value` +- `stderr` of the weighted score error, from `n` draws."""

    value: float
    stderr: float
    n: int


@dataclass
class ScoreErrorCurve:
    """Unweighted score error E_{p_t}||s - grad log p_t||^2 (and standard errors) at `times`."""

    times: np.ndarray
    value: np.ndarray
    stderr: np.ndarray


def _squared_errors(score: ScoreFunction, mixture: GaussianMixture, x0: torch.Tensor, t: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    xt = process.forward_sample(x0, t, generator)
    return (score(xt, t) - mixture.score(xt, t)).square().sum(1)


def score_error(score: ScoreFunction, mixture: GaussianMixture, horizon: Horizon, n: int,
                generator: torch.Generator, batch: int = 8192) -> ScoreError:
    """E_{t ~ U[t0, T]} h_t E_{x ~ p_t} ||s(x, t) - grad log p_t(x)||^2 from n fresh (x_0, t, xi)."""
    values = []
    for start in range(0, int(n), batch):
        size = min(batch, int(n) - start)
        x0 = mixture.sample(size, generator)
        t = horizon.sample_times(size, generator)
        values.append(process.h(t) * _squared_errors(score, mixture, x0, t, generator))
    values = torch.cat(values)
    return ScoreError(float(values.mean()), float(values.std() / np.sqrt(len(values))), len(values))


def score_error_curve(score: ScoreFunction, mixture: GaussianMixture, times, n_per_time: int,
                      generator: torch.Generator) -> ScoreErrorCurve:
    """E_{x ~ p_t} ||s(x, t) - grad log p_t(x)||^2 at each t in `times`, n_per_time draws each."""
    times = np.asarray(times, dtype=float)
    means, errors = [], []
    for t in times:
        x0 = mixture.sample(n_per_time, generator)
        values = _squared_errors(score, mixture, x0, torch.full((n_per_time,), float(t), dtype=torch.float64),
                                 generator)
        means.append(float(values.mean()))
        errors.append(float(values.std() / np.sqrt(n_per_time)))
    return ScoreErrorCurve(times, np.array(means), np.array(errors))


def curve_times(horizon: Horizon, count: int = 16) -> np.ndarray:
    """`count` times log-spaced over [t0, T] for the score-error curve."""
    return np.geomspace(horizon.t0, horizon.T, int(count))
