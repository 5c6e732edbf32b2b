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
from overparam.study.plan import Cost, Rates, calibrate, plan_study, predicted_steps, step_ops, unit_cost

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
    """min(cap, c 2 log(sqrt(n)/tol) lambda_max/lambda), lambda from the arc-cosine kernel written in numpy; a
    fixed budget is planned whole."""
    X = sphere(6, 3, 1, 0).X
    G = X @ X.T
    units = X / np.linalg.norm(X, axis=1, keepdims=True)
    angle = np.arccos(np.clip(units @ units.T, -1, 1))
    values = np.linalg.eigvalsh(G * (np.pi - angle) / (2 * np.pi))
    expected = 3 * 2 * math.log(math.sqrt(6) / 1e-2) * values[-1] / values[0]
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, "theory:3", 10**9) == int(expected)
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, "theory:3", 7) == 7
    assert predicted_steps("relu", "sphere", 6, 3, 1, 0, 1.0, 1e-2, 5, 10**9) == 5  # a fixed budget: all of it


def test_rates_turn_costs_into_seconds():
    rates = Rates(gd=2e9, gemm=4e9, dense=8e9, device="cpu", step=1e-3, call=0.25)
    assert rates.seconds(Cost(gd=2e9, gemm=4e9, dense=8e9, steps=500, calls=4)) == pytest.approx(3.0 + 0.5 + 1.0)
    assert Cost().calls == 1 and Cost().steps == 0  # every unit is one call unless its model says more
    assert step_ops(10, 20, 3, 1) == 4 * 10 * 20 * 6
    measured = calibrate()
    assert all(value > 0 and math.isfinite(value)
               for value in (measured.gd, measured.gemm, measured.dense, measured.step, measured.call))
    assert measured.step < measured.call  # one GD step of a width-4 network costs less than a whole unit


#: Rates where only one overhead costs anything: operations are free.
FREE = 1e300


def seconds_by_section(config, rates) -> dict:
    return {p.key: p.seconds for p in plan_study(config, None, rates)}


def test_the_call_overhead_grows_by_k_times_the_overhead_for_k_more_units():
    """Concentration: activations x widths x seeds KernelDraw units, one call each; threshold: a width scan is
    one call per width and one for the unit, a kernel scan one per n and one for the unit, lambda(n) one."""
    rates = Rates(FREE, FREE, FREE, "cpu", step=0.0, call=0.5)
    small = seconds_by_section(TINY, rates)
    large = seconds_by_section(TINY.with_settings("concentration", seeds=7), rates)
    assert small["concentration"] == pytest.approx(0.5 * 1 * 2 * 2, rel=1e-12)
    assert large["concentration"] - small["concentration"] == pytest.approx(0.5 * 1 * 2 * (7 - 2), rel=1e-12)
    cfg = TINY.section("threshold")
    points = {(n, TINY.d) for n in cfg.ns} | {(n, d) for n in cfg.dimension_ns for d in cfg.dimension_ds}
    width_scans = len(points) * cfg.draws * (1 + len(cfg.widths))
    kernel_scans = cfg.draws * cfg.seeds * (1 + len(cfg.kernel_ns))
    lambdas = len(set(cfg.lambda_ns) | set(cfg.ns) | set(cfg.kernel_ns))
    assert small["threshold"] == pytest.approx(0.5 * (width_scans + kernel_scans + lambdas), rel=1e-12)
    wider = seconds_by_section(TINY.with_settings("threshold", widths=(2, 4, 8, 16, 32)), rates)
    assert wider["threshold"] - small["threshold"] == pytest.approx(0.5 * len(points) * cfg.draws * 3, rel=1e-12)


def test_the_step_overhead_counts_one_step_per_width_for_all_seeds_of_a_scan():
    """With a one-step cap every width of a width scan is one batched GD step, whatever the seeds; a training
    run of the training section (a fixed budget) is planned at its whole budget, and the laziness section, whose
    runs are the training section's, at nothing."""
    rates = Rates(FREE, FREE, FREE, "cpu", step=1e-3, call=0.0)
    one_step = TINY.with_settings("threshold", max_steps=1)
    cfg = one_step.section("threshold")
    points = {(n, TINY.d) for n in cfg.ns} | {(n, d) for n in cfg.dimension_ns for d in cfg.dimension_ds}
    expected = 1e-3 * len(points) * cfg.draws * len(cfg.widths)
    assert seconds_by_section(one_step, rates)["threshold"] == pytest.approx(expected, rel=1e-12)
    more_seeds = one_step.with_settings("threshold", seeds=5)
    assert seconds_by_section(more_seeds, rates)["threshold"] == pytest.approx(expected, rel=1e-12)
    shared = {"n": 6, "widths": (8, 16), "seeds": 3, "steps": 7}
    trained = StudyConfig(activations=("relu",), d=3, sections=("training", "laziness"),
                          settings={"training": shared, "laziness": shared}).validate()
    plans = plan_study(trained, None, rates)
    assert [p.seconds for p in plans] == pytest.approx([1e-3 * 7 * 2, 0.0], rel=1e-12)  # laziness reuses them
    assert [p.pending for p in plans] == [2, 2]


def test_the_plan_names_the_group_of_units_where_the_time_goes():
    rates = Rates(FREE, FREE, FREE, "cpu", step=0.0, call=1.0)
    [concentration, threshold] = plan_study(TINY, None, rates)
    assert concentration.dominant == "100% in KernelDraw activation=relu n=6 d=3 (4 units)"
    cfg = TINY.section("threshold")
    # groups by kind, activation, n, d: each width scan (n = 4, 6 at d = 3, one draw) and each lambda point is
    # its own group; the kernel scans (every n in one unit) form one group of draws x seeds units
    kernel = cfg.draws * cfg.seeds * (1 + len(cfg.kernel_ns))
    total = 2 * (1 + len(cfg.widths)) + kernel + 2
    assert (kernel, total) == (6, 14)
    assert threshold.seconds == pytest.approx(total, rel=1e-12)
    assert threshold.bounded == pytest.approx(total - 2, rel=1e-12)  # all but the two lambda points are scans
    assert concentration.bounded == 0.0
    units = cfg.draws * cfg.seeds
    assert threshold.dominant == f"{kernel / total:.0%} in KernelScan activation=relu d=3 ({units} units)"


def test_plan_prints_and_exits_without_computing(tmp_path, overparam):
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    out = tmp_path / "not-made"
    shown = overparam("study", "--config", config, "--plan", "--out", out)
    assert shown.returncode == 0, shown.stderr
    assert "Plan on this machine" in shown.stdout and "NTK concentration" in shown.stdout
    assert "concentration: 100% in KernelDraw activation=relu n=6 d=3 (4 units)" in shown.stdout
    assert not out.exists()
    data = json.loads(overparam("study", "--config", config, "--plan", "--json").stdout)["plan"]
    assert [(s["key"], s["units"], s["pending"]) for s in data["sections"]] == [("concentration", 4, 4),
                                                                                 ("threshold", 6, 6)]
    assert data["expected_seconds"] == pytest.approx(sum(s["seconds"] for s in data["sections"]))
    assert data["upper_bound_seconds"] == pytest.approx(sum(s["bounded"] for s in data["sections"]))
    assert 0 < data["upper_bound_seconds"] < data["expected_seconds"]
    assert data["overheads_ms"]["gd_step"] > 0 and data["overheads_ms"]["call"] > 0
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


def test_the_verdict_says_which_part_of_a_plan_over_its_goal_is_an_upper_bound():
    """Within the goal; over it only through the width scans' upper bounds (the rest fits); over it anyway."""
    from overparam.cli.study import _verdict

    assert _verdict(600, 500, 400) == "within it"
    bounded = _verdict(600, 1400, 1000)
    assert bounded.startswith("beyond it as an upper bound only: 16.7 min of it are width scans")
    assert "the rest (6.7 min) is within it" in bounded
    assert _verdict(600, 1400, 100).startswith("beyond it: shrink")


def test_lambda_points_above_the_dense_limit_cost_the_solver_that_will_run(monkeypatch):
    """Where H* and its factor fit, lambda_min comes from a Cholesky factor: n^3/3 flops beside the triangular
    solves and H*'s entries (640 n^2); where they do not, the matrix-free products alone."""
    from overparam.kernels import eigensolvers
    from overparam.study.thresholds import LambdaPoint

    n = 20_000
    monkeypatch.setattr(eigensolvers, "available_memory", lambda device: 1 << 40)
    assert unit_cost(LambdaPoint("relu", n, 16, 1.0)) == Cost(gemm=n**3 / 3 + 640.0 * n**2)
    monkeypatch.setattr(eigensolvers, "available_memory", lambda device: eigensolvers.dense_bytes(n))
    assert unit_cost(LambdaPoint("relu", n, 16, 1.0)) == Cost(gemm=640.0 * n**2)
    assert unit_cost(LambdaPoint("relu", 100, 16, 1.0)) == Cost(dense=10.0 * 100**3)
