"""overparam/activations.py: the registry, the Gauss-Hermite H* against closed forms and scipy, a
researcher's own activation against autograd and accepted wherever a name is, and bad activations."""

import ast
import csv
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, special
from torch.func import jacrev

import overparam as package
from overparam import Activation, TwoLayerNet, train
from overparam.training import distributed
from overparam.activations import BUILTIN, PAPERS, gauss_hermite_kernel, resolve
from overparam.training.batched import train_seeds
from overparam.data import sphere, unit_sphere
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk
from overparam.study import StudyConfig, run_study
from overparam.sweep import Store, run_sweep

import activation_examples
from activation_examples import LOG, NOT_ELEMENTWISE, SIN, SWISH
from test_distributed import assert_same_history
from test_models import REFERENCE_PHI

SRC = Path(__file__).resolve().parents[1] / "src" / "overparam"
#: phi' written independently of overparam (numpy/scipy), for the quadrature's references.
REFERENCE_DERIVATIVE = {
    "tanh": lambda z: 1 / np.cosh(z) ** 2,
    "sigmoid": lambda z: special.expit(z) * (1 - special.expit(z)),
    "gelu": lambda z: special.ndtr(z) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi),
}


def off_sphere(n, d, seed=0, radii=(0.6, 1.0, 1.4)):
    """Points of the sphere rescaled to cycle through the given norms (inputs off the unit sphere)."""
    X = torch.from_numpy(sphere(n, d, seed=seed).X)
    return X * torch.tensor([radii[i % len(radii)] for i in range(n)], dtype=torch.float64)[:, None]


def test_registry_resolves_names_records_and_module_attributes():
    assert BUILTIN == ("relu", "exp", "softmax", "tanh", "sigmoid", "gelu") and PAPERS == BUILTIN[:3]
    assert all(resolve(name).name == name for name in BUILTIN)
    assert resolve(SWISH) is SWISH and package.Activation is Activation
    assert resolve("activation_examples:SWISH") is SWISH
    assert [name for name in BUILTIN if resolve(name).normalised] == ["softmax"]
    assert {name: resolve(name).default_scale for name in BUILTIN} == {
        "relu": "1/sqrt(m)", "exp": "1", "softmax": "1", "tanh": "1/sqrt(m)", "sigmoid": "1/sqrt(m)",
        "gelu": "1/sqrt(m)"}  # docs/mathematics.md#networks, #elementwise
    assert len({resolve(name).color for name in BUILTIN}) == len(BUILTIN)
    assert package.theory.proven_widths("relu", "coupled") == [("DZPS19", "6"), ("SY19", "4"), ("MOSW22", "2")]
    assert package.theory.proven_widths("gelu", "coupled") == []
    with pytest.raises(ValueError, match="unknown activation 'swish': choose one of relu, exp, softmax, tanh"):
        resolve("swish")


@pytest.mark.parametrize("path, fragment", [
    ("no_such_module:swish", "does not import (ModuleNotFoundError"),
    ("activation_examples:missing", "does not import (AttributeError"),
    ("activation_examples:NOT_AN_ACTIVATION", "is a int, not an Activation"),
])
def test_module_attributes_that_do_not_name_an_activation_raise_value_errors(path, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        resolve(path)


def test_no_source_file_outside_activations_and_theory_names_an_activation():
    """The goal of issue 13: a string constant equal to an activation's name appears only in
    activations.py and theory.py (docstrings and prose are not constants equal to a name)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent == SRC and path.name in ("activations.py", "theory.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in BUILTIN:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert found == []


# ----------------------------------------------------------------------------- forward, gradient, kernel


def reference_phi(activation):
    """phi written without overparam: the test's own formula for a built-in, fn for a researcher's own."""
    return REFERENCE_PHI.get(activation.name) or activation.fused.fn


@pytest.mark.parametrize("activation", [resolve("tanh"), resolve("sigmoid"), resolve("gelu"), SIN, SWISH],
                         ids=lambda a: a.name)
@pytest.mark.parametrize("k", (1, 3))
def test_forward_gradient_and_kernel_match_autograd(activation, k):
    """F, grad L and Theta against autograd through phi written out (float64, 1e-10), sigma != 1,
    inputs of norms 0.6 to 1.4; the chunked recompute path (keep=False) and the kept path alike."""
    net = TwoLayerNet(5, 24, k, activation, sigma=1.7, seed=3, chunk_size=10)
    X = off_sphere(7, 5)
    y = torch.randn(7, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    phi = reference_phi(activation)

    def output(W):
        return net.kappa * phi(X @ W.T) @ net.a

    W = net.W.clone().requires_grad_(True)
    F = output(W)
    (0.5 * (F - y).square().sum()).backward()
    torch.testing.assert_close(net(X), F.detach(), rtol=1e-12, atol=1e-12)
    for keep in (False, True):
        forward = net.forward_pass(X, keep=keep)
        torch.testing.assert_close(forward.vjp(forward.out - y), W.grad, rtol=1e-10, atol=1e-11)
    J = jacrev(output)(net.W).permute(1, 0, 2, 3).reshape(k * 7, -1)  # output-major rows
    theta = J @ J.T
    torch.testing.assert_close(ntk(net, X, normalized=False), theta, rtol=1e-10,
                               atol=1e-10 * float(theta.abs().max()))


@pytest.mark.parametrize("activation", [resolve(name) for name in BUILTIN if name != "softmax"] + [SIN, SWISH],
                         ids=lambda a: a.name)
def test_fused_values_and_derivatives_with_and_without_out(activation):
    """fused(Z, value, derivative, out) at Z = z input_scale: phi and phi' against phi written out and its
    autograd derivative (float64, 1e-12), with phi' written into `out` where given (as a kept chunk is)."""
    z = torch.linspace(-2.5, 2.5, 40, dtype=torch.float64).reshape(4, 10)  # not 0 itself (relu's kink)
    phi = {"exp": torch.exp}.get(activation.name) or reference_phi(activation)
    point = z.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(phi(point).sum(), point)
    expected_value, expected_slope = phi(z), slope
    for value, derivative in ((True, True), (True, False), (False, True)):
        for out in (None, torch.full_like(z, float("nan"))):
            got_value, got_slope = activation.fused(z * activation.input_scale, value, derivative, out=out)
            if value:
                torch.testing.assert_close(got_value, expected_value, rtol=1e-12, atol=1e-12)
            if derivative:
                torch.testing.assert_close(got_slope, expected_slope, rtol=1e-12, atol=1e-12)
                if out is not None:
                    assert got_slope.data_ptr() == out.data_ptr()


# ----------------------------------------------------------------------------- H* by quadrature


def test_quadrature_matches_the_sine_and_erf_closed_forms():
    """docs/mathematics.md#elementwise: phi = sin (phi' = cos): H*_ij = <x_i,x_j> (e^{-sigma^2 |x_i - x_j|^2 / 2} + e^{-sigma^2 |x_i + x_j|^2
    / 2}) / 2. phi = erf(z / sqrt 2) (phi' = sqrt(2/pi) e^{-z^2/2}): H*_ij = <x_i,x_j> (2/pi) / sqrt(det(I + S)),
    S = sigma^2 [[|x_i|^2, <x_i,x_j>], [<x_i,x_j>, |x_j|^2]]. Both to 1e-8 (smooth phi': the rule's target)."""
    X = off_sphere(9, 3, seed=4)
    inner, squares = X @ X.T, X.square().sum(1)
    for sigma in (0.8, 1.0, 1.3):
        minus = squares[:, None] + squares[None, :] - 2 * inner
        plus = squares[:, None] + squares[None, :] + 2 * inner
        sine = inner * 0.5 * (torch.exp(-sigma**2 * minus / 2) + torch.exp(-sigma**2 * plus / 2))
        torch.testing.assert_close(infinite_ntk(SIN, X, sigma), sine, rtol=0, atol=1e-8)
        erf_slope = lambda z: math.sqrt(2 / math.pi) * torch.exp(-z.square() / 2)  # noqa: E731
        det = (1 + sigma**2 * squares[:, None]) * (1 + sigma**2 * squares[None, :]) - sigma**4 * inner.square()
        torch.testing.assert_close(gauss_hermite_kernel(erf_slope, X, X, sigma), inner * (2 / math.pi) / det.sqrt(),
                                   rtol=0, atol=1e-8)


def test_quadrature_of_relu_the_hard_case_with_its_measured_accuracy():
    """relu's phi' jumps at 0, which a Gauss-Hermite rule resolves only slowly: against the arc-cosine kernel
    the worst entry (a pair at a small angle, rho near 1) is off by 3.9% of max |H*| at 64 points, and the
    error falls like points^(-1/2) (halved by 4x the points); the diagonal (rho = 1) is right to 1e-8."""
    X = torch.from_numpy(sphere(20, 4, seed=1).X)
    relu = resolve("relu")
    exact = relu.infinite_kernel(X, 1.0)
    errors = []
    unit = (X / X.norm(dim=1, keepdim=True)).numpy()
    rho = np.clip(unit @ unit.T, -1, 1)
    for points in (64, 256):
        quadrature = gauss_hermite_kernel(relu.derivative, X, X, 1.0, points)
        # the same tensor rule written out in numpy: E[1{u > 0} 1{v > 0}] ~ sum_ab w_a w_b 1{g_a > 0}
        # 1{rho g_a + sqrt(1 - rho^2) g_b > 0} (the positive scales sigma |x| drop out of relu's step)
        g, w = np.polynomial.hermite_e.hermegauss(points)
        w = w / w.sum()
        v = rho[..., None, None] * g[:, None] + np.sqrt(1 - rho**2)[..., None, None] * g[None, :]
        rule = ((w * (g > 0))[:, None] * w[None, :] * (v > 0)).sum((-2, -1)) * (X @ X.T).numpy()
        np.testing.assert_allclose(quadrature.numpy(), rule, rtol=0, atol=1e-13)
        errors.append(float((quadrature - exact).abs().max() / exact.abs().max()))
        torch.testing.assert_close(quadrature.diagonal(), exact.diagonal(), rtol=0, atol=1e-8)
    # the error falls like points^(-1/2): 4x the points halves it (a ratio 1/2 within rounding of the rule)
    assert 0.35 < errors[1] / errors[0] < 0.65
    assert errors[1] / errors[0] == pytest.approx(0.5, rel=0.1)  # measured: 0.497


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu"])
def test_builtin_quadrature_against_scipy_dblquad(name):
    """E[phi'(u) phi'(v)] by scipy's adaptive dblquad over (g1, g2) in [-12, 12]^2 with the Gaussian weight,
    phi' written with numpy; to 1e-8 at norms 0.5 to 1.5 (sigma |x| up to 1.5, the rule's largest point count
    here)."""
    X = torch.tensor([[0.5, 0.0, 0.0], [0.6, 0.8, 0.0], [0.3, -0.9, 1.14]], dtype=torch.float64)
    kernel = infinite_ntk(name, X, 1.0)
    slope = REFERENCE_DERIVATIVE[name]
    norms, inner = X.norm(dim=1).numpy(), (X @ X.T).numpy()
    density = lambda g: math.exp(-g * g / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    for i, j in ((0, 0), (0, 1), (1, 2), (2, 2)):
        rho = inner[i, j] / (norms[i] * norms[j])
        across = math.sqrt(max(0.0, 1 - rho * rho))
        value, _ = integrate.dblquad(
            lambda g2, g1: slope(norms[i] * g1) * slope(norms[j] * (rho * g1 + across * g2)) * density(g1) * density(g2),
            -12, 12, -12, 12, epsabs=1e-12, epsrel=1e-12)
        assert float(kernel[i, j]) == pytest.approx(inner[i, j] * value, abs=1e-8)


# ----------------------------------------------------------------------------- accepted wherever a name is


def test_own_activation_pickles_by_reference_and_a_lambda_does_not():
    assert pickle.loads(pickle.dumps(SWISH)) == SWISH and pickle.loads(pickle.dumps(resolve("gelu"))) == resolve("gelu")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(Activation.elementwise("square", lambda z: z * z))


def problem(n=10, d=4, k=1, seed=2):
    data = sphere(n, d, k, seed=seed)
    return torch.from_numpy(data.X), torch.from_numpy(data.y)


def test_own_activation_trains_as_a_plain_gradient_descent_loop():
    """train() with SWISH (phi' by autograd inside overparam) against GD written here with autograd."""
    X, y = problem()
    net = TwoLayerNet(4, 32, 1, SWISH, init="independent", seed=5)
    W, lr = net.W.clone(), 0.5
    for _ in range(40):
        W.requires_grad_(True)
        loss = 0.5 * (net.kappa * activation_examples.swish(X @ W.T) @ net.a - y).square().sum()
        (grad,) = torch.autograd.grad(loss, W)
        W = (W - lr * grad).detach()
    history = train(net, X, y, lr=lr, steps=40, tol=0)
    torch.testing.assert_close(net.W, W, rtol=1e-10, atol=1e-12)
    assert history.loss[-1] == pytest.approx(0.5 * float((net.kappa * activation_examples.swish(X @ W.T) @ net.a
                                                          - y).square().sum()), rel=1e-10)


def test_own_activation_in_batched_and_sharded_training():
    """train_seeds (batched seeds) and distributed.train (2 spawned processes: SWISH pickles because swish
    is a module-level function) give the single-process run of each seed."""
    X, y = problem(k=2)
    batched = train_seeds("activation_examples:SWISH", 20, X, y, [0, 1], lr="auto", steps=15, tol=0)
    for seed, history in zip((0, 1), batched):
        alone = train(TwoLayerNet(4, 20, 2, SWISH, seed=seed), X, y, lr="auto", steps=15, tol=0)
        assert_same_history(history, alone)
    net = TwoLayerNet(4, 21, 2, SWISH, init="independent", seed=3)  # odd width: blocks of 11 and 10 neurons
    single = net.copy()
    expected = train(single, X, y, lr="auto", steps=10, tol=0)
    assert_same_history(distributed.train(net, X, y, nproc=2, lr="auto", steps=10, tol=0), expected)
    torch.testing.assert_close(net.W, single.W, rtol=1e-10, atol=1e-10)


def test_own_activation_in_a_sweep_spec(tmp_path):
    spec = {"activations": ["activation_examples:SWISH"], "widths": [16], "n": [6], "d": 4, "seeds": 2,
            "tol": 1e-2, "steps": 60, "init": "independent"}
    counts = run_sweep(spec, tmp_path / "runs.db", workers=1)
    assert counts.done == 2 and counts.failed == 0
    data = sphere(6, 4, seed=0)
    with Store(tmp_path / "runs.db") as store:
        for row in store.runs():
            assert row["activation"] == "activation_examples:SWISH"
            net = TwoLayerNet(4, 16, 1, SWISH, init="independent", seed=row["seed"])
            lam = float(np.linalg.eigvalsh(infinite_ntk(SWISH, data.X).numpy())[0])
            assert row["lambda_min"] == pytest.approx(lam, rel=1e-12)
            single = train(net, data.X, data.y, lr="auto", steps=60, tol=1e-2)
            assert (row["status"], row["steps"]) == (single.status, single.steps)
            assert row["final_residual"] == pytest.approx(single.residual_norm[-1], rel=1e-10)


# ----------------------------------------------------------------------------- bad activations


def test_bad_own_activations_raise_value_errors_at_the_data():
    X = off_sphere(4, 3)
    with pytest.raises(ValueError, match=r"activation 'total' is not elementwise: it returns \(4, 1\)"):
        TwoLayerNet(3, 8, 1, NOT_ELEMENTWISE)(X)
    with pytest.raises(ValueError, match="activation 'log' returns non-finite values"):
        TwoLayerNet(3, 8, 1, LOG)(X)
    with pytest.raises(ValueError, match="not elementwise"):
        infinite_ntk(NOT_ELEMENTWISE, X)
    with pytest.raises(ValueError, match="fn of activation 'x' must be callable"):
        Activation.elementwise("x", 3)


@pytest.mark.parametrize("args, fragment", [
    (["train", "--activation", "activation_examples:NOT_ELEMENTWISE"], "is not elementwise"),
    (["train", "--activation", "activation_examples:LOG"], "returns non-finite values"),
    (["train", "--activation", "no_such_module:swish"], "does not import"),
    (["ntk", "--activation", "activation_examples:NOT_AN_ACTIVATION"], "not an Activation"),
    (["study", "--activations", "relu,swish", "--only", "concentration"], "unknown activation 'swish'"),
    (["study", "--activations", "relu,relu"], "activations repeat"),
])
def test_cli_bad_activations_exit_2_with_one_line(tmp_path, overparam, args, fragment):
    result = overparam(*args, "--out", str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


def test_cli_trains_an_activation_named_module_attribute(tmp_path, overparam):
    result = overparam("train", "--activation", "activation_examples:SWISH", "--width", "32", "--n", "6",
                           "--d", "4", "--steps", "30", "--init", "independent", "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    data = sphere(6, 4, seed=0)
    single = train(TwoLayerNet(4, 32, 1, SWISH, init="independent", seed=0), data.X, data.y, lr="auto", steps=30,
                   tol=1e-3)
    assert summary["steps"] == single.steps and summary["residual_norm"] == pytest.approx(single.residual_norm[-1],
                                                                                           rel=1e-10)


def test_study_runs_its_sections_for_the_listed_activations(tmp_path):
    """A study for relu and gelu: the concentration table's gelu rows against ntk and H* recomputed here, the
    training table has a row per listed activation, and each section's command repeats --activations."""
    config = StudyConfig(d=4, tol=1e-2, sections=("concentration", "training"), settings={
        "concentration": {"n": 10, "widths": (32, 128), "seeds": 2},
        "training": {"n": 6, "widths": (64,), "seeds": 2, "steps": 100}}).with_activations(["relu", "gelu"])
    result = run_study(config, tmp_path)
    assert [s.status for s in result.sections] == ["complete", "complete"]
    assert all(f"--config {tmp_path / 'study.toml'} --only {s.key}" in s.command for s in result.sections)
    assert StudyConfig.from_toml(tmp_path / "study.toml").activations == ("relu", "gelu")
    with open(tmp_path / "tables" / "concentration.csv", newline="", encoding="utf-8") as handle:
        rows = {(r["activation"], int(r["m"])): r for r in csv.DictReader(handle)}
    X = torch.from_numpy(unit_sphere(10, 4, config.seed))
    limit = infinite_ntk("gelu", X)
    errors = [float(torch.linalg.matrix_norm(ntk(TwoLayerNet(4, 128, 1, "gelu", seed=seed), X) - limit, ord=2))
              / float(torch.linalg.eigvalsh(limit)[-1]) for seed in range(2)]
    assert float(rows["gelu", 128]["rel. error"]) == pytest.approx(np.mean(errors), rel=1e-10)
    with open(tmp_path / "tables" / "training.csv", newline="", encoding="utf-8") as handle:
        assert [r["activation"] for r in csv.DictReader(handle)] == ["relu", "gelu"]
