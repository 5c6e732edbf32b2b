"""Kernel-regime predictions against explicit iteration of the linear dynamics, kernel regression
solved directly, and a wide network's real GD trajectory."""

import numpy as np
import pytest
import torch

from overparam import KernelRegime, TwoLayerNet, train
from overparam.kernel_regime import complexity
from overparam.data import sphere
from overparam.ntk import infinite_ntk, ntk


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
