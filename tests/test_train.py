"""train(): GD reaches tol, records the papers' quantities, detects divergence, optimisers."""

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet, train
from overparam.data import sphere
from overparam.kernels.finite import ntk

import plain_gd


@pytest.fixture
def problem():
    data = sphere(12, 4, seed=2)
    return torch.from_numpy(data.X), torch.from_numpy(data.y)


@pytest.mark.parametrize("activation", ("relu", "exp", "softmax"))
def test_gd_reaches_tol(activation, problem):
    X, y = problem
    net = TwoLayerNet(4, 512, 1, activation, init="coupled", seed=0)
    history = train(net, X, y, lr="auto", steps=20000, tol=1e-4)
    assert history.status == "converged"
    final = float((net(X) - y).norm())
    assert final <= 1e-4
    assert history.residual_norm[-1] == pytest.approx(final, rel=1e-12)
    assert history.step[0] == 0 and history.step[-1] == history.steps
    assert history.max_movement[0] == 0.0 and history.total_movement[0] == 0.0
    # The recorded movements are those of the final weights.
    assert history.total_movement[-1] == pytest.approx(float((net.W - history_W0(net, activation)).norm()), rel=1e-12)
    assert np.all(np.diff(history.wall_time) >= 0)


def history_W0(net, activation):
    return TwoLayerNet(4, 512, 1, activation, init="coupled", seed=0).W


@pytest.mark.parametrize("activation,init", [("relu", "coupled"), ("exp", "independent"), ("softmax", "coupled")])
def test_a_long_run_is_the_plain_gradient_descent_loop(activation, init, problem):
    """300 steps of train() against W <- W - lr grad L with F written out and autograd's gradient
    (tests/plain_gd.py): every step's loss and movement, and the final weights, to 1e-10."""
    X, y = problem
    net = TwoLayerNet(4, 64, 1, activation, init=init, seed=3)
    W0, a = net.W.clone(), net.a.clone()
    lr = 0.9 / plain_gd.top_eigenvalue(W0, a, X, activation, net.kappa)
    history = train(net, X, y, lr=lr, steps=300, record_every=1)
    weights, losses = plain_gd.descend(W0, a, X, y, activation, net.kappa, lr, 300)
    assert history.status == "max_steps" and len(weights) == 301
    assert losses[-1] < 0.1 * losses[0]  # the run moves: this is no comparison of two standing networks
    np.testing.assert_allclose(history.loss, losses.numpy(), rtol=1e-10, atol=0)
    delta = weights - W0
    np.testing.assert_allclose(history.total_movement[1:], delta[1:].flatten(1).norm(dim=1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(history.max_movement[1:], delta[1:].norm(dim=2).amax(1).numpy(), rtol=1e-10)
    torch.testing.assert_close(net.W, weights[-1], rtol=1e-10, atol=0)


def test_gd_step_is_w_minus_lr_grad(problem):
    X, y = problem
    net = TwoLayerNet(4, 32, 1, "exp", seed=1)
    expected = net.W - 1e-4 * net.grad(X, y)  # lr below 1/lambda_max = 5.6e-4 (0.01 diverges at step 1)
    history = train(net, X, y, lr=1e-4, steps=1)
    assert history.status == "max_steps" and history.steps == 1
    torch.testing.assert_close(net.W, expected, rtol=1e-14, atol=1e-14)


def test_auto_lr_is_inverse_top_kernel_eigenvalue(problem):
    X, y = problem
    net = TwoLayerNet(4, 64, 1, "softmax", seed=1)
    top = float(torch.linalg.eigvalsh(ntk(net, X, normalized=False))[-1])
    history = train(net, X, y, lr="auto", steps=0)
    assert history.lr == pytest.approx(1 / top, rel=1e-3)


def test_early_steps_follow_linear_rate_prediction(problem):
    """With lr = 1/lambda_max, a wide net's residual contracts at most by (1 - lr lambda_min)^t."""
    X, y = problem
    net = TwoLayerNet(4, 4096, 1, "relu", init="coupled", seed=0)
    theta = ntk(net, X, normalized=False)
    eig = torch.linalg.eigvalsh(theta)
    history = train(net, X, y, lr=float(1 / eig[-1]), steps=50)
    bound = (1 - float(eig[0] / eig[-1])) ** (2 * history.step) * history.loss[0]
    assert np.all(history.loss <= bound * 1.01)


def test_divergence_is_detected_and_names_a_safe_step(problem):
    X, y = problem
    net = TwoLayerNet(4, 64, 1, "relu", seed=0)
    history = train(net, X, y, lr=1e4, steps=100)
    assert history.status == "diverged"
    assert "try lr <=" in history.message
    assert np.all(np.isfinite(history.loss))


def test_exp_overflow_during_training_is_divergence(problem):
    X, y = problem
    net = TwoLayerNet(4, 64, 1, "exp", seed=0)
    history = train(net, X, y, lr=50.0, steps=100)
    assert history.status == "diverged"
    assert "overflows" in history.message and np.all(np.isfinite(history.loss))


@pytest.mark.parametrize("activation,lr,case", [
    ("relu", 2.0, "off the grid"),  # the loss goes over 1000x at a step t with t - 1 off the record_every grid
    ("relu", 2.5, "on the grid"),  # t - 1 is on the grid: recorded once
    ("exp", 0.005, "overflow"),  # exp overflows
])
def test_divergence_leaves_the_last_finite_weights_and_their_record(activation, lr, case, problem):
    X, y = problem
    net = TwoLayerNet(4, 64, 1, activation, seed=0)
    W0 = net.W.clone()
    # the plain loop (tests/plain_gd.py) says where the run diverges and what W(t - 1) is
    weights, losses = plain_gd.descend(W0, net.a, X, y, activation, net.kappa, lr, 200)
    diverged_at = len(losses) - 1
    assert not (losses[-1] <= 1000 * losses[0]) and diverged_at < 200
    assert {"off the grid": (diverged_at - 1) % 5 != 0, "on the grid": (diverged_at - 1) % 5 == 0,
            "overflow": not torch.isfinite(losses[-1])}[case]
    history = train(net, X, y, lr=lr, steps=200, record_every=5)
    assert history.status == "diverged"
    assert history.message.startswith(f"diverged at step {diverged_at} (") and "try lr <=" in history.message
    assert f"W is left at step {diverged_at - 1}" in history.message
    assert ("overflows" in history.message) == (case == "overflow")
    np.testing.assert_array_equal(history.step, sorted({*range(0, diverged_at, 5), diverged_at - 1}))
    assert history.steps == diverged_at - 1
    # net.W is W(t-1), the weights after t - 1 plain GD steps, and the last entry describes it.
    assert torch.isfinite(net.W).all()
    torch.testing.assert_close(net.W, weights[diverged_at - 1], rtol=1e-10, atol=1e-12)
    assert history.final_loss == pytest.approx(float(losses[diverged_at - 1]), rel=1e-10)
    residual = float((net(X) - y).norm())
    assert history.residual_norm[-1] == pytest.approx(residual, rel=1e-12)
    assert history.final_loss == pytest.approx(0.5 * residual**2, rel=1e-12)
    delta = net.W - W0
    assert history.max_movement[-1] == pytest.approx(float(delta.norm(dim=1).max()), rel=1e-12)
    assert history.total_movement[-1] == pytest.approx(float(delta.norm()), rel=1e-12)
    assert np.all(np.isfinite(history.loss)) and np.all(np.diff(history.wall_time) >= 0)
    assert history.summary()["steps"] == diverged_at - 1


def test_divergence_with_an_optimiser_restores_the_parameter_it_holds(problem):
    X, y = problem
    net = TwoLayerNet(4, 64, 1, "relu", seed=0)
    W = net.W
    history = train(net, X, y, lr=100.0, steps=50, optimizer="sgd", record_every=10)
    assert history.status == "diverged" and net.W is W and torch.isfinite(W).all()
    assert history.residual_norm[-1] == pytest.approx(float((net(X) - y).norm()), rel=1e-12)


def test_overflowing_initial_network_is_an_error_not_a_step_size_problem():
    net = TwoLayerNet(2, 2, 1, "exp", seed=0)
    net.W = torch.tensor([[800.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"initial network cannot be evaluated .*largest <w_r, x_i> is 800"):
        train(net, X, torch.zeros(2), lr=0.1, steps=5)


@pytest.mark.parametrize("optimizer,batch", [("sgd", 4), ("adam", None), ("adam", 6)])
def test_other_optimisers_reduce_the_loss(optimizer, batch, problem):
    X, y = problem
    net = TwoLayerNet(4, 256, 1, "relu", init="coupled", seed=0)
    lr = 0.01 if optimizer == "adam" else 0.5
    history = train(net, X, y, lr=lr, steps=300, optimizer=optimizer, batch_size=batch)
    assert history.loss[-1] < 0.2 * history.loss[0]
    assert history.loss[-1] == pytest.approx(net.loss(X, y), rel=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_full_batch_optimisers_are_their_plain_update_rules(optimizer, problem):
    """200 full-batch steps of SGD (W <- W - lr g) and Adam (Kingma & Ba, default betas and eps) written
    out in the test on autograd's gradient of F (tests/plain_gd.py): losses and weights to 1e-10."""
    X, y = problem
    net = TwoLayerNet(4, 32, 1, "relu", seed=1)
    W, a, lr = net.W.clone(), net.a.clone(), {"sgd": 0.1, "adam": 0.01}[optimizer]
    history = train(net, X, y, lr=lr, steps=200, optimizer=optimizer, record_every=1)
    losses, W = plain_gd.optimise(lambda V: plain_gd.losses(V, a, X, y, "relu", net.kappa), W, lr, 200, optimizer)
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(history.loss, losses, rtol=1e-10, atol=0)
    torch.testing.assert_close(net.W, W, rtol=1e-10, atol=1e-13)


def test_multi_output_and_callback_stop(problem):
    X, _ = problem
    y = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    net = TwoLayerNet(4, 128, 3, "softmax", init="coupled", seed=0)
    seen = []

    def stop_at_five(state):
        seen.append(state.step)
        return state.step == 5

    history = train(net, X, y, lr="auto", steps=100, callbacks=[stop_at_five])
    assert seen == list(range(6)) and history.step[-1] == 5
    assert history.residual_norm[-1] == pytest.approx(float((net(X) - y).norm()), rel=1e-12)


def test_record_every_keeps_first_and_last(problem):
    X, y = problem
    net = TwoLayerNet(4, 32, 1, "relu", seed=0)
    history = train(net, X, y, lr=0.1, steps=23, record_every=5)
    assert history.step.tolist() == [0, 5, 10, 15, 20, 23]


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr must be"), (dict(optimizer="lbfgs"), "unknown optimizer"),
    (dict(steps=-3), "steps"), (dict(batch_size=0, optimizer="sgd"), "batch_size"),
    (dict(batch_size=4), "full-batch"), (dict(tol=float("nan")), "tol"),
])
def test_bad_training_arguments(kwargs, match, problem):
    X, y = problem
    with pytest.raises(ValueError, match=match):
        train(TwoLayerNet(4, 8), X, y, **({"lr": 0.1} | kwargs))


def test_history_save_roundtrip(tmp_path, problem):
    import pyarrow.parquet as pq

    X, y = problem
    history = train(TwoLayerNet(4, 16), X, y, lr=0.1, steps=10)
    history.save(tmp_path / "h.parquet")
    history.save(tmp_path / "h.csv")
    table = pq.read_table(tmp_path / "h.parquet").to_pydict()
    assert table["loss"] == history.loss.tolist()
    assert (tmp_path / "h.csv").read_text().splitlines()[0].startswith('"step","loss"')
