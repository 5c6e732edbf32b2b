"""The perturbation section: every column of both tables recomputed by routes independent of the library.

Kernels H(W) = J J^T / (m kappa^2) from autograd Jacobians of F written out (tests/plain_gd.py), lambda
from H*'s closed forms (docs/mathematics.md#ntk), the directions from their seeds and autograd's
gradient of the loss, the worst direction by a projected ascent written here on those kernels, and GD's
movement by plain gradient descent.
"""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import plain_gd

from overparam import TwoLayerNet
from overparam.data import sphere
from overparam.kernels.finite import ntk
from overparam.study import StudyConfig, run_study

SETTINGS = {"n": 8, "widths": (64, 256), "radii": (1e-3, 1e-2, 1e-1, 1.0), "ascent_steps": 3, "seeds": 2,
            "steps": 400}
TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, sections=("perturbation",),
                   settings={"perturbation": SETTINGS}).validate()
DIRECTIONS = ("random", "shift", "gradient", "worst")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("perturbation")
    result = run_study(TINY, out)
    assert [s.status for s in result.sections] == ["complete"], result.failures
    return out, result


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def curve_rows(out: Path) -> dict:
    return {(r["activation"], int(r["m"]), r["direction"], float(r["R"])): r
            for r in read_csv(out / "tables" / "perturbation.csv")}


def limit_kernel(activation: str, X: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """H* in closed form (docs/mathematics.md#ntk): relu's arc-cosine kernel with the angle as
    2 atan2(|u - v|, |u + v|) (accurate near 0), exp's <x_i, x_j> exp(sigma^2 |x_i + x_j|^2 / 2), softmax's
    <x_i, x_j> exp(sigma^2 <x_i, x_j>)."""
    gram = X @ X.T
    if activation == "relu":
        unit = X / X.norm(dim=1, keepdim=True)
        angle = 2 * torch.atan2((unit[:, None] - unit[None]).norm(dim=-1), (unit[:, None] + unit[None]).norm(dim=-1))
        return gram * (math.pi - angle) / (2 * math.pi)
    if activation == "exp":
        return gram * torch.exp(sigma**2 * (X[:, None] + X[None]).square().sum(-1) / 2)
    return gram * torch.exp(sigma**2 * gram)


def kernel(activation, W, a, X, kappa, create_graph=False) -> torch.Tensor:
    """H(W) = J J^T / (m kappa^2), J = dF(X)/dW by autograd of F written out."""
    J = torch.autograd.functional.jacobian(lambda V: plain_gd.output(V, a, X, activation, kappa)[:, 0], W,
                                           create_graph=create_graph)
    J = J.reshape(X.shape[0], -1)
    return J @ J.T / (W.shape[0] * kappa**2)


def setting(activation: str, width: int):
    """(X, y, W0, a, kappa, lambda): the section's network (seed 0) and data, lambda from H*'s closed form."""
    data = sphere(SETTINGS["n"], TINY.d, seed=TINY.seed)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    net = TwoLayerNet(TINY.d, width, 1, activation, init=TINY.init, sigma=TINY.sigma, seed=0)
    lam = float(np.linalg.eigvalsh(limit_kernel(activation, X, TINY.sigma).numpy())[0])
    return X, y, net.W.clone(), net.a, net.kappa, lam


def unit_directions(activation, X, y, W0, a, kappa) -> dict:
    """random and shift from torch's generator seeded with the data seed (m x d draws, then d), every row
    normalised; gradient: rows of autograd's grad of 1/2 ||F - y||^2, a zero row taking its random one."""
    generator = torch.Generator().manual_seed(TINY.seed)
    random = torch.randn(W0.shape, generator=generator, dtype=W0.dtype)
    shared = torch.randn(W0.shape[1], generator=generator, dtype=W0.dtype)
    random = random / random.norm(dim=1, keepdim=True)
    W = W0.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(0.5 * (plain_gd.output(W, a, X, activation, kappa) - y).square().sum(), W)
    norms = gradient.norm(dim=1, keepdim=True)
    gradient = torch.where(norms > 0, gradient / torch.where(norms > 0, norms, 1), random)
    return {"random": random, "shift": (shared / shared.norm()).expand_as(W0).clone(), "gradient": gradient}


def spectral_change(H, H0) -> float:
    return float(np.abs(np.linalg.eigvalsh((H - H0).numpy())).max())


def projected_ascent(activation, X, W0, a, kappa, H0, start, radius, steps) -> tuple[float, float]:
    """The worst direction's search written out: from U = start, `steps` times: v, s = the top eigenvector
    (by absolute eigenvalue) of H(W0 + U) - H0 and its sign, every row of U moved by radius/2 along the row
    of grad_U s v^T H(W0 + U) v (kernel and gradient by double autograd), rows put back at length radius;
    the largest (change, lambda_min) met, the final U included. A zero gradient (relu) ends the search."""

    def measured(U):
        H = kernel(activation, W0 + U, a, X, kappa)
        values, vectors = np.linalg.eigh((H - H0).numpy())
        top = int(np.abs(values).argmax())
        return (abs(values[top]), float(np.linalg.eigvalsh(H.numpy())[0])), torch.from_numpy(vectors[:, top]), \
            float(np.sign(values[top]))

    best, _, _ = measured(start)
    U = start
    for _ in range(steps):
        found, v, sign = measured(U)
        best = max(best, found)
        V = U.clone().requires_grad_(True)
        objective = sign * v @ kernel(activation, W0 + V, a, X, kappa, create_graph=True) @ v
        if not objective.requires_grad:
            break
        (slope,) = torch.autograd.grad(objective, V, allow_unused=True)
        if slope is None or not bool((slope.norm(dim=1) > 0).any()):
            break
        rows = slope.norm(dim=1, keepdim=True)
        U = U + 0.5 * radius * slope / torch.where(rows > 0, rows, 1)
        U = radius * U / U.norm(dim=1, keepdim=True)
    found, _, _ = measured(U)
    return max(best, found)


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_every_direction_and_radius_against_autograd_kernels(study, activation):
    """Every row of perturbation.csv at the first width (all four directions, every R) for each activation:
    change/lambda = ||H(W0 + U) - H(W0)||_2 / lambda and lambda_min(H(W0 + U)) / lambda recomputed here.
    The two kernels agree to rounding, eps ||H0|| in absolute terms, which the difference H - H0 keeps while
    its size falls with R: abs 1e-14 ||H0|| / lambda (measured: up to 1.1e-15 ||H0|| / lambda, at softmax's
    rounding-level shift rows and R = 1e-3) and rel 1e-10 (measured 4e-12 where the absolute term is small:
    the ascent carries the rounding through its three steps)."""
    out, _ = study
    rows = curve_rows(out)
    width = SETTINGS["widths"][0]
    X, y, W0, a, kappa, lam = setting(activation, width)
    H0 = kernel(activation, W0, a, X, kappa)
    units = unit_directions(activation, X, y, W0, a, kappa)
    scale = float(np.abs(np.linalg.eigvalsh(H0.numpy())).max()) / lam
    for radius in SETTINGS["radii"]:
        found = {}
        for name, direction in units.items():
            H = kernel(activation, W0 + radius * direction, a, X, kappa)
            found[name] = (spectral_change(H, H0), float(np.linalg.eigvalsh(H.numpy())[0]))
        start = max(found, key=lambda name: found[name][0])
        found["worst"] = projected_ascent(activation, X, W0, a, kappa, H0, radius * units[start], radius,
                                          SETTINGS["ascent_steps"])
        for name in DIRECTIONS:
            row = rows[activation, width, name, radius]
            change, smallest = found[name]
            assert float(row["change/lambda"]) == pytest.approx(change / lam, rel=1e-10, abs=1e-14 * scale), name
            assert float(row["lambda_min/lambda"]) == pytest.approx(smallest / lam, rel=1e-10, abs=1e-14 * scale), name


def test_exp_shift_rows_are_D_H_D_and_softmax_shift_rows_vanish(study):
    """A shared shift u: exp's kernel becomes D H(W0) D with D = diag(e^{R <u, x_i>}) and softmax's is
    unchanged (docs/mathematics.md#perturbation). The library's `ntk` at W0 + R u against D H D of the autograd
    kernel at W0, to 1e-12; the table's exp shift rows against ||D H D - H||_2 / lambda and softmax's at
    rounding level, at both widths."""
    out, _ = study
    rows = curve_rows(out)
    for width in SETTINGS["widths"]:
        for activation in ("exp", "softmax"):
            X, y, W0, a, kappa, lam = setting(activation, width)
            H0 = kernel(activation, W0, a, X, kappa)
            u = unit_directions(activation, X, y, W0, a, kappa)["shift"][0]
            net = TwoLayerNet(TINY.d, width, 1, activation, init=TINY.init, sigma=TINY.sigma, seed=0)
            for radius in SETTINGS["radii"]:
                D = torch.diag(torch.exp(radius * X @ u)) if activation == "exp" else torch.eye(len(X), dtype=X.dtype)
                expected = D @ H0 @ D
                net.W = W0 + radius * u
                library = ntk(net, X)
                assert float((library - expected).abs().max()) <= 1e-12 * float(expected.abs().max())
                row = rows[activation, width, "shift", radius]
                if activation == "exp":
                    assert float(row["change/lambda"]) == pytest.approx(spectral_change(expected, H0) / lam, rel=1e-9)
                else:
                    assert float(row["change/lambda"]) <= 1e-12
                assert float(row["lambda_min/lambda"]) == pytest.approx(
                    float(np.linalg.eigvalsh(expected.numpy())[0]) / lam, rel=1e-9)


def plain_movement(activation: str, width: int) -> list[float]:
    """max_r ||w_r(T) - w_r(0)|| per seed, by plain GD (tests/plain_gd.py) with lr = 1 / lambda_max(J J^T) at
    W(0) as lr="auto" estimates it (`plain_gd.auto_lr`), T the first step with ||F - y|| <= tol (or the budget)."""
    data = sphere(SETTINGS["n"], TINY.d, seed=TINY.seed)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    moved = []
    for seed in range(SETTINGS["seeds"]):
        net = TwoLayerNet(TINY.d, width, 1, activation, init=TINY.init, sigma=TINY.sigma, seed=seed)
        lr = plain_gd.auto_lr(net.W, net.a, X, activation, net.kappa)
        weights, losses = plain_gd.descend(net.W, net.a, X, y, activation, net.kappa, lr, SETTINGS["steps"])
        residuals = (2 * losses).sqrt()
        reached = [t for t, r in enumerate(residuals.tolist()) if r <= TINY.tol]
        final = weights[reached[0] if reached else len(weights) - 1]
        moved.append(float((final - net.W).norm(dim=1).max()))
    return moved


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_radius_table_against_the_curves_plain_gd_and_the_dzps19_formula(study, activation):
    """perturbation_radius.csv at every width: R* where change/lambda first reaches 1/4, log-log interpolated
    between the grid radii around it (np.interp on the logs; the upper radius where the lower change is 0;
    '> largest' / '<= smallest' outside the grid); GD movement by plain GD (1e-10: the two GD loops round
    differently, 1e-14 measured); DZPS19's delta lambda / n^2 with lambda from H*'s
    closed form."""
    out, _ = study
    rows = curve_rows(out)
    radii = list(SETTINGS["radii"])
    stars = {int(r["m"]): r for r in read_csv(out / "tables" / "perturbation_radius.csv")
             if r["activation"] == activation}
    assert sorted(stars) == list(SETTINGS["widths"])
    for width, star in stars.items():
        for direction in DIRECTIONS:
            changes = [float(rows[activation, width, direction, r]["change/lambda"]) for r in radii]
            cell = star[f"R* {direction}"]
            crossing = next((i for i, c in enumerate(changes) if c >= 0.25), None)
            if crossing is None:
                assert cell == f"> {radii[-1]:g}"
            elif crossing == 0:
                assert cell == f"<= {radii[0]:g}"
            else:
                (r0, c0), (r1, c1) = (radii[crossing - 1], changes[crossing - 1]), (radii[crossing], changes[crossing])
                expected = r1 if c0 == 0 else np.exp(np.interp(np.log(0.25), np.log([c0, c1]), np.log([r0, r1])))
                assert float(cell) == pytest.approx(expected, rel=1e-12)
        assert float(star["GD movement"]) == pytest.approx(np.mean(plain_movement(activation, width)), rel=1e-10)
        _, _, _, _, _, lam = setting(activation, width)
        assert float(star["DZPS19 delta lambda/n^2"]) == pytest.approx(TINY.delta * lam / SETTINGS["n"] ** 2,
                                                                       rel=1e-12)


def test_facts_are_the_radius_table_at_the_largest_width(study):
    out, result = study
    largest = SETTINGS["widths"][-1]
    stars = {r["activation"]: r for r in read_csv(out / "tables" / "perturbation_radius.csv") if int(r["m"]) == largest}
    facts = result.sections[0].facts
    assert [(f.activation, f.quantity) for f in facts] == [
        (a, f"R* {d} at m = {largest} (n = {SETTINGS['n']})") for a in TINY.activations for d in DIRECTIONS]
    for fact in facts:
        assert str(fact.value) == stars[fact.activation][f"R* {fact.quantity.split()[1]}"]
        assert fact.section == "perturbation"


def test_the_training_runs_are_the_training_sections_when_the_settings_agree():
    """The movement's runs are the shared TrainingRun units: equal fields give one key, so a study running
    both sections trains them once."""
    from overparam.study import registry
    from overparam.study.training_run import TrainingRun

    study = TINY.with_settings("training", n=SETTINGS["n"], widths=SETTINGS["widths"], seeds=SETTINGS["seeds"],
                               steps=SETTINGS["steps"])
    mine = [u for u in registry.section("perturbation").units(study, study.section("perturbation"))
            if isinstance(u, TrainingRun)]
    theirs = registry.section("training").units(study, study.section("training"))
    assert mine == theirs and len({u.key for u in mine}) == len(TINY.activations) * len(SETTINGS["widths"])
