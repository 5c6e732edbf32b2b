"""Batched seeds (W: S x m x d) against one-by-one `overparam.train` runs, float64, 1e-10."""

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet, initial_weights, train
from overparam.training import batched
from overparam.training.batched import train_batched, train_seeds
from overparam.coefficients import forward
from overparam.data import builtin, sphere
from overparam.kernels.finite import lambda_max, ntk
from overparam.training.loop import HISTORY_COLUMNS

import plain_gd

COMPARED = [c for c in HISTORY_COLUMNS if c != "wall_time"]


def assert_same_run(batched, single):
    assert batched.status == single.status, (batched.message, single.message)
    np.testing.assert_array_equal(batched.step, single.step)
    for column in COMPARED:
        np.testing.assert_allclose(getattr(batched, column), getattr(single, column), rtol=1e-10, atol=1e-10,
                                   err_msg=column)
    assert batched.lr == pytest.approx(single.lr, rel=1e-10)


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_lambda_max_of_a_batched_pass_is_each_seeds_top_eigenvalue(activation):
    """The power iteration over seeds, run to convergence, against eigvalsh of each seed's dense kernel."""
    X = torch.as_tensor(builtin("sphere", 10, 3, 2, seed=1).X)
    nets = [TwoLayerNet(3, 20, 2, activation, seed=s) for s in range(3)]
    W = torch.stack([net.W for net in nets])
    a = torch.stack([net.a for net in nets])
    top = lambda_max(forward(X, W, a, activation, nets[0].kappa, chunk=8), iters=20000, rtol=1e-14)
    dense = [float(torch.linalg.eigvalsh(ntk(net, X, normalized=False))[-1]) for net in nets]
    assert top.shape == (3,)
    np.testing.assert_allclose(top, dense, rtol=1e-9)
    one = lambda_max(nets[1].forward_pass(X), iters=20000, rtol=1e-14)
    assert isinstance(one, float) and one == pytest.approx(dense[1], rel=1e-9)


@pytest.mark.parametrize("seeds", [[5], [0, 4, 7]])
@pytest.mark.parametrize("activation,init", [("relu", "independent"), ("exp", "coupled"), ("softmax", "independent")])
def test_a_long_batched_run_is_the_plain_gradient_descent_loop(activation, init, seeds):
    """250 steps of every seed, each with its own step size, against W_s <- W_s - lr_s grad L_s with F
    written out and autograd's gradient (tests/plain_gd.py): losses, movements, weights to 1e-10."""
    data = sphere(10, 5, seed=4)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    W0, a = initial_weights(48, 5, 1, init, 1.0, seeds)
    kappa = TwoLayerNet(5, 48, 1, activation).kappa
    rates = [0.9 / plain_gd.top_eigenvalue(W0[j], a[j], X, activation, kappa) for j in range(len(seeds))]
    W = W0.clone()
    histories = train_batched(X, y, W, a, activation, kappa, lr=rates, steps=250, record_every=1,
                              paired=init == "coupled")
    weights, losses = plain_gd.descend(W0, a, X, y, activation, kappa, torch.tensor(rates, dtype=torch.float64)[:, None, None], 250)
    assert weights.shape == (251, len(seeds), 48, 5)
    assert (losses[-1] < 0.1 * losses[0]).all()
    for j, history in enumerate(histories):
        assert history.status == "max_steps" and history.lr == rates[j]
        np.testing.assert_allclose(history.loss, losses[:, j].numpy(), rtol=1e-10, atol=0)
        delta = weights[1:, j] - W0[j]
        np.testing.assert_allclose(history.total_movement[1:], delta.flatten(1).norm(dim=1).numpy(), rtol=1e-10)
        np.testing.assert_allclose(history.max_movement[1:], delta.norm(dim=2).amax(1).numpy(), rtol=1e-10)
    torch.testing.assert_close(W, weights[-1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("activation,init,lr,tol", [
    ("relu", "independent", "auto", 0.1),
    ("relu", "coupled", "auto", 0.05),
    ("exp", "coupled", "auto", 1e-2),
    ("exp", "independent", 0.002, 0.1),
    ("softmax", "coupled", "auto", 1e-2),
    ("softmax", "independent", 0.01, 0.1),
])
def test_batched_equals_one_by_one(activation, init, lr, tol):
    data = builtin("sphere", 8, 6, 1, seed=0)
    seeds = [0, 3, 7]
    budgets = [40, 300, 150]  # per-seed budgets: seeds leave the batch at different steps
    histories = train_seeds(activation, 32, data.X, data.y, seeds, init=init, lr=lr, steps=budgets,
                            tol=tol, record_every=3)
    for seed, budget, batched in zip(seeds, budgets, histories):
        net = TwoLayerNet(6, 32, 1, activation, init=init, seed=seed)
        single = train(net, data.X, data.y, lr=lr, steps=budget, tol=tol, record_every=3)
        assert_same_run(batched, single)
    assert histories[1].status == "converged"


def test_per_seed_stopping_mixes_converged_and_budget_runs():
    data = builtin("sphere", 8, 6, 1, seed=0)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    seeds, budgets, tol = [0, 3, 7, 1], [40, 300, 150, 0], 1e-2
    W0, a = initial_weights(32, 6, 1, "coupled", 1.0, seeds)
    kappa = TwoLayerNet(6, 32, 1, "exp").kappa
    rates = [1 / plain_gd.top_eigenvalue(W0[j], a[j], X, "exp", kappa) for j in range(len(seeds))]
    histories = train_seeds("exp", 32, X, y, seeds, init="coupled", lr=rates, steps=budgets, tol=tol)
    # each seed's plain loop: converged at the first step with ||F - y||_2 <= tol, else at its budget
    _, losses = plain_gd.descend(W0, a, X, y, "exp", kappa, torch.tensor(rates, dtype=torch.float64)[:, None, None],
                                 max(budgets))
    norms = (2 * losses).sqrt()
    expected = []
    for j, budget in enumerate(budgets):
        below = torch.nonzero(norms[: budget + 1, j] <= tol)
        expected.append(("converged", int(below[0])) if len(below) else ("max_steps", budget))
    assert [(h.status, h.steps) for h in histories] == expected
    assert {status for status, _ in expected} == {"converged", "max_steps"}  # the batch mixes both
    for history, (status, steps) in zip(histories, expected):
        if status == "converged":
            assert history.residual_norm[-1] <= tol < history.residual_norm[-2]


def test_per_seed_data_equals_one_by_one():
    seeds = [0, 1, 2]
    sets = [builtin("teacher", 10, 3, 2, seed=10 + s) for s in seeds]
    X = np.stack([s.X for s in sets])
    y = np.stack([s.y for s in sets])
    histories = train_seeds("softmax", 16, X, y, seeds, init="coupled", steps=120, tol=1e-3)
    for seed, data, batched in zip(seeds, sets, histories):
        single = train(TwoLayerNet(3, 16, 2, "softmax", init="coupled", seed=seed), data.X, data.y,
                       steps=120, tol=1e-3)
        assert_same_run(batched, single)


def test_divergence_is_per_seed_and_matches():
    data = builtin("sphere", 8, 3, 1, seed=0)
    seeds = [0, 1, 2]
    rates = [0.01, 3.0, 0.01]  # only seed 1 steps far above 2 / lambda_max
    histories = train_seeds("relu", 16, data.X, data.y, seeds, lr=rates, steps=60)
    assert [h.status for h in histories] == ["max_steps", "diverged", "max_steps"]
    assert "diverged at step" in histories[1].message
    for seed, rate, batched in zip(seeds, rates, histories):
        single = train(TwoLayerNet(3, 16, 1, "relu", seed=seed), data.X, data.y, lr=rate, steps=60)
        assert_same_run(batched, single)


@pytest.mark.parametrize("activation,safe,fast", [("relu", 0.3, 2.0), ("exp", 3e-4, 0.005)])
def test_a_diverging_seed_ends_at_its_last_finite_weights_as_alone(activation, safe, fast):
    """The single-run semantics per seed: W_s and the History end at step t - 1; other seeds go on."""
    data = sphere(12, 4, seed=2)  # the data of the divergence test in test_train.py
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    seeds, rates = [1, 0, 2], [safe, fast, safe]
    nets = [TwoLayerNet(4, 64, 1, activation, seed=s) for s in seeds]
    W = torch.stack([net.W for net in nets])
    a = torch.stack([net.a for net in nets])
    weights, losses = plain_gd.descend(W[1], a[1], X, y, activation, nets[0].kappa, fast, 40)
    diverged_at = len(losses) - 1  # the plain loop stops after the step at which it diverges
    assert not (losses[-1] <= 1000 * losses[0]) and diverged_at < 40
    histories = train_batched(X, y, W, a, activation, nets[0].kappa, lr=rates, steps=40, record_every=5)
    assert [h.status for h in histories] == ["max_steps", "diverged", "max_steps"]
    assert histories[1].steps == diverged_at - 1
    assert histories[1].message.startswith(f"diverged at step {diverged_at} (")
    torch.testing.assert_close(W[1], weights[diverged_at - 1], rtol=1e-10, atol=1e-12)
    singles = []
    for net, rate, batched, trained in zip(nets, rates, histories, W):
        singles.append(train(net, X, y, lr=rate, steps=40, record_every=5))
        assert_same_run(batched, singles[-1])
        torch.testing.assert_close(trained, net.W, rtol=1e-10, atol=1e-10)
    # the same message as the single run: what happened, and the same kind of hint (lr above 1/lambda_max)
    batched_head, batched_hint = histories[1].message.split("; ")
    single_head, single_hint = singles[1].message.split("; ")
    assert batched_head == single_head
    assert batched_hint.startswith("try lr <= ") and single_hint.startswith("try lr <= ")
    assert torch.isfinite(W).all()
    residual = float((nets[1](X) - y).norm())
    assert histories[1].residual_norm[-1] == pytest.approx(residual, rel=1e-10)


def test_exp_overflow_is_reported_per_seed():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]) * 300.0
    y = np.zeros(3)
    W = torch.zeros(2, 4, 2, dtype=torch.float64)
    W[1] = 2.0  # exp(600 * 2) overflows float64; seed 0 stays at exp(0)
    a = torch.ones(2, 4, 1, dtype=torch.float64)
    outcomes = train_batched(torch.as_tensor(X), torch.as_tensor(y)[:, None], W, a, "exp", 1.0,
                             lr=1e-6, steps=3)
    assert outcomes[0].status == "max_steps" and outcomes[0].steps == 3
    assert isinstance(outcomes[1], FloatingPointError) and "overflows" in str(outcomes[1])
    W[1] = 2.0
    outcomes = train_batched(torch.as_tensor(X), torch.as_tensor(y)[:, None], W, a, "exp", 1.0, steps=3)
    assert outcomes[0].status == "max_steps"
    assert isinstance(outcomes[1], OverflowError)  # as `train` raises when lr="auto" cannot be computed


def test_weights_are_trained_in_place():
    data = builtin("sphere", 6, 3, 1, seed=0)
    net = TwoLayerNet(3, 8, 1, "exp", init="coupled", seed=5)
    W, a = net.W.clone()[None], net.a.clone()[None]
    X, y = torch.as_tensor(data.X), torch.as_tensor(data.y)
    [history] = train_batched(X, y, W, a, "exp", net.kappa, lr=0.01, steps=20, paired=True)
    train(net, X, y, lr=0.01, steps=20)
    torch.testing.assert_close(W[0], net.W, rtol=1e-12, atol=1e-12)
    assert history.steps == 20


def test_bad_inputs_raise_clear_errors():
    data = builtin("sphere", 6, 3, 1, seed=0)
    with pytest.raises(ValueError, match="steps has 1 entries but there are 2 seeds"):
        train_seeds("exp", 8, data.X, data.y, [0, 1], steps=[3])
    with pytest.raises(ValueError, match="lr must be"):
        train_seeds("exp", 8, data.X, data.y, [0, 1], lr="fast")
    with pytest.raises(ValueError, match="data for 3 seeds"):
        train_seeds("exp", 8, np.stack([data.X] * 3), np.stack([data.y] * 3), [0, 1])
    with pytest.raises(ValueError, match="unknown activation"):
        train_seeds("swish", 8, data.X, data.y, [0])


def test_seed_batches_bound_the_working_set(monkeypatch):
    assert batched.seed_batches(32, 64, 16) == [slice(0, 32)]
    assert batched.seed_batches(32, 64, 2048) == [slice(i, i + 2) for i in range(0, 32, 2)]
    assert batched.seed_batches(5, 64, 2048, "cuda") == [slice(0, 5)]  # no cache to fit on a GPU
    monkeypatch.setattr(batched, "CPU_BATCH_ELEMENTS", 8 * 32 * 2)
    assert batched.seed_batches(5, 8, 32) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    data = builtin("sphere", 8, 6, 1, seed=0)
    parts = train_seeds("softmax", 32, data.X, data.y, range(5), steps=[30, 60, 90, 20, 50], tol=1e-2)
    monkeypatch.setattr(batched, "CPU_BATCH_ELEMENTS", 1 << 18)
    whole = train_seeds("softmax", 32, data.X, data.y, range(5), steps=[30, 60, 90, 20, 50], tol=1e-2)
    for split, one in zip(parts, whole):
        assert_same_run(split, one)
