"""Neuron sharding: a GD step with the m neurons split over P processes against one process.

Default shape (issue 7): exp, n = 1024, d = 32, m = 65536, float32, P = 2. In the same run:
- one process: `overparam.train` with all of this process's torch threads, and with one thread
  (the serial cost that P processes split: ideally P x faster);
- P processes: `overparam.training.distributed.train`, threads / P each, gloo (NCCL on cuda), one
  all-reduce of n k floats per step;
- the all-reduce alone, timed in the same kind of group.
A step is History.wall_time[-1] / steps of a run with a fixed small lr (kappa = 1/sqrt(m) as
in gd_step.py, no divergence), so process start-up is excluded; it is reported on its own. ratio = one-process
step / sharded step: above 1, sharding pays off.

    python benchmarks/sharding.py [--activation exp] [--n 1024] [--d 32] [--m 65536] [--nproc 2]
                                  [--steps 5] [--dtype float32] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from overparam import TwoLayerNet, train
from overparam.training import distributed
from overparam.data import sphere


def allreduce_seconds(shape: tuple[int, ...], dtype: str, device: str, repeats: int = 50) -> float:
    """Median time of one all-reduce (SUM) of a tensor of `shape` in the current group."""
    tensor = torch.zeros(shape, dtype=getattr(torch, dtype), device=distributed.local_device(device))
    sync = torch.cuda.synchronize if tensor.is_cuda else (lambda: None)
    dist.barrier()
    for _ in range(5):
        dist.all_reduce(tensor)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(activation: str = "exp", n: int = 1024, d: int = 32, m: int = 65536, dtype: str = "float32",
            nproc: int = 2, steps: int = 5, device: str = "cpu") -> dict:
    data = sphere(n, d, seed=0)
    net = TwoLayerNet(d, m, 1, activation, scale="1/sqrt(m)", seed=0, dtype=dtype, device=device)
    # Far below 1 / lambda_max(Theta) (about n e^2 for exp at kappa = 1/sqrt(m)): timing only.
    options = dict(lr=1e-3 / (n * m), steps=steps, record_every=steps)

    single = train(net.copy(), data.X, data.y, **options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = train(net.copy(), data.X, data.y, **options)
    finally:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    sharded = distributed.train(net.copy(), data.X, data.y, nproc=nproc, **options)
    total = time.perf_counter() - start
    for history in (single, serial, sharded):
        if history.status != "max_steps":
            raise RuntimeError(f"the timed run ended early: {history.message}")
    allreduce = distributed.launch(allreduce_seconds, nproc, (n, net.out_dim), dtype, device, device=device)
    return {
        "activation": activation, "n": n, "d": d, "m": m, "dtype": dtype, "device": device,
        "nproc": nproc, "threads": torch.get_num_threads(),
        "threads_per_process": max(1, torch.get_num_threads() // nproc),
        "one_process_step_s": float(single.wall_time[-1]) / steps,
        "one_thread_step_s": float(serial.wall_time[-1]) / steps,
        "sharded_step_s": float(sharded.wall_time[-1]) / steps,
        "startup_s": total - float(sharded.wall_time[-1]), "allreduce_s": allreduce,
    }


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Rows for `python -m benchmarks`: one-process step / P-process step, with all threads and
    with one (the parallel efficiency, ideally P)."""
    r = measure(m=8192 if quick else 65536, n=256 if quick else 1024, steps=5, device=device)
    name = f"sharded gd_step {r['activation']} n={r['n']} d={r['d']} m={r['m']} {r['dtype']}, {r['nproc']} processes"
    return [
        {"benchmark": name, "baseline": f"1 process, {r['threads']} threads",
         "ratio": r["one_process_step_s"] / r["sharded_step_s"], "time_s": r["sharded_step_s"],
         "baseline_s": r["one_process_step_s"], "goal": "none (> 1 pays off)", **r},
        {"benchmark": name, "baseline": "1 process, 1 thread",
         "ratio": r["one_thread_step_s"] / r["sharded_step_s"], "time_s": r["sharded_step_s"],
         "baseline_s": r["one_thread_step_s"], "goal": f"none (ideal {r['nproc']}x)", **r},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="exp", choices=["relu", "exp", "softmax"])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--m", type=int, default=65536)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="n = 256, m = 8192")
    args = parser.parse_args()
    if args.quick:
        args.n, args.m = 256, 8192
    r = measure(args.activation, args.n, args.d, args.m, args.dtype, args.nproc, args.steps, args.device)
    print(f"GD step, {r['activation']}, n={r['n']} d={r['d']} m={r['m']} {r['dtype']} on {r['device']}")
    print(f"  1 process, {r['threads']} threads       {1e3 * r['one_process_step_s']:9.1f} ms")
    print(f"  1 process, 1 thread          {1e3 * r['one_thread_step_s']:9.1f} ms")
    print(f"  {r['nproc']} processes, {r['threads_per_process']} thread(s) each  "
          f"{1e3 * r['sharded_step_s']:9.1f} ms")
    print(f"  all-reduce of n k = {r['n']} floats   {1e3 * r['allreduce_s']:9.3f} ms")
    print(f"  process start-up and gather    {r['startup_s']:9.2f} s")
    print(f"  1 process / {r['nproc']} processes = {r['one_process_step_s'] / r['sharded_step_s']:.2f}x "
          "(> 1: sharding pays off)")
    print(f"  1 thread / {r['nproc']} processes   = {r['one_thread_step_s'] / r['sharded_step_s']:.2f}x "
          f"(parallel efficiency; ideal {r['nproc']}x)")


if __name__ == "__main__":
    main()
