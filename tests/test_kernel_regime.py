"""Kernel-regime predictions against explicit iteration of the linear dynamics, kernel regression
solved directly, and a wide network's real GD trajectory."""

import numpy as np
import pytest
import torch

from overparam import KernelRegime, TwoLayerNet, train
from overparam.kernels.regime import complexity
from overparam.data import sphere
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk


def problem(n=12, d=4, k=2, seed=0):
    data = sphere(n, d, k, seed=seed)
    return torch.from_numpy(data.X), torch.from_numpy(data.y)


def flat(V):
    return V.T.reshape(-1)  # (n, k) -> output-major


@pytest.mark.parametrize("lr_scale", [0.5, 1.7])  # 1.7: lr mu > 1 for the top modes, (1 - lr mu)^t alternates
def test_eigenbasis_formula_matches_explicit_iteration(lr_scale):
    X, y = problem()
    net = TwoLayerNet(4, 64, 2, "softmax", seed=1)
    theta = ntk(net, X, normalized=False)
    lr = lr_scale / float(torch.linalg.eigvalsh(theta)[-1])
    regime = KernelRegime.of_network(net, X, y, lr)
    X_test = torch.from_numpy(sphere(5, 4, seed=9).X)
    cross = ntk(net, X_test, normalized=False, X2=X)
    r, f_test = flat(net(X) - y), flat(net(X_test))
    steps = np.arange(0, 40)
    outputs, predicted = regime.outputs(steps), regime.predict(X_test, steps)
    for t in steps:
        torch.testing.assert_close(flat(outputs[t] - y), r, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(flat(predicted[t]), f_test, rtol=1e-10, atol=1e-10)
        assert regime.residual_norm([t])[0] == pytest.approx(float(r.norm()), rel=1e-10)
        f_test = f_test - lr * cross @ r
        r = r - lr * theta @ r


def test_limit_is_kernel_regression():
    X, y = problem(n=10, k=1)
    net = TwoLayerNet(4, 128, 1, "exp", seed=2)
    regime = KernelRegime.of_network(net, X, y, "auto")
    X_test = torch.from_numpy(sphere(6, 4, seed=7).X)
    theta = ntk(net, X, normalized=False)
    expected = net(X_test) + ntk(net, X_test, normalized=False, X2=X) @ torch.linalg.solve(theta, y - net(X))
    torch.testing.assert_close(regime.predict(X_test), expected, rtol=1e-8, atol=1e-8)
    # at the training points the limit interpolates
    torch.testing.assert_close(regime.predict(X), y, rtol=1e-8, atol=1e-8)


def test_infinite_width_regime_interpolates_and_decays():
    X, y = problem(n=10, k=2)
    kernel = infinite_ntk("relu", X)
    eta = 1.0 / float(torch.linalg.eigvalsh(kernel)[-1])
    regime = KernelRegime.infinite("relu", X, y, eta)
    torch.testing.assert_close(regime.predict(X), y, rtol=1e-8, atol=1e-8)
    norms = regime.residual_norm(np.arange(0, 500, 50))
    assert norms[0] == pytest.approx(float(y.norm()))  # F(0) = 0
    assert np.all(np.diff(norms) < 0)
    t = regime.steps_to(1e-3)
    assert regime.residual_norm([t])[0] <= 1e-3 < regime.residual_norm([t - 1])[0]


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_wide_network_follows_its_kernel_prediction(activation):
    """Over the first 20 steps ||F(t) - F_lin(t)|| is small at m = 16384 and shrinks with width
    (the lazy regime: measured about m^-1/2 for relu, faster for exp and softmax at coupled init)."""
    X, y = problem(n=10, d=4, k=1, seed=3)
    gaps = []
    for width in (256, 16384):
        net = TwoLayerNet(4, width, 1, activation, init="coupled", seed=4)
        regime = KernelRegime.of_network(net, X, y, "auto")
        trajectory = []
        train(net, X, y, lr=regime.lr, steps=20,
              callbacks=[lambda state: trajectory.append(state.residual.clone())])
        real = torch.stack(trajectory) + y
        gaps.append(float((real - regime.outputs(np.arange(21))).norm(dim=(1, 2)).max() / y.norm()))
    assert gaps[1] < 0.02
    assert gaps[1] < gaps[0] / 3


def test_bad_input():
    X, y = problem(n=4, k=1)
    with pytest.raises(ValueError, match="square"):
        KernelRegime.from_kernel(torch.ones(4, 3), torch.zeros(4), y, 0.1)
    with pytest.raises(ValueError, match="lr"):
        KernelRegime.from_kernel(torch.eye(4), torch.zeros(4), y, -1.0)
    with pytest.raises(ValueError, match="n k"):
        KernelRegime.from_kernel(torch.eye(5), torch.zeros(5), y, 0.1)
    regime = KernelRegime.from_kernel(torch.eye(4), torch.zeros(4), y, 0.1)
    with pytest.raises(ValueError, match="non-negative integers"):
        regime.outputs([1.5])
    with pytest.raises(ValueError, match="cross kernel"):
        regime.predict(X)


def test_complexity_term_against_numpy_solve():
    X, y = problem(n=15, d=5, k=2, seed=3)
    H = infinite_ntk("relu", X).numpy()
    expected = np.sqrt(2 * sum(y[:, l].numpy() @ np.linalg.solve(H, y[:, l].numpy()) for l in range(2)) / 15)
    assert complexity(H, y) == pytest.approx(expected, rel=1e-12)
    # the same with the (nk, nk) output-major block-diagonal kernel
    assert complexity(np.kron(np.eye(2), H), y.numpy()) == pytest.approx(expected, rel=1e-12)
    # a finite kernel with its cross-output blocks
    net = TwoLayerNet(5, 32, 2, "exp", seed=0)
    Theta = ntk(net, X).numpy()
    expected = np.sqrt(2 * flat(y).numpy() @ np.linalg.solve(Theta, flat(y).numpy()) / 15)
    assert complexity(Theta, y) == pytest.approx(expected, rel=1e-10)


def test_complexity_term_refuses_a_singular_kernel_and_wrong_shapes():
    X, y = problem(n=6, d=3, k=1)
    H = infinite_ntk("relu", torch.cat([X, X])).numpy()  # every input twice: lambda_min = 0
    with pytest.raises(ValueError, match="not positive definite"):
        complexity(H, torch.cat([y, y]))
    with pytest.raises(ValueError, match=r"must be \(n, n\)"):
        complexity(np.eye(5), y)


# ----------------------------------------------------------------------------- stopping times (the kernel twin)


def spectrum_problem(seed=0):
    """K = Q diag(mu) Q^T with eigenvalues at and near 0 and one with lr mu > 1 (lr = 1), a random cross
    kernel, two outputs, a non-zero start."""
    rng = np.random.default_rng(seed)
    mu = np.array([0.0, 1e-14, 1e-9, 1e-5, 1e-3, 0.05, 0.4, 0.9, 1.3])
    Q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    n, k = 9, 1
    K = Q @ np.diag(mu) @ Q.T
    K = (K + K.T) / 2
    cross = rng.standard_normal((4, n))
    y, f0, f0_test, y_test = (rng.standard_normal(shape) for shape in ((n, k), (n, k), (4, k), (4, k)))
    return K, cross, y, f0, f0_test, y_test


def explicit_gd(K, cross, y, f0, f0_test, lr, steps):
    """f_{t+1} = f_t - lr K (f_t - y) at the training points, f_{t+1}(x) = f_t(x) - lr K(x, X) (f_t - y)."""
    f, f_test, out = f0.copy(), f0_test.copy(), {}
    for t in range(max(steps) + 1):
        if t in steps:
            out[t] = (f.copy(), f_test.copy())
        residual = f - y
        f, f_test = f - lr * K @ residual, f_test - lr * cross @ residual
    return out


def test_predictor_and_held_out_loss_match_explicit_gd_with_eigenvalues_near_zero():
    K, cross, y, f0, f0_test, y_test = spectrum_problem()
    regime = KernelRegime.from_kernel(K, f0, y, 1.0, cross_kernel=lambda X: torch.as_tensor(cross),
                                      initial_test_outputs=lambda X: torch.as_tensor(f0_test))
    X_test = torch.zeros(4, 1)  # the cross kernel above ignores its argument
    held_out = regime.held_out(X_test, y_test)
    steps = [0, 1, 2, 3, 10, 57, 400, 2000]
    loop = explicit_gd(K, cross, y, f0, f0_test, 1.0, steps)
    for t in steps:
        expected_train, expected_test = loop[t]
        np.testing.assert_allclose(regime.outputs([t])[0].numpy(), expected_train, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(regime.predictor(t)(X_test).numpy(), expected_test, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(held_out([t])[0], ((expected_test - y_test) ** 2).sum(1).mean(), rtol=1e-10)


def test_step_sums_keep_their_digits_near_zero_at_real_times():
    """g(mu, t) = (1 - (1 - lr mu)^t) / mu against 400-digit arithmetic (enough for 1 - 1e-300 to differ
    from 1), for real t and mu from 1e-300 up to lr mu = 1."""
    import mpmath

    from overparam.kernels.regime import step_sums

    mpmath.mp.dps = 400
    lr = 0.5
    mu = np.array([0.0, 1e-300, 1e-16, 1e-12, 1e-7, 1e-2, 1.0, 2.0])
    times = np.array([0.0, 0.5, 1.0, 2.25, 1e3 + 0.3, 1e9])
    got = step_sums(torch.tensor(mu), lr, times).numpy()
    for i, t in enumerate(times):
        for j, m in enumerate(mu):
            if m == 0:
                expected = lr * t
            else:
                base = 1 - mpmath.mpf(lr) * mpmath.mpf(m)
                power = base ** mpmath.mpf(t) if base > 0 else mpmath.mpf(0 if t > 0 else 1)
                expected = float((1 - power) / mpmath.mpf(m))
            assert got[i, j] == pytest.approx(expected, rel=1e-12, abs=0), (t, m)


def test_alternating_modes_are_exact_at_integers_and_smooth_between():
    """lr mu > 1: (1 - lr mu)^t alternates; at integer t the sum is the GD value, and between integers the
    extension |b|^t cos(pi t) is continuous."""
    from overparam.kernels.regime import step_sums

    lr, mu = 1.0, torch.tensor([1.5])
    for t in range(6):
        expected = lr * sum((1 - lr * 1.5) ** s for s in range(t))
        assert float(step_sums(mu, lr, [t])[0, 0]) == pytest.approx(expected, rel=1e-14, abs=1e-15)
    near = step_sums(mu, lr, [3 - 1e-9, 3, 3 + 1e-9])[:, 0]
    assert float((near - near[1]).abs().max()) < 1e-7


def test_minimiser_of_a_held_out_loss_with_a_known_optimum():
    """One mode reaches the held-out target: f_t(x) = (c / mu) (1 - (1 - lr mu)^t) y crosses y_val where
    t* = log(1 - y_val mu / (c y)) / log(1 - lr mu); a second mode is invisible to the held-out point."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    mu, lr = np.array([2e-4, 0.6]), 1.0
    K = Q @ np.diag(mu) @ Q.T
    y = Q @ np.array([[1.0], [0.7]])  # coordinates (1, 0.7) in the eigenbasis
    c = 3e-4
    cross = (c * Q[:, 0])[None, :]  # K(x, X) = c q_1^T: sees the first mode only
    y_val = np.array([[0.9]])  # below c / mu * 1 = 1.5, so it is crossed
    regime = KernelRegime.from_kernel(K, np.zeros((2, 1)), y, lr, cross_kernel=lambda X: torch.as_tensor(cross))
    stop = regime.held_out(torch.zeros(1, 1), y_val).minimise(max_time=1e7)
    expected = np.log1p(-0.9 * mu[0] / c) / np.log1p(-lr * mu[0])
    assert stop.time == pytest.approx(expected, rel=1e-7)
    assert not stop.at_limit
    floor, ceil = int(np.floor(expected)), int(np.ceil(expected))
    loop = explicit_gd(K, cross, y, np.zeros((2, 1)), np.zeros((1, 1)), lr, [floor, ceil])
    losses = {t: float(((loop[t][1] - y_val) ** 2).sum()) for t in (floor, ceil)}
    assert stop.step == min(losses, key=losses.get)
    assert stop.loss == pytest.approx(losses[stop.step], rel=1e-9, abs=1e-15)


def test_a_loss_still_falling_at_the_end_of_the_scan_says_so():
    K = np.array([[1e-9]])
    regime = KernelRegime.from_kernel(K, np.zeros((1, 1)), np.ones((1, 1)), 1.0,
                                      cross_kernel=lambda X: torch.tensor([[1e-9]], dtype=torch.float64))
    stop = regime.held_out(torch.zeros(1, 1), np.ones((1, 1))).minimise(max_time=1e6)
    assert stop.at_limit and stop.step == 10**6
