"""overparam study: a tiny study end to end; numbers against direct recomputation; resume; the browser."""

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import headless_browser

from overparam import TwoLayerNet
from overparam.data import unit_sphere
from overparam.ntk import infinite_ntk, ntk
from overparam.study import StudyConfig, run_study
from overparam.study.legacy import FlatConfig

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, settings={
    "concentration": {"n": 12, "widths": (32, 128, 512), "seeds": 3},
    "training": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "laziness": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "threshold": {"ns": (4, 8), "widths": (2, 4, 8, 16, 32), "seeds": 2, "max_steps": 400,
                  "kernel_widths": (8, 16, 32, 64, 128, 256, 512), "lambda_ns": (4, 8, 16)},
    "perturbation": {"n": 8, "widths": (64, 256), "radii": (1e-3, 1e-2, 1e-1, 1.0), "ascent_steps": 3, "seeds": 2,
                     "steps": 400},
    "initialisation": {"n": 8, "width": 128, "seeds": 2, "steps": 400},
    "diffusion": {"n": 256, "width": 64, "steps": 100, "sampler_steps": 20, "samples": 300, "score_samples": 2000,
                  "widths": (32, 64), "ns": (128, 256)},
    "generalisation": {"n": 12, "ns": (6, 12), "widths": (32, 128), "steps": 3000, "test": 50},
    "real_data": {"ns": (12,), "label_draws": 2, "train_n": 12, "width": 16, "steps": 200, "threshold_ns": (8,),
                  "threshold_widths": (2, 4), "threshold_seeds": 2, "max_steps": 400},
}).validate()
#: Progress of the module's study: units each section announced, and the ticks it then gave.
PROGRESS = {"announced": {}, "ticked": {}}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    current = []

    def on_section(key, title, units):
        current.append(key)
        PROGRESS["announced"][key] = units
        PROGRESS["ticked"][key] = 0

    def on_tick(k=1):
        PROGRESS["ticked"][current[-1]] += k

    result = run_study(TINY, out, on_section=on_section, on_tick=on_tick)
    return out, result


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_section_completes_with_figures_and_tables(study_dir):
    out, result = study_dir
    assert [s.status for s in result.sections] == ["complete"] * len(TINY.sections)
    assert result.failures == []
    for section in result.sections:
        assert section.reading and section.command == (f"overparam study --config {out / 'study.toml'} "
                                                       f"--only {section.key} --out {out}")
        for figure in section.figures:
            assert (out / "figures" / f"{figure.stem}.png").read_bytes()[:4] == b"\x89PNG"
            assert b"<svg" in (out / "figures" / f"{figure.stem}.svg").read_bytes()[:400]
        for table in section.tables:
            assert len(read_csv(out / "tables" / f"{table.stem}.csv")) == len(table.rows) > 0
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    for section in result.sections:
        assert section.title in html and section.title in markdown


def test_every_section_ticks_once_per_announced_unit(study_dir):
    _, result = study_dir
    assert list(PROGRESS["announced"]) == list(TINY.sections)
    assert PROGRESS["ticked"] == PROGRESS["announced"]
    from overparam.study.diffusion import curve_grid
    from overparam.study.thresholds import kernel_units, lambda_points

    flat = FlatConfig(TINY)
    assert PROGRESS["announced"]["diffusion"] == len(TINY.activations) * len(curve_grid(flat)) + 1
    assert sorted(curve_grid(flat)) == [(128, 64), (256, 32), (256, 64)]
    cached_thresholds = kernel_units(flat) + len(TINY.activations) * len(lambda_points(flat))
    # real_data's cached units are its training and kernel units (its sweeps' runs live in the runs table);
    # perturbation's training runs are the training section's (same settings): only its kernel units are new
    perturbed = len(TINY.activations) * len(TINY.section("perturbation").widths)
    assert PROGRESS["announced"]["perturbation"] == 2 * perturbed
    assert result.computed == cached_thresholds + perturbed + sum(PROGRESS["announced"][key] for key in (
        "concentration", "training", "diffusion", "initialisation", "generalisation")) + \
        len(TINY.activations) * (1 + len(TINY.section("real_data").ns))


def test_diffusion_numbers_match_overparam_diffusion(study_dir):
    """The section's table equals `overparam diffusion` run alone with the same settings (softmax only:
    each activation is its own unit, so the rows must not depend on which other networks ran)."""
    from overparam.diffusion.experiment import run
    from overparam.study.cache import UnitCache
    from overparam.study.diffusion import diffusion_config, unit_key

    out, _ = study_dir
    rows = {r["score"]: r for r in read_csv(out / "tables" / "diffusion.csv")}
    assert list(rows) == [*TINY.activations, "exact", "trivial", "p0"]
    config = diffusion_config(FlatConfig(TINY))
    result = run(replace(config, activations=("softmax",)))
    expected = {"softmax": result.metrics["softmax"], **result.metrics["baselines"]}
    columns = {"score error": "score_error", "± se": "score_error_stderr", "W2": "w2", "MMD^2": "mmd", "NLL": "nll",
               "weights TV": "weight_error", "precision": "precision", "recall": "recall"}
    for name, metrics in expected.items():
        for column, key in columns.items():
            if metrics[key] is None:
                assert rows[name][column] == "nan"
            else:
                assert float(rows[name][column]) == pytest.approx(metrics[key], rel=1e-10, abs=1e-14)
    for metric, position in result.metrics["softmax"]["between"].items():
        assert float(rows["softmax"][f"between: {metric}"]) == pytest.approx(position, rel=1e-10)
    training = {r["activation"]: r for r in read_csv(out / "tables" / "diffusion_training.csv")}
    assert float(training["softmax"]["held-out loss"]) == pytest.approx(
        result.metrics["softmax"]["training"]["best_val_loss"], rel=1e-10)
    assert float(training["softmax"]["exact denoiser"]) == pytest.approx(result.bayes_val_loss, rel=1e-10)
    # the cached units hold the very samples `run` draws (same seeds, same draws, same networks)
    cache = UnitCache(out / "runs.db")
    softmax, baselines = cache.get(unit_key("softmax", config)), cache.get(unit_key("baselines", config))
    cache.close()
    np.testing.assert_array_equal(np.array(softmax["samples"]), result.samples["softmax"])
    for name in ("exact", "trivial"):
        np.testing.assert_array_equal(np.array(baselines["samples"][name]), result.samples[name])
    np.testing.assert_array_equal(np.array(baselines["reference"]), result.reference)
    # every network learned a score clearly better than -x, and W2 sits between the floors and -x
    trivial = float(rows["trivial"]["score error"])
    for activation in TINY.activations:
        error, stderr = float(rows[activation]["score error"]), float(rows[activation]["± se"])
        assert error < trivial - 5 * (stderr + float(rows["trivial"]["± se"]))
        assert 0 < float(rows[activation]["between: score_error"]) < 1
    assert float(rows["exact"]["score error"]) == 0.0
    assert float(rows["p0"]["W2"]) < float(rows["trivial"]["W2"]) and float(rows["exact"]["W2"]) < float(
        rows["trivial"]["W2"])


def test_concentration_numbers_match_a_direct_recomputation(study_dir):
    out, _ = study_dir
    rows = {(r["activation"], int(r["m"])): r for r in read_csv(out / "tables" / "concentration.csv")}
    X = torch.from_numpy(unit_sphere(TINY.section("concentration").n, TINY.d, TINY.seed))
    for activation in ("relu", "softmax"):
        limit = infinite_ntk(activation, X)
        top = float(torch.linalg.eigvalsh(limit)[-1])
        errors = []
        for seed in range(TINY.section("concentration").seeds):
            H = ntk(TwoLayerNet(TINY.d, 128, 1, activation, seed=seed), X)
            errors.append(float(torch.linalg.matrix_norm(H - limit, ord=2)) / top)
        assert float(rows[activation, 128]["rel. error"]) == pytest.approx(np.mean(errors), rel=1e-10)
        assert float(rows[activation, 128]["lambda_min(H*)"]) == pytest.approx(
            float(torch.linalg.eigvalsh(limit)[0]), rel=1e-10)


def test_training_table_agrees_with_a_single_run(study_dir):
    out, _ = study_dir
    from overparam import train
    from overparam.data import sphere

    row = next(r for r in read_csv(out / "tables" / "initialisation.csv")
               if r["activation"] == "exp" and r["init"] == "independent")
    data = sphere(TINY.section("initialisation").n, TINY.d, seed=TINY.seed)
    finals, steps = [], []
    for seed in range(TINY.section("initialisation").seeds):
        history = train(TwoLayerNet(TINY.d, TINY.section("initialisation").width, 1, "exp", init="independent", seed=seed),
                        data.X, data.y, lr="auto", steps=TINY.section("initialisation").steps, tol=TINY.tol)
        finals.append(history.residual_norm[-1])
        steps.append(history.steps)
    assert float(row["steps"]) == pytest.approx(np.mean(steps), rel=1e-12)
    assert float(row["final ||F - y||"]) == pytest.approx(np.mean(finals), rel=1e-6)


def test_rerun_reuses_every_finished_unit(study_dir, tmp_path):
    out, first = study_dir
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    second = run_study(TINY, copy)
    assert second.computed == 0 and second.reused == first.reused + first.computed
    assert read_csv(copy / "tables" / "training.csv") == read_csv(out / "tables" / "training.csv")


def test_interrupt_leaves_a_valid_partial_report_and_resumes(tmp_path):
    config = replace(TINY, sections=("concentration", "training"))
    ticks = []

    def interrupt_after_some(k=1):
        ticks.append(k)
        if len(ticks) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path, on_tick=interrupt_after_some)
    html = (tmp_path / "report.html").read_text()
    assert "Status: partial" in html and "interrupted" in html and "Status: not run" in html
    resumed = run_study(config, tmp_path)
    # The interrupt came in the 4th unit's progress tick, after that unit was stored: 4 are reused.
    assert resumed.reused == 4 and [s.status for s in resumed.sections] == ["complete", "complete"]


def test_a_section_that_cannot_be_imported_fails_alone(tmp_path, monkeypatch):
    from overparam.study import registry

    config = replace(TINY, sections=("concentration", "initialisation")).with_settings(
        "concentration", widths=(32, 64), seeds=2)
    monkeypatch.setitem(registry.MODULES, "initialisation", "no_such_section")
    result = run_study(config, tmp_path)
    assert [s.status for s in result.sections] == ["complete", "failed"]
    assert len(result.failures) == 1 and result.failures[0].startswith("initialisation: ModuleNotFoundError")
    assert result.computed == len(TINY.activations) * 2 * 2  # a kernel per activation, width and seed
    assert "Status: failed — ModuleNotFoundError" in (tmp_path / "report.html").read_text()
    rows = read_csv(tmp_path / "tables" / "concentration.csv")
    assert [r["activation"] for r in rows] == [a for a in TINY.activations for _ in range(2)]
    assert all(float(r["rel. error"]) > 0 for r in rows)


REPORT_IMAGES = """(function () {
  var images = Array.from(document.images);
  return {images: images.length,
          broken: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                        .map(function (img) { return img.getAttribute('src'); })};
})()"""


def test_report_renders_in_headless_chromium(study_dir):
    out, _ = study_dir
    report = headless_browser.render(out / "report.html", REPORT_IMAGES, out / "chromium-profile")
    expected = len(re.findall(r"<img ", (out / "report.html").read_text()))
    assert report["images"] == expected > 0
    assert report["broken"] == [] and report["problems"] == []


def _direct_forward(activation: str, W: torch.Tensor, a: torch.Tensor, X: torch.Tensor, kappa: float) -> torch.Tensor:
    """F(W, X) written out from SPEC §2, for autograd (independent of the library's chunked passes)."""
    Z = X @ W.T
    if activation == "relu":
        return kappa * torch.relu(Z) @ a
    if activation == "exp":
        return kappa * torch.exp(Z) @ a
    return kappa * W.shape[0] * torch.softmax(Z, dim=1) @ a


def _autograd_kernel(activation, W, a, X, kappa) -> torch.Tensor:
    """H(W) = J J^T / (m kappa^2), J = dF(X)/dW by autograd (SPEC §4)."""
    J = torch.autograd.functional.jacobian(lambda V: _direct_forward(activation, V, a, X, kappa)[:, 0], W)
    J = J.reshape(X.shape[0], -1)
    return J @ J.T / (W.shape[0] * kappa**2)


def _relu_limit(X: torch.Tensor) -> torch.Tensor:
    """relu's H*_ij = <x_i, x_j> (pi - angle_ij) / (2 pi) (SPEC §4), written out with the angle between unit
    vectors u, v as 2 atan2(|u - v|, |u + v|), which stays accurate near 0 (arccos of a cosine does not)."""
    unit = X / X.norm(dim=1, keepdim=True)
    angle = 2 * torch.atan2((unit[:, None] - unit[None]).norm(dim=-1), (unit[:, None] + unit[None]).norm(dim=-1))
    return (X @ X.T) * (np.pi - angle) / (2 * np.pi)


def _single_runs(activation: str, width: int):
    """Each seed of a (b)/(c) unit trained alone by `train` (not the batched engine): (net at W(0), net, history)."""
    from overparam import train
    from overparam.data import sphere

    data = sphere(TINY.section("training").n, TINY.d, seed=TINY.seed)
    runs = []
    for seed in range(TINY.section("training").seeds):
        net = TwoLayerNet(TINY.d, width, 1, activation, init=TINY.init, sigma=TINY.sigma, seed=seed)
        start = net.copy()
        history = train(net, data.X, data.y, lr="auto", steps=TINY.section("training").steps, tol=TINY.tol)
        runs.append((start, net, history))
    return data, runs


@pytest.mark.parametrize("activation", ["relu", "softmax"])
def test_training_table_steps_and_rates_match_direct_train_calls(study_dir, activation):
    from overparam.kernel_regime import KernelRegime

    out, _ = study_dir
    width = TINY.section("training").widths[-1]
    row = next(r for r in read_csv(out / "tables" / "training.csv")
               if r["activation"] == activation and int(r["m"]) == width)
    data, runs = _single_runs(activation, width)
    histories = [h for _, _, h in runs]
    rates = [(h.residual_norm[-1] / h.residual_norm[0]) ** (2 / h.steps) for h in histories]
    kappa = runs[0][0].kappa
    assert row["converged"] == f"{sum(h.status == 'converged' for h in histories)}/{TINY.section('training').seeds}"
    assert float(row["steps"]) == pytest.approx(np.mean([h.steps for h in histories]), abs=1)
    assert float(row["lr"]) == pytest.approx(np.mean([h.lr for h in histories]), rel=1e-3)
    assert float(row["eta_eff"]) == pytest.approx(np.mean([h.lr for h in histories]) * width * kappa**2, rel=1e-3)
    assert float(row["observed rate"]) == pytest.approx(np.mean(rates), rel=1e-3)
    assert float(row["final loss2"]) == pytest.approx(np.mean([h.residual_norm[-1] ** 2 for h in histories]), rel=2e-2)
    # the kernel-regime steps by the closed-form linear dynamics of `KernelRegime`, not the section's eigh loop
    predicted = [KernelRegime.of_network(start, data.X, data.y, h.lr).steps_to(TINY.tol) for start, _, h in runs]
    assert float(row["kernel-pred. steps"]) == pytest.approx(np.mean(predicted), abs=1)
    if activation == "relu":
        X = torch.from_numpy(data.X)
        lam = float(torch.linalg.eigvalsh(_relu_limit(X))[0])
        assert float(row["lambda"]) == pytest.approx(lam, rel=1e-10)
        assert float(row["bound rate 1-eta_eff*lambda/2"]) == pytest.approx(1 - float(row["eta_eff"]) * lam / 2,
                                                                            rel=1e-10)


@pytest.mark.parametrize("activation", ["relu", "softmax"])
def test_laziness_movement_and_drift_match_weights_and_autograd_kernels(study_dir, activation):
    out, _ = study_dir
    width = TINY.section("training").widths[0]
    row = next(r for r in read_csv(out / "tables" / "laziness.csv")
               if r["activation"] == activation and int(r["m"]) == width)
    data, runs = _single_runs(activation, width)
    X = torch.from_numpy(data.X)
    movement, drift = [], []
    for start, net, _ in runs:
        movement.append(float((net.W - start.W).norm(dim=1).max()))
        H0 = _autograd_kernel(activation, start.W, start.a, X, start.kappa)
        HT = _autograd_kernel(activation, net.W, net.a, X, net.kappa)
        drift.append(float(torch.linalg.matrix_norm(HT - H0, ord=2)))
    assert float(row["max movement"]) == pytest.approx(np.mean(movement), rel=2e-3)
    assert float(row["kernel drift"]) == pytest.approx(np.mean(drift), rel=2e-3)
    with open(out / "tables" / "laziness.csv", newline="", encoding="utf-8") as handle:
        header, *table = list(csv.reader(handle))
    cells = next(r for r in table if r[0] == activation and int(r[1]) == width)
    assert header[2:6] == ["max movement", "± se", "kernel drift", "± se"]
    assert float(cells[3]) == pytest.approx(np.std(movement, ddof=1) / np.sqrt(len(movement)), rel=2e-2)
    assert float(cells[5]) == pytest.approx(np.std(drift, ddof=1) / np.sqrt(len(drift)), rel=2e-2)


def _mixture_score(truth, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """grad log p_t(x) for p_t = sum_k pi_k N(alpha mu_k, alpha^2 Sigma_k + h I) (SPEC §6), in numpy."""
    alpha, h = np.exp(-t), 1 - np.exp(-2 * t)
    weights, means, covs = (v.numpy() for v in (truth.weights, truth.means, truth.covariances))
    d = x.shape[1]
    logs, grads = [], []
    for pi, mu, cov in zip(weights, means, covs):
        C = alpha[:, None, None] ** 2 * cov + h[:, None, None] * np.eye(d)
        diff = x - alpha[:, None] * mu
        solved = np.linalg.solve(C, diff[:, :, None])[:, :, 0]
        logs.append(np.log(pi) - 0.5 * (diff * solved).sum(1) - 0.5 * np.linalg.slogdet(C)[1])
        grads.append(-solved)
    logs = np.stack(logs, 1)
    post = np.exp(logs - logs.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    return np.einsum("nk,knd->nd", post, np.stack(grads))


def test_diffusion_w2_and_score_error_by_independent_routes(study_dir):
    """W2 by an optimal assignment on the cached samples (equal sizes, uniform weights: a permutation is
    optimal), and the score error of a denoiser trained alone by `fit_denoiser`, by a Monte Carlo written here."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from overparam.diffusion.experiment import draw
    from overparam.diffusion.training import fit_denoiser
    from overparam.study.cache import UnitCache
    from overparam.study.diffusion import diffusion_config, unit_key

    out, _ = study_dir
    rows = {r["score"]: r for r in read_csv(out / "tables" / "diffusion.csv")}
    config = diffusion_config(FlatConfig(TINY))
    cache = UnitCache(out / "runs.db")
    units = {a: cache.get(unit_key(a, config)) for a in TINY.activations}
    reference = np.array(cache.get(unit_key("baselines", config))["reference"])
    cache.close()
    for activation, unit in units.items():
        cost = cdist(np.array(unit["samples"]), reference, "sqeuclidean")
        rows_, cols = linear_sum_assignment(cost)
        assert float(rows[activation]["W2"]) == pytest.approx(np.sqrt(cost[rows_, cols].mean()), rel=1e-8)

    activation = "softmax"
    draws = draw(config)
    fit = fit_denoiser(draws.x0, config.horizon, config.training_for(activation), seed=config.seed)
    rng = np.random.default_rng(7)
    count = 4000
    components = rng.choice(len(draws.truth.weights), size=count, p=draws.truth.weights.numpy())
    chol = np.linalg.cholesky(draws.truth.covariances.numpy() + 1e-300 * np.eye(draws.truth.dim))
    x0 = draws.truth.means.numpy()[components] + np.einsum(
        "nij,nj->ni", chol[components], rng.standard_normal((count, draws.truth.dim)))
    t = rng.uniform(config.t0, config.T, count)
    alpha, h = np.exp(-t), 1 - np.exp(-2 * t)
    xt = alpha[:, None] * x0 + np.sqrt(h)[:, None] * rng.standard_normal(x0.shape)
    xt_, t_ = torch.from_numpy(xt), torch.from_numpy(t)
    denoised = fit.net(fit.embedding(xt_, t_)).detach().numpy()
    learned = (alpha[:, None] * denoised - xt) / h[:, None]
    weighted = h * ((learned - _mixture_score(draws.truth, xt, t)) ** 2).sum(1)
    mine, my_error = weighted.mean(), weighted.std(ddof=1) / np.sqrt(count)
    table, table_error = float(rows[activation]["score error"]), float(rows[activation]["± se"])
    assert abs(mine - table) < 4 * np.hypot(my_error, table_error)


def first_width_reaching(widths, rates, level):
    """Smallest width whose isotonic (non-decreasing least-squares, equal weights) fit of `rates` is >= level,
    by the min-max formula fit_j = max_{i <= j} min_{k >= j} mean(rates[i..k]); inf where none is."""
    rates = np.asarray(rates, dtype=float)
    for j, width in enumerate(widths):
        fit = max(min(rates[i:k + 1].mean() for k in range(j, len(rates))) for i in range(j + 1))
        if fit >= level - 1e-12:
            return float(width)
    return float("inf")


def test_threshold_table_against_the_raw_runs(study_dir):
    """Both kinds of rows of tables/thresholds.csv recomputed from runs.db with sqlite and numpy: the sweep's
    runs (converged or not) and the nested pass's stored distances (distance <= lambda/4)."""
    import sqlite3

    out, _ = study_dir
    table = {(r["kind"], r["activation"], int(r["n"])): r for r in read_csv(out / "tables" / "thresholds.csv")}
    db = sqlite3.connect(out / "runs.db")
    level = 1 - TINY.delta
    for activation in TINY.activations:
        for n in TINY.section("threshold").ns:
            # d: the store also holds the real-data section's sweeps (d = 64), which are not this section's runs
            statuses = db.execute("SELECT width, status, lambda_min FROM runs WHERE activation = ? AND n = ? AND d = ?",
                                  (activation, n, TINY.d)).fetchall()
            rates = [np.mean([s == "converged" for w, s, _ in statuses if w == width]) for width in TINY.section("threshold").widths]
            row = table["optimization", activation, n]
            assert row["successes"] == " ".join(f"{round(r * TINY.section('threshold').seeds)}/{TINY.section('threshold').seeds}"
                                                for r in rates)
            expected = first_width_reaching(TINY.section("threshold").widths, rates, level)
            assert row["m*"] == ("beyond grid" if np.isinf(expected) else f"{expected:g}")
            units = [json.loads(value) for (value,) in db.execute(
                "SELECT value FROM study_units WHERE key LIKE ?", (f"threshold:kernel:{activation}:n={n}:%",))]
            assert len(units) == TINY.section("threshold").seeds
            # the kernel was measured on the sweep's own data: the same lambda = lambda_min(H*)
            assert all(u["lambda"] == pytest.approx(statuses[0][2], rel=1e-12) for u in units)
            passed = np.array([[d <= u["lambda"] / 4 for d in u["distance"]] for u in units])  # (seeds, widths)
            row = table["kernel", activation, n]
            assert row["successes"] == " ".join(f"{k}/{len(units)}" for k in passed.sum(0))
            expected = first_width_reaching(TINY.section("threshold").kernel_widths, passed.mean(0), level)
            assert row["m*"] == ("beyond grid" if np.isinf(expected) else f"{expected:g}")
    db.close()


def test_threshold_exponents_against_numpy_polyfit(study_dir):
    out, _ = study_dir
    rows = read_csv(out / "tables" / "thresholds.csv")
    fits = read_csv(out / "tables" / "threshold_exponents.csv")
    assert fits
    for fit in fits:
        points = [(int(r["n"]), float(r["m*"])) for r in rows if r["kind"] == fit["kind"]
                  and r["activation"] == fit["activation"] and r["m*"] != "beyond grid"
                  and float(r["m*"]) > min(TINY.section("threshold").widths if fit["kind"] == "optimization"
                                           else TINY.section("threshold").kernel_widths)]
        slope, _ = np.polyfit(np.log([n for n, _ in points]), np.log([m for _, m in points]), 1)
        assert int(fit["points"]) == len(points)
        assert float(fit["p"]) == pytest.approx(slope, abs=1e-12)


def test_lambda_table_against_eigvalsh(study_dir):
    from overparam import theory
    from overparam.data import sphere

    out, _ = study_dir
    rows = read_csv(out / "tables" / "lambda.csv")
    for row in rows:
        X = torch.from_numpy(sphere(int(row["n"]), TINY.d, 1, 0).X)
        lam = float(np.linalg.eigvalsh(infinite_ntk(row["activation"], X).numpy())[0])
        assert float(row["lambda"]) == pytest.approx(lam, rel=1e-9) and row["method"] == "dense"
        if row["work"] == "kernel condition":
            n = int(row["n"])
            assert float(row["value"]) == pytest.approx(n**2 * np.log(n / TINY.delta) / lam**2, rel=1e-9)
        if row["work"] == "DZPS19":
            assert float(row["value"]) == pytest.approx(theory.dzps19_width(int(row["n"]), lam, TINY.delta), rel=1e-9)


def test_diffusion_learning_curves_from_the_cached_units(study_dir):
    """Each curve row's W2 by an optimal assignment on its own samples against its own reference draws (which
    depend on n), its precision and recall counted here, and what ended its training from the step counts."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from overparam.diffusion.datasets import parse_data
    from overparam.diffusion.experiment import draw
    from overparam.study.cache import UnitCache
    from overparam.study.diffusion import config_at, diffusion_config, unit_key

    out, _ = study_dir
    rows = read_csv(out / "tables" / "diffusion_curves.csv")
    assert {(r["activation"], int(r["n"]), int(r["m"])) for r in rows} == {
        (a, n, m) for a in TINY.activations for n, m in ((128, 64), (256, 32), (256, 64))}
    truth = parse_data(TINY.section("diffusion").data)
    cache = UnitCache(out / "runs.db")
    for row in rows:
        if row["activation"] != "exp":
            continue
        config = config_at(diffusion_config(FlatConfig(TINY)), int(row["n"]), int(row["m"]))
        unit = cache.get(unit_key("exp", config))
        samples = torch.tensor(unit["samples"], dtype=torch.float64)
        cost = cdist(samples.numpy(), draw(config).reference, "sqeuclidean")
        matched = linear_sum_assignment(cost)
        assert float(row["W2"]) == pytest.approx(np.sqrt(cost[matched].mean()), rel=1e-8)
        alpha, h = np.exp(-config.t0), 1 - np.exp(-2 * config.t0)
        sd = np.sqrt(alpha**2 * truth.covariances[0, 0, 0].item() + h)  # isotropic components
        distance = torch.cdist(samples, alpha * truth.means) / sd
        near = distance.min(1).values <= 3
        counts = torch.bincount(distance.argmin(1)[near], minlength=len(truth.weights))
        assert float(row["precision"]) == pytest.approx(float(near.double().mean()), abs=1e-12)
        assert float(row["recall"]) == pytest.approx(
            float((counts / len(samples) >= truth.weights / 2).double().mean()), abs=1e-12)
        steps, kept = int(row["steps run"]), int(row["kept step"])
        assert row["ended by"] == ("early stopping" if steps < TINY.section("diffusion").steps else
                                   "budget, held-out loss still falling" if kept == steps else "budget")
    cache.close()
