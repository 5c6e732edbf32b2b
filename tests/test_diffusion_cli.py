"""`overparam diffusion` end to end (tiny sizes) and `run_experiment` on sample-only data."""

import json

import numpy as np
import pytest

from overparam.diffusion import DiffusionConfig, TrainingConfig, run_experiment

METRICS = {"score_error", "w2", "mmd", "nll"}
TINY = ["--width", "32", "--n", "128", "--steps", "20", "--sampler-steps", "10", "--samples", "200",
        "--score-samples", "500"]


def test_json_has_the_documented_shape_and_files_are_written(tmp_path, overparam):
    result = overparam("diffusion", "--data", "gmm:k=2,d=2,weights=0.3/0.7", "--activation", "softmax,relu",
                       "--sampler", "ode", *TINY, "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"softmax", "relu", "baselines"}
    assert set(payload["baselines"]) >= {"exact", "trivial"}
    for row in (payload["softmax"], payload["relu"], payload["baselines"]["exact"], payload["baselines"]["trivial"]):
        assert METRICS <= set(row) and all(isinstance(row[key], float) for key in METRICS)
        assert len(row["weights"]) == 2 and abs(sum(row["weights"]) - 1) < 1e-12
    assert payload["baselines"]["exact"]["score_error"] == 0.0
    assert payload["baselines"]["trivial"]["score_error"] > 0
    assert set(payload["softmax"]["between"]) == {"score_error", "w2", "mmd", "nll"}
    details = json.loads((tmp_path / "results.json").read_text())
    assert details["metrics"] == payload and details["config"]["activations"] == ["softmax", "relu"]
    assert details["config"]["training"]["width"] == 32
    for name in ("samples.png", "score_field.png", "score_error.png", "training.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "samples.npz") as samples:
        assert set(samples.files) == {"reference", "softmax", "relu", "exact", "trivial"}
        assert samples["softmax"].shape == (200, 2)
    assert (tmp_path / "training_relu.parquet").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--data", "gmm:k=two"], "not a valid int"),
    (["--data", "gauss"], "unknown diffusion data"),
    (["--data", "gmm:k=3,weights=1/2"], "k = 3"),
    (["--data", "moons:k=3"], "unknown option"),
    (["--activation", "softmax,swish"], "unknown activation"),
    (["--sampler", "langevin"], "unknown sampler"),
    (["--T", "1e-4"], "0 < t0 < T"),
    (["--time-law", "beta"], "time law"),
    (["--lr", "fast"], "--lr takes"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--twin", "theta1"], "unknown kernel twin 'theta1'"),
    (["--twin-budget", "-1"], "twin_budget must be a positive number"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, overparam, args, fragment):
    result = overparam("diffusion", *TINY, "--out", str(tmp_path), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


def test_sample_only_data_reports_sample_metrics_only(tmp_path):
    config = DiffusionConfig(data="moons", activations=("softmax",), n=128, sampler_steps=10,
                             training=TrainingConfig(width=32, steps=10), n_samples=150, n_score=100,
                             curve_samples=10)
    metrics = run_experiment(config, tmp_path)
    assert metrics["baselines"]["exact"] is None
    row = metrics["softmax"]
    assert row["score_error"] is None and row["nll"] is None and row["weights"] is None
    assert row["w2"] > 0 and np.isfinite(row["mmd"]) and metrics["baselines"]["p0"]["w2"] > 0
    assert (tmp_path / "score_field.png").exists() and not (tmp_path / "score_error.png").exists()


def test_diverged_training_exits_1_and_says_so(tmp_path, overparam):
    result = overparam("diffusion", "--data", "gmm:k=2,d=2", "--activation", "exp", *TINY, "--lr", "1000",
                       "--out", str(tmp_path), "--json")
    assert result.returncode == 1
    training = json.loads(result.stdout)["exp"]["training"]
    assert training["status"] == "diverged" and "try lr" in training["message"]
    assert training["best_step"] == 0  # the metrics are for W(0), the best held-out network before divergence
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged for exp" in lines[0]


def test_twins_are_reported_beside_their_network(tmp_path, overparam):
    """--twin: each network's kernel twins get the network's metrics and their stopping time; the reported
    held-out loss is the twin's closed form at the reported step (recomputed from the same draws)."""
    from overparam.diffusion.experiment import draw
    from overparam.diffusion.twin import kernel_twin

    result = overparam("diffusion", "--data", "gmm:k=2,d=2", "--activation", "relu", *TINY, "--twin", "theta0,hstar",
                       "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    twins = json.loads(result.stdout)["relu"]["twins"]
    assert set(twins) == {"theta0", "hstar"}
    config = DiffusionConfig(data="gmm:k=2,d=2", activations=("relu",), n=128, training=TrainingConfig(width=32))
    for kind, row in twins.items():
        assert METRICS <= set(row) and row["score_error"] > 0
        twin = kernel_twin(kind, draw(config).x0, config.horizon, config.training_for("relu"))
        assert row["twin"]["stop_step"] == twin.stop.step
        assert row["twin"]["heldout_loss"] == pytest.approx(float(twin.held_out_loss([twin.stop.step])[0]), rel=1e-9)
    with np.load(tmp_path / "samples.npz") as samples:
        assert samples["relu twin_hstar"].shape == (200, 2)


def test_twin_budget_sets_the_training_budget(tmp_path, overparam):
    """--twin-budget 2: the budget is 2 t* of the Theta(W(0)) twin that --twin theta0 reports (the same twin)."""
    import math

    result = overparam("diffusion", "--data", "gmm:k=2,d=2", "--activation", "relu", *TINY, "--steps", "100000",
                       "--twin", "theta0", "--twin-budget", "2", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    relu = json.loads(result.stdout)["relu"]
    twin, training = relu["twins"]["theta0"]["twin"], relu["training"]
    assert training["twin_t_star"] == twin["t_star"] and training["budget"] == math.ceil(2 * twin["t_star"])
    assert training["ended_by"] in ("early stopping", "budget") and training["steps"] <= training["budget"]
    assert (training["ended_by"] == "budget") == (training["steps"] == training["budget"])
