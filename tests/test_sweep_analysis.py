"""Threshold estimation on synthetic success tables whose answer is known."""

import math

import numpy as np
import pytest

from overparam.sweep.analysis import (estimate_threshold, fit_power_law, interval, monotone_rates, plot_thresholds,
                                      theory_orders, thresholds_from_rows)

WIDTHS = [2**j for j in range(3, 13)]  # 8 .. 4096


def synthetic_rows(ns, seeds, success, activation="exp", init="coupled", kernel=False):
    """Rows as Store.runs() gives them; success(n, width, seed) -> bool."""
    rows = []
    for n in ns:
        for width in WIDTHS:
            config = {"activation": activation, "init": init, "n": n, "d": 8, "width": width}
            for seed in range(seeds):
                ok = success(n, width, seed)
                rows.append({"config": config, "width": width, "seed": seed,
                             "status": "converged" if ok else "max_steps",
                             "lambda_min": 0.4, "kernel_distance": 0.05 if (ok or not kernel) else 0.5})
    return rows


def test_isotonic_fit_pools_violations():
    fitted = monotone_rates([3, 4, 2, 4], [4, 4, 4, 4])
    np.testing.assert_allclose(fitted, [0.75, 0.75, 0.75, 1.0])  # (1 + 0.5) / 2 pooled with 0.75 before it
    np.testing.assert_allclose(monotone_rates([0, 3, 0], [2, 4, 1]), [0, 0.6, 0.6])  # (3 + 0) / (4 + 1)


def test_deterministic_threshold_and_exact_power_law():
    # success iff m >= 2 n^2: the thresholds are 32, 128, 512, 2048 and p = 2, C = 2 exactly
    ns = [4, 8, 16, 32]
    rows = synthetic_rows(ns, 6, lambda n, m, s: m >= 2 * n * n)
    report = thresholds_from_rows(rows, delta=0.1, bootstrap=200, kinds=("optimization",))
    found = {t.family["n"]: t for t in report.thresholds}
    for n in ns:
        assert found[n].width == 2 * n * n
        assert found[n].low == found[n].high == 2 * n * n  # no randomness left to resample
    [fit] = report.fits
    assert fit.ns == ns and fit.p == pytest.approx(2.0, abs=1e-12) and fit.C == pytest.approx(2.0, rel=1e-12)
    assert fit.p_low == pytest.approx(2.0) and fit.p_high == pytest.approx(2.0)
    assert fit.theory == [("GMS23", "2+o(1)")]


def test_noisy_table_recovers_threshold_and_exponent():
    # m* = 4 n^1.5 on the grid; at half that width 17 of 20 seeds succeed (< 1 - delta), below it none
    truth = {n: 4 * round(n**1.5) for n in [4, 16, 64]}  # 32, 256, 2048

    def success(n, m, seed):
        return m >= truth[n] or (m == truth[n] // 2 and seed < 17)

    rows = synthetic_rows(truth, 20, success)
    report = thresholds_from_rows(rows, delta=0.05, bootstrap=1000, kinds=("optimization",))
    for t in report.thresholds:
        assert t.width == truth[t.family["n"]]
        assert t.low <= truth[t.family["n"]] <= t.high
        assert t.successes[t.widths.index(t.width) - 1] < 20  # the width below really fell short
    assert any(t.low == t.width / 2 for t in report.thresholds)  # the bootstrap sees that uncertainty
    [fit] = report.fits
    assert fit.p == pytest.approx(1.5, abs=1e-12)
    assert fit.p_low - 1e-9 <= 1.5 <= fit.p_high + 1e-9 and fit.p_low < fit.p_high


def test_kernel_threshold_and_censoring():
    ns = [4, 8]
    rows = synthetic_rows(ns, 5, lambda n, m, s: m >= 64 * n, kernel=True)
    # one family never succeeds in the grid, one succeeds from the first width
    rows += synthetic_rows([8], 5, lambda n, m, s: False, activation="relu", kernel=True)
    rows += synthetic_rows([8], 5, lambda n, m, s: True, activation="softmax", kernel=True)
    report = thresholds_from_rows(rows, bootstrap=100)
    kernel = {(t.family["activation"], t.family["n"]): t for t in report.thresholds if t.kind == "kernel"}
    assert kernel[("exp", 4)].width == 256 and kernel[("exp", 8)].width == 512
    assert math.isinf(kernel[("relu", 8)].width) and kernel[("relu", 8)].censored
    assert kernel[("softmax", 8)].width == 8 and kernel[("softmax", 8)].below_grid
    fits = {(f.kind, f.family["activation"]): f for f in report.fits}
    assert fits[("kernel", "exp")].p == pytest.approx(1.0, abs=1e-12)
    assert set(fits) == {("kernel", "exp"), ("optimization", "exp")}  # censored series are not fitted
    assert fits[("kernel", "exp")].theory == theory_orders("kernel", "exp", "coupled")


def test_running_and_failed_rows_do_not_count():
    rows = synthetic_rows([4], 4, lambda n, m, s: m >= 64)
    for row in rows:
        if row["width"] == 32:
            row["status"] = "failed" if row["seed"] % 2 else "running"
    report = thresholds_from_rows(rows, bootstrap=10, kinds=("optimization",))
    [t] = report.thresholds
    assert 32 not in t.widths and t.width == 64


def test_helpers():
    outcomes = [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    estimate, fitted, samples = estimate_threshold([8, 16, 32], outcomes, delta=0.2, bootstrap=500)
    assert estimate == 32 and fitted.tolist() == [0, 0.75, 1]
    assert set(np.unique(samples)) == {16.0, 32.0}  # resamples without seed 3 pass at 16
    assert np.mean(samples == 16) == pytest.approx((3 / 4) ** 4, abs=0.06)  # P(seed 3 never drawn)
    missing = [[0, np.nan, 0], [1, 1, np.nan]]  # runs absent from the store
    estimate, fitted, _ = estimate_threshold([8, 16], missing, delta=0.1, bootstrap=10)
    assert estimate == 16 and fitted.tolist() == [0, 1]
    assert interval(np.array([1.0, 2, 3, 4, np.inf]), 0.5) == (2.0, 4.0)
    p, C = fit_power_law([2, 4, 8], [12, 48, 192])
    assert p == pytest.approx(2) and C == pytest.approx(3)
    assert theory_orders("optimization", "relu", "independent") == [("DZPS19", "6"), ("SY19", "4")]
    with pytest.raises(ValueError, match="delta"):
        thresholds_from_rows([], delta=1.5)


def test_figure_is_written(tmp_path):
    rows = synthetic_rows([4, 8, 16], 3, lambda n, m, s: m >= 2 * n * n, kernel=True)
    path = plot_thresholds(thresholds_from_rows(rows, bootstrap=20), tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_with_rounding_spectra_never_count_as_successes():
    """Issue 16: a run whose lambda_min(H*) is rounding is a failure for both thresholds, whatever it measured."""
    ns = [4, 8]
    rows = synthetic_rows(ns, 4, lambda n, m, s: m >= 2 * n * n, kernel=True)
    for row in rows:
        row["lambda_rounding"] = row["width"] == 2 * row["config"]["n"] ** 2  # the threshold width itself
    report = thresholds_from_rows(rows, delta=0.1, bootstrap=50)
    for t in report.thresholds:
        n = t.family["n"]
        assert dict(zip(t.widths, t.successes))[2 * n * n] == 0  # converged, yet not a success
        assert t.width == 4 * n * n  # so the first width where every seed succeeds is the next one
