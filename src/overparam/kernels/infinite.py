"""The infinite-width kernel H* = lim_{m -> oo} H(W(0)) (docs/mathematics.md#ntk, #elementwise), whole or by
row blocks, and its product with vectors.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

from .. import activations, chunks

#: Bytes one row block of H* may take where H* is formed or cached by row blocks.
BLOCK_BYTES = 1 << 27
#: Side of the square tiles of the product H* v: 8 MiB of float64 entries, which stay in cache.
PRODUCT_TILE = 1024


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
    check_sigma(sigma)
    kernel = activation.infinite_kernel(X, sigma, X2)
    if out_dim > 1:
        kernel = torch.kron(torch.eye(out_dim, dtype=kernel.dtype, device=kernel.device), kernel)
    return kernel


def check_sigma(sigma: float) -> None:
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be positive and finite, got {sigma!r}")


def finite_limit(kernel: torch.Tensor, activation, sigma: float, X: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(kernel).all():
        raise OverflowError(f"H*({activations.resolve(activation).name}) overflows float64 at sigma = {sigma:g} "
                            f"(largest ||x_i|| = {float(X.norm(dim=1).max()):.3g}); use a smaller sigma or inputs "
                            "with ||x|| <= 1")
    return kernel


def kernel_rows(activation, X: torch.Tensor, rows: slice, sigma: float) -> torch.Tensor:
    """Rows `rows` of H*(X, X), finite (`finite_limit`), with the diagonal of H*(X[rows]) itself: a cross
    kernel does not know which of its entries pair a point with itself (relu's arc-cosine kernel rounds
    them up to 1e-8 relative off, `activations._relu_kernel`)."""
    block = finite_limit(infinite_ntk(activation, X[rows], sigma, X2=X), activation, sigma, X)
    square = infinite_ntk(activation, X[rows], sigma)
    block[:, rows].diagonal().copy_(square.diagonal())
    return block


def infinite_ntk_vector(activation: str | activations.Activation, X, V: torch.Tensor, sigma: float = 1.0,
                        tile: int = PRODUCT_TILE, workers: int | None = None) -> torch.Tensor:
    """H* V for V of shape (n, c), by square tiles of H*'s lower triangle: tile (I, J) with J before I gives
    out[I] += H*_IJ V_J and, by symmetry, out[J] += H*_IJ^T V_I; a diagonal tile H*(X_I) is whole, with its
    exact diagonal (see `kernel_rows`). O(n^2 d) work on half the kernel entries, O(tile^2) memory: a tile
    stays in cache through the kernel's elementwise steps and both products, which accumulate in out^T
    (c, n) so that each reads the tile row by row. Non-finite entries (exp and softmax at large sigma)
    make the product non-finite, and raise OverflowError as `finite_limit` does.

    On the CPU the tiles are shared round robin among `workers` threads (default: torch's thread count), each
    running its tiles' operations on one thread into its own out^T, summed at the end: a tile's operations
    are too small to share well between threads (benchmarks/lambda_min_large.py)."""
    activation = activations.resolve(activation)
    X = torch.as_tensor(X, dtype=torch.float64)
    V = V.to(X.device)
    transposed = V.T.contiguous()
    slices = chunks.chunk_slices(X.shape[0], tile)
    tiles = [(rows, cols) for i, rows in enumerate(slices) for cols in slices[:i + 1]]
    workers = (torch.get_num_threads() if X.device.type == "cpu" else 1) if workers is None else workers
    workers = max(1, min(workers, len(tiles)))

    def accumulate(mine: list[tuple[slice, slice]]) -> torch.Tensor:
        out = torch.zeros_like(transposed)
        for rows, cols in mine:
            own = X[rows]
            block = activation.infinite_kernel(own, sigma, own if cols == rows else X[cols]).to(V.dtype)
            out[:, rows].addmm_(transposed[:, cols], block.T)
            if cols != rows:
                out[:, cols].addmm_(transposed[:, rows], block)
        return out

    if workers == 1:
        out = accumulate(tiles)
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                out = sum(pool.map(accumulate, [tiles[w::workers] for w in range(workers)]))
        finally:
            torch.set_num_threads(threads)
    return finite_limit(out, activation, sigma, X).T.contiguous()


def infinite_columns(activation, X: torch.Tensor, sigma: float, out_dim: int, index: torch.Tensor) -> torch.Tensor:
    """Columns `index` of I_k (x) H* (output-major: column l*n + j is output l at x_j), (k n, len(index)),
    with the exact diagonal entries of `kernel_rows`. Formed by groups of columns (BLOCK_BYTES each), so that
    the memory is the result's and one group's (the Nystrom eigensolver takes thousands at n = 10^5)."""
    n = X.shape[0]
    index = torch.as_tensor(index, dtype=torch.long)
    columns = X.new_zeros(out_dim * n, len(index))
    for group in chunks.chunk_slices(len(index), max(1, BLOCK_BYTES // (8 * 4 * n))):
        points, outputs = index[group] % n, index[group] // n
        block = finite_limit(infinite_ntk(activation, X[points], sigma, X2=X), activation, sigma, X)  # (s, n)
        block[torch.arange(len(points)), points] = infinite_ntk(activation, X[points], sigma).diagonal()
        for output in range(out_dim):
            mine = torch.nonzero(outputs == output).flatten()
            columns[output * n:(output + 1) * n, group.start + mine] = block[mine].T
    return columns
