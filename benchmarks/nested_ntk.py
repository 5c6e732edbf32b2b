"""The nested-width kernel pass (`overparam.kernels.nested`) against the bare GEMMs of the same shapes, and the
fast pass (float32 chunk products, coupled pairs passed once) against the float64 pass it replaces.

Default shape (issue 14): n = 64, d = 8, one output, m = 2^22 neurons, widths 2^6 .. 2^22, float64.
The floor is what the pass cannot avoid: per chunk of c neurons the GEMM Z = X W_c^T (n x d x c) and
the running-sum GEMM (elementwise: E E^T, n x c x n; softmax: [E; E a] E^T, 2n x c x n), timed in the
same process on the same chunks. ratio = floor time / pass time (the fraction of the GEMMs' throughput
the pass reaches); goal >= 0.5. Both sides take the best of `--repeats` runs.

Fast pass (issue 22): n = 128, d = 8, m = 2^24, widths 2^6 .. 2^24, the study's coupled init. Baseline: the
float64 pass neuron by neuron (products=None, pairs=False: the pass before the change); fast: products="float32"
(and pairs, which coupled init allows). The two run in turns (round robin) in one process, best of each;
ratio = baseline time / fast time, goal >= 2.

    python benchmarks/nested_ntk.py [--n 64] [--d 8] [--log2m 22] [--activation relu exp softmax] [--repeats 3]
    python benchmarks/nested_ntk.py --fast [--n 128] [--log2m 24] [--init coupled] [--repeats 2]
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


def compare_fast(activation: str, n: int, d: int, log2m: int, init: str, repeats: int) -> dict:
    """The fast pass against the float64 neuron-by-neuron pass, in turns; both best of `repeats`."""
    X = torch.from_numpy(sphere(n, d).X)
    W, a = initial_weights(2**log2m, d, 1, init, seed=0)
    widths = [2**p for p in range(6, log2m + 1)]
    passes = {"float64": lambda: nested_ntk(X, W, a, activation, widths, pairs=False),
              "fast": lambda: nested_ntk(X, W, a, activation, widths, products="float32")}
    nested_ntk(X, W[:4096], a[:4096], activation, [4096], products="float32")  # warm-up
    times = {name: [] for name in passes}
    for _ in range(repeats):
        for name, work in passes.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    baseline, fast = min(times["float64"]), min(times["fast"])
    return {"benchmark": f"nested_ntk fast pass {activation} n={n} d={d} m=2^{log2m} {init}",
            "baseline": "float64 pass neuron by neuron (before issue 22)", "ratio": baseline / fast,
            "time_s": fast, "baseline_s": baseline, "goal": ">= 2", "load_average": os.getloadavg()[0]}


def run(quick: bool = False) -> list[dict]:
    """Rows for `python -m benchmarks` (quick: m = 2^18, fast pass at n = 64, m = 2^18)."""
    rows = [compare(activation, 64, 8, 18 if quick else 22, 2 if quick else 3) for activation in ACTIVATIONS]
    return rows + [compare_fast(activation, 64 if quick else 128, 8, 18 if quick else 24, "coupled", 2)
                   for activation in ACTIVATIONS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--log2m", type=int, default=22)
    parser.add_argument("--activation", nargs="+", default=list(ACTIVATIONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="the fast pass against the float64 pass")
    parser.add_argument("--init", default="coupled", help="coupled or independent (--fast)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast:
        for activation in args.activation:
            row = compare_fast(activation, args.n, args.d, args.log2m, args.init, args.repeats)
            print(f"{row['benchmark']}: float64 pass {row['baseline_s']:.2f} s, fast pass {row['time_s']:.2f} s, "
                  f"{row['ratio']:.2f}x faster (load {row['load_average']:.1f}, torch threads "
                  f"{torch.get_num_threads()})", flush=True)
        return
    for activation in args.activation:
        row = compare(activation, args.n, args.d, args.log2m, args.repeats)
        print(f"{row['benchmark']}: pass {row['time_s']:.3f} s, GEMM floor {row['baseline_s']:.3f} s, "
              f"{row['ratio']:.2f} of the GEMM throughput (chunk {row['chunk']}, load {row['load_average']:.1f})")


if __name__ == "__main__":
    main()
