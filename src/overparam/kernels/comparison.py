"""The NTK of one dataset three ways (docs/mathematics.md#ntk): the finite kernel H(W(0)) of one network, its Monte
Carlo mean over initialisations, and the infinite-width H*; their spectra and distance.

relative_distance = ||K - H*||_2 / lambda_max(H*) with K the finite (or Monte Carlo mean) kernel;
max_z = max_ij |mean_ij - H*_ij| / se_ij, how many standard errors the Monte Carlo mean is from H*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import eigensolvers
from .. import resources
from .eigensolvers import DENSE_LIMIT, Progress, rounding_dominated
from ..models import TwoLayerNet
from .spectra import KernelOperator, kernel_operator, leading_eigenvalues, spectral_norm
from .finite import monte_carlo_ntk, pass_ntk


@dataclass
class Spectrum:
    """lambda_min, lambda_max and condition number of one kernel, and how they were found.

    method "dense": all eigenvalues from one eigvalsh (`eigenvalues` holds them, descending);
    "cholesky", "lanczos", "lobpcg" or "nystrom": lambda_min by that solver (`eigensolvers`), `eigenvalues` the
    leading 64 (cholesky and nystrom: lambda_max alone); method_reason: why that solver. rounding: lambda_min is
    below the spectrum's rounding level (`eigensolvers.rounding_dominated`), so neither it nor the
    condition number can be trusted (lambda_min NaN: a Cholesky factorisation broke down, which shows
    it without a value).
    """

    lambda_min: float
    lambda_max: float
    method: str
    converged: bool
    lambda_min_residual: float
    rounding: bool
    eigenvalues: np.ndarray = field(repr=False)
    method_reason: str = ""

    @property
    def condition_number(self) -> float:
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else math.inf

    def as_dict(self) -> dict:
        return {"lambda_min": self.lambda_min, "lambda_max": self.lambda_max,
                "condition_number": self.condition_number, "method": self.method,
                "method_reason": self.method_reason, "converged": self.converged,
                "lambda_min_residual": self.lambda_min_residual, "rounding": self.rounding}


def spectrum(operator: KernelOperator, dense_limit: int = DENSE_LIMIT, solver: str = "auto",
             progress: Progress | None = None) -> Spectrum:
    """The `Spectrum` of a kernel operator by the solver `eigensolvers.choose` picks: every eigenvalue
    from eigvalsh (dense), or the leading 64 by Lanczos and lambda_min by Cholesky (on the matrix
    formed once), Lanczos or LOBPCG."""
    choice = eigensolvers.choose(operator.size, solver, dense_limit, columns=operator.columns is not None)
    if choice.method == "dense":
        values = eigensolvers.dense_eigenvalues(operator.dense(progress=progress), progress).flip(0).cpu().numpy()
        low, high = float(values[-1]), float(values[0])
        rounding = rounding_dominated(low, high, operator.size, operator.dtype)
        return Spectrum(low, high, "dense", math.isfinite(low), 0.0, rounding, values, choice.reason)
    if choice.method == "cholesky":  # formed once; lambda_max alone (the leading 64 took ~5 min at n = 20,000)
        operator = kernel_operator(operator.dense(progress=progress).to(torch.float64))
        values = np.array([eigensolvers.largest_of_matrix(operator.dense(), progress).value])
    precondition = None
    if choice.method == "nystrom":  # lambda_max alone, from the preconditioner's leading eigenvectors
        precondition = eigensolvers.nystrom_preconditioner(operator, progress=progress)
        values = np.array([eigensolvers.nystrom_largest(operator, precondition, progress=progress).value])
    elif choice.method != "cholesky":
        values = leading_eigenvalues(operator, dense_limit=0, progress=progress)
    high = float(values[0])
    smallest = eigensolvers.smallest(operator, choice, high=high, progress=progress, precondition=precondition)
    low = smallest.value
    rounding = smallest.rounding or rounding_dominated(low, high, operator.size, operator.dtype)
    return Spectrum(low, high, smallest.method, smallest.converged and math.isfinite(low), smallest.residual,
                    rounding, values, smallest.reason if smallest.method == choice.method else
                    f"{smallest.reason}; ARPACK returned nothing, so LOBPCG's best estimate")


@dataclass
class KernelComparison:
    """What `compare_kernels` found. kernel: "finite", "monte_carlo" or "infinite" (which one
    `finite` describes, or H* alone); width and kappa of the finite network; monte_carlo:
    samples, max/mean standard error and max_z."""

    kernel: str
    finite: Spectrum | None
    infinite: Spectrum | None
    width: int | None = None
    kappa: float | None = None
    relative_distance: float | None = None
    monte_carlo: dict | None = None

    @property
    def rounding(self) -> bool:
        """Some spectrum shown is dominated by rounding."""
        return any(s.rounding for s in (self.finite, self.infinite) if s is not None)

    def spectra(self) -> dict[str, np.ndarray]:
        """Plot label -> eigenvalues (descending)."""
        out = {}
        if self.finite is not None:
            label = (f"mean H(W(0)), m = {self.width}, {self.monte_carlo['samples']} inits"
                     if self.kernel == "monte_carlo" else f"H(W(0)), m = {self.width}")
            out[label] = self.finite.eigenvalues
        if self.infinite is not None:
            out["H* (infinite width)"] = self.infinite.eigenvalues
        return out

    def as_dict(self) -> dict:
        """The finite kernel's numbers at the top level (H*'s under "infinite"), or H*'s alone."""
        main = self.finite or self.infinite
        out = {"kernel": self.kernel, **main.as_dict()}
        if self.finite is not None:
            out.update(width=self.width, kappa=self.kappa)
            if self.infinite is not None:
                out.update(infinite=self.infinite.as_dict(), relative_distance=self.relative_distance)
        if self.monte_carlo is not None:
            out["monte_carlo"] = dict(self.monte_carlo)
        return out


def compare_kernels(activation, X, *, out_dim: int = 1, width: int | None = None, infinite: bool = False,
                    monte_carlo: int | None = None, scale=None, init: str = "independent", sigma: float = 1.0,
                    seed: int = 0, dtype: str = "float64", device: str = "cpu",
                    dense_limit: int = DENSE_LIMIT, solver: str = "auto",
                    progress: Progress | None = None) -> KernelComparison:
    """Spectra of H(W(0)) (width m, default 1024; with monte_carlo=S the mean of S initialisations)
    and/or of I_k (x) H* (infinite=True), and their distance when both are asked for.

    The finite kernel is computed unless only infinite=True is given. solver: lambda_min's eigensolver
    (`eigensolvers.SOLVERS`); progress(stage, done, total) as the work advances.
    """
    eigensolvers.choose(1, solver, columns=True)  # an unknown solver name fails before any work
    if monte_carlo is not None and monte_carlo < 2:
        raise ValueError(f"--monte-carlo needs at least 2 samples, got {monte_carlo}")
    if width is not None and width < 1:
        raise ValueError(f"--width must be a positive integer, got {width}")
    if dense_limit < 0:
        raise ValueError(f"--dense-limit must be >= 0 (0: always matrix-free Lanczos), got {dense_limit}")
    X = torch.as_tensor(X)
    n = X.shape[0]
    finite = width is not None or monte_carlo is not None or not infinite
    width = width or 1024
    _require_memory(n, X.shape[1], out_dim, width if finite else 0, monte_carlo, dense_limit, device)
    result = KernelComparison("infinite", None, None)
    if finite:
        net = TwoLayerNet(X.shape[1], width, out_dim, activation, scale=scale, init=init, sigma=sigma, seed=seed,
                          dtype=dtype, device=device)
        result.kernel, result.width, result.kappa = "finite", width, net.kappa
        if monte_carlo is not None:
            estimate = monte_carlo_ntk(activation, X, width, monte_carlo, out_dim=out_dim, scale=scale, init=init,
                                       sigma=sigma, seed=seed, dtype=dtype, device=device,
                                       progress=progress)
            result.kernel = "monte_carlo"
            result.monte_carlo = {"samples": monte_carlo,
                                  "max_standard_error": float(estimate.standard_error.max()),
                                  "mean_standard_error": float(estimate.standard_error.mean())}
            finite_kernel = estimate.mean.to(torch.float64)
        else:
            finite_kernel = kernel_operator(net, X) if n * out_dim > dense_limit else \
                pass_ntk(net.forward_pass(X, keep=False, output=False), progress=progress).to(torch.float64)
        finite_operator = kernel_operator(finite_kernel)
        result.finite = spectrum(finite_operator, dense_limit, solver, progress)
    if infinite:
        limit = kernel_operator(activation, X, sigma=sigma, out_dim=out_dim)
        result.infinite = spectrum(limit, dense_limit, solver, progress)
        if finite:
            gap = spectral_norm(finite_operator - limit, dense_limit=dense_limit, progress=progress)
            result.relative_distance = gap.value / result.infinite.lambda_max
            if monte_carlo is not None:
                result.monte_carlo["max_z"] = _max_z(finite_kernel, limit.dense(), estimate.standard_error)
    return result


def _require_memory(n: int, d: int, k: int, width: int, monte_carlo: int | None, dense_limit: int, device) -> None:
    """`resources.require` for the network pass of m = width neurons (none for H* alone: width 0) plus
    the dense kernels (k n <= dense_limit, or a Monte Carlo mean, whose mean, squares and draw are three more)."""
    side = n * k
    dense = monte_carlo is not None or side <= dense_limit
    needed = resources.network_bytes(n, d, k, width, 8) if width else 0
    what = f"m = {width} neurons on n = {n} points" if width else ""
    advice = "use a smaller --n" + (" or --width" if width else "")
    if dense:
        copies = resources.DENSE_KERNEL_COPIES + (3 if monte_carlo is not None else 0)
        needed += resources.dense_kernel_bytes(side, copies)
        what = f"the dense {side} x {side} kernels" + (f" of {what}" if what else "")
        if monte_carlo is None:
            advice += f", or --dense-limit below n k = {side} (matrix-free Lanczos)"
    resources.require(needed, device, what, advice)


def _max_z(mean: torch.Tensor, limit: torch.Tensor, standard_error: torch.Tensor) -> float:
    """max_ij |mean_ij - H*_ij| / se_ij over the entries with se_ij > 0 (NaN when there are none)."""
    se = standard_error.to(torch.float64)
    mask = se > 0
    return float(((mean - limit.to(mean)).abs()[mask] / se[mask]).max()) if mask.any() else math.nan
