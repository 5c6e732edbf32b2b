"""The study framework: keys derived from units' fields, records through JSON and back, settings checked where
they are built, TOML in and out, and two studies writing one folder at once."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest

from overparam.study import PRESETS, StudyConfig, preset
from overparam.study.framework import Unit, from_json, to_json
from overparam.study.training_run import SeedRun, TrainingRecord, TrainingRun

UNIT = TrainingRun("relu", 64, "coupled", 8, 4, 1.0, 0, 2, 100, 1e-2)


def test_a_units_key_changes_with_every_field_and_its_version():
    keys = {UNIT.key}
    for f in fields(UNIT):
        value = getattr(UNIT, f.name)
        changed = value + "x" if isinstance(value, str) else value * 2 + 1
        keys.add(TrainingRun(**{**{g.name: getattr(UNIT, g.name) for g in fields(UNIT)}, f.name: changed}).key)
    assert len(keys) == 1 + len(fields(UNIT))
    assert TrainingRun(**{f.name: getattr(UNIT, f.name) for f in fields(UNIT)}).key == UNIT.key

    @dataclass(frozen=True)
    class Bumped(TrainingRun):
        VERSION = 2

    assert Bumped(**{f.name: getattr(UNIT, f.name) for f in fields(UNIT)}).key.split(":")[0] != UNIT.key.split(":")[0]


def test_two_unit_classes_with_equal_fields_have_different_keys():
    @dataclass(frozen=True)
    class A(Unit):
        x: int

    @dataclass(frozen=True)
    class B(Unit):
        x: int

    assert A(1).key != B(1).key and A(1).key == A(1).key


def test_nested_records_survive_json():
    record = TrainingRecord(0.25, 0.125, 8, 64, [
        SeedRun(0, "converged", steps=3, step=[0, 1, 2, 3], loss2=[1.0, 0.5, 0.25, 0.125], kernel_steps=None,
                drift=float("nan")),
        SeedRun(1, "failed", error="diverged")])
    import json

    back = from_json(TrainingRecord, json.loads(json.dumps(to_json(record))))
    assert isinstance(back.runs[0], SeedRun) and back.runs[0].step == [0, 1, 2, 3] and back.runs[0].kernel_steps is None
    assert math.isnan(back.runs[0].drift) and back.runs[1].error == "diverged" and not back.runs[1].ok
    assert [r.seed for r in back.ok] == [0] and back.lam == 0.25


@pytest.mark.parametrize("data, message", [
    ({"training": {"widths": [3, 5]}}, "[training] widths must be even under coupled init"),
    ({"training": {"widths": []}}, "[training] widths needs at least 1 value"),
    ({"training": {"widths": [512, 128]}}, "[training] widths must be strictly increasing"),
    ({"concentration": {"seeds": 1}}, "[concentration] seeds must be at least 2"),
    ({"training": {"steps": "many"}}, "[training] steps must be an integer, got 'many'"),
    ({"training": {"stepz": 10}}, "unknown setting 'stepz' in [training]: choose from n, widths, seeds, steps"),
    ({"trainig": {}}, "unknown table [trainig]"),
    ({"study": {"tol": -1}}, "tol must be a positive number"),
    ({"study": {"init": "symmetric"}}, "init must be coupled or independent"),
    ({"study": {"activations": []}}, "give at least one activation"),
    ({"study": {"colour": 1}}, "unknown setting 'colour' in [study]"),
    ({"diffusion": {"sampler": "euler"}}, "[diffusion] sampler must be sde or ode"),
])
def test_settings_are_checked_where_they_are_built(data, message):
    with pytest.raises(ValueError) as error:
        StudyConfig.from_data(data)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_independent_init_allows_odd_widths_and_floats_accept_integers():
    config = StudyConfig.from_data({"study": {"init": "independent", "sigma": 2}, "training": {"widths": [3, 5]}})
    assert config.section("training").widths == (3, 5) and config.sigma == 2


def test_toml_round_trip_reproduces_every_setting(tmp_path):
    for name in PRESETS:
        config = preset(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(config.to_toml())
        again = StudyConfig.from_toml(path)
        assert again.to_data() == config.to_data()
        assert again.core() == config.core() and again.sections == config.sections


def test_a_toml_file_overrides_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[study]\nactivations = ["relu", "exp"]\n[training]\nwidths = [256, 1024]\n')
    config = StudyConfig.from_toml(path, base=preset("paper"))
    assert config.activations == ("relu", "exp") and config.d == 16
    assert config.section("training").widths == (256, 1024) and config.section("training").n == 128
    assert config.section("laziness") == preset("paper").section("laziness")  # untouched by the file


def test_presets_differ_where_the_data_says():
    quick, paper = preset("quick"), preset("paper")
    assert quick.section("training").n == 24 and paper.section("training").n == 128
    assert paper.section("threshold").lambda_ns[-1] == 20000 and paper.delta == 0.1
    assert preset("full").section("real_data").classes == tuple(range(10))


TOML = """[study]
d = 4
activations = ["relu", "softmax"]
sections = ["concentration"]
[concentration]
n = 10
widths = [16, 32, 64]
seeds = 3
"""


def test_two_studies_on_one_folder_both_finish_with_the_tables_of_one(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    command = [sys.executable, "-m", "overparam", "study", "--config", str(config), "--json"]
    shared = tmp_path / "shared"
    runs = [subprocess.Popen([*command, "--out", str(shared)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    alone = subprocess.run([*command, "--out", str(tmp_path / "alone")], capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr

    def table(folder):
        with open(folder / "tables" / "concentration.csv", newline="", encoding="utf-8") as handle:
            return list(csv.reader(handle))

    assert table(shared) == table(tmp_path / "alone") and len(table(shared)) == 1 + 2 * 3
    assert not list(shared.rglob("*.tmp"))
    assert StudyConfig.from_toml(shared / "study.toml").to_data() == StudyConfig.from_toml(config).to_data()
    html = (shared / "report.html").read_text()
    assert html.rstrip().endswith("</html>") and "Status: complete" in html


def test_bad_config_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in (("[training]\nwidths = [3]\n", "[training] widths must be even"),
                          ("[training\n", "is not valid TOML"),
                          ("[nosuch]\n", "unknown table [nosuch]")):
        bad.write_text(text)
        result = subprocess.run([sys.executable, "-m", "overparam", "study", "--config", str(bad), "--out",
                                 str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    missing = subprocess.run([sys.executable, "-m", "overparam", "study", "--config", str(tmp_path / "none.toml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
