"""Section (a), NTK concentration: every column of every row recomputed from autograd kernels and the closed-form
H* (tests/study_reference.py), and the summary facts against numpy's fit of the same points."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from study_reference import autograd_kernel, limit_kernel, mean_se, spectral_norm

from overparam.data import unit_sphere
from overparam.models import initial_weights
from overparam.study import StudyConfig, run_study

CONFIG = StudyConfig(d=4, sections=("concentration",), settings={
    "concentration": {"n": 10, "widths": (16, 64, 256), "seeds": 3}}).validate()
SETTINGS = CONFIG.section("concentration")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("concentration")
    result = run_study(CONFIG, out)
    assert result.failures == []
    with open(out / "tables" / "concentration.csv", newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return out, result, header, rows


def test_every_row_and_column_against_autograd_kernels_and_the_closed_form(study):
    _, _, header, rows = study
    assert header == ["activation", "m", "rel. error", "± se", "lambda_min(H(0))", "± se", "lambda_min(H*)",
                      "P(||H-H*|| <= lambda/4)", "seeds with rounding spectra"]
    assert [(r[0], int(r[1])) for r in rows] == [(a, m) for a in CONFIG.activations for m in SETTINGS.widths]
    X = torch.from_numpy(unit_sphere(SETTINGS.n, CONFIG.d, CONFIG.seed))
    eps = np.finfo(float).eps
    for row in rows:
        activation, width = row[0], int(row[1])
        limit = limit_kernel(activation, X.numpy(), CONFIG.sigma)
        limit_values = np.linalg.eigvalsh(limit)
        relative, smallest, holds, rounding = [], [], [], 0
        for seed in range(SETTINGS.seeds):
            W, a = initial_weights(width, CONFIG.d, 1, "independent", CONFIG.sigma, seed)
            H = autograd_kernel(activation, W, a, X, 1.0).numpy()  # H = Theta / (m kappa^2) does not depend on kappa
            distance = spectral_norm(H - limit)
            values = np.linalg.eigvalsh(H)
            relative.append(distance / limit_values[-1])
            smallest.append(values[0])
            flagged = values[0] < eps * SETTINGS.n * values[-1] or limit_values[0] < eps * SETTINGS.n * limit_values[-1]
            rounding += flagged
            holds.append(distance <= limit_values[0] / 4 and not flagged)
        numbers = [float(v) for v in row[2:8]]
        expected = [*mean_se(relative), *mean_se(smallest), limit_values[0], np.mean(holds)]
        # kernels by autograd against the fused passes, and the closed-form H* against the library's: 1e-10
        assert numbers == pytest.approx(expected, rel=1e-9, abs=1e-14), (activation, width)
        assert int(row[8]) == rounding


def test_summary_facts_are_numpys_fit_of_the_table(study):
    out, _, _, rows = study
    with open(out / "tables" / "summary.csv", newline="", encoding="utf-8") as handle:
        facts = [r for r in csv.DictReader(handle) if r["section"] == "concentration"]
    assert [f["activation"] for f in facts] == list(CONFIG.activations)
    for fact in facts:
        mine = [r for r in rows if r[0] == fact["activation"]]
        slope = np.polyfit(np.log([float(r[1]) for r in mine]), np.log([float(r[2]) for r in mine]), 1)[0]
        assert float(fact["value"]) == pytest.approx(slope, rel=1e-10)
        assert float(fact["low"]) <= float(fact["high"])
    html = (out / "report.html").read_text()
    assert '<table id="summary">' in html and 'href="#concentration"' in html
