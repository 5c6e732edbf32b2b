"""Activations as records: one frozen `Activation` per activation (docs/mathematics.md#networks, #ntk, #elementwise).

A record holds everything that differs between activations, so that nothing else in the package
names one: its default output scale kappa(m), the fused value-and-derivative that the neuron chunks
of `coefficients` go through (so each phi' is written once), its infinite-width kernel H* (closed
form where one is known, Gauss-Hermite quadrature otherwise), whether it normalises over neurons
(softmax), the width orders the papers prove for it (used by `theory`) and a figure colour.

    resolve("gelu")                          a built-in, by name (BUILTIN lists them)
    resolve("mypkg.acts:swish")              an Activation object in an importable module
    Activation.elementwise("swish", fn)      a researcher's own: fn elementwise, phi' by autograd

Units of the fused function: the GEMM computes Z = (X * input_scale) W^T. For exponentials
input_scale = log2 e, so that e^z = 2^Z is one exp2 in place (3x faster than exp in float32 on a
CPU); every other activation takes Z = z.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

#: e^z = 2^(z log2 e): the input scale of exponential activations (see the module docstring). The
#: factor's rounding is one more rounding of X: float32 relative errors of e^z were 1.67e-6 (max) and
#: 7.9e-8 (mean), against 1.52e-6 and 7.5e-8 with exp, at n = 1024, d = 32, m = 65536.
LOG2E = math.log2(math.e)
#: Gauss-Hermite points per dimension at sigma ||x|| <= 1 (`gauss_hermite_kernel`) for an activation
#: that names none: tanh's, the hardest built-in phi' (sech^2, poles at +-i pi/2), is then accurate to 1e-8.
QUADRATURE_POINTS = 96
#: Most points per dimension (the rule grows as (sigma ||x||)^2; numpy's hermegauss overflows above 350).
MAX_QUADRATURE_POINTS = 320
#: Values of phi' one quadrature block may take (float64): 64 MiB.
QUADRATURE_BLOCK = 1 << 23

Fused = Callable[..., tuple]  # (Z, value, derivative, out=None) -> (phi, phi')
Kernel = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """One activation: F_l(W, x) = kappa sum_r a_rl phi(<w_r, x>) (docs/mathematics.md#networks, #elementwise); softmax
    (`normalised`) divides the exponentials by their mean over the neurons.

    fused(Z, value, derivative, out=None) -> (phi, phi'): the two at Z = z * input_scale, either None
    where not asked for. It may overwrite Z, and writes phi' into `out` where given (a kept chunk of
    `coefficients.forward`, a view of one workspace), else into Z's storage where it can.
    kernel(X, X2, sigma): H* in closed form, (n, n2), or None: `gauss_hermite_kernel` of phi' with
    quadrature_points per dimension at sigma ||x|| <= 1.
    proven_widths: (work, exponent p of m ~ n^p, inits it is proven for) per paper (docs/mathematics.md#predictions).
    """

    name: str
    fused: Fused
    default_scale: str = "1/sqrt(m)"
    input_scale: float = 1.0
    kernel: Kernel | None = field(default=None, repr=False)
    quadrature_points: int = QUADRATURE_POINTS
    normalised: bool = False
    proven_widths: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    color: str = "tab:olive"

    @classmethod
    def elementwise(cls, name: str, fn: Callable[[torch.Tensor], torch.Tensor],
                    derivative: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    default_scale: str = "1/sqrt(m)", color: str = "tab:olive",
                    quadrature_points: int = QUADRATURE_POINTS) -> "Activation":
        """A researcher's own phi: `fn` maps a tensor to phi of each entry (same shape); `derivative`
        to phi' (None: by autograd through fn). H* comes from `gauss_hermite_kernel` with
        quadrature_points per dimension at sigma ||x|| <= 1 (enough for a phi' as hard as tanh's; fewer
        serve smoother ones).

        Training in several processes (sharded or a process pool) pickles the record: fn and
        derivative must then be module-level functions (a lambda or a closure does not pickle).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"an activation needs a non-empty name, got {name!r}")
        for label, function in (("fn", fn), ("derivative", derivative)):
            if function is not None and not callable(function):
                raise ValueError(f"{label} of activation {name!r} must be callable, got {type(function).__name__}")
        return cls(name, Elementwise(name, fn, derivative), default_scale, color=color,
                   quadrature_points=quadrature_points)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """phi(z) elementwise, natural units (softmax: its numerator e^z); may overwrite z."""
        return self.fused(self._scaled(z), True, False)[0]

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        """phi'(z) elementwise, natural units (softmax: of its numerator e^z); may overwrite z."""
        return self.fused(self._scaled(z), False, True)[1]

    def infinite_kernel(self, X: torch.Tensor, sigma: float = 1.0, X2: torch.Tensor | None = None) -> torch.Tensor:
        """H*(X, X2) of one output block for w ~ N(0, sigma^2 I) (docs/mathematics.md#ntk, #elementwise), float64, (n, n2)."""
        X = torch.as_tensor(X, dtype=torch.float64)
        X2 = X if X2 is None else torch.as_tensor(X2, dtype=torch.float64, device=X.device)
        if self.kernel is not None:
            return self.kernel(X, X2, sigma)
        return gauss_hermite_kernel(self.derivative, X, X2, sigma, base_points=self.quadrature_points)

    def _scaled(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.input_scale == 1.0 else z.mul_(self.input_scale)


@dataclass(frozen=True)
class Elementwise:
    """The fused function of `Activation.elementwise`: phi = fn(Z), phi' = derivative(Z) or autograd,
    each checked for its shape and for finite values (a picklable object, not a closure)."""

    name: str
    fn: Callable
    derivative: Callable | None = None

    def __call__(self, Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
        if derivative and self.derivative is None:  # phi and phi' from one evaluation of fn
            with torch.enable_grad():
                z = Z.detach().requires_grad_(True)
                phi = self._checked(self.fn(z), Z, "returns")
                (slope,) = torch.autograd.grad(phi.sum(), z)
            phi = phi.detach() if value else None
            slope = self._checked(slope, Z, "has a derivative (by autograd) that returns")
        else:
            phi = self._checked(self.fn(Z), Z, "returns") if value else None
            if not derivative:
                return phi, None
            slope = self._checked(self.derivative(Z), Z, "has a derivative that returns")
        return phi, slope if out is None else out.copy_(slope)

    def _checked(self, result, Z: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(result, torch.Tensor) or result.shape != Z.shape:
            shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise ValueError(f"activation {self.name!r} is not elementwise: it {what} {shape} for an input of "
                             f"shape {tuple(Z.shape)}; give a function applied to each entry (e.g. torch.tanh)")
        if not bool(torch.isfinite(result).all()):
            raise ValueError(f"activation {self.name!r} {what} non-finite values (NaN or inf) at the data "
                             f"(inputs <w_r, x_i> in [{float(Z.min()):.3g}, {float(Z.max()):.3g}]); "
                             "make it finite there")
        return result.to(Z.dtype)


def gauss_hermite_kernel(derivative: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, X2: torch.Tensor,
                         sigma: float, points: int | None = None, base_points: int = QUADRATURE_POINTS) -> torch.Tensor:
    """H*_ij = <x_i, x_j> E[phi'(u) phi'(v)] by the tensor Gauss-Hermite rule (docs/mathematics.md#elementwise):

        u = sigma |x_i| g_a,  v = sigma |x_j| (rho_ij g_a + sqrt(1 - rho_ij^2) g_b),
        E[phi'(u) phi'(v)] ~ sum_{a,b} w_a w_b phi'(u_a) phi'(v_ab),

    g, w the nodes and weights of `numpy.polynomial.hermite_e.hermegauss` (weight e^{-g^2/2}),
    normalised to sum to 1. points (per dimension) defaults to base_points max(1, s)^2 for
    s = sigma max |x|, rounded up to even, at most MAX_QUADRATURE_POINTS: phi'(s g) is analytic in a
    strip of width proportional to 1/s, and the rule's error falls with sqrt(points) / s. The points
    tanh needs for 1e-8 on the diagonal (rho = 1, the hardest entry) were 86, 130, 180, 310 at s = 1,
    1.25, 1.5, 2 (sigmoid 22 to 70, gelu 30 to 92): the built-ins' base_points (tanh 96, sigmoid 28,
    gelu 36) keep them to 1e-8 up to s = 1.8 (tanh) and beyond 3 (sigmoid, gelu), checked against
    scipy's dblquad. A phi' with a jump converges slowly:
    relu's step is off by up to 3.9% of max |H*| at 64 points (at pairs with rho near 1), and the
    error falls like points^(-1/2) (a closed form serves relu).
    """
    norms, norms2 = X.norm(dim=1), X2.norm(dim=1)
    if points is None:
        scale = sigma * float(torch.cat([norms, norms2]).max())
        points = min(MAX_QUADRATURE_POINTS, math.ceil(base_points * max(1.0, scale) ** 2))
        points += points % 2  # even: no node at 0, where a phi' such as relu's jumps
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    g = torch.as_tensor(nodes, dtype=torch.float64, device=X.device)
    w = torch.as_tensor(weights / weights.sum(), dtype=torch.float64, device=X.device)
    inner = X @ X2.T
    rho = (inner / torch.outer(norms, norms2).clamp_min(1e-300)).clamp(-1.0, 1.0)
    across = (1 - rho.square()).sqrt()
    left = derivative(sigma * norms[:, None] * g) * w  # w_a phi'(u_a), (n, p)
    expectation = torch.empty_like(inner)
    rows = max(1, QUADRATURE_BLOCK // max(1, X2.shape[0] * points * points))
    for start in range(0, X.shape[0], rows):
        block = slice(start, start + rows)
        v = (rho[block, :, None, None] * g[:, None] + across[block, :, None, None] * g) * (sigma * norms2[:, None, None])
        expectation[block] = ((derivative(v) @ w) * left[block, None, :]).sum(-1)
    return inner * expectation


# ----------------------------------------------------------------------------- the built-ins
# Each fused function: (phi, phi') at Z = z * input_scale, phi' in out if given, else in Z's storage where it can be.


def _relu(Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
    """phi = max(0, z); phi' = 1{z > 0} in Z's dtype. With out, both in one pass each and no new
    tensor: the mask into out, then max(0, z) in place."""
    if not derivative:
        return Z.clamp_min_(0), None
    if out is None:
        return torch.clamp_min(Z, 0) if value else None, Z.gt_(0)
    slope = torch.gt(Z, 0, out=out)
    return Z.clamp_min_(0) if value else None, slope


def _exp(Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
    """phi = phi' = e^z = 2^Z (input_scale log2 e), one exp2 (in place, or into out)."""
    E = Z.exp2_() if out is None else torch.exp2(Z, out=out)
    return E, E


def _tanh(Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
    """phi = tanh z; phi' = 1 - tanh^2 z."""
    target = Z if out is None else out
    if not value:
        return None, torch.tanh(Z, out=target).square_().neg_().add_(1)
    phi = torch.tanh(Z)
    return phi, torch.mul(phi, phi, out=target).neg_().add_(1) if derivative else None


def _sigmoid(Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
    """phi = s(z) = 1 / (1 + e^-z); phi' = s(z) (1 - s(z))."""
    target = Z if out is None else out
    if not value:
        S = torch.sigmoid(Z, out=target)
        return None, S.sub_(S.square())
    phi = torch.sigmoid(Z)
    return phi, target.copy_(phi).neg_().add_(1).mul_(phi) if derivative else None


def _gelu(Z: torch.Tensor, value: bool, derivative: bool, out: torch.Tensor | None = None) -> tuple:
    """phi = z Phi(z) (the exact erf form); phi' = Phi(z) + z varphi(z), Phi and varphi the standard
    normal's distribution and density."""
    phi = torch.nn.functional.gelu(Z) if value else None
    if not derivative:
        return phi, None
    density = torch.exp(-0.5 * Z.square()).mul_(1 / math.sqrt(2 * math.pi))
    cdf = torch.special.ndtr(Z)
    return phi, torch.mul(Z, density, out=Z if out is None else out).add_(cdf)


def _relu_kernel(X: torch.Tensor, X2: torch.Tensor, sigma: float) -> torch.Tensor:
    """|x_i| |x_j| rho_ij (pi - arccos rho_ij) / (2 pi), rho_ij = <x_i,x_j> / (|x_i| |x_j|): the arc-cosine
    kernel, independent of sigma; in place after the one product of the unit rows (an H* product's cost).

    With X2 = X, rho_ii is exactly 1: its computed value rounds a few ulps below 1, where arccos has
    slope -1/sqrt(1 - rho^2), which made the diagonal |x|^2/2 wrong by up to 1e-8 relative."""
    norms, norms2 = X.norm(dim=1), X2.norm(dim=1)
    rho = (X / norms.clamp_min(1e-300)[:, None]) @ (X2 / norms2.clamp_min(1e-300)[:, None]).T
    rho.clamp_(-1.0, 1.0)
    if X2 is X:
        rho.diagonal().fill_(1.0)
    kernel = torch.arccos(rho).neg_().add_(torch.pi).mul_(rho)
    return kernel.mul_((norms / (2 * torch.pi))[:, None]).mul_(norms2[None, :])


def _exp_kernel(X: torch.Tensor, X2: torch.Tensor, sigma: float) -> torch.Tensor:
    """<x_i,x_j> exp(sigma^2 ||x_i + x_j||^2 / 2)."""
    inner = X @ X2.T
    exponent = X.square().sum(1)[:, None] + X2.square().sum(1)[None, :]  # in place below: at n = 20,000
    return exponent.add_(inner, alpha=2).mul_(sigma**2).div_(2).exp_().mul_(inner)  # H* is 3.2 GB


def _softmax_kernel(X: torch.Tensor, X2: torch.Tensor, sigma: float) -> torch.Tensor:
    """<x_i,x_j> exp(sigma^2 <x_i,x_j>): the normalisation cancels exp's norm factors."""
    inner = X @ X2.T
    return torch.mul(inner, sigma**2).exp_().mul_(inner)


RELU = Activation("relu", _relu, "1/sqrt(m)", kernel=_relu_kernel, color="tab:blue",
                  proven_widths=(("DZPS19", "6", ("independent", "coupled")), ("SY19", "4", ("independent", "coupled")),
                                 ("MOSW22", "2", ("coupled",))))
EXP = Activation("exp", _exp, "1", LOG2E, _exp_kernel, color="tab:orange",
                 proven_widths=(("GMS23", "2+o(1)", ("independent", "coupled")),))
SOFTMAX = Activation("softmax", _exp, "1", LOG2E, _softmax_kernel, normalised=True, color="tab:green",
                     proven_widths=(("SMX24", "2+o(1)", ("independent", "coupled")),))
TANH = Activation("tanh", _tanh, quadrature_points=96, color="tab:red")
SIGMOID = Activation("sigmoid", _sigmoid, quadrature_points=28, color="tab:purple")
GELU = Activation("gelu", _gelu, quadrature_points=36, color="tab:brown")

REGISTRY = {record.name: record for record in (RELU, EXP, SOFTMAX, TANH, SIGMOID, GELU)}
#: Names of every built-in activation.
BUILTIN = tuple(REGISTRY)
#: The papers' three: the study's default activations.
PAPERS = ("relu", "exp", "softmax")
#: What an activation may be, in words (CLI help).
CHOICES = f"{', '.join(BUILTIN)}, or module:attribute naming an overparam.Activation"


def resolve(activation: "str | Activation") -> Activation:
    """The record for a built-in's name, an `Activation` itself, or 'module:attribute' naming an
    `Activation` in an importable module (e.g. 'mypkg.acts:swish'). ValueError otherwise."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise ValueError(f"an activation is a name or an Activation, got {type(activation).__name__}")
    if activation in REGISTRY:
        return REGISTRY[activation]
    if ":" in activation:
        return _import(activation)
    raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(BUILTIN)}, "
                     "or name your own Activation as module:attribute")


def _import(path: str) -> Activation:
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:  # an import failure of any kind is the user's to fix
        raise ValueError(f"activation {path!r} does not import ({type(error).__name__}: {error}); give "
                         "module:attribute of an Activation, with the module on the Python path") from None
    if not isinstance(found, Activation):
        raise ValueError(f"{path!r} is a {type(found).__name__}, not an Activation: make it with "
                         "overparam.Activation.elementwise(name, fn)")
    return found


def parse_scale(scale: str | float | None, activation: "str | Activation | None", width: int) -> float:
    """Output scale kappa: None (the activation's default; the activation is needed only then), '1',
    '1/sqrt(m)', '1/m' or a number."""
    if scale is None:
        scale = resolve(activation).default_scale
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        value = float(scale)
    else:
        text = str(scale).replace(" ", "")
        named = {"1": 1.0, "1/sqrt(m)": width ** -0.5, "1/m": 1.0 / width}
        if text in named:
            value = named[text]
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"unknown scale {scale!r}: use '1', '1/sqrt(m)', '1/m' or a positive number"
                ) from None
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return value
