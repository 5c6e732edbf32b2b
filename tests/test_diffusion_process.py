"""The OU forward process: closed-form marginals against simulation, time laws, time grids."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import cumulative_trapezoid, quad

from overparam.diffusion import Horizon, forward_sample, isotropic_mixture, time_grid
from overparam.diffusion.process import alpha, h


def test_closed_form_marginal_matches_euler_maruyama_simulation():
    """Simulate dx = -x dt + sqrt(2) dB with small steps; moments vs alpha_t x_0 and h_t."""
    n, dt, t = 20000, 2e-3, 0.5
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    x = x0.expand(n, 2).clone()
    for _ in range(round(t / dt)):
        x += -x * dt + math.sqrt(2 * dt) * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    a, var = math.exp(-t), 1 - math.exp(-2 * t)
    # Euler-Maruyama's own bias: (1 - dt)^N vs e^{-t} is 5e-4 relative, its variance is off by a
    # factor 1 / (1 - dt/2), 6e-4 absolute: the slack terms below cover these and nothing more
    mean_err = (x.mean(0) - a * x0).abs()
    assert (mean_err < 4 * math.sqrt(var / n) + 1e-3).all(), mean_err
    sample_var = x.var(0)
    assert ((sample_var - var).abs() < 4 * var * math.sqrt(2 / n) + 2e-3).all(), sample_var


def test_forward_sample_has_the_mixture_marginal_moments():
    """x_t = alpha x_0 + sqrt(h) xi for x_0 ~ p_0: mean alpha E x_0, covariance alpha^2 Cov x_0 + h I."""
    mixture = isotropic_mixture(4, 2, radius=2.0, std=0.3)
    n, t = 50000, 0.4
    gen = torch.Generator().manual_seed(1)
    x0 = mixture.sample(n, gen)
    xt = forward_sample(x0, torch.tensor(t, dtype=torch.float64), gen).numpy()
    a, hv = math.exp(-t), -math.expm1(-2 * t)
    mean0 = (mixture.weights[:, None] * mixture.means).sum(0).numpy()
    cov0 = 0.09 * np.eye(2) + sum(w * np.outer(m - mean0, m - mean0)
                                  for w, m in zip(mixture.weights.numpy(), mixture.means.numpy()))
    cov_t = a * a * cov0 + hv * np.eye(2)
    stderr_mean = np.sqrt(np.diag(cov_t) / n)
    assert np.all(np.abs(xt.mean(0) - a * mean0) < 4 * stderr_mean)
    # sd of a sample (co)variance entry is at most sqrt((E x^4) / n) ~ sqrt(3) var / sqrt(n) here
    assert np.all(np.abs(np.cov(xt.T) - cov_t) < 4 * np.sqrt(3) * cov_t.max() / np.sqrt(n))


def test_forward_samples_follow_the_exact_marginal_cdf():
    """Forward samples of a point mixture against the CDF of the exact p_t (Kolmogorov-Smirnov)."""
    mixture = isotropic_mixture(3, 1, radius=2.0, std=0.0)  # points: p_t is a 1-D mixture, easy to integrate
    t = 0.2
    gen = torch.Generator().manual_seed(2)
    xt = forward_sample(mixture.sample(40000, gen), torch.tensor(t, dtype=torch.float64), gen)
    grid = np.linspace(-6, 6, 20001)
    density = np.exp(mixture.log_prob(torch.as_tensor(grid)[:, None], t).numpy())
    cdf = cumulative_trapezoid(density, grid, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-9)
    # Kolmogorov-Smirnov distance between the samples and the exact CDF; 1.63/sqrt(n) is the 1% level
    empirical = np.searchsorted(np.sort(xt[:, 0].numpy()), grid) / len(xt)
    assert np.abs(empirical - cdf).max() < 1.63 / math.sqrt(len(xt))


@pytest.mark.parametrize("law,density", [
    ("uniform", lambda t: 1.0),
    ("log", lambda t: 1.0 / t),
    ("matched", lambda t: math.exp(-2 * t) / -math.expm1(-2 * t)),
])
def test_time_laws_follow_their_densities(law, density):
    horizon = Horizon(1e-3, 5.0)
    n = 40000
    t = horizon.sample_times(n, torch.Generator().manual_seed(3), law=law).numpy()
    assert t.min() >= horizon.t0 and t.max() <= horizon.T
    total = quad(density, horizon.t0, horizon.T, limit=200, points=[0.01, 0.1, 1])[0]
    for cut in (0.01, 0.1, 1.0, 3.0):
        p = quad(density, horizon.t0, cut, limit=200)[0] / total
        assert abs((t <= cut).mean() - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (law, cut)


@pytest.mark.parametrize("spacing", ["quadratic", "uniform", "log"])
def test_time_grid_runs_from_T_down_to_t0(spacing):
    horizon = Horizon(1e-3, 5.0)
    grid = time_grid(horizon, 50, spacing)
    assert grid.shape == (51,) and grid[0] == 5.0 and grid[-1] == 1e-3
    assert (grid[1:] < grid[:-1]).all()
    # each spacing is uniform in its own coordinate: t, sqrt(t) or log t
    coordinate = {"uniform": np.asarray, "quadratic": np.sqrt, "log": np.log}[spacing](grid.numpy())
    expected = np.linspace(coordinate[0], coordinate[-1], 51)
    np.testing.assert_allclose(coordinate, expected, rtol=1e-13, atol=1e-15)


def test_alpha_and_h_are_accurate_at_small_t():
    t = torch.tensor([1e-12, 1e-6, 1.0], dtype=torch.float64)
    series = [2 * s - 2 * s * s + 4 * s ** 3 / 3 for s in (1e-12, 1e-6)]  # 1 - e^{-2s}, error O(s^4)
    np.testing.assert_allclose(h(t).numpy(), [*series, 1 - math.exp(-2)], rtol=1e-14)
    np.testing.assert_allclose(alpha(t).numpy() ** 2 + h(t).numpy(), 1.0, rtol=1e-15)


def test_bad_horizons_and_grids_are_refused():
    with pytest.raises(ValueError, match="0 < t0 < T"):
        Horizon(0.0, 1.0)
    with pytest.raises(ValueError, match="spacing"):
        time_grid(Horizon(), 10, "cubic")
    with pytest.raises(ValueError, match="positive integer"):
        time_grid(Horizon(), 0)
    with pytest.raises(ValueError, match="time law"):
        Horizon().sample_times(3, torch.Generator(), law="beta")
