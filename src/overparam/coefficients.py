"""The one place that computes the per-neuron coefficients C of docs/mathematics.md#gradient.

Every model's per-example Jacobian has the form dF_l(x_i)/dw_r = c_{irl} x_i with

    c_{irl} = kappa * D_{ir} * (a_{rl} - s_{il})

    elementwise phi:         D = phi'(<w_r, x_i>),   s = 0            (docs/mathematics.md#gradient, #elementwise)
    normalised (softmax):    D = m S_r(x_i),         s_{il} = <a_l, S(x_i)> = F_l(x_i) / (kappa m)

phi and phi' come from the activation's record (`activations.Activation.fused`).

Gradients (vector-Jacobian products), Jacobian-vector products, kernels, sharding and batching
all go through `Pass`. Work is chunked over neurons, so memory is O(n * chunk) unless the
caller asks to keep the per-chunk D between the forward and the backward product; how the chunks
are cut, where they live and in which operand order the GEMMs run is `chunks`' business.
All functions broadcast over leading batch dimensions of W and a (e.g. seeds: S x m x d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np
import torch

from .activations import LOG2E, Activation, resolve
from .chunks import (FACTORISED_COLUMNS, chunk_outputs, chunk_slices, coupled_pairs, neuron_chunks, paired_matmul,
                     rows, scratch, thin_product, transposed_product)

#: Softmax needs no shift of its exponents unless the weights are very large (`exponent_shift`). Where it
#: does, these devices fold the shift into the GEMM as an extra column (`_softmax_sums_bounded`) rather than
#: find the running maximum: it saves two passes over each chunk, which pays on a GPU (H100, n = 4096, d = 64,
#: m = 2^20: 90 -> 73 ms a GD step) but not on a CPU (the wider GEMM made it about 5% slower).
BOUNDED_SHIFT_DEVICES = ("cuda",)


def exponent_inputs(X: torch.Tensor, activation: Activation) -> torch.Tensor:
    """The left factor of the GEMM Z = X W^T in the units of the activation's fused function:
    X input_scale (log2 e for exponentials, which are then taken by exp2)."""
    return X if activation.input_scale == 1.0 else X * activation.input_scale


class Reducer(Protocol):
    """Combines partial results across neuron shards in place (e.g. torch.distributed all-reduce)."""

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def max_(self, tensor: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Pass:
    """F(W, X) and the state needed for products with its Jacobian J (docs/mathematics.md#gradient).

    Shapes: X (n, d) or (..., n, d); W (..., m, d); a (..., m, k); out (..., n, k).
    `lse` (softmax only, (..., n)) is log sum_r exp(<w_r, x_i>), the normaliser.
    With neuron sharding, W and a hold this process's neurons, `total_width` is m over all
    shards and `reducer` sums the partial products of J across shards (J^T v stays local).
    `workspace` is the flat buffer holding the kept chunks (None unless kept); a later forward pass
    may write into it once this Pass is no longer needed (see `forward`). `chunks` are the neuron
    chunks (slices or index sets, see `chunks.neuron_chunks`) and `chunk_runs` per chunk its runs: a list of
    (columns, value), slices of the chunk's columns on which a takes one value, or None (not worked out).
    """

    X: torch.Tensor
    W: torch.Tensor
    a: torch.Tensor
    activation: Activation
    kappa: float
    chunks: list
    out: torch.Tensor | None
    lse: torch.Tensor | None = None
    cache: list[tuple[torch.Tensor, torch.Tensor | None]] | None = field(default=None, repr=False)
    total_width: int | None = None
    reducer: Reducer | None = field(default=None, repr=False)
    workspace: torch.Tensor | None = field(default=None, repr=False)
    chunk_runs: list | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.total_width is None:
            self.total_width = self.W.shape[-2]
        if self.chunk_runs is None:
            self.chunk_runs = [None] * len(self.chunks)

    @property
    def width(self) -> int:
        """Neurons held here (all of them unless sharded)."""
        return self.W.shape[-2]

    @property
    def shift(self) -> torch.Tensor | None:
        """s_{il} = <a_l, S(x_i)> for softmax, None (zero) otherwise."""
        if not self.activation.normalised:
            return None
        return self.out / (self.kappa * self.total_width)

    def derivative_factors(self) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor | None]]:
        """Yield (neurons, E, rowscale) with D = E * rowscale[..., None] for each chunk.

        Kept chunks of softmax: E = exp(z - M_chunk) and rowscale = m exp(M_chunk - lse), so D = m S
        without a second pass over the chunk; everywhere else rowscale is None and D = E.
        """
        if self.cache is None:
            X = exponent_inputs(self.X, self.activation)
        for index, neurons in enumerate(self.chunks):
            if self.cache is not None:
                E, rowscale = self.cache[index]
            else:
                Z = X @ rows(self.W, neurons).transpose(-1, -2)
                if self.activation.normalised:  # m S = 2^(z - (lse log2 e - log2 m))
                    Z -= (self.lse * LOG2E - math.log2(self.total_width))[..., None]
                E, rowscale = self.activation.fused(Z, False, True)[1], None
            yield neurons, E, rowscale

    def coefficients(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (neurons, C) with C[..., l, i, r] = c_{i r l}, shape (..., k, n, chunk)."""
        s = self.shift
        for index, (neurons, E, rowscale) in enumerate(self.derivative_factors()):
            runs = self.chunk_runs[index]
            if runs is not None:  # softmax, one output, a_r = value on each run: one factor per row
                C = E if self.cache is None else torch.empty_like(E)  # a recomputed E is this chunk's own
                for columns, value in runs:
                    row = self.kappa * (value - s[..., 0]) * (1 if rowscale is None else rowscale)
                    torch.mul(E[..., columns], row[..., None], out=C[..., columns])
                yield neurons, C[..., None, :, :]
                continue
            D = E if rowscale is None else E * rowscale[..., None]
            a_c = self.a[..., neurons, :].transpose(-1, -2)  # (..., k, chunk)
            diff = a_c[..., :, None, :]
            if s is not None:
                diff = diff - s.transpose(-1, -2)[..., :, :, None]
            yield neurons, D[..., None, :, :] * (self.kappa * diff)  # kappa on the smaller factor

    def vjp(self, V: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """J^T V: sum_{i,l} V_{il} dF_l(x_i)/dW, shape like W. With V = F - y this is grad L.

        grad_r = kappa sum_i E_ir (Q P^T)_ir x_i, where sum_l V_il c_irl = kappa E_ir (Q P^T)_ir:
        relu/exp: Q = V, P = a; softmax: Q = rowscale [V, -sum_l V_l s_l], P = [a, 1]. With few
        columns j this is computed as sum_j P_rj (E^T (Q_j x))_r: one GEMM of E^T with the n x jd
        matrix Q (x) X and no n x chunk elementwise pass; with many outputs as (E (.) Q P^T)^T X.
        out: a tensor of the result's shape to write it into (e.g. reused step to step).
        """
        # numpy's shape arithmetic: torch.broadcast_shapes imports sympy on first use (about 1 s)
        batch = tuple(np.broadcast_shapes(self.W.shape[:-2], self.X.shape[:-2], V.shape[:-2]))
        shape = batch + tuple(self.W.shape[-2:])
        if out is not None and tuple(out.shape) != shape:
            raise ValueError(f"out has shape {tuple(out.shape)}, J^T V has shape {shape}")
        grad = self.W.new_empty(shape) if out is None else out
        n, d = self.X.shape[-2:]
        s = self.shift
        row_weights = V if s is None else torch.cat([V, -(V * s).sum(-1, keepdim=True)], -1)  # Q / rowscale
        # One output of an elementwise activation: grad_r = kappa a_r (E^T (V (.) X))_r, with V (.) X the same
        # for every chunk; a_r and kappa scale the finished gradient once (one pass over m x d, not one per chunk).
        single = s is None and row_weights.shape[-1] == 1 and all(isinstance(c, slice) for c in self.chunks)
        shared_QX = row_weights * self.X if single else None
        run_QX = {}  # softmax's Q X per (rowscale, value): one rowscale for all chunks unless shifted chunk by chunk
        for index, (neurons, E, rowscale) in enumerate(self.derivative_factors()):
            if single:
                transposed_product(E, shared_QX, out=grad[..., neurons, :])
                continue
            runs = self.chunk_runs[index]
            if runs is not None:  # a_r = value on each run: (Q P^T)_ir = value Q_i0 + Q_i1, d GEMM columns
                for columns, value in runs:
                    QX = run_QX.get((id(rowscale), value))
                    if QX is None:
                        Q = row_weights if rowscale is None else row_weights * rowscale[..., None]
                        QX = run_QX[id(rowscale), value] = (Q[..., :1] * value + Q[..., 1:]) * self.X
                    grad.index_copy_(-2, neurons[columns], transposed_product(E[..., columns], QX))
                continue
            Q = row_weights if rowscale is None else row_weights * rowscale[..., None]
            P = self.a[..., neurons, :]
            if s is not None:
                P = torch.cat([P, torch.ones_like(P[..., :1])], -1)
            j = Q.shape[-1]
            if j <= FACTORISED_COLUMNS:
                QX = (Q[..., :, :, None] * self.X[..., :, None, :]).reshape(*Q.shape[:-2], n, j * d)
                G = transposed_product(E, QX).unflatten(-1, (j, d))
                grad[..., neurons, :] = (P[..., None] * G).sum(-2) if j > 1 else P * G[..., 0, :]
            else:
                B = Q @ P.transpose(-1, -2)
                B *= E
                grad[..., neurons, :] = (self.X.transpose(-1, -2) @ B).transpose(-1, -2)
        if single:
            return grad.mul_(self.a * self.kappa)
        return grad.mul_(self.kappa)

    def jvp(self, G: torch.Tensor) -> torch.Tensor:
        """J G: sum_r <dF_l(x_i)/dw_r, g_r>, shape (..., n, k), for a direction G shaped like W."""
        s = self.shift
        batch = tuple(np.broadcast_shapes(self.W.shape[:-2], self.X.shape[:-2], G.shape[:-2]))
        out = self.X.new_zeros(batch + (self.X.shape[-2], self.a.shape[-1]))
        total = torch.zeros_like(out[..., :1])
        for neurons, E, rowscale in self.derivative_factors():
            P = self.X @ G[..., neurons, :].transpose(-1, -2)
            P *= E
            if rowscale is not None:
                P *= rowscale[..., None]
            out += thin_product(P, self.a[..., neurons, :])
            if s is not None:
                total += P.sum(-1, keepdim=True)
        if self.reducer is not None:
            self.reducer.sum_(out)
            if s is not None:
                self.reducer.sum_(total)
        if s is not None:
            out -= s * total
        return out.mul_(self.kappa)

    def kernel_vector(self, V: torch.Tensor) -> torch.Tensor:
        """Theta V = J J^T V for V shaped like `out`; O(n d m) work, no n x n matrix."""
        return self.jvp(self.vjp(V))


def forward(
    X: torch.Tensor,
    W: torch.Tensor,
    a: torch.Tensor,
    activation: Activation | str,
    kappa: float,
    chunk: int,
    keep: bool = False,
    paired: bool = False,
    total_width: int | None = None,
    reducer: Reducer | None = None,
    workspace: torch.Tensor | None = None,
    output: bool = True,
) -> Pass:
    """F_l(W, x_i), chunked over neurons (docs/mathematics.md#networks); softmax exponentiates as exp does where no
    exponential can overflow (`exponent_shift`), else shifts the exponents by a bound on their maximum
    (GPUs) or by the maximum found chunk by chunk.

    keep: store each chunk's derivative factor so that vjp/jvp need no second GEMM.
    paired: the neurons come in coupled pairs. Where every pair is still as the init made it (W(0)),
    F is summed by pairs and is exactly zero; elsewhere pair sums would change nothing but the
    rounding, and the chunks are laid out for speed instead (`chunks.neuron_chunks`).
    total_width, reducer: this process holds a shard of the neurons (see `Pass`); the partial
    sums (softmax: the max, the normaliser and the numerator) are combined by `reducer`.
    workspace: with keep, a flat buffer to write the kept chunks into (the `workspace` of a Pass
    that is no longer needed, whose kept chunks this overwrites); a new one is made if it is None
    or too small. Reusing it saves allocating and faulting in n x m values every step.
    output=False: elementwise activations (without keep) skip F, which their Jacobian products do not
    use (`Pass.out` is None); softmax needs F for its coefficients and computes it anyway.
    """
    m = W.shape[-2] if total_width is None else total_width
    paired = paired and coupled_pairs(W, a)
    matmul = paired_matmul if paired else thin_product
    chunk += chunk % 2 if paired else 0  # pairs must not straddle chunks
    activation = resolve(activation)
    chunks, chunk_runs = neuron_chunks(a, chunk, activation.normalised, paired)
    workspace, outputs = chunk_outputs(X, W, chunks, keep, workspace)
    X_exponent = exponent_inputs(X, activation)
    cache = [] if keep else None
    out = None
    if activation.normalised:
        # [a, 1]: one product with the exponentials gives the numerators and the normaliser.
        signs_and_ones = torch.cat([a, torch.ones_like(a[..., :1])], -1)

        def weighted_sums(E, index, neurons):
            """E [a_c, 1]; where a is one value on each run of the chunk, from row sums."""
            runs = chunk_runs[index]
            if runs is not None:
                sums = [E[..., columns].sum(-1, keepdim=True) for columns, _ in runs]
                return torch.cat([sum(total * value for total, (_, value) in zip(sums, runs)), sum(sums)], -1)
            if paired:  # the numerators by pairs (exactly zero), the normaliser as a row sum
                return torch.cat([matmul(E, a[..., neurons, :]), E.sum(-1, keepdim=True)], -1)
            return matmul(E, signs_and_ones[..., neurons, :])

        sums = _softmax_sums_bounded(X_exponent, W, weighted_sums, chunks, outputs, workspace, m,
                                     fold_shift=X.device.type in BOUNDED_SHIFT_DEVICES)
        if sums is None:  # shift by the maximum itself (very large weights on a CPU, or a bound far too loose)
            sums = _softmax_sums_online(X_exponent, W, weighted_sums, chunks, outputs, workspace)
        total, running_max, cache = sums  # running_max: the shift, in units of log2 (z log2 e)
        out, norm = total[..., :-1], total[..., -1]
        if reducer is not None:
            global_max = reducer.max_(running_max.clone())
            rescale = torch.exp2(running_max - global_max)
            norm = reducer.sum_(norm * rescale)
            out = reducer.sum_(out * rescale[..., None])
            running_max = global_max
        lse = running_max / LOG2E + torch.log(norm)
        out = out * (kappa * m / norm[..., None])
        if keep:
            # m S = E 2^(M - lse log2 e + log2 m): m inside the exponent, so that the factor stays normal;
            # one factor per shift M (the same tensor for every chunk unless the max was found chunk by chunk)
            factors = {}
            for _, M in cache:
                if id(M) not in factors:
                    factors[id(M)] = torch.exp2(M - lse * LOG2E + math.log2(m))
            cache = [(E, factors[id(M)]) for E, M in cache]
        return Pass(X, W, a, activation, kappa, chunks, out, lse, cache, m, reducer, workspace, chunk_runs)

    if not (output or keep):
        return Pass(X, W, a, activation, kappa, chunks, None, total_width=m, reducer=reducer)
    for neurons, kept in zip(chunks, outputs):
        Z = X_exponent @ W[..., neurons, :].transpose(-1, -2) if kept is None else \
            torch.matmul(X_exponent, W[..., neurons, :].transpose(-1, -2), out=scratch(kept, workspace))
        phi, slope = activation.fused(Z, True, keep, out=kept)
        if keep:
            cache.append((slope, None))
        part = matmul(phi, a[..., neurons, :])
        out = part if out is None else out.add_(part)
    if reducer is not None:
        reducer.sum_(out)
    out = out * kappa
    if not torch.isfinite(out).all():
        _raise_overflow(X, W, chunk, activation)
    return Pass(X, W, a, activation, kappa, chunks, out, None, cache, m, reducer, workspace, chunk_runs)


def exponent_shift(X: torch.Tensor, W: torch.Tensor, total_width: int) -> torch.Tensor:
    """s_i = max(0, ||x_i|| max_r ||w_r|| - T), T = log2(largest float) - log2(m) - 1, for X the
    `exponent_inputs`: z_ir - s_i <= T by Cauchy-Schwarz, so no 2^(z_ir - s_i) and no sum of m of them
    overflows. s is zero unless the weights are very large (float32: ||x|| ||w|| above about 77 at m = 2^16)."""
    bound = X.norm(dim=-1) * W.norm(dim=-1).amax(-1, keepdim=True)  # (..., n)
    headroom = math.log2(torch.finfo(X.dtype).max) - math.log2(max(total_width, 1)) - 1
    return (bound - headroom).clamp_(min=0)


def _softmax_sums_bounded(X, W, weighted_sums, chunks, outputs, workspace, total_width, fold_shift):
    """sum_r 2^{z_ir - s_i} [a_r, 1] with s = `exponent_shift`, for z = X W^T (X: `exponent_inputs`, so
    that 2^z = e^{<w_r, x_i>}): no pass over a chunk finds or subtracts a maximum.

    Where s = 0 (the usual case) the chunks are exponentiated as they are, as for exp. Otherwise, with
    fold_shift, s is folded into the GEMM as an extra input column ([x, -s] . [w, 1] = z - s); without
    it this returns None. Returns (total, shift, cache), or None when the largest term may have left
    the normal floating-point range (normaliser below m tiny / eps: every z_ir far below s_i).
    outputs: the kept chunks (or None), written from `chunks.scratch` of the workspace as in `forward`.
    """
    shift = exponent_shift(X, W, total_width)
    X_shifted, W_shifted = X, W
    if bool(shift.any()):
        if not fold_shift:
            return None
        pad = -(X.shape[-1] + 1) % 4  # keep the GEMM's inner dimension a multiple of 4 (aligned rows)
        X_shifted = torch.cat([X.expand(*shift.shape, X.shape[-1]), -shift[..., None],
                               X.new_zeros(*shift.shape, pad)], -1)
        W_shifted = torch.cat([W, W.new_ones(*W.shape[:-1], 1), W.new_zeros(*W.shape[:-1], pad)], -1)
    total = None
    keep = outputs[0] is not None
    cache = [] if keep else None
    for index, (neurons, kept) in enumerate(zip(chunks, outputs)):
        Z = torch.matmul(X_shifted, rows(W_shifted, neurons).transpose(-1, -2),
                         out=None if kept is None else scratch(kept, workspace))
        E = Z.exp2_() if kept is None else torch.exp2(Z, out=kept)
        part = weighted_sums(E, index, neurons)
        total = part if total is None else total.add_(part)
        if keep:
            cache.append((E, shift))
    info = torch.finfo(X.dtype)
    if not bool((total[..., -1] > W.shape[-2] * info.tiny / info.eps).all()):
        return None
    return total, shift, cache


def _softmax_sums_online(X, W, weighted_sums, chunks, outputs, workspace):
    """The same sums with the shift s_i = max_r z_ir found chunk by chunk (the online max-shift)."""
    running_max = None
    total = None  # (..., n, k + 1): sum_r 2^{z_ir - max} [a_r, 1]
    keep = outputs[0] is not None
    cache = [] if keep else None
    for index, (neurons, kept) in enumerate(zip(chunks, outputs)):
        Z = torch.matmul(X, rows(W, neurons).transpose(-1, -2), out=None if kept is None else scratch(kept, workspace))
        chunk_max = Z.amax(-1)
        if running_max is None:
            running_max = chunk_max
        else:
            new_max = torch.maximum(running_max, chunk_max)
            total *= torch.exp2(running_max - new_max)[..., None]
            running_max = new_max
        Z -= running_max[..., None]
        E = Z.exp2_() if kept is None else torch.exp2(Z, out=kept)
        part = weighted_sums(E, index, neurons)
        total = part if total is None else total.add_(part)
        if keep:
            cache.append((E, running_max))
    return total, running_max, cache


def _raise_overflow(X: torch.Tensor, W: torch.Tensor, chunk: int, activation: Activation) -> None:
    largest = max(
        float((X @ W[..., neurons, :].transpose(-1, -2)).amax())
        for neurons in chunk_slices(W.shape[-2], chunk)
    )
    raise OverflowError(
        f"{activation.name} network overflows {str(W.dtype).replace('torch.', '')}: the largest <w_r, x_i> is "
        f"{largest:.4g} (e^z overflows above {math.log(torch.finfo(W.dtype).max):.4g}); use float64, a smaller "
        "sigma, inputs with ||x|| <= 1, or a smaller step size"
    )
