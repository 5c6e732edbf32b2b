"""overparam study: a tiny study end to end; numbers against direct recomputation; resume; the browser."""

import csv
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet
from overparam.data import unit_sphere
from overparam.ntk import infinite_ntk, ntk
from overparam.study import StudyConfig, run_study

TINY = StudyConfig(
    preset="quick", d=4, kernel_n=12, kernel_widths=(32, 128, 512), kernel_seeds=3,
    train_n=8, train_widths=(64, 256), train_seeds=2, train_steps=400, tol=1e-2,
    threshold_ns=(4, 8), threshold_widths=(2, 4, 8, 16, 32), threshold_seeds=2, threshold_max_steps=400,
    delta=0.5, init_n=8, init_width=128, init_seeds=2,
    diffusion_n=256, diffusion_width=64, diffusion_steps=100, diffusion_sampler_steps=20, diffusion_samples=300,
    diffusion_score_samples=2000,
)
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
        assert section.reading and section.command.startswith("overparam study --preset quick --only")
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
    assert PROGRESS["announced"]["diffusion"] == len(TINY.activations) + 1
    assert result.computed == sum(PROGRESS["announced"][key] for key in ("concentration", "training", "diffusion",
                                                                         "initialisation"))


def test_diffusion_numbers_match_overparam_diffusion(study_dir):
    """The section's table equals `overparam diffusion` run alone with the same settings (softmax only:
    each activation is its own unit, so the rows must not depend on which other networks ran)."""
    from overparam.diffusion.experiment import run
    from overparam.study.cache import UnitCache
    from overparam.study.diffusion import diffusion_config, unit_key

    out, _ = study_dir
    rows = {r["score"]: r for r in read_csv(out / "tables" / "diffusion.csv")}
    assert list(rows) == [*TINY.activations, "exact", "trivial", "p0"]
    config = diffusion_config(TINY)
    result = run(replace(config, activations=("softmax",)))
    expected = {"softmax": result.metrics["softmax"], **result.metrics["baselines"]}
    columns = {"score error": "score_error", "± se": "score_error_stderr", "W2": "w2", "MMD^2": "mmd", "NLL": "nll",
               "weights TV": "weight_error"}
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
    X = torch.from_numpy(unit_sphere(TINY.kernel_n, TINY.d, TINY.seed))
    for activation in ("relu", "softmax"):
        limit = infinite_ntk(activation, X)
        top = float(torch.linalg.eigvalsh(limit)[-1])
        errors = []
        for seed in range(TINY.kernel_seeds):
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
    data = sphere(TINY.init_n, TINY.d, seed=TINY.seed)
    finals, steps = [], []
    for seed in range(TINY.init_seeds):
        history = train(TwoLayerNet(TINY.d, TINY.init_width, 1, "exp", init="independent", seed=seed),
                        data.X, data.y, lr="auto", steps=TINY.train_steps, tol=TINY.tol)
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
    from overparam.study import runner

    monkeypatch.setitem(runner.MODULES, "initialisation", "no_such_section")
    config = replace(TINY, sections=("concentration", "initialisation"), kernel_widths=(32,), kernel_seeds=1)
    result = run_study(config, tmp_path)
    assert [s.status for s in result.sections] == ["complete", "failed"]
    assert len(result.failures) == 1 and result.failures[0].startswith("initialisation: ModuleNotFoundError")
    assert result.computed == len(TINY.activations)  # one kernel per activation at one width and seed
    assert "Status: failed — ModuleNotFoundError" in (tmp_path / "report.html").read_text()
    rows = read_csv(tmp_path / "tables" / "concentration.csv")
    assert [r["activation"] for r in rows] == list(TINY.activations) and all(float(r["rel. error"]) > 0 for r in rows)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


OBSERVER = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var target = e.target || {};
  window.__problems.push('error: ' + (e.message || target.src || target.href || 'resource'));
}, true);
var __consoleError = console.error;
console.error = function () { window.__problems.push('console.error: ' + Array.from(arguments).join(' ')); };
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                     .map(function (img) { return img.getAttribute('src'); });
  document.title = 'RESULT:' + JSON.stringify({images: images.length, broken: broken, problems: window.__problems});
});
</script>"""


def test_report_renders_in_headless_chromium(study_dir):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed here (.ci/run installs Debian's chromium package)")
    out, _ = study_dir
    page = out / "browser_check.html"
    page.write_text((out / "report.html").read_text().replace("<head>", "<head>" + OBSERVER, 1))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={out / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r"<title>RESULT:(.*?)</title>", result.stdout, re.S)
    assert match, f"page did not finish loading: {result.stderr[-2000:]}"
    report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    expected = len(re.findall(r"<img ", (out / "report.html").read_text()))
    assert report["images"] == expected > 0
    assert report["broken"] == [] and report["problems"] == []
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "browser_check" in line]
    assert console == []
