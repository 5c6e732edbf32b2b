"""`overparam sweep`, `overparam results` and `overparam threshold` through the console entry point."""

import csv
import io
import json
import sqlite3

import pyarrow.parquet as pq
import pytest


SPEC = """
[sweep]
activations = ["relu", "exp"]
widths = [4, 8, 16]
n = [4, 6]
d = 3
seeds = 2
init = "coupled"
data = "sphere"
lr = "auto"
tol = 1e-2
steps = 150
"""


@pytest.fixture
def swept(tmp_path, overparam):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    store = tmp_path / "runs.db"
    result = overparam("sweep", spec, "--store", store, "--workers", "1", "--json")
    assert result.returncode in (0, None), result.stderr
    return store, json.loads(result.stdout)


def test_sweep_results_and_threshold(swept, overparam, tmp_path):
    store, summary = swept
    assert summary["runs"] == 24 and summary["trained"] == 24 and summary["skipped"] == 0
    assert sum(summary["statuses"].values()) == 24

    listed = overparam("results", store, "--format", "json")
    assert listed.returncode in (0, None), listed.stderr
    runs = json.loads(listed.stdout)
    assert isinstance(runs, list) and len(runs) == 24
    for run_ in runs:
        assert {"activation", "width", "n", "seed", "status"} <= run_.keys()
        assert run_["status"] in ("converged", "max_steps", "diverged")
    filtered = json.loads(overparam("results", store, "--format", "json", "--activation", "exp",
                                    "--width", "8", "--where", "n=6").stdout)
    assert [(r["activation"], r["width"], r["n"]) for r in filtered] == [("exp", 8, 6)] * 2

    table = list(csv.DictReader(io.StringIO(overparam("results", store, "--format", "csv", "--seed", "1").stdout)))
    assert len(table) == 12 and {row["seed"] for row in table} == {"1"}
    assert "24 run(s)" in overparam("results", store).stdout

    for format in ("csv", "json"):  # --out writes what stdout shows
        out = tmp_path / "export" / f"runs.{format}"
        assert overparam("results", store, "--format", format, "--seed", "1", "--out", out).stdout == \
            f"wrote 12 run(s) to {out}\n"
        assert out.read_text() == overparam("results", store, "--format", format, "--seed", "1").stdout

    parquet = overparam("results", store, "--format", "parquet", "--activation", "exp", "--out", tmp_path / "runs.parquet")
    assert parquet.returncode in (0, None) and parquet.stdout == f"wrote 12 run(s) to {tmp_path / 'runs.parquet'}\n"
    exported = pq.read_table(tmp_path / "runs.parquet").to_pylist()
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        expected = [dict(row) for row in db.execute("SELECT * FROM runs WHERE activation = 'exp'")]
    key = lambda row: (row["config_hash"], row["seed"])  # noqa: E731
    assert len(exported) == 12 and sorted(map(key, exported)) == sorted(map(key, expected))
    for row, plain in zip(sorted(exported, key=key), sorted(expected, key=key)):
        assert {name: row[name] for name in plain} == plain
        config = json.loads(plain["config"])
        assert row["config.optimizer"] == config["optimizer"] == "gd"
        assert row["config.record_every"] == config["record_every"]

    again = json.loads(overparam("sweep", tmp_path / "spec.toml", "--store", store, "--json").stdout)
    assert again["skipped"] == 24 and again["trained"] == 0

    figure = tmp_path / "m.png"
    shown = overparam("threshold", store, "--bootstrap", "50", "--json", "--figure", figure)
    assert shown.returncode in (0, None), shown.stderr
    report = json.loads(shown.stdout)
    assert report["delta"] == 0.1 and report["figure"] == str(figure)
    rows = [t for t in report["thresholds"] if t["kind"] == "optimization"]
    assert len(rows) == 4 and all(sum(t["runs"]) == 6 for t in rows)
    assert figure.read_bytes()[:4] == b"\x89PNG"
    text = overparam("threshold", store, "--bootstrap", "20", "--no-figure")
    assert "optimization threshold" in text.stdout and "kernel threshold" in text.stdout


def test_sweep_from_flags_only(tmp_path, overparam):
    store = tmp_path / "flags.db"
    result = overparam("sweep", "--store", store, "--activations", "softmax", "--widths", "4,8", "--n", "3",
                       "--d", "3", "--seeds", "0,5", "--steps", "theory:1", "--tol", "0.1", "--max-steps", "50",
                       "--workers", "1", "--json")
    assert result.returncode in (0, None), result.stderr
    assert json.loads(result.stdout)["trained"] == 4
    runs = json.loads(overparam("results", store, "--format", "json").stdout)
    assert sorted({r["seed"] for r in runs}) == [0, 5]
    assert all(r["budget_rule"] == "theory:1" and r["budget"] <= 50 for r in runs)


def test_sweep_on_digits_from_a_toml_spec(tmp_path, overparam):
    import numpy as np

    from overparam.data import digits

    spec = tmp_path / "digits.toml"
    spec.write_text('[sweep]\nactivations = ["relu"]\nwidths = [4, 8]\nn = [12]\nd = 64\nseeds = 2\n'
                    'data = "digits:classes=3,5"\ntol = 1e-2\nsteps = 100\n')
    result = overparam("sweep", spec, "--store", tmp_path / "runs.db", "--workers", "1", "--json")
    assert result.returncode in (0, None), result.stderr
    assert json.loads(result.stdout)["trained"] == 4
    runs = json.loads(overparam("results", tmp_path / "runs.db", "--format", "json").stdout)
    G = digits((3, 5), n=12).X @ digits((3, 5), n=12).X.T
    H = G * (np.pi - np.arccos(np.clip(G - np.diag(np.diag(G) - 1), -1, 1))) / (2 * np.pi)  # relu's H* of the digits, written out
    assert all(r["d"] == 64 and r["lambda_min"] == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-9) for r in runs)
    spec.write_text('[sweep]\nactivations = ["relu"]\nwidths = [4]\nn = [12]\ndata = "digits:classes=3,5"\n')
    wrong = overparam("sweep", spec, "--store", tmp_path / "runs.db")
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        "overparam: error: data = 'digits:classes=3,5' has its own shape: use d = 64 and k = 1"]


@pytest.mark.parametrize("content,message", [
    ("[sweep]\nactivations = ['exp']\nwidths = [8]\nn = [4]\ncolour = 'red'\n", "unknown sweep key 'colour'"),
    ("[sweep]\nwidths = [8,\n", "not valid TOML"),
    ("[sweep]\nactivations = ['exp']\nwidths = [7]\nn = [4]\n", "every width must be even"),
    ("title = 'no table'\n", "no [sweep] table"),
])
def test_bad_spec_exits_2_with_one_line(tmp_path, overparam, content, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(content)
    result = overparam("sweep", spec, "--store", tmp_path / "runs.db")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_other_user_errors_exit_2(tmp_path, overparam):
    for args, message in [
        (("sweep", tmp_path / "missing.toml"), "does not exist"),
        (("sweep", "--activations", "exp"), "needs widths, n"),
        (("sweep", "--activations", "exp", "--widths", "8", "--n", "4", "--backend", "slurm"), "unknown backend"),
        (("results", tmp_path / "none.db"), "does not exist"),
        (("threshold", tmp_path / "none.db"), "does not exist"),
    ]:
        result = overparam(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    store = tmp_path / "runs.db"
    overparam("sweep", "--activations", "exp", "--widths", "4", "--n", "3", "--d", "3", "--seeds", "1",
              "--steps", "2", "--store", store, "--workers", "1")
    assert overparam("results", store, "--format", "xml").returncode == 2
    bad_where = overparam("results", store, "--where", "colour=red")
    assert bad_where.returncode == 2 and "column=value" in bad_where.stderr
    bad_figure = overparam("threshold", store, "--figure", tmp_path / "missing" / "f.png")
    assert bad_figure.returncode == 2 and "its folder does not exist" in bad_figure.stderr
    assert len(bad_figure.stderr.strip().splitlines()) == 1


def test_every_bad_flag_of_sweep_threshold_and_results_names_itself(swept, overparam, tmp_path):
    """Issue 16.3: exit 2 and one line saying what is wrong, per flag."""
    store, _ = swept
    grid = ("--activations", "relu", "--widths", "4", "--n", "3", "--d", "3", "--steps", "2")
    cases = [
        (("threshold", store, "--delta", "1.5"), "delta must be between 0 and 1, got 1.5"),
        (("threshold", store, "--delta", "nan"), "delta must be between 0 and 1, got nan"),
        (("threshold", store, "--level", "0"), "level must be between 0 and 1, got 0.0"),
        (("threshold", store, "--bootstrap", "0"), "bootstrap must be >= 1, got 0"),
        (("threshold", store, "--bootstrap", "many"), "Invalid value for '--bootstrap'"),
        (("sweep", "--store", tmp_path / "w.db", "--workers", "0", *grid), "workers must be >= 1, got 0"),
        (("sweep", "--store", tmp_path / "w.db", "--device", "tpu", *grid), "unknown device 'tpu'"),
        (("sweep", "--store", tmp_path / "w.db", "--threads", "0", *grid), "threads must be >= 1, got 0"),
        (("sweep", tmp_path / "nowhere.toml", "--store", tmp_path / "w.db"), "sweep spec"),
        (("results", tmp_path / "none.db"), f"store '{tmp_path / 'none.db'}' does not exist; run `overparam sweep`"),
        (("results", store, "--where", "width"), "--where takes column=value"),
        (("results", store, "--where", "width=wide"), "--where width='wide': width holds integers"),
        (("results", store, "--where", "tol=small"), "--where tol='small': tol holds numbers"),
        (("results", store, "--format", "xml"), "unknown format 'xml': use table, csv, json or parquet"),
        (("results", store, "--format", "parquet"), "--format parquet writes a file: give it with --out FILE"),
        (("results", store, "--out", tmp_path / "t.txt"), "--out takes csv, json or parquet output"),
        (("results", store, "--format", "csv", "--out", tmp_path), "is a folder; give a file name"),
    ]
    for args, message in cases:
        result = overparam(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "w.db").exists()  # no bad sweep created a store
    assert not (tmp_path / "t.txt").exists()
    eight = json.loads(overparam("results", store, "--format", "json", "--where", "width=8").stdout)
    assert len(eight) == 8 and {r["width"] for r in eight} == {8}  # a typed value matches the integer column


def test_rounding_lambda_is_flagged_in_the_store_and_the_results_table(tmp_path, overparam, monkeypatch):
    """exp at sigma = 0.1 with 12 points on the circle: H* ~ X X^T (rank 2) + O(sigma^2) terms whose rank is
    exhausted too, so its computed lambda_min is rounding; relu's arc-cosine kernel is well conditioned there."""
    import numpy as np
    import torch

    from overparam.data import sphere
    from overparam.kernels.infinite import infinite_ntk

    store = tmp_path / "r.db"
    result = overparam("sweep", "--store", store, "--activations", "exp,relu", "--widths", "8", "--n", "12",
                       "--d", "2", "--seeds", "1", "--sigma", "0.1", "--steps", "3", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["activation"]: r for r in json.loads(overparam("results", store, "--format", "json").stdout)}
    X = torch.from_numpy(sphere(12, 2).X)
    for activation, row in rows.items():
        values = np.linalg.eigvalsh(infinite_ntk(activation, X, 0.1).numpy())
        assert row["lambda_rounding"] == int(values[0] < np.finfo(float).eps * 12 * values[-1])
    assert rows["exp"]["lambda_rounding"] == 1 and rows["relu"]["lambda_rounding"] == 0
    monkeypatch.setenv("COLUMNS", "250")  # a terminal wide enough for every cell
    exp_row, relu_row = [line for line in overparam("results", store).stdout.splitlines() if "coupled" in line]
    assert "(rounding)" in exp_row and "(rounding)" not in relu_row
