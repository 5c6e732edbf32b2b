"""The runs store: rows and curves round-trip, upserts never duplicate, concurrent writers are safe."""

import builtins
import json
import multiprocessing
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest

from overparam.sweep import RunResult, Store, SweepSpec

SPEC = SweepSpec.from_dict({"activations": ["exp", "relu"], "widths": [8, 16], "n": [4], "seeds": 3})


def result(group, seed, status="converged", residual=1e-3):
    curves = {"step": np.arange(4), "residual_norm": np.array([1.0, 0.1, 0.01, residual])}
    metrics = {"steps": 3, "final_residual": residual, "lambda_min": 0.5, "kernel_distance": np.float64(0.1),
               "device": "cpu", "torch_version": "x", "not_a_column": 1}
    return RunResult(group.config, group.config_hash, seed, status, metrics, curves=curves)


def test_rows_and_curves_round_trip(tmp_path):
    group = SPEC.groups()[0]
    with Store(tmp_path / "runs.db") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.save([result(group, 0), result(group, 1, "max_steps", 0.5)])
        rows = store.runs()
        assert [(r["seed"], r["status"], r["final_residual"]) for r in rows] == [(0, "converged", 1e-3),
                                                                              (1, "max_steps", 0.5)]
        row = rows[1]
        assert row["config"] == group.config and row["activation"] == "exp" and row["width"] == 8
        assert row["curves"].startswith(f"runs.curves/{group.config_hash}/1-")
        np.testing.assert_array_equal(store.curve(row)["residual_norm"], [1.0, 0.1, 0.01, 0.5])
        assert not list((tmp_path / "runs.curves" / group.config_hash).glob("*.tmp"))


def test_upsert_keeps_one_row_per_run(tmp_path):
    group = SPEC.groups()[0]
    with Store(tmp_path / "runs.db") as store:
        store.save([result(group, 0, residual=0.3)])
        store.save([result(group, 0, residual=0.2)])
        rows = store.runs()
        assert len(rows) == 1 and rows[0]["final_residual"] == 0.2
        assert store.curve(rows[0])["residual_norm"][-1] == 0.2
        assert len(list((tmp_path / "runs.curves").rglob("*.parquet"))) == 1  # the replaced curve is gone


def test_running_marks_and_what_a_sweep_skips(tmp_path):
    group, other = SPEC.groups()[:2]
    with Store(tmp_path / "runs.db") as store:
        store.save([result(group, 0), RunResult(group.config, group.config_hash, 1, "failed", error="boom")])
        store.mark_running(group)  # seeds 0, 1, 2
        status = {r["seed"]: r["status"] for r in store.runs()}
        assert status == {0: "converged", 1: "running", 2: "running"}  # a finished run is never reopened
        store.save([RunResult(group.config, group.config_hash, 1, "failed", error="boom")])
        assert store.finished() == {(group.config_hash, 0), (group.config_hash, 1)}
        assert store.finished(retry_failed=True) == {(group.config_hash, 0)}
        assert store.runs(status="failed")[0]["error"] == "boom"
        assert len(store.runs(width=[8, 16], activation="exp")) == 3
        assert store.runs(activation="relu") == [] and other.config["activation"] == "exp"
        with pytest.raises(ValueError, match="cannot filter on 'colour'"):
            store.runs(colour="red")
        with pytest.raises(ValueError, match="has no curves"):
            store.curve(store.runs(status="failed")[0])


def test_bad_store_paths(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        Store(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        Store(tmp_path / "missing" / "runs.db", create=False)
    assert not (tmp_path / "missing").exists()  # a reader makes nothing
    Store(tmp_path / "new" / "runs.db").runs()  # a writer makes its folder
    assert (tmp_path / "new" / "runs.db").is_file()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a runs store"):
        Store(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (text)").connection.commit()
    with pytest.raises(ValueError, match="has no runs table"):
        Store(other, create=False)
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("notes",)]  # a reader leaves a foreign database untouched
    Store(tmp_path / "runs.db").close()
    with Store(tmp_path / "runs.db", create=False) as store:
        assert store.runs() == []


def write_seeds(path, first, last, tag):
    """One writer process: claim and save seeds first..last-1, one transaction each."""
    group = SweepSpec.from_dict({"activations": ["exp"], "widths": [8], "n": [4], "seeds": 40}).groups()[0]
    with Store(path, timeout=60) as store:
        for seed in range(first, last):
            store.mark_running(group.with_seeds([seed]))
            curves = {"step": np.arange(3), "residual_norm": np.full(3, tag)}
            store.save([RunResult(group.config, group.config_hash, seed, "converged",
                                  {"final_residual": tag}, curves=curves)])


def test_concurrent_writers(tmp_path):
    path = tmp_path / "runs.db"
    Store(path).close()
    ranges = [(0, 25, 1.0), (10, 35, 2.0), (20, 40, 3.0)]  # overlapping seeds, written at the same time
    context = multiprocessing.get_context("fork")  # the writers only touch sqlite and parquet
    writers = [context.Process(target=write_seeds, args=(path, *r)) for r in ranges]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    db = sqlite3.connect(path)
    keys = db.execute("SELECT seed, COUNT(*) FROM runs GROUP BY config_hash, seed").fetchall()
    assert sorted(seed for seed, _ in keys) == list(range(40)) and {count for _, count in keys} == {1}
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store(path) as store:
        for row in store.runs():
            assert row["status"] == "converged"
            # the curve a row names is the one written with it, whichever writer won
            assert store.curve(row)["residual_norm"][0] == row["final_residual"]
    assert len(list((tmp_path / "runs.curves").rglob("*.parquet"))) == 40


def test_study_units_are_a_table_of_the_same_store(tmp_path):
    from overparam.study.cache import UnitCache

    cache = UnitCache(tmp_path / "runs.db")
    calls = []
    value = cache.compute("a:1", "section", lambda: calls.append(1) or {"x": [1.5, 2]})
    again = cache.compute("a:1", "section", lambda: calls.append(1) or {"x": "never"})
    cache.close()
    assert value == again == {"x": [1.5, 2]} and calls == [1] and (cache.computed, cache.reused) == (1, 1)
    with Store(tmp_path / "runs.db", create=False) as store:  # a runs store that also holds the unit
        assert store.unit("a:1") == {"x": [1.5, 2]} and store.unit("b") is None and store.runs() == []


def test_a_store_from_before_a_column_gains_it_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    group = SPEC.groups()[0]
    with Store(path) as store:
        store.save([result(group, 0)])
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE runs DROP COLUMN lambda_rounding")  # as written before the column existed
    db.commit()
    db.close()
    with Store(path, create=False) as store:
        [row] = store.runs()
        assert row["final_residual"] == 1e-3 and row["lambda_rounding"] is None
        store.save([RunResult(group.config, group.config_hash, 1, "converged", {"lambda_rounding": True})])
        assert [r["lambda_rounding"] for r in store.runs()] == [None, 1]


def pandas_store(path):
    """Four groups (two activations, two widths) with their seeds: finished runs with curves of their own
    length, a failed run without curves, a run still marked running; record_every None or an integer."""
    spec = SweepSpec.from_dict({"activations": ["exp", "relu"], "widths": [8, 16], "n": [4], "seeds": 3,
                                "record_every": 2})
    store = Store(path)
    for number, group in enumerate(spec.groups()):
        runs = []
        for seed in range(2):
            steps = 3 + number + seed
            curves = {"step": np.arange(steps), "loss": np.linspace(1.0, 0.1 * (number + 1), steps),
                      "residual_norm": np.geomspace(1.0, 10.0 ** -(seed + 2), steps)}
            runs.append(RunResult(group.config, group.config_hash, seed, "converged",
                                  {"steps": steps - 1, "final_residual": curves["residual_norm"][-1],
                                   "lambda_min": 0.25 * (number + 1), "lambda_rounding": seed == 1}, curves))
        runs.append(RunResult(group.config, group.config_hash, 2, "failed", error="boom"))
        store.save(runs)
    store.mark_running(SweepSpec.from_dict({"activations": ["relu"], "widths": [32], "n": [4], "seeds": 1})
                       .groups()[0])
    return store


def test_to_pandas_has_the_rows_sqlite_reads(tmp_path):
    pytest.importorskip("pandas")
    with pandas_store(tmp_path / "runs.db") as store:
        frame = store.to_pandas()
        selected = store.to_pandas(activation="relu", status="converged")
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.row_factory = sqlite3.Row
        plain = {(row["config_hash"], row["seed"]): dict(row) for row in db.execute("SELECT * FROM runs")}
    assert len(frame) == len(plain) == 13
    columns = [row[1] for row in sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA table_info(runs)")]
    assert list(frame.columns) == columns + ["config.optimizer", "config.record_every"]
    for record in frame.to_dict("records"):
        expected = plain[(record["config_hash"], record["seed"])]
        for name, value in expected.items():
            if value is None:
                assert record[name] is None or record[name] != record[name], name  # None, NaN or pd.NA
            else:
                assert record[name] == value and type(value)(record[name]) == value, name
        config = json.loads(expected["config"])
        assert (record["config.optimizer"], record["config.record_every"]) == (config["optimizer"],
                                                                              config["record_every"])
    assert str(frame["width"].dtype) == "Int64" and str(frame["final_residual"].dtype) == "float64"
    assert sorted(selected["seed"].tolist()) == [0, 0, 1, 1] and set(selected["activation"]) == {"relu"}


def test_curves_to_pandas_is_every_runs_curve_in_one_long_table(tmp_path):
    pytest.importorskip("pandas")
    with pandas_store(tmp_path / "runs.db") as store:
        long = store.curves_to_pandas()
        exp_only = store.curves_to_pandas(activation="exp")
    with sqlite3.connect(tmp_path / "runs.db") as db:
        named = db.execute("SELECT config_hash, seed, curves, activation FROM runs WHERE curves IS NOT NULL").fetchall()
    assert len(named) == 8 and list(long.columns[:2]) == ["config_hash", "seed"]
    for config_hash, seed, curves, _ in named:
        part = long[(long["config_hash"] == config_hash) & (long["seed"] == seed)]
        written = pq.read_table(tmp_path / curves).to_pydict()
        assert {name: part[name].tolist() for name in written} == written
    assert len(long) == sum(pq.read_metadata(tmp_path / row[2]).num_rows for row in named)
    assert len(exp_only) == sum(pq.read_metadata(tmp_path / row[2]).num_rows for row in named if row[3] == "exp")


def test_runs_table_round_trips_through_parquet(tmp_path):
    pandas = pytest.importorskip("pandas")
    with pandas_store(tmp_path / "runs.db") as store:
        table = store.runs_table()
        frame = store.to_pandas()
    pq.write_table(table, tmp_path / "runs.parquet")
    back = pq.read_table(tmp_path / "runs.parquet")
    assert back.equals(table)
    pandas.testing.assert_frame_equal(pandas.read_parquet(tmp_path / "runs.parquet", dtype_backend="numpy_nullable")
                                      .astype(frame.dtypes.to_dict()), frame)


def test_missing_pandas_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    with pandas_store(tmp_path / "runs.db") as store:
        monkeypatch.setattr(builtins, "__import__", no_pandas)
        for method in (store.to_pandas, store.curves_to_pandas):
            with pytest.raises(ImportError) as error:
                method()
            assert str(error.value) == "pandas is not installed; install it with: pip install 'overparam[pandas]'"
        assert store.runs_table().num_rows == 13  # Arrow and Parquet need no pandas
