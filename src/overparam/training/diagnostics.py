"""The theorems checked on a training run (docs/mathematics.md#predictions): a `train` callback and its verdict.

`KernelDiagnostics(every=K)` passed to `train(..., callbacks=[diagnostics])` records, every K steps
(and at the last step, when `check` is called):

    kernel_step          the step t
    lambda_min           lambda_min(H(W(t))), H = Theta / (m kappa^2)
    lambda_converged     whether that eigenvalue met its tolerance (always true when dense)
    kernel_drift         ||H(W(t)) - H(W(0))||_2
    kernel_movement      max_r ||w_r(t) - w_r(0)||_2
    observed_rate        (||F(t) - y||^2 / ||F(t') - y||^2)^(1 / (t - t')), t' the previous record
    predicted_rate       1 - eta_eff lambda / 2, eta_eff = lr m kappa^2 (DZPS19)

into History.extra. lambda is lambda_min(H*) of the infinite-width kernel (reference="infinite"),
lambda_min(H(W(0))) (reference="initial"), or a number. `check(history)` then gives the
`TheoryCheck`: did linear convergence hold, did the kernel stay within lambda/4 of its start
(and above lambda/2), what radius did the weights reach.

Kernel sides n k <= dense_limit use the dense kernel and eigvalsh; above, matrix-free Lanczos on
the O(ndm) product Theta v, warm-started from the previous record's eigenvector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import theory
from ..kernels.eigensolvers import Eigenvalue
from ..kernels.spectra import kernel_operator, lambda_min, spectral_norm
from ..kernels.finite import ntk

COLUMNS = ("kernel_step", "lambda_min", "lambda_converged", "kernel_drift", "kernel_movement",
           "observed_rate", "predicted_rate")
#: Dense kernels up to this side in diagnostics (one eigvalsh per record; larger: Lanczos).
DIAGNOSTICS_DENSE_LIMIT = 2048


@dataclass
class TheoryCheck:
    """What the theorems of docs/mathematics.md#predictions said about one run, and whether it held.

    linear_convergence: ||F(t) - y||^2 <= (1 - eta_eff lambda/2)^t ||F(0) - y||^2 (+ rounding floor)
    at every recorded step. kernel_within_quarter: max_t ||H(W(t)) - H(W(0))||_2 <= lambda/4.
    kernel_above_half: min_t lambda_min(H(W(t))) >= lambda/2. radius: max_r ||w_r(T) - w_r(0)||_2;
    dzps19_radius: R' = sqrt(n) ||y - F(0)|| / (m kappa lambda), an order (where DZPS19 proves the width: relu).
    """

    reference_lambda: float
    lambda_source: str
    eta_eff: float
    predicted_rate: float
    observed_rate: float
    worst_rate: float
    linear_convergence: bool
    bound_violations: int
    min_lambda: float
    kernel_above_half: bool
    max_kernel_drift: float
    kernel_within_quarter: bool
    radius: float
    dzps19_radius: float | None
    steps: int
    records: int
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        """All three: linear convergence, drift <= lambda/4, lambda_min(H(W(t))) >= lambda/2."""
        return self.linear_convergence and self.kernel_within_quarter and self.kernel_above_half

    def summary(self) -> dict:
        """Plain data for JSON summaries (keys as the field names, plus `holds`)."""
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__}, "holds": self.holds}


class KernelDiagnostics:
    """`train` callback recording the kernel quantities of docs/mathematics.md#predictions every `every` steps."""

    def __init__(self, every: int = 10, reference: str | float = "infinite",
                 dense_limit: int = DIAGNOSTICS_DENSE_LIMIT, tol: float = 1e-8) -> None:
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if isinstance(reference, str) and reference not in ("infinite", "initial"):
            raise ValueError(f"reference must be 'infinite', 'initial' or a number, got {reference!r}")
        if not isinstance(reference, str) and not (reference > 0 and math.isfinite(reference)):
            raise ValueError(f"a numeric reference lambda must be positive and finite, got {reference!r}")
        self.every = int(every)
        self.reference = reference
        self.dense_limit = int(dense_limit)
        self.tol = tol
        self.reference_lambda: float | None = None
        self.lambda_source: str | None = None
        self.notes: list[str] = []
        self._state = None
        self._initial = None  # H(W(0)): a dense matrix or a KernelOperator
        self._previous: tuple[int, float] | None = None
        self._vectors: dict[str, np.ndarray | None] = {"min": None, "drift": None}

    # --------------------------------------------------------------------- callback

    def __call__(self, state) -> None:
        if state.step % self.every == 0:
            for name, value in self._measure(state).items():
                state.extra.setdefault(name, []).append(value)
        self._state = state

    def _measure(self, state) -> dict:
        """One record (a value per column of COLUMNS) at the state's weights."""
        net, X = state.net, state.X
        if self._initial is None:
            self._start(state)
        dense = net.out_dim * X.shape[0] <= self.dense_limit
        if dense:
            current = ntk(net, X)
            low = lambda_min(current, dense_limit=self.dense_limit)
            drift = spectral_norm(current - self._initial, dense_limit=self.dense_limit)
        else:
            current = kernel_operator(net.forward_pass(X, keep=False))
            low = lambda_min(current, solver="lanczos", tol=self.tol, v0=self._vectors["min"])
            drift = spectral_norm(current - self._initial, dense_limit=0, tol=self.tol, v0=self._vectors["drift"])
            self._vectors = {"min": low.vector, "drift": drift.vector}
        residual2 = float(state.residual.square().sum())
        rate = float("nan")
        if self._previous is not None and state.step > self._previous[0] and self._previous[1] > 0:
            rate = (residual2 / self._previous[1]) ** (1.0 / (state.step - self._previous[0]))
        self._previous = (state.step, residual2)
        eta_eff = state.lr * net.width * net.kappa**2
        return {
            "kernel_step": state.step, "lambda_min": low.value, "lambda_converged": low.converged,
            "kernel_drift": drift.value,
            "kernel_movement": float((net.W - state.W0).norm(dim=1).max()),
            "observed_rate": rate, "predicted_rate": theory.linear_rate(eta_eff, self.reference_lambda),
        }

    def _start(self, state) -> None:
        """H(W(0)) and the reference lambda, at the first record (W = W0 there)."""
        net, X = state.net, state.X
        if net.out_dim * X.shape[0] <= self.dense_limit:
            self._initial = ntk(net, X)
        else:
            initial = net.copy()
            initial.W = state.W0
            self._initial = kernel_operator(initial.forward_pass(X, keep=False))
        if not isinstance(self.reference, str):
            self.reference_lambda, self.lambda_source = float(self.reference), "given"
            return
        if self.reference == "infinite":
            try:
                value = lambda_min(net.activation, X.cpu(), sigma=net.sigma, dense_limit=self.dense_limit,
                                   tol=self.tol)
            except OverflowError as error:  # H* is infinite where a finite network is not
                value = Eigenvalue(math.inf, False, "dense", math.nan, 0)
                self.notes.append(str(error).split(";")[0])
            finite = math.isfinite(value.value)
            if value.value > 0 and finite and not value.rounding:
                self.reference_lambda, self.lambda_source = value.value, "H*"
                if not value.converged:
                    self.notes.append(f"lambda_min(H*) did not converge (residual {value.residual:.2e})")
                return
            why = "is below the rounding level of its spectrum" if finite and value.rounding else \
                "is not positive and finite"
            self.notes.append(f"lambda_min(H*) = {value.value:.3g} {why}; using lambda_min(H(W(0))) instead")
        value = lambda_min(self._initial, dense_limit=self.dense_limit, tol=self.tol)
        self.reference_lambda, self.lambda_source = value.value, "H(W(0))"
        if value.rounding:
            self.notes.append(f"lambda_min(H(W(0))) = {value.value:.3g} is below the rounding level of its spectrum: "
                              "the theory check's lambda is not a measurement")

    # --------------------------------------------------------------------- verdict

    def check(self, history) -> TheoryCheck:
        """The verdict on a finished run; records the last step first if it was not a multiple
        of `every` (call it right after `train`, while the net holds the final weights)."""
        if self._state is None or "kernel_step" not in history.extra:
            raise ValueError("no diagnostics were recorded: pass this object in train(..., callbacks=[...])")
        state = self._state
        notes = list(self.notes)
        if history.status == "diverged":
            notes.append("the run diverged: the last kernel record is the last one before it")
        elif history.extra["kernel_step"][-1] != state.step:
            row = self._measure(state)
            history.extra.update({name: np.append(history.extra[name], row[name]) for name in COLUMNS})
        extra = history.extra
        lam = self.reference_lambda
        eta_eff = history.lr * state.net.width * state.net.kappa**2
        predicted = theory.linear_rate(eta_eff, lam)
        steps = np.asarray(history.step, dtype=float)
        residual2 = np.asarray(history.residual_norm, dtype=float) ** 2
        # rounding floor of ||F - y||: the bound may fall below what the dtype can resolve
        floor2 = (1e3 * torch.finfo(state.net.dtype).eps * (math.sqrt(residual2[0]) + float(state.y.norm()))) ** 2
        bound = np.clip(predicted, 0.0, None) ** steps * residual2[0]
        violations = int(np.sum(residual2 > bound * (1 + 1e-9) + floor2))
        observed = float("nan")
        if steps[-1] > 0 and residual2[0] > 0:
            observed = float((residual2[-1] / residual2[0]) ** (1.0 / steps[-1]))
        rates = np.asarray(extra["observed_rate"], dtype=float)
        rates = rates[np.isfinite(rates)]
        if history.optimizer != "gd":
            notes.append(f"optimizer {history.optimizer!r}: the theorems are about full-batch GD")
        if not np.all(extra["lambda_converged"]):
            notes.append("lambda_min(H(W(t))) did not converge at every record")
        if predicted <= 0:
            notes.append(f"eta_eff lambda / 2 = {1 - predicted:.3g} >= 1: the step is beyond the theorems' range")
        lowest = float(np.min(extra["lambda_min"]))
        drift = float(np.max(extra["kernel_drift"]))
        radius = float(history.max_movement[-1])
        dzps19 = any(work == "DZPS19" for work, _ in theory.proven_widths(state.net.activation, state.net.init))
        return TheoryCheck(
            reference_lambda=lam, lambda_source=self.lambda_source, eta_eff=eta_eff, predicted_rate=predicted,
            observed_rate=observed, worst_rate=float(rates.max()) if len(rates) else float("nan"),
            linear_convergence=violations == 0, bound_violations=violations, min_lambda=lowest,
            kernel_above_half=lowest >= lam / 2, max_kernel_drift=drift, kernel_within_quarter=drift <= lam / 4,
            radius=radius,
            dzps19_radius=theory.dzps19_radius(state.X.shape[0], state.net.width, math.sqrt(residual2[0]), lam,
                                               state.net.kappa) if dzps19 and lam > 0 else None,
            steps=int(steps[-1]), records=len(extra["kernel_step"]), notes=notes,
        )

    def table(self, history) -> dict[str, np.ndarray]:
        """The recorded columns (one row per record), e.g. for a Parquet file."""
        return {name: np.asarray(history.extra[name]) for name in COLUMNS if name in history.extra}
