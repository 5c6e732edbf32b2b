"""Sections (b) training, (c) laziness and (e) initialisation: every column of one row per activation (every
row for (c) and (e)) recomputed by plain gradient descent with autograd gradients, autograd kernels and the
closed-form H* (tests/study_reference.py), and the shared training runs computed once."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from study_reference import autograd_kernel, kernel_steps, limit_kernel, mean_se, plain_run, spectral_norm

from overparam import TwoLayerNet
from overparam.data import sphere
from overparam.models import initial_weights
from overparam.study import StudyConfig, run_study

SHARED = {"n": 8, "widths": (32, 128), "seeds": 2, "steps": 300}
CONFIG = StudyConfig(d=4, tol=1e-2, sections=("training", "laziness", "initialisation"), settings={
    "training": SHARED, "laziness": SHARED,
    "initialisation": {"n": 8, "width": 64, "seeds": 2, "steps": 300}}).validate()
# float64 plain GD against the fused engine: the losses agree to ~1e-12 relative; 1e-9 leaves room for the
# decay of ||F - y||^2 over hundreds of steps, where relative rounding grows with the step count.
REL = 1e-9


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("training")
    result = run_study(CONFIG, out)
    assert result.failures == []
    return out, result


def table(out, stem):
    with open(out / "tables" / f"{stem}.csv", newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def plain_runs(activation, width, init, settings):
    data = sphere(settings.n, CONFIG.d, seed=CONFIG.seed)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    kappa = TwoLayerNet(CONFIG.d, width, 1, activation).kappa
    W0, a = initial_weights(width, CONFIG.d, 1, init, CONFIG.sigma, range(settings.seeds))
    return X, [plain_run(activation, W0[s], a[s], X, y, kappa, settings.steps, CONFIG.tol)
               for s in range(settings.seeds)]


def test_the_shared_runs_were_trained_once(study):
    _, result = study
    # training and laziness ask for the same 3 x 2 runs: computed once, then reused
    assert result.computed == 3 * 2 + 3 * 2 and result.reused == 3 * 2


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_training_row_against_plain_gradient_descent(study, activation):
    out, _ = study
    settings = CONFIG.section("training")
    header, rows = table(out, "training")
    assert header == ["activation", "m", "converged", "steps", "lr", "eta_eff", "lambda", "observed rate", "± se",
                      "bound rate 1-eta_eff*lambda/2", "kernel-pred. final loss2", "final loss2", "kernel-pred. steps"]
    width = settings.widths[-1]
    row = next(r for r in rows if r[0] == activation and int(r[1]) == width)
    X, runs = plain_runs(activation, width, CONFIG.init, settings)
    lam = np.linalg.eigvalsh(limit_kernel(activation, X.numpy(), CONFIG.sigma))[0]
    eta_eff = np.mean([r.lr * width * r.kappa**2 for r in runs])
    rates = [(r.loss2[-1] / r.loss2[0]) ** (1 / r.steps) for r in runs]
    predicted = [kernel_steps(r, CONFIG.tol, settings.steps) for r in runs]
    assert row[2] == f"{sum(r.converged for r in runs)}/{settings.seeds}"
    assert float(row[3]) == np.mean([r.steps for r in runs])  # step counts: exact
    numbers = [float(v) for v in row[4:12]]
    expected = [np.mean([r.lr for r in runs]), eta_eff, lam, *mean_se(rates), 1 - eta_eff * lam / 2,
                np.mean([r.kernel_loss2[r.steps] for r in runs]), np.mean([r.loss2[-1] for r in runs])]
    assert numbers == pytest.approx(expected, rel=REL, abs=1e-15)
    assert (math.isnan(float(row[12])) and any(math.isnan(p) for p in predicted)) or float(row[12]) == np.mean(predicted)


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_laziness_rows_against_weights_and_autograd_kernels(study, activation):
    out, _ = study
    settings = CONFIG.section("laziness")
    header, rows = table(out, "laziness")
    assert header == ["activation", "m", "max movement", "± se", "kernel drift", "± se", "lambda/4",
                      "P(drift <= lambda/4)", "lambda_min(H(W(T)))"]
    for width in settings.widths:
        row = next(r for r in rows if r[0] == activation and int(r[1]) == width)
        X, runs = plain_runs(activation, width, CONFIG.init, settings)
        lam = np.linalg.eigvalsh(limit_kernel(activation, X.numpy(), CONFIG.sigma))[0]
        movement, drift, final = [], [], []
        for r in runs:
            movement.append(float((r.WT - r.W0).norm(dim=1).max()))
            H0 = autograd_kernel(activation, r.W0, r.a, X, r.kappa).numpy()
            HT = autograd_kernel(activation, r.WT, r.a, X, r.kappa).numpy()
            drift.append(spectral_norm(HT - H0))
            final.append(np.linalg.eigvalsh(HT)[0])
        numbers = [float(v) for v in row[2:9]]
        expected = [*mean_se(movement), *mean_se(drift), lam / 4, np.mean([d <= lam / 4 for d in drift]), np.mean(final)]
        # the drift is a difference of two kernels ~1e-3 apart whose entries carry ~1e-12 relative rounding
        assert numbers == pytest.approx(expected, rel=1e-7, abs=1e-13), (activation, width)


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_initialisation_rows_against_plain_gradient_descent(study, activation):
    out, _ = study
    settings = CONFIG.section("initialisation")
    header, rows = table(out, "initialisation")
    assert header == ["activation", "init", "converged", "||F(0) - y||", "± se", "steps", "± se", "max movement",
                      "± se", "kernel drift", "± se", "final ||F - y||"]
    y_norm = float(np.linalg.norm(sphere(settings.n, CONFIG.d, seed=CONFIG.seed).y))
    for init in ("independent", "coupled"):
        row = next(r for r in rows if r[0] == activation and r[1] == init)
        X, runs = plain_runs(activation, settings.width, init, settings)
        initial = [math.sqrt(r.loss2[0]) for r in runs]
        if init == "coupled":  # F(W(0)) = 0 exactly, so ||F(0) - y|| = ||y||
            assert float(row[3]) == pytest.approx(y_norm, rel=1e-14) and float(row[4]) == pytest.approx(0, abs=1e-14)
        drift = [spectral_norm(autograd_kernel(activation, r.WT, r.a, X, r.kappa).numpy()
                               - autograd_kernel(activation, r.W0, r.a, X, r.kappa).numpy()) for r in runs]
        assert row[2] == f"{sum(r.converged for r in runs)}/{settings.seeds}"
        assert [float(row[5]), float(row[6])] == list(mean_se([r.steps for r in runs]))  # exact step counts
        numbers = [float(row[i]) for i in (3, 4, 7, 8, 9, 10, 11)]
        expected = [*mean_se(initial), *mean_se([float((r.WT - r.W0).norm(dim=1).max()) for r in runs]),
                    *mean_se(drift), np.mean([math.sqrt(r.loss2[-1]) for r in runs])]
        assert numbers == pytest.approx(expected, rel=1e-7, abs=1e-13), (activation, init)


def test_summary_facts_of_training_and_laziness(study):
    out, _ = study
    with open(out / "tables" / "summary.csv", newline="", encoding="utf-8") as handle:
        facts = list(csv.DictReader(handle))
    _, training = table(out, "training")
    steps = {(f["activation"], f["quantity"]): float(f["value"]) for f in facts if f["section"] == "training"}
    assert steps == {(r[0], f"GD steps to tol at m = {r[1]} (n = 8)"): float(r[3]) for r in training}
    _, laziness = table(out, "laziness")
    for fact in (f for f in facts if f["section"] == "laziness"):
        mine = [r for r in laziness if r[0] == fact["activation"]]
        slope = np.polyfit(np.log([float(r[1]) for r in mine]), np.log([float(r[4]) for r in mine]), 1)[0]
        assert float(fact["value"]) == pytest.approx(slope, rel=1e-10)
