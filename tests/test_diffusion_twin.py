"""The kernel twin of a denoiser against explicit GD loops on kernels built here, the exact posterior mean
against Bayes' rule by quadrature, and the network-twin distance recomputed."""

import math

import numpy as np
import pytest
import torch

from overparam.diffusion import Horizon, TrainingConfig, fit_denoiser, isotropic_mixture, parse_data
from overparam.diffusion.process import alpha, h
from overparam.diffusion.training import denoising_data, initial_network
from overparam.diffusion.twin import kernel_twin, posterior_mean_score, twin_distance
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk


def small_problem(activation="relu", width=64, n=40, init="coupled"):
    mixture, horizon = parse_data("gmm:k=4,d=2"), Horizon()
    x0 = mixture.sample(n, torch.Generator().manual_seed(5))
    return x0, horizon, TrainingConfig(activation=activation, width=width, steps=30, init=init)


def explicit_gd(K, cross, y, f0, f0_test, lr, steps):
    """f_{t+1} = f_t - lr K (f_t - y), f_{t+1}(x) = f_t(x) - lr K(x, X) (f_t - y), on flattened outputs."""
    f, f_test, out = f0.copy(), f0_test.copy(), {}
    for t in range(max(steps) + 1):
        if t in steps:
            out[t] = f_test.copy()
        residual = f - y
        f, f_test = f - lr * K @ residual, f_test - lr * cross @ residual
    return out


def flat(V):
    return np.asarray(V).T.reshape(-1)  # (n, k) -> output-major, as ntk orders its rows


@pytest.mark.parametrize("activation,init", [("relu", "coupled"), ("softmax", "independent")])
def test_theta0_twin_is_gd_on_the_networks_initial_kernel(activation, init):
    x0, horizon, config = small_problem(activation, init=init)
    twin = kernel_twin("theta0", x0, horizon, config, seed=1)
    data = denoising_data(x0, horizon, config, seed=1)
    fit = fit_denoiser(x0, horizon, config, seed=1)
    np.testing.assert_array_equal(fit.val_pairs.xt.numpy(), data.val.xt.numpy())  # the fit's own held-out pairs
    net = initial_network(data, config, seed=1)
    Z, y = data.inputs(data.train)
    Z_val, y_val = data.inputs(data.val)
    K = ntk(net, Z, normalized=False).numpy()
    cross = ntk(net, Z_val, normalized=False, X2=Z).numpy()
    assert twin.lr == pytest.approx(fit.history.lr, rel=1e-12)  # the network's own step
    steps = [0, 1, 7, 60]
    loop = explicit_gd(K, cross, flat(y), flat(net(Z)), flat(net(Z_val)), twin.lr, steps)
    for t in steps:
        predicted = twin.denoiser(t)(Z_val)
        np.testing.assert_allclose(flat(predicted), loop[t], rtol=1e-10, atol=1e-10)
        expected_loss = ((loop[t] - flat(y_val)) ** 2).sum() / len(y_val)
        assert twin.held_out_loss([t])[0] == pytest.approx(expected_loss, rel=1e-10)


def test_hstar_twin_is_gd_on_m_kappa_squared_hstar_per_output():
    x0, horizon, config = small_problem("exp", width=32)
    twin = kernel_twin("hstar", x0, horizon, config, seed=2)
    data = denoising_data(x0, horizon, config, seed=2)
    Z, y = data.inputs(data.train)
    Z_val, y_val = data.inputs(data.val)
    scale = 32 * 1.0 ** 2  # exp: kappa = 1
    K = np.kron(np.eye(2), scale * infinite_ntk("exp", Z).numpy())
    cross = np.kron(np.eye(2), scale * infinite_ntk("exp", Z_val, X2=Z).numpy())
    assert twin.lr == pytest.approx(1 / np.linalg.eigvalsh(K)[-1], rel=1e-10)
    steps = [0, 3, 50, 2000]
    loop = explicit_gd(K, cross, flat(y), np.zeros(K.shape[0]), np.zeros(cross.shape[0]), twin.lr, steps)
    for t in steps:
        np.testing.assert_allclose(flat(twin.denoiser(t)(Z_val)), loop[t], rtol=1e-10, atol=1e-10)
        assert twin.held_out_loss([t])[0] == pytest.approx(((loop[t] - flat(y_val)) ** 2).sum() / len(y_val),
                                                           rel=1e-10)
    assert twin.held_out_loss([twin.stop.step])[0] <= min(twin.held_out_loss(steps))


def test_twin_score_is_tweedie_of_its_denoiser():
    x0, horizon, config = small_problem()
    twin = kernel_twin("theta0", x0, horizon, config, seed=1)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0.01, 2.0, 7, dtype=torch.float64)
    denoised = twin.denoiser()(twin.embedding(x, t))
    expected = (alpha(t)[:, None] * denoised - x) / h(t)[:, None]
    torch.testing.assert_close(twin.score()(x, t), expected, rtol=1e-13, atol=1e-13)


def test_posterior_mean_is_bayes_rule_by_quadrature():
    """E[x_0 | x_t = x] = int x_0 N(x; alpha x_0, h I) p_0(x_0) dx_0 / int N(x; alpha x_0, h I) p_0(x_0) dx_0,
    on a 2-D grid (the integrands are Gaussians: the trapezoid rule converges spectrally), and its Tweedie
    score (alpha D - x) / h."""
    mixture = isotropic_mixture(3, 2, radius=2.0, std=0.4, weights=torch.tensor([0.2, 0.3, 0.5]))
    axis = np.linspace(-5, 5, 801)
    g1, g2 = np.meshgrid(axis, axis, indexing="ij")
    grid = np.stack([g1.ravel(), g2.ravel()], 1)
    density = np.zeros(len(grid))
    for weight, mean in zip(mixture.weights.numpy(), mixture.means.numpy()):
        density += weight * np.exp(-((grid - mean) ** 2).sum(1) / (2 * 0.16)) / (2 * np.pi * 0.16)
    x = np.array([[0.3, -0.2], [1.5, 1.0], [-2.0, 0.4]])
    for t in (0.05, 0.4, 1.5):
        a, v = math.exp(-t), -math.expm1(-2 * t)
        expected = []
        for point in x:
            likelihood = np.exp(-((point - a * grid) ** 2).sum(1) / (2 * v)) * density
            expected.append((grid * likelihood[:, None]).sum(0) / likelihood.sum())
        expected = np.array(expected)
        times = torch.full((3,), t, dtype=torch.float64)
        np.testing.assert_allclose(mixture.denoiser(torch.tensor(x), times).numpy(), expected, rtol=1e-8, atol=1e-8)
        score = posterior_mean_score(mixture)(torch.tensor(x), times).numpy()
        np.testing.assert_allclose(score, (a * expected - x) / v, rtol=1e-7, atol=1e-7)


def test_network_twin_distance_recomputed_and_shrinking_with_width():
    """RMS_i ||F(z_i) - f_t(z_i)|| after the same t GD steps; the wide network is closer to its twin."""
    distances = {}
    for width in (64, 4096):
        x0, horizon, config = small_problem("relu", width=width, n=60)
        config.steps, config.patience = 40, 1000
        fit = fit_denoiser(x0, horizon, config, seed=3)
        twin = kernel_twin("theta0", x0, horizon, config, seed=3)
        data = denoising_data(x0, horizon, config, seed=3)
        Z_val, _ = data.inputs(data.val)
        step = fit.best_step  # fit.net holds W(best step)
        assert step > 0
        network = fit.net(Z_val).numpy()
        linear = twin.denoiser(step)(Z_val).numpy()
        expected = math.sqrt(((network - linear) ** 2).sum(1).mean())
        assert twin_distance(fit.net, twin, step, Z_val) == pytest.approx(expected, rel=1e-12)
        distances[width] = expected / math.sqrt((linear ** 2).sum(1).mean())
    assert distances[4096] < 0.5 * distances[64]


def test_the_scan_ends_where_rounding_level_eigenvalues_would_move():
    from overparam.diffusion.twin import rounding_horizon

    x0, horizon, config = small_problem("exp", width=32)
    twin = kernel_twin("hstar", x0, horizon, config, seed=2)
    mu = twin.regimes[0].eigenvalues
    end = 1 / (twin.lr * len(mu) * np.finfo(np.float64).eps * float(mu.max()))
    assert rounding_horizon(mu, twin.lr) == pytest.approx(end, rel=1e-12)
    assert twin.stop.times[-1] == pytest.approx(end, rel=1e-12) and twin.stop.time <= end
