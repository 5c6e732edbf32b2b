"""Neural tangent kernel Theta = J J^T and its spectrum (SPEC §4)."""

from __future__ import annotations

import torch

from .coefficients import Pass


def lambda_max(forward: Pass, iters: int = 100, rtol: float = 1e-4, seed: int = 0) -> float:
    """Largest eigenvalue of Theta(W) by power iteration on Theta v = J (J^T v); no n x n matrix."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(forward.out.shape, generator=gen, dtype=torch.float64).to(forward.out)
    v /= v.norm()
    estimate = 0.0
    for _ in range(iters):
        w = forward.kernel_vector(v)
        new = float((v * w).sum())
        norm = w.norm()
        if not torch.isfinite(norm) or norm == 0:
            return new
        v = w / norm
        if abs(new - estimate) <= rtol * abs(new):
            return new
        estimate = new
    return estimate


def ntk(net, X, normalized: bool = True) -> torch.Tensor:
    """Finite-width kernel Theta = (X X^T) (.) (C C^T) per output pair (SPEC §4), (nk, nk).

    Output-major: row l*n + i is output l at x_i. normalized=True returns H = Theta / (m kappa^2).
    Built from the per-neuron coefficients chunk by chunk; no n x md Jacobian is formed.
    """
    forward = net.forward_pass(X, keep=False)
    n, k = forward.out.shape
    gram = forward.out.new_zeros(k * n, k * n)
    for _, C in forward.coefficients():
        C = C.reshape(k * n, -1)
        gram.addmm_(C, C.T)
    gram *= (forward.X @ forward.X.T).repeat(k, k)
    if normalized:
        gram /= net.width * net.kappa**2
    return gram


def infinite_ntk(activation: str, X, sigma: float = 1.0) -> torch.Tensor:
    """H*_{ij} = lim_{m->inf} H(W(0))_{ij} for w_r ~ N(0, sigma^2 I) (SPEC §4), one output: (n, n).

    relu:    <x_i,x_j> (pi - arccos rho_ij) / (2 pi)
    exp:     <x_i,x_j> exp(sigma^2 ||x_i + x_j||^2 / 2)
    softmax: <x_i,x_j> exp(sigma^2 <x_i,x_j>)
    With k outputs the limit is I_k (x) H* (cross-output blocks vanish).
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    inner = X @ X.T
    if activation == "relu":
        norms = X.norm(dim=1)
        rho = (inner / torch.outer(norms, norms).clamp_min(1e-300)).clamp(-1.0, 1.0)
        return inner * (torch.pi - torch.arccos(rho)) / (2 * torch.pi)
    if activation == "exp":
        sq = inner.diagonal()
        return inner * torch.exp(sigma**2 * (sq[:, None] + sq[None, :] + 2 * inner) / 2)
    if activation == "softmax":
        return inner * torch.exp(sigma**2 * inner)
    raise ValueError(f"unknown activation {activation!r}: use relu, exp or softmax")
