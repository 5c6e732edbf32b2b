"""`overparam train` end to end, through the installed console entry point."""

import errno
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from overparam.cli import run
from overparam.resources import InsufficientMemory


def test_train_json_converges_and_writes_outputs(tmp_path, overparam):
    result = overparam("train", "--activation", "exp", "--width", "256", "--n", "16", "--d", "4",
                       "--steps", "5000", "--tol", "1e-3", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "converged" and summary["residual_norm"] <= 1e-3
    history = pq.read_table(tmp_path / "history.parquet").to_pydict()
    assert history["residual_norm"][-1] == pytest.approx(summary["residual_norm"], rel=1e-12)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"]


def test_train_at_an_output_scale_is_the_library_run_on_the_scaled_loss(tmp_path, overparam):
    """--output-scale 0.1 trains 0.1 F on L(0.1 F) / 0.1^2: the summary is that of train(output_scale=0.1)."""
    import torch

    from overparam import TwoLayerNet, train
    from overparam.data import sphere

    result = overparam("train", "--activation", "relu", "--width", "64", "--n", "12", "--d", "4", "--steps", "300",
                       "--tol", "0", "--output-scale", "0.1", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    data = sphere(12, 4, seed=0)
    net = TwoLayerNet(4, 64, 1, "relu", init="coupled", seed=0)
    history = train(net, torch.from_numpy(data.X), torch.from_numpy(data.y), steps=300, output_scale=0.1)
    assert summary["output_scale"] == 0.1 and summary["steps"] == 300
    assert summary["final_loss"] == pytest.approx(history.final_loss, rel=1e-12)
    residual = 0.1 * net(torch.from_numpy(data.X)) - torch.from_numpy(data.y)
    assert summary["residual_norm"] == pytest.approx(float(residual.norm()), rel=1e-12)
    assert summary["final_loss"] == pytest.approx(float(residual.square().sum()) / (2 * 0.1**2), rel=1e-12)


def test_train_user_file(tmp_path, overparam):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    np.savez(tmp_path / "d.npz", X=X, y=rng.standard_normal(10))
    result = overparam("train", "--data", str(tmp_path / "d.npz"), "--normalize", "sphere", "--width", "128",
                       "--steps", "20", "--out", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["d"] == 3


@pytest.mark.parametrize("args,fragment", [
    (["--width", "7"], "width must be even"),
    (["--activation", "swish"], "unknown activation"),
    (["--data", "missing.npz"], "does not exist"),
    (["--lr", "fast"], "--lr takes"),
    (["--widht", "8"], "No such option"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--sigma", "1000", "--init", "independent", "--lr", "0.1"], "initial network cannot be evaluated"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--output-scale", "0"], "--output-scale must be a positive finite number"),
    (["--output-scale", "2", "--diagnostics"], "drop --output-scale or --diagnostics"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, fragment, overparam, monkeypatch):
    if fragment == "no CUDA GPU":  # as on a machine without a GPU, also where there is one
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = overparam("train", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", (["train", "--width", "8", "--n", "4", "--steps", "2"], ["ntk", "--width", "8", "--n", "4"],
                                     ["diffusion", "--width", "8", "--n", "16", "--steps", "2"]))
def test_out_that_is_a_file_exits_2_with_one_line(tmp_path, overparam, command):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    result = overparam(*command, "--out", str(taken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--out '{taken}' is a file" in lines[0]
    assert taken.read_text() == "not a folder"


def test_divergence_exits_1_and_says_so(tmp_path, overparam):
    result = overparam("train", "--activation", "relu", "--lr", "1e5", "--width", "64", "--n", "8",
                       "--steps", "50", "--out", str(tmp_path), "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "diverged" and "try lr" in summary["message"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"overparam: training diverged: {summary['message']}"


@pytest.mark.parametrize("error, code", [(ValueError("bad value\nsecond line"), 2), (FileNotFoundError("gone"), 2),
                                         (FloatingPointError("overflow"), 2), (KeyboardInterrupt(), 130)])
def test_exceptions_become_exit_codes_by_type(tmp_path, overparam, monkeypatch, error, code):
    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr("overparam.cli.train.train_network", raise_it)
    result = overparam("train", "--width", "8", "--n", "4", "--out", str(tmp_path))
    assert result.returncode == code
    assert result.stderr.strip().splitlines() == [f"overparam: error: {str(error).splitlines()[0]}" if code == 2
                                                  else "overparam: interrupted"]


@pytest.mark.parametrize("error, line", [
    (MemoryError("Unable to allocate 1.49 TiB for an array with shape (2048, 100000000) and data type float64"),
     "out of memory (Unable to allocate 1.49 TiB for an array with shape (2048, 100000000) and data type float64); "
     "use a smaller --n or --width, a lower --dense-limit (the matrix-free eigensolver) or another --device"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nGPU 0 has a total capacity of 8 GiB"),
     "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB); use a smaller --n or --width, a lower "
     "--dense-limit (the matrix-free eigensolver) or another --device"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 16000000000000000 bytes. Error code 12 (Cannot allocate memory)"),
     "out of memory ([enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
     "tried to allocate 16000000000000000 bytes. Error code 12 (Cannot allocate memory)); use a smaller --n or "
     "--width, a lower --dense-limit (the matrix-free eigensolver) or another --device"),
    (InsufficientMemory("the dense 9 x 9 kernels", 2**41, 2**30, "CPU", "use a smaller --n"),
     "not enough memory for the dense 9 x 9 kernels: 2 TiB needed, 1 GiB available on the CPU; use a smaller --n"),
])
def test_out_of_memory_is_exit_2_with_one_line(tmp_path, overparam, monkeypatch, error, line):
    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr("overparam.cli.train.train_network", raise_it)
    result = overparam("train", "--width", "8", "--n", "4", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"overparam: error: {line}"]


@pytest.mark.parametrize("args, fragment", [
    (["train", "--n", "10000000000000", "--d", "4"], "not enough memory for the sphere data (n = 10000000000000, d = 4)"),
    (["train", "--n", "100", "--width", "1000000000000000"], "not enough memory for training m = 1000000000000000"),
    (["ntk", "--n", "1000000", "--dense-limit", "10000000"], "not enough memory for the dense 1000000 x 1000000"),
    (["ntk", "--n", "100000", "--monte-carlo", "2"], "not enough memory for the dense 100000 x 100000 kernels"),
    (["ntk", "--widths", "8,1000000000000000"], "not enough memory for the weights of m = 1000000000000000"),
    (["diffusion", "--n", "1000000000", "--noise-draws", "100000"], "not enough memory for the score network"),
])
def test_sizes_past_the_machine_are_refused_at_the_door(tmp_path, overparam, args, fragment):
    result = overparam(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "available on the CPU; use a smaller" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_sweep_too_large_is_refused_before_the_store_exists(tmp_path, overparam):
    store = tmp_path / "runs.db"
    result = overparam("sweep", "--activations", "relu", "--widths", "8", "--n", "10000000", "--seeds", "2",
                       "--store", str(store))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough memory for the sweep's runs at n = 10000000, m = 8 (2 seeds" in lines[0]
    assert not store.exists()


@pytest.mark.parametrize("command", (["train", "--width", "8", "--n", "4", "--steps", "2"],
                                     ["ntk", "--width", "8", "--n", "4"],
                                     ["diffusion", "--width", "8", "--n", "16", "--steps", "2"],
                                     ["study", "--only", "concentration"]))
def test_out_that_cannot_be_written_is_one_line_naming_it(tmp_path, overparam, command, monkeypatch):
    taken = tmp_path / "file"
    taken.write_text("mine")
    result = overparam(*command, "--out", str(taken / "sub"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"overparam: error: cannot write --out '{taken / 'sub'}': a part of the path is a file, not a folder"]
    assert taken.read_text() == "mine"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    result = overparam(*command, "--out", str(tmp_path / "ro"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"overparam: error: cannot write --out '{tmp_path / 'ro'}': it is on a read-only file system"]


@pytest.mark.parametrize("command, flag", [
    (["sweep", "--activations", "relu", "--widths", "8", "--n", "4", "--seeds", "1", "--steps", "2"], "--store"),
    (["threshold", "STORE"], "--figure"),
])
def test_store_and_figure_that_cannot_be_written_are_one_line(tmp_path, overparam, command, flag):
    store = tmp_path / "runs.db"
    overparam("sweep", "--activations", "relu", "--widths", "4", "--n", "3", "--seeds", "1", "--steps", "2",
              "--store", str(store))
    command = [str(store) if part == "STORE" else part for part in command]
    for path, reason in ((tmp_path, "it is a folder; give a file name"),
                         (store / "x.db", "a part of the path is a file, not a folder")):
        result = overparam(*command, flag, str(path))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"overparam: error: cannot write {flag} '{path}': {reason}"]


@pytest.mark.parametrize("bug", [KeyError("x"), RuntimeError("a bug"), TypeError("a bug")])
def test_a_bug_keeps_its_traceback(tmp_path, overparam, monkeypatch, bug):
    def raise_it(*args, **kwargs):
        raise bug

    monkeypatch.setattr("overparam.cli.train.train_network", raise_it)
    monkeypatch.setattr("sys.argv", ["overparam", "train", "--width", "8", "--n", "4", "--out", str(tmp_path)])
    with pytest.raises(type(bug)):
        run()


def test_train_on_digits(tmp_path, overparam):
    from overparam.data import digits

    result = overparam("train", "--data", "digits:classes=3,5", "--n", "20", "--activation", "relu", "--width", "128",
                       "--steps", "3000", "--tol", "1e-3", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["n"], summary["d"], summary["k"], summary["data"]) == (20, 64, 1, "digits-3-5")
    assert summary["status"] == "converged"
    result = overparam("ntk", "--data", "digits:classes=3,5", "--n", "20", "--activation", "relu", "--infinite",
                       "--out", str(tmp_path / "ntk"), "--json")
    assert result.returncode == 0, result.stderr
    X = digits((3, 5), n=20).X
    G = X @ X.T
    H = G * (np.pi - np.arccos(np.clip(G - np.diag(np.diag(G) - 1), -1, 1))) / (2 * np.pi)  # relu's H* on unit inputs (docs/mathematics.md#ntk)
    assert json.loads(result.stdout)["lambda_min"] == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-9)


def test_digits_without_scikit_learn_is_one_line_exit_2(tmp_path, overparam, without_sklearn):
    for command in (["train", "--out", str(tmp_path)], ["ntk"], ["sweep", "--store", str(tmp_path / "runs.db"),
                                                                 "--activations", "relu", "--widths", "4", "--d", "64"]):
        result = overparam(*command, "--data", "digits:classes=3,5", "--n", "10")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("overparam: error: ")
        assert lines[0].endswith("the digits data set needs scikit-learn: pip install scikit-learn")


def test_a_gpu_index_past_the_machines_is_one_line(tmp_path, overparam, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # as on a machine with one GPU
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    result = overparam("ntk", "--device", "cuda:3", "--n", "4", "--width", "8", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "overparam: error: device 'cuda:3' was asked for but this machine has 1 CUDA GPU(s), cuda:0 to cuda:0"]
