"""The shared training unit: `seeds` networks of one shape trained by GD on the sphere as one batch.

Requested by the training, laziness and initialisation sections (one unit, trained once, whichever
section asks first). lr = 1/lambda_max(Theta(W(0))). Per seed it records the residual curve, the
kernel-regime curve ||(I - lr Theta(0))^t (F(0) - y)||^2 (`KernelRegime`, the linearised dynamics of
docs/mathematics.md#predictions), the DZPS19 quantities, and the kernel and weights at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import data
from ..training.batched import train_batched
from ..kernels.regime import KernelRegime
from ..models import TwoLayerNet, initial_weights, pairs_neurons
from ..kernels.infinite import infinite_ntk
from ..kernels.finite import ntk
from .framework import RunStatus, SectionConfig, Unit, require_even, require_grid, require_positive

CURVE_POINTS = 1000


@dataclass
class SeedRun(RunStatus):
    """One seed's run. steps: GD steps taken; kernel_steps: steps the linearised dynamics need to reach
    tol (None: not within the budget); drift = ||H(W(T)) - H(W(0))||_2; movements of the neurons."""

    seed: int
    status: str
    steps: int = 0
    lr: float = float("nan")
    eta_eff: float = float("nan")
    step: list[int] | None = None
    loss2: list[float] | None = None
    kernel_loss2: list[float] | None = None
    kernel_steps: int | None = None
    max_movement: float = float("nan")
    total_movement: float = float("nan")
    drift: float = float("nan")
    lambda_min_H0: float = float("nan")
    lambda_min_HT: float = float("nan")
    initial_residual: float = float("nan")
    final_residual: float = float("nan")
    wall_seconds: float = float("nan")
    error: str = ""


@dataclass
class TrainingRecord:
    """lam = lambda_min(H*) on the training inputs; kappa the output scale; one SeedRun per seed."""

    lam: float
    kappa: float
    n: int
    width: int
    runs: list[SeedRun]

    @property
    def ok(self) -> list[SeedRun]:
        return [r for r in self.runs if r.ok]


@dataclass(frozen=True)
class TrainingRun(Unit):
    """Train `seeds` networks (seeds 0..seeds-1) of width m on `data.sphere(n, d, data_seed)` to tol."""

    RECORD = TrainingRecord

    activation: str
    width: int
    init: str
    n: int
    d: int
    sigma: float
    data_seed: int
    seeds: int
    steps: int
    tol: float

    def compute(self, ctx) -> TrainingRecord:
        device = ctx.device
        dataset = data.sphere(self.n, self.d, seed=self.data_seed)
        X = torch.from_numpy(dataset.X).to(device)
        y = torch.from_numpy(dataset.y).to(device)
        W0, a = initial_weights(self.width, self.d, 1, self.init, self.sigma, range(self.seeds), device=device)
        W = W0.clone()
        template = TwoLayerNet(self.d, self.width, 1, self.activation, init=self.init, sigma=self.sigma,
                               device=device)
        nets = [_at(template, W0[s], a[s]) for s in range(self.seeds)]
        kappa = nets[0].kappa
        record_every = max(1, self.steps // CURVE_POINTS)
        histories = train_batched(X, y, W, a, self.activation, kappa, lr="auto", steps=self.steps, tol=self.tol,
                                  record_every=record_every, paired=pairs_neurons(self.init, self.width))
        lam = float(torch.linalg.eigvalsh(infinite_ntk(self.activation, X.cpu(), self.sigma))[0])
        runs = []
        for seed, (net, history) in enumerate(zip(nets, histories)):
            if isinstance(history, Exception):
                runs.append(SeedRun(seed, "failed", error=str(history)))
                continue
            H0 = ntk(net, X)
            net.W = W[seed]
            HT = ntk(net, X)
            # the kernel-regime curves are computed on the CPU, like the recorded steps they are compared with
            regime = KernelRegime.from_kernel(H0.cpu() * (self.width * kappa**2), _at(net, W0[seed])(X).cpu(),
                                              y.cpu(), history.lr)
            reached = regime.steps_to(self.tol, max_steps=10**9)
            runs.append(SeedRun(
                seed=seed, status=history.status, steps=history.steps, lr=history.lr,
                eta_eff=history.lr * self.width * kappa**2, step=history.step.tolist(),
                loss2=(history.residual_norm**2).tolist(),
                kernel_loss2=(regime.residual_norm(history.step) ** 2).tolist(),
                kernel_steps=reached if reached is not None and reached <= self.steps else None,
                max_movement=float(history.max_movement[-1]), total_movement=float(history.total_movement[-1]),
                drift=float(torch.linalg.eigvalsh(HT - H0).abs().max()),
                lambda_min_H0=float(torch.linalg.eigvalsh(H0)[0]), lambda_min_HT=float(torch.linalg.eigvalsh(HT)[0]),
                initial_residual=float(history.residual_norm[0]), final_residual=float(history.residual_norm[-1]),
                wall_seconds=float(history.wall_time[-1])))
        return TrainingRecord(lam, kappa, self.n, self.width, runs)


@dataclass(frozen=True)
class TrainingSettings(SectionConfig):
    """The settings of a section made of shared training runs: n points on the sphere, widths m, seeds per
    width, GD step budget (training ends sooner at tol)."""

    n: int = 24
    widths: tuple[int, ...] = (128, 512, 2048)
    seeds: int = 4
    steps: int = 3000

    def check(self) -> None:
        require_positive("n", self.n)
        require_grid("widths", self.widths)
        require_positive("seeds", self.seeds)
        require_positive("steps", self.steps)

    def check_with(self, core) -> None:
        require_even("widths", self.widths, core.init)


def training_units(study, cfg: TrainingSettings) -> list[TrainingRun]:
    """The shared training runs of a section with `TrainingSettings`, for every activation and width."""
    return [TrainingRun(a, m, study.init, cfg.n, study.d, study.sigma, study.seed, cfg.seeds, cfg.steps, study.tol)
            for a in study.activations for m in cfg.widths]


def _at(net: TwoLayerNet, W: torch.Tensor, a: torch.Tensor | None = None) -> TwoLayerNet:
    """A copy of `net` with weights W (and signs a, when given)."""
    clone = net.copy()
    clone.W = W
    if a is not None:
        clone.a = a
    return clone
