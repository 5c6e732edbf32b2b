"""Training: full-batch gradient descent W(t+1) = W(t) - lr grad L(W(t)) (docs/mathematics.md#gradient), plus SGD/Adam.

`descend` is the one loop: over a seed dimension for `batched`, with one seed for `train` (and for
`distributed`, whose ShardedNet's pass and movement combine the processes' blocks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..kernels.finite import lambda_max
from ..coefficients import Pass
from ..models import TwoLayerNet, fits_in_memory
from ..validation import as_inputs, as_targets

OPTIMIZERS = ("gd", "sgd", "adam")
STATUSES = ("converged", "max_steps", "diverged")
#: A run whose loss exceeds this multiple of its initial loss has diverged.
DIVERGENCE_FACTOR = 1000.0
HISTORY_COLUMNS = ("step", "loss", "residual_norm", "max_movement", "total_movement", "wall_time")


@dataclass
class History:
    """Recorded quantities; entry 0 is W(0), the last entry the final W.

    residual_norm = ||F - y||_2, max_movement = max_r ||w_r(t) - w_r(0)||_2,
    total_movement = ||W(t) - W(0)||_F, wall_time in seconds since the start.
    `extra` holds columns added by callbacks (e.g. kernel diagnostics), each with its steps.
    """

    step: np.ndarray
    loss: np.ndarray
    residual_norm: np.ndarray
    max_movement: np.ndarray
    total_movement: np.ndarray
    wall_time: np.ndarray
    status: str
    message: str
    lr: float
    optimizer: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def steps(self) -> int:
        return int(self.step[-1])

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in HISTORY_COLUMNS}

    def save(self, path) -> None:
        """Write the recorded columns (and callback columns recorded at every entry) to
        Parquet (.parquet) or CSV (.csv)."""
        from pathlib import Path

        import pyarrow as pa

        columns = self.columns()
        columns.update({k: v for k, v in self.extra.items() if v.ndim == 1 and len(v) == len(self.step)})
        table = pa.table(columns)
        path = Path(path)
        if path.suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, path)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, path)

    def summary(self) -> dict:
        """Plain-data summary of the run (the CLI's --json object)."""
        return {
            "status": self.status,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "residual_norm": float(self.residual_norm[-1]),
            "lr": self.lr,
            "optimizer": self.optimizer,
            "max_movement": float(self.max_movement[-1]),
            "total_movement": float(self.total_movement[-1]),
            "wall_seconds": float(self.wall_time[-1]),
            "message": self.message,
        }


@dataclass
class TrainState:
    """What a callback sees after each step's forward pass (before the update)."""

    step: int
    net: TwoLayerNet
    X: torch.Tensor
    y: torch.Tensor
    residual: torch.Tensor
    W0: torch.Tensor
    lr: float
    extra: dict[str, list]


Callback = Callable[[TrainState], object]


def auto_lr(net: TwoLayerNet, X: torch.Tensor) -> float:
    """lr = 1 / lambda_max(Theta(W(0))): GD on the linearised model is stable below 2 / lambda_max."""
    return _inverse(lambda_max(net.forward_pass(X)))


def _inverse(top: float) -> float:
    """1 / lambda_max, or the ValueError of a kernel whose top eigenvalue gives no step size."""
    if not (top > 0 and math.isfinite(top)):
        raise ValueError(f"cannot choose lr automatically: lambda_max(Theta) = {top}; give lr explicitly")
    return 1.0 / top


def train(
    net: TwoLayerNet,
    X,
    y,
    lr: float | str = "auto",
    steps: int = 1000,
    tol: float = 0.0,
    optimizer: str = "gd",
    batch_size: int | None = None,
    record_every: int | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    output_scale: float = 1.0,
) -> History:
    r"""Train net.W in place on $L(W) = \frac12 \sum_i \|F(W, x_i) - y_i\|^2$: `descend` with one seed.

    lr: the plain step (W <- W - lr grad L) or "auto" (1 / lambda_max(Theta(W(0)))).
    tol: stop when ||F - y||_2 <= tol (status "converged"). batch_size: minibatches for
    "sgd"/"adam" (None = full batch). A callback returning True stops the run.
    progress(step, residual_norm) is called every recorded step.
    output_scale: alpha, to train on $L_\alpha(W) = \frac{1}{2\alpha^2} \sum_i \|\alpha F(W, x_i) - y_i\|^2$
    (docs/mathematics.md#output-scale); the History's loss is L_alpha, residual_norm and tol are
    ||alpha F - y||_2, and the trained model is alpha net(X). lr="auto" stays 1 / lambda_max(Theta(W(0)))
    of the unscaled F, the kernel that moves u = alpha F under L_alpha.

    Divergence at step t (a non-finite loss, an overflowing forward pass, or the loss over
    DIVERGENCE_FACTOR x its initial value) gives status "diverged": net.W is set back to W(t-1)
    and the History ends with that step's record, so that no NaN is ever a result. If W(0)
    itself cannot be evaluated, FloatingPointError is raised instead.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    X = as_inputs(X, net.in_dim, net.dtype, net.device)
    n = X.shape[0]
    y = as_targets(y, n, net.out_dim, net.dtype, net.device)
    if batch_size is not None and not (1 <= batch_size <= n):
        raise ValueError(f"batch_size must be between 1 and n = {n}, got {batch_size}")
    if optimizer == "gd" and batch_size not in (None, n):
        raise ValueError("optimizer 'gd' is full-batch; use optimizer='sgd' for minibatches")
    if lr != "auto":
        lr = float(lr)
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number or 'auto', got {lr!r}")
    keep = fits_in_memory(n, net.width, net.W)
    W = net.W[None]  # the engine's seed dimension over net.W's own memory: it trains net.W in place

    def forward(index: list[int], weights: torch.Tensor, workspace=None) -> Pass:
        return net.forward_pass(X, keep=keep, workspace=workspace, weights=None if weights is W else weights[0])

    extra: dict[str, list] = {}
    W0 = W[0].clone()

    def watch(step: int, residual: torch.Tensor, rate: float) -> bool:
        state = TrainState(step, net, X, y, residual, W0, rate, extra)
        return any(callback(state) is True for callback in callbacks)

    update = None if optimizer == "gd" else _optimiser_step(net, X, y, optimizer, batch_size, seed, output_scale)
    [outcome] = descend(W, y[None], forward, lr=lr, steps=steps, tol=tol, record_every=record_every,
                        update=update, watch=watch if callbacks else None, progress=progress,
                        movement=getattr(net, "movement", None), W0=W0[None],  # a ShardedNet's: of all blocks
                        output_scale=output_scale)
    if isinstance(outcome, Exception):
        raise outcome
    outcome.optimizer = optimizer
    outcome.extra = {key: np.asarray(value) for key, value in extra.items()}
    return outcome


#: steps(lr, initial_residual) -> budgets: a step budget that depends on each seed's own run.
BudgetRule = Callable[[np.ndarray, np.ndarray], Sequence[int]]


def descend(
    W: torch.Tensor,
    y: torch.Tensor,
    forward: Callable[..., Pass],
    lr: float | str | Sequence[float] = "auto",
    steps: int | Sequence[int] | BudgetRule = 1000,
    tol: float = 0.0,
    record_every: int | Sequence[int] | None = None,
    update: Callable[[Pass, torch.Tensor, float], None] | None = None,
    watch: Callable[[int, torch.Tensor, float], bool] | None = None,
    progress: Callable[[int, float], None] | None = None,
    movement: Callable[[torch.Tensor, torch.Tensor], tuple[list, list]] | None = None,
    W0: torch.Tensor | None = None,
    output_scale: float = 1.0,
) -> list[History | Exception]:
    """Full-batch GD W_s(t+1) = W_s(t) - lr_s grad L_s(W_s(t)) on the S seeds of W (S, m, d), in place:
    the one loop behind `train`, `batched.train_batched` and sharded training (docs/mathematics.md#gradient).

    forward(index, weights, workspace) is the `Pass` of the seeds `index` (a list) at `weights`
    (len(index), m, d): `out` (len(index), n, k), or for one seed that seed's own pass without the
    seed dimension (out (n, k)); workspace: that of a Pass no longer needed. y: (S, n, k).
    Every seed has its own step size, budget and stopping rule, and leaves the batch when it
    converges (||F - y||_2 <= tol), spends its budget or diverges.
    lr: "auto" (1 / lambda_max(Theta_s(W_s(0))) per seed), one number, or one per seed.
    steps, record_every: one value or one per seed (record_every default max(1, steps // 1000));
    steps may also be a rule steps(lr, initial_residual) -> one budget per seed, called once
    ||F(W_s(0)) - y_s||_2 is known (arrays of length S; NaN for a seed that could not start).
    update(pass, residual, lr): one seed's step when it is not GD's (an optimiser), in place on W.
    watch(step, residual, lr): one seed's callbacks after each step's record; True stops the run.
    progress(step, residual_norm): at every recorded step. movement(W, W0): per seed
    (max_r ||w_r - w_r(0)||_2, ||W - W(0)||_F) where W does not hold the whole network (sharding).
    output_scale: alpha, GD on L_alpha = ||alpha F - y||^2 / (2 alpha^2), whose gradient is
    J^T (alpha F - y) / alpha (docs/mathematics.md#output-scale): the residual, its norm (and tol) are
    alpha F - y's, the loss is L_alpha, and lr "auto" is still 1 / lambda_max(Theta) of F. alpha = 1 is L.

    Divergence at step t (a non-finite loss, an overflowing forward pass, or the loss over
    DIVERGENCE_FACTOR x its initial value) ends the seed at W_s(t-1), written back to W[s], with its
    History's last entry at step t-1 and a message naming a safe step size. A seed that cannot start
    (non-finite F(W(0)), no usable automatic step) gets the exception `train` raises instead.
    wall_time counts from the start of the batch.
    """
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if not (output_scale > 0 and math.isfinite(output_scale)):
        raise ValueError(f"output_scale must be a positive finite number, got {output_scale!r}")
    seeds = W.shape[0]
    everyone = list(range(seeds))
    budget = every = None
    if not callable(steps):
        budget, every = _budgets(steps, record_every, seeds)
    W0 = W.clone() if W0 is None else W0
    outcomes: list[History | Exception | None] = [None] * seeds
    top = None  # lambda_max(Theta_s(W_s(0))), computed when needed
    if isinstance(lr, str):
        if lr != "auto":
            raise ValueError(f"lr must be a positive number, a list of them, or 'auto'; got {lr!r}")
        top = _lambda_max_per_seed(forward, everyone, W0, outcomes)
        rates = []
        for s, value in enumerate(top):
            try:
                rates.append(_inverse(value))
            except ValueError as error:
                rates.append(math.inf)
                outcomes[s] = outcomes[s] or error
    else:
        rates = _per_seed(lr, seeds, "lr", float)
        if not all(r > 0 and math.isfinite(r) for r in rates):
            raise ValueError(f"lr must be positive finite numbers or 'auto', got {lr!r}")

    step_sizes = W.new_tensor([rate / output_scale for rate in rates])[:, None, None]  # grad L_alpha's 1/alpha
    batch = _Batch(W, W0, [s for s in everyone if outcomes[s] is None], y, step_sizes, movement)
    rows: list[list[tuple]] = [[] for _ in everyone]
    status = ["max_steps"] * seeds
    message: list[str | None] = [None] * seeds
    initial_loss = [math.nan] * seeds
    start = time.perf_counter()
    step = 0
    last_seen: dict[int, tuple[float, float]] = {}  # seed -> (loss, ||F - y||) at W_s(t-1)

    def record(s: int, step: int, loss: float, norm: float, largest: float, total: float) -> None:
        rows[s].append((step, loss, norm, largest, total, time.perf_counter() - start))
        if progress is not None:
            progress(step, norm)

    def diverge(s: int, what: str) -> None:
        """Seed s diverged at this step (`what`): it ends at W_s(t-1) with that step recorded; at
        step 0 it gets the error for a W(0) that cannot be evaluated."""
        nonlocal top
        status[s] = "diverged"
        if step == 0:
            message[s] = what
            batch.retire(s)
            return
        batch.retire(s, previous=True)
        if rows[s][-1][0] != step - 1:
            largest, total = batch.movement(previous=True)
            record(s, step - 1, *last_seen[s], largest[s], total[s])
        if top is None:
            top = _lambda_max_per_seed(forward, everyone, W0, [None] * seeds)
        safe = 1.0 / top[s] if top[s] != 0 else math.inf
        message[s] = divergence_message(step, what, rates[s], safe)

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
        residual = (current.out if output_scale == 1 else current.out * output_scale) - batch.target
        norms = residual.norm(dim=(-2, -1)).reshape(-1).tolist()
        if budget is None:
            initial = np.full(seeds, np.nan)
            initial[batch.seeds] = norms
            budget, every = _budgets(steps(np.asarray(rates, dtype=float), initial), record_every, seeds,
                                     only=batch.seeds)
        recording = []
        for s, norm in zip(batch.seeds, norms):
            loss = 0.5 * norm * norm / output_scale**2
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
            if watch is not None and watch(step, residual, rates[s]):
                status[s], message[s] = "max_steps", f"stopped by a callback at step {step}"
                if not recording or recording[-1][0] != s:
                    recording.append((s, loss, norm))
                batch.retire(s)
        if recording:
            largest, total = batch.movement()
            for s, loss, norm in recording:
                record(s, step, loss, norm, largest[s], total[s])
        if len(batch.retired) == len(batch.seeds):
            break
        batch.previous.copy_(batch.W)  # W(t): where a divergence at step t + 1 falls back to
        if update is not None:
            update(current, residual, rates[batch.seeds[0]])
        else:
            current.vjp(residual, out=batch.gradient_out)
            batch.W.addcmul_(batch.gradient, batch.step_sizes, value=-1)  # W - round(lr grad), as plain GD
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


def divergence_cause(loss: float, initial_loss: float) -> str | None:
    """Why a run with this loss has diverged (a non-finite loss, or one over DIVERGENCE_FACTOR x its
    initial value), or None when it has not."""
    if not math.isfinite(loss):
        return "a non-finite loss"
    if loss > DIVERGENCE_FACTOR * max(initial_loss, 1e-300):
        return f"loss {loss:.3e}, over {DIVERGENCE_FACTOR:g}x its initial {initial_loss:.3e}"
    return None


def initial_network_error(cause: str) -> FloatingPointError:
    """The error for a W(0) whose loss is not finite (`cause`): no step size helps."""
    return FloatingPointError(f"the initial network cannot be evaluated ({cause}); use a smaller sigma, "
                              "inputs with ||x|| <= 1 (--normalize), a smaller scale or float64")


def _optimiser_step(net: TwoLayerNet, X, y, optimizer: str, batch_size: int | None, seed: int,
                    output_scale: float = 1.0):
    """`descend`'s update for SGD and Adam on net.W (full batch, or minibatches drawn from `seed`), on
    the gradient of L_alpha, J^T (alpha F - y) / alpha."""
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    gen = torch.Generator().manual_seed(seed)
    optimisers = []

    def step(forward: Pass, residual: torch.Tensor, lr: float) -> None:
        if not optimisers:
            optimisers.append(cls([net.W], lr=lr))
        net.W.grad = _minibatch_grad(net, X, y, batch_size, gen, forward, residual, output_scale)
        optimisers[0].step()

    return step


def _minibatch_grad(net, X, y, batch_size, gen, forward, residual, output_scale) -> torch.Tensor:
    if batch_size is None or batch_size == X.shape[0]:
        gradient = forward.vjp(residual)
    else:
        index = torch.randperm(X.shape[0], generator=gen)[:batch_size].to(X.device)
        part = net.forward_pass(X[index], keep=False)
        gradient = part.vjp((part.out if output_scale == 1 else part.out * output_scale) - y[index])
    return gradient if output_scale == 1 else gradient.div_(output_scale)


def divergence_message(step: int, what: str, lr: float, safe_lr: float | None) -> str:
    """What a run that diverged at `step` reports, with a step size to try; safe_lr is
    1/lambda_max(Theta(W(0))) (what lr='auto' picks), or None where it could not be computed."""
    if safe_lr is None or not math.isfinite(safe_lr):
        hint = f"try lr = {lr / 10:.3g}"
    elif lr <= safe_lr * 1.0000001:
        hint = f"try lr = {lr / 10:.3g}: the kernel grows during training at this step size"
    else:
        hint = f"try lr <= {safe_lr:.3g} (= 1/lambda_max(Theta(W(0))), what lr='auto' picks)"
    return (f"diverged at step {step} ({what}) at lr = {lr:.3g}; {hint}. W is left at step {step - 1}, "
            "the last with a finite loss")


def _per_seed(value, seeds: int, name: str, cast) -> list:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return [cast(value)] * seeds
    values = [cast(v) for v in value]
    if len(values) != seeds:
        raise ValueError(f"{name} has {len(values)} entries but there are {seeds} seeds")
    return values


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


class _Batch:
    """The seeds still training and their weights; stopped seeds are written back to `final`.

    One seed trains in `final`'s own memory (a network's W, which callbacks and optimisers hold);
    several in a copy, so that this step's update of the batch leaves a retired seed's row of
    `final` alone. `retire(s)` marks a seed as stopped at the current weights (previous=True: at
    W_s(t-1), the weights before the last update); `compact()` drops retired seeds from the batch
    (after this step's update, which the retired seeds do not keep). `y`, `step_sizes`, `gradient`
    (a buffer reused step to step) are the batch's; `y` and `gradient_out` are shaped as a one-seed
    pass gives them, without the seed dimension.
    """

    def __init__(self, final: torch.Tensor, W0: torch.Tensor, seeds: list[int], y: torch.Tensor,
                 step_sizes: torch.Tensor, movement=None) -> None:
        self.final, self.seeds, self.retired = final, list(seeds), set()
        self.W = final if len(final) == len(self.seeds) == 1 else final[self.seeds].clone()
        self.previous = torch.empty_like(self.W)  # W(t-1), once a step has been taken
        self.W0, self.y, self.step_sizes = W0[self.seeds], y[self.seeds], step_sizes[self.seeds]
        self._movement = movement
        self._shape()

    def _shape(self) -> None:
        self.gradient = torch.empty_like(self.W)
        one = len(self.seeds) == 1
        self.gradient_out = self.gradient[0] if one else self.gradient
        self.target = self.y[0] if one else self.y

    def retire(self, s: int, previous: bool = False) -> None:
        self.final[s] = (self.previous if previous else self.W)[self.seeds.index(s)]
        self.retired.add(s)

    def compact(self) -> None:
        if not self.retired:
            return
        rows = [j for j, s in enumerate(self.seeds) if s not in self.retired]
        self.seeds = [self.seeds[j] for j in rows]
        self.W, self.W0, self.previous = self.W[rows], self.W0[rows], self.previous[rows]
        self.y, self.step_sizes = self.y[rows], self.step_sizes[rows]
        self.retired.clear()
        self._shape()

    def movement(self, previous: bool = False) -> tuple[dict[int, float], dict[int, float]]:
        """max_r ||w_r - w_r(0)||_2 and ||W - W(0)||_F for every seed in the batch (previous=True: of
        the weights before the last update)."""
        W = self.previous if previous else self.W
        if self._movement is not None:
            largest, total = self._movement(W, self.W0)
        else:
            rows = torch.sub(W, self.W0, out=self.gradient).norm(dim=-1)  # the gradient buffer is free here
            largest, total = rows.amax(-1).tolist(), rows.norm(dim=-1).tolist()
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


