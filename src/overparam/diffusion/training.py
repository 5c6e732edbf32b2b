"""Denoising score matching as regression with noisy labels (docs/mathematics.md#diffusion, SMX24 after HRX24).

From x_0^{(i)} ~ p_0 draw t_i ~ U[t0, T] and x_t^{(i)} = alpha_t x_0^{(i)} + sqrt(h_t) xi_i
(`noise_draws` independent (t, xi) per x_0 if asked), and fit

    min_W 1/2 sum_i || F(W, z_i) - y_i ||^2,   z_i = embed(x_t^{(i)}, t_i),   y_i = x_0^{(i)},

so F learns E[x_0 | x_t, t]. The labels are noisy (the loss cannot reach 0), so training uses
early stopping: a held-out split of the x_0 (with its own noise draws) is scored every
`eval_every` steps, the best W is kept, and training stops after `patience` evaluations without
improvement. Default optimiser: full-batch GD with lr = 1 / lambda_max(Theta(W(0))).

The step budget is `steps`, or with `twin_budget = c` the budget c t* set by the network's own kernel twin
(twin.py: GD on Theta(W(0)) with the same step and pairs, whose held-out loss is least at step t*), capped at
`steps`, with held-out evaluations every max(eval_every, ceil(t* / TWIN_EVALUATIONS)) steps, so that patience
spans a fixed share of t* (patience / TWIN_EVALUATIONS: 10 % at the defaults) rather than a fixed number of
steps. A wide network's held-out loss follows its twin's and stops improving near t*, so with c > 1 patience,
not the budget, ends training unless the cap cut the budget (`DenoiserFit.budget_cut`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..activations import SOFTMAX
from ..models import TwoLayerNet
from ..training.loop import History, TrainState, train
from . import process
from .embedding import Embedding
from .process import Horizon


#: Held-out evaluations per twin stopping time t* when the twin sets the budget (module docstring).
TWIN_EVALUATIONS = 50


@dataclass
class TrainingConfig:
    """How the denoiser network is built and trained (plain data)."""

    activation: str = SOFTMAX.name
    width: int = 8192
    init: str = "coupled"
    sigma: float = 1.0
    scale: str | float | None = None
    optimizer: str = "gd"
    lr: float | str = "auto"
    steps: int = 200
    batch_size: int | None = None
    noise_draws: int = 1
    time_law: str = "matched"
    val_fraction: float = 0.2
    eval_every: int = 10
    patience: int = 5
    twin_budget: float | None = None
    bias: bool = True
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if int(self.width) != self.width or self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width!r}")
        if int(self.noise_draws) != self.noise_draws or self.noise_draws < 1:
            raise ValueError(f"noise_draws must be a positive integer, got {self.noise_draws!r}")
        if self.time_law not in process.TIME_LAWS:
            raise ValueError(f"unknown time law {self.time_law!r}: use one of {', '.join(process.TIME_LAWS)}")
        if not (0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if int(self.eval_every) != self.eval_every or self.eval_every < 1:
            raise ValueError(f"eval_every must be a positive integer, got {self.eval_every!r}")
        if int(self.patience) != self.patience or self.patience < 1:
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        if self.twin_budget is not None:
            if not (self.twin_budget > 0 and math.isfinite(self.twin_budget)):
                raise ValueError(f"twin_budget must be a positive number (the budget in units of the twin's t*), "
                                 f"got {self.twin_budget!r}")
            if self.optimizer != "gd":
                raise ValueError("twin_budget needs optimizer 'gd': the twin is full-batch GD on the initial kernel")


@dataclass
class NoisyPairs:
    """Regression pairs before embedding: x_t (N, d), t (N,), labels x_0 (N, d)."""

    xt: torch.Tensor
    t: torch.Tensor
    x0: torch.Tensor


def noisy_pairs(x0: torch.Tensor, horizon: Horizon, noise_draws: int, generator: torch.Generator,
                time_law: str = "uniform") -> NoisyPairs:
    """`noise_draws` independent (t, x_t) per row of x0 (n, d): N = n * noise_draws pairs.

    t ~ U[t0, T] (time_law 'uniform', docs/mathematics.md#diffusion) or log-uniform ('log', more pairs at small t).
    """
    labels = x0.repeat(int(noise_draws), 1)
    t = horizon.sample_times(labels.shape[0], generator, labels.dtype, time_law)
    return NoisyPairs(process.forward_sample(labels, t, generator), t, labels)


class EarlyStopping:
    """Callback for `overparam.train`: held-out mean squared error every `every` steps.

    Keeps a copy of the best W; returns True (stop) after `patience` evaluations without a
    relative improvement of `min_delta`. Records columns `val_step`, `val_loss` in History.extra.
    """

    def __init__(self, Z: torch.Tensor, y: torch.Tensor, every: int, patience: int, last_step: int,
                 min_delta: float = 1e-4) -> None:
        self.Z, self.y = Z, y
        self.every, self.patience, self.last_step, self.min_delta = every, patience, last_step, min_delta
        self.best_loss = math.inf
        self.best_step = 0
        self.best_W: torch.Tensor | None = None
        self.since_best = 0

    def held_out_loss(self, net: TwoLayerNet) -> float:
        """mean_i ||F(z_i) - y_i||^2 over the held-out pairs."""
        return float((net(self.Z) - self.y).square().sum(1).mean())

    def __call__(self, state: TrainState) -> bool:
        if state.step % self.every and state.step != self.last_step:
            return False
        loss = self.held_out_loss(state.net)
        state.extra.setdefault("val_step", []).append(state.step)
        state.extra.setdefault("val_loss", []).append(loss)
        if loss < self.best_loss * (1 - self.min_delta):
            self.best_loss, self.best_step, self.since_best = loss, state.step, 0
            self.best_W = state.net.W.clone()
            return False
        self.since_best += 1
        return self.since_best >= self.patience or not math.isfinite(loss)

    def restore(self, net: TwoLayerNet) -> None:
        """Put the best W seen back into `net`."""
        if self.best_W is not None:
            net.W = self.best_W


@dataclass
class DenoiserFit:
    """A trained denoiser F ~ E[x_0 | x_t, t] with its embedding and training record.

    train_mse: mean ||F - y||^2 on the training pairs at each recorded step (History.loss * 2 / N);
    val_step, val_loss: the held-out mean ||F - y||^2 at each evaluation; val_pairs: the held-out pairs.
    budget: the step budget training had; twin: the Theta(W(0)) twin that set it (None without
    `twin_budget`); budget_cut: c t* exceeded `steps`, which capped the budget.
    """

    net: TwoLayerNet
    embedding: Embedding
    history: History
    best_step: int
    best_val_loss: float
    val_step: np.ndarray
    val_loss: np.ndarray
    train_mse: np.ndarray
    n_train: int
    n_val: int
    val_pairs: NoisyPairs
    budget: int | None = None
    twin: object = None
    budget_cut: bool = False

    @property
    def ended_by(self) -> str:
        """'diverged', 'early stopping' (patience ran out before the budget) or 'budget'."""
        if self.history.status == "diverged":
            return "diverged"
        return "early stopping" if self.history.steps < self.budget else "budget"

    def summary(self) -> dict:
        twin = {} if self.twin is None else {"twin_t_star": self.twin.stop.time, "twin_stop_step": self.twin.stop.step,
                                             "twin_seconds": self.twin.seconds}
        return {**self.history.summary(), "best_step": self.best_step, "best_val_loss": self.best_val_loss,
                "n_train_pairs": self.n_train, "n_val_pairs": self.n_val, "embedding": self.embedding.describe(),
                "budget": self.budget, "budget_cut": self.budget_cut, "ended_by": self.ended_by, **twin}


def split(x0: torch.Tensor, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train / held-out split of the x_0 rows (noise draws of one x_0 never straddle it)."""
    n = x0.shape[0]
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    if n < 2:
        raise ValueError(f"need at least 2 samples of x_0 to hold some out, got n = {n}")
    order = torch.randperm(n, generator=generator)
    return x0[order[n_val:]], x0[order[:n_val]]


@dataclass
class DenoisingData:
    """The regression pairs of one fit (the split, the noise and the embedding a seed fixes)."""

    train: NoisyPairs
    val: NoisyPairs
    embedding: Embedding

    def inputs(self, pairs: NoisyPairs, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(z, y): embed(x_t, t) (N, in_dim) and the labels x_0 (N, d)."""
        z = self.embedding(pairs.xt, pairs.t).to(dtype=dtype, device=device)
        return z, pairs.x0.to(dtype=dtype, device=device)


def denoising_data(x0: torch.Tensor, horizon: Horizon, config: TrainingConfig, seed: int = 0) -> DenoisingData:
    """The train / held-out pairs and the embedding that `fit_denoiser(x0, horizon, config, seed)` trains on."""
    generator = torch.Generator().manual_seed(int(seed))
    train_x0, val_x0 = split(x0.to(torch.float64), config.val_fraction, generator)
    train_pairs = noisy_pairs(train_x0, horizon, config.noise_draws, generator, config.time_law)
    val_pairs = noisy_pairs(val_x0, horizon, config.noise_draws, generator, config.time_law)
    return DenoisingData(train_pairs, val_pairs, Embedding.fit(train_pairs.xt, horizon, config.bias))


def initial_network(data: DenoisingData, config: TrainingConfig, seed: int = 0) -> TwoLayerNet:
    """The denoiser network at W(0), as `fit_denoiser` builds it (in_dim from the embedding, out_dim = d)."""
    d = data.train.x0.shape[1]
    return TwoLayerNet(data.embedding.in_dim(d), config.width, out_dim=d, activation=config.activation,
                       scale=config.scale, init=config.init, sigma=config.sigma, seed=seed, dtype=config.dtype,
                       device=config.device)


def fit_denoiser(x0: torch.Tensor, horizon: Horizon, config: TrainingConfig, seed: int = 0,
                 progress=None) -> DenoiserFit:
    """Train F(embed(x_t, t)) ~ x_0 on samples x0 (n, d) of p_0 with early stopping (module docstring).

    `seed` fixes the split, the noise, the initial network and minibatches; `progress(step, norm)`
    is passed to `overparam.train`.
    """
    data = denoising_data(x0, horizon, config, seed)
    net = initial_network(data, config, seed)
    Z, y = data.inputs(data.train, net.dtype, net.device)
    budget, lr, twin, every = config.steps, config.lr, None, config.eval_every
    if config.twin_budget is not None:
        from .twin import kernel_twin

        twin = kernel_twin("theta0", x0, horizon, config, seed)
        budget, lr = min(config.steps, math.ceil(config.twin_budget * twin.stop.time)), twin.lr
        every = max(every, math.ceil(twin.stop.time / TWIN_EVALUATIONS))
    stopper = EarlyStopping(*data.inputs(data.val, net.dtype, net.device), every, config.patience, budget)
    history = train(net, Z, y, lr=lr, steps=budget, optimizer=config.optimizer,
                    batch_size=config.batch_size, record_every=1, callbacks=[stopper], seed=seed,
                    progress=progress)
    stopper.restore(net)
    cut = twin is not None and config.twin_budget * twin.stop.time > config.steps
    return DenoiserFit(net, data.embedding, history, stopper.best_step, stopper.best_loss,
                       history.extra.get("val_step", np.array([], dtype=int)),
                       history.extra.get("val_loss", np.array([])),
                       2 * history.loss / Z.shape[0], Z.shape[0], stopper.Z.shape[0], data.val, budget, twin, cut)
