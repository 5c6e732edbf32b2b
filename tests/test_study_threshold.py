"""The threshold study section (d): every column of its three tables and its summary facts recomputed here
from the raw runs (sqlite), a bootstrap and isotonic fit written as plain loops, numpy's eigvalsh of H*
written out in numpy (docs/mathematics.md#ntk), autograd kernels, and the proven widths' formulas written out."""

import csv
import json
import math
import sqlite3

import numpy as np
import pytest
import torch

from overparam.data import sphere
from overparam.models import initial_weights
from overparam.study import StudyConfig, run_study
from overparam.study.thresholds import KernelProfiles
from plain_thresholds import bootstrap, isotonic_threshold, percentiles

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, sections=("threshold",), settings={
    "threshold": {"ns": (4, 8), "widths": (2, 4, 8, 16, 32), "seeds": 2, "max_steps": 400,
                  "kernel_widths": tuple(2**p for p in range(3, 16)), "lambda_ns": (4, 8, 16)}}).validate()
CFG = TINY.section("threshold")
LEVEL = 1 - TINY.delta


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("threshold")
    result = run_study(TINY, out)
    return out, result.sections[0]


def read(out, stem: str) -> list[dict]:
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


def lam(activation: str, n: int) -> float:
    return float(np.linalg.eigvalsh(limit_kernel(activation, sphere(n, TINY.d, 1, 0).X))[0])


def shown(width: float) -> str:
    return "beyond grid" if math.isinf(width) else f"{width:g}"


def families(out) -> dict:
    """{(kind, activation, n): (widths, outcomes (widths, seeds), bootstrap seed)} from runs.db: the sweep's
    runs (converged or not) and the nested pass's stored distances (distance <= lambda/4). The bootstrap seed
    is the study seed plus the family's rank among its kind's families in sorted canonical-JSON order."""
    db = sqlite3.connect(out / "runs.db")
    found = {}
    rows = db.execute("SELECT config, width, seed, status FROM runs").fetchall()
    keys = sorted({json.dumps({k: v for k, v in json.loads(c).items() if k != "width"}, sort_keys=True)
                   for c, *_ in rows})
    for rank, key in enumerate(keys):
        config = json.loads(key)
        mine = [(json.loads(c)["width"], s, status == "converged") for c, _, s, status in rows
                if json.loads(c) == {**config, "width": json.loads(c)["width"]}]
        outcomes = np.array([[ok for w, s, ok in sorted(mine) if w == width] for width in CFG.widths], dtype=float)
        found["optimization", config["activation"], config["n"]] = (CFG.widths, outcomes, TINY.seed + rank)
    profiles = {}
    for seed in range(CFG.seeds):
        key = KernelProfiles(TINY.activations, CFG.ns, TINY.d, TINY.sigma, TINY.init, CFG.kernel_widths, seed).key
        (value,) = db.execute("SELECT value FROM study_units WHERE key = ?", (key,)).fetchone()
        for profile in json.loads(value)["profiles"]:
            profiles[profile["activation"], profile["n"], seed] = profile
    db.close()
    kernel_keys = sorted({json.dumps({"activation": a, "init": TINY.init, "n": n, "d": TINY.d}, sort_keys=True)
                          for a, n, _ in profiles})
    for rank, key in enumerate(kernel_keys):
        a, n = json.loads(key)["activation"], json.loads(key)["n"]
        mine = [profiles[a, n, s] for s in range(CFG.seeds)]
        # the pass measured on the sweep's own data: lambda = lambda_min(H*) written out here
        assert all(p["lam"] == pytest.approx(lam(a, n), rel=1e-10) for p in mine)
        outcomes = np.array([[p["distance"][i] <= p["lam"] / 4 for p in mine] for i in range(len(CFG.kernel_widths))],
                            dtype=float)
        found["kernel", a, n] = (CFG.kernel_widths, outcomes, TINY.seed + rank)
    return found


@pytest.fixture(scope="module")
def expected(section):
    """Every family's m*, bootstrap samples and interval, recomputed here."""
    out, _ = section
    result = {}
    for family, (widths, outcomes, seed) in families(out).items():
        samples = bootstrap(widths, outcomes, LEVEL, seed)
        result[family] = (widths, outcomes, isotonic_threshold(widths, outcomes.mean(1), LEVEL), samples)
    return result


def test_section_completes_with_its_figure_and_tables(section):
    out, result = section
    assert result.status == "complete" and result.reading
    assert (out / "figures" / "thresholds.png").read_bytes()[:4] == b"\x89PNG"
    # at each of the 3 points: relu 3 works + the kernel condition, exp and softmax 1 work + the kernel condition
    assert len(read(out, "lambda")) == 3 * (4 + 2 + 2)


def test_threshold_rows_against_the_raw_runs(section, expected):
    out, _ = section
    table = {(r["kind"], r["activation"], int(r["n"])): r for r in read(out, "thresholds")}
    assert set(table) == {(kind, a, n) for kind in ("optimization", "kernel") for a in TINY.activations for n in CFG.ns}
    for family, (widths, outcomes, m_star, samples) in expected.items():
        row = table[family]
        assert row["successes"] == " ".join(f"{int(k)}/{CFG.seeds}" for k in outcomes.sum(1))
        assert row["m*"] == shown(m_star)
        low, high = percentiles(samples)
        assert (row["low"], row["high"]) == (shown(low), shown(high))


def test_exponent_rows_against_polyfit_of_the_thresholds_and_their_resamples(section, expected):
    out, _ = section
    fits = {(r["kind"], r["activation"]): r for r in read(out, "threshold_exponents")}
    theory = {"relu": "DZPS19 6; SY19 4; MOSW22 2", "exp": "GMS23 2+o(1)", "softmax": "SMX24 2+o(1)"}
    checked = set()
    for kind in ("optimization", "kernel"):
        for a in TINY.activations:
            # uncensored: inside the grid and above its smallest width
            usable = [(n, expected[kind, a, n]) for n in CFG.ns
                      if math.isfinite(expected[kind, a, n][2]) and expected[kind, a, n][2] > expected[kind, a, n][0][0]]
            if len(usable) < 2:
                assert (kind, a) not in fits
                continue
            fit = fits[kind, a]
            x = np.log([n for n, _ in usable])
            slope, intercept = np.polyfit(x, np.log([e[2] for _, e in usable]), 1)
            assert int(fit["points"]) == len(usable)
            assert float(fit["p"]) == pytest.approx(slope, rel=1e-12, abs=1e-12)
            assert float(fit["C"]) == pytest.approx(math.exp(intercept), rel=1e-12)
            replicates = np.array([e[3] for _, e in usable]).T  # (bootstrap, n)
            slopes = [np.polyfit(x, np.log(r), 1)[0] for r in replicates if np.isfinite(r).all()]
            low, high = percentiles(slopes)
            assert float(fit["low"]) == pytest.approx(low, rel=1e-12, abs=1e-12)
            assert float(fit["high"]) == pytest.approx(high, rel=1e-12, abs=1e-12)
            assert fit["theory"] == (theory[a] if kind == "optimization" else
                                     "n^2 log(n/delta) / lambda^2, the kernel condition 2+o(1)")
            checked.add(kind)
    assert checked == {"optimization", "kernel"}


def proven(activation: str, n: int, lam: float, delta: float) -> dict:
    """The widths of docs/mathematics.md#predictions at constant 1, written out (GMS23's n^o(1) factor
    read as e^sqrt(2 log(n m / delta)) at m = its base width)."""
    base = n**2 * math.log(n / delta)
    exp_width = base * math.exp(math.sqrt(2 * math.log(n * base / delta)))
    works = {"relu": {"DZPS19": ("n^6 / (lambda^4 delta^3)", n**6 / (lam**4 * delta**3)),
                      "SY19": ("n^4 log^3(n / delta) / lambda^4", n**4 * math.log(n / delta) ** 3 / lam**4),
                      "MOSW22": ("n^2", n**2)},
             "exp": {"GMS23": ("n^(2+o(1)) log(n / delta), o(1) read as e^sqrt(2 log(n m / delta))", exp_width)},
             "softmax": {"SMX24": ("as GMS23 (poly(n, d))", exp_width)}}[activation]
    return {**works, "kernel condition": ("n^2 log(n/delta) / lambda^2", base / lam**2)}


def test_lambda_rows_against_eigvalsh_and_the_written_out_widths(section):
    out, _ = section
    rows = read(out, "lambda")
    points = sorted(set(CFG.lambda_ns) | set(CFG.ns))
    assert sorted({(r["activation"], int(r["n"])) for r in rows}) == sorted(
        (a, n) for a in TINY.activations for n in points)
    for activation in TINY.activations:
        for n in points:
            mine = {r["work"]: r for r in rows if r["activation"] == activation and int(r["n"]) == n}
            reference = lam(activation, n)
            expected = proven(activation, n, reference, TINY.delta)
            assert list(mine) == list(expected)
            for work, (formula, value) in expected.items():
                row = mine[work]
                # eigvalsh of two float64 H* that differ in the last bits: lambda to ~1e-15 ||H*|| / lambda
                assert float(row["lambda"]) == pytest.approx(reference, rel=1e-10)
                assert row["method"] == "dense" and row["width order"] == formula
                # lambda enters as lambda^-4 at most: 4x its relative error
                assert float(row["value"]) == pytest.approx(value, rel=4e-10)


def test_facts_follow_the_recomputed_numbers(section, expected):
    _, result = section
    facts = {(f.activation, f.quantity): f for f in result.facts}
    assert all(f.section == "threshold" for f in result.facts)
    points = sorted(set(CFG.lambda_ns) | set(CFG.ns))
    for a in TINY.activations:
        q = np.polyfit(np.log(points), np.log([lam(a, n) for n in points]), 1)[0]
        assert facts[a, "lambda(n) decay exponent q (lambda ~ n^q)"].value == pytest.approx(q, rel=1e-9)
        assert facts[a, "proven widths (orders of growth)"].value == {
            "relu": "DZPS19 n^6; SY19 n^4; MOSW22 n^2", "exp": "GMS23 n^2+o(1)", "softmax": "SMX24 n^2+o(1)"}[a]
    exponents = {(r["kind"], r["activation"]): r for r in read(section[0], "threshold_exponents")}
    for (kind, a), row in exponents.items():
        fact = facts[a, {"optimization": "m*_opt exponent p (m* ~ C n^p)",
                           "kernel": "m*_ker exponent p (m* ~ C n^p)"}[kind]]
        assert (fact.value, fact.low, fact.high) == (float(row["p"]), float(row["low"]), float(row["high"]))


def autograd_kernel(activation: str, W: torch.Tensor, a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """H(W) = J J^T / m with J = dF/dW of F(W, X) written out (docs/mathematics.md#networks, kappa = 1:
    the normalised kernel does not depend on kappa), by autograd."""

    def forward(V):
        Z = X @ V.T
        if activation == "relu":
            return (torch.relu(Z) @ a)[:, 0]
        if activation == "exp":
            return (torch.exp(Z) @ a)[:, 0]
        return (V.shape[0] * torch.softmax(Z, dim=1) @ a)[:, 0]

    J = torch.autograd.functional.jacobian(forward, W).reshape(X.shape[0], -1)
    return J @ J.T / W.shape[0]


def test_kernel_distances_against_autograd_kernels_of_the_seeds_first_neurons(section):
    """The stored ||H(W(0)) - H*||_2 that decide the kernel threshold, for every activation at the largest n
    and three widths: H of the first m neurons of seed 0's draw at the largest width (the nested widths share
    their first rows) by autograd in float64, H* written out in numpy, the norm by eigvalsh."""
    out, _ = section
    key = KernelProfiles(TINY.activations, CFG.ns, TINY.d, TINY.sigma, TINY.init, CFG.kernel_widths, 0).key
    db = sqlite3.connect(out / "runs.db")
    (value,) = db.execute("SELECT value FROM study_units WHERE key = ?", (key,)).fetchone()
    db.close()
    n = max(CFG.ns)
    stored = {p["activation"]: p["distance"] for p in json.loads(value)["profiles"] if p["n"] == n}
    X = sphere(n, TINY.d, 1, 0).X
    W, a = initial_weights(max(CFG.kernel_widths), TINY.d, 1, TINY.init, TINY.sigma, 0)
    for activation in TINY.activations:
        limit = limit_kernel(activation, X)
        for index in (0, len(CFG.kernel_widths) // 2, len(CFG.kernel_widths) - 1):
            m = CFG.kernel_widths[index]
            H = autograd_kernel(activation, W[:m], a[:m], torch.from_numpy(X)).numpy()
            distance = np.abs(np.linalg.eigvalsh(H - limit)).max()
            # the pass runs float32 chunk products with float64 sums (nested_ntk's mixed precision): within
            # 2e-6 ||H*||_2, the tolerance tests/test_nested_ntk.py states for it
            assert abs(stored[activation][index] - distance) <= 2e-6 * np.linalg.norm(limit, 2)
