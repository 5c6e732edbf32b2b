"""Width sweeps: many batched trainings over a grid, a durable store, and the thresholds of docs/mathematics.md#thresholds.

    from overparam.sweep import run_sweep, thresholds
    run_sweep("spec.toml", "runs.db", backend="local", workers=2)
    report = thresholds("runs.db", delta=0.1)

`run_sweep` skips runs the store already holds, so re-running a sweep resumes it. After the runs it records
each seed's nested kernel pass over the spec's kernel_widths (`profiles`), from which `thresholds` measures
the kernel threshold.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import resources
from ..models import resolve_device
from .executors import BACKENDS, run_in_pool, run_in_process, run_on_ray
from .profiles import record_profiles
from .spec import Group, SweepSpec, load_spec
from .store import Store
from .task import RunResult, memory_needed, run_group


@dataclass
class SweepProgress:
    """Counts of a sweep's runs; `done` counts trained runs (any GD status), `failed` the rest; `profiles` the
    nested kernel profiles measured (one per family and seed, after the runs)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    profiles: int = 0

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed


def run_sweep(
    spec: SweepSpec | dict | str | Path,
    store: str | Path,
    backend: str = "local",
    workers: int | None = None,
    threads: int = 1,
    device: str = "cpu",
    ray_address: str | None = None,
    retry_failed: bool = False,
    progress: Callable[[SweepProgress], None] | None = None,
) -> SweepProgress:
    """Run every run of `spec` (a SweepSpec, a [sweep] dict or a TOML path) not yet in `store`.

    backend "local": workers = 1 (the default) trains in this process; more workers use a
    process pool. backend "ray": tasks on the cluster at `ray_address`, or a local Ray instance.
    threads: torch threads per task (1 is fastest for small n x m; see executors.py).
    Finished runs are skipped, runs left "running" by a killed sweep are redone, failed runs
    are skipped unless `retry_failed`. progress(counts) is called at the start and after every task.
    Then each seed's nested kernel profile the store lacks is measured in this process (`profiles`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if backend == "local":
        resolve_device(device)  # a missing GPU is the caller's error, not every run's failure
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = SweepSpec.from_dict(spec)
    if backend == "local":
        _require_memory(spec, device)
    start = time.perf_counter()
    with Store(store) as runs:
        groups = spec.groups()
        total = len(groups) * len(spec.seeds)
        finished = runs.finished(retry_failed)
        pending = [group.with_seeds([s for s in group.seeds if (group.config_hash, s) not in finished])
                   for group in groups]
        pending = [group for group in pending if group.seeds]
        counts = SweepProgress(total, skipped=total - sum(len(g.seeds) for g in pending))
        report = progress or (lambda _: None)
        report(counts)
        if backend == "local" and workers is None:
            workers = 1  # one batched process beat a pool of spawned workers (benchmarks/sweep.py)
        tasks = split_groups(pending, workers or 1)

        def started(group: Group) -> None:
            runs.mark_running(group)
            counts.running += len(group.seeds)
            report(counts)

        if backend == "ray":
            results = run_on_ray(tasks, workers, device, started, ray_address, threads)
        elif workers == 1:
            results = run_in_process(tasks, device, started, threads)
        else:
            results = run_in_pool(tasks, workers, device, started, threads)
        for batch in results:
            runs.save(batch)
            for result in batch:
                counts.statuses[result.status] += 1
                if result.status == "failed":
                    counts.failed += 1
                else:
                    counts.done += 1
            counts.running -= len(batch)
            counts.seconds = time.perf_counter() - start
            report(counts)

        def profiled() -> None:
            counts.profiles += 1
            counts.seconds = time.perf_counter() - start
            report(counts)

        record_profiles(spec, runs, device if backend == "local" else "cpu", threads, profiled)
    counts.seconds = time.perf_counter() - start
    return counts


def _require_memory(spec: SweepSpec, device: str) -> None:
    """`resources.require` for the group whose task holds the most (`task.memory_needed`), before any run."""
    largest = max(spec.groups(), key=lambda group: memory_needed(group.config, len(group.seeds)))
    config = largest.config
    resources.require(memory_needed(config, len(largest.seeds)), device,
                      f"the sweep's runs at n = {config['n']}, m = {config['width']} ({len(largest.seeds)} seeds batched)",
                      "use smaller n or widths, fewer seeds, or another --device")


def split_groups(groups: list[Group], workers: int) -> list[Group]:
    """Split groups by seed so that there are at least `workers` tasks when the seeds allow."""
    if not groups or len(groups) >= workers:
        return groups
    parts = math.ceil(workers / len(groups))
    tasks = []
    for group in groups:
        size = math.ceil(len(group.seeds) / parts)
        tasks += [group.with_seeds(group.seeds[i:i + size]) for i in range(0, len(group.seeds), size)]
    return tasks


def __getattr__(name: str):
    """thresholds and ThresholdReport load scipy.optimize on first use, not with the package."""
    if name in ("thresholds", "ThresholdReport"):
        from . import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["run_sweep", "thresholds", "ThresholdReport", "SweepSpec", "SweepProgress", "Group", "load_spec",
           "Store", "RunResult", "run_group", "split_groups"]
