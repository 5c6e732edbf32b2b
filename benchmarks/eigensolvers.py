"""lambda_min(H*) by each eigensolver (overparam.kernels.eigensolvers), and the automatic choice at n = 20,000.

Part 1, the solvers on one dense H* (exp, d = 8 sphere), timed round robin in one process, best of
`--repeats`: torch's eigvalsh (every eigenvalue: the dense route and the baseline), scipy's eigvalsh
with driver evd (every eigenvalue) and with driver evr for the smallest alone (subset_by_index=[0, 0]),
and the Cholesky route (`cholesky_smallest`: factor, then Lanczos on H^-1; lambda_max given).
ratio = eigvalsh time / the solver's time.

Part 2, `overparam ntk --infinite` as the CLI runs it (`kernel_comparison.spectrum` with
--eigensolver auto) at n = 20,000, d = 8 for relu, exp and softmax: wall seconds per stage (kernel
build, lambda_max, factorisation, Lanczos on H^-1), the process's CPU seconds (on a machine shared
with other jobs the wall time says more about them than about the solver) and the load average.

    python benchmarks/eigensolvers.py [--n 2000 4000] [--repeats 2] [--large-n 20000]
                                      [--activation relu exp softmax] [--skip-large]
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

from overparam.data import sphere  # noqa: E402
from overparam.kernels.eigensolvers import cholesky_smallest, largest_of_matrix  # noqa: E402
from overparam.kernels.comparison import spectrum  # noqa: E402
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.spectra import kernel_operator  # noqa: E402


def solvers(H: torch.Tensor, high: float) -> dict:
    import scipy.linalg

    A = H.numpy()
    return {
        "torch eigvalsh (all)": lambda: float(torch.linalg.eigvalsh(H)[0]),
        "scipy eigvalsh evd (all)": lambda: float(scipy.linalg.eigvalsh(A, driver="evd", check_finite=False)[0]),
        "scipy eigvalsh evr [0, 0]": lambda: float(scipy.linalg.eigvalsh(A, driver="evr", subset_by_index=[0, 0],
                                                                         check_finite=False)[0]),
        "cholesky + Lanczos on H^-1": lambda: cholesky_smallest(H, high).value,
    }


def compare(n: int, repeats: int) -> list[dict]:
    H = infinite_ntk("exp", torch.from_numpy(sphere(n, 8, seed=0).X))
    high = largest_of_matrix(H).value
    timings: dict[str, list[float]] = {}
    values: dict[str, float] = {}
    for _ in range(repeats):  # round robin: every solver sees the same phases of the machine's load
        for name, solve in solvers(H, high).items():
            start = time.perf_counter()
            values[name] = solve()
            timings.setdefault(name, []).append(time.perf_counter() - start)
    base = min(timings["torch eigvalsh (all)"])
    rows = []
    for name, times in timings.items():
        rows.append({"benchmark": f"eigensolvers lambda_min(H*(exp)) n={n} d=8: {name}",
                     "baseline": "torch eigvalsh (all)", "time_s": min(times), "baseline_s": base,
                     "ratio": base / min(times), "goal": "", "lambda_min": values[name],
                     "rounding_level": float(np.finfo(np.float64).eps * n * high)})
    return rows


def large(activation: str, n: int) -> dict:
    X = torch.from_numpy(sphere(n, 8, seed=0).X)
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()
    stages: dict[str, list[float]] = {}

    def progress(stage: str, done, total) -> None:
        now = time.perf_counter() - start
        stages.setdefault(stage, [now, now])[1] = now

    found = spectrum(kernel_operator(activation, X), progress=progress)
    wall = time.perf_counter() - start
    return {"benchmark": f"eigensolvers overparam ntk --infinite --activation {activation} --n {n} --d 8",
            "baseline": "", "ratio": None, "goal": "", "time_s": wall, "cpu_s": time.process_time() - cpu,
            "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
            "stages_s": {stage: round(end - begin, 1) for stage, (begin, end) in stages.items()},
            **found.as_dict()}


def run(quick: bool = False) -> list[dict]:
    return compare(1000 if quick else 4000, 1 if quick else 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--large-n", type=int, default=20000)
    parser.add_argument("--activation", nargs="+", default=["relu", "exp", "softmax"])
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()
    if not args.skip_compare:
        for n in args.n:
            for row in compare(n, args.repeats):
                print(f"{row['benchmark']}: {row['time_s']:.2f} s, {row['ratio']:.2f}x eigvalsh's speed, "
                      f"lambda_min {row['lambda_min']:.6g} (rounding level {row['rounding_level']:.2g})", flush=True)
    if not args.skip_large:
        for activation in args.activation:
            print(large(activation, args.large_n), flush=True)


if __name__ == "__main__":
    main()
