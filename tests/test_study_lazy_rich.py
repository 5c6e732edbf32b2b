"""The lazy_rich section's science (overparam/study/lazy_rich.py): each measured quantity against an
independent computation, the crossover against numpy.interp, the exponent against least squares."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet, train
from overparam.study import lazy_rich
from overparam.study import StudyConfig
from overparam.study.lazy_rich import (MEAN_FIELD, Config, LazyRichRecord, LazyRichRun, compute_run, crossing,
                                       crossovers, drift_slope, problem, reading, runs, width_exponent)

PHI = {"relu": lambda Z: Z.clamp_min(0), "exp": torch.exp,
       "softmax": lambda Z: Z.shape[-1] * torch.softmax(Z, dim=-1)}
#: A grid small enough for a test: widths 16 ... 64, alpha 10^-2 ... 10^2, n = 12 points in d = 4.
STUDY = StudyConfig(d=4, tol=1e-3)
TINY = Config(widths=(16, 32, 64), alphas=tuple(10.0 ** k for k in range(-2, 3)), seeds=2, n=12, test=50, steps=500,
              halvings=4)


@pytest.fixture(scope="module")
def tiny_records():
    return [compute_run(run) for run in runs(STUDY, TINY)]


def plain_F(W, a, X, activation, kappa):
    """F(W, x) = kappa sum_r a_r phi_r(W, x), written out with torch operations."""
    return kappa * PHI[activation](X @ W.T) @ a


def autograd_kernel(W, a, X, activation, kappa):
    """Theta = J J^T with J = dF/dW from torch.func.jacrev, (n, n)."""
    J = torch.func.jacrev(lambda V: plain_F(V, a, X, activation, kappa).reshape(-1))(W)
    J = J.reshape(J.shape[0], -1)
    return J @ J.T


@pytest.mark.parametrize("activation", ("relu", "exp", "softmax"))
def test_a_row_is_its_network_recomputed_with_autograd_kernels(activation):
    """drift, movement, alignments and test MSE of one row against a plain GD loop on L_alpha (autograd's
    gradient) for the row's steps at its lr, and autograd Jacobian kernels at W(0) and W(T); 1e-10."""
    run = LazyRichRun(activation, 64, 0.3, 1, False, n=12, d=4, sigma=1.0, data_seed=2, noise=0.1, test=40,
                      tol=1e-3, steps=3000, halvings=4)
    record = compute_run(run)
    assert record.status == "converged" and record.steps > 20
    X, y, X_test, y_test = problem(12, 4, 40, 0.1, 2)
    net = TwoLayerNet(4, 64, 1, activation, init="coupled", seed=1)
    W0, a, kappa, alpha = net.W.clone(), net.a.clone(), net.kappa, 0.3
    W = W0.clone()
    for _ in range(record.steps):
        W.requires_grad_(True)
        loss = (alpha * plain_F(W, a, X, activation, kappa) - y).square().sum() / (2 * alpha**2)
        (gradient,) = torch.autograd.grad(loss, W)
        W = W.detach() - record.lr * gradient
    K0, KT = autograd_kernel(W0, a, X, activation, kappa), autograd_kernel(W, a, X, activation, kappa)
    drift = torch.linalg.matrix_norm(KT - K0, 2) / torch.linalg.matrix_norm(K0, 2)
    assert 1e-4 < record.drift < 10  # a kernel that moved: the comparison is not of rounding
    assert record.drift == pytest.approx(float(drift), rel=1e-10)
    assert record.movement == pytest.approx(float((W - W0).norm() / W0.norm()), rel=1e-10)
    y_flat = y.reshape(-1)
    for kernel, value in ((K0, record.alignment_0), (KT, record.alignment_T)):
        assert value == pytest.approx(float(y_flat @ kernel @ y_flat / (kernel.norm() * y_flat.dot(y_flat))),
                                      rel=1e-10)
    test_mse = (alpha * plain_F(W, a, X_test, activation, kappa) - y_test).square().mean()
    assert record.test_mse == pytest.approx(float(test_mse), rel=1e-10)
    assert record.final_residual == pytest.approx(float((alpha * plain_F(W, a, X, activation, kappa) - y).norm()),
                                                  rel=1e-8)


def test_alpha_one_is_the_plain_training_run_exactly():
    run = LazyRichRun("softmax", 32, 1.0, 0, False, n=12, d=4, sigma=1.0, data_seed=0, noise=0.1, test=40,
                      tol=1e-3, steps=3000, halvings=4)
    record = compute_run(run)
    X, y, X_test, y_test = problem(12, 4, 40, 0.1, 0)
    net = TwoLayerNet(4, 32, 1, "softmax", init="coupled", seed=0)
    W0 = net.W.clone()
    history = train(net, X, y, lr="auto", steps=3000, tol=1e-3)
    assert history.status == record.status == "converged" and record.halvings == 0
    assert (record.steps, record.lr, record.final_residual) == (history.steps, history.lr, history.residual_norm[-1])
    assert record.movement == float((net.W - W0).norm() / W0.norm())
    assert record.test_mse == float((net(X_test) - y_test).square().mean())


def test_the_crossover_is_numpy_interp_on_the_tables_own_points(tiny_records):
    """Each seed's alpha* is numpy.interp of log alpha at log level on its (log drift, log alpha) points where
    the drift falls monotonically; alpha* is their geometric mean, [low, high] their range."""
    found = crossovers(tiny_records, TINY.level)
    assert len(found) == len(STUDY.activations) * len(TINY.widths)
    checked = 0
    for crossover in found:
        mine = [r for r in tiny_records if r.activation == crossover.activation and r.m == crossover.m]
        for seed, value in enumerate(crossover.per_seed):
            kept = [r for r in mine if r.seed == seed and r.status != "diverged"]
            alphas, drifts = np.array([r.alpha for r in kept]), np.array([r.drift for r in kept])
            order = np.argsort(alphas)
            alphas, drifts = alphas[order], drifts[order]
            if drifts.min() > 0 and np.all(np.diff(drifts) < 0) and drifts[0] >= TINY.level > drifts[-1]:
                expected = math.exp(np.interp(math.log(TINY.level), np.log(drifts[::-1]), np.log(alphas[::-1])))
                assert value == pytest.approx(expected, rel=1e-12)
                checked += 1
            elif np.all(drifts < TINY.level) or np.all(drifts >= TINY.level):
                assert math.isnan(value)
        if all(math.isfinite(v) for v in crossover.per_seed):
            assert crossover.alpha_star == pytest.approx(math.prod(crossover.per_seed) ** (1 / TINY.seeds), rel=1e-12)
            assert (crossover.low, crossover.high) == (min(crossover.per_seed), max(crossover.per_seed))
    assert checked >= len(found) * TINY.seeds // 2  # most seeds cross monotonically here: the comparison is not empty


def test_a_crossing_picks_the_last_fall_through_the_level():
    """Non-monotone drift: the crossing nearest the lazy side, by the closed-form interpolation."""
    alphas, drifts = [0.01, 0.1, 1.0, 10.0], [0.5, 0.05, 0.2, 0.02]
    expected = math.exp(math.log(1.0) + (math.log(0.1) - math.log(0.2)) * math.log(10) / math.log(0.02 / 0.2))
    assert crossing(alphas, drifts, 0.1) == pytest.approx(expected, rel=1e-14)
    assert crossing(alphas, [0.5, 0.3, 0.2, 0.0], 0.1) == 1.0  # log 0 = -inf: the limit is the point before
    assert math.isnan(crossing(alphas, [0.05, 0.04, 0.03, 0.02], 0.1))
    assert math.isnan(crossing(alphas, [0.5, 0.4, 0.3, 0.2], 0.1))


def test_the_width_exponent_is_the_least_squares_slope(tiny_records):
    """width_exponent's p against the closed-form slope cov(log m, log alpha*) / var(log m) and numpy.polyfit;
    [low, high] the range of the seeds' own slopes."""
    found = crossovers(tiny_records, TINY.level)
    fitted = 0
    for activation in STUDY.activations:
        mine = [c for c in found if c.activation == activation and math.isfinite(c.alpha_star)]
        if len(mine) < 2:
            continue
        x, v = np.log([c.m for c in mine]), np.log([c.alpha_star for c in mine])
        slope = float(((x - x.mean()) * (v - v.mean())).sum() / ((x - x.mean()) ** 2).sum())
        fit = width_exponent(mine)
        assert fit["p"] == pytest.approx(slope, rel=1e-12, abs=1e-14)
        assert fit["p"] == pytest.approx(float(np.polyfit(x, v, 1)[0]), rel=1e-12, abs=1e-14)
        seeds = [np.polyfit(x, np.log([c.per_seed[s] for c in mine]), 1)[0] for s in range(TINY.seeds)]
        assert (fit["low"], fit["high"]) == pytest.approx((min(seeds), max(seeds)), rel=1e-12)
        fitted += 1
    assert fitted >= 1


def test_the_drift_slope_is_the_least_squares_slope_on_the_lazy_side(tiny_records):
    for activation in STUDY.activations:
        mine = [r for r in tiny_records if r.activation == activation and r.m == 64 and r.status != "diverged"]
        alphas = sorted({r.alpha for r in mine})
        means = [math.exp(np.mean([math.log(r.drift) for r in mine if r.alpha == a])) for a in alphas]
        lazy = [(math.log(a), math.log(v)) for a, v in zip(alphas, means) if v < TINY.level]
        if len(lazy) < 2:
            assert math.isnan(drift_slope(tiny_records, activation, 64, TINY.level))
            continue
        x, v = np.array(lazy).T
        expected = ((x - x.mean()) * (v - v.mean())).sum() / ((x - x.mean()) ** 2).sum()
        assert drift_slope(tiny_records, activation, 64, TINY.level) == pytest.approx(expected, rel=1e-12)


def test_smooth_activations_drift_as_alpha_to_the_minus_two_under_coupled_init(tiny_records):
    """docs/mathematics.md#output-scale: exp's and softmax's kernel moves at second order in 1/alpha, so from
    alpha = 10 to 100 the drift falls by 100 (to 5%); relu's by less (its pattern changes at first order)."""
    for activation, low, high in (("exp", 95, 105), ("softmax", 95, 105), ("relu", 1, 60)):
        for seed in range(TINY.seeds):
            ten, hundred = (next(r.drift for r in tiny_records if r.activation == activation and r.m == 64
                                 and r.seed == seed and r.alpha == a) for a in (10.0, 100.0))
            assert low < ten / hundred < high


def test_mean_field_rows_are_relu_at_kappa_one_over_m(tiny_records):
    """κ = 1/m at alpha = 1 is the alpha = m^(-1/2) network of the 1/sqrt(m) parametrisation, and with
    lr = 1/lambda_max(Theta) the same GD path: same drift and movement to 1e-8."""
    field = [r for r in tiny_records if r.activation == MEAN_FIELD]
    assert sorted((r.m, r.seed) for r in field) == sorted((m, s) for m in TINY.widths for s in range(TINY.seeds))
    row = next(r for r in field if r.m == 16 and r.seed == 1)
    twin = compute_run(LazyRichRun("relu", 16, 16 ** -0.5, 1, False, n=TINY.n, d=STUDY.d, sigma=1.0, data_seed=0,
                                   noise=TINY.noise, test=TINY.test, tol=STUDY.tol, steps=TINY.steps, halvings=4))
    assert row.steps == twin.steps
    assert row.drift == pytest.approx(twin.drift, rel=1e-8) and row.movement == pytest.approx(twin.movement, rel=1e-8)


@pytest.mark.parametrize("change,match", [
    ({"widths": (16, 33)}, "even under coupled init"), ({"widths": (16,)}, "at least 2 values"),
    ({"seeds": 1}, "at least 2"), ({"alphas": (1.0, 0.1)}, "strictly increasing"), ({"alphas": (0.0, 1.0)}, "positive"),
    ({"halvings": -1}, "halvings must be >= 0"),
])
def test_a_bad_configuration_is_one_clear_error(change, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **change)


def _record(activation, m, alpha, seed, drift, test_mse=0.1):
    return LazyRichRecord(activation, m, alpha, seed, drift, 0.1, 10, 0.5, 0.5, test_mse, "converged", 0.5, 0, 1e-4)


def test_the_reading_states_what_the_numbers_say():
    """Synthetic records: relu crosses at alpha* = 1 / sqrt(10) at m = 64, exp and softmax far lower, rich
    relu generalises worse; the reading names relu first out of the kernel regime and says it hurts."""
    cfg, study = replace(TINY, mean_field=False, widths=(16, 64)), STUDY
    records = []
    for activation, shift in (("relu", 1.0), ("exp", 0.3), ("softmax", 0.1)):
        for m in cfg.widths:
            for alpha in cfg.alphas:
                for seed in range(cfg.seeds):
                    drift = 0.1 * (alpha / (shift * (m / 64) ** -0.5 / math.sqrt(10))) ** -1.0
                    mse = (0.3 if alpha == cfg.alphas[0] else 0.1) + 0.01 * seed if activation == "relu" else 0.1
                    records.append(_record(activation, m, alpha, seed, drift, mse))
    found = crossovers(records, cfg.level)
    relu = next(c for c in found if c.activation == "relu" and c.m == 64)
    assert relu.alpha_star == pytest.approx(10 ** -0.5, rel=1e-12)
    assert width_exponent([c for c in found if c.activation == "relu"])["p"] == pytest.approx(-0.5, rel=1e-12)
    text = " ".join(reading(records, found, [lazy_rich.KernelBaseline(a, 0.1) for a in study.activations], study, cfg))
    assert "m = 64, relu leaves the kernel regime first (largest alpha*), then exp, softmax" in text
    assert "relu: 0.305 ± 0.005 at alpha = 0.01 against 0.105 ± 0.005 at alpha = 100" in text
    assert "leaving the kernel regime hurts (+190%, +28.3 combined standard errors)" in text and "relu -1.00 to -1.00 (predicted -1)" in text


@pytest.mark.parametrize("activation", ("relu", "exp", "softmax"))
def test_the_kernel_baseline_is_the_h_star_interpolant(activation):
    """KernelBaselineUnit's test MSE against H*(X_test, X) H*(X, X)^-1 y solved directly (1e-10)."""
    from overparam.kernels.infinite import infinite_ntk
    from overparam.study.lazy_rich import KernelBaselineUnit

    record = KernelBaselineUnit(activation, 12, 4, 1.0, 0, 0.1, 50).compute(None)
    X, y, X_test, y_test = problem(12, 4, 50, 0.1, 0)
    prediction = infinite_ntk(activation, X_test, 1.0, X2=X) @ torch.linalg.solve(infinite_ntk(activation, X, 1.0), y)
    assert record.kernel_test_mse == pytest.approx(float((prediction - y_test).square().mean()), rel=1e-10)


def test_the_section_runs_in_a_study_and_its_tables_are_its_records(tmp_path):
    """run_study with lazy_rich alone: lazy_rich.csv has one row per unit, equal to compute_run of that
    unit; lazy_rich_crossover.csv is `crossovers` of those rows; the summary gains the alpha* exponent."""
    import csv

    from overparam.study import run_study

    settings = {"widths": (16, 32), "alphas": (0.1, 1.0, 10.0), "seeds": 2, "n": 8, "test": 20, "steps": 300}
    study = StudyConfig(activations=("relu", "softmax"), d=4, tol=1e-3, sections=("lazy_rich",),
                        settings={"lazy_rich": settings})
    result = run_study(study, tmp_path)
    assert [s.status for s in result.sections] == ["complete"]
    with open(tmp_path / "tables" / "lazy_rich.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cfg = study.section("lazy_rich")
    grid = runs(study, cfg)
    assert len(rows) == len(grid) == 2 * 2 * 3 * 2 + 2 * 2
    assert list(rows[0]) == list(lazy_rich.TABLE_COLUMNS)
    row, unit = rows[5], grid[5]
    record = compute_run(unit)
    assert (row["activation"], int(row["m"]), float(row["alpha"]), int(row["seed"])) == \
        (unit.label, unit.width, unit.alpha, unit.seed)
    for name in ("drift", "movement", "alignment_0", "alignment_T", "test_mse"):
        assert float(row[name]) == pytest.approx(getattr(record, name), rel=1e-12)
    records = [LazyRichRecord(r["activation"], int(r["m"]), float(r["alpha"]), int(r["seed"]), float(r["drift"]),
                              0.0, 0, 0.0, 0.0, 0.0, r["status"], 0.0, 0, 0.0) for r in rows]
    with open(tmp_path / "tables" / "lazy_rich_crossover.csv", newline="") as handle:
        found = list(csv.DictReader(handle))
    expected = crossovers(records, cfg.level)
    assert [(r["activation"], int(r["m"])) for r in found] == [(c.activation, c.m) for c in expected]
    for r, c in zip(found, expected):
        for name in ("alpha_star", "low", "high"):
            assert float(r[name]) == pytest.approx(getattr(c, name), rel=1e-9, nan_ok=True)
    summary = (tmp_path / "tables" / "summary.csv").read_text()
    assert "alpha* exponent in m (lazy_rich)" in summary
