"""Below the formulas: how the neurons are cut into chunks, where the chunks' buffers live, and which
operand order the BLAS runs fastest. `coefficients` computes docs/mathematics.md#gradient through these; none of them
changes a number beyond rounding (the coupled pairs' sums make F(W(0)) exactly zero).

Chunks are sized to a device's budget, in rows of whole cache lines (`default_chunk`); for softmax with
one output they follow the order of a (`neuron_chunks`); the kept chunks of a forward pass are views of
one reusable workspace (`chunk_outputs`), whose spare last chunk takes each chunk's GEMM before its
activation is written into the kept chunk (`scratch`); `transposed_product` and `thin_product` pick the
GEMM operand order measured fastest with MKL on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import resources

#: Bytes of working memory a single neuron chunk may take (n x chunk x (k + 2) values) on a CPU: a
#: fraction of a last-level cache. Measured on an AMD EPYC (Zen 4, 32 MiB L3; GD step, n = 1024, d = 32,
#: m = 65536 float32, one thread): chunks of 384 to 1008 neurons (1.5-4 MiB each) within 3% of each other,
#: 1360 (5.3 MiB, 16 MiB of budget) 5% slower, 1536 15% slower.
CHUNK_BYTES = 1 << 23
#: On a GPU: large enough that a chunk's GEMMs fill the device (few launches per step), at most
#: this much and a sixteenth of free memory.
GPU_CHUNK_BYTES = 1 << 30
#: J^T V uses the factorised form (no n x chunk elementwise pass) up to this many weight columns.
FACTORISED_COLUMNS = 2
#: Bytes of a cache line: a chunk's rows are whole lines (`aligned_width`).
CACHE_LINE = 64
#: A row length that is a multiple of this maps the rows of a chunk to a few cache sets (`aligned_width`).
SET_STRIDE = 2048


def default_chunk(n: int, k: int, itemsize: int, device: torch.device | str = "cpu") -> int:
    """Chunk width so that one chunk's n x chunk x (k + 2) buffers fit the device's budget (CHUNK_BYTES
    on a CPU; on a GPU GPU_CHUNK_BYTES or a sixteenth of free memory, the smaller), `aligned_width`."""
    device = torch.device(device)
    budget = CHUNK_BYTES
    if device.type == "cuda":
        budget = min(GPU_CHUNK_BYTES, available_memory(device) // 16)
    return aligned_width(budget // max(1, n * (k + 2) * itemsize), itemsize)


def aligned_width(chunk: int, itemsize: int) -> int:
    """The widest even width <= chunk (at least 2) whose rows are whole cache lines and not a multiple of
    SET_STRIDE bytes: the GEMMs write and read a chunk row by row, and MKL ran them 20% slower on rows
    that straddle lines (1364 float32 values against 1360) or that are 4 KiB long (1024 against 1008;
    AMD EPYC, Zen 4, GD step at n = 1024, d = 32, m = 65536, one thread)."""
    line = max(1, CACHE_LINE // itemsize)
    if chunk < 2 * line:
        return max(2, chunk - chunk % 2)
    chunk -= chunk % line
    return chunk - line if chunk * itemsize % SET_STRIDE == 0 else chunk


def available_memory(device: torch.device) -> int:
    """Bytes free on `device` (`resources.available`)."""
    return resources.available(device)


def transposed_product(E: torch.Tensor, R: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """E^T R for E (..., n, chunk) and R (..., n, c), in the operand order the BLAS runs fastest;
    out: a (..., chunk, c) tensor to write it into.

    Measured with MKL on this CPU (n = 128..4096, cache-sized chunks): E^T R is 1.13-1.35x faster than
    (R^T E)^T in float32 with c >= 16 columns; with fewer columns, in float64 and in batches of seeds
    (R^T E)^T, which keeps E in its row-major layout, is 1.2-6x faster.
    """
    if E.device.type == "cpu" and E.dtype == torch.float32 and R.shape[-1] >= 16 and E.dim() == 2:
        return torch.matmul(E.transpose(-1, -2), R, out=out) if out is not None else E.transpose(-1, -2) @ R
    product = (R.transpose(-1, -2) @ E).transpose(-1, -2)
    return product if out is None else out.copy_(product)


def thin_product(E: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """E @ A for E (..., n, chunk) and a thin A (..., chunk, k), in the operand order the BLAS runs fastest.

    Measured with MKL on this CPU: (A^T E^T)^T is 1.3-3x faster than E @ A for k = 2..9 (a GD step's
    softmax sums with [a, 1]: 41 -> 12 ms) and 2-6x for batches of seeds; for one 2-D E and k = 1
    E @ A (a GEMV) is as fast or faster.
    """
    if E.device.type == "cpu" and (E.dim() > 2 or A.shape[-1] > 1):
        return (A.transpose(-1, -2).contiguous() @ E.transpose(-1, -2)).transpose(-1, -2)
    return E @ A


def chunk_slices(m: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, m)) for start in range(0, m, chunk)]


def paired_matmul(P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """P @ A for neuron pairs (2r, 2r+1) with A_odd = -A_even exactly (a coupled init's a), as

        P_e A_e + P_o A_o = (P_e - P_o) A_e        (e: even neurons, o: odd)

    Where P_e = P_o too (equal weights: a coupled init's W(0)) this is exactly zero, where P @ A
    would be a rounding residue of the GEMM's summation order.
    """
    return thin_product(P[..., :, 0::2] - P[..., :, 1::2], A[..., 0::2, :])


def coupled_pairs(W: torch.Tensor, a: torch.Tensor) -> bool:
    """Whether every neuron pair (2r, 2r+1) is as a coupled init makes it, exactly: w_2r = w_2r+1 and
    a_2r = -a_2r+1. The first pair is compared first, so that a trained network costs O(d)."""
    if W.shape[-2] % 2 or not torch.equal(W[..., 0, :], W[..., 1, :]):
        return False
    return not bool((a[..., 0::2, :] + a[..., 1::2, :]).any()) and torch.equal(W[..., 0::2, :], W[..., 1::2, :])


def neuron_chunks(a: torch.Tensor, chunk: int, by_sign: bool, paired: bool) -> tuple[list, list]:
    """(chunks, runs): the neuron chunks the passes go through and per chunk its runs (see `Pass`).

    Slices of `chunk` consecutive neurons (runs None). With by_sign (softmax) and one output and two values of a
    (the papers' random signs), index sets of the neurons in the order of a_r, so that a takes one value
    on each run (two runs in one chunk, one in the others) and J^T V takes d GEMM columns instead of 2d
    ([a, 1], see `Pass.vjp`). Not where pairs are summed (paired: a coupled init's W(0)), whose members
    must stay side by side: a GEMM's columns for equal rows of W are equal only in the same position
    within its tiles (at n = 20, d = 6, pair halves 9 columns apart differed by 4e-16).
    """
    slices = chunk_slices(a.shape[-2], chunk)
    if not by_sign or paired or a.dim() != 2 or a.shape[-1] != 1 or len(slices) < 2:
        return slices, [None] * len(slices)
    return _sign_order(a[:, 0], slices) or (slices, [None] * len(slices))


def _sign_order(a: torch.Tensor, slices: list[slice]) -> tuple[list, list] | None:
    """The chunks of the neurons in the order of a_r and their runs; None unless a takes two values.
    The order is that of a stable sort, without one: the neurons of the lower value, then the others."""
    low, high = torch.aminmax(a)
    lower = a == low
    count, two_values, low, high = torch.stack([lower.sum().double(), (lower | (a == high)).all().double(),
                                                low.double(), high.double()]).tolist()  # one device sync
    if not two_values:
        return None
    order = torch.cat([lower.nonzero()[:, 0], lower.logical_not_().nonzero()[:, 0]])
    runs = []
    for neurons in slices:
        cut = min(max(int(count) - neurons.start, 0), neurons.stop - neurons.start)
        runs.append([(columns, value) for columns, value in
                     ((slice(0, cut), low), (slice(cut, neurons.stop - neurons.start), high))
                     if columns.stop > columns.start])
    return [order[neurons] for neurons in slices], runs


def scratch(E: torch.Tensor, workspace: torch.Tensor) -> torch.Tensor:
    """Space of E's shape in the workspace's spare last chunk, where a kept chunk's Z = X W^T is
    written before its activation is written into the chunk itself (`coefficients.forward`).

    The GEMM writes into memory that stays in cache, and only the activation's one streaming pass
    writes to main memory (AMD EPYC, Zen 4, n = 1024, d = 32, m = 65536 float32, chunks of 768
    neurons: the GEMMs X W^T 68 -> 52 ms, the exp2 20 -> 22 ms). J^T V reads the kept chunks where they
    are: copying each into this space first, which paid on an Intel Xeon (45 -> 35 ms), cost more than it
    saved here (copy 18 ms + GEMM 62 ms against the GEMM from main memory 68 ms)."""
    return workspace[-E.numel():].view(E.shape)


def rows(W: torch.Tensor, neurons: slice | torch.Tensor) -> torch.Tensor:
    """W[..., neurons, :] for a chunk (a slice: a view; an index set: `index_select`, 5x faster than
    indexing for a chunk of 672 neurons)."""
    return W[..., neurons, :] if isinstance(neurons, slice) else W.index_select(-2, neurons)


def chunk_width(neurons: slice | torch.Tensor) -> int:
    return neurons.stop - neurons.start if isinstance(neurons, slice) else len(neurons)


def chunk_outputs(X, W, chunks, keep, workspace):
    """(workspace, outputs): per neuron chunk the tensor its Z = X W^T is written into. With keep, views
    of one flat buffer (`workspace` if it is large enough, else a new one), whose last chunk-sized part
    is left free for the GEMM of each chunk (`scratch`); otherwise None (fresh)."""
    if not keep:
        return None, [None] * len(chunks)
    rows = tuple(np.broadcast_shapes(X.shape[:-2], W.shape[:-2])) + (X.shape[-2],)
    column = math.prod(rows)  # values per neuron
    size = column * (W.shape[-2] + max(map(chunk_width, chunks)))
    if (workspace is None or workspace.numel() < size or workspace.dtype != W.dtype
            or workspace.device != W.device):
        workspace = W.new_empty(size)
    outputs, offset = [], 0
    for neurons in chunks:
        width = chunk_width(neurons)
        outputs.append(workspace[offset:offset + column * width].view(*rows, width))
        offset += column * width
    return workspace, outputs


