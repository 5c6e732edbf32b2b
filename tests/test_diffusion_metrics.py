"""Sample-quality metrics against direct computations."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import multivariate_normal

from overparam.diffusion import isotropic_mixture
from overparam.diffusion.metrics import (likelihood_time, median_bandwidth, mmd_rbf, negative_log_likelihood,
                                         precision_recall, recovered_weights, wasserstein2, weight_error)


def test_w2_equals_the_optimal_assignment():
    """Equal-size uniform measures: W2^2 is the cheapest perfect matching (Hungarian algorithm)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) + 0.5
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(cost[rows, cols].mean()), rel=1e-10)


def test_w2_of_a_shift_and_in_one_dimension():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 2))
    assert wasserstein2(x, x + np.array([3.0, 4.0])) == pytest.approx(5.0, rel=1e-10)
    a, b = rng.standard_normal((300, 1)), rng.exponential(size=(300, 1))
    assert wasserstein2(a, b) == pytest.approx(math.sqrt(np.mean((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2)),
                                               rel=1e-10)
    assert math.isnan(wasserstein2(np.array([[np.nan, 0.0]]), x))


def test_mmd_is_the_unbiased_u_statistic():
    rng = np.random.default_rng(2)
    x, y, b = rng.standard_normal((7, 2)), rng.standard_normal((5, 2)) + 1, 0.8

    def k(u, v):
        return math.exp(-np.sum((u - v) ** 2) / (2 * b * b))

    xx = np.mean([k(x[i], x[j]) for i, j in itertools.permutations(range(7), 2)])
    yy = np.mean([k(y[i], y[j]) for i, j in itertools.permutations(range(5), 2)])
    xy = np.mean([k(u, v) for u in x for v in y])
    assert mmd_rbf(x, y, b) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mmd_is_near_zero_for_equal_laws_and_positive_otherwise():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
    b = median_bandwidth(x)
    # median distance of two N(0, I_2) points is sqrt(2) * sqrt(2 log 2) = 1.665
    assert b == pytest.approx(1.665, rel=0.03)
    same, shifted = mmd_rbf(x, y, b), mmd_rbf(x, y + 1.0, b)
    assert abs(same) < 2e-3 and shifted > 50 * abs(same)


def test_nll_and_recovered_weights():
    mixture = isotropic_mixture(3, 2, radius=4.0, std=0.5, weights=torch.tensor([0.2, 0.3, 0.5]))
    x, labels = mixture.sample_with_labels(3000, torch.Generator().manual_seed(4))
    expected = -np.log(sum(w * multivariate_normal(mu, 0.25 * np.eye(2)).pdf(x.numpy())
                           for w, mu in zip(mixture.weights.numpy(), mixture.means.numpy()))).mean()
    assert likelihood_time(mixture, 1e-3) == 0.0
    assert negative_log_likelihood(mixture, x, 1e-3) == pytest.approx(expected, rel=1e-10)
    weights = recovered_weights(mixture, x, 1e-3)
    # components 4 apart with sd 0.5 overlap by < 1e-4: assignment equals the true labels
    np.testing.assert_allclose(weights, np.bincount(labels.numpy(), minlength=3) / 3000, atol=1e-3)
    assert weight_error(mixture, weights) == pytest.approx(0.5 * np.abs(weights - [0.2, 0.3, 0.5]).sum(), abs=1e-12)
    lost = weights.copy()
    lost[0] -= 0.1  # non-finite samples count as missing mass
    assert weight_error(mixture, lost) == pytest.approx(weight_error(mixture, weights) + 0.1, abs=1e-12)


def test_point_masses_are_scored_under_p_t0():
    points = isotropic_mixture(2, 2, radius=1.0, std=0.0)
    assert likelihood_time(points, 1e-2) == 1e-2
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    expected = -np.log(0.5 * multivariate_normal([math.exp(-1e-2), 0], -math.expm1(-2e-2) * np.eye(2)).pdf([1, 0])
                       + 0.5 * multivariate_normal([-math.exp(-1e-2), 0], -math.expm1(-2e-2) * np.eye(2)).pdf([1, 0]))
    assert negative_log_likelihood(points, x, 1e-2) == pytest.approx(expected, rel=1e-10)
    assert negative_log_likelihood(points, np.array([[np.inf, 0.0]]), 1e-2) == math.inf


T0 = 1e-3
#: the components' standard deviation at t0: sqrt(alpha^2 0.3^2 + h)
SD = math.sqrt(math.exp(-2 * T0) * 0.09 + 1 - math.exp(-2 * T0))


def test_precision_and_recall_of_samples_on_every_mode():
    mixture = isotropic_mixture(4, 2, radius=3.0, std=0.3)
    means = mixture.means.numpy()
    x = np.array([means[k] + SD * np.array([0.5, -1.0]) for k in range(4) for _ in range(25)])
    assert precision_recall(mixture, x, T0) == (1.0, 1.0)


def test_bridging_samples_lower_precision_and_empty_modes_lower_recall():
    mixture = isotropic_mixture(4, 2, radius=3.0, std=0.3)
    means = mixture.means.numpy()
    midpoint = (means[0] + means[1]) / 2  # 2.1 from both means: 7 standard deviations
    x = np.concatenate([np.repeat(means[:1], 50, 0), np.repeat(midpoint[None], 50, 0)])
    assert precision_recall(mixture, x, T0) == (0.5, 0.25)


def test_three_standard_deviations_is_the_boundary_in_each_components_metric():
    covariances = torch.stack([torch.diag(torch.tensor([0.04, 1.0])), torch.diag(torch.tensor([1.0, 0.04]))])
    from overparam.diffusion.mixtures import GaussianMixture

    mixture = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-10.0, 0.0], [10.0, 0.0]]), covariances)
    alpha, h = math.exp(-T0), 1 - math.exp(-2 * T0)
    sd_narrow, sd_wide = math.sqrt(alpha**2 * 0.04 + h), math.sqrt(alpha**2 + h)
    centre = np.array([-10.0 * alpha, 0.0])
    inside = [centre + [2.99 * sd_narrow, 0], centre + [0, 2.99 * sd_wide]]
    outside = [centre + [3.01 * sd_narrow, 0], centre + [0, 3.01 * sd_wide], [np.nan, 0.0]]
    precision, recall = precision_recall(mixture, np.array(inside + outside), T0)
    assert precision == pytest.approx(2 / 5) and recall == 0.5


def test_recall_counts_a_component_from_half_its_expected_share():
    from overparam.diffusion.mixtures import GaussianMixture

    mixture = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-5.0, 0.0], [5.0, 0.0]]),
                              0.01 * torch.eye(2).expand(2, 2, 2).clone())
    centres = mixture.means.numpy() * math.exp(-T0)
    for second, recall in ((26, 1.0), (25, 1.0), (24, 0.5)):
        x = np.concatenate([np.repeat(centres[:1], 100 - second, 0), np.repeat(centres[1:], second, 0)])
        assert precision_recall(mixture, x, T0) == (1.0, recall)
