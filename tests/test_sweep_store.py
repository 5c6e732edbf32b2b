"""The runs store: rows and curves round-trip, upserts never duplicate, concurrent writers are safe."""

import multiprocessing
import sqlite3

import numpy as np
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
