"""One way to measure a threshold (issue 22, part 5): a sweep run from the command line, read by
`overparam threshold`, and the study's threshold section on the same settings report the same kernel and
optimisation thresholds, intervals and success counts; the sweep's nested profiles are the study's
distances; and the sweep's kernel_widths key is checked and resumed."""

import csv
import json
import math

import pytest

from overparam.study import StudyConfig, run_study
from overparam.sweep import run_sweep
from overparam.sweep.store import Store

KERNEL_WIDTHS = tuple(2**p for p in range(3, 13))
STUDY = StudyConfig(activations=("relu", "softmax"), d=4, tol=1e-2, delta=0.5, sections=("threshold",), settings={
    "threshold": {"ns": (4, 8), "kernel_ns": (4, 8), "widths": (2, 4, 8, 16), "draws": 1, "seeds": 3,
                  "max_steps": 400, "kernel_widths": KERNEL_WIDTHS, "dimension_ds": (4,), "dimension_ns": (4, 8),
                  "lambda_ns": (4, 8)}}).validate()
SWEEP = ["--activations", "relu,softmax", "--widths", "2,4,8,16", "--n", "4,8", "--d", "4", "--seeds", "3",
         "--tol", "1e-2", "--steps", "theory:3", "--max-steps", "400",
         "--kernel-widths", ",".join(map(str, KERNEL_WIDTHS))]


def shown(width: float) -> str:
    width = float(width)  # the JSON writes inf as "inf"
    return "beyond grid" if math.isinf(width) else f"{width:g}"


def test_a_command_line_sweep_and_the_study_agree(tmp_path, overparam):
    run_study(STUDY, tmp_path / "study")
    with open(tmp_path / "study" / "tables" / "thresholds.csv", newline="", encoding="utf-8") as handle:
        study = {(row["kind"], row["activation"], int(row["n"])): row for row in csv.DictReader(handle)
                 if row["data_draw"] == "0"}  # draw 0: the sweep's data seed and weight seeds 0, 1, 2

    store = tmp_path / "sweep" / "runs.db"
    swept = overparam("sweep", *SWEEP, "--store", store, "--json")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout)["kernel_profiles"] == 2 * 2 * 3  # activations x n x seeds
    found = overparam("threshold", store, "--delta", "0.5", "--json", "--no-figure")
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)["thresholds"]
    assert len(report) == len(study) == 2 * 2 * 2
    for t in report:
        row = study[t["kind"], t["activation"], t["n"]]
        assert t["widths"] == (list(KERNEL_WIDTHS) if t["kind"] == "kernel" else [2, 4, 8, 16])
        # the same estimator on the same outcomes: the same m*; the intervals come from different bootstrap
        # streams (the study's seeds derive from its series), so they are not compared
        assert shown(t["threshold"]) == row["m*"]
        # the study ends a seed's scan after two successive successes and counts the widths above as
        # successes: equal to the sweep's counts wherever success stays (as here) monotone in m
        assert " ".join(f"{s}/{r}" for s, r in zip(t["successes"], t["runs"])) == row["successes"]
    # at least one kernel threshold inside the grid
    assert any(t["kind"] == "kernel" and math.isfinite(float(t["threshold"])) for t in report)

    with Store(store, create=False) as runs:  # the sweep's distances are the study's, seed by seed
        profiles = {(p.family["activation"], p.family["n"], p.seed): p for p in runs.profiles()}
    with Store(tmp_path / "study" / "runs.db", create=False) as runs:
        rows = runs.db.execute("SELECT value FROM study_units WHERE key LIKE 'thresholds.KernelScan/%'").fetchall()
    scans = [scan for (value,) in rows for scan in json.loads(value)["scans"] if not scan["skipped"]]
    assert len(rows) == 2 * 3 and scans  # activations x seeds, one draw
    for scan in scans:  # each study scan is a prefix of one sweep profile at its n (float64 sums, same products)
        matches = [p for (a, n, s), p in profiles.items() if n == scan["n"]
                   and p.distance[:len(scan["distance"])] == pytest.approx(scan["distance"], rel=1e-12)]
        assert len(matches) == 1 and matches[0].lam == pytest.approx(scan["lam"], rel=1e-12)


def test_kernel_widths_are_checked_skipped_and_resumed(tmp_path, overparam):
    store = tmp_path / "runs.db"
    base = {"activations": ["relu"], "widths": [4, 8], "n": [4], "d": 3, "seeds": 2, "steps": 20}
    counts = run_sweep({**base, "kernel_widths": "none"}, store)
    assert counts.profiles == 0 and counts.done == 4
    with Store(store) as runs:
        assert runs.profiles() == []
    counts = run_sweep(base, store)  # default: the sweep's widths; the runs are reused
    assert counts.profiles == 2 and counts.skipped == 4
    with Store(store) as runs:
        assert sorted(p.seed for p in runs.profiles()) == [0, 1]
        assert all(p.widths == [4, 8] for p in runs.profiles())
    assert run_sweep(base, store).profiles == 0  # resumed: nothing left to measure
    assert run_sweep({**base, "kernel_widths": [4, 8, 16]}, store).profiles == 2  # a new grid replaces the old
    with Store(store) as runs:
        assert all(p.widths == [4, 8, 16] for p in runs.profiles())
    for value, message in (([8, 4], "increasing"), ([4, 7], "even"), ([0, 4], "positive")):
        bad = overparam("sweep", "--activations", "relu", "--widths", "4,8", "--n", "4", "--kernel-widths",
                        ",".join(map(str, value)), "--store", tmp_path / "bad.db")
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_a_profile_that_cannot_be_computed_is_recorded_as_no_success(tmp_path):
    """exp with sigma = 3000 overflows H*: the sweep goes on, the profile holds NaN and the error, and the
    kernel threshold counts it as a failure at every width."""
    store = tmp_path / "runs.db"
    run_sweep({"activations": ["exp", "relu"], "widths": [8], "n": [4], "d": 3, "seeds": 2, "sigma": 3000.0,
               "steps": 5}, store)
    with Store(store) as runs:
        profiles = runs.profiles(activation="exp")
    assert len(profiles) == 2 and all(p.error and math.isnan(p.distance[0]) and math.isnan(p.lam) for p in profiles)
    from overparam.sweep.analysis import thresholds

    kernel = [t for t in thresholds(store, bootstrap=20).thresholds if t.kind == "kernel"]
    exp = next(t for t in kernel if t.family["activation"] == "exp")
    assert exp.successes == [0] and exp.runs == [2] and math.isinf(exp.width)
