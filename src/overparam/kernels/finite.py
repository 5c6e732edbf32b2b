"""Finite-width neural tangent kernel Theta = J J^T = (X X^T) (.) (C C^T) (docs/mathematics.md#ntk), its
largest eigenvalue by power iteration, and Monte Carlo estimates of E[H(W(0))].

Built from the per-neuron coefficients of `coefficients.Pass` (Hadamard products of Gram matrices,
chunked over neurons); no per-example Jacobian is ever formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import activations, chunks
from ..coefficients import Pass
from ..validation import as_inputs
from .eigensolvers import Progress, _silent

#: Rows per block of the finite kernel's lower-triangle GEMMs (`_lower_gram_update`).
GRAM_ROW_BLOCK = 256


def lambda_max(forward: Pass, iters: int = 100, rtol: float = 1e-4, seed: int = 0) -> float | np.ndarray:
    """Largest eigenvalue of Theta(W) by power iteration v <- Theta v / ||Theta v||, Theta v = J (J^T v):
    no n x n matrix. A pass over seeds (W: S x m x d) gives one eigenvalue per seed, shape (S,), all
    iterated at once from the same start vector.

    Each seed keeps the Rayleigh quotient <v, Theta v> of the first iteration at which it changes by at
    most rtol (relative), or at which Theta v is zero or not finite; after `iters` iterations, the last.
    """
    shape = forward.out.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(shape[-2:], generator=gen, dtype=torch.float64).to(forward.out)
    v = (v / v.norm()).expand(shape).clone()
    seeds = math.prod(shape[:-2])
    estimate, result = [0.0] * seeds, [None] * seeds
    for _ in range(iters):
        w = forward.kernel_vector(v)
        norm = w.norm(dim=(-2, -1))
        quotients, lengths = torch.stack([(v * w).sum((-2, -1)), norm]).reshape(2, seeds).tolist()  # one transfer
        for s, (new, length) in enumerate(zip(quotients, lengths)):
            if result[s] is None and (not math.isfinite(length) or length == 0
                                      or abs(new - estimate[s]) <= rtol * abs(new)):
                result[s] = new
        if None not in result:
            break
        v = w / norm[..., None, None]  # seeds with a zero or non-finite Theta v are settled: their v is unused
        estimate = quotients
    result = [e if r is None else r for r, e in zip(result, estimate)]
    return result[0] if not shape[:-2] else np.array(result).reshape(shape[:-2])




def ntk(net, X, normalized: bool = True, X2=None) -> torch.Tensor:
    r"""Finite-width kernel $\Theta = (X X^\top) \odot (C C^\top)$ per output pair (docs/mathematics.md#ntk), (nk, nk).

    Output-major: row l*n + i is output l at x_i. normalized=True returns $H = \Theta / (m \kappa^2)$.
    Built from the per-neuron coefficients chunk by chunk; no n x md Jacobian is formed.
    X2 (n2, d): the cross kernel Theta(X, X2) of shape (nk, n2 k) instead.
    """
    X = as_inputs(X, net.in_dim, net.dtype, net.device)
    if X2 is None:
        return pass_ntk(net.forward_pass(X, keep=False, output=False), normalized)
    X2 = as_inputs(X2, net.in_dim, net.dtype, net.device)
    forward = net.forward_pass(torch.cat([X, X2]), keep=False, output=False)
    return pass_ntk(forward, normalized, split=X.shape[0])


def pass_ntk(forward: Pass, normalized: bool = True, split: int | None = None,
             progress: Progress | None = None) -> torch.Tensor:
    """Theta (or H) at the pass's weights; broadcasts over leading batch dims of W.

    split: rows of the pass's inputs before `split` index the kernel's rows, the rest its
    columns (a cross kernel); None: the square kernel of all inputs. progress(stage, neurons done, m).
    """
    progress = progress or _silent
    X = forward.X
    n, k = X.shape[-2], forward.a.shape[-1]
    stage, width = f"kernel {'H' if normalized else 'Theta'}(W), side {n * k}", forward.W.shape[-2]
    rows = slice(0, n if split is None else split)
    cols = rows if split is None else slice(split, n)
    n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
    batch = tuple(np.broadcast_shapes(X.shape[:-2], forward.W.shape[:-2], forward.a.shape[:-2]))
    gram = X.new_zeros(batch + (k * n_rows, k * n_cols))
    symmetric_update = _lower_gram_update(gram) if split is None else None
    done = 0
    for _, C in forward.coefficients():
        C_rows = C[..., rows, :].reshape(batch + (k * n_rows, -1))
        C_cols = C_rows if split is None else C[..., cols, :].reshape(batch + (k * n_cols, -1))
        if symmetric_update is not None:
            symmetric_update(C_rows)
        elif gram.dim() == 2:
            gram.addmm_(C_rows, C_cols.T)  # accumulates inside the GEMM: no extra pass over the nk x nk sum
        else:
            gram += C_rows @ C_cols.transpose(-1, -2)
        done += C.shape[-1]
        progress(stage, done, width)
    inner = X[..., rows, :] @ X[..., cols, :].transpose(-1, -2)
    gram *= inner.repeat(*(1,) * (inner.dim() - 2), k, k)
    if symmetric_update is not None:  # the lower triangle is summed: mirror it (exactly symmetric)
        gram = gram.tril() + gram.tril(-1).T
    if normalized:
        gram /= forward.total_width * forward.kappa**2
    return gram


def _lower_gram_update(gram: torch.Tensor) -> Callable[[torch.Tensor], None] | None:
    """For a square CPU kernel `gram`, a function C -> (gram's lower triangle += C C^T) in row blocks of
    `GRAM_ROW_BLOCK`: block b takes rows of block b against the columns up to its end, so with B
    blocks the GEMMs do (B + 1) / 2B of the flops of C C^T (at n = 1024, d = 32, m = 16384 float64:
    256 ms against 431 ms with one addmm per chunk). None elsewhere (unmeasured on GPUs; batches)."""
    size = gram.shape[-1]
    if gram.dim() != 2 or gram.device.type != "cpu" or size < 2 * GRAM_ROW_BLOCK:
        return None
    blocks = chunks.chunk_slices(size, GRAM_ROW_BLOCK)

    def update(C: torch.Tensor) -> None:
        for rows in blocks:
            gram[rows, :rows.stop].addmm_(C[rows], C[:rows.stop].T)

    return update


@dataclass
class MonteCarloKernel:
    """Mean of `samples` finite kernels over independent initialisations, with its standard error."""

    mean: torch.Tensor
    standard_error: torch.Tensor
    samples: int
    width: int


def monte_carlo_ntk(
    activation: str | activations.Activation,
    X,
    width: int,
    samples: int = 32,
    *,
    out_dim: int = 1,
    scale: str | float | None = None,
    init: str = "independent",
    sigma: float = 1.0,
    seed: int = 0,
    normalized: bool = True,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> MonteCarloKernel:
    """E[H(W(0))] estimated by averaging kernels of `samples` networks (seeds seed, seed+1, ...);
    progress(stage, kernels done, samples).

    standard_error = sample standard deviation / sqrt(samples), entrywise (Welford's update).
    For elementwise activations with independent init E[H(W(0))] = H* exactly; softmax has an O(1/m) bias.
    """
    from ..models import TwoLayerNet, resolve_device, resolve_dtype

    X = as_inputs(X, None, resolve_dtype(dtype), resolve_device(device))
    if int(samples) != samples or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 to estimate a standard error, got {samples!r}")
    mean = squares = None
    for index in range(int(samples)):
        net = TwoLayerNet(X.shape[1], width, out_dim, activation, scale, init, sigma, seed + index,
                          X.dtype, X.device)
        kernel = ntk(net, X, normalized)
        (progress or _silent)(f"Monte Carlo kernels, m = {width}", index + 1, int(samples))
        if mean is None:
            mean, squares = kernel.clone(), torch.zeros_like(kernel)
            continue
        delta = kernel - mean
        mean += delta / (index + 1)
        squares += delta * (kernel - mean)
    standard_error = (squares / (samples - 1) / samples).sqrt()
    return MonteCarloKernel(mean, standard_error, int(samples), int(width))
