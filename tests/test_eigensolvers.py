"""lambda_min by every eigensolver against numpy's dense eigvalsh, the automatic choice on faked memory,
the rounding verdicts near and below float64's resolution, and the CLI's progress (none under --json)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from overparam.kernels import eigensolvers
from overparam.cli import common
from overparam.data import sphere
from overparam.kernels.comparison import spectrum
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.spectra import kernel_operator, lambda_min

EPS = np.finfo(np.float64).eps


def reference(activation: str, n: int, d: int, sigma: float = 1.0) -> tuple[torch.Tensor, np.ndarray, float]:
    """Inputs, numpy's eigenvalues of H* (ascending) and the rounding level eps n lambda_max: a backward
    stable solver's eigenvalues are within about that of the exact ones, so two solvers agree to it."""
    X = torch.from_numpy(sphere(n, d, seed=0).X)
    values = np.linalg.eigvalsh(infinite_ntk(activation, X, sigma).numpy())
    return X, values, EPS * n * values[-1]


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_every_solver_matches_numpy_eigvalsh(activation):
    X, values, level = reference(activation, 600, 8)
    assert values[0] > 1e3 * level  # resolved: the comparison is of numbers, not of rounding
    for solver in ("dense", "cholesky", "lanczos"):
        found = lambda_min(activation, X, solver=solver)
        assert found.method == solver and found.converged and not found.rounding and found.reason == "asked for"
        assert abs(found.value - values[0]) <= level, solver
    cholesky = lambda_min(activation, X, solver="cholesky")
    v = cholesky.vector
    K = infinite_ntk(activation, X).numpy()
    assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-12)
    assert abs(v @ K @ v - values[0]) <= level  # the eigenvector's Rayleigh quotient
    assert cholesky.residual == pytest.approx(np.linalg.norm(K @ v - cholesky.value * v), rel=1e-3, abs=level)
    assert cholesky.residual <= 1e-8 * values[0]


@pytest.mark.parametrize("activation", ["relu", "exp", "softmax"])
def test_lobpcg_reports_an_upper_bound_and_its_residual(activation):
    """LOBPCG alone (one vector, no preconditioner) need not reach the tolerance; its value is then the
    Rayleigh quotient of its vector: never below lambda_min, with the residual it reports."""
    X, values, level = reference(activation, 300, 8)
    found = lambda_min(activation, X, solver="lobpcg")
    K = infinite_ntk(activation, X).numpy()
    v = found.vector.ravel()
    assert found.method == "lobpcg" and found.value >= values[0] - level
    assert found.value == pytest.approx(v @ K @ v / (v @ v), rel=1e-10)
    assert found.residual == pytest.approx(np.linalg.norm(K @ v - found.value * v), rel=1e-6, abs=level)


def test_exp_kernel_near_the_rounding_level():
    """exp's H* on S^2 (n = 400): at sigma = 3.25 lambda_min is 17 times the rounding level eps n lambda_max
    (resolved: every solver agrees with numpy to that level, none flags it); at sigma = 2.5 it is 0.016
    times it (numpy's own value is rounding): every route that knows lambda_max flags it."""
    X, values, level = reference("exp", 400, 3, sigma=3.25)
    assert 5 * level < values[0] < 50 * level
    for solver in ("dense", "cholesky"):
        found = lambda_min("exp", X, sigma=3.25, solver=solver)
        assert abs(found.value - values[0]) <= level and not found.rounding
    lanczos = spectrum(kernel_operator("exp", X, sigma=3.25), solver="lanczos")
    assert abs(lanczos.lambda_min - values[0]) <= level and not lanczos.rounding

    X, values, level = reference("exp", 400, 3, sigma=2.5)
    assert values[0] < 0.1 * level
    for solver in ("dense", "cholesky"):
        found = lambda_min("exp", X, sigma=2.5, solver=solver)
        assert found.rounding and (math.isnan(found.value) or found.value < level)
    assert spectrum(kernel_operator("exp", X, sigma=2.5), solver="lanczos").rounding


def test_cholesky_breakdown_flags_rounding_without_iterating():
    """Every input twice: H* is singular, and in float64 not positive definite. The factorisation fails
    and the answer says so at once: NaN, rounding, no Lanczos product."""
    X = torch.from_numpy(sphere(200, 3, seed=0).X)
    X = torch.cat([X, X * (1 + 1e-17)])  # equal rows (the factor 1 + 1e-17 rounds to 1)
    found = lambda_min("exp", X, sigma=1.0, solver="cholesky")
    assert found.rounding and math.isnan(found.value) and found.matvecs == 0 and not found.converged
    assert "broke down" in found.reason and "rounding level" in found.reason
    found = spectrum(kernel_operator("exp", X), solver="cholesky")
    assert found.rounding and math.isnan(found.lambda_min) and "broke down" in found.method_reason


def test_automatic_choice_follows_size_and_memory(monkeypatch):
    size = 300
    need = eigensolvers.dense_bytes(size)
    assert need == 2 * 8 * size * size
    plenty, scarce = 10 * need, 19 * need // 10  # half of the memory may be used: `scarce` is too little
    assert eigensolvers.choose(size, dense_limit=4096, memory=plenty).method == "dense"
    assert eigensolvers.choose(size, dense_limit=100, memory=plenty).method == "cholesky"
    assert eigensolvers.choose(size, dense_limit=4096, memory=scarce).method == "lanczos"
    assert "does not fit" in eigensolvers.choose(size, memory=scarce).reason
    for solver in ("dense", "cholesky"):
        with pytest.raises(ValueError, match=f"the {solver} eigensolver needs .*--eigensolver lanczos"):
            eigensolvers.choose(size, solver, memory=scarce)
    assert eigensolvers.choose(size, "lanczos", memory=1).method == "lanczos"
    with pytest.raises(ValueError, match="unknown eigensolver 'qr'"):
        eigensolvers.choose(size, "qr")

    X, values, level = reference("softmax", size, 8)
    for memory, method in ((plenty, "cholesky"), (scarce, "nystrom")):  # the library reads the faked memory
        monkeypatch.setattr(eigensolvers, "available_memory", lambda device, memory=memory: memory)
        found = lambda_min("softmax", X, dense_limit=100)
        assert found.method == method and abs(found.value - values[0]) <= max(level, 1e-6 * values[0])
        assert found.reason == eigensolvers.choose(size, dense_limit=100, memory=memory, columns=True).reason


def test_nystrom_is_the_choice_where_the_matrix_does_not_fit(monkeypatch):
    """With (faked) memory that holds the dense matrix and its copy only once, not twice, the dense matrix does
    not fit and H* gives its columns, so the automatic choice is the Nystrom-preconditioned LOBPCG (n / 2
    landmarks: `nystrom_rank`'s cap); relu's converges to 1e-6 relative of numpy's lambda_min."""
    n = 1200
    X, values, level = reference("relu", n, 8)
    monkeypatch.setattr(eigensolvers, "available_memory", lambda device: eigensolvers.dense_bytes(n))
    found = lambda_min("relu", X)
    assert found.method == "nystrom" and "Nystrom" in found.reason and "does not fit" in found.reason
    assert found.converged and abs(found.value - values[0]) <= 1e-6 * values[0]


@pytest.mark.parametrize("activation, n", [("relu", 2000), ("exp", 1500), ("softmax", 1500)])
def test_nystrom_lobpcg_matches_numpy_eigvalsh(activation, n):
    """The Nystrom-preconditioned block LOBPCG (min(2000, n / 2) landmarks, 16 vectors) converges for all
    three kernels, exp's and softmax's included (condition numbers 6e5 and 1e6 here, where one vector of
    scipy's LOBPCG did not converge in 500 passes). Its value is a Rayleigh quotient: never below numpy's
    lambda_min, and within its residual (recomputed here from the dense matrix) of an eigenvalue."""
    X, values, level = reference(activation, n, 8)
    found = lambda_min(activation, X, solver="nystrom")
    assert found.method == "nystrom" and found.reason == "asked for"
    K = infinite_ntk(activation, X).numpy()
    v = found.vector.ravel() / np.linalg.norm(found.vector)
    residual = np.linalg.norm(K @ v - found.value * v)
    assert found.residual == pytest.approx(residual, rel=1e-6, abs=level)
    assert found.converged and residual <= eigensolvers.NYSTROM_TOL * found.value * (1 + 1e-6)
    assert found.value >= values[0] - level
    assert abs(found.value - values[0]) <= max(residual, level)


@pytest.mark.parametrize("bottom, cluster, preconditioned", [(1e-3, (1e-2, 1e2), False), (1e-6, (1e-5, 1e3), True)])
def test_lobpcg_finds_the_smallest_of_a_known_spectrum(bottom, cluster, preconditioned):
    """Block LOBPCG against a closed form: K = Q diag(lam) Q^T with lam_1 below a geometric cluster (condition
    numbers 1e5 without a preconditioner, 1e9 with T = Q diag(1 / (lam u)) Q^T, u uniform in [0.5, 2]: an
    inverse good to a factor of 2). Only the first Ritz pair must converge: its value within the residual
    bound 1e-6 lam_1 (and above it, as a Rayleigh quotient) and its vector Q e_1."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    lam = np.concatenate([[bottom], np.geomspace(*cluster, 399)])
    K = torch.from_numpy(Q @ np.diag(lam) @ Q.T)
    T = torch.from_numpy(Q @ np.diag(1 / (lam * rng.uniform(0.5, 2, 400))) @ Q.T)
    start = torch.from_numpy(rng.standard_normal((400, 8)))
    value, vector, passes, converged = eigensolvers.lobpcg_smallest(
        lambda V: K @ V, (lambda R: T @ R) if preconditioned else (lambda R: R), start, 1e-6, 2000)
    assert converged and passes <= 2001 and value <= bottom * (1 + 1e-6)
    assert value >= bottom - np.finfo(float).eps * lam.max()  # a Rayleigh quotient, to float64 rounding
    assert abs(float(vector @ torch.from_numpy(Q[:, 0]))) == pytest.approx(1, abs=1e-9)


@pytest.mark.parametrize("activation", ["relu", "exp"])
def test_nystrom_preconditioner_is_the_shifted_inverse_of_the_nystrom_approximation(activation):
    """apply(R) = (A_nu - nu I + mu I)^-1 R on A's range, R / mu off it, where A_nu = C (W + nu I)^-1 C^T is formed
    here densely by numpy (solve, then eigh of the n x n matrix: not the Gram route of the code), its eigenvalues
    less nu clamped at 0 and mu the smallest positive one; to 1e-9 of the operator's norm 1 / mu. leading: A's
    top eigenvectors (up to sign)."""
    n, rank = 600, 120
    X = torch.from_numpy(sphere(n, 8, seed=3).X)
    K = infinite_ntk(activation, X).numpy()
    precondition = eigensolvers.nystrom_preconditioner(kernel_operator(activation, X), rank, seed=5)
    landmarks = np.sort(np.random.default_rng(5).choice(n, rank, replace=False))
    C, W = K[:, landmarks], K[np.ix_(landmarks, landmarks)]
    nu = EPS * rank * np.trace(W)
    while np.linalg.eigvalsh(W + nu * np.eye(rank))[0] <= 0:
        nu *= 10
    values, U = np.linalg.eigh(C @ np.linalg.solve(W + nu * np.eye(rank), C.T))
    values, U = values[::-1][:rank], U[:, ::-1][:, :rank]
    lam = np.clip(values - nu, 0, None)
    mu = lam[lam > 0].min()
    P = U @ np.diag(1 / (lam + mu) - 1 / mu) @ U.T + np.eye(n) / mu
    R = np.random.default_rng(0).standard_normal((n, 4))
    assert precondition.mu == pytest.approx(mu, rel=1e-6) and precondition.rank == rank
    assert np.abs(precondition(torch.from_numpy(R)).numpy() - P @ R).max() <= 1e-9 / mu * np.abs(R).max()
    overlap = np.abs(U[:, :4].T @ precondition.leading[:, :4].numpy())
    assert np.allclose(overlap, np.eye(4), atol=1e-8)


def test_nystrom_rank_grows_as_the_square_root_of_the_side_within_memory():
    """NYSTROM_RANK up to side (NYSTROM_RANK / NYSTROM_RANK_SCALE)^2, then NYSTROM_RANK_SCALE sqrt(side); never
    above half the side or one float64 (side, rank) factor in NYSTROM_MEMORY of the memory."""
    plenty = 1 << 50
    assert eigensolvers.nystrom_rank(1000, plenty) == 500
    assert eigensolvers.nystrom_rank(5000, plenty) == eigensolvers.NYSTROM_RANK
    assert eigensolvers.nystrom_rank(100_000, plenty) == math.ceil(eigensolvers.NYSTROM_RANK_SCALE * 100_000 ** 0.5)
    memory = 8 * 100_000 * 3000 / eigensolvers.NYSTROM_MEMORY
    assert eigensolvers.nystrom_rank(100_000, memory) == 3000


@pytest.mark.parametrize("activation, n", [("relu", 2000), ("exp", 1500), ("softmax", 1500)])
def test_nystrom_largest_matches_numpy_eigvalsh(activation, n):
    """lambda_max by LOBPCG on -K from the Nystrom approximation's leading eigenvectors (300 landmarks):
    numpy's lambda_max to 1e-12 relative, in a handful of kernel passes."""
    X, values, _ = reference(activation, n, 8)
    operator = kernel_operator(activation, X)
    precondition = eigensolvers.nystrom_preconditioner(operator, rank=300)
    found = eigensolvers.nystrom_largest(operator, precondition)
    assert found.converged and found.value == pytest.approx(values[-1], rel=1e-12)
    assert found.matvecs <= 10


def test_lobpcg_reports_the_passes_its_residual_decay_projects():
    """report(passes, expected) after every pass: expected is `iterations` + 1 until ten residuals have fallen,
    then where the mean decay of log residual over the last ten reaches log tol (closed form below: falling by
    1 a pass from -10, tol 1e-6 = e^-13.8, is 4 passes more), never beyond `iterations` + 1."""
    assert eigensolvers._expected_passes([-float(k) for k in range(11)], math.log(1e-6), 11, 1001) == 15
    assert eigensolvers._expected_passes([-1.0] * 11, math.log(1e-6), 11, 1001) == 1001  # not falling
    assert eigensolvers._expected_passes([-float(k) for k in range(10)], math.log(1e-6), 10, 1001) == 1001
    assert eigensolvers._expected_passes([-k / 1e4 for k in range(11)], math.log(1e-6), 11, 1001) == 1001
    rng = np.random.default_rng(4)
    Q, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    lam = np.concatenate([[1e-3], np.geomspace(1e-2, 1e2, 299)])
    K = torch.from_numpy(Q @ np.diag(lam) @ Q.T)
    T = torch.from_numpy(Q @ np.diag(1 / (lam * rng.uniform(0.2, 5, 300))) @ Q.T)  # an inverse to a factor of 5
    reports = []
    _, _, passes, converged = eigensolvers.lobpcg_smallest(
        lambda V: K @ V, lambda R: T @ R, torch.from_numpy(rng.standard_normal((300, 4))), 1e-10, 1000,
        lambda done, expected: reports.append((done, expected)))
    assert converged and [done for done, _ in reports] == list(range(1, passes + 1))
    assert all(expected == 1001 for _, expected in reports[:11])
    assert all(done <= expected <= 1001 for done, expected in reports)
    assert all(abs(expected - passes) <= 0.25 * passes for _, expected in reports[15:])  # a linear decay here


def test_choice_without_kernel_columns_is_lanczos():
    size, scarce = 300, eigensolvers.dense_bytes(300)
    assert eigensolvers.choose(size, memory=scarce, columns=True).method == "nystrom"
    assert eigensolvers.choose(size, memory=scarce, columns=False).method == "lanczos"
    assert "no columns" in eigensolvers.choose(size, memory=scarce).reason
    with pytest.raises(ValueError, match="nystrom eigensolver needs the kernel's columns.*lanczos"):
        eigensolvers.choose(size, "nystrom", columns=False)
    assert eigensolvers.choose(size, "nystrom", columns=True) == eigensolvers.Choice("nystrom", "asked for")


def test_progress_reaches_every_stage():
    X = torch.from_numpy(sphere(300, 8, seed=0).X)
    seen = {}
    spectrum(kernel_operator("relu", X), dense_limit=100, progress=lambda stage, done, total: seen.update(
        {stage: (done, total)}))
    assert seen["kernel H*(relu), side 300"] == (300, 300)
    assert seen["Cholesky factorisation, side 300"] == (1, 1)
    assert any(stage.startswith("Lanczos on H^-1") for stage in seen)


@pytest.fixture
def terminal(monkeypatch):
    """stdout and stderr look like terminals to the CLI (as for a person at one)."""
    tty = SimpleNamespace(isatty=lambda: True)
    monkeypatch.setattr(common, "sys", SimpleNamespace(stdout=tty, stderr=tty))


def invoke(*args):
    from typer.testing import CliRunner

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by itself
        runner = CliRunner()
    return runner.invoke(common.app, list(args))


def test_cli_progress_is_drawn_at_a_terminal_and_absent_under_json(tmp_path, terminal):
    args = ("ntk", "--activation", "exp", "--infinite", "--n", "300", "--dense-limit", "100", "--out", str(tmp_path))
    shown = invoke(*args)
    assert shown.exit_code == 0, shown.output
    assert "Cholesky factorisation, side 300" in shown.stderr and "kernel H*(exp)" in shown.stderr
    assert "cholesky, because side 300 > dense limit 100" in " ".join(shown.stdout.split())
    for quiet in (("--json",), ("--quiet", "--json")):
        result = invoke(*args, *quiet)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)  # the whole of stdout is the JSON object
        assert result.stdout.count("\n") == 1 and "Cholesky factorisation" not in result.stdout + result.stderr
        values = np.linalg.eigvalsh(infinite_ntk("exp", torch.from_numpy(sphere(300, 8, seed=0).X)).numpy())
        assert summary["method"] == "cholesky" and "dense limit 100" in summary["method_reason"]
        assert abs(summary["lambda_min"] - values[0]) <= EPS * 300 * values[-1]
    quiet = invoke(*args, "--quiet")
    assert quiet.exit_code == 0 and "Cholesky factorisation" not in quiet.stderr + quiet.stdout


def test_cli_unknown_eigensolver_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "overparam", "ntk", "--infinite", "--eigensolver", "qr",
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["overparam: error: unknown --eigensolver 'qr': choose one of "
                                                  "auto, dense, cholesky, lanczos, lobpcg, nystrom"]


def resident_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_ctrl_c_inside_a_factorisation_ends_at_once(tmp_path):
    """SIGINT while the command is inside seconds of LAPACK (n = 9,000: a 0.65 GB H*, whose factor is being
    written once the process holds 1 GB): it exits with 130 and the one-line message."""
    process = subprocess.Popen([sys.executable, "-m", "overparam", "ntk", "--infinite", "--activation", "exp",
                                "--n", "9000", "--eigensolver", "cholesky", "--out", str(tmp_path), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and resident_bytes(process.pid) < 1e9 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the command ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 130 and stdout == ""
    assert stderr.strip().splitlines() == ["overparam: interrupted"]
