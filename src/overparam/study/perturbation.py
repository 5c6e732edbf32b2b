"""Section (g): the kernel under perturbation, the property every proof needs of it (SPEC §10).

For each activation and width (those of sections (b), (c): their data, init and first seed), W = W(0) + U
with every ||u_r|| = R on a log grid of R, in four directions: random (independent per neuron), shift (one
u shared by all neurons), gradient (grad_{w_r} L(W(0)), the direction GD starts in) and worst (projected
ascent on ||H(W(0) + U) - H(W(0))||_2 from the best of the other three). change/lambda =
||H(W(0) + U) - H(W(0))||_2 / lambda with lambda = lambda_min(H*), and R*, where change/lambda reaches 1/4,
beside the movement GD actually made (section (c)) and DZPS19's radius delta lambda / n^2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import activations, data, theory
from ..models import TwoLayerNet
from ..ntk import infinite_ntk, ntk
from ..sweep.executors import torch_threads
from .training_run import TrainingRun
from .framework import UnitContext, SectionConfig, require_even, require_grid, require_positive
from .legacy import LegacySection
from .report import Figure, Section, Table, save_figure

KEY, TITLE = "perturbation", "The kernel under perturbation: how far may the neurons move?"
DIRECTIONS = ("random", "shift", "gradient", "worst")
#: change / lambda at which the proofs' condition ||H(W) - H(W(0))||_2 <= lambda / 4 fails.
LIMIT = 0.25
STYLE = {"random": "tab:gray", "shift": "tab:purple", "gradient": "tab:red", "worst": "black"}

@dataclass(frozen=True)
class Config(SectionConfig):
    """n points, widths m, radii R of every neuron's move, projected-ascent steps of the worst direction."""

    n: int = 24
    widths: tuple[int, ...] = (128, 512, 2048)
    radii: tuple[float, ...] = tuple(10 ** (k / 4) for k in range(-12, 1))
    ascent_steps: int = 10

    def check(self) -> None:
        require_positive("n", self.n)
        require_grid("widths", self.widths)
        require_grid("radii", self.radii, minimum=2)
        require_positive("ascent_steps", self.ascent_steps)

    def check_with(self, core) -> None:
        require_even("widths", self.widths, core.init)


SECTION = LegacySection(sys.modules[__name__])


def units(cfg) -> int:
    return len(cfg.activations) * len(cfg.train_widths)


def unit_key(activation: str, width: int, cfg) -> str:
    radii = cfg.perturbation_radii
    return (f"{KEY}:{activation}:n={cfg.train_n}:d={cfg.d}:sigma={cfg.sigma}:init={cfg.train_init}:data={cfg.seed}:"
            f"m={width}:R={radii[0]:g}..{radii[-1]:g}x{len(radii)}:ascent={cfg.perturbation_ascent_steps}")


def network(activation: str, width: int, cfg) -> tuple[TwoLayerNet, torch.Tensor, torch.Tensor]:
    """(net at W(0), X, y): seed 0 of the training section's networks of this shape, and its data."""
    dataset = data.sphere(cfg.train_n, cfg.d, seed=cfg.seed)
    net = TwoLayerNet(cfg.d, width, 1, activation, init=cfg.train_init, sigma=cfg.sigma, seed=0)
    return net, torch.from_numpy(dataset.X), torch.from_numpy(dataset.y)


def output(activation: str, W: torch.Tensor, a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """F(W, X) / kappa written out for autograd (SPEC §2): sum_r a_r phi(<w_r, x>), a normalised activation
    divided by its mean over the neurons."""
    record = activations.resolve(activation)
    phi = record.value(X @ W.T)
    if record.normalised:
        phi = phi * (W.shape[0] / phi.sum(1, keepdim=True))
    return phi @ a


def directions(net: TwoLayerNet, X: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Unit-row directions (m, d) random, shift and gradient (SPEC §10); a neuron whose gradient is zero
    (a relu neuron inactive on every input) takes its random direction."""
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


def perturb(activation: str, width: int, cfg) -> dict:
    """The unit: change/lambda and lambda_min/lambda per direction along `perturbation_radii`."""
    net, X, y = network(activation, width, cfg)
    lam = float(torch.linalg.eigvalsh(infinite_ntk(activation, X, cfg.sigma))[0])
    W0 = net.W.clone()
    H0 = ntk(net, X)
    units = directions(net, X, y, cfg.seed)
    result = {"lambda": lam, "radii": list(cfg.perturbation_radii), **{d: {"change": [], "lambda_min": []}
                                                                        for d in DIRECTIONS}}
    for radius in cfg.perturbation_radii:
        found = {}
        for name, direction in units.items():
            change, smallest, _, _ = kernel_change(net, X, W0, radius * direction, H0)
            found[name] = (change, smallest)
        start = max(found, key=lambda name: found[name][0])
        found["worst"] = worst(net, X, W0, H0, radius * units[start], radius, cfg.perturbation_ascent_steps)
        for name, (change, smallest) in found.items():
            result[name]["change"].append(change / lam)
            result[name]["lambda_min"].append(smallest / lam)
    net.W = W0
    return result


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


def run(cfg, ctx) -> Section:
    section = Section(KEY, TITLE, command=ctx.command(KEY), config={
        k: getattr(cfg, k) for k in ("activations", "train_n", "d", "sigma", "train_widths", "train_init", "seed",
                                     "perturbation_radii", "perturbation_ascent_steps", "delta")})
    results = {}
    with torch_threads(1):  # n x n kernels and small GEMMs: a second thread only adds contention
        for activation in cfg.activations:
            for width in cfg.train_widths:
                results[activation, width] = ctx.cache.compute(unit_key(activation, width, cfg), KEY,
                                                               lambda a=activation, m=width: perturb(a, m, cfg))
                ctx.tick()
    unit_context = UnitContext(ctx.device, None)
    trained = {(a, m): ctx.cache.compute_unit(TrainingRun(a, m, cfg.train_init, cfg.train_n, cfg.d, cfg.sigma, cfg.seed,
                                                          cfg.train_seeds, cfg.train_steps, cfg.tol), unit_context)
               for a in cfg.activations for m in cfg.train_widths}
    movement = {key: float(np.mean([r.max_movement for r in unit.ok] or [np.nan])) for key, unit in trained.items()}
    rows, stars = [], []
    for (activation, width), unit in results.items():
        for direction in DIRECTIONS:
            for radius, change, smallest in zip(unit["radii"], unit[direction]["change"], unit[direction]["lambda_min"]):
                rows.append([activation, width, direction, radius, change, smallest])
        dzps = theory.dzps19_perturbation_radius(cfg.train_n, unit["lambda"], cfg.delta)
        stars.append([activation, width, *(_radius(radius_reaching(unit["radii"], unit[d]["change"]), unit["radii"])
                                           for d in DIRECTIONS), movement[activation, width], dzps])
    section.tables.append(Table("perturbation", "Kernel change under W(0) + U, every ||u_r|| = R",
                                ["activation", "m", "direction", "R", "change/lambda", "lambda_min/lambda"], rows))
    section.tables.append(Table("perturbation_radius", "R* (change/lambda reaches 1/4) per direction, the movement "
                                "GD made (section (c), mean over seeds of max_r ||w_r(T) - w_r(0)||) and DZPS19's "
                                "R = delta lambda / n^2 (order, constant 1)",
                                ["activation", "m", *(f"R* {d}" for d in DIRECTIONS), "GD movement",
                                 "DZPS19 delta lambda/n^2"], stars))
    _figure(cfg, results, movement, ctx.out)
    section.figures.append(Figure("perturbation", "change/lambda = ||H(W(0) + U) - H(W(0))||_2 / lambda against the "
                                  "radius R of every neuron's move, per direction (line shade: width, darker is "
                                  "wider); dotted horizontal: 1/4; dotted vertical: the movement GD made at the "
                                  "largest width; dash-dot: DZPS19's delta lambda / n^2 (order)."))
    section.reading += _reading(cfg, results, movement)
    section.status = "complete"
    return section


def _radius(value: float, radii) -> str | float:
    """R* as a number, or where it lies outside the grid as '> largest' / '<= smallest'."""
    if math.isinf(value):
        return f"> {radii[-1]:g}"
    if value == 0:
        return f"<= {radii[0]:g}"
    return value


def _shown(value: float, cfg) -> str:
    shown = _radius(value, cfg.perturbation_radii)
    return shown if isinstance(shown, str) else f"{shown:.3g}"


def _figure(cfg, results, movement, out) -> None:
    figure, axes = plt.subplots(1, len(cfg.activations), figsize=(4.6 * len(cfg.activations), 4.2),
                                squeeze=False, sharey=True, constrained_layout=True)
    floor = 1e-17  # exact invariances give rounding-level changes: drawn at this floor on the log axis
    largest = cfg.train_widths[-1]
    for axis, activation in zip(axes[0], cfg.activations):
        for index, width in enumerate(cfg.train_widths):
            unit = results[activation, width]
            shade = 0.35 + 0.65 * (index + 1) / len(cfg.train_widths)
            for direction in DIRECTIONS:
                axis.plot(unit["radii"], np.maximum(unit[direction]["change"], floor), color=STYLE[direction],
                          alpha=shade, marker="o", ms=2.5, lw=1,
                          label=direction if width == largest else None)
        axis.axhline(LIMIT, color="0.5", ls=":", lw=1)
        axis.axvline(movement[activation, largest], color="tab:blue", ls=":", lw=1, label=f"GD movement, m = {largest}")
        lam = results[activation, largest]["lambda"]
        axis.axvline(theory.dzps19_perturbation_radius(cfg.train_n, lam, cfg.delta), color="tab:blue", ls="-.",
                     lw=1, label="DZPS19 delta lambda / n^2")
        axis.set(xscale="log", yscale="log", xlabel="R (every ||u_r|| = R)", title=activation)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel(r"$\|H(W(0)+U) - H(W(0))\|_2 / \lambda$")
    save_figure(figure, out, "perturbation")


def _reading(cfg, results, movement) -> list[str]:
    largest = cfg.train_widths[-1]
    star = {(a, d): radius_reaching(results[a, largest]["radii"], results[a, largest][d]["change"])
            for a in cfg.activations for d in DIRECTIONS}
    text = [f"At m = {largest} (n = {cfg.train_n}), R* (the radius at which ||H(W) - H(W(0))||_2 reaches lambda/4) "
            "by direction: " + "; ".join(
                f"{d}: " + ", ".join(f"{a} {_shown(star[a, d], cfg)}" for a in cfg.activations)
                for d in DIRECTIONS) + "."]
    normalised = [a for a in cfg.activations if activations.resolve(a).normalised]
    others = [a for a in cfg.activations if a not in normalised]
    for a in normalised:
        def compared(d, wins):
            return f"{d} ({', '.join(f'{_shown(star[a, d], cfg)} against {b} {_shown(star[b, d], cfg)}' for b in wins)})"

        more = [compared(d, [b for b in others if star[a, d] > star[b, d]]) for d in DIRECTIONS
                if any(star[a, d] > star[b, d] for b in others)]
        less = [compared(d, [b for b in others if star[a, d] < star[b, d]]) for d in DIRECTIONS
                if any(star[a, d] < star[b, d] for b in others)]
        text.append(f"{a}'s kernel was more stable (a larger R*) in the directions " + ("; ".join(more) or "none")
                    + ". It was less stable in " + ("; ".join(less) or "none") + ".")
        shift = max(max(results[a, m]["shift"]["change"]) for m in cfg.train_widths)
        text.append(f"Shift: the largest change/lambda of {a} over every R and width was {shift:.2g}, rounding: a "
                    "shared shift moves every <w_r, x_i> of one input by the same <u, x_i>, and a normalisation over "
                    "the neurons ignores it (an exact invariance, tested at 1e-12). An elementwise phi has no such "
                    "invariance (for phi = e^z the kernel becomes D H D, D = diag(e^<u, x_i>), also tested): "
                    + ", ".join(f"{b} R* {_shown(star[b, 'shift'], cfg)}" for b in others) + ".")
    flat = [a for a in cfg.activations if all(
        results[a, m]["worst"]["change"][i] == max(results[a, m][d]["change"][i] for d in DIRECTIONS[:-1])
        for m in cfg.train_widths for i in range(len(cfg.perturbation_radii)))]
    if flat:
        text.append(f"For {', '.join(flat)} the ascent never improved on its start (a kernel piecewise constant in W, "
                    "as a 0/1 pattern 1{z > 0} makes it, has zero gradient): its 'worst' is only the largest of "
                    "the three other directions, a weaker search than the others'.")
    for a in cfg.activations:
        smallest = min(star[a, d] for d in DIRECTIONS)
        moved = movement[a, largest]
        lam = results[a, largest]["lambda"]
        dzps = theory.dzps19_perturbation_radius(cfg.train_n, lam, cfg.delta)
        margin = ""
        if math.isfinite(smallest) and smallest > 0 and moved > 0:
            margin = (f", {smallest / moved:.3g} times what GD moved" if smallest >= moved else
                      f": GD moved {moved / smallest:.3g} times that far, so a move of its size changes the kernel "
                      "by more than lambda/4 in the worst direction found (GD's own path need not take it)")
        text.append(f"{a}: GD moved its neurons by at most {moved:.3g} (mean over seeds, m = {largest}); the "
                    f"smallest R* over the directions was {_shown(smallest, cfg)}{margin}; "
                    f"DZPS19's radius delta lambda / n^2 is {dzps:.3g}.")
    return text
