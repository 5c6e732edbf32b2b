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
