"""The threshold study section (d): every table and summary fact recomputed here from the raw runs (sqlite)
and the stored kernel scans: the width-scan rule, each draw's isotonic threshold and seed bootstrap, the
log-median over draws and its hierarchical bootstrap written as plain loops (pool-adjacent-violators,
resampling loops), the exponents by numpy.polyfit and numpy.linalg.lstsq on the tables' own rows, lambda by
numpy's eigvalsh of H* written out (docs/mathematics.md#ntk), kernel distances by autograd, and the proven
widths' formulas written out."""

import csv
import json
import math
import sqlite3
import zlib

import numpy as np
import pytest
import torch

from overparam.data import sphere
from overparam.models import initial_weights
from overparam.study import StudyConfig, run_study
from overparam.study.thresholds import SEED_STRIDE, KernelScan
from plain_thresholds import bootstrap, percentiles

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, sections=("threshold",), settings={
    "threshold": {"ns": (4, 8), "kernel_ns": (4, 8), "widths": (2, 4, 8, 16, 32), "draws": 2, "seeds": 2,
                  "max_steps": 400, "kernel_widths": tuple(2**p for p in range(3, 14)), "lambda_ns": (4, 8),
                  "dimension_ds": (2, 4), "dimension_ns": (4, 8)}}).validate()
CFG = TINY.section("threshold")
LEVEL = 1 - TINY.delta
B = 1000


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


def value(text: str) -> float:
    return math.inf if text == "beyond grid" else float(text)


def shown(width: float) -> str:
    return "beyond grid" if math.isinf(width) else f"{width:.15g}"


def isotonic(values: list[float]) -> list[float]:
    """Pool adjacent violators, equal weights: the non-decreasing least-squares fit."""
    blocks = []  # [mean, count]
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, c2), (m1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    return [m for m, c in blocks for _ in range(c)]


def threshold(widths, outcomes: np.ndarray) -> float:
    """First width whose isotonic fit of the seeds' success rate reaches the level; outcomes (widths, seeds)."""
    fit = isotonic([float(row.mean()) for row in outcomes])
    return next((float(w) for w, f in zip(widths, fit) if f >= LEVEL - 1e-12), math.inf)


def log_median(values) -> float:
    return float(np.exp(np.median(np.log(np.array(values, dtype=float)))))


def series_seed(kind: str, activation: str, d: int) -> list[int]:
    return [TINY.seed, zlib.crc32(f"{kind}/{activation}/{d}".encode())]


def weight_seeds(draw: int) -> list[int]:
    return [draw * SEED_STRIDE + s for s in range(CFG.seeds)]


def scan_rule(widths, measured: dict) -> np.ndarray:
    """One seed's outcomes along the grid from {width: success} of the widths it ran: the runs must be the
    grid's first widths, ending at the first two successive successes (or the grid's end); above, 1."""
    ran = [w for w in widths if w in measured]
    assert ran == list(widths[:len(ran)])
    outcome = [float(measured[w]) for w in ran]
    pairs = [i for i in range(1, len(outcome)) if outcome[i - 1] and outcome[i]]
    assert (pairs and pairs[0] == len(outcome) - 1) or (not pairs and len(ran) == len(widths))
    return np.array(outcome + [1.0] * (len(widths) - len(ran)))


def optimisation_outcomes(out) -> dict:
    """{(activation, n, d): (draws, widths, seeds) outcomes} from runs.db's raw runs (converged = success)."""
    db = sqlite3.connect(out / "runs.db")
    rows = db.execute("SELECT activation, n, d, width, seed, status, config FROM runs").fetchall()
    db.close()
    assert {status for *_, status, _ in rows} <= {"converged", "max_steps", "diverged"}
    found = {}
    for activation, n, d, width, seed, status, config in rows:
        draw = json.loads(config)["data_seed"]
        found.setdefault((activation, n, d, draw, seed), {})[width] = status == "converged"
    result = {}
    for (activation, n, d, draw, seed), measured in found.items():
        result.setdefault((activation, n, d), {}).setdefault(draw, {})[seed] = scan_rule(CFG.widths, measured)
    return {key: np.array([[draws[j][s] for s in weight_seeds(j)] for j in range(CFG.draws)]).transpose(0, 2, 1)
            for key, draws in result.items()}


def kernel_records(out) -> dict:
    """{(activation, n, draw, seed): the stored KernelScan record} from runs.db's study_units table."""
    db = sqlite3.connect(out / "runs.db")
    found = {}
    for j in range(CFG.draws):
        for seed in weight_seeds(j):
            for a in TINY.activations:
                key = KernelScan(a, CFG.kernel_ns, TINY.d, j, seed, TINY.sigma, TINY.init, CFG.kernel_widths).key
                (stored,) = db.execute("SELECT value FROM study_units WHERE key = ?", (key,)).fetchone()
                scans = json.loads(stored)["scans"]
                assert [scan["n"] for scan in scans] == list(CFG.kernel_ns)
                for scan in scans:
                    found[a, scan["n"], j, seed] = scan
    db.close()
    return found


def kernel_outcomes(out) -> dict:
    """{(activation, n): (draws, widths, seeds)}: distance <= lambda/4 where measured; a scan ends at the first
    two successive holds (1 above); a skipped scan (0 everywhere) only where the smaller n never held."""
    records = kernel_records(out)
    widths = CFG.kernel_widths
    result = {}
    for a in TINY.activations:
        for i, n in enumerate(CFG.kernel_ns):
            draws = []
            for j in range(CFG.draws):
                seeds = []
                for seed in weight_seeds(j):
                    record = records[a, n, j, seed]
                    if record["skipped"]:
                        assert i > 0 and not result[a, CFG.kernel_ns[i - 1]][j][:, len(seeds)].any()
                        seeds.append(np.zeros(len(widths)))
                        continue
                    # the pass measured the draw's own data: lambda = lambda_min(H*) written out here
                    X = sphere(n, TINY.d, 1, j).X
                    assert record["lam"] == pytest.approx(np.linalg.eigvalsh(limit_kernel(a, X))[0], rel=1e-10)
                    held = {w: d <= record["lam"] / 4 for w, d in zip(widths, record["distance"])}
                    seeds.append(scan_rule(widths, held))
                draws.append(np.array(seeds).T)
            result[a, n] = np.array(draws)
    return result


def hierarchical(widths, series: list[np.ndarray], seed) -> np.ndarray:
    """The pooled m* of each replicate at each n, (B, len(series)), as plain loops: resample the draws, then
    the seeds within each drawn draw, the same picks at every n."""
    D, _, S = series[0].shape
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, D, size=(B, D))
    seeds = rng.integers(0, S, size=(B, D, S))
    out = np.empty((B, len(series)))
    for b in range(B):
        for k, outcomes in enumerate(series):
            out[b, k] = log_median([threshold(widths, outcomes[draws[b, j]][:, seeds[b, j]]) for j in range(D)])
    return out


@pytest.fixture(scope="module")
def expected(section):
    """{(kind, activation, d): (widths, ns, outcomes per n, per-draw m*, pooled m*, replicates)} recomputed."""
    out, _ = section
    found = {}
    opt = optimisation_outcomes(out)
    for (a, n, d), outcomes in opt.items():
        found.setdefault(("optimization", a, d), {})[n] = outcomes
    for (a, n), outcomes in kernel_outcomes(out).items():
        found.setdefault(("kernel", a, TINY.d), {})[n] = outcomes
    result = {}
    for (kind, a, d), per_n in found.items():
        widths = CFG.widths if kind == "optimization" else CFG.kernel_widths
        ns = sorted(per_n)
        draws = {n: [threshold(widths, o) for o in per_n[n]] for n in ns}
        result[kind, a, d] = (widths, ns, per_n, draws, {n: log_median(draws[n]) for n in ns},
                              hierarchical(widths, [per_n[n] for n in ns], series_seed(kind, a, d)))
    return result


def usable(widths, width: float) -> bool:
    return math.isfinite(width) and width > widths[0]


def test_section_completes_with_its_figures_and_tables(section):
    out, result = section
    assert result.status == "complete" and result.reading
    for stem in ("thresholds", "threshold_dimension"):
        assert (out / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    # at each of the 2 points: relu 3 works + the kernel condition, exp and softmax 1 work + the kernel condition
    assert len(read(out, "lambda")) == 2 * (4 + 2 + 2)


def test_reading_names_every_point_where_the_step_cap_cut_runs_short(section):
    out, result = section
    db = sqlite3.connect(out / "runs.db")
    rows = db.execute("SELECT activation, n, d, status, budget FROM runs").fetchall()
    db.close()
    capped = {}
    for a, n, d, status, budget in rows:
        if status == "max_steps" and budget is not None and budget >= CFG.max_steps:
            capped[a, n, d] = capped.get((a, n, d), 0) + 1
    assert capped  # max_steps = 400 binds somewhere in this configuration
    sentence = next(line for line in result.reading if line.startswith("The step cap"))
    for (a, n, d), count in capped.items():
        total = sum(1 for r in rows if r[:3] == (a, n, d))
        assert f"{a} n = {n}, d = {d} ({count} of {total} runs)" in sentence


def test_data_draws_are_nested_in_n_and_the_kernel_condition_is_monotone_in_n(section):
    """The scan's skip rule rests on these: the draw at n is the first n points of the draw at 2n, so the
    condition held at 2n implies it held at n for the same seed and width."""
    for draw in range(CFG.draws):
        assert np.array_equal(sphere(8, TINY.d, 1, draw).X[:4], sphere(4, TINY.d, 1, draw).X[:4])
    records = kernel_records(section[0])
    # both shortcuts occur in this configuration: scans that ended early and scans skipped
    assert any(r["skipped"] for r in records.values())
    assert any(0 < len(r["distance"]) < len(CFG.kernel_widths) for r in records.values())
    small, large = CFG.kernel_ns
    for (a, n, j, seed), record in records.items():
        if n != large or record["skipped"]:
            continue
        before = records[a, small, j, seed]
        for d_large, d_small in zip(record["distance"], before["distance"]):
            if d_large <= record["lam"] / 4:
                assert d_small <= before["lam"] / 4


def test_threshold_rows_per_draw_and_pooled_against_the_raw_runs(section, expected):
    out, _ = section
    table = {(r["kind"], r["activation"], int(r["n"]), r["data_draw"]): r for r in read(out, "thresholds")}
    axis = {"optimization": CFG.ns, "kernel": CFG.kernel_ns}
    assert set(table) == {(kind, a, n, j) for kind in axis for a in TINY.activations for n in axis[kind]
                          for j in [*map(str, range(CFG.draws)), "all"]}
    for kind in axis:
        for a in TINY.activations:
            widths, ns, per_n, draws, pooled, replicates = expected[kind, a, TINY.d]
            seed = series_seed(kind, a, TINY.d)
            for n in axis[kind]:
                for j in range(CFG.draws):
                    row = table[kind, a, n, str(j)]
                    assert row["m*"] == shown(draws[n][j])
                    low, high = percentiles(bootstrap(widths, per_n[n][j], LEVEL, [*seed, n, j]))
                    assert (row["low"], row["high"]) == (shown(low), shown(high))
                    assert row["successes"] == " ".join(f"{int(k)}/{CFG.seeds}" for k in per_n[n][j].sum(1))
                row = table[kind, a, n, "all"]
                assert value(row["m*"]) == pytest.approx(pooled[n], rel=1e-12)
                low, high = percentiles(replicates[:, ns.index(n)])
                assert (value(row["low"]), value(row["high"])) == pytest.approx((low, high), rel=1e-12)


def test_exponents_against_polyfit_of_the_pooled_rows_and_the_replicates(section, expected):
    out, _ = section
    rows = read(out, "thresholds")
    fits = {(r["kind"], r["activation"]): r for r in read(out, "threshold_exponents")}
    theory = {"relu": "DZPS19 6; SY19 4; MOSW22 2", "exp": "GMS23 2+o(1)", "softmax": "SMX24 2+o(1)"}
    for kind, ns in (("optimization", CFG.ns), ("kernel", CFG.kernel_ns)):
        for a in TINY.activations:
            widths, all_ns, *_, replicates = expected[kind, a, TINY.d]
            pooled = {int(r["n"]): value(r["m*"]) for r in rows
                      if r["kind"] == kind and r["activation"] == a and r["data_draw"] == "all"}
            good = [n for n in ns if usable(widths, pooled[n])]
            if len(good) < 2:
                assert (kind, a) not in fits
                continue
            fit = fits[kind, a]
            x = np.log(good)
            slope, intercept = np.polyfit(x, np.log([pooled[n] for n in good]), 1)
            assert int(fit["points"]) == len(good)
            assert float(fit["p"]) == pytest.approx(slope, rel=1e-9, abs=1e-12)
            assert float(fit["C"]) == pytest.approx(math.exp(intercept), rel=1e-9)
            columns = replicates[:, [all_ns.index(n) for n in good]]
            slopes = [np.polyfit(x, np.log(r), 1)[0] for r in columns if np.isfinite(r).all()]
            assert int(fit["replicates"]) == len(slopes)
            low, high = percentiles(slopes)
            assert float(fit["low"]) == pytest.approx(low, rel=1e-9, abs=1e-12)
            assert float(fit["high"]) == pytest.approx(high, rel=1e-9, abs=1e-12)
            assert fit["theory"] == (theory[a] if kind == "optimization" else
                                     "n^2 log(n/delta) / lambda^2, the kernel condition 2+o(1)")


def test_local_exponents_against_log2_ratios_of_the_pooled_rows(section, expected):
    out, _ = section
    rows = read(out, "thresholds")
    local = read(out, "threshold_local_exponents")
    checked = 0
    for kind, ns in (("optimization", CFG.ns), ("kernel", CFG.kernel_ns)):
        for a in TINY.activations:
            widths, all_ns, *_, replicates = expected[kind, a, TINY.d]
            pooled = {int(r["n"]): value(r["m*"]) for r in rows
                      if r["kind"] == kind and r["activation"] == a and r["data_draw"] == "all"}
            mine = [r for r in local if r["kind"] == kind and r["activation"] == a]
            assert [(int(r["n from"]), int(r["n to"])) for r in mine] == list(zip(ns, ns[1:]))
            for row, (n0, n1) in zip(mine, zip(ns, ns[1:])):
                if not (usable(widths, pooled[n0]) and usable(widths, pooled[n1])):
                    assert math.isnan(float(row["exponent"]))
                    continue
                exponent = math.log2(pooled[n1] / pooled[n0]) / math.log2(n1 / n0)
                assert float(row["exponent"]) == pytest.approx(exponent, rel=1e-9, abs=1e-12)
                slopes = []
                for m0, m1 in replicates[:, [all_ns.index(n0), all_ns.index(n1)]]:
                    if math.isinf(m0) and math.isinf(m1):
                        continue
                    slopes.append(math.inf if math.isinf(m1) else -math.inf if math.isinf(m0)
                                  else math.log2(m1 / m0) / math.log2(n1 / n0))
                low, high = percentiles(slopes)
                assert (float(row["low"]), float(row["high"])) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
                assert int(row["replicates"]) == len(slopes)
                checked += 1
    assert checked


def test_draw_spread_against_the_per_draw_rows(section):
    out, _ = section
    rows = read(out, "thresholds")
    for row in read(out, "threshold_draw_spread"):
        draws = [value(r["m*"]) for r in rows if (r["kind"], r["activation"], r["n"]) ==
                 (row["kind"], row["activation"], row["n"]) and r["data_draw"] != "all"]
        inside = [w for w in draws if math.isfinite(w)]
        assert int(row["draws beyond grid"]) == len(draws) - len(inside)
        if inside:
            assert float(row["log2 spread between draws"]) == pytest.approx(math.log2(max(inside) / min(inside)),
                                                                             abs=1e-12)


def test_dimension_rows_and_the_n_d_fit_against_lstsq(section, expected):
    out, _ = section
    rows = read(out, "threshold_dimension")
    assert list(rows[0]) == ["activation", "kind", "n", "d", "data_draw", "m*", "low", "high"]
    table = {(r["activation"], int(r["n"]), int(r["d"]), r["data_draw"]): r for r in rows}
    assert set(table) == {(a, n, d, j) for a in TINY.activations for n in CFG.dimension_ns for d in CFG.dimension_ds
                          for j in [*map(str, range(CFG.draws)), "all"]}
    fits = {r["activation"]: r for r in read(out, "threshold_dimension_fit")}
    assert fits
    for a in TINY.activations:
        points, columns = [], []
        for d in CFG.dimension_ds:
            widths, ns, per_n, draws, pooled, replicates = expected["optimization", a, d]
            for n in CFG.dimension_ns:
                assert [table[a, n, d, str(j)]["m*"] for j in range(CFG.draws)] == [shown(w) for w in draws[n]]
                row = table[a, n, d, "all"]
                assert value(row["m*"]) == pytest.approx(pooled[n], rel=1e-12)
                if usable(widths, value(row["m*"])):
                    points.append((n, d, value(row["m*"])))
                    columns.append(replicates[:, ns.index(n)])
        if len(points) < 3 or len({n for n, _, _ in points}) < 2 or len({d for _, d, _ in points}) < 2:
            assert a not in fits
            continue
        fit = fits[a]
        design = np.array([[1.0, math.log(n), math.log(d)] for n, d, _ in points])
        beta = np.linalg.lstsq(design, np.log([m for *_, m in points]), rcond=None)[0]
        assert (float(fit["p (n)"]), float(fit["q (d)"])) == pytest.approx((beta[1], beta[2]), rel=1e-9, abs=1e-12)
        assert float(fit["C"]) == pytest.approx(math.exp(beta[0]), rel=1e-9)
        replicates = np.array(columns).T
        keep = np.isfinite(replicates).all(1)
        refits = np.array([np.linalg.lstsq(design, np.log(r), rcond=None)[0] for r in replicates[keep]])
        assert int(fit["replicates"]) == int(keep.sum())
        for name, column in (("p", 1), ("q", 2)):
            low, high = percentiles(refits[:, column])
            assert (float(fit[f"{name} low"]), float(fit[f"{name} high"])) == pytest.approx((low, high), rel=1e-9,
                                                                                                abs=1e-12)


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
    points = sorted(set(CFG.lambda_ns) | set(CFG.ns) | set(CFG.kernel_ns))
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


def test_facts_follow_the_tables(section):
    out, result = section
    facts = {(f.activation, f.quantity): f for f in result.facts}
    assert all(f.section == "threshold" for f in result.facts)
    points = sorted(set(CFG.lambda_ns) | set(CFG.ns) | set(CFG.kernel_ns))
    for a in TINY.activations:
        q = np.polyfit(np.log(points), np.log([lam(a, n) for n in points]), 1)[0]
        assert facts[a, "lambda(n) decay exponent q (lambda ~ n^q)"].value == pytest.approx(q, rel=1e-9)
        assert facts[a, "proven widths (orders of growth)"].value == {
            "relu": "DZPS19 n^6; SY19 n^4; MOSW22 n^2", "exp": "GMS23 n^2+o(1)", "softmax": "SMX24 n^2+o(1)"}[a]
    names = {"optimization": "m*_opt", "kernel": "m*_ker"}
    for row in read(out, "threshold_exponents"):
        fact = facts[row["activation"], f"{names[row['kind']]} exponent p (m* ~ C n^p)"]
        assert (fact.value, fact.low, fact.high) == (float(row["p"]), float(row["low"]), float(row["high"]))
    for kind, name in names.items():
        for a in TINY.activations:
            local = [r for r in read(out, "threshold_local_exponents") if r["kind"] == kind and r["activation"] == a
                     and not math.isnan(float(r["exponent"]))]
            key = (a, f"{name} local exponent at the largest n measured")
            assert (key in facts) == bool(local)
            if local:
                assert (facts[key].value, facts[key].low, facts[key].high) == tuple(
                    float(local[-1][c]) for c in ("exponent", "low", "high"))
    for row in read(out, "threshold_dimension_fit"):
        for name in ("p", "q"):
            fact = facts[row["activation"], f"m*_opt ~ C n^p d^q: {name}"]
            assert (fact.value, fact.low, fact.high) == tuple(
                float(row[c]) for c in (f"{name} (n)" if name == "p" else "q (d)", f"{name} low", f"{name} high"))


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
    on draw 1 (its own data and weight seed): H of the first m neurons of the seed's draw at the largest width
    (the nested widths share their first rows) by autograd, H* written out in numpy, the norm by eigvalsh."""
    records = kernel_records(section[0])
    n, draw = max(CFG.kernel_ns), 1
    seed = weight_seeds(draw)[0]
    X = sphere(n, TINY.d, 1, draw).X
    W, a = initial_weights(max(CFG.kernel_widths), TINY.d, 1, TINY.init, TINY.sigma, seed)
    checked = 0
    for activation in TINY.activations:
        stored = records[activation, n, draw, seed]["distance"]
        limit = limit_kernel(activation, X)
        for index in sorted({0, len(stored) // 2, len(stored) - 1}):
            if index < 0:
                continue
            m = CFG.kernel_widths[index]
            H = autograd_kernel(activation, W[:m], a[:m], torch.from_numpy(X)).numpy()
            distance = np.abs(np.linalg.eigvalsh(H - limit)).max()
            # the pass runs float32 chunk products with float64 sums (the nested pass's mixed precision):
            # within 2e-6 ||H*||_2, the tolerance tests/test_nested_ntk.py states for it
            assert abs(stored[index] - distance) <= 2e-6 * np.linalg.norm(limit, 2)
            checked += 1
    assert checked


def test_each_d_has_one_colour_in_every_panel_of_the_dimension_figure():
    """m*_opt against n/d: the points, the beyond-grid markers and the fitted line of one d share one colour in
    every activation's panel, also where a d has no point inside the grid in one panel (exp, d = 2 here), which
    shifted matplotlib's colour cycle before; different d differ."""
    from matplotlib.colors import to_rgba

    from overparam.study.thresholds import DimensionFit, _dimension_figure, measure_series

    study = StudyConfig(activations=("relu", "exp"), d=4, delta=0.5)
    cfg = TINY.section("threshold")
    widths, ds, ns = cfg.widths, cfg.dimension_ds, cfg.dimension_ns
    found = {}
    for a in study.activations:
        for d in ds:
            outcomes = {}
            for n in ns:
                first = min(len(widths), {2: 1, 4: 3}[d] + ns.index(n))  # threshold index: inside the grid
                if a == "exp" and d == 2:
                    first = len(widths)  # never reached: beyond the grid
                column = (np.arange(len(widths)) >= first).astype(float)
                outcomes[n] = np.broadcast_to(column[None, :, None], (2, len(widths), 2)).copy()
            found["optimization", a, d] = measure_series(study, "optimization", a, d, widths, outcomes)
    fits = [DimensionFit(a, "optimization", 4, 1.0, 0.5, 1.5, -1.0, -1.5, -0.5, 2.0, 100) for a in study.activations]
    fig = _dimension_figure(study, cfg, found, fits)
    seen = {d: [] for d in ds}
    for axis in fig.axes:
        for container in axis.containers:
            d = int(container.get_label().split("=")[1])
            seen[d].append(("points", axis.get_title(), to_rgba(container.lines[0].get_color())))
        for collection in axis.collections:
            label = collection.get_label()
            if label.startswith("d = "):
                d = int(label.split("=")[1].split(":")[0])
                seen[d].append(("beyond", axis.get_title(), tuple(collection.get_edgecolor()[0])))
        for line in axis.lines:
            if line.get_label().startswith("_fit d = "):
                seen[int(line.get_label().split("=")[1])].append(("fit", axis.get_title(), to_rgba(line.get_color())))
    assert {(kind, title) for kind, title, _ in seen[2]} == {("points", "relu"), ("beyond", "exp"), ("fit", "relu"),
                                                             ("fit", "exp")}
    assert {(kind, title) for kind, title, _ in seen[4]} == {("points", "relu"), ("points", "exp"), ("fit", "relu"),
                                                             ("fit", "exp")}
    colours = {d: {colour for *_, colour in found_d} for d, found_d in seen.items()}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert colours[2] != colours[4]
