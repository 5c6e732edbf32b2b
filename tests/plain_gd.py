"""An independent reference for gradient descent: F(W, x) written out with plain torch operations,
its gradient by autograd and W <- W - lr grad L each step. Nothing here uses overparam's passes."""

import math

import torch


def output(W, a, X, activation, kappa):
    """F_l(W, x) = kappa sum_r a_rl phi_r(W, x) (docs/mathematics.md#networks), broadcasting over a leading seed dimension."""
    Z = X @ W.transpose(-1, -2)
    if activation == "relu":
        phi = Z.clamp_min(0)
    elif activation == "exp":
        phi = Z.exp()
    else:
        phi = W.shape[-2] * torch.softmax(Z, dim=-1)
    return kappa * phi @ a


def losses(W, a, X, y, activation, kappa):
    """L_s(W_s) = 1/2 sum_i ||F(W_s, x_i) - y_i||^2 per seed (a scalar without a seed dimension)."""
    return 0.5 * (output(W, a, X, activation, kappa) - y).square().sum((-2, -1))


def optimise(loss, W0, lr, steps, optimizer):
    """`steps` full-batch steps of SGD (W <- W - lr g) or Adam (Kingma & Ba: betas 0.9, 0.999, eps 1e-8) on
    autograd's gradient g of loss(W): the losses at steps 0..steps and the last W."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    W = W0.clone()
    first, second, curve = torch.zeros_like(W), torch.zeros_like(W), []
    for t in range(1, steps + 2):
        W.requires_grad_(True)
        value = loss(W)
        curve.append(value.item())
        if t == steps + 1:
            break
        (g,) = torch.autograd.grad(value, W)
        W = W.detach()
        if optimizer == "sgd":
            W = W - lr * g
        else:
            first = beta1 * first + (1 - beta1) * g
            second = beta2 * second + (1 - beta2) * g * g
            W = W - lr * (first / (1 - beta1**t)) / ((second / (1 - beta2**t)).sqrt() + eps)
    return curve, W.detach()


def top_eigenvalue(W, a, X, activation, kappa):
    """lambda_max(J J^T) of one network from its dense autograd Jacobian."""
    J = torch.autograd.functional.jacobian(lambda V: output(V, a, X, activation, kappa).T.reshape(-1), W)
    J = J.reshape(J.shape[0], -1)
    return float(torch.linalg.eigvalsh(J @ J.T)[-1])


def descend(W0, a, X, y, activation, kappa, lr, steps):
    """Plain GD for `steps` steps: the weights at every step and the losses (per seed with a seed
    dimension; lr then one number or a tensor (S, 1, 1)). Stops after the first step whose loss is not
    finite or over 1000 times the initial loss (the divergence rule of docs/mathematics.md#gradient), which it includes."""
    W, weights, curve = W0.clone(), [W0.clone()], []
    for step in range(steps + 1):
        W.requires_grad_(True)
        loss = losses(W, a, X, y, activation, kappa)
        curve.append(loss.detach().clone())
        values = loss.detach().reshape(-1).tolist()
        if step == steps or any(not math.isfinite(v) or v > 1000 * max(v0, 1e-300)
                                for v, v0 in zip(values, curve[0].reshape(-1).tolist())):
            break
        (gradient,) = torch.autograd.grad(loss.sum(), W)
        W = W.detach() - lr * gradient
        weights.append(W.detach().clone())
    return torch.stack(weights), torch.stack(curve)


def auto_lr(W, a, X, activation, kappa, iters=100, rtol=1e-4):
    """lr = 1 / lambda_max(J J^T) as lr="auto" estimates it: power iteration on the dense autograd kernel
    from v = a N(0, I) draw of torch's generator seeded 0 (unit length), keeping the first Rayleigh
    quotient that changes by at most rtol (relative) from the previous one (the last after `iters`)."""
    J = torch.autograd.functional.jacobian(lambda V: output(V, a, X, activation, kappa).T.reshape(-1), W)
    J = J.reshape(J.shape[0], -1)
    theta = J @ J.T
    v = torch.randn((X.shape[0], a.shape[-1]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = (v / v.norm()).T.reshape(-1)
    estimate = 0.0
    for _ in range(iters):
        w = theta @ v
        new = float(v @ w)
        if abs(new - estimate) <= rtol * abs(new):
            return 1 / new
        v, estimate = w / w.norm(), new
    return 1 / estimate
