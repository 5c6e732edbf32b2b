"""Where sweep tasks run: this process, a local process pool, or a Ray cluster.

Each task gets `threads` torch threads (default 1): sweep tasks are many small problems, for
which torch's intra-op threads cost more than they give, and far more when the cores are
shared (benchmarks/sweep.py measured a 2-core machine under load: 5.4 s with one thread,
138 s with two).

Every executor takes groups (one batched task each), calls `on_start(group)` when a task is
handed to a worker, keeps at most `workers` tasks in flight, and yields each task's results as it
finishes, in completion order. Workers only compute; the caller writes the store.
"""

from __future__ import annotations

import multiprocessing
import socket
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator, Sequence

import torch

from .spec import Group
from .task import RunResult, run_group

BACKENDS = ("local", "ray")
OnStart = Callable[[Group], None]


def run_in_process(groups: Sequence[Group], device: str, on_start: OnStart,
                   threads: int = 1) -> Iterator[list[RunResult]]:
    """Tasks one after another in this process, torch limited to `threads` threads meanwhile."""
    with torch_threads(threads):
        for group in groups:
            on_start(group)
            yield run_group(group, device)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch limited to `threads` intra-op threads inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_in_pool(groups: Sequence[Group], workers: int, device: str, on_start: OnStart,
                threads: int = 1) -> Iterator[list[RunResult]]:
    """A pool of `workers` spawned processes with `threads` torch threads each (spawn: safe with
    CUDA and with OpenMP thread pools)."""
    queue = list(groups)[::-1]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        pending = set()
        while queue or pending:
            while queue and len(pending) < workers:
                group = queue.pop()
                on_start(group)
                pending.add(pool.submit(run_group, group, device))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()


def _ray_task(group: Group, device: str, threads: int) -> list[RunResult]:
    torch.set_num_threads(threads)
    return run_group(group, device)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a host:port (or ray://host:port) nobody listens at: ray.init would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and the like: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"cannot reach the Ray cluster at {address!r}: {error}") from None


def run_on_ray(groups: Sequence[Group], workers: int | None, device: str, on_start: OnStart,
               address: str | None = None, threads: int = 1) -> Iterator[list[RunResult]]:
    """Tasks on the Ray cluster at `address` (ray.init(address=...)), or on a local Ray instance
    with `workers` CPUs when no address is given. `threads` CPUs per task, one GPU with device cuda;
    at most `workers` tasks in flight (default: the cluster's CPUs / threads)."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray backend needs Ray: pip install 'overparam[ray]'") from None
    started = not ray.is_initialized()
    if started and address is not None:
        _check_reachable(address)
    if started:
        options = {"include_dashboard": False, "configure_logging": False}
        if address is None:
            options["num_cpus"] = workers
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise ValueError(f"cannot reach the Ray cluster at {address!r}: {error}") from None
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        task = ray.remote(num_cpus=threads, num_gpus=1 if device.startswith("cuda") else 0)(_ray_task)
        queue = list(groups)[::-1]
        pending = []
        while queue or pending:
            while queue and len(pending) < workers:
                group = queue.pop()
                on_start(group)
                pending.append(task.remote(group, device, threads))
            finished, pending = ray.wait(pending, num_returns=1)
            for reference in finished:
                yield ray.get(reference)
    finally:
        if started:
            ray.shutdown()
