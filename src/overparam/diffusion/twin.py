"""The kernel twin of a denoiser network: early-stopped kernel regression in closed form
(docs/mathematics.md#the-kernel-twin; HRX24 reduce score matching with wide networks to it).

On exactly the pairs (z_i = embed(x_t, t), y_i = x_0) that `fit_denoiser` trains on (same split, noise
and embedding for the same seed), GD with step lr on the linear model with kernel K gives after t steps

    f_t(z) = f_0(z) - K(z, Z) Q diag(g(mu, t)) Q^T (f_0(Z) - y),   g(mu, t) = (1 - (1 - lr mu)^t) / mu,

K = Q diag(mu) Q^T decomposed once (`overparam.kernels.regime`). Two kernels (`TWINS`):

- theta0: the network's own Theta(W(0)) (its finite NTK at initialisation, (nd x nd): output blocks couple
  at finite m), f_0 = F(W(0), .) (0 under coupled initialisation), lr the network's step ('auto':
  1 / lambda_max(Theta(W(0))), as training picks it). GD on a wide network follows this path (HRX24 Thm 3.9).
- hstar: m kappa^2 H* for each output (H* = I_d (x) K*, d scalar problems sharing one decomposition of the
  n x n matrix K*), f_0 = 0 (the limit of coupled initialisation); lr 'auto': 1 / lambda_max(m kappa^2 H*).

The stopping time t* minimises the held-out loss mean_i ||f_t(z_i) - y_i||^2 over the fit's held-out pairs
(`kernels.regime.minimise_loss`: a log grid, then a bounded Brent search); the twin's denoiser is f at the
integer step next to t*, and its score the Tweedie score of that denoiser, as for a network. The scan ends at
`rounding_horizon`: the time at which eigenvalues at the rounding level of the eigendecomposition
(N eps lambda_max) would start to move, beyond which f_t is set by rounding, not by the kernel. Smooth kernels
(exp, softmax) have most of their spectrum below that level, and their t* can lie far beyond any step budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..kernels.regime import KernelRegime, StoppingTime, minimise_loss
from ..kernels.infinite import infinite_ntk
from ..training.loop import auto_lr
from . import process
from .embedding import Embedding
from .mixtures import GaussianMixture
from .process import Horizon
from .score import LearnedScore
from .training import TrainingConfig, denoising_data, initial_network

TWINS = ("theta0", "hstar")


class TwinDenoiser:
    """z -> f_step(z), shape (n, d): a denoiser with what `LearnedScore` reads of a network (dtype, device,
    a call on embedded inputs)."""

    dtype = torch.float64
    device = torch.device("cpu")

    def __init__(self, parts) -> None:
        self.parts = parts

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(dtype=torch.float64, device="cpu")
        return torch.cat([part(z) for part in self.parts], 1)


@dataclass
class TwinFit:
    """A kernel twin: its regimes (one for theta0; one per output for hstar, their losses add), the held-out
    losses of each, the minimiser `stop`, and what it cost.

    lr: the GD step on K in the network's units (K = Theta(W(0)) or m kappa^2 H*); seconds: wall time of
    kernels, decomposition and the search for t*.
    """

    kind: str
    activation: str
    regimes: list[KernelRegime]
    held_out: list
    stop: StoppingTime
    embedding: Embedding
    lr: float
    seconds: float
    n_train: int
    n_val: int

    def held_out_loss(self, times) -> np.ndarray:
        """mean_i ||f_t(z_i) - y_i||^2 over the held-out pairs at each real t >= 0, shape (T,)."""
        return sum(loss(times) for loss in self.held_out)

    def denoiser(self, step: int | None = None) -> TwinDenoiser:
        """f_step (default: the stop step) as a denoiser."""
        step = self.stop.step if step is None else int(step)
        return TwinDenoiser([regime.predictor(step) for regime in self.regimes])

    def score(self, step: int | None = None) -> LearnedScore:
        """The Tweedie score (alpha_t f_step(embed(x, t)) - x) / h_t."""
        return LearnedScore(self.denoiser(step), self.embedding)

    def summary(self) -> dict:
        """Plain data: t*, the stop step, its held-out loss, whether t* is the scan's end (`rounding_horizon`),
    lr, seconds."""
        return {"kernel": self.kind, "t_star": self.stop.time, "stop_step": self.stop.step,
                "heldout_loss": self.stop.loss, "at_limit": self.stop.at_limit, "lr": self.lr,
                "seconds": self.seconds, "n_train_pairs": self.n_train, "n_val_pairs": self.n_val}


def rounding_horizon(eigenvalues: torch.Tensor, lr: float) -> float:
    """1 / (lr N eps lambda_max): the number of steps after which a mode with eigenvalue N eps lambda_max (the
    rounding error of a float64 eigendecomposition of an N x N kernel) has moved by its own size (at least 1)."""
    top = float(eigenvalues.abs().max())
    if not top > 0:
        return 1.0
    return max(1.0, 1.0 / (lr * len(eigenvalues) * float(torch.finfo(torch.float64).eps) * top))


def kernel_twin(kind: str, x0: torch.Tensor, horizon: Horizon, config: TrainingConfig, seed: int = 0,
                lr: float | str | None = None, max_time: float | None = None) -> TwinFit:
    """The `kind` twin ('theta0' or 'hstar') of `fit_denoiser(x0, horizon, config, seed)` (module docstring).

    lr: the step on K; None takes config.lr for theta0 (the network's own) and 'auto' for hstar.
    max_time: the end of the scan for t*; None: `rounding_horizon` of the kernel.
    """
    if kind not in TWINS:
        raise ValueError(f"unknown kernel twin {kind!r}: use one of {', '.join(TWINS)}")
    started = time.perf_counter()
    data = denoising_data(x0, horizon, config, seed)
    Z, y = data.inputs(data.train)
    Z_val, y_val = data.inputs(data.val)
    net = initial_network(data, config, seed)
    step = (config.lr if kind == "theta0" else "auto") if lr is None else lr
    if kind == "theta0":
        step = auto_lr(net, Z.to(dtype=net.dtype, device=net.device)) if step == "auto" else float(step)
        regimes = [KernelRegime.of_network(net, Z, y, step)]
    else:
        regimes, step = _hstar_regimes(net, config.activation, config.sigma, Z, y, step)
    held_out = [regime.held_out(Z_val, y_val[:, part]) for regime, part in zip(regimes, _columns(regimes))]
    if max_time is None:
        max_time = rounding_horizon(regimes[0].eigenvalues, float(step))
    stop = minimise_loss(lambda times: sum(loss(times) for loss in held_out), max_time)
    return TwinFit(kind, config.activation, regimes, held_out, stop, data.embedding, float(step),
                   time.perf_counter() - started, Z.shape[0], Z_val.shape[0])


def _columns(regimes: list[KernelRegime]) -> list[slice]:
    """The target columns each regime predicts (all of them for one regime, one each for several)."""
    if len(regimes) == 1:
        return [slice(None)]
    return [slice(column, column + 1) for column in range(len(regimes))]


def _hstar_regimes(net, activation: str, sigma: float, Z: torch.Tensor, y: torch.Tensor,
                   lr: float | str) -> tuple[list[KernelRegime], float]:
    """One regime per output column on K = m kappa^2 K* (one eigendecomposition of the n x n K*), f_0 = 0."""
    scale = net.width * net.kappa ** 2
    kernel = scale * infinite_ntk(activation, Z, sigma)
    if not torch.isfinite(kernel).all():
        raise ValueError(f"H* of {activation} overflows float64 on these inputs (lower sigma)")
    mu, Q = torch.linalg.eigh(kernel)
    lr = 1.0 / float(mu[-1]) if lr == "auto" else float(lr)

    def cross(Z_test: torch.Tensor) -> torch.Tensor:
        return scale * infinite_ntk(activation, Z_test, sigma, X2=Z)

    def cross_map(V: torch.Tensor):
        return lambda Z_test: cross(Z_test) @ V

    regimes = [KernelRegime.from_eigendecomposition(mu, Q, torch.zeros(Z.shape[0], 1, dtype=torch.float64),
                                                    y[:, column:column + 1], lr, cross, cross_map=cross_map)
               for column in range(y.shape[1])]
    return regimes, lr


def posterior_mean_score(truth: GaussianMixture):
    """The Tweedie score (alpha_t D(x, t) - x) / h_t of the exact posterior mean D = E[x_0 | x_t = x] of the
    mixture p_0: a perfect denoiser, whose score is grad log p_t (up to rounding)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (process.alpha(t)[:, None] * truth.denoiser(x, t) - x) / process.h(t)[:, None]

    return score


def twin_distance(fit_net, twin: TwinFit, step: int, Z: torch.Tensor) -> float:
    """RMS over inputs Z of ||F(z) - f_step(z)||: a network against its twin at one step."""
    difference = fit_net(Z.to(dtype=fit_net.dtype, device=fit_net.device)).to(torch.float64).cpu() - \
        twin.denoiser(step)(Z)
    return math.sqrt(float(difference.square().sum(1).mean()))
