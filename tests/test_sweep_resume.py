"""A sweep process killed with SIGKILL mid-way resumes with every run stored exactly once."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from overparam.sweep import Store, run_sweep

SPEC = {"activations": ["relu"], "widths": list(range(8, 28, 2)), "n": [6], "d": 3, "seeds": 2,
        "steps": 300, "tol": 0.0}
TOTAL = 20
SWEEP = "import json, sys; from overparam.sweep import run_sweep; run_sweep(json.loads(sys.argv[1]), sys.argv[2], workers=1)"


def finished_rows(path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status != 'running'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def test_resume_after_sigkill(tmp_path):
    path = tmp_path / "runs.db"
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP, json.dumps(SPEC), str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while finished_rows(path) < 4 and sweep.poll() is None and time.monotonic() < deadline:
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
    with Store(path) as store:
        rows = store.runs()
        assert {row["status"] for row in rows} == {"max_steps"}
        assert sorted((row["width"], row["seed"]) for row in rows) == [(w, s) for w in SPEC["widths"] for s in (0, 1)]
        for row in rows:
            assert store.curve(row)["step"][-1] == 300
