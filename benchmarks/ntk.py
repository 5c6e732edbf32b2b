"""The finite NTK against both torch.func recipes, and lambda_min at n = 20,000 matrix-free.

Default shapes (issue 3): n = 1024, d = 32, m = 16384, float64, relu and softmax. Three ways to get
Theta (nk x nk), each in a fresh subprocess of this script so that its peak memory (VmHWM, the
resident high-water mark, minus the resident size before the call) is its own:
- overparam: `overparam.ntk(net, X, normalized=False)`, Gram matrices of the per-neuron
  coefficients chunked over neurons;
- torch.func Jacobian contraction (the "Neural Tangent Kernels" tutorial): per-example Jacobians by
  vmap(jacrev(f)) over examples, then einsum J J^T;
- torch.func NTK-vector products (same tutorial): vjp then jvp for every basis vector of the
  output, vmapped; here over the whole batch's nk outputs (the tutorial vmaps over example pairs,
  which costs n times more), in vmap chunks of VPS_CHUNK_BYTES working memory.
Time is the best of `--repeats` calls after one warm-up (the baselines: one call after a warm-up at
n = 8). The kernels are checked against overparam's (max relative difference printed).
ratio = time (memory) of the better torch.func recipe / overparam's; goal >= 25x faster, >= 30x less.

lambda_min at n = 20,000: `overparam.lambda_min` of H* (relu, d = 32 sphere) by Lanczos on the row-block
product (`--cache auto` keeps the row blocks when they fit in a quarter of free memory, 3.2 GB at
n = 20,000; `--cache no` recomputes them in every product: O(block n) memory, slower).

    python benchmarks/ntk.py [--n 1024] [--d 32] [--m 16384] [--activation relu softmax] [--repeats 3]
                             [--lambda-n 20000] [--lambda-d 32] [--cache auto|yes|no] [--skip-lambda] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("overparam", "jacobian_contraction", "ntk_vector_products")
#: Seconds a baseline may run before it is stopped; its time is then reported as at least this.
BASELINE_TIMEOUT_S = 300
#: Working memory allowed to one vmap chunk of the NTK-vector-product recipe: unchunked, its vmapped
#: jvp holds nk x n x m values (137 GB at the default shape); chunks keep it runnable at the same flops.
VPS_CHUNK_BYTES = 2 << 30


# ----------------------------------------------------------------------------- memory


def _status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory(fn, device: str = "cpu"):
    """(result, bytes): fn's peak memory above what was in use before it ran. CPU: resident memory
    (Linux: resets the high-water mark through /proc/self/clear_refs); GPU: torch's allocations."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn()
        return result, max(0, torch.cuda.max_memory_allocated() - before)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    result = fn()
    return result, max(0, _status("VmHWM") - before)


# ----------------------------------------------------------------------------- the three recipes


def network_function(activation: str, kappa: float, a: torch.Tensor):
    """F(W, X) written directly (docs/mathematics.md#networks), as a torch.func user would."""

    def forward(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        Z = X @ W.T
        if activation == "relu":
            phi = torch.relu(Z)
        elif activation == "exp":
            phi = torch.exp(Z)
        else:
            phi = W.shape[0] * torch.softmax(Z, dim=-1)
        return kappa * phi @ a

    return forward


def jacobian_contraction(f, W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    from torch.func import jacrev, vmap

    J = vmap(jacrev(lambda W, x: f(W, x[None])[0]), (None, 0))(W, X)  # (n, k, m, d)
    J = J.flatten(2)
    theta = torch.einsum("Naf,Mbf->aNbM", J, J)  # output-major like overparam
    n, k = X.shape[0], J.shape[1]
    return theta.reshape(k * n, k * n)


def ntk_vector_products(f, W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    from torch.func import jvp, vjp, vmap

    output, vjp_fn = vjp(lambda W: f(W, X), W)
    n, k = output.shape

    def column(vector: torch.Tensor) -> torch.Tensor:
        (direction,) = vjp_fn(vector.reshape(k, n).T)
        _, tangent = jvp(lambda W: f(W, X), (W,), (direction,))
        return tangent.T.reshape(-1)

    basis = torch.eye(n * k, dtype=output.dtype, device=output.device)
    chunk = max(1, VPS_CHUNK_BYTES // (4 * output.element_size() * n * W.shape[0]))
    return vmap(column, chunk_size=chunk)(basis).T


def _problem(activation: str, n: int, d: int, m: int, dtype: str, device: str):
    from overparam import TwoLayerNet
    from overparam.data import sphere

    X = torch.from_numpy(sphere(n, d, seed=0).X).to(getattr(torch, dtype)).to(device)
    net = TwoLayerNet(d, m, 1, activation, seed=0, dtype=dtype, device=device)
    return net, X


def _compute(method: str, net, X) -> torch.Tensor:
    import overparam

    if method == "overparam":
        return overparam.ntk(net, X, normalized=False)
    f = network_function(net.activation, net.kappa, net.a)
    recipe = jacobian_contraction if method == "jacobian_contraction" else ntk_vector_products
    return recipe(f, net.W, X)


def worker(method: str, activation: str, n: int, d: int, m: int, dtype: str, device: str, repeats: int,
           save: str) -> dict:
    """Runs in the subprocess: time and peak memory of one method; saves its kernel to `save`."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    warm_net, warm_X = _problem(activation, 8, d, min(m, 64), dtype, device)
    _compute(method, warm_net, warm_X)
    net, X = _problem(activation, n, d, m, dtype, device)
    times, peak, kernel = [], 0, None
    def timed():
        start = time.perf_counter()
        result = _compute(method, net, X)
        sync()
        times.append(time.perf_counter() - start)
        return result

    for _ in range(repeats if method == "overparam" else 1):
        kernel = None
        kernel, memory = peak_memory(timed, device)  # its clean-up (gc, cache release) is not timed
        peak = max(peak, memory)
    np.save(save, kernel.double().cpu().numpy())
    result = {"method": method, "time_s": min(times), "peak_bytes": peak}
    if method == "overparam":
        result["gemm_floor_s"], result["lower_gemm_floor_s"] = gram_floors(n, m, getattr(torch, dtype), device,
                                                                          repeats)
    return result


def gram_floors(n: int, m: int, dtype: torch.dtype, device: str, repeats: int) -> tuple[float, float]:
    """Best times of the bare GEMM C C^T, C (n, m), the floor of the finite kernel (k = 1), and of
    the lower-triangle GEMMs overparam sums it with where it can (`ntk._lower_gram_update`; the
    same GEMM elsewhere): the tighter floor."""
    from overparam.kernels.finite import _lower_gram_update

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    C = torch.randn(n, m, dtype=dtype, device=device)
    gram = torch.zeros(n, n, dtype=dtype, device=device)
    lower = _lower_gram_update(gram) or (lambda C: gram.addmm_(C, C.T))
    floors = []
    for product in (lambda: C @ C.T, lambda: lower(C)):
        product()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            sync()
            times.append(time.perf_counter() - start)
        floors.append(min(times))
    return floors[0], floors[1]


def measure(activation="relu", n=1024, d=32, m=16384, dtype="float64", device="cpu", repeats=3,
            methods=METHODS, timeout: float = BASELINE_TIMEOUT_S) -> dict:
    """Each method in its own subprocess; returns times, peak memory and agreement with overparam."""
    results, kernels = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for method in methods:
            save = os.path.join(folder, f"{method}.npy")
            command = [sys.executable, __file__, "--worker", method, "--activation", activation, "--n", str(n),
                       "--d", str(d), "--m", str(m), "--dtype", dtype, "--device", device,
                       "--repeats", str(repeats), "--save", save]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:  # the child is killed; its time is at least the timeout
                results[method] = {"error": f"stopped after {timeout:.0f} s", "stopped_s": timeout}
                continue
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["killed"]
                results[method] = {"error": f"exit {done.returncode}: {tail[0]}"}
                continue
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            kernels[method] = np.load(save)
    if "overparam" in kernels:
        reference = kernels["overparam"]
        for method, kernel in kernels.items():
            results[method]["max_relative_difference"] = float(np.abs(kernel - reference).max()
                                                               / np.abs(reference).max())
    return {"activation": activation, "n": n, "d": d, "m": m, "dtype": dtype, "device": device, **results}


# ----------------------------------------------------------------------------- lambda_min at scale


def lambda_min_at_scale(n=20000, d=32, activation="relu", cache="auto") -> dict:
    """lambda_min(H*) by Lanczos on the row-block product: time, peak memory, convergence."""
    from overparam.data import sphere
    from overparam.kernels.spectra import kernel_operator, lambda_min

    X = torch.from_numpy(sphere(n, d, seed=0).X)
    operator = kernel_operator(activation, X, cache={"auto": None, "yes": True, "no": False}[cache])
    start = time.perf_counter()
    result, memory = peak_memory(lambda: lambda_min(operator, dense_limit=0))
    return {"n": n, "d": d, "activation": activation, "cache": cache, "time_s": time.perf_counter() - start,
            "peak_bytes": memory, "lambda_min": result.value, "converged": result.converged,
            "residual": result.residual, "matvecs": result.matvecs, "method": result.method,
            "dense_bytes": 8 * n * n}


# ----------------------------------------------------------------------------- reports


def _ratios(r: dict) -> tuple[str, float, float] | None:
    """(better baseline, time ratio, memory ratio) against overparam, or None if missing."""
    ours = r.get("overparam", {})
    baselines = [(name, r[name]) for name in METHODS[1:] if "time_s" in r.get(name, {})]
    if "time_s" not in ours or not baselines:
        return None
    name, best = min(baselines, key=lambda item: item[1]["time_s"])
    least_memory = min(b["peak_bytes"] for _, b in baselines)
    return name, best["time_s"] / ours["time_s"], least_memory / max(ours["peak_bytes"], 1)


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Rows for `python -m benchmarks`."""
    rows = []
    for activation in ("relu", "softmax"):
        r = measure(activation, n=256 if quick else 1024, m=2048 if quick else 16384, repeats=2 if quick else 3,
                    device=device, timeout=60 if quick else BASELINE_TIMEOUT_S)
        ratios = _ratios(r)
        shape = f"ntk {activation} n={r['n']} d={r['d']} m={r['m']} float64 {device}"
        if "gemm_floor_s" in r.get("overparam", {}):
            rows.append({"benchmark": shape, "baseline": "bare C C^T GEMM (floor)",
                         "ratio": r["overparam"]["time_s"] / r["overparam"]["gemm_floor_s"],
                         "time_s": r["overparam"]["time_s"], "baseline_s": r["overparam"]["gemm_floor_s"],
                         "goal": "<= 1.2x the floor"})
            rows.append({"benchmark": shape, "baseline": "lower-triangle C C^T GEMMs (tight floor)",
                         "ratio": r["overparam"]["time_s"] / r["overparam"]["lower_gemm_floor_s"],
                         "time_s": r["overparam"]["time_s"], "baseline_s": r["overparam"]["lower_gemm_floor_s"],
                         "goal": "<= 1.2x the floor"})
        for name in METHODS[1:]:
            if "stopped_s" in r.get(name, {}) and "time_s" in r.get("overparam", {}):
                rows.append({"benchmark": shape, "baseline": f"torch.func {name} (stopped: a lower bound)",
                             "ratio": r[name]["stopped_s"] / r["overparam"]["time_s"],
                             "time_s": r["overparam"]["time_s"], "baseline_s": r[name]["stopped_s"], "goal": ""})
        if ratios is None:
            rows.append({"benchmark": shape, "baseline": "torch.func", "ratio": None, "time_s": None,
                         "baseline_s": None, "goal": ">= 25x faster", "note": json.dumps(r)})
            continue
        name, speed, memory = ratios
        rows.append({"benchmark": shape, "baseline": f"torch.func {name}", "ratio": speed,
                     "time_s": r["overparam"]["time_s"], "baseline_s": r[name]["time_s"], "goal": ">= 25x faster",
                     "peak_mb": r["overparam"]["peak_bytes"] / 2**20})
        rows.append({"benchmark": shape + " peak memory", "baseline": "torch.func (less memory of the two)",
                     "ratio": memory, "time_s": r["overparam"]["time_s"], "baseline_s": r[name]["time_s"],
                     "goal": ">= 30x less"})
    scale = lambda_min_at_scale(n=2000 if quick else 20000)
    rows.append({"benchmark": f"lambda_min(H*) relu n={scale['n']} d={scale['d']} Lanczos", "baseline": "",
                 "ratio": None, "time_s": scale["time_s"], "baseline_s": None, "goal": "",
                 "peak_mb": scale["peak_bytes"] / 2**20, "converged": scale["converged"],
                 "matvecs": scale["matvecs"]})
    return rows


def _print_ntk(r: dict) -> None:
    print(f"finite NTK Theta, {r['activation']}, n={r['n']} d={r['d']} m={r['m']} {r['dtype']} on {r['device']} "
          f"({torch.get_num_threads()} threads; each method in its own process)")
    for method in METHODS:
        result = r.get(method)
        if result is None:
            continue
        if "error" in result:
            ours = r.get("overparam", {}).get("time_s")
            bound = (f" (overparam >= {result['stopped_s'] / ours:.0f}x faster)"
                     if "stopped_s" in result and ours else "")
            print(f"  {method:<22} {result['error']}{bound}")
            continue
        print(f"  {method:<22} {result['time_s']:9.3f} s   peak {result['peak_bytes'] / 2**20:9.1f} MiB   "
              f"max rel. difference to overparam {result.get('max_relative_difference', float('nan')):.1e}")
        if "gemm_floor_s" in result:
            print(f"  {'bare C C^T GEMM':<22} {result['gemm_floor_s']:9.3f} s   (overparam / floor = "
                  f"{result['time_s'] / result['gemm_floor_s']:.2f}x, goal <= 1.2x)")
            print(f"  {'lower-triangle GEMMs':<22} {result['lower_gemm_floor_s']:9.3f} s   (overparam / tight floor = "
                  f"{result['time_s'] / result['lower_gemm_floor_s']:.2f}x)")
    ratios = _ratios(r)
    if ratios:
        name, speed, memory = ratios
        print(f"  faster than the faster torch.func recipe ({name}): {speed:.1f}x (goal >= 25x)")
        print(f"  less peak memory than the leaner recipe: {memory:.1f}x (goal >= 30x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--m", type=int, default=16384)
    parser.add_argument("--activation", nargs="+", default=["relu", "softmax"], choices=["relu", "exp", "softmax"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timeout", type=float, default=BASELINE_TIMEOUT_S, help="seconds before a baseline is stopped")
    parser.add_argument("--lambda-n", type=int, default=20000)
    parser.add_argument("--lambda-d", type=int, default=32)
    parser.add_argument("--cache", default="auto", choices=["auto", "yes", "no"])
    parser.add_argument("--skip-lambda", action="store_true")
    parser.add_argument("--skip-ntk", action="store_true")
    parser.add_argument("--quick", action="store_true", help="n = 256, m = 2048, lambda at n = 2000")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.activation[0], args.n, args.d, args.m, args.dtype, args.device,
                                args.repeats, args.save)))
        return
    if args.quick:
        args.n, args.m, args.lambda_n = 256, 2048, 2000
    if not args.skip_ntk:
        for activation in args.activation:
            _print_ntk(measure(activation, args.n, args.d, args.m, args.dtype, args.device, args.repeats,
                               args.methods, args.timeout))
    if not args.skip_lambda:
        r = lambda_min_at_scale(args.lambda_n, args.lambda_d, cache=args.cache)
        print(f"lambda_min(H*), relu, n={r['n']} d={r['d']} sphere, Lanczos (cache {r['cache']}): "
              f"{r['lambda_min']:.6g} in {r['time_s']:.1f} s, {r['matvecs']} products, peak "
              f"{r['peak_bytes'] / 2**20:.0f} MiB (dense H* would be {r['dense_bytes'] / 2**20:.0f} MiB), "
              f"converged: {r['converged']} (residual {r['residual']:.1e}, {r['method']})")


if __name__ == "__main__":
    main()
