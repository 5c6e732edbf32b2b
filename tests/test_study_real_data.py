"""The real-data study section: its tables against direct train() calls, numpy kernels and solves written
here, and an isotonic fit and seed bootstrap of the raw runs written as plain loops; its verdict and
summary fact against the tables."""

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from overparam import TwoLayerNet, train
from overparam.data import digits, unit_sphere
from overparam.study import StudyConfig, run_study
from overparam.sweep import Store
from plain_thresholds import bootstrap, isotonic_threshold, percentiles

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
    """H* at sigma = 1 (docs/mathematics.md#ntk), the relu angle as 2 atan2(|u - v|, |u + v|) (accurate near 0)."""
    G = X @ X.T
    if activation == "relu":
        units = X / np.linalg.norm(X, axis=1, keepdims=True)
        angle = 2 * np.arctan2(np.linalg.norm(units[:, None] - units[None], axis=2),
                               np.linalg.norm(units[:, None] + units[None], axis=2))
        return G * (np.pi - angle) / (2 * np.pi)
    if activation == "exp":
        return G * np.exp(np.linalg.norm(X[:, None] + X[None], axis=2) ** 2 / 2)
    return G * np.exp(G)


def test_section_completes_with_its_figures_and_tables(section):
    out, result = section
    assert result.status == "complete" and result.reading
    for stem in ("real_data_training", "real_data_kernels"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0 and (out / "figures" / f"{stem}.svg").exists()
    assert len(table(out, "real_data_complexity")) == len(TINY.activations) * len(TINY.section("real_data").ns)


def test_training_rows_match_direct_train_calls(section):
    """Every activation's two rows against `train` run seed by seed (the section trains them as one batch)."""
    out, _ = section
    cfg = TINY.section("real_data")
    rows = {(r["activation"], r["labels"]): r for r in table(out, "real_data_training")}
    assert set(rows) == {(a, labels) for a in TINY.activations for labels in ("true", "random")}
    dataset = digits(cfg.classes, n=cfg.train_n, seed=TINY.seed)
    # random labels: +-1, each uniform, from the generator seeded [seed, draw 0]
    labels = {"true": dataset.y,
              "random": np.array([-1.0, 1.0])[np.random.default_rng([TINY.seed, 0]).integers(2, size=(16, 1))]}
    for activation in TINY.activations:
        for name, y in labels.items():
            histories = [train(TwoLayerNet(64, cfg.width, 1, activation, init="coupled", seed=seed), dataset.X, y,
                               lr="auto", steps=cfg.steps, tol=TINY.tol) for seed in range(cfg.seeds)]
            steps = [h.steps for h in histories]
            row = rows[activation, name]
            assert row["converged"] == f"{sum(h.status == 'converged' for h in histories)}/{cfg.seeds}"
            assert float(row["steps"]) == np.mean(steps)
            assert float(row["± se"]) == pytest.approx(np.std(steps, ddof=1) / np.sqrt(cfg.seeds), rel=1e-12)
            # one batch against single runs: matrix products summed in another order, over up to 300 steps
            assert float(row["final ||F - y||"]) == pytest.approx(np.mean([h.residual_norm[-1] for h in histories]),
                                                                  rel=1e-9)
            assert float(row["lr"]) == pytest.approx(np.mean([h.lr for h in histories]), rel=1e-12)


def test_complexity_and_lambda_rows_match_numpy(section):
    """Every row (every activation and n): the complexity term by numpy solves of H* written out here, its
    random-label mean and standard error, lambda_min by eigvalsh, and the two ratios."""
    out, _ = section
    cfg = TINY.section("real_data")
    rows = table(out, "real_data_complexity")
    assert [(r["activation"], int(r["n"])) for r in rows] == [(a, n) for a in TINY.activations for n in cfg.ns]
    for row in rows:
        activation, n = row["activation"], int(row["n"])
        dataset = digits(cfg.classes, n=n, seed=TINY.seed)
        H = limit_kernel(activation, dataset.X)
        term = [np.sqrt(2 * y[:, 0] @ np.linalg.solve(H, y[:, 0]) / n) for y in [dataset.y] + [
            np.array([-1.0, 1.0])[np.random.default_rng([TINY.seed, j]).integers(2, size=(n, 1))]
            for j in range(cfg.label_draws)]]
        random, error = np.mean(term[1:]), np.std(term[1:], ddof=1) / np.sqrt(len(term) - 1)
        lam_digits = np.linalg.eigvalsh(H)[0]
        lam_sphere = np.linalg.eigvalsh(limit_kernel(activation, unit_sphere(n, 64, TINY.seed)))[0]
        # two float64 constructions of H* differ by ~1e-16 relative per entry; the solves and the smallest
        # eigenvalue amplify that by the condition number of H* (up to ~1e4 here): 1e-10 leaves a margin
        assert float(row["complexity true"]) == pytest.approx(term[0], rel=1e-10)
        assert float(row["complexity random"]) == pytest.approx(random, rel=1e-10)
        # a difference of nearly equal terms (the draws' spread is ~10% of their mean): 1e-8
        assert float(row["± se"]) == pytest.approx(error, rel=1e-8)
        assert float(row["random / true"]) == pytest.approx(random / term[0], rel=1e-10)
        assert float(row["lambda_min digits"]) == pytest.approx(lam_digits, rel=1e-10)
        assert float(row["lambda_min sphere"]) == pytest.approx(lam_sphere, rel=1e-10)
        assert float(row["sphere / digits"]) == pytest.approx(lam_sphere / lam_digits, rel=1e-10)


def test_threshold_rows_match_a_plain_fit_and_bootstrap_of_the_raw_runs(section):
    """m* by an isotonic fit of the success rates, [low, high] by the seed bootstrap (seeded with the study
    seed plus the family's rank among its data set's families in sorted canonical-JSON order), and the runs
    the step cap stopped unconverged, for every activation and n on both data sets."""
    out, _ = section
    cfg = TINY.section("real_data")
    level = 1 - TINY.delta
    with Store(out / "runs.db", create=False) as store:
        runs = store.runs(d=64)
    rows = {(r["activation"], int(r["n"])): r for r in table(out, "real_data_thresholds")}
    assert list(rows) == [(a, n) for a in TINY.activations for n in cfg.threshold_ns]
    for data, name in (("digits:classes=3,5", "digits"), ("sphere", "sphere")):
        mine = [r for r in runs if r["config"]["data"] == data]
        keys = sorted({json.dumps({k: v for k, v in r["config"].items() if k != "width"}, sort_keys=True)
                       for r in mine})
        assert len(keys) == len(rows)
        for rank, key in enumerate(keys):
            family = [r for r in mine if {**r["config"], "width": 0} == {**json.loads(key), "width": 0}]
            row = rows[family[0]["activation"], family[0]["n"]]
            outcomes = np.array([[r["status"] == "converged" for r in sorted(family, key=lambda r: r["seed"])
                                  if r["width"] == w] for w in cfg.threshold_widths], dtype=float)
            assert outcomes.shape == (len(cfg.threshold_widths), cfg.threshold_seeds)
            low, high = percentiles(bootstrap(cfg.threshold_widths, outcomes, level, TINY.seed + rank))
            assert float(row[f"m* {name}"]) == isotonic_threshold(cfg.threshold_widths, outcomes.mean(1), level)
            cut = sum(r["status"] == "max_steps" and r["steps"] == cfg.max_steps for r in family)
            assert row[f"cut {name}"] == f"{cut}/{len(family)}"
            assert interval(out, row, name) == (low, high)


def interval(out, row: dict, name: str) -> tuple[float, float]:
    """(low, high) of data set `name` in the row (the CSV repeats the headers low and high per data set)."""
    with open(out / "tables" / "real_data_thresholds.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    header = lines[0]
    for line in lines[1:]:
        if line[header.index("activation")] == row["activation"] and line[header.index("n")] == row["n"]:
            at = header.index(f"m* {name}")
            return float(line[at + 1]), float(line[at + 2])
    raise AssertionError(f"no row for {row['activation']} n = {row['n']}")


def test_the_fact_is_the_ratio_at_the_largest_n(section):
    out, result = section
    ratios = {r["activation"]: float(r["random / true"]) for r in table(out, "real_data_complexity")}
    facts = {f.activation: f for f in result.facts}
    assert set(facts) == set(TINY.activations)
    for activation, fact in facts.items():
        assert fact.section == "real_data" and fact.value == ratios[activation]
        assert fact.quantity == f"complexity random / true on digits at n = {max(TINY.section('real_data').ns)}"


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
