"""The orders of docs/mathematics.md#predictions as written there, checked at hand-computed values."""

import math

import pytest

from overparam import theory


def test_orders_at_hand_computed_values():
    n, lam, delta, eps = 100, 0.1, 0.01, 1e-3
    assert theory.dzps19_width(n, lam, delta) == pytest.approx(1e12 / (1e-4 * 1e-6))
    assert theory.dzps19_step(n, lam) == pytest.approx(1e-5)
    assert theory.iterations(1e-5, lam, eps) == pytest.approx(math.log(1e3) / 1e-6)
    assert theory.sy19_width(n, lam, delta) == pytest.approx(1e8 * math.log(1e4) ** 3 / 1e-4)
    assert theory.mosw22_width(n) == 1e4
    base = 1e4 * math.log(1e4)
    assert theory.gms23_width(n, delta) == pytest.approx(base * math.exp(math.sqrt(2 * math.log(n * base / delta))))
    assert theory.smx24_width(n, delta) == theory.gms23_width(n, delta)
    assert theory.kernel_width(n, lam, delta) == pytest.approx(1e4 * math.log(1e4) / 1e-2)
    assert theory.capacity_width(1000, 2) == 500 and theory.capacity_width(1001, 2, 3) == 1502
    assert theory.linear_rate(0.5, 0.2) == pytest.approx(0.95)
    assert theory.dzps19_radius(16, 100, 3.0, 0.5) == pytest.approx(4 * 3.0 / (10 * 0.5))
    assert theory.dzps19_radius(16, 100, 3.0, 0.5, kappa=1.0) == pytest.approx(4 * 3.0 / (100 * 0.5))
    assert theory.dzps19_width(n, lam, delta, c=3.0) == pytest.approx(3 * theory.dzps19_width(n, lam, delta))


@pytest.mark.parametrize("n, lam, delta, c", [(100, 0.1, 0.01, 1.0), (24, 0.0123, 0.25, 1.0), (1, 3.5, 0.9, 2.5)])
def test_dzps19_perturbation_radius_is_delta_lambda_over_n_squared(n, lam, delta, c):
    """DZPS19 Lemma 3.2's radius R = c delta lambda / n^2 (an order: constant c, default 1)."""
    expected = c * delta * lam / (n * n)
    assert theory.dzps19_perturbation_radius(n, lam, delta, c) == pytest.approx(expected, rel=1e-15)
    if c == 1.0:
        assert theory.dzps19_perturbation_radius(n, lam, delta) == pytest.approx(expected, rel=1e-15)


def test_orders_table():
    rows = theory.orders(1000, 0.1, 0.01)
    assert [row.work for row in rows] == list(theory.WORKS)
    dzps19 = rows[0]
    assert dzps19.width == theory.dzps19_width(1000, 0.1, 0.01)
    assert dzps19.iterations == pytest.approx(theory.iterations(theory.dzps19_step(1000, 0.1), 0.1, 1e-3))
    assert rows[3].step is None and "not stated" in rows[3].note
    # the orders the works are known for: DZPS19 > SY19 > MOSW22 at this n
    assert rows[0].width > rows[1].width > rows[2].width


@pytest.mark.parametrize("call, message", [
    (lambda: theory.dzps19_width(0, 0.1, 0.1), "n must be"),
    (lambda: theory.dzps19_width(10, 0.0, 0.1), "lambda"),
    (lambda: theory.sy19_width(10, 0.1, 1.5), "delta"),
    (lambda: theory.iterations(0.1, 0.1, 0.0), "epsilon"),
    (lambda: theory.iterations(0.0, 0.1, 0.1), "eta_eff"),
    (lambda: theory.capacity_width(10, 0), "d and k"),
    (lambda: theory.dzps19_perturbation_radius(0, 0.1, 0.1), "n must be"),
    (lambda: theory.dzps19_perturbation_radius(10, 0.0, 0.1), "lambda"),
    (lambda: theory.dzps19_perturbation_radius(10, 0.1, 1.0), "delta"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
