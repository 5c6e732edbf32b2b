"""The kernel-comparison records recomputed by other routes: the network-twin distance by an explicit GD loop on
the initial kernel, the twin's stop step by scanning that loop's held-out losses, the posterior mean's held-out
loss by the conditional-Gaussian formula, the score gap against the score error, and the reading's causes."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from overparam.diffusion import DiffusionConfig, TrainingConfig, experiment, score_error, trivial_score
from overparam.diffusion.metrics import wasserstein2
from overparam.diffusion.training import denoising_data, initial_network
from overparam.diffusion.twin_study import COLUMNS, KernelRow, bridging_reading, fitted_slope, kernel_rows, score_gap
from overparam.kernels.finite import ntk


@pytest.fixture(scope="module")
def small():
    config = DiffusionConfig(data="gmm:k=4,d=2", activations=("relu",), n=100, sampler_steps=10, n_samples=200,
                             n_score=500, curve_points=4, curve_samples=50,
                             training=TrainingConfig(activation="relu", width=64, steps=30, eval_every=1, patience=100))
    draws = experiment.draw(config)
    fit, _ = experiment.fit_score("relu", config, draws)
    rows, link = kernel_rows(config, "relu", fit, large_n=200)
    return config, draws, fit, rows, link


def flat(V):
    return np.asarray(V).T.reshape(-1)


def test_rows_have_the_documented_predictors_and_columns(small):
    config, _, fit, rows, _ = small
    assert [(row.predictor, row.n) for row in rows] == [("network", 100), ("twin_theta0", 100), ("twin_hstar", 100),
                                                        ("twin_hstar", 200), ("posterior_mean", 100)]
    assert all(list(row.csv_row()) == list(COLUMNS) for row in rows)
    assert rows[0].stop_step == fit.best_step and rows[0].heldout_loss == fit.best_val_loss
    assert rows[-1].score_error == pytest.approx(0, abs=1e-20) and rows[-1].stop_step is None
    assert all(row.distance_to_twin is None for row in rows[1:])
    assert json.loads(json.dumps([asdict(row) for row in rows])) == [asdict(row) for row in rows]  # plain data
    assert np.array(rows[0].samples).shape == (200, 2) and len(rows[0].curve.times) == 4
    assert rows[1].w2 == pytest.approx(wasserstein2(np.array(rows[1].samples), experiment.draw(config).reference,
                                                    seed=config.seed), rel=1e-12)


def test_network_twin_distance_and_twin_stop_step_by_an_explicit_loop(small):
    config, _, fit, rows, link = small
    training = config.training_for("relu")
    data = denoising_data(experiment.draw(config).x0, config.horizon, training, config.seed)
    net = initial_network(data, training, config.seed)
    Z, y = data.inputs(data.train)
    Z_val, y_val = data.inputs(data.val)
    K, cross = ntk(net, Z, normalized=False).numpy(), ntk(net, Z_val, normalized=False, X2=Z).numpy()
    lr, twin_step = fit.history.lr, rows[1].stop_step
    f, f_val, losses, at_network = np.zeros(K.shape[0]), np.zeros(cross.shape[0]), [], None
    for t in range(3 * twin_step + 50):
        losses.append(((f_val - flat(y_val)) ** 2).sum() / len(y_val))
        if t == fit.best_step:
            at_network = f_val.copy()
        residual = f - flat(y)
        f, f_val = f - lr * K @ residual, f_val - lr * cross @ residual
    assert int(np.argmin(losses)) == twin_step
    assert rows[1].heldout_loss == pytest.approx(min(losses), rel=1e-9)
    network = flat(fit.net(Z_val))
    expected = math.sqrt(((network - at_network) ** 2).sum() / len(y_val))
    assert rows[0].distance_to_twin == pytest.approx(expected, rel=1e-9) and link.distance == rows[0].distance_to_twin
    assert link.relative == pytest.approx(expected / math.sqrt((at_network ** 2).sum() / len(y_val)), rel=1e-9)


def test_posterior_mean_held_out_loss_by_the_conditional_gaussian_formula(small):
    _, draws, fit, rows, _ = small
    truth, pairs = draws.truth, fit.val_pairs
    x, t = pairs.xt.numpy(), pairs.t.numpy()
    a, v = np.exp(-t)[:, None], -np.expm1(-2 * t)[:, None]
    s2 = float(truth.covariances[0, 0, 0])  # isotropic components std^2 I
    logs, means = [], []
    for weight, mu in zip(truth.weights.numpy(), truth.means.numpy()):
        var = a ** 2 * s2 + v
        logs.append(np.log(weight) - ((x - a * mu) ** 2).sum(1, keepdims=True) / (2 * var) - np.log(var))
        means.append(mu + a * s2 / var * (x - a * mu))
    logs = np.concatenate(logs, 1)
    post = np.exp(logs - logs.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    denoised = sum(post[:, k:k + 1] * means[k] for k in range(len(means)))
    expected = ((denoised - pairs.x0.numpy()) ** 2).sum(1).mean()
    assert rows[-1].heldout_loss == pytest.approx(expected, rel=1e-10)


def test_score_gap_to_the_exact_score_is_the_score_error(small):
    config, draws, *_ = small
    gap = score_gap(trivial_score, draws.truth.score, draws.truth, config.horizon, 3000, torch.Generator().manual_seed(4))
    error = score_error(trivial_score, draws.truth, config.horizon, 3000, torch.Generator().manual_seed(4))
    assert gap.value == pytest.approx(error.value, rel=1e-12) and gap.stderr == pytest.approx(error.stderr, rel=1e-12)


def test_fitted_slope_recovers_a_power_law():
    slope = fitted_slope([64, 256, 1024], [3 * 64 ** -0.5, 3 * 256 ** -0.5, 3 * 1024 ** -0.5])
    assert slope.exponent == pytest.approx(-0.5, abs=1e-12) and slope.constant == pytest.approx(3, rel=1e-12)
    with pytest.raises(ValueError, match="two distinct"):
        fitted_slope([64, 64], [1.0, 2.0])


def rows_with(network, theta0, hstar, hstar_large, exact=0.98):
    def row(predictor, precision, n=1024):
        return KernelRow("relu", n, 512, predictor, 10, 0.3, 0.05, precision, 1.0, t_star=100.0, at_limit=False)
    return [row("network", network), row("twin_theta0", theta0), row("twin_hstar", hstar),
            row("twin_hstar", hstar_large, 4096), row("posterior_mean", exact)]


@pytest.mark.parametrize("precisions,cause", [((0.65, 0.97, 0.97, 0.98), "training"),
                                              ((0.65, 0.97, 0.80, 0.82), "the kernel"),
                                              ((0.90, 0.90, 0.80, 0.975), "the data size")])
def test_reading_names_the_cause_the_numbers_show(precisions, cause):
    text = bridging_reading(rows_with(*precisions), samples=1000)
    causes = text.split("Bridging comes from ")[1].split(".")[0]
    assert cause in causes
    assert ("training" in causes) == (precisions[0] < 0.9)  # the network is short of its twin in the first two


def test_distance_figure_draws_the_points_and_the_fitted_line():
    from overparam.diffusion.figures import plot_twin_distance
    from overparam.diffusion.twin_study import Coupling

    links = [Coupling("relu", 100, m, 10, 2.0 * m ** -0.5, 0.1, 0.01, 0.001) for m in (64, 256, 1024)]
    slope = fitted_slope([l.m for l in links], [l.distance for l in links])
    fig = plot_twin_distance({"relu": links}, {"relu": slope})
    points, line = fig.axes[0].lines[:2]
    np.testing.assert_allclose(points.get_ydata(), [l.distance for l in links])
    np.testing.assert_allclose(line.get_ydata(), 2.0 * line.get_xdata() ** -0.5, rtol=1e-10)
    assert "slope -0.50" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_reading_locates_the_time_of_the_largest_weighted_gap():
    rows = rows_with(0.65, 0.97, 0.97, 0.98)
    times = np.array([0.001, 0.01, 0.1, 1.0])
    h = -np.expm1(-2 * times)
    for row, values in zip(rows, ([10.0, 9.0, 0.5, 0.1], [9.0, 2.0, 0.4, 0.1])):  # the network, its twin
        row.curve_times, row.curve_value, row.curve_stderr = times.tolist(), values, [0.0] * 4
    gaps = h * (rows[0].curve.value - rows[1].curve.value)
    t = times[np.argmax(gaps)]
    assert t == 0.01  # h_t (9 - 2) beats h_0.001 (10 - 9) and h_0.1 (0.5 - 0.4)
    text = bridging_reading(rows, samples=1000)
    assert f"at t = {t:.3g}: {h[1] * 9:.3g} against {h[1] * 2:.3g}" in text


def test_hstar_against_n_fits_the_slope_of_its_rows(small):
    from overparam.diffusion.twin_study import hstar_against_n

    config, *_ = small
    rows, slope = hstar_against_n(config, "relu", (100, 200))
    assert [row.n for row in rows] == [100, 200] and all(row.predictor == "twin_hstar" for row in rows)
    expected = math.log(rows[1].score_error / rows[0].score_error) / math.log(2)
    assert slope.exponent == pytest.approx(expected, rel=1e-12)
