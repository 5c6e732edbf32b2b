"""Many seeds of one shape trained as one tensor program: W (S, m, d), a (S, m, k) (SPEC §3).

Each seed follows exactly the full-batch GD run `overparam.train` would give it,
W_s(t+1) = W_s(t) - lr_s grad L_s(W_s(t)), with its own step size, step budget and stopping
rule; a seed that converges, diverges or spends its budget leaves the batch and the others go on.
All products go through `coefficients.forward`, which broadcasts over the seed dimension.

Data: X (n, d) is shared by all seeds (the theorems' probability is over the initialisation of
a fixed data set), or X (S, n, d) gives every seed its own inputs; y likewise (n, k) or (S, n, k).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from . import coefficients
from .activations import parse_scale, resolve
from .models import fits_in_memory, initial_weights, pairs_neurons, resolve_device, resolve_dtype
from .ntk import lambda_max
from .train import History, divergence_cause, divergence_message, initial_network_error


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


def _per_seed(value, seeds: int, name: str, cast) -> list:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return [cast(value)] * seeds
    values = [cast(v) for v in value]
    if len(values) != seeds:
        raise ValueError(f"{name} has {len(values)} entries but there are {seeds} seeds")
    return values


#: steps(lr, initial_residual) -> budgets: a step budget that depends on each seed's own run.
BudgetRule = Callable[[np.ndarray, np.ndarray], Sequence[int]]


def _budgets(steps, record_every, seeds: int, only: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Per-seed step budgets and recording intervals; `only`: the seeds whose budget counts."""
    budget = _per_seed(steps, seeds, "steps", lambda value: value)
    if only is not None:
        counted = set(only)
        budget = [budget[s] if s in counted else 0 for s in range(seeds)]
    if any(int(b) != b or b < 0 for b in budget):
        raise ValueError(f"steps must be non-negative integers, got {list(budget)!r}")
    budget = [int(b) for b in budget]
    every = _per_seed(record_every, seeds, "record_every", int) if record_every is not None \
        else [max(1, b // 1000) for b in budget]
    return budget, every


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
) -> list[History | Exception]:
    """Full-batch GD on S seeds at once; W (S, m, d) is trained in place, a (S, m, k) is fixed.

    X (n, d) or (S, n, d), y (n, k) or (S, n, k), tensors of W's dtype and device.
    lr: "auto" (1 / lambda_max(Theta_s(W_s(0))) per seed), one number, or one per seed.
    steps, record_every: one value or one per seed (record_every default max(1, steps // 1000));
    steps may also be a rule steps(lr, initial_residual) -> one budget per seed, called once
    ||F(W_s(0)) - y_s||_2 is known (arrays of length S; NaN for a seed that could not start).
    Returns one History per seed, the same as `overparam.train` gives that seed alone (up to
    rounding); a seed that cannot start (non-finite F(W(0)), no usable automatic step)
    gets the exception `train` would raise instead. A seed that diverges at step t ends, as in
    `train`, at W_s(t-1) (written to W[s]) with its History's last entry at step t-1.
    wall_time counts from the start of the batch.
    """
    activation = resolve(activation)
    if W.dim() != 3 or a.dim() != 3 or a.shape[:2] != W.shape[:2]:
        raise ValueError(f"W must be (S, m, d) and a (S, m, k) with the same S, m; got "
                         f"{tuple(W.shape)} and {tuple(a.shape)}")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    seeds, width, k = W.shape[0], W.shape[1], a.shape[2]
    n = X.shape[-2]
    per_seed_data = X.dim() == 3
    y = y.expand(seeds, n, k) if y.dim() == 2 else y
    budget = every = None
    if not callable(steps):
        budget, every = _budgets(steps, record_every, seeds)
    chunk = chunk or coefficients.default_chunk(n * seeds, k, W.element_size(), W.device)
    keep = fits_in_memory(n * seeds, width, W)

    slices: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(index: list[int], weights: torch.Tensor, workspace=None) -> coefficients.Pass:
        """The pass of seeds `index` at `weights`; their (X, a) slices are kept while they train.
        workspace: the previous step's, reused for the kept chunks (see `coefficients.forward`)."""
        key = tuple(index)
        if key not in slices:
            slices.clear()
            slices[key] = (X[index] if per_seed_data else X, a[index])
        inputs, fixed = slices[key]
        return coefficients.forward(inputs, weights, fixed, activation, kappa, chunk,
                                    keep=keep, paired=paired, workspace=workspace)

    outcomes: list[History | Exception | None] = [None] * seeds
    everyone = list(range(seeds))
    top = None  # lambda_max(Theta_s(W_s(0))), computed when needed
    if isinstance(lr, str):
        if lr != "auto":
            raise ValueError(f"lr must be a positive number, a list of them, or 'auto'; got {lr!r}")
        top = _lambda_max_per_seed(forward, everyone, W, outcomes)
        rates = []
        for s, value in enumerate(top):
            if outcomes[s] is None and not (value > 0 and math.isfinite(value)):
                outcomes[s] = ValueError(f"cannot choose lr automatically: lambda_max(Theta) = {value}; "
                                         "give lr explicitly")
            rates.append(1.0 / value if value != 0 else math.inf)
    else:
        rates = _per_seed(lr, seeds, "lr", float)
        if not all(r > 0 and math.isfinite(r) for r in rates):
            raise ValueError(f"lr must be positive finite numbers or 'auto', got {lr!r}")

    W0 = W.clone()
    step_sizes = W.new_tensor(rates)[:, None, None]
    batch = _Batch(W, W0, [s for s in everyone if outcomes[s] is None])
    rows: list[list[tuple]] = [[] for _ in everyone]
    status = ["max_steps"] * seeds
    message: list[str | None] = [None] * seeds
    initial_loss = [math.nan] * seeds
    start = time.perf_counter()
    step = 0
    last_seen: dict[int, tuple[float, float]] = {}  # seed -> (loss, ||F - y||) at W_s(t-1)

    def diverge(s: int, what: str) -> None:
        """Seed s diverged at this step (`what`): as `train`, it ends at W_s(t-1) with that step
        recorded; at step 0 it gets `train`'s error for a W(0) that cannot be evaluated."""
        nonlocal top
        status[s] = "diverged"
        if step == 0:
            message[s] = what
            batch.retire(s)
            return
        if top is None:
            top = _lambda_max_per_seed(forward, everyone, W0, [None] * seeds)
        safe = 1.0 / top[s] if top[s] != 0 else math.inf
        message[s] = divergence_message(step, what, rates[s], safe)
        batch.retire(s, previous=True)
        if rows[s][-1][0] != step - 1:
            largest, total = batch.movement(previous=True)
            rows[s].append((step - 1, *last_seen[s], largest[s], total[s], time.perf_counter() - start))

    current = None
    while batch.seeds:
        try:
            workspace, current = (None, None) if current is None else (current.workspace, None)
            current = forward(batch.seeds, batch.W, workspace)
        except OverflowError:
            for s, error in _overflowing(forward, batch).items():
                diverge(s, str(error).split(";")[0])
            batch.compact()
            continue
        residual = current.out - batch.take(y)
        norms = residual.norm(dim=(-2, -1)).tolist()
        if budget is None:
            initial = np.full(seeds, np.nan)
            initial[batch.seeds] = norms
            budget, every = _budgets(steps(np.asarray(rates, dtype=float), initial), record_every, seeds,
                                     only=batch.seeds)
        recording = []
        for s, norm in zip(list(batch.seeds), norms):
            loss = 0.5 * norm * norm
            if step == 0:
                initial_loss[s] = loss
            cause = divergence_cause(loss, initial_loss[s])
            if cause is not None:
                diverge(s, cause)
                continue
            last_seen[s] = (loss, norm)
            done = norm <= tol
            last = done or step == budget[s]
            if step % every[s] == 0 or last:
                recording.append((s, loss, norm))
            if done:
                status[s] = "converged"
                message[s] = f"||F - y||_2 = {norm:.3e} <= tol = {tol:.3e} at step {step}"
            if last:
                batch.retire(s)
        if recording:
            largest, total = batch.movement()
            now = time.perf_counter() - start
            for s, loss, norm in recording:
                rows[s].append((step, loss, norm, largest[s], total[s], now))
        if not batch.going:
            break
        batch.previous = batch.W  # the update below is out of place: W(t) stays intact
        batch.W = batch.W - batch.take(step_sizes) * current.vjp(residual)
        batch.compact()
        step += 1
    batch.compact()

    for s in everyone:
        if outcomes[s] is not None:
            continue
        if not rows[s]:
            outcomes[s] = initial_network_error(message[s])
            continue
        if message[s] is None:
            message[s] = f"stopped after the step budget of {budget[s]} steps"
        columns = [np.array(column, dtype=float) for column in zip(*rows[s])]
        columns[0] = columns[0].astype(int)
        outcomes[s] = History(*columns, status=status[s], message=message[s], lr=rates[s], optimizer="gd")
    return outcomes


class _Batch:
    """The seeds still training and their weights; stopped seeds are written back to `final`.

    `retire(s)` marks a seed as stopped at the current weights (previous=True: at the weights
    before the last update, W_s(t-1)); `compact()` drops retired seeds from the batch (after
    this step's update, which the retired seeds do not keep).
    """

    def __init__(self, final: torch.Tensor, W0: torch.Tensor, seeds: list[int]) -> None:
        self.final = final
        self.seeds = list(seeds)
        self.W = final[self.seeds].clone()
        self.previous = self.W  # the weights before the last update (the same at step 0)
        self.W0 = W0[self.seeds]
        self.retired: set[int] = set()
        self._cache: dict[int, torch.Tensor] = {}

    @property
    def going(self) -> list[int]:
        return [s for s in self.seeds if s not in self.retired]

    def retire(self, s: int, previous: bool = False) -> None:
        self.final[s] = (self.previous if previous else self.W)[self.seeds.index(s)]
        self.retired.add(s)

    def compact(self) -> None:
        if not self.retired:
            return
        rows = [j for j, s in enumerate(self.seeds) if s not in self.retired]
        self.seeds = [self.seeds[j] for j in rows]
        self.W, self.W0, self.previous = self.W[rows], self.W0[rows], self.previous[rows]
        self.retired.clear()
        self._cache.clear()

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """tensor[seeds] for a per-seed tensor, cached until the batch changes."""
        key = id(tensor)
        if key not in self._cache:
            self._cache[key] = tensor[self.seeds]
        return self._cache[key]

    def movement(self, previous: bool = False) -> tuple[dict[int, float], dict[int, float]]:
        """max_r ||w_r - w_r(0)||_2 and ||W - W(0)||_F for every seed in the batch (previous=True: of
        the weights before the last update)."""
        delta = (self.previous if previous else self.W) - self.W0
        largest = delta.norm(dim=-1).amax(-1).tolist()
        total = delta.flatten(1).norm(dim=-1).tolist()
        return dict(zip(self.seeds, largest)), dict(zip(self.seeds, total))


def _lambda_max_per_seed(forward, index: list[int], weights: torch.Tensor, errors: list) -> np.ndarray:
    """lambda_max(Theta_s(W_s)) for every seed; a seed whose forward pass overflows gets NaN
    and its OverflowError in `errors`."""
    try:
        return np.atleast_1d(lambda_max(forward(index, weights[index])))
    except OverflowError:
        pass
    out = np.full(len(index), np.nan)
    for j, s in enumerate(index):
        try:
            out[j] = np.atleast_1d(lambda_max(forward([s], weights[[s]])))[0]
        except OverflowError as error:
            errors[s] = error
    return out


def _overflowing(forward, batch: _Batch) -> dict[int, Exception]:
    """The seeds whose own forward pass overflows, with the error each raises alone."""
    found = {}
    for j, s in enumerate(batch.seeds):
        try:
            forward([s], batch.W[[j]])
        except OverflowError as error:
            found[s] = error
    return found


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
    steps: int | Sequence[int] = 1000,
    tol: float = 0.0,
    record_every: int | Sequence[int] | None = None,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str = "cpu",
) -> list[History | Exception]:
    """Train TwoLayerNet(d, width, k, activation, scale, init, sigma, seed=s) for every s in seeds
    in batches (`seed_batches`); the same histories as `overparam.train` on each network alone.

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
    kappa = parse_scale(scale, activation, width)
    outcomes = []
    for part in seed_batches(len(seeds), X.shape[-2], width, device):
        outcomes += train_batched(
            X[part] if X.dim() == 3 else X, y[part] if y.dim() == 3 else y, W[part], a[part], activation, kappa,
            lr=_part(lr, part), steps=_part(steps, part), tol=tol, record_every=_part(record_every, part),
            paired=pairs_neurons(init, width))
    return outcomes


def _part(value, part: slice):
    """The sub-batch's share of a per-seed argument (one value for all seeds passes through)."""
    if value is None or isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    return list(value)[part]
