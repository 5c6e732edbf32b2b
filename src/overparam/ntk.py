"""Neural tangent kernel Theta = J J^T, its infinite-width limit H*, and their spectra (docs/mathematics.md#ntk).

Finite kernels come from the per-neuron coefficients of `coefficients.Pass` (Hadamard products
of Gram matrices, chunked over neurons); no per-example Jacobian is ever formed. lambda_min uses
the solver `eigensolvers.choose` picks: dense float64 `eigvalsh` up to `DENSE_LIMIT`, a Cholesky
factor above it where the matrix fits in memory, and matrix-free Lanczos (ARPACK) on the O(ndm)
product Theta v for finite kernels and a row-block product for H* where it does not.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import activations, chunks
from .coefficients import Pass
from .eigensolvers import (DENSE_LIMIT, LANCZOS_TOL, LEADING_NCV, Eigenvalue, Progress, _arpack, _silent,
                           choose, lanczos, smallest)
from .eigensolvers import rounding_dominated  # noqa: F401  (ntk.rounding_dominated, as callers import it)
from .validation import as_inputs

#: Bytes one row block of H* may take in the chunked product H* v.
BLOCK_BYTES = 1 << 27
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


# ----------------------------------------------------------------------------- finite width


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
    from .models import TwoLayerNet, resolve_device, resolve_dtype

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


# ----------------------------------------------------------------------------- infinite width


def infinite_ntk(activation: str | activations.Activation, X, sigma: float = 1.0, X2=None,
                 out_dim: int = 1) -> torch.Tensor:
    r"""$H^*_{ij} = \lim_{m \to \infty} H(W(0))_{ij}$ for $w_r \sim N(0, \sigma^2 I)$ (docs/mathematics.md#ntk, #elementwise), one output: (n, n).

    The activation's `Activation.infinite_kernel`: a closed form (relu's arc-cosine kernel, exp's and
    softmax's exponentials) or Gauss-Hermite quadrature of $\langle x_i, x_j\rangle E[\phi'(u)\, \phi'(v)]$.
    With k outputs the limit is I_k (x) H* (cross-output blocks vanish): pass out_dim=k.
    X2 (n2, d): the cross kernel H*(X, X2) of shape (n, n2). Entries beyond float64 are inf
    (exp and softmax at large sigma); `kernel_operator` and the spectra raise OverflowError on them.
    """
    activation = activations.resolve(activation)
    _check_sigma(sigma)
    kernel = activation.infinite_kernel(X, sigma, X2)
    if out_dim > 1:
        kernel = torch.kron(torch.eye(out_dim, dtype=kernel.dtype, device=kernel.device), kernel)
    return kernel


def _check_sigma(sigma: float) -> None:
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be positive and finite, got {sigma!r}")


def _finite_limit(kernel: torch.Tensor, activation, sigma: float, X: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(kernel).all():
        raise OverflowError(f"H*({activations.resolve(activation).name}) overflows float64 at sigma = {sigma:g} "
                            f"(largest ||x_i|| = {float(X.norm(dim=1).max()):.3g}); use a smaller sigma or inputs "
                            "with ||x|| <= 1")
    return kernel


def _kernel_rows(activation, X: torch.Tensor, rows: slice, sigma: float) -> torch.Tensor:
    """Rows `rows` of H*(X, X), finite (`_finite_limit`), with the diagonal of H*(X[rows]) itself: a cross
    kernel does not know which of its entries pair a point with itself (relu's arc-cosine kernel rounds
    them up to 1e-8 relative off, `activations._relu_kernel`)."""
    block = _finite_limit(infinite_ntk(activation, X[rows], sigma, X2=X), activation, sigma, X)
    square = infinite_ntk(activation, X[rows], sigma)
    block[:, rows].diagonal().copy_(square.diagonal())
    return block


def infinite_ntk_vector(activation: str | activations.Activation, X, V: torch.Tensor, sigma: float = 1.0,
                        block: int | None = None) -> torch.Tensor:
    """H* V for V of shape (n, c), by row blocks of H*'s lower triangle: block I against columns
    [0, end of I) gives out[I] += H*_{I,<} V_< and, by symmetry, out[<I] += H*_{I,<I}^T V_I. O(n^2 d)
    work, half the kernel entries of full row blocks; O(block * n) memory."""
    X = torch.as_tensor(X, dtype=torch.float64)
    n = X.shape[0]
    block = block or max(1, BLOCK_BYTES // (8 * 4 * n))
    out = torch.zeros(n, V.shape[-1], dtype=V.dtype, device=V.device)
    for rows in chunks.chunk_slices(n, block):
        lower = _finite_limit(infinite_ntk(activation, X[rows], sigma, X2=X[:rows.stop]), activation, sigma, X)
        lower[:, rows].diagonal().copy_(infinite_ntk(activation, X[rows], sigma).diagonal())  # see `_kernel_rows`
        lower = lower.to(V)
        out[rows] += lower @ V[:rows.stop]
        out[:rows.start] += lower[:, :rows.start].T @ V[rows]
    return out


def _infinite_columns(activation, X: torch.Tensor, sigma: float, out_dim: int, index: torch.Tensor) -> torch.Tensor:
    """Columns `index` of I_k (x) H* (output-major: column l*n + j is output l at x_j), (k n, len(index)),
    with the exact diagonal entries of `_kernel_rows`."""
    n = X.shape[0]
    index = torch.as_tensor(index, dtype=torch.long)
    points, outputs = index % n, index // n
    block = _finite_limit(infinite_ntk(activation, X[points], sigma, X2=X), activation, sigma, X).T  # (n, s)
    block[points, torch.arange(len(index))] = infinite_ntk(activation, X[points], sigma).diagonal()
    columns = X.new_zeros(out_dim * n, len(index))
    for output in range(out_dim):
        mine = outputs == output
        columns[output * n:(output + 1) * n, mine] = block[:, mine]
    return columns


# ----------------------------------------------------------------------------- spectra


@dataclass
class KernelOperator:
    """A symmetric kernel matrix of side `size` given by its product with (size, c) blocks.

    `dense(progress=None)` forms the matrix (only called where the chosen eigensolver is dense or
    Cholesky); `columns(index)`, where given, returns the float64 columns K[:, index] without forming
    the matrix (the Nystrom eigensolver's landmarks). Vectors are output-major: entry l*n + i belongs to
    output l at x_i.
    """

    size: int
    matvec: Callable[[torch.Tensor], torch.Tensor]
    dense: Callable[..., torch.Tensor]
    dtype: torch.dtype
    device: torch.device
    description: str
    columns: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __sub__(self, other: "KernelOperator") -> "KernelOperator":
        if other.size != self.size:
            raise ValueError(f"kernel sizes differ: {self.size} and {other.size}")
        return KernelOperator(
            self.size,
            lambda V: self.matvec(V) - other.matvec(V.to(other.device, other.dtype)).to(V.device, V.dtype),
            lambda progress=None: self.dense(progress=progress) - other.dense(progress=progress).to(self.device,
                                                                                                     self.dtype),
            self.dtype, self.device, f"{self.description} - {other.description}",
        )


def kernel_operator(kernel, X=None, *, sigma: float = 1.0, normalized: bool = True,
                    out_dim: int = 1, cache: bool | None = None) -> KernelOperator:
    """The kernel to analyse, as a `KernelOperator`:

    - a square matrix (torch or numpy): itself;
    - a `TwoLayerNet` with inputs X: H(W) (Theta with normalized=False) at the net's current W;
    - a `coefficients.Pass`: H (or Theta) at the pass's weights and inputs;
    - an activation (name or `Activation`) with inputs X: I_k (x) H* (k = out_dim) for w ~ N(0, sigma^2 I).
      cache: keep the row blocks of H* after the first product (None: when they fit in a
      quarter of free memory); otherwise every product recomputes them.
    """
    if isinstance(kernel, KernelOperator):
        return kernel
    if isinstance(kernel, (str, activations.Activation)):
        if X is None:
            raise ValueError("the infinite-width kernel needs the inputs X")
        return _infinite_operator(kernel, X, sigma, out_dim, cache)
    if isinstance(kernel, Pass):
        return _pass_operator(kernel, normalized)
    if hasattr(kernel, "forward_pass"):
        if X is None:
            raise ValueError("a network's kernel needs the inputs X")
        return _pass_operator(kernel.forward_pass(X), normalized)
    matrix = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a kernel matrix must be square, got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all():
        raise ValueError("the kernel matrix has non-finite entries (NaN or inf)")
    return KernelOperator(matrix.shape[0], lambda V: matrix @ V, lambda progress=None: matrix, matrix.dtype,
                          matrix.device, "matrix", lambda index: matrix[:, index].to(torch.float64))


def _pass_operator(forward: Pass, normalized: bool) -> KernelOperator:
    n, k = forward.out.shape[-2:]
    factor = 1.0 / (forward.total_width * forward.kappa**2) if normalized else 1.0

    def matvec(V: torch.Tensor) -> torch.Tensor:
        columns = [forward.kernel_vector(v.reshape(k, n).T).T.reshape(k * n) for v in V.T]
        return torch.stack(columns, 1) * factor

    name = "H(W)" if normalized else "Theta(W)"
    return KernelOperator(n * k, matvec, lambda progress=None: pass_ntk(forward, normalized, progress=progress),
                          forward.out.dtype,
                          forward.out.device, name)


def _infinite_operator(activation, X, sigma: float, out_dim: int,
                       cache: bool | None) -> KernelOperator:
    activation = activations.resolve(activation)
    _check_sigma(sigma)
    X = torch.as_tensor(X, dtype=torch.float64)
    n = X.shape[0]
    if cache is None:
        cache = 4 * n * n * 8 <= chunks.available_memory(X.device)
    blocks: list[tuple[slice, torch.Tensor]] = []
    block = max(1, BLOCK_BYTES // (8 * 4 * n))

    def single(V: torch.Tensor) -> torch.Tensor:  # H* V, V (n, c)
        if not cache:
            return infinite_ntk_vector(activation, X, V, sigma, block)
        if not blocks:
            blocks.extend((rows, _kernel_rows(activation, X, rows, sigma))
                          for rows in chunks.chunk_slices(n, block))
        out = torch.empty_like(V)
        for rows, rows_kernel in blocks:
            out[rows] = rows_kernel @ V
        return out

    def matvec(V: torch.Tensor) -> torch.Tensor:  # (I_k (x) H*) V, output-major
        c = V.shape[1]
        stacked = V.reshape(out_dim, n, c).transpose(0, 1).reshape(n, out_dim * c)
        return single(stacked).reshape(n, out_dim, c).transpose(0, 1).reshape(out_dim * n, c)

    def dense(progress: Progress | None = None) -> torch.Tensor:  # by row blocks: no n x n temporaries
        progress = progress or _silent
        kernel = X.new_empty(n, n)
        stage = f"kernel H*({activation.name}), side {n}"
        for rows in chunks.chunk_slices(n, block):
            kernel[rows] = _kernel_rows(activation, X, rows, sigma)
            progress(stage, rows.stop, n)
        return kernel if out_dim == 1 else torch.kron(torch.eye(out_dim, dtype=kernel.dtype), kernel)

    return KernelOperator(n * out_dim, matvec, dense, torch.float64, X.device, f"H*({activation.name})",
                          lambda index: _infinite_columns(activation, X, sigma, out_dim, index))


def extreme_eigenvalue(kernel, X=None, which: str = "smallest", *, sigma: float = 1.0,
                       normalized: bool = True, out_dim: int = 1, dense_limit: int = DENSE_LIMIT,
                       solver: str = "auto", tol: float = LANCZOS_TOL, maxiter: int | None = None, v0=None,
                       progress: Progress | None = None) -> Eigenvalue:
    """Smallest or largest eigenvalue of a kernel (see `kernel_operator` for what `kernel` may be).

    smallest: by the solver `eigensolvers.choose(size, solver, dense_limit)` picks ("auto": dense
    eigvalsh up to dense_limit, Cholesky above where the matrix fits in memory, matrix-free Lanczos
    where it does not); the result says which and why. largest: dense eigvalsh up to dense_limit,
    Lanczos (which='LA') above. Lanczos uses bases of LANCZOS_BASES vectors with `maxiter` restarts
    each (default LANCZOS_RESTARTS); v0 warm-starts it (e.g. the previous step's eigenvector).
    progress(stage, done, total): see `eigensolvers`.
    """
    if which not in ("smallest", "largest"):
        raise ValueError(f"which must be 'smallest' or 'largest', got {which!r}")
    operator = kernel_operator(kernel, X, sigma=sigma, normalized=normalized, out_dim=out_dim)
    if which == "smallest":
        choice = choose(operator.size, solver, dense_limit, columns=operator.columns is not None)
        return smallest(operator, choice, tol=tol, maxiter=maxiter, v0=v0,
                        progress=progress)
    if operator.size <= dense_limit:
        value = float(torch.linalg.eigvalsh(operator.dense(progress=progress).to(torch.float64))[-1])
        return Eigenvalue(value, math.isfinite(value), "dense", 0.0, 0)
    return lanczos(operator, "LA", tol, maxiter, v0, progress)


def lambda_min(kernel, X=None, **options) -> Eigenvalue:
    """lambda_min of H(W), Theta(W), H* or a matrix (`extreme_eigenvalue` with which='smallest').

    Examples: lambda_min(net, X); lambda_min(activation, X, sigma=1.0) (H*); lambda_min(K);
    lambda_min(activation, X, solver="cholesky"). Use float(...) or .value for the number, .converged
    for whether the iteration met its tolerance, .method and .reason for the solver and why, .rounding
    for a value below the rounding level.
    """
    return extreme_eigenvalue(kernel, X, "smallest", **options)


def spectral_norm(kernel, X=None, *, dense_limit: int = DENSE_LIMIT, tol: float = 1e-8,
                  maxiter: int | None = None, v0=None, progress: Progress | None = None, **options) -> Eigenvalue:
    """||K||_2 = max_i |lambda_i(K)| of a symmetric (possibly indefinite) kernel, e.g. a
    difference `kernel_operator(net, X) - kernel_operator(net.activation, X)`; v0 warm-starts Lanczos."""
    operator = kernel_operator(kernel, X, **options)
    if operator.size <= dense_limit:
        value = float(torch.linalg.eigvalsh(operator.dense(progress=progress).to(torch.float64)).abs().max())
        return Eigenvalue(value, math.isfinite(value), "dense", 0.0, 0)
    probe = torch.randn(operator.size, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if not operator.matvec(probe.to(operator.device, operator.dtype)).any():
        return Eigenvalue(0.0, True, "lanczos", 0.0, 1)  # a zero product on a random vector: K = 0
    result = lanczos(operator, "LM", tol, maxiter, v0, progress)
    result.value = abs(result.value)
    return result


def leading_eigenvalues(kernel, X=None, count: int = 64, *, dense_limit: int = DENSE_LIMIT,
                        tol: float = 1e-8, progress: Progress | None = None, **options) -> np.ndarray:
    """All eigenvalues in descending order when size <= dense_limit, else the `count` largest
    (Lanczos, which='LA'); e.g. for a spectrum plot."""
    operator = kernel_operator(kernel, X, **options)
    if operator.size <= dense_limit:
        return torch.linalg.eigvalsh(operator.dense(progress=progress).to(torch.float64)).flip(0).cpu().numpy()
    values, _, _, _ = _arpack(operator, "LA", min(count, operator.size - 1), tol, None, None, LEADING_NCV,
                              progress, f"Lanczos for the {count} largest eigenvalues")
    return np.sort(values)[::-1]


class _CallableModule(types.ModuleType):
    """`overparam.ntk(net, X)` is the kernel function and `overparam.ntk.infinite_ntk` this module:
    the package exports the function under the module's own name, so the module calls it."""

    def __call__(self, net, X, normalized: bool = True, X2=None) -> torch.Tensor:
        return ntk(net, X, normalized, X2)


sys.modules[__name__].__class__ = _CallableModule
