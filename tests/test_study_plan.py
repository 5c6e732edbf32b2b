"""The study's plan (`overparam.study.plan`, `overparam study --plan`): its unit counts are the units the runner
computes, a finished folder has nothing left to compute, the predicted step budget is the formula written out
with numpy's H*, and the CLI prints the plan, exits 0 without computing, and refuses bad input in one line."""

import json
import math
import sqlite3

import numpy as np
import pytest

from overparam.data import sphere
from overparam.study import StudyConfig, run_study
from overparam.study.plan import Cost, Rates, calibrate, plan_study, predicted_steps, step_ops

TINY = StudyConfig(activations=("relu",), d=3, tol=1e-2, sections=("concentration", "threshold"), settings={
    "concentration": {"n": 6, "widths": (8, 16), "seeds": 2},
    "threshold": {"ns": (4, 6), "kernel_ns": (4, 6), "widths": (2, 4), "draws": 1, "seeds": 2, "max_steps": 50,
                  "kernel_widths": (8, 16), "dimension_ds": (3,), "dimension_ns": (4, 6), "lambda_ns": (4,)}}).validate()
TOML = """[study]
activations = ["relu"]
d = 3
tol = 0.01
sections = ["concentration", "threshold"]
[concentration]
n = 6
widths = [8, 16]
seeds = 2
[threshold]
ns = [4, 6]
kernel_ns = [4, 6]
widths = [2, 4]
draws = 1
seeds = 2
dimension_ds = [3]
dimension_ns = [4, 6]
max_steps = 50
kernel_widths = [8, 16]
lambda_ns = [4]
"""


def test_the_plan_counts_the_units_the_runner_computes(tmp_path):
    before = plan_study(TINY, tmp_path)
    started = {}
    result = run_study(TINY, tmp_path, on_section=lambda key, title, units: started.__setitem__(key, units))
    assert {p.key: p.units for p in before} == started == {"concentration": 1 * 2 * 2, "threshold": 2 + 2 + 2}
    assert [p.pending for p in before] == [p.units for p in before]
    assert sum(p.pending for p in before) == result.computed
    rates = Rates(1e9, 1e9, 1e9, "cpu")
    files = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    after = plan_study(TINY, tmp_path, rates)
    assert [(p.units, p.pending, p.seconds) for p in after] == [(4, 0, 0), (6, 0, 0)]
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == files  # read only
    db = sqlite3.connect(tmp_path / "runs.db")  # one unit lost, its writer still open: one unit to compute
    db.execute("DELETE FROM study_units WHERE key LIKE 'concentration.KernelDraw/%' AND rowid = "
               "(SELECT MIN(rowid) FROM study_units WHERE key LIKE 'concentration.KernelDraw/%')")
    db.commit()
    again = plan_study(TINY, tmp_path, rates)
    db.close()
    assert again[0].pending == 1 and again[0].seconds > 0 and again[1].pending == 0
    assert plan_study(TINY, tmp_path, rates)[0].pending == 1  # and with the writer closed


def test_the_predicted_budget_is_the_theory_formula_on_numpy_h_star():
    """min(cap, c 2 log(sqrt(n)/tol) lambda_max/lambda), lambda from the arc-cosine kernel written in numpy."""
    X = sphere(6, 3, 1, 0).X
    G = X @ X.T
    units = X / np.linalg.norm(X, axis=1, keepdims=True)
    angle = np.arccos(np.clip(units @ units.T, -1, 1))
    values = np.linalg.eigvalsh(G * (np.pi - angle) / (2 * np.pi))
    expected = 3 * 2 * math.log(math.sqrt(6) / 1e-2) * values[-1] / values[0]
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, "theory:3", 10**9) == int(expected)
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, "theory:3", 7) == 7
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, 5, 10**9) == min(5, int(expected / 3))


def test_rates_turn_costs_into_seconds():
    rates = Rates(gd=2e9, gemm=4e9, dense=8e9, device="cpu")
    assert rates.seconds(Cost(gd=2e9, gemm=4e9, dense=8e9)) == pytest.approx(3.0)
    assert step_ops(10, 20, 3, 1) == 4 * 10 * 20 * 6
    measured = calibrate()
    assert all(value > 0 and math.isfinite(value) for value in (measured.gd, measured.gemm, measured.dense))


def test_plan_prints_and_exits_without_computing(tmp_path, overparam):
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    out = tmp_path / "not-made"
    shown = overparam("study", "--config", config, "--plan", "--out", out)
    assert shown.returncode == 0, shown.stderr
    assert "Plan on this machine" in shown.stdout and "NTK concentration" in shown.stdout
    assert not out.exists()
    data = json.loads(overparam("study", "--config", config, "--plan", "--json").stdout)["plan"]
    assert [(s["key"], s["units"], s["pending"]) for s in data["sections"]] == [("concentration", 4, 4),
                                                                                 ("threshold", 6, 6)]
    assert data["expected_seconds"] == pytest.approx(sum(s["seconds"] for s in data["sections"]))
    for preset in ("quick", "paper", "full"):
        listed = json.loads(overparam("study", "--preset", preset, "--plan", "--json", "--only", "threshold").stdout)
        section = listed["plan"]["sections"][0]
        assert section["key"] == "threshold" and section["units"] > 0 and section["seconds"] > 0


@pytest.mark.parametrize("args, message", [
    (("--preset", "huge"), "unknown preset"),
    (("--config", "missing.toml"), "no such file"),
    (("--only", "nothing"), "unknown section"),
])
def test_plan_refuses_bad_input_in_one_line(tmp_path, overparam, args, message):
    shown = overparam("study", *args, "--plan")
    assert shown.returncode == 2 and message in shown.stderr
    assert "Traceback" not in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
