"""Many seeds of one shape trained as one tensor program: W (S, m, d), a (S, m, k) (docs/mathematics.md#gradient).

Each seed follows exactly the full-batch GD run `overparam.train` would give it,
W_s(t+1) = W_s(t) - lr_s grad L_s(W_s(t)), with its own step size, step budget and stopping
rule: both run `training.loop.descend`, here with a seed dimension. All products go through
`coefficients.forward`, which broadcasts over the seed dimension.

Data: X (n, d) is shared by all seeds (the theorems' probability is over the initialisation of
a fixed data set), or X (S, n, d) gives every seed its own inputs; y likewise (n, k) or (S, n, k).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .. import chunks, coefficients
from ..activations import parse_scale, resolve
from ..models import fits_in_memory, initial_weights, pairs_neurons, resolve_device, resolve_dtype
from .loop import BudgetRule, History, descend


#: On the CPU, seeds train in sub-batches of at most this many S * n * m values, so that a
#: sub-batch's n x m buffers stay in cache: on a 2-core EPYC, 32 seeds at n = 64, m = 2048 took
#: 26 s for 50 steps as one batch and 14 s as sub-batches of 2 (and 2^18 values was the best or
#: near-best size at m = 256 ... 2048). A GPU takes all seeds at once.
CPU_BATCH_ELEMENTS = 1 << 18


def seed_batches(seeds: int, n: int, width: int, device: torch.device | str = "cpu") -> list[slice]:
    """Balanced slices of range(seeds) to train one after another (see CPU_BATCH_ELEMENTS)."""
    if torch.device(device).type != "cpu":
        return [slice(0, seeds)]
    size = max(1, CPU_BATCH_ELEMENTS // (n * width))
    size = math.ceil(seeds / math.ceil(seeds / size))
    return [slice(start, min(start + size, seeds)) for start in range(0, seeds, size)]


def train_batched(
    X: torch.Tensor,
    y: torch.Tensor,
    W: torch.Tensor,
    a: torch.Tensor,
    activation: str,
    kappa: float,
    lr: float | str | Sequence[float] = "auto",
    steps: int | Sequence[int] | BudgetRule = 1000,
    tol: float = 0.0,
    record_every: int | Sequence[int] | None = None,
    paired: bool = False,
    chunk: int | None = None,
    output_scale: float = 1.0,
) -> list[History | Exception]:
    """Full-batch GD on S seeds, in sub-batches (`seed_batches`); W (S, m, d) is trained in place,
    a (S, m, k) is fixed.

    X (n, d) or (S, n, d), y (n, k) or (S, n, k), tensors of W's dtype and device. lr, steps (also a
    rule steps(lr, initial_residual) over all S seeds), tol, record_every: as `training.loop.descend`.
    paired: the networks' neurons come in coupled pairs (`models.pairs_neurons`).
    output_scale: alpha, GD on L_alpha = ||alpha F - y||^2 / (2 alpha^2) (as `training.loop.descend`).
    Returns one History per seed, the same as `overparam.train` gives that seed alone (up to
    rounding), or the exception `train` would raise for it. wall_time counts from the start of
    the seed's sub-batch.
    """
    activation = resolve(activation)
    if W.dim() != 3 or a.dim() != 3 or a.shape[:2] != W.shape[:2]:
        raise ValueError(f"W must be (S, m, d) and a (S, m, k) with the same S, m; got "
                         f"{tuple(W.shape)} and {tuple(a.shape)}")
    seeds, width, k = W.shape[0], W.shape[1], a.shape[2]
    n = X.shape[-2]
    y = y.expand(seeds, n, k) if y.dim() == 2 else y
    outcomes = []
    for part in seed_batches(seeds, n, width, W.device):
        size = part.stop - part.start
        X_part = X[part] if X.dim() == 3 else X
        chunk_part = chunk or chunks.default_chunk(n * size, k, W.element_size(), W.device)
        keep = fits_in_memory(n * size, width, W)
        forward = _seeds_forward(X_part, a[part], activation, kappa, chunk_part, keep, paired)
        outcomes += descend(W[part], y[part], forward, lr=_part(lr, part, seeds, "lr"),
                            steps=_part(steps, part, seeds, "steps"), tol=tol,
                            record_every=_part(record_every, part, seeds, "record_every"),
                            output_scale=output_scale)
    return outcomes


def train_seeds(
    activation: str,
    width: int,
    X,
    y,
    seeds: Sequence[int],
    init: str = "independent",
    sigma: float = 1.0,
    scale: str | float | None = None,
    lr: float | str | Sequence[float] = "auto",
    steps: int | Sequence[int] | BudgetRule = 1000,
    tol: float = 0.0,
    record_every: int | Sequence[int] | None = None,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str = "cpu",
    output_scale: float = 1.0,
) -> list[History | Exception]:
    """Train TwoLayerNet(d, width, k, activation, scale, init, sigma, seed=s) for every s in seeds
    in batches (`seed_batches`); the same histories as `overparam.train` on each network alone
    (output_scale alpha: on L_alpha, as `train`).

    X (n, d) or (len(seeds), n, d), y (n,), (n, k) or (len(seeds), n, k); arrays or tensors.
    """
    activation = resolve(activation)
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    X = torch.as_tensor(np.asarray(X, dtype=np.float64) if not isinstance(X, torch.Tensor) else X)
    y = torch.as_tensor(np.asarray(y, dtype=np.float64) if not isinstance(y, torch.Tensor) else y)
    X, y = X.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)
    if y.dim() == 1 or (y.dim() == 2 and X.dim() == 3):
        y = y[..., None]
    if X.dim() not in (2, 3) or y.dim() != X.dim() or y.shape[:-1] != X.shape[:-1]:
        raise ValueError(f"X must be (n, d) or (S, n, d) and y (n, k) or (S, n, k) to match; got "
                         f"{tuple(X.shape)} and {tuple(y.shape)}")
    if X.dim() == 3 and X.shape[0] != len(seeds):
        raise ValueError(f"X has data for {X.shape[0]} seeds but {len(seeds)} seeds were given")
    for name, tensor in (("X", X), ("y", y)):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} has non-finite values (NaN or inf); remove or impute them")
    W, a = initial_weights(width, X.shape[-1], y.shape[-1], init, sigma, list(seeds), dtype, device)
    return train_batched(X, y, W, a, activation, parse_scale(scale, activation, width), lr=lr, steps=steps,
                         tol=tol, record_every=record_every, paired=pairs_neurons(init, width),
                         output_scale=output_scale)


def _seeds_forward(X, a, activation, kappa, chunk, keep, paired):
    """`descend`'s forward over seeds: the pass of seeds `index` at `weights`, their (X, a) slices kept
    while they train; one seed's pass without the seed dimension (as a network's own pass)."""
    slices: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(index: list[int], weights: torch.Tensor, workspace=None) -> coefficients.Pass:
        key = tuple(index)
        if key not in slices:
            slices.clear()
            inputs, fixed = (X[index] if X.dim() == 3 else X), a[index]
            slices[key] = (inputs[0] if X.dim() == 3 and len(index) == 1 else inputs,
                           fixed[0] if len(index) == 1 else fixed)
        inputs, fixed = slices[key]
        if len(index) == 1:
            weights = weights[0]
        return coefficients.forward(inputs, weights, fixed, activation, kappa, chunk, keep=keep, paired=paired,
                                    workspace=workspace)

    return forward


def _part(value, part: slice, seeds: int, name: str):
    """The sub-batch's share of a per-seed argument (one value for all seeds passes through); a
    budget rule gets all seeds' values (NaN outside the sub-batch) and gives the sub-batch's."""
    if value is None or isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if callable(value):
        def rule(rates: np.ndarray, initial: np.ndarray) -> list:
            everyone = [np.full(seeds, np.nan), np.full(seeds, np.nan)]
            everyone[0][part], everyone[1][part] = rates, initial
            return list(value(*everyone))[part]
        return rule
    values = list(value)
    if len(values) != seeds:
        raise ValueError(f"{name} has {len(values)} entries but there are {seeds} seeds")
    return values[part]
