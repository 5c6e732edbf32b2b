"""lambda_min(H*) matrix-free at large n (issue 27: relu, n = 10^5, d = 8 sphere): what one kernel pass costs,
how many passes the Nystrom-preconditioned block LOBPCG needs, and the whole spectrum as `overparam ntk
--infinite` computes it.

Part 1, one pass H* V at n (default 20,000) with V of 1 and of 16 columns, round robin in one process (wall and
process CPU seconds, best of --repeats; per entry of the lower triangle, and extrapolated to n = 10^5): before,
the row blocks of the lower triangle with relu's former kernel (inner (pi - arccos(inner / |x||x'|)) / 2 pi, out
of place, a finiteness check per block: the code of 2026-12-04's second session, kept here as the baseline);
the same tiles with each operation on torch's thread pool (workers=1, the third session's product); now,
`kernels.infinite.infinite_ntk_vector`'s cache-sized square tiles shared round robin among the threads, each
operation on one thread. ratio = each / now (wall).

Part 2, kernel passes to convergence on relu's H* at each --passes-n, H*'s row blocks cached so the counts
come fast (a count does not depend on how a pass is computed): `eigensolvers.nystrom_smallest` with each of
--ranks landmarks (default `eigensolvers.nystrom_rank`'s) and --blocks vectors, against eigvalsh where n <= 6000 (and --lanczos: Lanczos's products).

Part 3 (--run N): `kernels.comparison.spectrum` of relu's H* at N matrix-free as the CLI runs it (Nystrom
set-up, lambda_max, lambda_min): the wall time of each stage and of every tenth pass, CPU seconds, load.

    python benchmarks/lambda_min_large.py [--n 20000] [--repeats 2]
                                          [--passes-n 5000 10000 20000] [--blocks 1 16] [--ranks R ...]
                                          [--skip-product] [--lanczos] [--run N]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from overparam import chunks
from overparam.data import sphere
from overparam.kernels import eigensolvers
from overparam.kernels.comparison import spectrum
from overparam.kernels.infinite import infinite_ntk_vector
from overparam.kernels.spectra import kernel_operator


def _former_relu_kernel(X: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    inner = X @ X2.T
    rho = (inner / torch.outer(X.norm(dim=1), X2.norm(dim=1)).clamp_min(1e-300)).clamp(-1.0, 1.0)
    return inner * (torch.pi - torch.arccos(rho)) / (2 * torch.pi)


def _former_product(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The former H* V: row blocks of the lower triangle (columns up to the block's end), each checked finite."""
    n = X.shape[0]
    out = torch.zeros_like(V)
    for rows in chunks.chunk_slices(n, max(1, (1 << 27) // (8 * 4 * n))):
        lower = _former_relu_kernel(X[rows], X[:rows.stop])
        assert torch.isfinite(lower).all()
        lower[:, rows].diagonal().copy_(_former_relu_kernel(X[rows], X[rows]).diagonal())
        out[rows] += lower @ V[:rows.stop]
        out[:rows.start] += lower[:, :rows.start].T @ V[rows]
    return out


def product_cost(n: int, repeats: int) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    print(f"one pass H* V at n = {n}, d = 8 on {torch.get_num_threads()} threads (best of {repeats}; per entry of "
          "the lower triangle, and extrapolated to n = 10^5):", flush=True)
    entries = n * n / 2
    products = {"before": _former_product,
                "tiles, shared ops": lambda X, V: infinite_ntk_vector("relu", X, V, workers=1),
                "now": lambda X, V: infinite_ntk_vector("relu", X, V)}
    for columns in (1, 16):
        V = torch.randn(n, columns, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        best = {name: (math.inf, math.inf) for name in products}
        for _ in range(repeats):
            for name, product in products.items():
                wall, cpu = time.perf_counter(), time.process_time()
                product(X, V)
                spent = (time.perf_counter() - wall, time.process_time() - cpu)
                best[name] = tuple(min(a, b) for a, b in zip(best[name], spent))
        per = 1e9 / entries
        now = best["now"][0]
        line = ", ".join(f"{name} {wall:.2f} s ({wall * per:.1f} ns an entry, {cpu * per:.1f} CPU ns; ratio "
                         f"{wall / now:.2f})" for name, (wall, cpu) in best.items())
        print(f"  {columns:2d} columns: {line}; at n = 10^5 now {now * per * 5e9 / 1e9:.0f} s a pass "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)


def passes(n: int, blocks: list[int], lanczos: bool, ranks: list[int | None]) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    operator = kernel_operator("relu", X, cache=True)
    reference = float(np.linalg.eigvalsh(operator.dense().numpy())[0]) if n <= 6000 else None
    for rank in ranks:
        start = time.perf_counter()
        precondition = eigensolvers.nystrom_preconditioner(operator, rank)
        line = f"n = {n}, {precondition.rank} landmarks (set-up {time.perf_counter() - start:.0f} s):"
        for block in blocks:
            start = time.perf_counter()
            found = eigensolvers.nystrom_smallest(operator, block=block, precondition=precondition)
            line += (f" {block} vectors {found.value:.13g} in {found.matvecs} passes (relative residual "
                     f"{found.residual / found.value:.2g}, converged {found.converged}, "
                     f"{time.perf_counter() - start:.0f} s);")
        print(line + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    line = f"n = {n}:"
    if lanczos:
        other = eigensolvers.lanczos(operator, "SA")
        line += f" lanczos {other.value:.13g} in {other.matvecs} products, converged {other.converged};"
    if reference is not None:
        line += f" eigvalsh {reference:.13g}"
    print(line, flush=True)


def run(n: int) -> None:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    operator = kernel_operator("relu", X, cache=False)
    wall, cpu = time.perf_counter(), time.process_time()
    seen: dict[str, float] = {}

    def progress(stage, done, total):
        now = time.perf_counter() - wall
        first = stage not in seen
        seen.setdefault(stage, now)
        if first or (total is not None and done >= total) or (stage.startswith("LOBPCG") and done % 10 == 0):
            print(f"  {now:7.0f} s  {stage}: {done}/{total} (load {os.getloadavg()[0]:.1f})", flush=True)

    result = spectrum(operator, progress=progress)
    print(f"matrix-free n = {n}: lambda_min {result.lambda_min:.13g} ({result.method}, converged {result.converged}, "
          f"residual {result.lambda_min_residual:.2g}, relative {result.lambda_min_residual / result.lambda_min:.2g}), "
          f"lambda_max {result.lambda_max:.13g}, rounding {result.rounding}; {time.perf_counter() - wall:.0f} s wall, "
          f"{time.process_time() - cpu:.0f} CPU s, load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--passes-n", type=int, nargs="*", default=[5000, 10000, 20000])
    parser.add_argument("--blocks", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--lanczos", action="store_true")
    parser.add_argument("--ranks", type=int, nargs="*", default=[None],
                        help="landmarks of the Nystrom preconditioner for the pass counts (default: nystrom_rank's)")
    parser.add_argument("--skip-product", action="store_true", help="only the pass counts (part 2)")
    parser.add_argument("--run", type=int, default=None)
    args = parser.parse_args()
    if args.run:
        run(args.run)
        return
    if not args.skip_product:
        product_cost(args.n, args.repeats)
    for n in args.passes_n:
        passes(n, args.blocks, args.lanczos, args.ranks)


if __name__ == "__main__":
    main()
