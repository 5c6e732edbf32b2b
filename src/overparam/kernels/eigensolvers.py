"""Which eigensolver finds lambda_min of a kernel, and the solvers themselves (docs/mathematics.md#lambda-min).

- dense: float64 eigvalsh of the formed matrix (all eigenvalues; ~4n^3/3 flops in the tridiagonal
  reduction), up to the dense limit;
- cholesky: H = L L^T (n^3/3 flops), then Lanczos for lambda_max(H^-1) = 1/lambda_min(H) with two
  triangular solves per product. A Cholesky factorisation that fails says at once that H is not
  numerically positive definite: lambda_min is at or below the rounding level eps n lambda_max;
- lanczos: matrix-free implicitly restarted Lanczos (ARPACK) on K v, with growing bases; LOBPCG's
  best Rayleigh quotient where ARPACK returns nothing;
- lobpcg: matrix-free LOBPCG alone;
- nystrom: matrix-free block LOBPCG (`lobpcg_smallest`, 16 vectors of which only the first must converge)
  preconditioned by (A + mu I)^-1, A = C W^-1 C^T the Nystrom approximation from the kernel's columns
  C = K[:, S] at random landmarks S (W = K[S, S]) and mu its smallest eigenvalue (Frangella, Tropp and
  Udell 2023, randomized Nystrom preconditioning): the kernel's top eigenvalues, which stall Lanczos at
  the bottom of the spectrum, are flattened. lambda_max by the same iteration on -K from A's leading
  eigenvectors (`nystrom_largest`).

`choose` picks dense up to the dense limit, Cholesky above it wherever the matrix and its factor fit
in half of the available memory, and where they do not the Nystrom solver for kernels that give their
columns without the matrix (H*, a matrix) and Lanczos for the others (a finite network's kernel).
Measured on relu's H* (d = 8 sphere, benchmarks/lambda_min_large.py): 39 kernel passes at n = 5000 where
Lanczos needed 809 products; one pass costs about one product. Measured on 2 cores
(benchmarks/eigensolvers.py, benchmarks/RESULTS.md): at n = 4000 torch's eigvalsh took 14.5 s,
scipy's eigvalsh 19-22 s (driver evd, or evr for the smallest only), Cholesky 1.8 s.

Progress: solvers take `progress(stage, done, total)`, called as the work advances (total None: a
single LAPACK call whose progress is not known); the library never prints.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..chunks import available_memory, chunk_slices

#: Largest kernel side (n * k) whose spectrum is computed densely with eigvalsh.
DENSE_LIMIT = 4096
#: What --eigensolver accepts.
SOLVERS = ("auto", "dense", "cholesky", "lanczos", "lobpcg", "nystrom")
#: Share of the available memory the dense matrix and its copy (eigvalsh) or factor may take.
MEMORY_FRACTION = 0.5
#: Relative tolerance of the Lanczos eigenvalue (ARPACK: ||K v - mu v|| <= tol * |mu|).
LANCZOS_TOL = 1e-10
#: Lanczos basis sizes tried in turn (each with `maxiter` restarts): the bottom of a kernel spectrum
#: is clustered and far below lambda_max, where restarting a small basis stalls; a basis costs
#: 8 * size * ncv bytes and is capped to a quarter of free memory.
LANCZOS_BASES = (128, 512, 2048)
#: Restarts of one basis size before the next, larger one is tried.
LANCZOS_RESTARTS = 2
#: Basis size for the leading eigenvalues, and for lambda_max(H^-1) after a Cholesky factorisation
#: (both are at the well-separated top of their spectra, where Lanczos converges fast).
LEADING_NCV = 256
INVERSE_NCV = 64
#: Landmarks of the Nystrom preconditioner (`nystrom_rank`: NYSTROM_RANK_SCALE sqrt(side), at least NYSTROM_RANK,
#: at most half the side, fewer where its side x rank factor would take more than NYSTROM_MEMORY of the free
#: memory), LOBPCG's block of vectors, its relative residual tolerance
#: ||K v - mu v|| <= tol mu (mu is then within tol mu of an eigenvalue; its error is in practice about
#: the residual squared over the gap, 1e-13 relative in the tests) and its most iterations. 16 vectors:
#: a product with 16 costs little more than with one where the kernel's entries dominate, and on relu's H*
#: (2000 landmarks, benchmarks/RESULTS.md) blocks of 1, 8 and 16 took 241, 51 and 44 passes at n = 5000.
NYSTROM_RANK = 2000
NYSTROM_RANK_SCALE = 25
NYSTROM_MEMORY = 0.3
NYSTROM_BLOCK = 16
NYSTROM_TOL = 1e-6
NYSTROM_ITERATIONS = 500

Progress = Callable[[str, float, "float | None"], None]


def _silent(stage: str, done: float, total: float | None) -> None:
    pass


@dataclass
class Eigenvalue:
    """An extreme eigenvalue with how it was found.

    method: "dense" (eigvalsh, float64), "cholesky" (1 / lambda_max(H^-1) from a Cholesky factor),
    "lanczos" (ARPACK, matrix-free) or "lobpcg"; reason: why that method was used. converged: the
    method met its tolerance; residual: ||K v - value v||_2 for the returned unit vector v (0 for
    dense); matvecs: kernel products (or pairs of triangular solves) used. rounding: the smallest
    eigenvalue is below the rounding level of the spectrum (`rounding_dominated`), so its value (and
    sign) is not resolved; NaN where a failed Cholesky factorisation showed that without a value.
    """

    value: float
    converged: bool
    method: str
    residual: float
    matvecs: int
    vector: np.ndarray | None = field(default=None, repr=False)
    rounding: bool = False
    reason: str = ""

    def __float__(self) -> float:
        return self.value


def rounding_dominated(low: float, high: float, size: int, dtype: torch.dtype = torch.float64) -> bool:
    """Whether lambda_min = low is rounding, not a resolved eigenvalue: low < eps n lambda_max (eps of
    the kernel's dtype, n its side), or either end non-finite.

    A symmetric eigensolver is backward stable: its eigenvalues carry absolute errors up to about
    eps n ||K||_2. So a PSD kernel's computed lambda_min below that level, negative ones included,
    and condition numbers beyond 1/(eps n), say nothing about the true lambda_min.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return True
    return low < torch.finfo(dtype).eps * size * max(high, 0.0)


# ----------------------------------------------------------------------------- choice


@dataclass(frozen=True)
class Choice:
    """The eigensolver for lambda_min and why."""

    method: str
    reason: str


def dense_bytes(size: int) -> int:
    """Memory of a dense float64 solve: the matrix and eigvalsh's copy of it (or its Cholesky factor)."""
    return 2 * 8 * size * size


def choose(size: int, solver: str = "auto", dense_limit: int = DENSE_LIMIT, memory: int | None = None,
           columns: bool = False) -> Choice:
    """The solver for a kernel of side `size`: `solver` itself unless "auto" (see the module docstring).

    memory: bytes available (default: `available_memory` of the CPU); columns: the kernel gives its
    columns without the matrix (`KernelOperator.columns`). A dense or Cholesky solver asked for where
    the matrix does not fit, or nystrom for a kernel without columns, is a ValueError (rather than the
    process being killed or a failure after the work).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown eigensolver {solver!r}: choose one of {', '.join(SOLVERS)}")
    memory = available_memory(torch.device("cpu")) if memory is None else memory
    need = dense_bytes(size)
    fits = need <= MEMORY_FRACTION * memory
    room = f"{need / 2**30:.2g} GiB of {memory / 2**30:.3g} GiB available"
    if solver != "auto":
        if solver in ("dense", "cholesky") and not fits:
            raise ValueError(f"the {solver} eigensolver needs {room} (at most {MEMORY_FRACTION:.0%} of it may be "
                             f"used) for a kernel of side {size}; use --eigensolver lanczos (matrix-free)")
        if solver == "nystrom" and not columns:
            raise ValueError("the nystrom eigensolver needs the kernel's columns without the matrix (H* or a "
                             "matrix); use --eigensolver lanczos for this kernel")
        return Choice(solver, "asked for")
    if size <= dense_limit and fits:
        return Choice("dense", f"side {size} <= dense limit {dense_limit}: every eigenvalue by eigvalsh")
    if fits:
        return Choice("cholesky", f"side {size} > dense limit {dense_limit} and the matrix with its factor fits "
                                  f"({room}): Cholesky (n^3/3 flops) and Lanczos on H^-1")
    if columns:
        return Choice("nystrom", f"the dense matrix does not fit ({room}, at most {MEMORY_FRACTION:.0%} usable): "
                                 "matrix-free block LOBPCG preconditioned by a Nystrom approximation (relu's H*: 39 "
                                 "kernel passes at n = 5000, where Lanczos took 809 products)")
    return Choice("lanczos", f"the dense matrix does not fit ({room}, at most {MEMORY_FRACTION:.0%} usable) and "
                             "this kernel gives no columns for a Nystrom preconditioner: matrix-free Lanczos")


# ----------------------------------------------------------------------------- solvers


def smallest(operator, choice: Choice, *, high: float | None = None, tol: float = LANCZOS_TOL,
             maxiter: int | None = None, v0=None, progress: Progress | None = None,
             precondition: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Eigenvalue:
    """lambda_min of a `ntk.KernelOperator` by `choice`'s method; high: lambda_max where known (the
    Cholesky route needs it for its rounding verdict and computes it otherwise); precondition: the
    Nystrom solver's preconditioner where already built (`nystrom_preconditioner`)."""
    progress = progress or _silent
    if choice.method == "dense":
        values = dense_eigenvalues(operator.dense(progress=progress), progress)
        low, top = float(values[0]), float(values[-1])
        rounding = rounding_dominated(low, top, operator.size, operator.dtype)
        result = Eigenvalue(low, math.isfinite(low), "dense", 0.0, 0, rounding=rounding)
    elif choice.method == "cholesky":
        matrix = operator.dense(progress=progress).to(torch.float64)
        if high is None:
            high = largest_of_matrix(matrix, progress).value
        result = cholesky_smallest(matrix, high, tol, progress)
    elif choice.method == "nystrom":
        result = nystrom_smallest(operator, v0=v0, progress=progress, precondition=precondition)
    elif choice.method == "lobpcg":
        values, vectors, converged, count = _lobpcg(operator, "SA", tol, v0, progress=progress)
        result = _with_residual(operator, "lobpcg", values, vectors, converged, count)
    else:
        result = lanczos(operator, "SA", tol, maxiter, v0, progress)
    if high is not None and result.method != "dense" and math.isfinite(result.value):
        result.rounding = rounding_dominated(result.value, high, operator.size, operator.dtype)
    result.reason = choice.reason + (f"; {result.reason}" if result.reason else "")
    return result


def dense_eigenvalues(matrix: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    """Every eigenvalue of a symmetric matrix, ascending: float64 eigvalsh (one LAPACK call)."""
    (progress or _silent)(f"eigvalsh, side {matrix.shape[0]}", 0, None)
    values = torch.linalg.eigvalsh(matrix.to(torch.float64))
    (progress or _silent)(f"eigvalsh, side {matrix.shape[0]}", 1, 1)
    return values


def largest_of_matrix(matrix: torch.Tensor, progress: Progress | None = None, tol: float = 1e-8) -> Eigenvalue:
    """lambda_max of a dense symmetric matrix by Lanczos (`largest`)."""
    from .spectra import kernel_operator

    return largest(kernel_operator(matrix), progress, tol)


def largest(operator, progress: Progress | None = None, tol: float = 1e-8) -> Eigenvalue:
    """lambda_max by Lanczos with a 32-vector basis: the top of a kernel spectrum is well separated, so
    few products (33 for H* at n = 20,000)."""
    values, _, converged, count = _arpack(operator, "LA", 1, tol, None, None, 32, progress or _silent,
                                          "Lanczos for lambda_max")
    return Eigenvalue(float(values[0]), converged, "lanczos", math.nan, count)


def cholesky_smallest(matrix: torch.Tensor, high: float, tol: float = LANCZOS_TOL,
                      progress: Progress | None = None) -> Eigenvalue:
    """lambda_min(H) = 1 / lambda_max(H^-1) from H = L L^T: Lanczos on v -> L^-T (L^-1 v).

    A factorisation that breaks down at some pivot shows that H is not numerically positive definite:
    its lambda_min is at or below the rounding level eps n lambda_max (`rounding_dominated`); the result
    is then NaN, flagged rounding, and nothing is iterated. matrix: float64 (n, n), kept; high: lambda_max.
    """
    progress = progress or _silent
    size = matrix.shape[0]
    stage = f"Cholesky factorisation, side {size}"
    progress(stage, 0, None)
    factor, info = torch.linalg.cholesky_ex(matrix)
    progress(stage, 1, 1)
    level = torch.finfo(torch.float64).eps * size * high
    if int(info) > 0:
        return Eigenvalue(math.nan, False, "cholesky", math.nan, 0, rounding=True,
                          reason=f"the Cholesky factorisation broke down at column {int(info)}: lambda_min is at or "
                                 f"below the rounding level eps n lambda_max = {level:.3g}")

    def solve(V: torch.Tensor) -> torch.Tensor:  # H^-1 V
        inner = torch.linalg.solve_triangular(factor, V, upper=False)
        return torch.linalg.solve_triangular(factor.T, inner, upper=True)

    from .spectra import KernelOperator

    inverse = KernelOperator(size, solve, lambda progress=None: torch.cholesky_inverse(factor), torch.float64,
                             matrix.device, "H^-1")
    values, vectors, converged, count = _arpack(inverse, "LA", 1, tol, None, None, INVERSE_NCV, progress,
                                                "Lanczos on H^-1 (triangular solves)")
    if len(values) == 0:
        return Eigenvalue(math.nan, False, "cholesky", math.nan, count)
    value, vector = 1.0 / float(values[0]), vectors[:, 0]
    product = (factor @ (factor.T @ torch.from_numpy(vector))).numpy()  # L (L^T v) = H v to rounding
    residual = float(np.linalg.norm(product - value * vector))
    return Eigenvalue(value, converged and math.isfinite(value), "cholesky", residual, count, vector)


def nystrom_rank(size: int, memory: int | None = None) -> int:
    """Landmarks for a kernel of side `size`: NYSTROM_RANK_SCALE sqrt(size), at least NYSTROM_RANK, at most half the
    side and as many as one (size, rank) float64 factor in NYSTROM_MEMORY of `memory` (default: free memory).
    sqrt: the set-up's O(size rank^2) flops then cost a few kernel passes (O(size^2)) at every size."""
    memory = available_memory(torch.device("cpu")) if memory is None else memory
    cap = int(NYSTROM_MEMORY * memory // (8 * size))
    return max(1, min(max(NYSTROM_RANK, math.ceil(NYSTROM_RANK_SCALE * math.sqrt(size))), size // 2, cap))


def nystrom_preconditioner(operator, rank: int | None = None, seed: int = 0,
                           progress: Progress | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """R -> (A + mu I)^-1 R for the rank-s Nystrom approximation A = C W^-1 C^T = U diag(lam) U^T of the
    kernel K (C = K[:, S], W = K[S, S], S s random landmarks, s = `nystrom_rank` unless given) and
    mu = lam_s, its smallest eigenvalue:

        (A + mu I)^-1 R = U ((lam + mu)^-1 - 1/mu) U^T R + R / mu = B M B^T R + R / mu.

    Stable form (Frangella, Tropp and Udell 2023, algorithm 2.1): W + nu I = L L^T with a shift nu of
    float64 rounding size, B = C L^-T = U Sigma V^T, lam = max(Sigma^2 - nu, 0). Sigma and V come from the
    eigenvalues of the Gram matrix B^T B = V Sigma^2 V^T, and U = B V Sigma^-1 is never formed:
    M = V diag(((lam + mu)^-1 - 1/mu) / Sigma^2) V^T (zero where lam = 0). B overwrites C, so the set-up
    holds one (side, s) factor, where an SVD holds three."""
    progress = progress or _silent
    size = operator.size
    rank = nystrom_rank(size) if rank is None else max(1, min(rank, size // 2))
    landmarks = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(size, rank, replace=False)))
    stage = f"Nystrom preconditioner, {rank} landmarks"
    progress(stage, 0, 3)
    B = operator.columns(landmarks).to(torch.float64)
    progress(stage, 1, 3)
    W = B[landmarks]
    nu = torch.finfo(torch.float64).eps * rank * float(W.diagonal().sum())
    factor, info = torch.linalg.cholesky_ex(W + nu * torch.eye(rank, dtype=torch.float64))
    while int(info) > 0:  # W is singular to rounding (landmarks that nearly coincide): a larger shift
        nu *= 10
        factor, info = torch.linalg.cholesky_ex(W + nu * torch.eye(rank, dtype=torch.float64))
    del W
    for rows in chunk_slices(size, max(1, (1 << 27) // (8 * rank))):  # B = C L^-T, in place, 128 MiB at a time
        B[rows] = torch.linalg.solve_triangular(factor, B[rows].T, upper=False).T
    progress(stage, 2, 3)
    squares, V = torch.linalg.eigh(B.T @ B)
    squares, V = squares.flip(0), V.flip(1)  # Sigma^2, descending
    lam = (squares - nu).clamp_min(0)
    positive = lam > 0
    mu = float(lam[positive][-1]) if bool(positive.any()) else nu
    weight = torch.where(positive, (1 / (lam + mu) - 1 / mu) / squares.where(positive, 1.0), 0.0)
    M = (V * weight) @ V.T
    progress(stage, 3, 3)

    def apply(R: torch.Tensor) -> torch.Tensor:
        return B @ (M @ (B.T @ R)) + R / mu

    leading = int(positive.sum().clamp_max(NYSTROM_BLOCK))
    apply.mu, apply.rank = mu, rank
    apply.leading = (B @ V[:, :leading]) / squares[:leading].sqrt()  # U's first columns
    return apply


def nystrom_smallest(operator, tol: float = NYSTROM_TOL, rank: int | None = None, block: int = NYSTROM_BLOCK,
                     iterations: int = NYSTROM_ITERATIONS, v0=None, progress: Progress | None = None,
                     precondition: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Eigenvalue:
    """lambda_min by `lobpcg_smallest` on K with `nystrom_preconditioner` T (built here unless given), from
    `block` vectors T g (g Gaussian; v0, e.g. a previous eigenvector, as the first), until the smallest Ritz
    pair's relative residual ||K v - mu v|| / mu is below tol. matvecs: kernel passes (products with a block
    of vectors, each about the cost of one product where forming the kernel's entries dominates), the last
    one recomputing the returned pair's residual from a fresh product."""
    progress = progress or _silent
    size = operator.size
    precondition = precondition or nystrom_preconditioner(operator, rank, progress=progress)
    block = max(1, min(block, size // 5))
    stage = f"LOBPCG (Nystrom-preconditioned, {block} vectors), side {size}"
    product = _float64_product(operator)
    start = torch.randn(size, block, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    start = precondition(start)
    if v0 is not None:
        start[:, 0] = torch.as_tensor(np.asarray(v0, dtype=np.float64).reshape(size))
    value, vector, passes, converged = lobpcg_smallest(
        product, precondition, start, tol, iterations, lambda done, expected: progress(stage, done, expected))
    result = _with_residual(operator, "nystrom", np.array([value]), vector.numpy()[:, None], converged, passes)
    result.converged = converged and math.isfinite(result.value) and result.residual <= tol * abs(result.value)
    progress(stage, result.matvecs, result.matvecs)
    return result


def nystrom_largest(operator, precondition, tol: float = 1e-8, block: int = NYSTROM_BLOCK,
                    iterations: int = NYSTROM_ITERATIONS, progress: Progress | None = None) -> Eigenvalue:
    """lambda_max by `lobpcg_smallest` on -K from the leading eigenvectors of the Nystrom approximation
    (`nystrom_preconditioner`'s, which already span the top of the spectrum): a few kernel passes, where
    Lanczos from a random vector took 33 at n = 20,000."""
    progress = progress or _silent
    block = max(1, min(block, operator.size // 5))
    stage = f"LOBPCG for lambda_max ({block} vectors), side {operator.size}"
    product = _float64_product(operator)
    value, vector, passes, converged = lobpcg_smallest(
        lambda V: -product(V), lambda R: R, precondition.leading[:, :block].clone(), tol, iterations,
        lambda done, expected: progress(stage, done, expected))
    progress(stage, passes, passes)
    return Eigenvalue(-value, converged and math.isfinite(value), "nystrom", math.nan, passes, vector.numpy())


def _float64_product(operator) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda V: operator.matvec(V.to(operator.device, operator.dtype)).to("cpu", torch.float64)


def lobpcg_smallest(product: Callable[[torch.Tensor], torch.Tensor], precondition: Callable[[torch.Tensor], torch.Tensor],
                    start: torch.Tensor, tol: float, iterations: int,
                    report: Callable[[int, int], None] = lambda passes, expected: None
                    ) -> tuple[float, torch.Tensor, int, bool]:
    """The smallest eigenpair of a symmetric positive semi-definite K by block LOBPCG (Knyazev 2001) with
    soft locking: the b = start.shape[1] vectors search together, but only the first Ritz pair must reach
    ||K x - theta x|| <= tol theta, so the others only widen the search space (on relu's H* at n = 5000,
    8 vectors took 51 kernel passes where one took 241).

    Each iteration forms W = T R from the residuals R = K X - X Theta (T the preconditioner), makes it
    orthonormal and orthogonal to X, computes K W (the one product of the iteration: K X and K P follow from
    the same linear combinations as X and P), and takes the b smallest Ritz pairs of K on span[X, W, P]
    (Rayleigh-Ritz; P = the part of the new X outside the old one). Bases are made orthonormal by
    `_orthonormal` (SVQB: directions of relative weight below 1e-10 are dropped instead of dividing by them).
    report(passes, expected) after every kernel pass: expected, the passes the residual's decay over the last
    ten projects to convergence (at most `iterations` + 1), for a progress bar's time left.
    Returns (theta, x, kernel passes, converged); theta is a Rayleigh quotient, never below lambda_min."""
    X, _ = torch.linalg.qr(start)
    KX = product(X)
    passes, size, history = 1, X.shape[1], []
    report(passes, iterations + 1)
    theta, Z = torch.linalg.eigh(_symmetric(X.T @ KX))
    X, KX = X @ Z, KX @ Z
    P = KP = None
    for _ in range(iterations):
        R = KX - X * theta
        if not torch.isfinite(theta).all():
            return math.nan, X[:, 0], passes, False
        relative = float(R[:, 0].norm()) / abs(float(theta[0]))
        if relative <= tol:
            return float(theta[0]), X[:, 0], passes, True
        history.append(math.log(relative))
        W = precondition(R)
        for _ in range(2):  # twice: one projection loses orthogonality to X when W is nearly in span X
            W = W - X @ (X.T @ W)
        W, _ = _orthonormal(W)
        KW = product(W)
        passes += 1
        report(passes, _expected_passes(history, math.log(tol), passes, iterations + 1))
        C, KC = (W, KW) if P is None else _orthonormal(torch.cat([W, P], 1), torch.cat([KW, KP], 1))
        overlap = X.T @ C
        C, KC = _orthonormal(C - X @ overlap, KC - KX @ overlap)
        S, KS = torch.cat([X, C], 1), torch.cat([KX, KC], 1)
        values, Z = torch.linalg.eigh(_symmetric(S.T @ KS))
        theta, Z = values[:size], Z[:, :size]
        P, KP = C @ Z[size:], KC @ Z[size:]
        X, KX = S @ Z, KS @ Z
    return float(theta[0]), X[:, 0], passes, False


def _expected_passes(history: list[float], target: float, passes: int, most: int, window: int = 10) -> int:
    """Passes to convergence if log residual keeps falling at its mean rate over the last `window` (`most`
    while it does not fall, or before `window` passes)."""
    if len(history) <= window or not history[-window - 1] > history[-1]:
        return most
    rate = (history[-window - 1] - history[-1]) / window
    return min(most, passes + math.ceil(max(0.0, history[-1] - target) / rate))


def _symmetric(G: torch.Tensor) -> torch.Tensor:
    return (G + G.T) / 2


def _orthonormal(S: torch.Tensor, KS: torch.Tensor | None = None, drop: float = 1e-10):
    """(Q, K Q) for an orthonormal basis Q = S T of span S by SVQB (Stathopoulos and Wu 2002): with D the
    inverse column norms, D S^T S D = U diag(l) U^T and T = D U_kept diag(l_kept)^-1/2, keeping l > drop
    max l. KS = K S (the same T applies), or None."""
    gram = S.T @ S
    scale = gram.diagonal().clamp_min(torch.finfo(S.dtype).tiny).rsqrt()
    weights, U = torch.linalg.eigh(scale[:, None] * gram * scale[None, :])
    kept = weights > drop * weights[-1]
    T = scale[:, None] * U[:, kept] * weights[kept].rsqrt()[None, :]
    return S @ T, (None if KS is None else KS @ T)


def lanczos(operator, which: str, tol: float = LANCZOS_TOL, maxiter: int | None = None, v0=None,
            progress: Progress | None = None) -> Eigenvalue:
    """One eigenpair by Lanczos with growing bases (LANCZOS_BASES), `maxiter` restarts each; LOBPCG's best
    estimate where ARPACK returns nothing."""
    progress = progress or _silent
    cap = max(16, available_memory(torch.device("cpu")) // (4 * 8 * operator.size))
    bases = sorted({min(ncv, operator.size, cap) for ncv in LANCZOS_BASES})
    restarts = maxiter or LANCZOS_RESTARTS
    budget = sum(ncv * (restarts + 1) for ncv in bases)  # ARPACK's products per basis are about ncv (restarts + 1)
    total, stage = 0, f"Lanczos, side {operator.size}"

    def report(stage_name: str, done: float, _total) -> None:
        progress(stage, min(total + done, budget), budget)

    for ncv in bases:
        values, vectors, converged, count = _arpack(operator, which, 1, tol, restarts, v0, ncv, report, stage)
        total += count
        if converged:
            break
    progress(stage, budget, budget)
    method = "lanczos"
    if len(values) == 0:  # ARPACK returns nothing unconverged: take LOBPCG's best upper estimate
        method, (values, vectors, converged, count) = "lobpcg", _lobpcg(operator, which, tol, v0, progress=progress)
        total += count
    return _with_residual(operator, method, values, vectors, converged, total)


def _with_residual(operator, method: str, values, vectors, converged: bool, count: int) -> Eigenvalue:
    value, vector = float(values[0]), vectors[:, 0]
    product = operator.matvec(torch.from_numpy(np.ascontiguousarray(vector[:, None])).to(operator.device,
                                                                                         operator.dtype))
    residual = float(np.linalg.norm(product.to("cpu", torch.float64).numpy()[:, 0] - value * vector))
    return Eigenvalue(value, converged and math.isfinite(value), method, residual, count + 1, vector)


def _numpy_product(operator, counter: list, report: Callable[[int], None]):
    def product(V: np.ndarray) -> np.ndarray:
        block = torch.from_numpy(np.ascontiguousarray(np.asarray(V, dtype=np.float64).reshape(operator.size, -1)))
        counter[0] += block.shape[1]
        out = operator.matvec(block.to(operator.device, operator.dtype)).to("cpu", torch.float64).numpy()
        report(counter[0])
        return out.reshape(V.shape)
    return product


def _lobpcg(operator, which: str, tol: float, v0, iterations: int = 200, progress: Progress | None = None):
    """scipy lobpcg with one vector: (values, vectors, converged, matvecs); its value is the best
    Rayleigh quotient reached (an upper bound for the smallest eigenvalue) even without convergence."""
    from scipy.sparse.linalg import lobpcg

    counter, stage = [0], f"LOBPCG, side {operator.size}"
    # one block product per iteration, about three columns each: the estimate is an upper bound
    product = _numpy_product(operator, counter, lambda done: (progress or _silent)(stage, min(done, 3 * iterations),
                                                                                      3 * iterations))
    start = np.random.default_rng(0).standard_normal((operator.size, 1)) if v0 is None else \
        np.asarray(v0, dtype=np.float64).reshape(operator.size, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values, vectors, history = lobpcg(product, start, largest=which != "SA", tol=None, maxiter=iterations,
                                          retResidualNormsHistory=True)
    scale = abs(float(values[0])) or 1.0
    converged = bool(history) and float(np.max(history[-1])) <= tol * scale
    return values, vectors, converged, counter[0]


def _arpack(operator, which: str, k: int, tol: float, maxiter: int | None, v0, ncv: int,
            progress: Progress | None = None, stage: str = "Lanczos"):
    """scipy eigsh (implicitly restarted Lanczos) on the operator: (values, vectors, converged, matvecs).
    progress(stage, products, at most ncv (maxiter + 1) products) after every product (total None without
    maxiter: ARPACK's own limit, 10 n restarts, says nothing of the time left)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    counter = [0]
    ncv = min(operator.size, max(ncv, 2 * k + 1))
    bound = None if maxiter is None else ncv * (maxiter + 1)
    product = _numpy_product(operator, counter, lambda done: (progress or _silent)(
        stage, done if bound is None else min(done, bound), bound))
    linear = LinearOperator((operator.size, operator.size), matvec=product, matmat=product, dtype=np.float64)
    start = None if v0 is None else np.asarray(v0, dtype=np.float64).reshape(operator.size)
    try:
        values, vectors = eigsh(linear, k=k, which=which, tol=tol, maxiter=maxiter, v0=start, ncv=ncv)
        return values, vectors, True, counter[0]
    except ArpackNoConvergence as error:
        return error.eigenvalues, error.eigenvectors, False, counter[0]
