"""The plan of a study: per section its units of work, how many a results folder already holds, and the
expected time of the rest on this machine, before anything is computed.

Expected time = a per-unit cost model / this machine's rates. The cost model counts each unit's dominant
floating-point operations in three kinds, each timed differently by the hardware:

    gd     gradient-descent steps: about 4 n m (d + k + 2) per network and step (forward X W^T and a, the
           chunks' phi and phi', back J^T r), for a sweep's "theory:c" budget (docs/mathematics.md#thresholds)
           min(cap, c 2 log(sqrt(n)/tol) lambda_max/lambda) steps, lambda and lambda_max of H* at n (on the
           sphere where the unit's data is another set), and for a fixed budget the whole budget: an upper
           bound (a run that reaches tol stops sooner; those below the threshold or off the kernel regime
           do not);
    gemm   kernel products: 2 n^2 m for H(W(0)) of width m (the nested pass: n^2 m / 2 per activation and n,
           float32 and coupled pairs), Lanczos' matrix products;
    dense  symmetric eigensolves and factorisations: 10 n^3 per dense eigvalsh;

and two fixed overheads that no operation count sees, which dominate sections of many small units:

    steps  GD steps (seeds trained as one batch share a step): the Python and dispatch work of one step,
           about 0.2-0.3 ms on a CPU whatever the shapes;
    calls  units and sweep tasks (one per width of a width scan or sweep slice, one per nested pass): the
           store's writes, the task's lambda_min(H*) and kernel distance, the unit's set-up.

The rates come from a short calibration (`calibrate`, about a second, one torch thread): 60 GD steps of a
width-4096 relu network at n = 64, a nested kernel pass at n = 128, m = 2^16, a dense eigvalsh at n = 512,
300 GD steps of a width-4 network at n = 8 (the per-step overhead) and a one-width, one-step width scan
into a temporary store (the per-call overhead), each timed on `device`.
Width scans (optimisation and kernel threshold) are planned as if every width ran for every seed with its
whole step budget: an upper bound, as a seed's scan ends two widths after it first succeeds. The estimate
is an order of magnitude, not a promise. Units of a section registered from outside (no cost model here)
are counted, not timed. `SectionPlan.dominant` names the group of units where a section's time goes.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..activations import RELU
from . import registry
from .config import StudyConfig


@dataclass
class Cost:
    """Floating-point operations of a unit, by kind (module docstring)."""

    gd: float = 0.0
    gemm: float = 0.0
    dense: float = 0.0
    steps: float = 0.0
    calls: float = 1.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.gd + other.gd, self.gemm + other.gemm, self.dense + other.dense, self.steps + other.steps,
                    self.calls + other.calls)


@dataclass
class Rates:
    """Operations per second of each kind on one device, and seconds per GD step and per call of the fixed
    overheads (`calibrate`)."""

    gd: float
    gemm: float
    dense: float
    device: str
    step: float = 0.0
    call: float = 0.0

    def seconds(self, cost: Cost) -> float:
        return (cost.gd / self.gd + cost.gemm / self.gemm + cost.dense / self.dense + cost.steps * self.step
                + cost.calls * self.call)


@dataclass
class SectionPlan:
    """One section: its units, those the results folder lacks (`pending`), their expected seconds (None where
    some have no cost model: `unknown` of them), and how many of those seconds are upper bounds (`bounded`:
    width scans planned as if every width ran, `UPPER_BOUNDS`)."""

    key: str
    title: str
    units: int
    pending: int
    seconds: float | None
    unknown: int = 0
    error: str | None = None
    dominant: str | None = None
    bounded: float | None = None


#: Unit kinds whose cost model is an upper bound: a seed's scan ends two widths after it first succeeds.
UPPER_BOUNDS = ("WidthScan", "KernelScan")


def step_ops(n: int, m: int, d: int, k: int = 1) -> float:
    """Operations of one GD step of one network (module docstring)."""
    return 4.0 * n * m * (d + k + 2)


def dense_ops(n: int) -> float:
    return 10.0 * n**3


def kernel_ops(n: int, m: int, d: int = 0) -> float:
    """H(W(0)) of width m: the GEMM of the coefficients and the first-layer products."""
    return 2.0 * n * n * m + 2.0 * n * d * m


@functools.lru_cache(maxsize=None)
def _spectrum_ends(activation: str, data: str, n: int, d: int, k: int, data_seed: int, sigma: float) -> tuple:
    """(lambda_min, lambda_max) of H* on the data set."""
    from ..data import builtin
    from ..kernels.infinite import infinite_ntk

    spectrum = torch.linalg.eigvalsh(infinite_ntk(activation, torch.from_numpy(builtin(data, n, d, k, data_seed).X),
                                                  sigma))
    return float(spectrum[0]), float(spectrum[-1])


def predicted_steps(activation: str, data: str, n: int, d: int, k: int, data_seed: int, sigma: float, tol: float,
                    budget, cap: int) -> int:
    """A run's planned steps: for a "theory:c" budget c 2 log(sqrt(n)/tol) lambda_max / lambda from H* on the data,
    capped at `cap`; for a fixed budget b, b itself (GD stops sooner where it reaches tol: an upper bound; the
    study's fixed-budget runs below the threshold or off the kernel regime do run all of it)."""
    if not (isinstance(budget, str) and budget.startswith("theory")):
        return int(budget)
    lam, top = _spectrum_ends(activation, data, n, d, k, data_seed, sigma)
    if not (lam > 0 and math.isfinite(top)):
        return cap
    from ..sweep.spec import budget_multiple

    return int(min(cap, budget_multiple(budget) * 2 * math.log(max(math.sqrt(n) / tol, 1.0)) * top / lam))


def _diffusion_dim(data: str) -> int:
    from ..diffusion.datasets import parse_data

    return parse_data(data).dim


def unit_cost(unit) -> Cost | None:
    """The cost model of a built-in unit (module docstring); None for a kind it does not know."""
    kind = type(unit).__name__
    u = unit
    if kind == "SweepSlice":
        steps = predicted_steps(u.activation, u.data, u.n, u.d, u.k, u.data_seed, u.sigma, u.tol, u.budget,
                                u.max_steps)
        return Cost(gd=u.seeds * sum(steps * step_ops(u.n, m, u.d, u.k) for m in u.widths),
                    gemm=u.seeds * sum(2 * kernel_ops(u.k * u.n, m, u.d) for m in u.widths),
                    dense=dense_ops(u.k * u.n) * (1 + u.seeds * len(u.widths)), steps=steps * len(u.widths),
                    calls=1 + len(u.widths))
    if kind == "WidthScan":  # every width for every seed: an upper bound, as a seed's scan may end early
        steps = predicted_steps(u.activation, u.data, u.n, u.d, u.k, u.data_seed, u.sigma, u.tol, u.budget,
                                u.max_steps)
        return Cost(gd=len(u.seeds) * sum(steps * step_ops(u.n, m, u.d, u.k) for m in u.widths),
                    gemm=len(u.seeds) * sum(2 * kernel_ops(u.k * u.n, m, u.d) for m in u.widths),
                    dense=dense_ops(u.k * u.n) * (1 + len(u.seeds) * len(u.widths)), steps=steps * len(u.widths),
                    calls=1 + len(u.widths))
    if kind == "KernelScan":  # one nested pass to the largest width per n: an upper bound (scans end early)
        pairs = 2 if u.init == "coupled" else 1
        return Cost(gemm=sum(kernel_ops(n, max(u.widths), u.d) / (4 * pairs) for n in u.ns),
                    dense=sum(2 * len(u.widths) * dense_ops(n) for n in u.ns), calls=1 + len(u.ns))
    if kind == "LambdaPoint":
        from ..kernels.eigensolvers import DENSE_LIMIT, choose

        if u.n <= DENSE_LIMIT:
            return Cost(dense=dense_ops(u.n))
        lanczos = 300 * 2.0 * u.n**2 + 40.0 * u.n**2  # Lanczos products (or triangular solves), and H*'s entries
        if choose(u.n).method == "cholesky":  # the factor's n^3/3 flops at about GEMM speed (n = 20,000: 100 s
            return Cost(gemm=u.n**3 / 3 + lanczos)  # on one thread, where this says 90 s; benchmarks/RESULTS.md)
        return Cost(gemm=lanczos)
    if kind == "KernelDraw":
        return Cost(gemm=kernel_ops(u.n, u.width, u.d), dense=3 * dense_ops(u.n))
    if kind == "TrainingRun":
        steps = predicted_steps(u.activation, "sphere", u.n, u.d, 1, u.data_seed, u.sigma, u.tol, u.steps, u.steps)
        return Cost(gd=u.seeds * steps * step_ops(u.n, u.width, u.d), gemm=u.seeds * 3 * kernel_ops(u.n, u.width, u.d),
                    dense=(1 + 2 * u.seeds) * dense_ops(u.n), steps=steps)
    if kind == "TeacherFit":
        steps = predicted_steps(u.activation, "sphere", u.n, u.d, 1, u.data_seed, u.sigma, u.tol, u.steps, u.steps)
        return Cost(gd=u.seeds * steps * step_ops(u.n, u.width, u.d),
                    gemm=u.seeds * (2 * kernel_ops(u.n, u.width, u.d) + 2.0 * u.test * u.width * u.d),
                    dense=(1 + u.seeds) * dense_ops(u.n), steps=steps)
    if kind == "LazyRichRun":
        steps = predicted_steps(u.activation, "sphere", u.n, u.d, 1, u.data_seed, u.sigma, u.tol, u.steps, u.steps)
        return Cost(gd=steps * step_ops(u.n, u.width, u.d), gemm=2 * kernel_ops(u.n, u.width, u.d),
                    dense=2 * dense_ops(u.n), steps=steps)
    if kind == "KernelBaselineUnit":
        return Cost(dense=dense_ops(u.n), gemm=2.0 * u.test * u.n * u.d)
    if kind == "KernelPerturbation":
        kernels = len(u.radii) * (4 + 2 * u.ascent_steps)
        return Cost(gemm=kernels * kernel_ops(u.n, u.width, u.d), dense=kernels * dense_ops(u.n))
    if kind == "DigitsRun":
        from .real_data import DIGITS_D

        return Cost(gd=2 * u.seeds * u.steps * step_ops(u.n, u.width, DIGITS_D, len(u.classes)), steps=u.steps)
    if kind == "DigitsKernelUnit":
        return Cost(dense=(4 + u.label_draws / 3) * dense_ops(u.n))
    if kind in ("Baselines", "Denoiser", "KernelComparison", "TwinCoupling"):
        dim = _diffusion_dim(u.data)
        sampled = (u.samples * u.sampler_steps + u.score_samples) * 4.0 * dim
        if kind == "Baselines":
            return Cost(gemm=sampled * 8, steps=u.sampler_steps)
        width = u.width
        cost = Cost(gd=u.steps * step_ops(u.n, width, dim + 2, dim), gemm=sampled * width,
                    steps=u.steps + u.sampler_steps)
        if kind in ("KernelComparison", "TwinCoupling"):
            n = u.n + getattr(u, "large_n", 0)
            cost = cost + Cost(gemm=kernel_ops(u.n, width, dim + 2), dense=2 * dense_ops(n), calls=0)
        return cost
    return None


def calibrate(device: str = "cpu") -> Rates:
    """Operations per second of each kind on `device` with one torch thread (as the sweeps and kernel passes
    run), from about a second of work (module docstring)."""
    from ..data import sphere
    from ..models import TwoLayerNet, initial_weights
    from ..kernels.nested import nested_ntk
    from ..sweep.executors import torch_threads
    from ..training.loop import train

    probe = RELU.name  # the rates are of GEMMs and elementwise passes: any activation measures them
    with torch_threads(1):
        data = sphere(64, 8, seed=0)
        X, y = torch.from_numpy(data.X).to(device), torch.from_numpy(data.y).to(device)
        net = TwoLayerNet(8, 4096, 1, probe, init="coupled", seed=0, device=device)
        train(net, X, y, lr=1e-3, steps=2)  # warm-up
        steps = 60
        start = time.perf_counter()
        train(net, X, y, lr=1e-3, steps=steps, record_every=steps)
        gd = steps * step_ops(64, 4096, 8) / _synchronised(start, device)

        X = torch.from_numpy(sphere(128, 8, seed=0).X).to(device)
        W, a = initial_weights(1 << 16, 8, 1, "coupled", device=device)
        nested_ntk(X, W[:4096], a[:4096], probe, [4096], products="float32")
        start = time.perf_counter()
        nested_ntk(X, W, a, probe, [W.shape[0]], products="float32")
        gemm = kernel_ops(128, W.shape[0], 8) / 4 / _synchronised(start, device)

        K = torch.randn(512, 512, dtype=torch.float64, device=device)
        K = K @ K.T
        start = time.perf_counter()
        torch.linalg.eigvalsh(K)
        dense = dense_ops(512) / _synchronised(start, device)

        step = _step_overhead(device)
        call = _call_overhead(device)
    return Rates(gd, gemm, dense, device, step, call)


def _step_overhead(device: str, steps: int = 300) -> float:
    """Seconds per GD step of two width-4 networks at n = 8 trained as one batch: the fixed work of a step."""
    from ..data import sphere
    from ..training.batched import train_seeds

    data = sphere(8, 8, seed=0)
    X, y = torch.from_numpy(data.X).to(device), torch.from_numpy(data.y).to(device)
    train_seeds(RELU.name, 4, X, y, [0, 1], "coupled", 1.0, None, lr=1e-3, steps=2, device=device)  # warm-up
    start = time.perf_counter()
    train_seeds(RELU.name, 4, X, y, [0, 1], "coupled", 1.0, None, lr=1e-3, steps=steps, record_every=steps,
                device=device)
    return _synchronised(start, device) / steps


def _call_overhead(device: str) -> float:
    """Seconds of the smallest unit of work: a width scan of one width-2 network at n = 4, one GD step, into a
    temporary store (the store's writes, the sweep task's lambda_min(H*) and kernel distance); the better of
    two after a warm-up."""
    import tempfile

    from .cache import UnitCache
    from .framework import UnitContext
    from .sweeps import WidthScan

    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "runs.db"
        cache = UnitCache(store)
        context = UnitContext(device, lambda unit: cache.compute_unit(unit, context), store, "local")
        times = []
        for seed in range(3):
            unit = WidthScan(RELU.name, 4, (2,), 2, 1, (seed,), "coupled", "sphere", 0, 1.0, 1e-3, 1, 1)
            start = time.perf_counter()
            cache.compute_unit(unit, context)
            times.append(_synchronised(start, device))
        cache.close()
    return min(times[1:])


def _synchronised(start: float, device: str) -> float:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plan_study(config: StudyConfig, out: str | Path | None = None, rates: Rates | None = None) -> list[SectionPlan]:
    """Per section of `config`: its units (deduplicated, as the runner computes them), those not yet finished
    in `out`'s runs.db (read only), and their expected seconds at `rates` (None: no timing). A section whose
    settings are invalid gets `error` and no units."""
    finished = finished_units(Path(out) / "runs.db") if out is not None else set()
    planned = set()  # a unit two sections share is computed once, by the first
    plans = []
    for key in config.sections:
        try:
            spec = registry.section(key)
            units = list(dict.fromkeys(spec.units(config, config.section(key))))
        except Exception as error:  # noqa: BLE001 - reported in the plan, as the runner reports it
            plans.append(SectionPlan(key, key, 0, 0, None, error=f"{type(error).__name__}: {error}"))
            continue
        pending = [u for u in units if u.key not in finished]
        costs = [None if u.key in planned else unit_cost(u) for u in pending]
        unknown = sum(cost is None and u.key not in planned for u, cost in zip(pending, costs))
        planned.update(u.key for u in pending)
        seconds = dominant = bounded = None
        if rates is not None and not unknown:
            times = [0.0 if cost is None else rates.seconds(cost) for cost in costs]
            seconds = sum(times)
            bounded = sum(t for u, t in zip(pending, times) if type(u).__name__ in UPPER_BOUNDS)
            dominant = _dominant(pending, times)
        plans.append(SectionPlan(key, spec.TITLE, len(units), len(pending), seconds, unknown, dominant=dominant,
                                 bounded=bounded))
    return plans


def describe(unit) -> str:
    """A unit's kind and its activation, n and d where it has them: the groups a plan reports time by."""
    names = [(name, getattr(unit, name)) for name in ("activation", "n", "d") if hasattr(unit, name)]
    return " ".join([type(unit).__name__, *(f"{name}={value}" for name, value in names)])


def _dominant(units, times) -> str | None:
    """"p% in <group> (k units)": the group of units (`describe`) with the most expected time."""
    total = sum(times)
    if not total > 0:
        return None
    groups: dict[str, list[float]] = {}
    for unit, seconds in zip(units, times):
        groups.setdefault(describe(unit), []).append(seconds)
    name, share = max(groups.items(), key=lambda item: sum(item[1]))
    return f"{sum(share) / total:.0%} in {name} ({len(share)} units)"


def finished_units(path: Path) -> set[str]:
    """The keys of the finished study units in a runs store, read only: as an immutable file when no writer's
    log (runs.db-wal) is beside it, so that not even SQLite's WAL index is created, else read-only through
    that log; none where there is no store or it holds no study units."""
    if not path.is_file():
        return set()
    mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT key FROM study_units")}
    except sqlite3.DatabaseError:  # not a store, or one without study units: the runner says which
        return set()
