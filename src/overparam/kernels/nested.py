"""The kernel H(W(0)) at every width of a grid in one pass over the neurons (docs/mathematics.md#nested-widths).

The kernel at width m uses the first m neurons of one initialisation (with coupled init the first m,
m even, are themselves a coupled init: `models.initial_weights` puts pairs side by side). One pass
over the neurons in order, chunk by chunk, keeps running sums, and at each grid width the kernel is
assembled from them: the whole grid costs what the largest width costs, and no n x m matrix is held.

H = Theta / (m kappa^2) does not depend on kappa, so the coefficients are taken with kappa = 1.
Rows are output-major (row l n + i: output l at x_i), as in `kernels.finite.ntk`.

Elementwise phi (c_irl = a_rl phi'(<w_r, x_i>)):

    S_(il),(jl') = sum_{r<=m} a_rl a_rl' phi'_ir phi'_jr,       H(m) = (X X^T) (.) S / m.

Normalised (softmax: c_irl = m S_ir (a_rl - s_il), S_ir = e_ir / N_i, s_il = P_il / N_i), with
e_ir = exp(<w_r, x_i> - M_i) for any per-row constant M_i (it cancels) and the running sums

    N_i = sum_r e_ir,  P_il = sum_r a_rl e_ir,  B_ij = sum_r e_ir e_jr,
    A^l_ij = sum_r a_rl e_ir e_jr,  G^ll'_ij = sum_r a_rl a_rl' e_ir e_jr:

    H_(il),(jl')(m) = <x_i, x_j> m [G^ll'_ij - s_jl' A^l_ij - s_il A^l'_ij + s_il s_jl' B_ij] / (N_i N_j),

from c_irl c_jrl' = m^2 e_ir e_jr (a_rl - s_il)(a_rl' - s_jl') / (N_i N_j) summed over r. With one
output and signs a_r = +-1, G = B (a_r^2 = 1): H_ij = <x_i,x_j> m [B_ij (1 + s_i s_j) - (s_i + s_j) A_ij]
/ (N_i N_j), and the pass needs only the GEMM [E; E a] E^T per chunk. M_i is the running maximum
of the chunks' own constants, and the sums are rescaled when it grows (the online max-shift).

Coupled pairs (w_2r = w_2r+1, a_2r = -a_2r+1, the coupled initialisation): both neurons of a pair add the
same a_rl a_rl' phi'_ir phi'_jr, so S(m) = 2 S'(m/2) over the pairs' first neurons and H(m) = H'(m/2);
normalised, N = 2 N', G = 2 G' and P = A = 0 (the pair's a cancel), so s = 0 and
H_(il),(jl')(m) = <x_i, x_j> (m/2) G'^ll'_ij / (N'_i N'_j). The pass reads half the neurons, and softmax's
GEMM shrinks from [E; E a] E^T to E E^T (k = 1).

Mixed precision (`products`): each chunk's GEMMs and phi' may run in float32 while the running sums
stay in W's dtype (float64): a chunk's product carries float32 rounding once and the sum over chunks adds
none, so H(m) stays within about 1e-6 of the float64 pass relative to its largest entry
(tests/test_nested_ntk.py states the tolerance on the distances). Exponentials whose products could
leave float32's range keep W's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import activations, chunks, coefficients, resources
from ..models import initial_weights, resolve_device, resolve_dtype
from .infinite import infinite_ntk
from ..validation import as_inputs


def nested_ntk(X, W: torch.Tensor, a: torch.Tensor, activation: str, widths, chunk: int | None = None,
               progress=None, products: torch.dtype | str | None = None, pairs: bool = True) -> torch.Tensor:
    """H(W(0)) of the networks made of the first m neurons of (W, a), for every m in `widths`.

    X (n, d); W (M, d) and a (M, k) with M >= max(widths), a's entries +-1 (the papers' signs).
    widths: increasing positive integers. chunk: neurons per step (default: a cache-sized chunk).
    progress(stage, neurons done, max(widths)) after every chunk (`eigensolvers.Progress`).
    products: dtype of each chunk's GEMMs and phi' (default W's; "float32" for the mixed-precision pass of
    the module docstring, about twice as fast on a CPU: benchmarks/nested_ntk.py); the running sums keep W's.
    pairs: where (W, a) is a coupled initialisation (`_coupled_pairs`), pass over one neuron of each pair.
    Returns (len(widths), k n, k n), float64 where W is float64.
    """
    widths = _check_widths(widths, W.shape[0])
    X = as_inputs(X, W.shape[1], W.dtype, W.device)
    if a.dim() != 2 or a.shape[0] != W.shape[0]:
        raise ValueError(f"a must be (m, k) with m = {W.shape[0]} rows like W, got shape {tuple(a.shape)}")
    if not bool((a.abs() == 1).all()):
        raise ValueError("the nested kernel uses a_r^2 = 1: a's entries must be +1 or -1")
    n, k = X.shape[0], a.shape[1]
    record = activations.resolve(activation)
    X_input = coefficients.exponent_inputs(X, record)  # Z = X_input W^T is in the units of record.fused
    work = _product_dtype(products, X_input, W, record)
    paired = pairs and _coupled_pairs(W, a, widths)
    if paired:  # H(m) of the pairs = H(m / 2) of their first neurons, with P = A = 0 (module docstring)
        W, a, widths = W[0:widths[-1]:2], a[0:widths[-1]:2], [m // 2 for m in widths]
    chunk = chunk or chunks.default_chunk(n, k + 1, work.itemsize, W.device)
    sums = _RunningSums(n, k, W, paired)
    shift = None
    if record.normalised and bool(coefficients.exponent_shift(X_input.to(work), W, W.shape[0]).any()):
        shift = X_input.new_full((n,), -math.inf)  # exponents could overflow: the online max-shift
    X_input, a = X_input.to(work), a.to(work)
    buffer = W.new_empty((k + 1) * n, chunk, dtype=work)
    kernels = []
    start = 0
    for width in widths:
        for neurons in chunks.chunk_slices(width - start, chunk):
            neurons = slice(start + neurons.start, start + neurons.stop)
            rows = buffer[:, :neurons.stop - neurons.start]
            Z = torch.matmul(X_input, W[neurons].to(work).T, out=rows[:n])
            if shift is not None:  # M_i the largest exponent so far; earlier sums rescaled to it
                new = torch.maximum(shift, Z.amax(1).to(shift.dtype))
                if bool((new > shift).any()):
                    sums.rescale(torch.exp((shift - new) / record.input_scale))
                    shift = new
                Z -= shift[:, None]
            E = record.fused(Z, False, True)[1]  # phi'(z); normalised: the numerator e^(z - M)
            if record.normalised:
                sums.add_normalised(E, a[neurons], rows)
            else:
                sums.add_elementwise(E, a[neurons])
            if progress is not None:
                scale = 2 if paired else 1
                progress(f"nested kernels, widths up to {scale * widths[-1]}", scale * neurons.stop,
                         scale * widths[-1])
        start = width
        kernels.append(sums.kernel(X, width, record.normalised))
    return torch.stack(kernels)


def _coupled_pairs(W: torch.Tensor, a: torch.Tensor, widths: list[int]) -> bool:
    """Whether every width is even and the neurons up to the largest come in coupled pairs
    (w_2r = w_2r+1, a_2r = -a_2r+1, docs/mathematics.md#nested-widths), as `models.initial_weights` draws them."""
    top = widths[-1]
    return (all(m % 2 == 0 for m in widths) and torch.equal(W[0:top:2], W[1:top:2])
            and torch.equal(a[0:top:2], -a[1:top:2]))


class _RunningSums:
    """The running sums of the module docstring; `kernel` assembles H(m) from them."""

    def __init__(self, n: int, k: int, like: torch.Tensor, paired: bool = False) -> None:
        self.n, self.k, self.paired = n, k, paired
        self.gram = None  # elementwise: S (kn, kn); normalised k = 1: [B; A] (2n, n), k > 1: Gram of [E; E a_l]
        self.N, self.P = like.new_zeros(n), like.new_zeros(n, k)  # paired normalised: G^ll' (kn, kn); P = 0

    def add_elementwise(self, E: torch.Tensor, a: torch.Tensor) -> None:
        left = E if self.k == 1 else torch.cat([E * a[:, l] for l in range(self.k)])  # a_r^2 = 1 when k = 1
        self._accumulate(left, left)

    def add_normalised(self, E: torch.Tensor, a: torch.Tensor, rows: torch.Tensor) -> None:
        """E (n, c) the chunk's e_ir, the top of `rows` ((k + 1) n, c), whose other blocks become E a_l."""
        n = self.n
        if E.data_ptr() != rows.data_ptr():  # a fused function that did not work in place
            E = rows[:n].copy_(E)
        self.N += E.sum(1, dtype=self.N.dtype)
        if self.paired:  # the pairs' a cancel in P and A: only G^ll' = sum a_rl a_rl' e_ir e_jr is left
            self.add_elementwise(E, a)
            return
        self.P += E @ a
        for l in range(self.k):
            torch.mul(E, a[:, l], out=rows[(l + 1) * n:(l + 2) * n])
        self._accumulate(rows, E if self.k == 1 else rows)  # k = 1: [E; E a] E^T, as a_r^2 = 1

    def rescale(self, factor: torch.Tensor) -> None:
        """The sums in units of a larger shift: each e_ir times factor_i."""
        self.N *= factor
        self.P *= factor[:, None]
        if self.gram is not None:
            self.gram *= torch.outer(factor.repeat(self.gram.shape[0] // self.n),
                                     factor.repeat(self.gram.shape[1] // self.n))

    def _accumulate(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if self.gram is None:
            self.gram = self.N.new_zeros(left.shape[0], right.shape[0])
        if left.dtype == self.gram.dtype:
            self.gram.addmm_(left, right.T)
        else:  # the chunk's product in its own dtype, added to the running sum in the sums' dtype
            self.gram += left @ right.T

    def kernel(self, X: torch.Tensor, width: int, normalised: bool) -> torch.Tensor:
        n, k = self.n, self.k
        inner = X @ X.T
        if not normalised:
            return self.gram * inner.repeat(k, k) / width
        scale = inner * width / torch.outer(self.N, self.N)
        if self.paired:  # s = P / N = 0
            return self.gram * scale.repeat(k, k)
        s = self.P / self.N[:, None]  # (n, k)
        B = self.gram[:n, :n]
        if k == 1:
            A = self.gram[n:, :n]
            s = s[:, 0]
            return scale * (B * (1 + torch.outer(s, s)) - (s[:, None] + s[None, :]) * A)
        H = self.gram.new_empty(k * n, k * n)
        A = [self.gram[:n, (l + 1) * n:(l + 2) * n] for l in range(k)]
        for l in range(k):
            for m in range(k):
                G = self.gram[(l + 1) * n:(l + 2) * n, (m + 1) * n:(m + 2) * n]
                block = G - s[None, :, m] * A[l] - s[:, l, None] * A[m] + torch.outer(s[:, l], s[:, m]) * B
                H[l * n:(l + 1) * n, m * n:(m + 1) * n] = scale * block
        return H


def _product_dtype(products, X_input: torch.Tensor, W: torch.Tensor, record) -> torch.dtype:
    """The chunks' dtype: `products` (default W's), or W's for an exponential whose products e_ir e_jr could
    leave that dtype's normal range (2^(+-2L), L = max_i ||x_i|| max_r ||w_r|| in exp2 units, within 2^32 of
    its limits): no overflow, no underflow, and no online max-shift in the lower precision."""
    work = W.dtype if products is None else resolve_dtype(products)
    if work == W.dtype or record.input_scale == 1.0:
        return work
    largest = float(X_input.norm(dim=1).max() * W.norm(dim=1).max())
    return work if 2 * largest < math.log2(torch.finfo(work).max) - 32 else W.dtype


def _check_widths(widths, available: int) -> list[int]:
    widths = [int(m) for m in widths]
    if not widths or any(m < 1 for m in widths) or any(b <= a for a, b in zip(widths, widths[1:])):
        raise ValueError(f"widths must be increasing positive integers, got {widths}")
    if widths[-1] > available:
        raise ValueError(f"the largest width {widths[-1]} exceeds the {available} neurons given")
    return widths


@dataclass
class WidthProfile:
    """||H(m) - H*||_2 and lambda_min(H(m)) at each width m of one initialisation, with
    lambda = lambda_min(H*) (H* = I_k (x) H* for k outputs)."""

    widths: list[int]
    distance: list[float]
    lambda_min: list[float]
    lam: float

    def to_dict(self) -> dict:
        return {"widths": self.widths, "distance": self.distance, "lambda_min": self.lambda_min, "lambda": self.lam,
                "distance_over_lambda": [d / self.lam for d in self.distance]}


def width_profile(X, activation: str, widths, *, out_dim: int = 1, init: str = "independent", sigma: float = 1.0,
                  seed: int = 0, dtype: torch.dtype | str = torch.float64, chunk: int | None = None,
                  weights: tuple[torch.Tensor, torch.Tensor] | None = None,
                  device: torch.device | str = "cpu", progress=None,
                  products: torch.dtype | str | None = None) -> WidthProfile:
    """The kernel's distance from its limit and its smallest eigenvalue along a width grid, from one
    initialisation of the largest width (`models.initial_weights` with `seed`, on `device`; or `weights` =
    (W, a) given, e.g. shared by several activations; the pass runs on their device). Spectra are dense
    float64 eigvalsh (k n x k n) on the CPU. progress(stage, done, total) as the pass and the spectra advance.
    products: the chunks' dtype in `nested_ntk` (None: the weights'; "float32": the mixed-precision pass)."""
    X = as_inputs(X, None, torch.float64, "cpu")
    widths = [int(m) for m in widths]
    side = X.shape[0] * out_dim  # the kernels at every width, their differences from H*, and eigvalsh's work
    resources.require(resources.dense_kernel_bytes(side, 2 * len(widths) + resources.DENSE_KERNEL_COPIES), "cpu",
                      f"the {len(widths)} dense {side} x {side} kernels of the width grid",
                      "use a smaller --n or fewer --widths")
    if weights is None:
        resources.require(4 * max(widths) * (X.shape[1] + out_dim) * resolve_dtype(dtype).itemsize, device,
                          f"the weights of m = {max(widths)} neurons", "use a smaller largest width in --widths")
        weights = initial_weights(max(widths), X.shape[1], out_dim, init, sigma, seed, resolve_dtype(dtype),
                                  resolve_device(device))
    W, a = weights
    if init == "coupled" and any(m % 2 for m in widths):
        raise ValueError(f"with coupled init every width must be even (pairs), got {widths}")
    limit = infinite_ntk(activation, X, sigma, out_dim=a.shape[1])
    lam = float(torch.linalg.eigvalsh(limit)[0])
    kernels = nested_ntk(X.to(W), W, a, activation, widths, chunk, progress, products).double().cpu()
    stage = f"spectra of {len(widths)} kernels, side {limit.shape[0]}"
    distance, smallest = [], []
    for index, kernel in enumerate(kernels):  # one at a time: a progress step per width
        distance.append(float(torch.linalg.eigvalsh(kernel - limit).abs().max()))
        smallest.append(float(torch.linalg.eigvalsh(kernel)[0]))
        if progress is not None:
            progress(stage, index + 1, len(widths))
    return WidthProfile(widths, distance, smallest, lam)

