"""Section: the kernel under perturbation, the property every proof needs of it (docs/mathematics.md#perturbation).

For each activation and width (the section's n and widths, the study's data, init and network seed 0),
W = W(0) + U with every ||u_r|| = R on a log grid of R, in four directions: random (independent per neuron),
shift (one u shared by all neurons), gradient (grad_{w_r} L(W(0)), the direction GD starts in) and worst
(projected ascent on ||H(W(0) + U) - H(W(0))||_2 from the best of the other three). change/lambda =
||H(W(0) + U) - H(W(0))||_2 / lambda with lambda = lambda_min(H*), and R*, where change/lambda reaches 1/4,
beside the movement GD actually made (the shared `TrainingRun`s, the training section's when the settings
agree) and DZPS19's radius delta lambda / n^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import activations, data, plots, theory
from ..models import TwoLayerNet
from ..kernels.infinite import infinite_ntk
from ..kernels.finite import ntk
from ..sweep.executors import torch_threads
from .framework import (Plot, Report, SectionConfig, StudySection, Unit, require_even, require_grid, require_positive,
                        table)
from .report import Fact
from .training_run import TrainingRecord, TrainingRun

DIRECTIONS = ("random", "shift", "gradient", "worst")
#: change / lambda at which the proofs' condition ||H(W) - H(W(0))||_2 <= lambda / 4 fails.
LIMIT = 0.25
STYLE = {"random": "tab:gray", "shift": "tab:purple", "gradient": "tab:red", "worst": "black"}


@dataclass(frozen=True)
class Config(SectionConfig):
    """n points, widths m, radii R of every neuron's move, projected-ascent steps of the worst direction;
    seeds and steps of the training runs whose movement is shown (the training section's defaults, so
    both sections share those runs)."""

    n: int = 24
    widths: tuple[int, ...] = (128, 512, 2048)
    radii: tuple[float, ...] = tuple(10 ** (k / 4) for k in range(-12, 1))
    ascent_steps: int = 10
    seeds: int = 4
    steps: int = 3000

    def check(self) -> None:
        require_positive("n", self.n)
        require_grid("widths", self.widths)
        require_grid("radii", self.radii, minimum=2)
        require_positive("ascent_steps", self.ascent_steps)
        require_positive("seeds", self.seeds)
        require_positive("steps", self.steps)

    def check_with(self, core) -> None:
        require_even("widths", self.widths, core.init)


@dataclass
class Curve:
    """One direction along the radii: change/lambda and lambda_min(H(W(0) + U))/lambda."""

    change: list[float]
    lambda_min: list[float]


@dataclass
class PerturbationRecord:
    """lam = lambda_min(H*) on the inputs; the radii R; one Curve per direction (DIRECTIONS)."""

    lam: float
    radii: list[float]
    curves: dict[str, Curve]


@dataclass(frozen=True)
class KernelPerturbation(Unit):
    """The kernel of network seed 0 (width m, `init`) on `data.sphere(n, d, data_seed)` moved by W(0) + U,
    every ||u_r|| = R for R in `radii`, in each direction (module docstring). Computed on the CPU whatever
    the device: n x n kernels and small GEMMs, one torch thread (a second only adds contention)."""

    RECORD = PerturbationRecord

    activation: str
    width: int
    init: str
    n: int
    d: int
    sigma: float
    data_seed: int
    radii: tuple[float, ...]
    ascent_steps: int

    def compute(self, ctx) -> PerturbationRecord:
        with torch_threads(1):
            dataset = data.sphere(self.n, self.d, seed=self.data_seed)
            X, y = torch.from_numpy(dataset.X), torch.from_numpy(dataset.y)
            net = TwoLayerNet(self.d, self.width, 1, self.activation, init=self.init, sigma=self.sigma, seed=0)
            lam = float(torch.linalg.eigvalsh(infinite_ntk(self.activation, X, self.sigma))[0])
            W0 = net.W.clone()
            H0 = ntk(net, X)
            units = directions(net, X, y, self.data_seed)
            curves = {d: Curve([], []) for d in DIRECTIONS}
            for radius in self.radii:
                found = {}
                for name, direction in units.items():
                    change, smallest, _, _ = kernel_change(net, X, W0, radius * direction, H0)
                    found[name] = (change, smallest)
                start = max(found, key=lambda name: found[name][0])
                found["worst"] = worst(net, X, W0, H0, radius * units[start], radius, self.ascent_steps)
                for name, (change, smallest) in found.items():
                    curves[name].change.append(change / lam)
                    curves[name].lambda_min.append(smallest / lam)
            return PerturbationRecord(lam, list(self.radii), curves)


def output(activation: str, W: torch.Tensor, a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """F(W, X) / kappa written out for autograd (docs/mathematics.md#networks): sum_r a_r phi(<w_r, x>), a
    normalised activation divided by its mean over the neurons."""
    record = activations.resolve(activation)
    phi = record.value(X @ W.T)
    if record.normalised:
        phi = phi * (W.shape[0] / phi.sum(1, keepdim=True))
    return phi @ a


def directions(net: TwoLayerNet, X: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Unit-row directions (m, d) random, shift and gradient (docs/mathematics.md#perturbation); a neuron whose
    gradient is zero (a relu neuron inactive on every input) takes its random direction."""
    generator = torch.Generator().manual_seed(seed)
    W0 = net.W
    random = torch.randn(W0.shape, generator=generator, dtype=W0.dtype)
    shared = torch.randn(W0.shape[1], generator=generator, dtype=W0.dtype)
    gradient = net.grad(X, y)
    norms = gradient.norm(dim=1, keepdim=True)
    random = random / random.norm(dim=1, keepdim=True)
    gradient = torch.where(norms > 0, gradient / norms.clamp_min(1e-300), random)
    return {"random": random, "shift": (shared / shared.norm()).expand_as(W0).clone(), "gradient": gradient}


def kernel_change(net: TwoLayerNet, X: torch.Tensor, W0: torch.Tensor, U: torch.Tensor, H0: torch.Tensor):
    """(||H(W0 + U) - H0||_2, lambda_min(H(W0 + U)), top eigenvector of the difference with its sign)."""
    net.W = W0 + U
    H = ntk(net, X)
    values, vectors = torch.linalg.eigh(H - H0)
    top = int(values.abs().argmax())
    return float(values[top].abs()), float(torch.linalg.eigvalsh(H)[0]), vectors[:, top], float(values[top].sign())


def worst(net: TwoLayerNet, X: torch.Tensor, W0: torch.Tensor, H0: torch.Tensor, start: torch.Tensor, radius: float,
          steps: int) -> tuple[float, float]:
    """Projected ascent on ||H(W0 + U) - H0||_2 over rows ||u_r|| = radius from U = start: each step moves
    every row by radius/2 along the gradient of s v^T H(W0 + U) v (v, s the top eigenvector of the difference
    and its sign; v^T H v = ||J^T v||^2 / (m kappa^2), by double autograd), then back onto the sphere. Returns
    the largest (change, lambda_min) met. relu's kernel is piecewise constant in W: its gradient vanishes and
    the ascent keeps its start."""
    best = kernel_change(net, X, W0, start, H0)
    U = start
    for _ in range(steps):
        change, smallest, v, sign = kernel_change(net, X, W0, U, H0)
        if change > best[0]:
            best = (change, smallest, v, sign)
        W = (W0 + U).requires_grad_(True)
        inner = (v[:, None] * output(net.activation, W, net.a, X)).sum()
        (jacobian_v,) = torch.autograd.grad(inner, W, create_graph=True)
        objective = sign * jacobian_v.square().sum() / W.shape[0]
        if not objective.requires_grad:
            break
        (slope,) = torch.autograd.grad(objective, W)
        rows = slope.norm(dim=1, keepdim=True)
        if not bool((rows > 0).any()):
            break
        U = U + 0.5 * radius * slope / rows.clamp_min(1e-300)
        U = radius * U / U.norm(dim=1, keepdim=True).clamp_min(1e-300)
    change, smallest, _, _ = kernel_change(net, X, W0, U, H0)
    return max((change, smallest), best[:2])


def radius_reaching(radii, changes, level: float = LIMIT) -> float:
    """R* where change/lambda first reaches `level`, log-log interpolated between the grid radii around it
    (the upper one where the lower had no change at all); inf where it never does, 0 where it already does at
    the smallest radius (below the grid)."""
    for index, (radius, change) in enumerate(zip(radii, changes)):
        if change >= level:
            if index == 0:
                return 0.0
            r0, c0 = radii[index - 1], changes[index - 1]
            if c0 <= 0:  # no change at all below: no slope to interpolate on, the grid radius
                return radius
            t = (math.log(level) - math.log(c0)) / (math.log(change) - math.log(c0))
            return math.exp(math.log(r0) + t * (math.log(radius) - math.log(r0)))
    return math.inf


@dataclass
class CurveRow:
    activation: str
    width: int
    direction: str
    radius: float
    change: float
    lambda_min: float


CURVE_COLUMNS = [("activation", "activation"), ("m", "width"), ("direction", "direction"), ("R", "radius"),
                 ("change/lambda", "change"), ("lambda_min/lambda", "lambda_min")]


@dataclass
class RadiusRow:
    """R* per direction (inf: beyond the largest radius; 0: at or below the smallest), the movement GD made
    (mean over seeds of max_r ||w_r(T) - w_r(0)||) and DZPS19's radius delta lambda / n^2."""

    activation: str
    width: int
    star: dict[str, float]
    movement: float
    dzps19: float


def outside_grid(value: float, radii) -> str | float:
    """R* as a number, or where it lies outside the grid as '> largest' / '<= smallest'."""
    if math.isinf(value):
        return f"> {radii[-1]:g}"
    if value == 0:
        return f"<= {radii[0]:g}"
    return value


def shown(value: float, radii) -> str:
    value = outside_grid(value, radii)
    return value if isinstance(value, str) else f"{value:.3g}"


def movement(record: TrainingRecord) -> float:
    """GD's movement: the mean over the seeds that ran of max_r ||w_r(T) - w_r(0)|| (NaN where none ran)."""
    return float(np.mean([r.max_movement for r in record.ok] or [np.nan]))


class Perturbation(StudySection):
    KEY, TITLE, Config = "perturbation", "The kernel under perturbation: how far may the neurons move?", Config

    def units(self, study, cfg) -> list[Unit]:
        perturbed = [KernelPerturbation(a, m, study.init, cfg.n, study.d, study.sigma, study.seed, cfg.radii,
                                        cfg.ascent_steps) for a in study.activations for m in cfg.widths]
        trained = [TrainingRun(a, m, study.init, cfg.n, study.d, study.sigma, study.seed, cfg.seeds, cfg.steps,
                               study.tol) for a in study.activations for m in cfg.widths]
        return perturbed + trained

    def report(self, study, cfg, records) -> Report:
        found = {(u.activation, u.width): r for u, r in records.items() if isinstance(u, KernelPerturbation)}
        moved = {(u.activation, u.width): movement(r) for u, r in records.items() if isinstance(u, TrainingRun)}
        curves = [CurveRow(a, m, d, radius, change, smallest)
                  for (a, m), record in found.items() for d in DIRECTIONS
                  for radius, change, smallest in zip(record.radii, record.curves[d].change,
                                                      record.curves[d].lambda_min)]
        stars = [RadiusRow(a, m, {d: radius_reaching(record.radii, record.curves[d].change) for d in DIRECTIONS},
                           moved[a, m], theory.dzps19_perturbation_radius(cfg.n, record.lam, study.delta))
                 for (a, m), record in found.items()]
        largest = cfg.widths[-1]
        columns = [("activation", "activation"), ("m", "width"),
                   *((f"R* {d}", lambda r, d=d: outside_grid(r.star[d], cfg.radii)) for d in DIRECTIONS),
                   ("GD movement", "movement"), ("DZPS19 delta lambda/n^2", "dzps19")]
        return Report(
            reading=reading(study, cfg, found, moved),
            tables=[table("perturbation", "Kernel change under W(0) + U, every ||u_r|| = R", curves, CURVE_COLUMNS),
                    table("perturbation_radius", "R* (change/lambda reaches 1/4) per direction, the movement GD made "
                          "(section (c), mean over seeds of max_r ||w_r(T) - w_r(0)||) and DZPS19's R = delta "
                          "lambda / n^2 (order, constant 1)", stars, columns)],
            facts=[Fact(r.activation, f"R* {d} at m = {largest} (n = {cfg.n})", outside_grid(r.star[d], cfg.radii))
                   for r in stars if r.width == largest for d in DIRECTIONS],
            plots=[Plot("perturbation", "change/lambda = ||H(W(0) + U) - H(W(0))||_2 / lambda against the radius R "
                        "of every neuron's move, per direction (line shade: width, darker is wider); dotted "
                        "horizontal: 1/4; dotted vertical: the movement GD made at the largest width; dash-dot: "
                        "DZPS19's delta lambda / n^2 (order).", figure(study, cfg, found, moved))])


def figure(study, cfg, found: dict, moved: dict):
    fig, axes = plots.figure(1, len(study.activations), size=(4.6 * len(study.activations), 4.2),
                             squeeze=False, sharey=True)
    floor = 1e-17  # exact invariances give rounding-level changes: drawn at this floor on the log axis
    largest = cfg.widths[-1]
    for axis, activation in zip(axes[0], study.activations):
        for index, width in enumerate(cfg.widths):
            record = found[activation, width]
            shade = 0.35 + 0.65 * (index + 1) / len(cfg.widths)
            for direction in DIRECTIONS:
                axis.plot(record.radii, np.maximum(record.curves[direction].change, floor), color=STYLE[direction],
                          alpha=shade, marker="o", ms=2.5, lw=1, label=direction if width == largest else None)
        axis.axhline(LIMIT, color="0.5", ls=":", lw=1)
        axis.axvline(moved[activation, largest], color="tab:blue", ls=":", lw=1, label=f"GD movement, m = {largest}")
        lam = found[activation, largest].lam
        axis.axvline(theory.dzps19_perturbation_radius(cfg.n, lam, study.delta), color="tab:blue", ls="-.",
                     lw=1, label="DZPS19 delta lambda / n^2")
        axis.set(xscale="log", yscale="log", xlabel="R (every ||u_r|| = R)", title=activation)
        plots.finish(axis, legend=7)
    axes[0][0].set_ylabel(r"$\|H(W(0)+U) - H(W(0))\|_2 / \lambda$")
    return fig


def reading(study, cfg, found: dict, moved: dict) -> list[str]:
    largest, radii = cfg.widths[-1], cfg.radii
    star = {(a, d): radius_reaching(found[a, largest].radii, found[a, largest].curves[d].change)
            for a in study.activations for d in DIRECTIONS}
    text = [f"At m = {largest} (n = {cfg.n}), R* (the radius at which ||H(W) - H(W(0))||_2 reaches lambda/4) "
            "by direction: " + "; ".join(
                f"{d}: " + ", ".join(f"{a} {shown(star[a, d], radii)}" for a in study.activations)
                for d in DIRECTIONS) + "."]
    normalised = [a for a in study.activations if activations.resolve(a).normalised]
    others = [a for a in study.activations if a not in normalised]
    for a in normalised:
        def compared(a, d, wins):
            against = ", ".join(f"{shown(star[a, d], radii)} against {b} {shown(star[b, d], radii)}" for b in wins)
            return f"{d} ({against})"

        more = [compared(a, d, [b for b in others if star[a, d] > star[b, d]]) for d in DIRECTIONS
                if any(star[a, d] > star[b, d] for b in others)]
        less = [compared(a, d, [b for b in others if star[a, d] < star[b, d]]) for d in DIRECTIONS
                if any(star[a, d] < star[b, d] for b in others)]
        text.append(f"{a}'s kernel was more stable (a larger R*) in the directions " + ("; ".join(more) or "none")
                    + ". It was less stable in " + ("; ".join(less) or "none") + ".")
        shift = max(max(found[a, m].curves["shift"].change) for m in cfg.widths)
        text.append(f"Shift: the largest change/lambda of {a} over every R and width was {shift:.2g}, rounding: a "
                    "shared shift moves every <w_r, x_i> of one input by the same <u, x_i>, and a normalisation over "
                    "the neurons ignores it (an exact invariance, tested at 1e-12). An elementwise phi has no such "
                    "invariance (for phi = e^z the kernel becomes D H D, D = diag(e^<u, x_i>), also tested): "
                    + ", ".join(f"{b} R* {shown(star[b, 'shift'], radii)}" for b in others) + ".")
    flat = [a for a in study.activations if all(
        found[a, m].curves["worst"].change[i] == max(found[a, m].curves[d].change[i] for d in DIRECTIONS[:-1])
        for m in cfg.widths for i in range(len(radii)))]
    if flat:
        text.append(f"For {', '.join(flat)} the ascent never improved on its start (a kernel piecewise constant in W, "
                    "as a 0/1 pattern 1{z > 0} makes it, has zero gradient): its 'worst' is only the largest of "
                    "the three other directions, a weaker search than the others'.")
    for a in study.activations:
        smallest = min(star[a, d] for d in DIRECTIONS)
        gd = moved[a, largest]
        dzps = theory.dzps19_perturbation_radius(cfg.n, found[a, largest].lam, study.delta)
        margin = ""
        if math.isfinite(smallest) and smallest > 0 and gd > 0:
            margin = (f", {smallest / gd:.3g} times what GD moved" if smallest >= gd else
                      f": GD moved {gd / smallest:.3g} times that far, so a move of its size changes the kernel "
                      "by more than lambda/4 in the worst direction found (GD's own path need not take it)")
        text.append(f"{a}: GD moved its neurons by at most {gd:.3g} (mean over seeds, m = {largest}); the "
                    f"smallest R* over the directions was {shown(smallest, radii)}{margin}; "
                    f"DZPS19's radius delta lambda / n^2 is {dzps:.3g}.")
    return text


SECTION = Perturbation()
