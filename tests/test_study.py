"""overparam study: a tiny study end to end; numbers against direct recomputation; resume; the browser."""

import csv
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import headless_browser

from overparam.study import StudyConfig, run_study

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, settings={
    "concentration": {"n": 12, "widths": (32, 128, 512), "seeds": 3},
    "training": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "laziness": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 400},
    "threshold": {"ns": (4, 8), "kernel_ns": (4, 8), "widths": (2, 4, 8, 16, 32), "draws": 2, "seeds": 2,
                  "max_steps": 400, "kernel_widths": (8, 16, 32, 64, 128, 256, 512), "lambda_ns": (4, 8, 16),
                  "dimension_ds": (2, 4), "dimension_ns": (4, 8)},
    "perturbation": {"n": 8, "widths": (64, 256), "radii": (1e-3, 1e-2, 1e-1, 1.0), "ascent_steps": 3, "seeds": 2,
                     "steps": 400},
    "initialisation": {"n": 8, "width": 128, "seeds": 2, "steps": 400},
    "diffusion": {"n": 256, "width": 64, "steps": 100, "sampler_steps": 20, "samples": 300, "score_samples": 2000,
                  "widths": (32, 64), "ns": (128, 256), "twin_large_n": 512},
    "generalisation": {"n": 12, "ns": (6, 12), "widths": (32, 128), "steps": 3000, "test": 50},
    "real_data": {"ns": (12,), "label_draws": 2, "train_n": 12, "width": 16, "steps": 200, "threshold_ns": (8,),
                  "threshold_widths": (2, 4), "threshold_seeds": 2, "max_steps": 400},
    "lazy_rich": {"n": 8, "widths": (16, 32), "alphas": (0.1, 1.0, 10.0), "seeds": 2, "steps": 300, "test": 20},
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
    # every announced unit is computed once, except the training runs that laziness and perturbation share
    # with the training section, which computed them first (the threshold and real_data sweeps are units too:
    # one per slice of the sweep)
    perturbed = len(TINY.activations) * len(TINY.section("perturbation").widths)
    assert PROGRESS["announced"]["perturbation"] == 2 * perturbed
    shared = PROGRESS["announced"]["laziness"] + perturbed
    assert result.reused == shared
    assert result.computed == sum(PROGRESS["announced"].values()) - shared




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
