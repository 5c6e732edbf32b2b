"""Neuron sharding: 2 gloo processes reproduce the single-process run (float64, 1e-10)."""

import functools
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from overparam import TwoLayerNet, train
from overparam.training import distributed
from overparam.cli import app
from overparam.data import sphere
from overparam.kernels.finite import ntk

TOL = dict(rtol=1e-10, atol=1e-10)


def problem(n=10, d=4, k=1, seed=2):
    data = sphere(n, d, k, seed=seed)
    return torch.from_numpy(data.X), torch.from_numpy(data.y)


def assert_same_history(sharded, single):
    assert sharded.status == single.status and sharded.message == single.message
    np.testing.assert_array_equal(sharded.step, single.step)
    assert sharded.lr == pytest.approx(single.lr, rel=1e-10)
    for column in ("loss", "residual_norm", "max_movement", "total_movement"):
        np.testing.assert_allclose(getattr(sharded, column), getattr(single, column), **TOL, err_msg=column)


def test_shard_bounds_are_contiguous_balanced_and_keep_pairs():
    assert distributed.shard_bounds(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    paired = distributed.shard_bounds(14, 3, paired=True)  # 7 pairs: 3 + 2 + 2
    assert paired == [slice(0, 6), slice(6, 10), slice(10, 14)]
    assert all((b.stop - b.start) % 2 == 0 for b in paired)
    with pytest.raises(ValueError, match="cannot split 2 coupled neuron pairs over 3"):
        distributed.shard_bounds(4, 3, paired=True)
    with pytest.raises(ValueError, match="positive integer"):
        distributed.shard_bounds(4, 0)


@pytest.mark.parametrize("activation, init, k, width", [
    ("relu", "independent", 1, 51),   # odd width: blocks of 26 and 25 neurons
    ("exp", "coupled", 1, 70),        # 35 pairs: blocks of 36 and 34 neurons
    ("softmax", "coupled", 3, 64),    # k > 1: all-reduced max, normaliser and <a_l, S>
])
def test_two_processes_train_like_one(activation, init, k, width):
    X, y = problem(k=k)
    net = TwoLayerNet(4, width, k, activation, init=init, seed=3)
    single = net.copy()
    seen, expected_seen = [], []
    expected = train(single, X, y, lr="auto", steps=25, tol=1e-12,
                     progress=lambda step, norm: expected_seen.append((step, norm)))
    history = distributed.train(net, X, y, nproc=2, lr="auto", steps=25, tol=1e-12,
                                progress=lambda step, norm: seen.append((step, norm)))
    assert_same_history(history, expected)
    np.testing.assert_allclose(seen, expected_seen, **TOL)  # rank 0's progress reaches the caller
    assert history.loss[-1] < history.loss[0]
    if init == "coupled":  # pairs never straddle processes: F(W(0)) = 0 exactly on both
        assert history.loss[0] == expected.loss[0] == pytest.approx(0.5 * float(y.square().sum()), rel=1e-15)
    torch.testing.assert_close(net.W, single.W, **TOL)


def test_minibatch_sgd_and_record_every_match_one_process():
    X, y = problem(n=12)
    net = TwoLayerNet(4, 40, 1, "exp", seed=5)
    single = net.copy()
    options = dict(lr=1e-3, steps=9, optimizer="sgd", batch_size=5, record_every=4, seed=7)
    expected = train(single, X, y, **options)
    history = distributed.train(net, X, y, nproc=2, **options)
    np.testing.assert_array_equal(history.step, [0, 4, 8, 9])
    assert_same_history(history, expected)
    torch.testing.assert_close(net.W, single.W, **TOL)


def test_divergence_is_detected_and_explained_as_in_one_process():
    X, y = problem()
    net = TwoLayerNet(4, 40, 1, "exp", seed=5)
    expected = train(net.copy(), X, y, lr=0.05, steps=50)
    history = distributed.train(net, X, y, nproc=2, lr=0.05, steps=50)
    assert expected.status == "diverged"
    assert_same_history(history, expected)  # same step, same message with the same suggested lr


def test_divergence_leaves_the_last_finite_weights_as_in_one_process():
    X, y = problem()
    net = TwoLayerNet(4, 40, 1, "relu", seed=5)
    single = net.copy()
    expected = train(single, X, y, lr=2.5, steps=50, record_every=5)
    history = distributed.train(net, X, y, nproc=2, lr=2.5, steps=50, record_every=5)
    assert expected.status == "diverged" and "diverged at step 9 " in expected.message
    np.testing.assert_array_equal(history.step, [0, 5, 8])  # step 8, W(t-1), off the grid
    assert_same_history(history, expected)
    torch.testing.assert_close(net.W, single.W, **TOL)
    assert history.residual_norm[-1] == pytest.approx(float((net(X) - y).norm()), rel=1e-10)


@pytest.mark.parametrize("activation, k", [("relu", 1), ("exp", 1), ("softmax", 2)])
def test_sharded_kernel_equals_dense_kernel(activation, k):
    X, _ = problem(n=8, k=k)
    net = TwoLayerNet(4, 30, k, activation, seed=1)
    net.W.add_(0.1 * torch.randn(net.W.shape, generator=torch.Generator().manual_seed(0), dtype=net.dtype))
    expected = ntk(net, X, normalized=False)
    torch.testing.assert_close(distributed.ntk(net, X, nproc=2, normalized=False), expected, **TOL)
    if activation == "exp":  # normalised H = Theta / (m kappa^2) with the full width m; cross kernel
        X2, _ = problem(n=5, seed=9)
        torch.testing.assert_close(distributed.ntk(net, X, nproc=2),
                                   expected / (net.width * net.kappa**2), **TOL)
        torch.testing.assert_close(distributed.ntk(net, X, nproc=2, X2=X2), ntk(net, X, X2=X2), **TOL)


def test_inside_a_launched_group_train_joins_it():
    """What torchrun does: RANK/WORLD_SIZE set, every process calls distributed.train itself."""
    X, y = problem()
    net = TwoLayerNet(4, 32, 1, "softmax", init="coupled", seed=0)
    single = net.copy()
    expected = train(single, X, y, lr=0.05, steps=6)
    history = distributed.launch(functools.partial(distributed.train, lr=0.05, steps=6), 2, net, X, y)
    assert_same_history(history, expected)


def test_errors_in_a_process_reach_the_caller():
    X, y = problem()
    net = TwoLayerNet(4, 8, 1, "relu", seed=0)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        distributed.train(net, X, y, nproc=2, optimizer="nope")
    with pytest.raises(ValueError, match="cannot split 8 neurons over 9 processes"):
        distributed.train(net, X, y, nproc=9)


def test_cli_train_with_two_processes(tmp_path):
    result = CliRunner().invoke(app, [
        "train", "--activation", "exp", "--width", "64", "--n", "10", "--d", "4", "--steps", "20",
        "--tol", "0", "--nproc", "2", "--json", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    single = CliRunner().invoke(app, [
        "train", "--activation", "exp", "--width", "64", "--n", "10", "--d", "4", "--steps", "20",
        "--tol", "0", "--json", "--out", str(tmp_path / "one"),
    ])
    expected = json.loads(single.stdout)
    for key in ("final_loss", "residual_norm", "lr", "max_movement", "total_movement"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-12), key
    assert summary["steps"] == expected["steps"] == 20
    assert (tmp_path / "run" / "history.parquet").exists()
