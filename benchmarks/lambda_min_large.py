"""lambda_min(H*) matrix-free at large n (issue 27: relu, n = 10^5, d = 8 sphere): what one product costs and
how many products each eigensolver needs.

Part 1, the product H* v at n (default 10^5), timed on row blocks near the end of the matrix, round robin in
one process: the full row blocks of before (`kernels.infinite.kernel_rows` @ v, n^2 kernel entries per product) against
the lower-triangle blocks of `ntk.infinite_ntk_vector` (n^2 / 2 entries); each rate (entries per second)
extrapolated to one whole product. ratio = full-row product time / lower-triangle product time.

Part 2, products to convergence on relu's H* at each --passes-n, the operator's row blocks cached so that
the count comes fast (a count does not depend on how a product is computed): `eigensolvers.nystrom_smallest`
(passes; one pass is one product with a block of vectors) and, with --lanczos, Lanczos (`eigensolvers.lanczos`,
products), both against the dense eigvalsh value where n <= 6000.

Part 3 (--setup): the Nystrom preconditioner's set-up at n (its columns, factor and SVD), timed once.

Part 4 (--run N): lambda_min(H*) at N by `eigensolvers.nystrom_smallest` matrix-free (no cached blocks: every
pass recomputes the kernel's entries), with the wall time of the set-up and of each pass, the load average
and the answer (against the dense eigvalsh value where N <= 6000).

    python benchmarks/lambda_min_large.py [--n 100000] [--rows 256] [--repeats 2] [--passes-n 5000 10000 20000]
                                          [--lanczos] [--setup] [--run N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from overparam.kernels import eigensolvers  # noqa: E402
from overparam.data import sphere  # noqa: E402
from overparam.kernels.infinite import kernel_rows
from overparam.kernels.spectra import kernel_operator
from overparam.kernels.infinite import infinite_ntk  # noqa: E402


def product_cost(n: int, rows: int, repeats: int) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    v = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    last = slice(n - rows, n)
    rates: dict[str, list[float]] = {"full rows": [], "lower triangle": []}
    for _ in range(repeats):
        start = time.perf_counter()
        kernel_rows("relu", X, last, 1.0) @ v
        rates["full rows"].append(rows * n / (time.perf_counter() - start))
        start = time.perf_counter()  # the last rows of the lower triangle: rows x n entries
        _lower_rows(X, last, v)
        rates["lower triangle"].append(rows * n / (time.perf_counter() - start))
    full = n * n / max(rates["full rows"])
    lower = n * n / 2 / max(rates["lower triangle"])
    print(f"product H* v at n = {n}, d = 8 (best of {repeats} x {rows} rows; load {os.getloadavg()[0]:.1f}):")
    print(f"  full rows      {max(rates['full rows']):.3g} entries/s -> {full:.0f} s per product")
    print(f"  lower triangle {max(rates['lower triangle']):.3g} entries/s -> {lower:.0f} s per product "
          f"(ratio {full / lower:.2f})", flush=True)


def _lower_rows(X: torch.Tensor, rows: slice, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The work of `infinite_ntk_vector` on one row block of the lower triangle (columns up to its end)."""
    lower = infinite_ntk("relu", X[rows], 1.0, X2=X[:rows.stop])
    lower[:, rows].diagonal().copy_(infinite_ntk("relu", X[rows], 1.0).diagonal())
    return lower @ v[:rows.stop], lower[:, :rows.start].T @ v[rows]


def passes(n: int, lanczos: bool) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    operator = kernel_operator("relu", X, cache=True)
    reference = float(np.linalg.eigvalsh(operator.dense().numpy())[0]) if n <= 6000 else None
    start = time.perf_counter()
    found = eigensolvers.nystrom_smallest(operator)
    line = (f"n = {n}: nystrom {found.value:.12g} in {found.matvecs} passes, residual {found.residual:.2g} "
            f"(relative {found.residual / found.value:.2g}), converged {found.converged}, "
            f"{time.perf_counter() - start:.0f} s with cached blocks")
    if lanczos:
        start = time.perf_counter()
        other = eigensolvers.lanczos(operator, "SA")
        line += (f"; lanczos {other.value:.12g} in {other.matvecs} products, converged {other.converged}, "
                 f"{time.perf_counter() - start:.0f} s")
    if reference is not None:
        line += f"; eigvalsh {reference:.12g}"
    print(line + f" (load {os.getloadavg()[0]:.1f})", flush=True)


def setup(n: int) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    operator = kernel_operator("relu", X, cache=False)
    stages = {}

    def progress(stage, done, total):
        stages[done] = time.perf_counter()

    start = time.perf_counter()
    eigensolvers.nystrom_preconditioner(operator, progress=progress)
    marks = [start] + [stages[k] for k in sorted(stages) if k > 0]
    print(f"Nystrom set-up at n = {n}: columns {marks[1] - marks[0]:.0f} s, factor and solve "
          f"{marks[2] - marks[1]:.0f} s, SVD {marks[3] - marks[2]:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)


def run(n: int) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    operator = kernel_operator("relu", X, cache=False)
    start, marks = time.perf_counter(), {}

    def progress(stage, done, total):
        now = time.perf_counter()
        if stage.startswith("LOBPCG") and done not in marks and done < total:
            marks[done] = now
            print(f"  pass {done} at {now - start:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        elif stage.startswith("Nystrom") and done == total:
            print(f"  Nystrom set-up done at {now - start:.0f} s", flush=True)

    found = eigensolvers.nystrom_smallest(operator, progress=progress)
    total = time.perf_counter() - start
    times = sorted(marks.values())
    per_pass = (times[-1] - times[0]) / max(1, len(times) - 1)
    print(f"matrix-free n = {n}: lambda_min {found.value:.12g}, {found.matvecs} passes ({per_pass:.1f} s each), "
          f"residual {found.residual:.2g} (relative {found.residual / found.value:.2g}), converged "
          f"{found.converged}, {total:.0f} s in all, load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--passes-n", type=int, nargs="*", default=[5000, 10000, 20000])
    parser.add_argument("--lanczos", action="store_true")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--run", type=int, default=None)
    args = parser.parse_args()
    if args.run:
        run(args.run)
        return
    product_cost(args.n, args.rows, args.repeats)
    for n in args.passes_n:
        passes(n, args.lanczos)
    if args.setup:
        setup(args.n)


if __name__ == "__main__":
    main()
