"""The real-data study section: its tables against direct train() calls, numpy kernels and solves written
here, and scikit-learn's isotonic regression on the raw runs; its verdict against the tables."""

import csv
import math
from dataclasses import replace

import numpy as np
import pytest

from overparam import TwoLayerNet, train
from overparam.data import digits, unit_sphere
from overparam.study import StudyConfig, run_study
from overparam.sweep import Store

TINY = StudyConfig(activations=("relu", "exp", "softmax"), tol=1e-2, delta=0.5, sections=("real_data",), settings={
    "real_data": {"budget": "theory:3", "max_steps": 300, "ns": (12, 24), "label_draws": 3, "train_n": 16, "width": 32,
                  "seeds": 2, "steps": 300, "threshold_ns": (8, 16), "threshold_widths": (2, 4, 8),
                  "threshold_seeds": 2}}).validate()


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_data")
    result = run_study(TINY, out)
    return out, result.sections[0]


def table(out, stem: str) -> list[dict]:
    with open(out / "tables" / f"{stem}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def limit_kernel(activation: str, X: np.ndarray) -> np.ndarray:
    """H* (SPEC §4, sigma = 1) written out in numpy."""
    G = X @ X.T
    if activation == "relu":
        norms = np.sqrt(np.diag(G))
        cosine = np.clip(G / np.outer(norms, norms), -1, 1)
        np.fill_diagonal(cosine, 1.0)  # exactly: arccos near 1 turns a rounding error e into sqrt(2e)
        return G * (np.pi - np.arccos(cosine)) / (2 * np.pi)
    if activation == "exp":
        squared = np.diag(G)[:, None] + np.diag(G)[None, :] + 2 * G
        return G * np.exp(squared / 2)
    return G * np.exp(G)


def test_section_completes_with_its_figures_and_tables(section):
    out, result = section
    assert result.status == "complete" and result.reading
    for stem in ("real_data_training", "real_data_kernels"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0 and (out / "figures" / f"{stem}.svg").exists()
    assert len(table(out, "real_data_complexity")) == len(TINY.activations) * len(TINY.section("real_data").ns)


def test_training_rows_match_direct_train_calls(section):
    out, _ = section
    rows = {(r["activation"], r["labels"]): r for r in table(out, "real_data_training")}
    dataset = digits(TINY.section("real_data").classes, n=TINY.section("real_data").train_n, seed=TINY.seed)
    # random labels: +-1, each uniform, from the generator seeded [seed, draw 0]
    labels = {"true": dataset.y,
              "random": np.array([-1.0, 1.0])[np.random.default_rng([TINY.seed, 0]).integers(2, size=(16, 1))]}
    for name, y in labels.items():
        steps, finals, converged = [], [], 0
        for seed in range(TINY.section("real_data").seeds):
            net = TwoLayerNet(64, TINY.section("real_data").width, 1, "softmax", init="coupled", seed=seed)
            history = train(net, dataset.X, y, lr="auto", steps=TINY.section("real_data").steps, tol=TINY.tol)
            steps.append(history.steps)
            finals.append(history.residual_norm[-1])
            converged += history.status == "converged"
        row = rows["softmax", name]
        assert row["converged"] == f"{converged}/{TINY.section('real_data').seeds}"
        assert float(row["steps"]) == pytest.approx(np.mean(steps), abs=0.5)
        assert float(row["final ||F - y||"]) == pytest.approx(np.mean(finals), rel=1e-6)


def test_complexity_and_lambda_rows_match_numpy(section):
    out, _ = section
    for row in table(out, "real_data_complexity"):
        activation, n = row["activation"], int(row["n"])
        dataset = digits(TINY.section("real_data").classes, n=n, seed=TINY.seed)
        H = limit_kernel(activation, dataset.X)
        term = [np.sqrt(2 * y[:, 0] @ np.linalg.solve(H, y[:, 0]) / n) for y in [dataset.y] + [
            np.array([-1.0, 1.0])[np.random.default_rng([TINY.seed, j]).integers(2, size=(n, 1))]
            for j in range(TINY.section("real_data").label_draws)]]
        # 1e-8: ntk.infinite_ntk's relu diagonal is off by up to ~3e-9 (arccos of a rho rounded below 1)
        assert float(row["complexity true"]) == pytest.approx(term[0], rel=1e-8)
        assert float(row["complexity random"]) == pytest.approx(np.mean(term[1:]), rel=1e-8)
        assert float(row["± se"]) == pytest.approx(np.std(term[1:], ddof=1) / np.sqrt(len(term) - 1), rel=1e-6)
        assert float(row["lambda_min digits"]) == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-8)
        sphere = limit_kernel(activation, unit_sphere(n, 64, TINY.seed))
        assert float(row["lambda_min sphere"]) == pytest.approx(np.linalg.eigvalsh(sphere)[0], rel=1e-8)


def test_threshold_rows_match_an_isotonic_fit_of_the_raw_runs(section):
    from sklearn.isotonic import IsotonicRegression

    out, _ = section
    with Store(out / "runs.db", create=False) as store:
        runs = [r for r in store.runs(d=64) if r["width"] in TINY.section("real_data").threshold_widths]
    checked = 0
    for row in table(out, "real_data_thresholds"):
        for data, column in (("digits:classes=3,5", "m* digits"), ("sphere", "m* sphere")):
            mine = [r for r in runs if r["config"]["data"] == data and r["activation"] == row["activation"]
                    and r["n"] == int(row["n"])]
            widths = sorted({r["width"] for r in mine})
            assert widths == list(TINY.section("real_data").threshold_widths)
            rates = [np.mean([r["status"] == "converged" for r in mine if r["width"] == w]) for w in widths]
            fitted = IsotonicRegression().fit_transform(np.log(widths), rates)
            reached = [w for w, f in zip(widths, fitted) if f >= 1 - TINY.delta - 1e-12]
            assert float(row[column]) == (reached[0] if reached else math.inf)
            cut = sum(r["status"] == "max_steps" and r["steps"] == TINY.section("real_data").max_steps for r in mine)
            assert row[column.replace("m*", "cut")] == f"{cut}/{len(mine)}"
            checked += 1
    assert checked == 2 * len(TINY.activations) * len(TINY.section("real_data").threshold_ns)


def test_the_verdict_follows_the_tables(section):
    out, result = section
    training = {(r["activation"], r["labels"]): r for r in table(out, "real_data_training")}
    kernels = table(out, "real_data_complexity")
    both = []
    for activation in TINY.activations:
        true, rand = training[activation, "true"], training[activation, "random"]
        slower = float(rand["steps"]) > float(true["steps"]) + 2 * math.hypot(float(true["± se"]), float(rand["± se"]))
        larger = all(float(r["complexity random"]) - 2 * float(r["± se"]) > float(r["complexity true"])
                     for r in kernels if r["activation"] == activation)
        if slower and larger:
            both.append(activation)
    verdict = result.reading[-1]
    if both:
        assert f"appears here for {', '.join(both)}" in verdict
    else:
        assert "does not appear here for any activation" in verdict


def test_rerun_reuses_the_section(section, tmp_path):
    import shutil

    out, _ = section
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    again = run_study(replace(TINY), copy)
    assert again.computed == 0 and table(copy, "real_data_complexity") == table(out, "real_data_complexity")
