"""Spectra of kernels: a kernel (finite H(W) or Theta(W), H*, a matrix) as a `KernelOperator`, and its
smallest and largest eigenvalues and spectral norm.

lambda_min uses the solver `eigensolvers.choose` picks: dense float64 `eigvalsh` up to `DENSE_LIMIT`, a
Cholesky factor above it where the matrix fits in memory, and where it does not, LOBPCG preconditioned by a
Nystrom approximation for kernels that give their columns (H*, a matrix) and matrix-free Lanczos (ARPACK) on
the O(ndm) product Theta v for finite kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import activations, chunks
from ..coefficients import Pass
from .eigensolvers import (DENSE_LIMIT, LANCZOS_TOL, LEADING_NCV, Eigenvalue, Progress, _arpack, _silent,
                           choose, lanczos, smallest)
from .finite import pass_ntk
from .infinite import BLOCK_BYTES, check_sigma, infinite_columns, infinite_ntk_vector, kernel_rows


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
    check_sigma(sigma)
    X = torch.as_tensor(X, dtype=torch.float64)
    n = X.shape[0]
    if cache is None:
        cache = 4 * n * n * 8 <= chunks.available_memory(X.device)
    blocks: list[tuple[slice, torch.Tensor]] = []
    block = max(1, BLOCK_BYTES // (8 * 4 * n))

    def single(V: torch.Tensor) -> torch.Tensor:  # H* V, V (n, c)
        if not cache:
            return infinite_ntk_vector(activation, X, V, sigma)
        if not blocks:
            blocks.extend((rows, kernel_rows(activation, X, rows, sigma))
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
            kernel[rows] = kernel_rows(activation, X, rows, sigma)
            progress(stage, rows.stop, n)
        return kernel if out_dim == 1 else torch.kron(torch.eye(out_dim, dtype=kernel.dtype), kernel)

    return KernelOperator(n * out_dim, matvec, dense, torch.float64, X.device, f"H*({activation.name})",
                          lambda index: infinite_columns(activation, X, sigma, out_dim, index))


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
        return smallest(operator, choice, tol=tol, maxiter=maxiter, v0=v0, progress=progress)
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
