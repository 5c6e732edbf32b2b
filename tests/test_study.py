"""overparam study: a tiny study end to end; numbers against direct recomputation; resume; the browser."""

import csv
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import headless_browser

from overparam import TwoLayerNet
from overparam.ntk import infinite_ntk
from overparam.study import StudyConfig, run_study
from overparam.study.legacy import FlatConfig

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, settings={
    "concentration": {"n": 12, "widths": (32, 128, 512), "seeds": 3},
    "training": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "laziness": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "threshold": {"ns": (4, 8), "widths": (2, 4, 8, 16, 32), "seeds": 2, "max_steps": 400,
                  "kernel_widths": (8, 16, 32, 64, 128, 256, 512), "lambda_ns": (4, 8, 16)},
    "perturbation": {"n": 8, "widths": (64, 256), "radii": (1e-3, 1e-2, 1e-1, 1.0), "ascent_steps": 3},
    "initialisation": {"n": 8, "width": 128, "seeds": 2, "steps": 400},
    "diffusion": {"n": 256, "width": 64, "steps": 100, "sampler_steps": 20, "samples": 300, "score_samples": 2000,
                  "widths": (32, 64), "ns": (128, 256), "twin_large_n": 512},
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
    # every announced unit is computed once, except laziness's training runs, which the training section
    # computed first (the threshold and real_data sweeps are units too: one per slice of the sweep)
    assert result.computed == sum(count for key, count in PROGRESS["announced"].items() if key != "laziness")
    assert result.reused == PROGRESS["announced"]["laziness"]




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




def test_generalisation_row_matches_solves_and_single_runs(study_dir):
    """The H* predictor and the complexity by torch.linalg.solve; one row's networks trained alone by `train`,
    their finite-kernel predictor and kernel-regime distance from autograd Jacobians."""
    from overparam import train
    from overparam.study.generalisation import split

    out, _ = study_dir
    activation, n, m = "softmax", TINY.section("generalisation").n, TINY.section("generalisation").widths[-1]
    row = next(r for r in read_csv(out / "tables" / "generalisation.csv")
               if r["activation"] == activation and int(r["n"]) == n and int(r["m"]) == m)
    X, y, X_test, y_test = (torch.from_numpy(v) for v in split(n, FlatConfig(TINY)))
    limit = infinite_ntk(activation, X)
    kernel_prediction = infinite_ntk(activation, X_test, X2=X) @ torch.linalg.solve(limit, y)
    assert float(row["kernel_test_mse"]) == pytest.approx(float((kernel_prediction - y_test).square().mean()), rel=1e-8)
    assert float(row["complexity"]) == pytest.approx(
        float(torch.sqrt(2 * y[:, 0] @ torch.linalg.solve(limit, y[:, 0]) / n)), rel=1e-8)
    measured = {key: [] for key in ("test_mse", "finite_kernel_test_mse", "distance_to_kernel", "distance_travelled",
                                    "predicted_distance")}
    for seed in range(TINY.section("generalisation").seeds):
        net = TwoLayerNet(TINY.d, m, 1, activation, init="coupled", sigma=TINY.sigma, seed=seed)
        W0, a, kappa = net.W.clone(), net.a, net.kappa
        train(net, X, y, lr="auto", steps=TINY.section("generalisation").steps, tol=TINY.tol)
        both = torch.cat([X, X_test])
        J = torch.autograd.functional.jacobian(lambda V: _direct_forward(activation, V, a, both, kappa)[:, 0], W0)
        J = J.reshape(len(both), -1)
        theta, cross = J[:n] @ J[:n].T, J[n:] @ J[:n].T
        prediction = _direct_forward(activation, net.W, a, X_test, kappa)
        measured["test_mse"].append(float((prediction - y_test).square().mean()))
        measured["finite_kernel_test_mse"].append(
            float((cross @ torch.linalg.solve(theta, y) - y_test).square().mean()))
        measured["distance_to_kernel"].append(float((prediction - kernel_prediction).square().mean().sqrt()))
        measured["distance_travelled"].append(float((net.W - W0).norm()))
        measured["predicted_distance"].append(float(torch.sqrt(y[:, 0] @ torch.linalg.solve(theta, y[:, 0]))))
    for key, values in measured.items():
        assert float(row[key]) == pytest.approx(np.mean(values), rel=2e-3), key


def _perturbation_rows(out: Path) -> dict:
    return {(r["activation"], int(r["m"]), r["direction"], float(r["R"])): r
            for r in read_csv(out / "tables" / "perturbation.csv")}


@pytest.mark.parametrize("activation", ["exp", "softmax"])
def test_perturbation_gradient_row_against_dense_autograd_kernels(study_dir, activation):
    """One row per activation recomputed with kernels J J^T / (m kappa^2) from autograd Jacobians of F written out,
    the gradient direction from autograd of the loss, and lambda from eigvalsh of H*."""
    from overparam.data import sphere

    out, _ = study_dir
    rows = _perturbation_rows(out)
    width, radius = TINY.section("training").widths[0], TINY.section("perturbation").radii[len(TINY.section("perturbation").radii) // 2]
    row = rows[activation, width, "gradient", radius]
    data = sphere(TINY.section("training").n, TINY.d, seed=TINY.seed)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    net = TwoLayerNet(TINY.d, width, 1, activation, init=TINY.init, sigma=TINY.sigma, seed=0)
    W0 = net.W.clone().requires_grad_(True)
    loss = 0.5 * (_direct_forward(activation, W0, net.a, X, net.kappa) - y).square().sum()
    (gradient,) = torch.autograd.grad(loss, W0)
    U = radius * gradient / gradient.norm(dim=1, keepdim=True)
    H0 = _autograd_kernel(activation, W0.detach(), net.a, X, net.kappa)
    H = _autograd_kernel(activation, W0.detach() + U, net.a, X, net.kappa)
    lam = float(np.linalg.eigvalsh(infinite_ntk(activation, X).numpy())[0])
    assert float(row["change/lambda"]) == pytest.approx(float(np.abs(np.linalg.eigvalsh((H - H0).numpy())).max()) / lam,
                                                        rel=1e-8)
    assert float(row["lambda_min/lambda"]) == pytest.approx(float(np.linalg.eigvalsh(H.numpy())[0]) / lam, rel=1e-8)


def test_softmax_kernel_is_exactly_shift_invariant_and_exp_becomes_DHD(study_dir):
    """SPEC §10: a shared shift u leaves softmax's kernel unchanged (every row of z moves by one constant) and
    turns exp's into D H D, D = diag(e^<u, x_i>); both to 1e-12, with kernels from autograd Jacobians."""
    from overparam.data import sphere

    out, _ = study_dir
    shifts = [float(r["change/lambda"]) for key, r in _perturbation_rows(out).items() if key[0] == "softmax"
              and key[2] == "shift"]
    assert shifts and max(shifts) <= 1e-12
    X = torch.from_numpy(sphere(TINY.section("training").n, TINY.d, seed=TINY.seed).X)
    u = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)[:TINY.d]
    for activation in ("softmax", "exp"):
        net = TwoLayerNet(TINY.d, 64, 1, activation, seed=3)
        H0 = _autograd_kernel(activation, net.W, net.a, X, net.kappa)
        H = _autograd_kernel(activation, net.W + u, net.a, X, net.kappa)
        expected = H0 if activation == "softmax" else torch.diag(torch.exp(X @ u)) @ H0 @ torch.diag(torch.exp(X @ u))
        assert float((H - expected).abs().max()) <= 1e-12 * float(H0.abs().max())


def test_perturbation_radius_table_interpolates_the_crossing(study_dir):
    """R* of tables/perturbation_radius.csv lies where change/lambda crosses 1/4 in tables/perturbation.csv:
    between the two grid radii around the first crossing, at the log-log interpolation of the two values."""
    out, _ = study_dir
    rows = _perturbation_rows(out)
    radii = sorted(TINY.section("perturbation").radii)
    for star in read_csv(out / "tables" / "perturbation_radius.csv"):
        for direction in ("random", "shift", "gradient", "worst"):
            changes = [float(rows[star["activation"], int(star["m"]), direction, r]["change/lambda"]) for r in radii]
            cell = star[f"R* {direction}"]
            crossing = next((i for i, c in enumerate(changes) if c >= 0.25), None)
            if crossing is None:
                assert cell.startswith(">")
            elif crossing == 0:
                assert cell.startswith("<=")
            else:
                (r0, c0), (r1, c1) = (radii[crossing - 1], changes[crossing - 1]), (radii[crossing], changes[crossing])
                expected = r1 if c0 == 0 else np.exp(np.interp(np.log(0.25), np.log([c0, c1]), np.log([r0, r1])))
                assert float(cell) == pytest.approx(expected, rel=1e-9)


def test_generalisation_training_sets_are_nested_and_the_test_set_fixed():
    from overparam.study.generalisation import split, teacher

    small, large = split(6, FlatConfig(TINY)), split(12, FlatConfig(TINY))
    np.testing.assert_array_equal(small[0], large[0][:6])
    np.testing.assert_array_equal(small[1], large[1][:6])
    np.testing.assert_array_equal(small[2], large[2])
    np.testing.assert_array_equal(small[3], large[3])
    # labels are the teacher plus noise of the configured size: the residuals' spread is that noise
    residual = large[3][:, 0] - teacher(large[2], TINY.seed)
    assert 0.5 * TINY.section("generalisation").noise < residual.std() < 1.5 * TINY.section("generalisation").noise
