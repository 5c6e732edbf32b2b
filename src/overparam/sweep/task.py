"""One sweep task: train a group's seeds batched and measure what the thresholds need (docs/mathematics.md#thresholds).

Per seed: the GD run (status, steps, residuals, movement), the step size and effective step
eta_eff = eta m kappa^2, lambda = lambda_min(H*) of the infinite-width kernel on the run's data,
and the kernel distance ||H(W(0)) - I_k (x) H*||_2 at initialisation.
"""

from __future__ import annotations

import platform
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import __version__, data as datasets, resources
from ..kernels.eigensolvers import rounding_dominated
from ..kernels.finite import ntk
from ..kernels.infinite import infinite_ntk
from ..activations import parse_scale
from ..training.batched import seed_batches, train_seeds
from ..models import TwoLayerNet, resolve_device, resolve_dtype
from ..training.loop import History
from .spec import Group, budget_multiple, theory_steps


@dataclass
class RunResult:
    """The outcome of one (config, seed): `status` is a GD status or "failed" (then `error`)."""

    config: dict
    config_hash: str
    seed: int
    status: str
    metrics: dict = field(default_factory=dict)
    curves: dict[str, np.ndarray] | None = None
    error: str | None = None


def environment(device: str) -> dict:
    """Versions and machine recorded with every run."""
    return {"overparam_version": __version__, "torch_version": torch.__version__, "device": device,
            "host": platform.node()}


def run_group(group: Group, device: str = "cpu") -> list[RunResult]:
    """Train all seeds of `group` batched (`seed_batches`); a run that cannot train becomes a
    "failed" result, and so do all of them when the group cannot start (the error is kept)."""
    try:
        return _run(group, device)
    except Exception as error:  # recorded with the run, never aborts the sweep
        message = _describe(error)
        return [RunResult(group.config, group.config_hash, seed, "failed",
                          metrics=environment(device), error=message) for seed in group.seeds]


def _describe(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    location = f" ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(error).__name__}: {error}{location}"


def memory_needed(config: dict, seeds: int) -> int:
    """Bytes a task of `seeds` seeds of a group holds at most: its data (one set per seed with data_seed
    "seed"), H* per data set, the kernel distance's dense (k n) x (k n) matrices, and the batched
    network pass (`resources.network_bytes`)."""
    n, d, k = config["n"], config["d"], config["k"]
    sets = seeds if config["data_seed"] == "seed" else 1
    itemsize = resolve_dtype(config["dtype"]).itemsize
    return (8 * sets * n * (2 * (d + k) + n) + resources.dense_kernel_bytes(k * n)
            + resources.network_bytes(n, d, k, config["width"], itemsize, seeds))


def group_data(config: dict, seeds) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d), y (n, k) shared by all seeds, or (S, n, d), (S, n, k) when data_seed = "seed"."""
    def draw(seed: int) -> datasets.Dataset:
        return datasets.builtin(config["data"], config["n"], config["d"], config["k"], seed)

    if config["data_seed"] == "seed":
        sets = [draw(seed) for seed in seeds]
        return np.stack([s.X for s in sets]), np.stack([s.y for s in sets])
    one = draw(config["data_seed"])
    return one.X, one.y


def _run(group: Group, device: str) -> list[RunResult]:
    config, seeds = group.config, list(group.seeds)
    dtype, where = resolve_dtype(config["dtype"]), resolve_device(device)
    activation, width = config["activation"], config["width"]
    scale = None if config["scale"] == "default" else config["scale"]
    kappa = parse_scale(scale, activation, width)
    X_np, y_np = group_data(config, seeds)
    per_seed = X_np.ndim == 3
    limits = [infinite_ntk(activation, X, config["sigma"]).numpy()
              for X in (X_np if per_seed else [X_np])]
    spectra = [_lambda_min(H) for H in limits]
    lam_of = (lambda j: spectra[j][0]) if per_seed else (lambda j: spectra[0][0])
    rounding_of = (lambda j: spectra[j][1]) if per_seed else (lambda j: spectra[0][1])

    X = torch.as_tensor(X_np, dtype=dtype, device=where)
    y = torch.as_tensor(y_np, dtype=dtype, device=where)
    multiple = budget_multiple(config["steps"])

    def budget(lr: float, initial: float, j: int) -> int:
        """The docs/mathematics.md#thresholds budget of seed j, or the fixed one."""
        if multiple is None:
            return config["steps"]
        return theory_steps(multiple, initial, config["tol"], lr, width, kappa, lam_of(j), config["max_steps"])

    def budgets(rates: np.ndarray, initial: np.ndarray) -> list[int]:
        return [budget(rate, residual, j) for j, (rate, residual) in enumerate(zip(rates, initial))]

    start = time.perf_counter()
    outcomes = train_seeds(activation, width, X, y, seeds, config["init"], config["sigma"], scale, lr=config["lr"],
                           steps=budgets, tol=config["tol"], record_every=config["record_every"], dtype=dtype,
                           device=where)
    sizes = [part.stop - part.start for part in seed_batches(len(seeds), config["n"], width, where)
             for _ in range(part.start, part.stop)]
    task_seconds = time.perf_counter() - start

    results = []
    for j, (seed, outcome) in enumerate(zip(seeds, outcomes)):
        metrics = {**environment(str(where)), "lambda_min": lam_of(j), "lambda_rounding": rounding_of(j),
                   "batch_size": sizes[j],
                   "task_seconds": task_seconds,
                   "kernel_distance": _kernel_distance(config, seed, kappa, X[j] if per_seed else X,
                                                       limits[j if per_seed else 0])}
        if isinstance(outcome, Exception):
            results.append(RunResult(config, group.config_hash, seed, "failed", metrics, error=_describe(outcome)))
            continue
        metrics.update(_summary(outcome, width, kappa))
        metrics["budget"] = budget(outcome.lr, float(outcome.residual_norm[0]), j)
        results.append(RunResult(config, group.config_hash, seed, outcome.status, metrics,
                                 curves=outcome.columns()))
    return results


def _lambda_min(H: np.ndarray) -> tuple[float, bool]:
    """lambda_min(H*) and whether it is rounding (`rounding_dominated`); NaN (and rounding) when
    H* overflows (e.g. exp with a large sigma), so no rate is predicted."""
    if not np.isfinite(H).all():
        return float("nan"), True
    values = np.linalg.eigvalsh(H)
    return float(values[0]), rounding_dominated(float(values[0]), float(values[-1]), len(H))


def _summary(history: History, width: int, kappa: float) -> dict:
    return {
        "steps": history.steps, "lr": history.lr, "lr_eff": history.lr * width * kappa**2,
        "initial_residual": float(history.residual_norm[0]), "final_residual": float(history.residual_norm[-1]),
        "final_loss": history.final_loss, "max_movement": float(history.max_movement[-1]),
        "total_movement": float(history.total_movement[-1]), "wall_seconds": float(history.wall_time[-1]),
        "message": history.message,
    }


def _kernel_distance(config: dict, seed: int, kappa: float, X: torch.Tensor, H_star: np.ndarray) -> float:
    """||H(W(0)) - I_k (x) H*||_2 (spectral norm of a symmetric matrix: max |eigenvalue|);
    NaN when either kernel overflows."""
    scale = None if config["scale"] == "default" else config["scale"]
    net = TwoLayerNet(config["d"], config["width"], config["k"], config["activation"], scale=scale,
                      init=config["init"], sigma=config["sigma"], seed=seed, dtype=X.dtype, device=X.device)
    try:
        H = ntk(net, X).double().cpu().numpy()
    except OverflowError:
        return float("nan")
    if not (np.isfinite(H).all() and np.isfinite(H_star).all()):
        return float("nan")
    difference = H - np.kron(np.eye(config["k"]), H_star)
    return float(np.abs(np.linalg.eigvalsh(difference)).max())
