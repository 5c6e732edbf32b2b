"""`overparam ntk`, `overparam bound` and `overparam train --diagnostics` end to end."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from overparam import TwoLayerNet
from overparam.data import sphere
from overparam.models import initial_weights
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk

PNG = b"\x89PNG\r\n\x1a\n"


def eigenvalues(matrix):
    values = torch.linalg.eigvalsh(matrix)
    return float(values[0]), float(values[-1])


def test_ntk_finite_json(tmp_path, overparam):
    result = overparam("ntk", "--activation", "softmax", "--width", "300", "--n", "20", "--d", "3",
                       "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"lambda_min", "lambda_max", "condition_number"} <= set(summary) and "relative_distance" not in summary
    net = TwoLayerNet(3, 300, 1, "softmax")
    low, high = eigenvalues(ntk(net, torch.from_numpy(sphere(20, 3).X)))
    assert summary["lambda_min"] == pytest.approx(low, rel=1e-10)
    assert summary["lambda_max"] == pytest.approx(high, rel=1e-10)
    assert summary["condition_number"] == pytest.approx(high / low, rel=1e-10)
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == PNG


def test_ntk_infinite_alone_describes_h_star(tmp_path, overparam):
    result = overparam("ntk", "--activation", "exp", "--infinite", "--n", "15", "--d", "4", "--out", str(tmp_path),
                       "--json")
    summary = json.loads(result.stdout)
    low, high = eigenvalues(infinite_ntk("exp", torch.from_numpy(sphere(15, 4).X)))
    assert summary["kernel"] == "infinite" and "relative_distance" not in summary and "width" not in summary
    assert summary["lambda_min"] == pytest.approx(low, rel=1e-10)
    assert summary["lambda_max"] == pytest.approx(high, rel=1e-10)


def test_ntk_both_kernels_give_the_relative_distance(tmp_path, overparam):
    result = overparam("ntk", "--activation", "relu", "--width", "256", "--infinite", "--n", "30", "--d", "3",
                       "--k", "2", "--dense-limit", "10", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    X = torch.from_numpy(sphere(30, 3, 2).X)
    H, limit = ntk(TwoLayerNet(3, 256, 2, "relu"), X), infinite_ntk("relu", X, out_dim=2)
    expected = float(torch.linalg.matrix_norm(H - limit, ord=2) / torch.linalg.matrix_norm(limit, ord=2))
    assert summary["method"] == "cholesky" and summary["converged"] and "dense limit 10" in summary["method_reason"]
    assert summary["relative_distance"] == pytest.approx(expected, rel=1e-6)
    assert summary["lambda_min"] == pytest.approx(eigenvalues(H)[0], rel=1e-8)
    assert summary["infinite"]["lambda_min"] == pytest.approx(eigenvalues(limit)[0], rel=1e-8)


def test_ntk_monte_carlo(tmp_path, overparam):
    result = overparam("ntk", "--activation", "relu", "--width", "64", "--monte-carlo", "4", "--infinite",
                       "--n", "10", "--d", "3", "--out", str(tmp_path), "--json")
    summary = json.loads(result.stdout)
    assert summary["kernel"] == "monte_carlo" and summary["monte_carlo"]["samples"] == 4
    assert {"relative_distance", "lambda_min", "lambda_max", "condition_number"} <= set(summary)
    assert summary["monte_carlo"]["max_z"] > 0


@pytest.mark.parametrize("args, message", [
    (["ntk", "--activation", "swish"], "unknown activation"),
    (["ntk", "--monte-carlo", "1"], "at least 2"),
    (["ntk", "--width", "0"], "positive"),
    (["ntk", "--data", "missing.npz"], "does not exist"),
    (["ntk", "--device", "tpu"], "unknown device 'tpu'"),
    (["ntk", "--infinite", "--sigma", "-1"], "sigma must be positive"),
    (["ntk", "--dense-limit", "-1"], "--dense-limit must be >= 0"),
    (["bound", "--n", "100", "--lambda", "0.1", "--delta", "1.5"], "delta"),
    (["bound", "--n", "100", "--lambda", "-1", "--delta", "0.1"], "lambda"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, overparam, args, message):
    result = overparam(*args, "--out", str(tmp_path)) if args[0] == "ntk" else overparam(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bound_json_and_table(overparam):
    result = overparam("bound", "--n", "1000", "--lambda", "0.1", "--delta", "0.01", "--d", "2", "--json")
    summary = json.loads(result.stdout)
    assert set(summary["works"]) == {"DZPS19", "SY19", "MOSW22", "GMS23", "SMX24"}
    assert summary["works"]["DZPS19"]["width"] == pytest.approx(1000**6 / (0.1**4 * 0.01**3))
    assert summary["capacity_width"] == 500 and "not bounds" in summary["label"]
    table = overparam("bound", "--n", "1000", "--lambda", "0.1", "--delta", "0.01")
    assert table.returncode in (0, None) and "DZPS19" in table.stdout and "capacity" not in table.stdout


def test_train_diagnostics(tmp_path, overparam):
    result = overparam("train", "--activation", "relu", "--width", "512", "--n", "12", "--d", "4", "--steps", "30",
                       "--diagnostics", "--diagnostics-every", "10", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    theory = summary["theory"]
    for key in ("reference_lambda", "linear_convergence", "kernel_within_quarter", "kernel_above_half", "radius",
                "observed_rate", "predicted_rate", "max_kernel_drift", "holds", "dzps19_radius"):
        assert key in theory
    assert theory["radius"] == pytest.approx(summary["max_movement"], rel=1e-12)
    table = pq.read_table(tmp_path / "diagnostics.parquet").to_pydict()
    assert table["kernel_step"] == [0, 10, 20, 30]
    assert (tmp_path / "diagnostics.png").read_bytes()[:8] == PNG
    assert json.loads((tmp_path / "summary.json").read_text())["theory"]["records"] == 4


def test_ntk_widths_profile(tmp_path, overparam):
    result = overparam("ntk", "--activation", "softmax", "--widths", "16,64,256", "--n", "10", "--d", "3",
                       "--init", "coupled", "--seed", "2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    X = torch.from_numpy(sphere(10, 3, seed=2).X)
    limit = infinite_ntk("softmax", X)
    lam = eigenvalues(limit)[0]
    assert summary["widths"] == [16, 64, 256] and summary["lambda"] == pytest.approx(lam, rel=1e-12)
    # the nested pass takes the first m neurons of the width-256 init, not a width-m init of the seed
    W, a = initial_weights(256, 3, 1, "coupled", 1.0, 2)
    for m, ratio, smallest in zip(summary["widths"], summary["distance_over_lambda"], summary["lambda_min"]):
        net = TwoLayerNet(3, m, 1, "softmax", init="coupled")
        net.W, net.a = W[:m].clone(), a[:m].clone()
        H = ntk(net, X)
        assert ratio == pytest.approx(float(torch.linalg.matrix_norm(H - limit, ord=2)) / lam, rel=1e-9)
        assert smallest == pytest.approx(eigenvalues(H)[0], rel=1e-9)


def test_ntk_widths_must_increase(overparam):
    result = overparam("ntk", "--widths", "64,32")
    assert result.returncode == 2 and "increasing" in result.stderr and "Traceback" not in result.stderr


def test_rounding_dominated_spectrum_is_flagged(tmp_path, overparam):
    """exp at sigma = 50: H's entries span ~1e160, so its computed lambda_min is rounding (issue 16)."""
    result = overparam("ntk", "--activation", "exp", "--sigma", "50", "--width", "64", "--n", "8", "--d", "4",
                       "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    H = ntk(TwoLayerNet(4, 64, 1, "exp", sigma=50.0), torch.from_numpy(sphere(8, 4).X))
    values = np.linalg.eigvalsh(H.numpy())  # numpy's LAPACK call, not the library's
    assert values[0] < np.finfo(float).eps * 8 * values[-1]  # the case the flag is for
    assert summary["rounding"] is True and summary["condition_number"] == "inf"
    assert any("rounding level" in line for line in summary["warnings"])
    table = overparam("ntk", "--activation", "exp", "--sigma", "50", "--width", "64", "--n", "8", "--d", "4",
                      "--out", str(tmp_path))
    assert "warning: lambda_min is below the rounding level" in " ".join(table.stdout.split())


def test_resolved_spectrum_is_not_flagged(tmp_path, overparam):
    result = overparam("ntk", "--activation", "relu", "--width", "256", "--infinite", "--n", "12", "--d", "3",
                       "--out", str(tmp_path), "--json")
    summary = json.loads(result.stdout)
    X = torch.from_numpy(sphere(12, 3).X)
    for kernel, values in ((ntk(TwoLayerNet(3, 256, 1, "relu"), X), summary),
                           (infinite_ntk("relu", X), summary["infinite"])):
        low, high = eigenvalues(kernel)
        assert low > 1e-3 * high and values["rounding"] is False  # lambda_min well above eps n lambda_max
    assert summary["warnings"] == []


@pytest.mark.parametrize("low, high, size, flagged", [
    (1e-3, 1.0, 100, False),
    (1e-20, 1.0, 100, True),          # condition number 1e20 > 1 / eps
    (-1e-20, 1.0, 100, True),         # negative: within rounding of zero
    (2.1e-14, 1.0, 100, True),        # just below eps n = 2.22e-14 ... (eps = 2.22e-16)
    (2.1e-14, 1.0, 10, False),        # ... and above eps n = 2.22e-15
    (float("nan"), 1.0, 10, True),
])
def test_rounding_level_is_eps_n_lambda_max(low, high, size, flagged):
    from overparam.kernels.eigensolvers import rounding_dominated

    assert rounding_dominated(low, high, size) is flagged
