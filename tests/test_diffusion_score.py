"""Tweedie score and the exact score error against closed forms."""

import math

import numpy as np
import torch
from scipy.integrate import quad

from overparam.diffusion import (Embedding, GaussianMixture, Horizon, LearnedScore, score_error, score_error_curve,
                                 trivial_score)

HORIZON = Horizon(1e-2, 3.0)
MU = np.array([1.0, -2.0])
S2 = 0.3  # one Gaussian N(MU, S2 I): p_t = N(alpha MU, (alpha^2 S2 + h) I)


def gaussian() -> GaussianMixture:
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.as_tensor(MU)[None],
                           S2 * torch.eye(2, dtype=torch.float64)[None])


def trivial_error_at(t: float) -> float:
    """E||-x - grad log p_t(x)||^2 = E||(1/v - 1) x - alpha MU / v||^2 for x ~ N(alpha MU, v I)."""
    a, h = math.exp(-t), -math.expm1(-2 * t)
    v = a * a * S2 + h
    c = 1 / v - 1
    mean = c * a * MU - a * MU / v
    return float(mean @ mean + c * c * 2 * v)


def test_a_constant_offset_from_the_exact_score_costs_its_norm_times_the_mean_weight():
    """s = grad log p_t + b: the weighted error is ||b||^2 E_{t ~ U[t0, T]} h_t, with
    integral_{t0}^{T} (1 - e^{-2t}) dt = (T - t0) - (e^{-2 t0} - e^{-2T}) / 2 (and 0 for b = 0)."""
    mixture = gaussian()
    b = torch.tensor([0.3, -0.4], dtype=torch.float64)  # ||b||^2 = 0.25
    t0, T = HORIZON.t0, HORIZON.T
    mean_h = 1 - (math.exp(-2 * t0) - math.exp(-2 * T)) / (2 * (T - t0))
    error = score_error(lambda x, t: mixture.score(x, t) + b, mixture, HORIZON, 4000, torch.Generator().manual_seed(0))
    assert error.stderr > 0 and abs(error.value - 0.25 * mean_h) < 4 * error.stderr
    exact = score_error(mixture.score, mixture, HORIZON, 500, torch.Generator().manual_seed(0))
    assert exact.value == 0.0 and exact.stderr == 0.0


def test_trivial_score_error_matches_the_closed_form():
    mixture = gaussian()
    n = 20000
    error = score_error(trivial_score, mixture, HORIZON, n, torch.Generator().manual_seed(1), batch=3000)
    weighted = quad(lambda t: -math.expm1(-2 * t) * trivial_error_at(t), HORIZON.t0, HORIZON.T)[0]
    expected = weighted / (HORIZON.T - HORIZON.t0)
    assert error.n == n and abs(error.value - expected) < 4 * error.stderr, (error, expected)
    curve = score_error_curve(trivial_score, mixture, [0.05, 0.5, 2.0], 4000, torch.Generator().manual_seed(2))
    for t, value, se in zip(curve.times, curve.value, curve.stderr):
        assert abs(value - trivial_error_at(t)) < 4 * se, (t, value, trivial_error_at(t))


class ExactDenoiserNet:
    """Stands in for a network: inverts the embedding and returns the exact E[x_0 | x_t, t]."""

    dtype, device = torch.float64, torch.device("cpu")

    def __init__(self, mixture: GaussianMixture, embedding: Embedding) -> None:
        self.mixture, self.embedding = mixture, embedding

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        u = math.sqrt(2) * z[:, :-2]
        x = self.embedding.radius * u / torch.sqrt(1 - u.square().sum(1, keepdim=True))
        lo, hi = math.log(self.embedding.horizon.t0), math.log(self.embedding.horizon.T)
        t = torch.exp(lo + (2 * z[:, -2] + 1) * (hi - lo) / 2)
        return self.mixture.denoiser(x, t)


def test_tweedie_score_of_the_exact_denoiser_is_the_exact_score():
    mixture = GaussianMixture(torch.tensor([0.4, 0.6], dtype=torch.float64),
                              torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64),
                              torch.stack([0.2 * torch.eye(2), torch.zeros(2, 2)]).to(torch.float64))
    embedding = Embedding(1.5, HORIZON)
    score = LearnedScore(ExactDenoiserNet(mixture, embedding), embedding)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(50, 2, generator=gen, dtype=torch.float64) * 2
    t = HORIZON.sample_times(50, gen)
    np.testing.assert_allclose(score(x, t).numpy(), mixture.score(x, t).numpy(), rtol=1e-8, atol=1e-8)
    assert score_error(score, mixture, HORIZON, 300, gen).value < 1e-14
