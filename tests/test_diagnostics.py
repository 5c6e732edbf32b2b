"""KernelDiagnostics columns and the TheoryCheck against quantities recomputed from saved weights."""

import math

import numpy as np
import pytest
import torch

from overparam import KernelDiagnostics, TwoLayerNet, train
from overparam.data import sphere
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk


def run(activation="softmax", width=512, steps=37, every=5, dense_limit=2048, reference="infinite", k=1):
    data = sphere(12, 4, k, seed=0)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    net = TwoLayerNet(4, width, k, activation, init="coupled", seed=1)
    weights = {}
    diagnostics = KernelDiagnostics(every, reference=reference, dense_limit=dense_limit)
    history = train(net, X, y, steps=steps, record_every=1,
                    callbacks=[diagnostics, lambda state: weights.setdefault(state.step, state.net.W.clone())])
    return net, X, y, history, diagnostics, weights


def kernel_at(net, W, X):
    clone = net.copy()
    clone.W = W
    return ntk(clone, X)


def test_columns_match_recomputation_and_check_adds_the_last_step():
    net, X, y, history, diagnostics, weights = run()
    extra = history.extra
    assert list(extra["kernel_step"]) == [0, 5, 10, 15, 20, 25, 30, 35]
    check = diagnostics.check(history)
    assert list(extra["kernel_step"]) == [0, 5, 10, 15, 20, 25, 30, 35, 37]
    H0 = kernel_at(net, weights[0], X)
    for i, step in enumerate(extra["kernel_step"]):
        H = kernel_at(net, weights[step], X)
        assert extra["lambda_min"][i] == pytest.approx(float(torch.linalg.eigvalsh(H)[0]), rel=1e-10)
        assert extra["kernel_drift"][i] == pytest.approx(float(torch.linalg.matrix_norm(H - H0, ord=2)),
                                                         rel=1e-8, abs=1e-15)
        movement = float((weights[step] - weights[0]).norm(dim=1).max())
        assert extra["kernel_movement"][i] == pytest.approx(movement, rel=1e-12, abs=1e-300)
    residual2 = history.residual_norm**2
    for i in range(1, len(extra["kernel_step"])):
        t0, t1 = extra["kernel_step"][i - 1], extra["kernel_step"][i]
        expected = (residual2[t1] / residual2[t0]) ** (1 / (t1 - t0))
        assert extra["observed_rate"][i] == pytest.approx(expected, rel=1e-12)
    assert math.isnan(extra["observed_rate"][0])

    lam = float(torch.linalg.eigvalsh(infinite_ntk("softmax", X))[0])
    eta_eff = history.lr * net.width * net.kappa**2
    assert check.reference_lambda == pytest.approx(lam, rel=1e-12) and check.lambda_source == "H*"
    assert check.eta_eff == pytest.approx(eta_eff, rel=1e-12)
    assert check.predicted_rate == pytest.approx(1 - eta_eff * lam / 2, rel=1e-12)
    assert np.allclose(extra["predicted_rate"], check.predicted_rate, rtol=1e-12)
    bound = check.predicted_rate ** history.step * residual2[0]
    assert check.linear_convergence == bool(np.all(residual2 <= bound * (1 + 1e-9)))
    assert check.observed_rate == pytest.approx((residual2[-1] / residual2[0]) ** (1 / 37), rel=1e-12)
    assert check.worst_rate == pytest.approx(np.nanmax(extra["observed_rate"]), rel=1e-12)
    assert check.max_kernel_drift == pytest.approx(max(extra["kernel_drift"]))
    assert check.kernel_within_quarter == (check.max_kernel_drift <= lam / 4)
    assert check.min_lambda == pytest.approx(min(extra["lambda_min"]))
    assert check.kernel_above_half == (check.min_lambda >= lam / 2)
    assert check.radius == pytest.approx(float((net.W - weights[0]).norm(dim=1).max()), rel=1e-12)
    assert check.dzps19_radius is None and check.steps == 37 and check.records == 9
    summary = check.summary()
    assert summary["holds"] == (check.linear_convergence and check.kernel_within_quarter and check.kernel_above_half)
    assert set(diagnostics.table(history)) == {"kernel_step", "lambda_min", "lambda_converged", "kernel_drift",
                                               "kernel_movement", "observed_rate", "predicted_rate"}


def test_wide_softmax_run_satisfies_the_theorems():
    """At m = 8192 with lr = 1/lambda_max(Theta(0)) the run is lazy: every condition holds."""
    net, X, y, history, diagnostics, _ = run(width=8192, steps=60, every=20)
    check = diagnostics.check(history)
    assert check.holds and check.bound_violations == 0
    assert check.observed_rate < check.predicted_rate < 1


def test_matrix_free_path_agrees_with_dense():
    dense = run("relu", k=2, steps=12, every=4)
    free = run("relu", k=2, steps=12, every=4, dense_limit=0)
    for name in ("lambda_min", "kernel_drift", "kernel_movement"):
        np.testing.assert_allclose(free[3].extra[name], dense[3].extra[name], rtol=1e-7, atol=1e-12)
    assert all(free[3].extra["lambda_converged"])
    check = free[4].check(free[3])
    assert check.dzps19_radius == pytest.approx(
        math.sqrt(12) * free[3].residual_norm[0] / (free[0].width * free[0].kappa * check.reference_lambda))


def test_reference_choices_and_errors():
    *_, history, diagnostics, _ = run(steps=5, reference="initial")
    net = TwoLayerNet(4, 512, 1, "softmax", init="coupled", seed=1)
    X = torch.from_numpy(sphere(12, 4, seed=0).X)
    assert diagnostics.check(history).reference_lambda == pytest.approx(float(torch.linalg.eigvalsh(ntk(net, X))[0]))
    *_, history, diagnostics, _ = run(steps=5, reference=0.25)
    assert diagnostics.check(history).lambda_source == "given"
    with pytest.raises(ValueError, match="every"):
        KernelDiagnostics(0)
    with pytest.raises(ValueError, match="reference"):
        KernelDiagnostics(reference="final")
    from overparam.training.loop import History

    empty = History(*[np.zeros(1)] * 6, status="max_steps", message="", lr=1.0, optimizer="gd")
    with pytest.raises(ValueError, match="no diagnostics"):
        KernelDiagnostics().check(empty)


def test_overflowing_infinite_kernel_falls_back_to_the_initial_kernel():
    """sigma = 20: H*(exp) has exp(sigma^2 ||2 x||^2 / 2) = exp(800) (inf), the width-16 net is finite."""
    X = torch.from_numpy(sphere(5, 3, seed=0).X)
    y = torch.zeros(5)
    net = TwoLayerNet(3, 16, 1, "exp", sigma=20.0, seed=0)
    initial = ntk(net, X)
    diagnostics = KernelDiagnostics(every=1)
    history = train(net, X, y, lr=1e-300, steps=2, callbacks=[diagnostics])
    check = diagnostics.check(history)
    assert check.lambda_source == "H(W(0))"
    assert check.reference_lambda == pytest.approx(float(torch.linalg.eigvalsh(initial)[0]), rel=1e-12)
    assert "H*(exp) overflows float64 at sigma = 20" in check.notes[0]


def test_a_rounding_lambda_is_never_the_reference_without_a_note():
    """Two equal inputs make H* and H(W(0)) singular: their computed lambda_min is rounding (|value| far below
    eps n lambda_max), so neither is taken as a measurement without saying so."""
    X = torch.from_numpy(sphere(6, 3, seed=0).X)
    X[5] = X[4]
    net = TwoLayerNet(3, 64, 1, "relu", seed=0)
    for kernel in (infinite_ntk("relu", X), ntk(net, X)):
        values = torch.linalg.eigvalsh(kernel)
        assert abs(float(values[0])) < np.finfo(float).eps * 6 * float(values[-1])
    diagnostics = KernelDiagnostics(every=1)
    history = train(net, X, torch.zeros(6), lr=1e-3, steps=2, callbacks=[diagnostics])
    check = diagnostics.check(history)
    assert check.lambda_source == "H(W(0))"
    assert any("lambda_min(H*) = " in note and "below the rounding level" in note for note in check.notes)
    assert any("lambda_min(H(W(0))) = " in note and "not a measurement" in note for note in check.notes)
