"""Durability of the runs store: a sweep killed with SIGKILL resumes to the values of an uninterrupted
sweep, two processes can run one sweep on one store, and a damaged store is refused untouched."""

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time

import pytest

from overparam.sweep import Store, run_sweep

SPEC = {"activations": ["relu"], "widths": list(range(8, 28, 2)), "n": [6], "d": 3, "seeds": 2,
        "steps": 300, "tol": 0.05}
TOTAL = 20
SWEEP = "import json, sys; from overparam.sweep import run_sweep; run_sweep(json.loads(sys.argv[1]), sys.argv[2], workers=1)"


def count_rows(path, query: str = "SELECT COUNT(*) FROM runs WHERE status != 'running'") -> int:
    """The count `query` gives on a store another process is writing (0 before it exists)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(query).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def test_resume_after_sigkill(tmp_path):
    path = tmp_path / "runs.db"
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP, json.dumps(SPEC), str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while count_rows(path) < 4 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert sweep.returncode == -signal.SIGKILL, sweep.stderr.read()

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    db.close()
    survived = sum(count for status, count in before.items() if status != "running")
    assert 4 <= survived < TOTAL, before  # killed in the middle, finished runs kept

    counts = run_sweep(SPEC, path, workers=1)
    assert counts.skipped == survived and counts.done == TOTAL - survived and counts.failed == 0

    db = sqlite3.connect(path)
    per_run = db.execute("SELECT COUNT(*) FROM runs GROUP BY config_hash, seed").fetchall()
    assert len(per_run) == TOTAL and {count for (count,) in per_run} == {1}
    db.close()
    clean = tmp_path / "clean.db"
    run_sweep(SPEC, clean, workers=1)
    assert outcomes(path) == outcomes(clean)


#: What a run measured: compared bit for bit between stores (floats by their exact bits).
MEASURED = ("status", "steps", "final_residual", "final_loss", "lr", "max_movement", "lambda_min", "kernel_distance")


def outcomes(path) -> dict:
    """(width, seed) -> the run's MEASURED values and its curve of ||F - y||, as exact bit patterns."""
    with Store(path, create=False) as store:
        rows = store.runs()
        table = {(row["width"], row["seed"]): ([struct.pack("<d", v) if isinstance(v, float) else v
                                                for v in (row[name] for name in MEASURED)],
                                               store.curve(row)["residual_norm"].tobytes()) for row in rows}
    assert len(table) == len(rows) == TOTAL
    statuses = {value[0][0] for value in table.values()}
    assert statuses <= {"converged", "max_steps"} and len(statuses) == 2  # both outcomes are compared
    return table


def test_two_processes_running_one_sweep_store_each_run_once_with_clean_values(tmp_path):
    path = tmp_path / "runs.db"
    sweeps = [subprocess.Popen([sys.executable, "-c", SWEEP, json.dumps(SPEC), str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for sweep in sweeps:
        assert sweep.wait(timeout=300) == 0, sweep.stderr.read()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT config_hash || seed) FROM runs").fetchone() == (TOTAL, TOTAL)
    db.close()
    clean = tmp_path / "clean.db"
    run_sweep(SPEC, clean, workers=1)
    assert outcomes(path) == outcomes(clean)
    assert len(list((tmp_path / "runs.curves").rglob("*.parquet"))) == TOTAL  # replaced curves were deleted


def _damaged_store(tmp_path, how: str):
    path = tmp_path / "runs.db"
    run_sweep({**SPEC, "widths": [8, 10]}, path, workers=1)
    Store(path).close()  # checkpoints the WAL into runs.db
    for extra in (path.with_name("runs.db-wal"), path.with_name("runs.db-shm")):
        extra.unlink(missing_ok=True)
    content = path.read_bytes()
    if how == "truncated":
        content = content[:len(content) // 3]
    else:  # every page after the header overwritten with noise
        noise = bytes((37 * i + 11) % 256 for i in range(len(content) - 100))
        content = content[:100] + noise
    path.write_bytes(content)
    return path, content


SWEEP_INTO = ["sweep", "--store", "{store}", "--activations", "relu", "--widths", "8", "--n", "6", "--d", "3",
              "--steps", "5"]


@pytest.mark.parametrize("how, command", [("truncated", ["results", "{store}"]), ("truncated", SWEEP_INTO),
                                          ("corrupted", ["threshold", "{store}", "--no-figure"]),
                                          ("corrupted", SWEEP_INTO)])
def test_a_damaged_store_is_refused_in_one_line_and_left_untouched(tmp_path, how, command):
    path, content = _damaged_store(tmp_path, how)
    args = [part.format(store=path) for part in command]
    result = subprocess.run([sys.executable, "-m", "overparam", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a runs store" in lines[0] and str(path) in lines[0]
    assert path.read_bytes() == content
