"""Exact p_t of Gaussian mixtures: log-density against scipy, score against autograd, Tweedie."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from overparam.diffusion import GaussianMixture, isotropic_mixture, parse_data
from overparam.diffusion.process import alpha, h


def mixed_mixture() -> GaussianMixture:
    """Three components in R^3: full covariance, rank-one covariance, and a point mass (Sigma = 0)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    v = rng.standard_normal(3)
    covariances = np.stack([A @ A.T / 3 + 0.1 * np.eye(3), np.outer(v, v), np.zeros((3, 3))])
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.as_tensor(rng.standard_normal((3, 3)) * 2),
                           torch.as_tensor(covariances))


def scipy_log_prob(mixture: GaussianMixture, x: np.ndarray, t: float) -> np.ndarray:
    """log sum_k pi_k N(x; alpha mu_k, alpha^2 Sigma_k + h I), each Gaussian evaluated by scipy."""
    a, hv = float(alpha(torch.tensor(t, dtype=torch.float64))), float(h(torch.tensor(t, dtype=torch.float64)))
    densities = [w * multivariate_normal(a * mu, a * a * S + hv * np.eye(len(mu))).pdf(x)
                 for w, mu, S in zip(mixture.weights.numpy(), mixture.means.numpy(), mixture.covariances.numpy())]
    return np.log(np.sum(densities, axis=0))


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.7, 4.0])
def test_log_prob_matches_scipy_including_a_point_mass(t):
    mixture = mixed_mixture()
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    np.testing.assert_allclose(mixture.log_prob(x, t).numpy(), scipy_log_prob(mixture, x.numpy(), t),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.7, 4.0])
def test_score_matches_autograd_of_log_density(t):
    mixture = mixed_mixture()
    gen = torch.Generator().manual_seed(2)
    x = mixture.sample(40, gen) * 1.1 + 0.3 * torch.randn(40, 3, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x, t).sum(), x)
    np.testing.assert_allclose(mixture.score(x.detach(), t).numpy(), grad.numpy(), rtol=1e-9, atol=1e-9)


def test_per_point_times_equal_one_time_at_a_time():
    mixture = mixed_mixture()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    together = mixture.score(x, t)
    for i in range(6):
        np.testing.assert_allclose(together[i].numpy(), mixture.score(x[i:i + 1], float(t[i]))[0].numpy(),
                                   rtol=1e-13, atol=1e-13)


def test_denoiser_is_the_gaussian_posterior_mean():
    """E[x_0 | x_t] by the conditional-Gaussian formula per component, weighted by the posterior."""
    mixture = mixed_mixture()
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = 0.3
    a, hv = float(alpha(torch.tensor(t, dtype=torch.float64))), float(h(torch.tensor(t, dtype=torch.float64)))
    post = mixture.posterior(x, t).numpy()
    expected = np.zeros((20, 3))
    for k, (mu, S) in enumerate(zip(mixture.means.numpy(), mixture.covariances.numpy())):
        gain = a * S @ np.linalg.inv(a * a * S + hv * np.eye(3))
        expected += post[:, k:k + 1] * (mu + (x.numpy() - a * mu) @ gain.T)
    np.testing.assert_allclose(mixture.denoiser(x, t).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_point_mass_has_no_density_at_time_zero():
    mixture = mixed_mixture()
    assert not mixture.has_density
    with pytest.raises(ValueError, match="t > 0"):
        mixture.log_prob(torch.zeros(2, 3, dtype=torch.float64), 0.0)
    smooth = isotropic_mixture(3, 2, std=0.5)
    assert smooth.has_density and torch.isfinite(smooth.log_prob(torch.zeros(2, 2, dtype=torch.float64), 0.0)).all()


def test_samples_have_the_mixture_moments():
    mixture = mixed_mixture()
    n = 40000
    x = mixture.sample(n, torch.Generator().manual_seed(5)).numpy()
    w, mu, S = mixture.weights.numpy(), mixture.means.numpy(), mixture.covariances.numpy()
    mean = w @ mu
    cov = sum(wk * (Sk + np.outer(mk - mean, mk - mean)) for wk, mk, Sk in zip(w, mu, S))
    stderr = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * stderr)
    # variance of a sample variance <= 2 * sqrt(E x^4 / n); a 5% band is > 10 standard errors here
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.05, atol=0.05)


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.eye(2)[None])
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture(torch.ones(2), torch.zeros(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))


@pytest.mark.parametrize("spec,fragment", [
    ("gmm:k=0", "k >= 1"), ("gmm:k=x", "not a valid int"), ("gmm:q=1", "unknown option"),
    ("gmm:k", "key=value"), ("blobs", "unknown diffusion data"), ("gmm:k=2,weights=1/2/3", "k = 2"),
    ("gmm:std=-1", "std"), ("points:std=0.1", "unknown option"), ("moons:noise=-1", "noise"),
])
def test_bad_specs_say_what_is_wrong(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_data(spec)


def test_specs_build_the_documented_truth():
    mixture = parse_data("gmm:k=4,d=2,radius=2,std=0.1,weights=0.1/0.2/0.3/0.4")
    np.testing.assert_allclose(mixture.means.numpy(), [[2, 0], [0, 2], [-2, 0], [0, -2]], atol=1e-15)
    np.testing.assert_allclose(mixture.weights.numpy(), [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(mixture.covariances.numpy(), 0.01 * np.eye(2)[None].repeat(4, 0))
    points = parse_data("points:k=3,d=5,radius=1.5")
    assert not points.has_density and np.allclose(points.means.norm(dim=1).numpy(), 1.5)
    random = parse_data("gmm:k=5,weights=random,seed=3")
    assert np.isclose(random.weights.sum(), 1) and random.weights.std() > 0
    for name in ("moons", "rings", "swissroll"):
        x = parse_data(name).sample(500, torch.Generator().manual_seed(0))
        assert x.shape == (500, 2) and x.dtype == torch.float64 and 0.5 < x.abs().max() < 6
