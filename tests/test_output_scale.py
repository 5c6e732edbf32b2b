"""Training at an output scale alpha (docs/mathematics.md#output-scale): F_alpha = alpha F and
L_alpha(W) = (1/(2 alpha^2)) sum_i ||alpha F(W, x_i) - y_i||^2, against a plain autograd loop on that
loss written out here, for every built-in activation, in `train` and in the batched engine."""

import math

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet, train
from overparam.activations import BUILTIN
from overparam.training.batched import train_seeds
from overparam.data import sphere

import plain_gd

PHI = {  # phi_r(W, x) for every built-in, written out with plain torch operations
    "relu": lambda Z: Z.clamp_min(0),
    "exp": torch.exp,
    "softmax": lambda Z: Z.shape[-1] * torch.softmax(Z, dim=-1),
    "tanh": torch.tanh,
    "sigmoid": lambda Z: 1 / (1 + torch.exp(-Z)),
    "gelu": lambda Z: 0.5 * Z * (1 + torch.erf(Z / math.sqrt(2))),
}
STEPS = 200


def scaled_output(W, a, X, activation, kappa, alpha):
    """F_alpha(W, x) = alpha kappa sum_r a_r phi_r(W, x), over a leading seed dimension if W has one."""
    return alpha * kappa * PHI[activation](X @ W.transpose(-1, -2)) @ a


def scaled_loss(W, a, X, y, activation, kappa, alpha):
    """L_alpha(W) = 1/(2 alpha^2) sum_i ||F_alpha(W, x_i) - y_i||^2 (one per seed)."""
    return (scaled_output(W, a, X, activation, kappa, alpha) - y).square().sum((-2, -1)) / (2 * alpha**2)


def unscaled_top_eigenvalue(W, a, X, activation, kappa):
    """lambda_max(J J^T) of F (alpha = 1) from the dense autograd Jacobian."""
    J = torch.autograd.functional.jacobian(lambda V: scaled_output(V, a, X, activation, kappa, 1.0).reshape(-1), W)
    J = J.reshape(J.shape[0], -1)
    return float(torch.linalg.eigvalsh(J @ J.T)[-1])


def plain_descent(W0, a, X, y, activation, kappa, alpha, lr, steps):
    """W <- W - lr grad L_alpha(W) by autograd: every step's loss, ||F_alpha - y||, and the last W."""
    W, losses, norms = W0.clone(), [], []
    for step in range(steps + 1):
        W.requires_grad_(True)
        loss = scaled_loss(W, a, X, y, activation, kappa, alpha)
        losses.append(loss.detach().clone())
        norms.append((scaled_output(W, a, X, activation, kappa, alpha) - y).detach().norm(dim=(-2, -1)))
        if step == steps:
            break
        (gradient,) = torch.autograd.grad(loss.sum(), W)
        W = W.detach() - lr * gradient
    return torch.stack(losses), torch.stack(norms), W.detach()


@pytest.fixture
def problem():
    data = sphere(10, 4, seed=5)
    return torch.from_numpy(data.X), torch.from_numpy(data.y)


@pytest.mark.parametrize("alpha", (0.1, 10.0))
@pytest.mark.parametrize("activation", BUILTIN)
def test_training_at_an_output_scale_is_gd_on_the_scaled_loss(activation, alpha, problem):
    """200 steps of train(output_scale=alpha) against the plain loop on L_alpha: every step's loss and
    ||alpha F - y||, and the final weights, to 1e-10; lr = 0.5 / lambda_max(Theta(W(0))) of F."""
    X, y = problem
    net = TwoLayerNet(4, 32, 1, activation, init="coupled", seed=1)
    W0, a = net.W.clone(), net.a.clone()
    lr = 0.5 / unscaled_top_eigenvalue(W0, a, X, activation, net.kappa)
    history = train(net, X, y, lr=lr, steps=STEPS, record_every=1, output_scale=alpha)
    losses, norms, W = plain_descent(W0, a, X, y, activation, net.kappa, alpha, lr, STEPS)
    assert history.status == "max_steps" and history.steps == STEPS
    assert losses[-1] < 0.8 * losses[0]  # the run moves: no comparison of two standing networks
    np.testing.assert_allclose(history.loss, losses.numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(history.residual_norm, norms.numpy(), rtol=1e-10, atol=0)
    torch.testing.assert_close(net.W, W, rtol=1e-10, atol=1e-12)
    # the trained model is alpha net(X), and the weights moved by about 1/alpha of the alpha = 1 path
    final = scaled_output(net.W, a, X, activation, net.kappa, alpha) - y
    assert history.residual_norm[-1] == pytest.approx(float(final.norm()), rel=1e-10)


@pytest.mark.parametrize("activation", ("relu", "softmax", "gelu"))
def test_the_batched_engine_at_an_output_scale_is_the_plain_loop(activation, problem):
    """train_seeds(output_scale=alpha) on 3 seeds against the plain loop with a seed dimension, 200 steps."""
    X, y = problem
    alpha, seeds = 0.3, [0, 4, 9]
    nets = [TwoLayerNet(4, 16, 1, activation, init="coupled", seed=s) for s in seeds]
    W0, a = torch.stack([net.W for net in nets]), torch.stack([net.a for net in nets])
    rates = [0.5 / unscaled_top_eigenvalue(net.W, net.a, X, activation, net.kappa) for net in nets]
    histories = train_seeds(activation, 16, X, y, seeds, init="coupled", lr=rates, steps=STEPS, record_every=1,
                            output_scale=alpha)
    losses, norms, _ = plain_descent(W0, a, X, y, activation, nets[0].kappa, alpha,
                                     torch.tensor(rates, dtype=torch.float64)[:, None, None], STEPS)
    for j, history in enumerate(histories):
        assert losses[-1, j] < 0.5 * losses[0, j]
        np.testing.assert_allclose(history.loss, losses[:, j].numpy(), rtol=1e-10, atol=0)
        np.testing.assert_allclose(history.residual_norm, norms[:, j].numpy(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("optimizer", ("sgd", "adam"))
def test_full_batch_optimisers_at_an_output_scale_take_the_scaled_gradient(optimizer, problem):
    """SGD and Adam on L_alpha (alpha = 4): the plain update rules on autograd's grad L_alpha, to 1e-10."""
    X, y = problem
    alpha, lr = 4.0, {"sgd": 0.1, "adam": 0.003}[optimizer]
    net = TwoLayerNet(4, 32, 1, "relu", init="coupled", seed=2)
    W, a = net.W.clone(), net.a.clone()
    history = train(net, X, y, lr=lr, steps=STEPS, optimizer=optimizer, record_every=1, output_scale=alpha)
    losses, W = plain_gd.optimise(lambda V: scaled_loss(V, a, X, y, "relu", net.kappa, alpha), W, lr, STEPS,
                                  optimizer)
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(history.loss, losses, rtol=1e-10, atol=0)
    torch.testing.assert_close(net.W, W, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("activation", BUILTIN)
def test_output_scale_one_is_the_unscaled_run_bit_for_bit(activation, problem):
    X, y = problem
    runs = []
    for options in ({}, {"output_scale": 1.0}):
        net = TwoLayerNet(4, 32, 1, activation, init="coupled", seed=3)
        history = train(net, X, y, lr="auto", steps=50, record_every=1, **options)
        runs.append((net.W, history))
    (W, plain), (W_one, one) = runs
    assert torch.equal(W, W_one)
    for column in ("loss", "residual_norm", "max_movement", "total_movement"):
        assert torch.equal(torch.from_numpy(getattr(plain, column)), torch.from_numpy(getattr(one, column)))
    batched = [train_seeds(activation, 32, X, y, [3, 4], init="coupled", lr="auto", steps=50, record_every=1,
                           **options) for options in ({}, {"output_scale": 1.0})]
    for plain, one in zip(*batched):
        assert torch.equal(torch.from_numpy(plain.loss), torch.from_numpy(one.loss))


@pytest.mark.parametrize("alpha", (0.0, -1.0, math.inf, math.nan))
def test_a_bad_output_scale_is_a_clear_error(alpha, problem):
    X, y = problem
    with pytest.raises(ValueError, match="output_scale must be a positive finite number"):
        train(TwoLayerNet(4, 8, 1, "relu", init="coupled"), X, y, steps=1, output_scale=alpha)
