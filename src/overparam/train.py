"""Training: full-batch gradient descent W(t+1) = W(t) - lr grad L(W(t)) (SPEC §3), plus SGD/Adam."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import ntk
from .models import TwoLayerNet, fits_in_memory
from .validation import as_inputs, as_targets

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
    top = ntk.lambda_max(net.forward_pass(X))
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
) -> History:
    """Train net.W in place on L(W) = 1/2 sum_i ||F(W, x_i) - y_i||^2.

    lr: the plain step (W <- W - lr grad L) or "auto" (1 / lambda_max(Theta(W(0)))).
    tol: stop when ||F - y||_2 <= tol (status "converged"). batch_size: minibatches for
    "sgd"/"adam" (None = full batch). A callback returning True stops the run.
    progress(step, residual_norm) is called every recorded step.

    Divergence at step t (a non-finite loss, an overflowing forward pass, or the loss over
    DIVERGENCE_FACTOR x its initial value) gives status "diverged": net.W is set back to W(t-1)
    and the History ends with that step's record, so that no NaN is ever a result. If W(0)
    itself cannot be evaluated, FloatingPointError is raised instead.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    X = as_inputs(X, net.in_dim, net.dtype, net.device)
    n = X.shape[0]
    y = as_targets(y, n, net.out_dim, net.dtype, net.device)
    if batch_size is not None and not (1 <= batch_size <= n):
        raise ValueError(f"batch_size must be between 1 and n = {n}, got {batch_size}")
    if optimizer == "gd" and batch_size not in (None, n):
        raise ValueError("optimizer 'gd' is full-batch; use optimizer='sgd' for minibatches")
    if lr == "auto":
        lr = auto_lr(net, X)
    lr = float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number or 'auto', got {lr!r}")
    if record_every is None:
        record_every = max(1, steps // 1000)

    W0 = net.W.clone()
    previous = torch.empty_like(W0)  # W(t-1): the weights a divergence at step t falls back to
    gradient = torch.empty_like(W0)  # reused step to step, as are the kept chunks (`workspace`)
    keep = fits_in_memory(n, net.width, net.W)
    stepper = _make_stepper(net, optimizer, lr)
    gen = torch.Generator().manual_seed(seed)
    rows: list[tuple] = []
    extra: dict[str, list] = {}
    start = time.perf_counter()
    status, message = "max_steps", f"stopped after the step budget of {steps} steps"
    initial_loss = None
    last_loss = last_norm = math.nan  # of W(t-1)
    cause = None  # why the run diverged, if it did

    def record(step: int, loss: float, norm: float) -> None:
        delta = torch.sub(net.W, W0, out=gradient)  # the gradient buffer is free between steps
        rows.append((step, loss, norm, float(delta.norm(dim=1).max()), float(delta.norm()),
                     time.perf_counter() - start))
        if progress is not None:
            progress(step, norm)

    forward = None
    for step in range(steps + 1):
        try:  # into the memory of the previous step's kept chunks
            workspace, forward = (None, None) if forward is None else (forward.workspace, None)
            forward = net.forward_pass(X, keep=keep, workspace=workspace)
        except OverflowError as error:
            cause = str(error).split(";")[0]
            break
        residual = forward.out - y
        norm = float(residual.norm())
        loss = 0.5 * norm * norm
        if initial_loss is None:
            initial_loss = loss
        cause = divergence_cause(loss, initial_loss)
        if cause is not None:
            break
        done = norm <= tol
        last = done or step == steps
        if step % record_every == 0 or last:
            record(step, loss, norm)
        state = TrainState(step, net, X, y, residual, W0, lr, extra)
        if any(callback(state) is True for callback in callbacks):
            status, message = "max_steps", f"stopped by a callback at step {step}"
            if rows[-1][0] != step:
                record(step, loss, norm)
            break
        if done:
            status, message = "converged", f"||F - y||_2 = {norm:.3e} <= tol = {tol:.3e} at step {step}"
            break
        if last:
            break
        previous.copy_(net.W)
        last_loss, last_norm = loss, norm
        if optimizer == "gd":
            stepper(forward.vjp(residual, out=gradient))
        else:
            stepper(_minibatch_grad(net, X, y, batch_size, gen, forward, residual))

    if cause is not None:
        if step == 0:  # W(0) itself cannot be evaluated: no step size helps
            raise initial_network_error(cause)
        # A NaN is never a result: the run ends at W(t-1), the last weights with a finite loss.
        net.W.copy_(previous)  # in place: an optimiser holds net.W itself
        if rows[-1][0] != step - 1:
            record(step - 1, last_loss, last_norm)
        status = "diverged"
        message = _divergence_message(net, W0, X, lr, step, cause)
    columns = [np.array(column, dtype=float) for column in zip(*rows)]
    columns[0] = columns[0].astype(int)
    return History(*columns, status=status, message=message, lr=lr, optimizer=optimizer,
                   extra={key: np.asarray(value) for key, value in extra.items()})


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


def _make_stepper(net: TwoLayerNet, optimizer: str, lr: float) -> Callable[[torch.Tensor], None]:
    if optimizer == "gd":
        return lambda grad: net.W.sub_(grad, alpha=lr)
    parameter = net.W
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    optim = cls([parameter], lr=lr)

    def step(grad: torch.Tensor) -> None:
        parameter.grad = grad
        optim.step()

    return step


def _minibatch_grad(net, X, y, batch_size, gen, forward, residual) -> torch.Tensor:
    if batch_size is None or batch_size == X.shape[0]:
        return forward.vjp(residual)
    index = torch.randperm(X.shape[0], generator=gen)[:batch_size].to(X.device)
    part = net.forward_pass(X[index], keep=False)
    return part.vjp(part.out - y[index])


def _divergence_message(net, W0, X, lr, step, what) -> str:
    current = net.W
    try:
        net.W = W0
        safe = auto_lr(net, X)
    except (ValueError, OverflowError):
        safe = None
    finally:
        net.W = current
    return divergence_message(step, what, lr, safe)


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
