"""Sweeps: batched seeds against one-by-one runs, and the local executors, in one process.

1. The issue's benchmark: 6 widths x 32 seeds of the exp network (n = 64, d = 8, coupled init,
   lr = auto, a fixed budget and tol = 0 so that both sides do the same steps), trained with
   `overparam.training.batched.train_seeds` (one tensor program per width, CPU sub-batches sized to the
   cache) against a Python loop of `overparam.train`, one network at a time, both with one torch
   thread (as sweeps run; --threads to change). Goal: >= 10x.
   The largest relative difference of the final residuals is printed (the two must agree).
2. The local executors on one small sweep from an empty store: this process with one torch
   thread (run_sweep's default, chosen by this measurement), this process with torch's threads,
   and a spawned process pool (a worker per CPU, one thread each).

    python benchmarks/sweep.py [--steps 200] [--seeds 32] [--widths 16,32,64,128,256,512]
                               [--threads 1] [--device cpu] [--no-executors]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from overparam import TwoLayerNet, train
from overparam.training.batched import train_seeds
from overparam.data import builtin

WIDTHS = (16, 32, 64, 128, 256, 512)


def batched_vs_loop(widths=WIDTHS, seeds: int = 32, steps: int = 200, n: int = 64, d: int = 8,
                    device: str = "cpu", threads: int | None = 1) -> list[dict]:
    """Per width: seconds for all seeds batched and looped, and the largest final-residual gap.

    Both sides run with `threads` torch threads (1: how sweeps run; None: torch's setting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _batched_vs_loop(widths, seeds, steps, n, d, device)
    finally:
        torch.set_num_threads(previous)


def _batched_vs_loop(widths, seeds, steps, n, d, device) -> list[dict]:
    data = builtin("sphere", n, d, 1, seed=0)
    X = torch.as_tensor(data.X, device=device)
    y = torch.as_tensor(data.y, device=device)
    train_seeds("exp", 8, X, y, [0, 1], init="coupled", steps=2, device=device)  # one-time imports
    train(TwoLayerNet(d, 8, 1, "exp", init="coupled", device=device), X, y, steps=2)
    rows = []
    for width in widths:
        start = time.perf_counter()
        batched = train_seeds("exp", width, X, y, range(seeds), init="coupled", steps=steps, tol=0.0,
                              device=device)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        looped = [train(TwoLayerNet(d, width, 1, "exp", init="coupled", seed=s, device=device), X, y,
                        steps=steps, tol=0.0) for s in range(seeds)]
        loop_s = time.perf_counter() - start
        gap = max(abs(b.residual_norm[-1] - s.residual_norm[-1]) / abs(s.residual_norm[-1])
                  for b, s in zip(batched, looped))
        rows.append({"width": width, "batched_s": batched_s, "loop_s": loop_s, "max_rel_gap": gap})
    return rows


def executors(steps: int = 300) -> dict:
    """Seconds for one small sweep (fresh stores): in this process with one torch thread (the
    default), in this process with torch's threads, and in a pool of one worker per CPU."""
    from overparam.sweep import run_sweep

    spec = {"activations": ["relu", "exp"], "widths": [16, 32, 64, 128], "n": [16, 32], "d": 8, "seeds": 8,
            "steps": steps, "tol": 0.0}
    cpus = os.cpu_count() or 1
    configs = {"one_thread": (1, 1), "torch_threads": (1, torch.get_num_threads()), "pool": (cpus, 1)}
    times = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (workers, threads) in configs.items():
            start = time.perf_counter()
            run_sweep(spec, Path(folder) / f"{name}.db", workers=workers, threads=threads)
            times[name] = time.perf_counter() - start
    return {"runs": 2 * 4 * 2 * 8, "steps": steps, "workers": cpus, "threads": torch.get_num_threads(),
            **{f"{k}_s": v for k, v in times.items()}}


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Rows for `python -m benchmarks`."""
    steps = 50 if quick else 200
    per_width = batched_vs_loop(steps=steps, device=device)
    batched_s = sum(r["batched_s"] for r in per_width)
    loop_s = sum(r["loop_s"] for r in per_width)
    shape = f"exp n=64 d=8 widths {WIDTHS[0]}..{WIDTHS[-1]} x 32 seeds, {steps} steps, {device}"
    rows = [{"benchmark": f"sweep batched seeds {shape}", "baseline": "loop of overparam.train",
             "ratio": loop_s / batched_s, "time_s": batched_s, "baseline_s": loop_s, "goal": ">= 10x faster",
             "max_rel_gap": max(r["max_rel_gap"] for r in per_width), "per_width": per_width}]
    for r in per_width:
        rows.append({"benchmark": f"sweep batched seeds exp m={r['width']} x 32", "baseline": "loop",
                     "ratio": r["loop_s"] / r["batched_s"], "time_s": r["batched_s"], "baseline_s": r["loop_s"],
                     "goal": ""})
    if device == "cpu":
        e = executors(steps=100 if quick else 300)
        for name, what in (("pool", f"process pool of {e['workers']}, 1 thread each"),
                           ("torch_threads", f"one process, {e['threads']} torch threads")):
            rows.append({"benchmark": f"sweep executor default (one process, 1 thread), {e['runs']} runs",
                         "baseline": what, "ratio": e[f"{name}_s"] / e["one_thread_s"], "time_s": e["one_thread_s"],
                         "baseline_s": e[f"{name}_s"], "goal": ">= 1x faster"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-executors", action="store_true", help="skip the executor comparison")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"exp, n = 64, d = 8, {args.seeds} seeds, {args.steps} steps, {args.device}, "
          f"{args.threads or torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}")
    rows = batched_vs_loop(widths, args.seeds, args.steps, device=args.device, threads=args.threads or None)
    print(f"{'width':>6} {'batched':>10} {'loop':>10} {'ratio':>7}  max rel. gap")
    for r in rows:
        print(f"{r['width']:>6} {r['batched_s']:>9.2f}s {r['loop_s']:>9.2f}s {r['loop_s'] / r['batched_s']:>6.1f}x"
              f"  {r['max_rel_gap']:.1e}")
    batched_s, loop_s = sum(r["batched_s"] for r in rows), sum(r["loop_s"] for r in rows)
    print(f"{'all':>6} {batched_s:>9.2f}s {loop_s:>9.2f}s {loop_s / batched_s:>6.1f}x  (goal >= 10x)")
    if not args.no_executors and args.device == "cpu":
        e = executors()
        print(f"executors, {e['runs']} runs x {e['steps']} steps: one process, 1 thread {e['one_thread_s']:.1f} s; "
              f"one process, {e['threads']} threads {e['torch_threads_s']:.1f} s; "
              f"pool of {e['workers']} x 1 thread {e['pool_s']:.1f} s")


if __name__ == "__main__":
    main()
