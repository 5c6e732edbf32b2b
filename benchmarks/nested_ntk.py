"""The nested-width kernel pass (`overparam.kernels.nested`) against the bare GEMMs of the same shapes.

Default shape (issue 14): n = 64, d = 8, one output, m = 2^22 neurons, widths 2^6 .. 2^22, float64.
The floor is what the pass cannot avoid: per chunk of c neurons the GEMM Z = X W_c^T (n x d x c) and
the running-sum GEMM (elementwise: E E^T, n x c x n; softmax: [E; E a] E^T, 2n x c x n), timed in the
same process on the same chunks. ratio = floor time / pass time (the fraction of the GEMMs' throughput
the pass reaches); goal >= 0.5. Both sides take the best of `--repeats` runs.

    python benchmarks/nested_ntk.py [--n 64] [--d 8] [--log2m 22] [--activation relu exp softmax] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from overparam import chunks
from overparam.data import sphere
from overparam.models import initial_weights
from overparam.kernels.nested import nested_ntk

ACTIVATIONS = ("relu", "exp", "softmax")


def best_time(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_floor(X: torch.Tensor, W: torch.Tensor, chunk: int, rows: int) -> None:
    """Z = X W_c^T and a (rows x c) @ (c x n) accumulation per chunk: the GEMMs of the pass, nothing else."""
    n = X.shape[0]
    gram = X.new_zeros(rows, n)
    left = X.new_empty(rows, chunk)
    for neurons in chunks.chunk_slices(W.shape[0], chunk):
        Z = X @ W[neurons].T
        width = Z.shape[1]
        gram.addmm_(left[:, :width], Z.T)


def compare(activation: str, n: int, d: int, log2m: int, repeats: int) -> dict:
    X = torch.from_numpy(sphere(n, d).X)
    W, a = initial_weights(2**log2m, d, 1, seed=0)
    widths = [2**p for p in range(6, log2m + 1)]
    chunk = chunks.default_chunk(n, 2, W.element_size(), W.device)
    rows = n if activation != "softmax" else 2 * n
    nested_ntk(X, W[:4096], a[:4096], activation, [4096])  # warm-up
    pass_s = best_time(lambda: nested_ntk(X, W, a, activation, widths, chunk), repeats)
    floor_s = best_time(lambda: gemm_floor(X, W, chunk, rows), repeats)
    return {"benchmark": f"nested_ntk {activation} n={n} d={d} widths 2^6..2^{log2m} float64",
            "baseline": "bare GEMMs of the same shapes (X W^T and the running sum)", "ratio": floor_s / pass_s,
            "time_s": pass_s, "baseline_s": floor_s, "goal": ">= 0.5 of the GEMM throughput", "chunk": chunk,
            "load_average": os.getloadavg()[0]}


def run(quick: bool = False) -> list[dict]:
    """Rows for `python -m benchmarks` (quick: m = 2^18)."""
    return [compare(activation, 64, 8, 18 if quick else 22, 2 if quick else 3) for activation in ACTIVATIONS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--log2m", type=int, default=22)
    parser.add_argument("--activation", nargs="+", default=list(ACTIVATIONS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for activation in args.activation:
        row = compare(activation, args.n, args.d, args.log2m, args.repeats)
        print(f"{row['benchmark']}: pass {row['time_s']:.3f} s, GEMM floor {row['baseline_s']:.3f} s, "
              f"{row['ratio']:.2f} of the GEMM throughput (chunk {row['chunk']}, load {row['load_average']:.1f})")


if __name__ == "__main__":
    main()
