"""The theory check's parallel-inputs test (`overparam.data.parallel_pairs`, a k-d tree) against all
pairs compared tile by tile with BLAS (what it replaced: O(n^2 d) time, one 2048 x 2048 tile of |cos|
at a time), in one process, round robin, best of `repeats`. Both must find the same pairs.

    python benchmarks/parallel_inputs.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from overparam.data import parallel_pairs

SHAPES = ((20000, 4), (20000, 64), (5000, 784))
QUICK_SHAPES = ((4000, 4), (4000, 64), (1000, 784))


def all_pairs(U: np.ndarray, atol: float = 1e-10, block: int = 2048) -> tuple[int, tuple[int, int] | None]:
    """The baseline: |<u_i, u_j>| >= 1 - atol over every tile of i < j."""
    count, example = 0, None
    for top in range(0, len(U), block):
        for left in range(top, len(U), block):
            rows, cols = np.nonzero(np.abs(U[top:top + block] @ U[left:left + block].T) >= 1 - atol)
            rows, cols = rows + top, cols + left
            above = cols > rows
            count += int(above.sum())
            if above.any():
                first = (int(rows[above][0]), int(cols[above][0]))
                example = first if example is None else min(example, first)
    return count, example


def inputs(n: int, d: int) -> np.ndarray:
    """Unit rows with one antiparallel and one parallel pair planted."""
    X = np.random.default_rng(0).standard_normal((n, d))
    X[7], X[n - 1] = -X[3], 2 * X[n // 2]
    return X / np.linalg.norm(X, axis=1)[:, None]


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    rows = []
    for n, d in QUICK_SHAPES if quick else SHAPES:
        U = inputs(n, d)
        best = {"tree": np.inf, "tiles": np.inf}
        for _ in range(repeats):  # round robin
            for name, check in (("tree", parallel_pairs), ("tiles", all_pairs)):
                start = time.perf_counter()
                found = check(U)
                best[name] = min(best[name], time.perf_counter() - start)
                assert found == (2, (3, 7)), (name, found)
        rows.append({"benchmark": f"parallel_pairs n={n} d={d}", "baseline": "all pairs in 2048 x 2048 BLAS tiles",
                     "ratio": best["tiles"] / best["tree"], "time_s": best["tree"], "baseline_s": best["tiles"],
                     "goal": ""})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    for row in run(options.quick, options.repeats):
        print(f"{row['benchmark']}: tree {row['time_s']:.3f} s, tiles {row['baseline_s']:.3f} s, "
              f"tiles / tree = {row['ratio']:.2f}")
