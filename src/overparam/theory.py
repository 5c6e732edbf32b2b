"""What the convergence theorems predict (docs/mathematics.md#predictions), as functions of n, lambda, delta, epsilon.

Every width, step and iteration count here is an ORDER OF GROWTH with its constant set to
c = 1 (override `c`): the papers' constants are not reproduced, so the numbers say how the
requirements scale and how the works compare, never what width is sufficient. The exceptions
are labelled: `capacity_width` is an exact necessary condition, `linear_rate` the exact rate of
the DZPS19 statement given lambda and eta_eff.

lambda is lambda_min(H*) of the normalised kernel H = Theta / (m kappa^2), delta the failure
probability, epsilon the target ||F(W(T), X) - y||_2, eta the step in H's units (eta_eff).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import activations

#: The constant in front of every order of growth (no paper's constant is reproduced).
C = 1.0
WORKS = ("DZPS19", "SY19", "MOSW22", "GMS23", "SMX24")


def _check(n: float | None = None, lam: float | None = None, delta: float | None = None,
           epsilon: float | None = None) -> None:
    if n is not None and not (n >= 1):
        raise ValueError(f"n must be >= 1, got {n!r}")
    if lam is not None and not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be positive and finite, got {lam!r}")
    if lam is not None and lam**4 == 0:  # DZPS19's n^6 / (lambda^4 delta^3) would divide by an underflowed 0
        raise ValueError(f"lambda = {lam!r} is too small: lambda^4 underflows to 0, so the proven widths are "
                         "beyond floating point; give lambda >= 1e-77")
    if delta is not None and not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if epsilon is not None and not (epsilon > 0):
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")


def dzps19_width(n: float, lam: float, delta: float, c: float = C) -> float:
    """DZPS19 (relu, independent init): m = Omega(n^6 / (lambda^4 delta^3)), order of growth."""
    _check(n, lam, delta)
    return c * n**6 / (lam**4 * delta**3)


def dzps19_step(n: float, lam: float, c: float = C) -> float:
    """DZPS19 step eta = O(lambda / n^2) (in H's units, i.e. eta_eff), order of growth."""
    _check(n, lam)
    return c * lam / n**2


def iterations(eta_eff: float, lam: float, epsilon: float, c: float = C) -> float:
    """T = O((1 / (eta lambda)) log(1 / epsilon)) steps to ||F - y||_2 <= epsilon (DZPS19), order."""
    _check(lam=lam, epsilon=epsilon)
    if not eta_eff > 0:
        raise ValueError(f"eta_eff must be positive, got {eta_eff!r}")
    return c * math.log(max(1.0 / epsilon, 1.0)) / (eta_eff * lam)


def sy19_width(n: float, lam: float, delta: float, c: float = C) -> float:
    """SY19 (relu): roughly n^4; the form lambda^-4 n^4 log^3(n / delta) is unverified (docs/mathematics.md#predictions)."""
    _check(n, lam, delta)
    return c * n**4 * math.log(n / delta) ** 3 / lam**4


def mosw22_width(n: float, c: float = C) -> float:
    """MOSW22 (relu, coupled init): roughly n^2 (their lambda and delta factors are not reproduced)."""
    _check(n)
    return c * n**2


def gms23_width(n: float, delta: float, c: float = C) -> float:
    """GMS23 (exp): m = Omega(n^{2+o(1)} log(n / delta)) [paper]; returns n^2 log(n / delta) times
    the n^{o(1)} factor `subpolynomial_factor`."""
    _check(n, delta=delta)
    base = n**2 * math.log(n / delta)
    return c * base * subpolynomial_factor(n, base, delta)


def smx24_width(n: float, delta: float, c: float = C) -> float:
    """SMX24 (softmax, k = d outputs): poly(n, d), the same order in n as exp [paper summary];
    the dependence on d is not stated there, so none is applied."""
    return gms23_width(n, delta, c)


def subpolynomial_factor(n: float, m: float, delta: float) -> float:
    """The n^{o(1)} of GMS23, our reading: max_{i,r} e^{<w_r, x_i>} <= e^{sqrt(2 log(n m / delta))}
    for w ~ N(0, I) and ||x|| <= 1 (docs/mathematics.md#predictions)."""
    return math.exp(math.sqrt(2 * math.log(max(n * m / delta, 1.0))))


def kernel_width(n: float, lam: float, delta: float, c: float = C) -> float:
    """Width at which ||H(W(0)) - H*||_2 <= lambda / 4 by matrix Chernoff (SY19, docs/mathematics.md#thresholds):
    m ~ n^2 log(n / delta) / lambda^2, order of growth (times n^{o(1)} for exp and softmax)."""
    _check(n, lam, delta)
    return c * n**2 * math.log(n / delta) / lam**2


def capacity_width(n: int, d: int, k: int = 1) -> int:
    """EXACT necessary width for interpolation at every step: Theta has rank <= m d, so m d >= n k."""
    if d < 1 or k < 1:
        raise ValueError(f"d and k must be >= 1, got d = {d}, k = {k}")
    return math.ceil(n * k / d)


def linear_rate(eta_eff: float, lam: float) -> float:
    """DZPS19 per-step contraction of ||F - y||^2: (1 - eta_eff lambda / 2), exact given its inputs."""
    return 1.0 - eta_eff * lam / 2


def dzps19_radius(n: int, width: int, initial_residual: float, lam: float, kappa: float | None = None) -> float:
    """DZPS19 radius R' = sqrt(n) ||y - F(0)||_2 / (m kappa lambda) (= sqrt(n)||y - F(0)|| / (sqrt(m)
    lambda) at kappa = 1/sqrt(m)): how far a relu neuron moves, order of growth (constant 4 dropped)."""
    _check(n, lam)
    kappa = width ** -0.5 if kappa is None else kappa
    return math.sqrt(n) * initial_residual / (width * kappa * lam)


def proven_widths(activation, init: str | None = None) -> list[tuple[str, str]]:
    """(work, p) for each paper that proves m ~ n^p suffices for this activation (a name or an
    `Activation`) and init (None: any), from the activation's record; [] where none does (docs/mathematics.md#predictions)."""
    return [(work, power) for work, power, inits in activations.resolve(activation).proven_widths
            if init is None or init in inits]


def dzps19_perturbation_radius(n: float, lam: float, delta: float, c: float = C) -> float:
    """DZPS19 Lemma 3.2: ||H(W) - H(W(0))||_2 < lambda/4 while every ||w_r - w_r(0)|| <= R, R of order
    delta lambda / n^2 (relu); order of growth with constant c (docs/mathematics.md#perturbation)."""
    _check(n, lam, delta)
    return c * delta * lam / n**2


@dataclass
class Orders:
    """One work's predicted orders (None where the paper's abstract states none)."""

    work: str
    activation: str
    init: str
    width: float
    width_formula: str
    step: float | None
    step_formula: str | None
    iterations: float | None
    iterations_formula: str | None
    note: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def orders(n: int, lam: float, delta: float, epsilon: float = 1e-3, c: float = C) -> list[Orders]:
    """The five works side by side (docs/mathematics.md#predictions): orders of growth with constant c."""
    _check(n, lam, delta, epsilon)
    step = dzps19_step(n, lam, c)
    steps = iterations(step, lam, epsilon, c)
    relu_step = ("lambda / n^2", "(1 / (eta lambda)) log(1 / epsilon)")
    return [
        Orders("DZPS19", "relu", "independent", dzps19_width(n, lam, delta, c), "n^6 / (lambda^4 delta^3)",
               step, relu_step[0], steps, relu_step[1], "paper"),
        Orders("SY19", "relu", "independent", sy19_width(n, lam, delta, c), "n^4 log^3(n / delta) / lambda^4",
               step, relu_step[0], steps, relu_step[1], "roughly n^4; exact form unverified"),
        Orders("MOSW22", "relu", "coupled", mosw22_width(n, c), "n^2", None, None, None, None,
               "roughly n^2; lambda and delta factors not reproduced"),
        Orders("GMS23", "exp", "independent", gms23_width(n, delta, c),
               "n^(2+o(1)) log(n / delta), o(1) read as e^sqrt(2 log(n m / delta))", None, None, None, None,
               "step and iterations not stated in the abstract"),
        Orders("SMX24", "softmax", "independent", smx24_width(n, delta, c), "as GMS23 (poly(n, d))",
               None, None, None, None, "k = d outputs; d-dependence not stated, none applied"),
    ]


#: Where ADHLW19's generalisation bound (docs/mathematics.md#generalisation) is a theorem; for other kernels it is the same form.
GENERALISATION_THEOREM = {"relu": "ADHLW19 Thm 5.1"}


def complexity_source(activation: str) -> str:
    """How to label sqrt(2 y^T H*^-1 y / n) for `activation`: the theorem, or its form applied to another H*."""
    return GENERALISATION_THEOREM.get(activation, f"ADHLW19's form applied to {activation}'s H*, no theorem")


#: Where the kernel regime ends (docs/mathematics.md#output-scale): the activations with a proven exponent of
#: alpha*(m), the output scale below which the kernel moves, and its source. Geiger, Spigler, Jacot, Wyart
#: (J. Stat. Mech. 2020): alpha* ~ m^(-1/2) for relu in the NTK parametrisation.
LAZY_RICH_EXPONENTS = {"relu": (-0.5, "GSJW20")}
#: The activation whose mean-field scaling (kappa = 1/m) the lazy_rich section runs as a reference.
MEAN_FIELD_ACTIVATION = "relu"


def predicted_drift_slope(activation) -> float:
    """The kernel drift's order in 1/alpha at large alpha (docs/mathematics.md#output-scale): -1 where phi' is
    a step (relu), -2 for smooth activations under coupled init."""
    return -1.0 if activations.resolve(activation).name == "relu" else -2.0

