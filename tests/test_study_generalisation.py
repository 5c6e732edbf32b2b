"""The generalisation section: every column of every activation's row recomputed by independent routes.

H* from its closed forms (docs/mathematics.md#ntk), solves by numpy, the networks trained by plain gradient
descent (tests/plain_gd.py), their kernel Theta(W(0)) from autograd Jacobians of F written out.
"""

import csv
import math

import numpy as np
import pytest
import torch

import plain_gd

from overparam import TwoLayerNet
from overparam.data import teacher_split
from overparam.study import StudyConfig, run_study

SETTINGS = {"n": 12, "ns": (6, 12), "widths": (32, 128), "seeds": 2, "steps": 3000, "noise": 0.1, "test": 50}
TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, sections=("generalisation",),
                   settings={"generalisation": SETTINGS}).validate()
PER_SEED = ("test_mse", "finite_kernel_test_mse", "distance_to_kernel", "distance_travelled", "predicted_distance")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("generalisation")
    result = run_study(TINY, out)
    assert [s.status for s in result.sections] == ["complete"], result.failures
    with open(out / "tables" / "generalisation.csv", newline="", encoding="utf-8") as handle:
        rows = {(r["activation"], int(r["n"]), int(r["m"])): r for r in csv.DictReader(handle)}
    return out, result, rows


def limit_kernel(activation: str, A: np.ndarray, B: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """H*(a, b) in closed form (docs/mathematics.md#ntk) for unit-norm rows: relu's arc-cosine kernel with the
    angle as 2 atan2(|a - b|, |a + b|) (accurate near 0), exp's <a, b> exp(sigma^2 |a + b|^2 / 2), softmax's
    <a, b> exp(sigma^2 <a, b>)."""
    gram = A @ B.T
    if activation == "relu":
        angle = 2 * np.arctan2(np.linalg.norm(A[:, None] - B[None], axis=-1),
                               np.linalg.norm(A[:, None] + B[None], axis=-1))
        return gram * (np.pi - angle) / (2 * np.pi)
    if activation == "exp":
        return gram * np.exp(sigma**2 * np.square(A[:, None] + B[None]).sum(-1) / 2)
    return gram * np.exp(sigma**2 * gram)


def kernel_predictor(activation: str, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(H* interpolant on the test points, test labels, ADHLW19's complexity sqrt(2 y^T H*^-1 y / n))."""
    X, y, X_test, y_test = teacher_split(n, TINY.d, SETTINGS["test"], SETTINGS["noise"], TINY.seed)
    H = limit_kernel(activation, X, X, TINY.sigma)
    prediction = limit_kernel(activation, X_test, X, TINY.sigma) @ np.linalg.solve(H, y)
    return prediction, y_test, math.sqrt(2 * float(y[:, 0] @ np.linalg.solve(H, y[:, 0])) / n)


def test_the_rows_are_the_grid_and_the_kernel_columns_match_closed_form_solves(study):
    """Every row: the H* interpolant's test MSE and the complexity from H*'s closed form and numpy solves.
    1e-12 relative: both sides solve the same system, cond(H*) <= 400 here (measured: 3.5e-15)."""
    _, _, rows = study
    largest = SETTINGS["widths"][-1]
    grid = [(SETTINGS["n"], m) for m in SETTINGS["widths"]] + [(n, largest) for n in SETTINGS["ns"]
                                                               if (n, largest) != (SETTINGS["n"], largest)]
    assert list(rows) == [(a, n, m) for a in TINY.activations for n, m in grid]
    for (activation, n, m), row in rows.items():
        prediction, y_test, complexity = kernel_predictor(activation, n)
        assert float(row["kernel_test_mse"]) == pytest.approx(float(np.mean((prediction - y_test) ** 2)), rel=1e-12)
        assert float(row["complexity"]) == pytest.approx(complexity, rel=1e-12)


def plain_fit(activation: str, n: int, m: int, seed: int, kernel_prediction: np.ndarray) -> dict:
    """One seed's network trained by plain GD with lr as lr="auto" estimates it (`plain_gd.auto_lr`) up to the
    first step with ||F - y|| <= tol; its Theta(W(0)) = J J^T from autograd on the training and test inputs."""
    split = teacher_split(n, TINY.d, SETTINGS["test"], SETTINGS["noise"], TINY.seed)
    X, y, X_test, y_test = (torch.from_numpy(v) for v in split)
    net = TwoLayerNet(TINY.d, m, 1, activation, init="coupled", sigma=TINY.sigma, seed=seed)
    W0, a, kappa = net.W.clone(), net.a, net.kappa
    lr = plain_gd.auto_lr(W0, a, X, activation, kappa)
    weights, losses = plain_gd.descend(W0, a, X, y, activation, kappa, lr, SETTINGS["steps"])
    reached = [t for t, loss in enumerate(losses.tolist()) if math.sqrt(2 * loss) <= TINY.tol]
    W = weights[reached[0] if reached else len(weights) - 1]
    prediction = plain_gd.output(W, a, X_test, activation, kappa).numpy()
    both = torch.cat([X, X_test])
    J = torch.autograd.functional.jacobian(lambda V: plain_gd.output(V, a, both, activation, kappa)[:, 0], W0)
    J = J.reshape(len(both), -1).numpy()
    theta, cross = J[:n] @ J[:n].T, J[n:] @ J[:n].T
    start = plain_gd.output(W0, a, both, activation, kappa).numpy()
    residual = y.numpy() - start[:n]
    finite = start[n:] + cross @ np.linalg.solve(theta, residual)
    return {
        "test_mse": float(np.mean((prediction - y_test.numpy()) ** 2)),
        "finite_kernel_test_mse": float(np.mean((finite - y_test.numpy()) ** 2)),
        "distance_to_kernel": math.sqrt(float(np.mean((prediction - kernel_prediction) ** 2))),
        "distance_travelled": float((W - W0).norm()),
        "predicted_distance": math.sqrt(float(residual[:, 0] @ np.linalg.solve(theta, residual[:, 0]))),
    }


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_every_column_of_the_largest_width_against_plain_gd(study, activation):
    """The row at n and the largest width: the networks' columns (means over seeds) from plain GD. 1e-10
    relative: the two GD loops round differently (their weights agree to about 1e-14), and Theta(W(0))'s
    solves lose up to cond(Theta) eps, cond(Theta) <= 800 here (measured for relu: 8e-16)."""
    _, _, rows = study
    n, m = SETTINGS["n"], SETTINGS["widths"][-1]
    kernel_prediction, _, _ = kernel_predictor(activation, n)
    fits = [plain_fit(activation, n, m, seed, kernel_prediction) for seed in range(SETTINGS["seeds"])]
    row = rows[activation, n, m]
    for column in PER_SEED:
        assert float(row[column]) == pytest.approx(np.mean([fit[column] for fit in fits]), rel=1e-10), column


def test_facts_are_the_rows_at_the_largest_width(study):
    _, result, rows = study
    n, largest = SETTINGS["n"], SETTINGS["widths"][-1]
    facts = {(f.activation, f.quantity): f for f in result.sections[0].facts}
    assert len(facts) == 2 * len(TINY.activations)
    for activation in TINY.activations:
        row = rows[activation, n, largest]
        network = facts[activation, f"test MSE at m = {largest} (n = {n})"]
        kernel = facts[activation, f"test MSE of kernel regression with H* (n = {n})"]
        assert str(network.value) == row["test_mse"] and str(kernel.value) == row["kernel_test_mse"]
        assert network.section == kernel.section == "generalisation"
