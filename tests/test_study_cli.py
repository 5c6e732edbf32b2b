"""`overparam study` through the console entry point: bad input, and Ctrl-C (SIGINT) in a real process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_sweep_resume import count_rows


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "unknown preset 'huge': use quick, paper or full"),
    (["--only", "concentration,colours"], "unknown section(s) ['colours']: choose from concentration"),
    (["--backend", "slurm"], "unknown backend 'slurm': use local or ray"),
    (["--device", "tpu"], "unknown device 'tpu': use cpu, cuda or cuda:N"),
    (["--activations", "relu,tanhh"], "unknown activation 'tanhh': choose one of relu, exp, softmax"),
    (["--activations", "nosuch:thing"], "activation 'nosuch:thing' does not import"),
])
def test_bad_study_options_exit_2_with_one_line(tmp_path, overparam, args, message):
    result = overparam("study", "--out", str(tmp_path / "study"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("overparam: error: ") and message in lines[0]
    assert not (tmp_path / "study" / "runs.db").exists()  # nothing ran


def test_study_on_a_missing_gpu_exits_2_before_any_work(tmp_path, overparam, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on a machine without a GPU
    result = overparam("study", "--only", "concentration", "--device", "cuda", "--out", str(tmp_path / "study"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "overparam: error: device 'cuda' was asked for but no CUDA GPU is available; use --device cpu"]
    assert not (tmp_path / "study").exists()


def test_run_study_refuses_a_missing_gpu(tmp_path, monkeypatch):
    from overparam.study import preset, run_study

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        run_study(preset("quick").only(["concentration"]), tmp_path / "study", device="cuda")
    assert not (tmp_path / "study").exists()


def test_study_out_that_is_a_file_exits_2_and_keeps_the_file(tmp_path, overparam):
    taken = tmp_path / "study_file"
    taken.write_text("mine")
    result = overparam("study", "--only", "concentration", "--out", str(taken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--out '{taken}' is a file; give a folder" in lines[0]
    assert taken.read_text() == "mine"


#: A child process running `overparam study --only concentration` on a small preset whose units each
#: take at least 0.2 s, so that the interrupt lands while the section is still running.
CHILD = """
import sys, time
from overparam.study import concentration, config
config.PRESETS["quick"] = {"study": {"preset": "quick", "d": 4},
                           "concentration": {"n": 10, "widths": [16, 32, 64], "seeds": 2}}
compute = concentration.KernelDraw.compute
def slow(self, ctx):
    time.sleep(0.2)
    return compute(self, ctx)
concentration.KernelDraw.compute = slow
from overparam.cli import run
sys.argv = ["overparam", "study", "--only", "concentration", "--out", sys.argv[1], "--json"]
run()
"""
UNITS = 3 * 3 * 2  # activations x widths x seeds


def finished_units(path) -> int:
    return count_rows(path, "SELECT COUNT(*) FROM study_units")


def test_sigint_exits_130_with_a_partial_report_and_the_rerun_reuses_every_finished_unit(tmp_path):
    out = tmp_path / "study"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while finished_units(out / "runs.db") < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "interrupted; partial report in" in stderr and "Traceback" not in stderr
    finished = finished_units(out / "runs.db")
    assert 2 <= finished < UNITS
    markdown = (out / "report.md").read_text()
    assert "interrupted: re-run the same command to resume" in markdown
    assert "Status: partial" in (out / "report.html").read_text()

    again = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["reused_units"] == finished and summary["computed_units"] == UNITS - finished
    assert summary["sections"] == {"concentration": "complete"}
