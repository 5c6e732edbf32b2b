"""Kernels of overparam.kernels (finite, infinite, spectra) against independent references: the torch.func Jacobian
contraction (finite Theta), Monte Carlo over initialisations with standard-error tolerances
(closed forms of H*), dense eigvalsh (Lanczos), and explicit matrices (the operators)."""

import math

import numpy as np
import pytest
import torch
from torch.func import jacrev

import overparam
from overparam import TwoLayerNet
from overparam.kernels import eigensolvers, finite
from overparam.activations import BUILTIN, PAPERS
from overparam.data import sphere
from overparam.kernels.finite import monte_carlo_ntk, ntk, pass_ntk
from overparam.kernels import infinite
from overparam.kernels.infinite import infinite_ntk, infinite_ntk_vector
from overparam.kernels.spectra import (extreme_eigenvalue, kernel_operator, lambda_min, leading_eigenvalues,
                                       spectral_norm)
from test_models import reference_output  # F(W, X) written directly from docs/mathematics.md#networks

#: Every built-in activation (the papers' three, tanh, sigmoid, gelu).
ACTIVATIONS = BUILTIN


def jacobian_ntk(net, X):
    """Theta = J J^T with J the (n k) x (m d) Jacobian from torch.func, output-major rows."""
    J = jacrev(reference_output)(net.W, net.a, X, net.activation, net.kappa)  # (n, k, m, d)
    J = J.permute(1, 0, 2, 3).reshape(net.out_dim * X.shape[0], -1)
    return J @ J.T


def inputs(n, d, seed=0, radius=1.0):
    return torch.from_numpy(sphere(n, d, seed=seed).X) * radius


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("out_dim, init", [(1, "independent"), (3, "independent"), (2, "coupled")])
@pytest.mark.parametrize("row_block", (256, 3))  # 3: the lower triangle summed in row blocks, then mirrored
def test_finite_kernel_matches_jacobian_contraction(activation, out_dim, init, row_block, monkeypatch):
    monkeypatch.setattr(finite, "GRAM_ROW_BLOCK", row_block)
    X = inputs(7, 4, seed=1)
    net = TwoLayerNet(4, 40, out_dim, activation, init=init, seed=2, chunk_size=16)
    expected = jacobian_ntk(net, X)
    theta = ntk(net, X, normalized=False)
    assert theta.shape == (7 * out_dim, 7 * out_dim)
    if row_block == 3:  # mirrored from the lower triangle: exactly symmetric
        assert torch.equal(theta, theta.T)
    scale = float(expected.abs().max())
    torch.testing.assert_close(theta, expected, rtol=1e-10, atol=1e-10 * scale)
    H = ntk(net, X)
    torch.testing.assert_close(H, expected / (net.width * net.kappa**2), rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cross_kernel_is_the_block_of_the_joint_kernel(activation):
    X = inputs(9, 3, seed=3)
    net = TwoLayerNet(3, 32, 2, activation, seed=4)
    full = ntk(net, X)
    cross = ntk(net, X[:4], X2=X[4:])  # (4 k, 5 k)
    rows = torch.cat([torch.arange(4), 9 + torch.arange(4)])
    cols = torch.cat([4 + torch.arange(5), 13 + torch.arange(5)])
    torch.testing.assert_close(cross, full[rows][:, cols], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(infinite_ntk(activation, X[:4], X2=X[4:]), infinite_ntk(activation, X)[:4, 4:],
                               rtol=1e-14, atol=1e-14)


def test_package_level_names():
    X = inputs(5, 3)
    net = TwoLayerNet(3, 16, 1, "relu")
    torch.testing.assert_close(overparam.ntk(net, X), ntk(net, X))
    assert overparam.ntk is ntk and overparam.infinite_ntk is infinite_ntk
    assert overparam.lambda_min is lambda_min and overparam.monte_carlo_ntk is monte_carlo_ntk


def test_monte_carlo_mean_and_standard_error_are_the_sample_statistics():
    X = inputs(5, 3)
    kernels = torch.stack([ntk(TwoLayerNet(3, 24, 2, "softmax", seed=10 + s), X) for s in range(6)])
    estimate = monte_carlo_ntk("softmax", X, 24, 6, out_dim=2, seed=10)
    torch.testing.assert_close(estimate.mean, kernels.mean(0), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(estimate.standard_error, kernels.std(0) / math.sqrt(6), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("activation, sigma", [("relu", 1.0), ("relu", 2.5), ("exp", 1.0), ("exp", 0.7),
                                               ("tanh", 1.0), ("tanh", 2.0), ("sigmoid", 2.0), ("gelu", 1.0),
                                               ("gelu", 2.5)])
def test_unbiased_closed_forms_against_monte_carlo(activation, sigma):
    """Elementwise activations (relu, exp; tanh, sigmoid, gelu by quadrature): H(W(0)) is a mean of m i.i.d. neuron terms whose expectation is H*, so the
    Monte Carlo mean is unbiased and |mean - H*| <= 5 standard errors entrywise (t with 31 degrees
    of freedom; P(|t| > 5) ~ 2e-5 per entry). Inputs of norm 0.6 keep the log-normal exp terms
    (log-variance sigma^2 ||x_i + x_j||^2) near enough to normal at m = 4096."""
    X = inputs(8, 3, seed=5, radius=0.6)
    estimate = monte_carlo_ntk(activation, X, 4096, 32, sigma=sigma, seed=100)
    limit = infinite_ntk(activation, X, sigma)
    z = (estimate.mean - limit).abs() / estimate.standard_error
    assert float(z.max()) <= 5.0
    # and the test has power: the standard error is small against the entries
    assert float((estimate.standard_error / limit.abs().max()).max()) < 0.02


def test_softmax_closed_form_against_monte_carlo():
    """softmax: H(W(0)) divides by the sample mean of e^{<w, x>}, so E[H(W(0))] = H* + O(1/m). At
    norm r = 0.6 the bias measured with 3000 initialisations at m = 16, 64, 256 was 2.9/m, 3.4/m,
    3.6/m times max|H*|; we allow 4 e^{4 sigma^2 r^2} / m max|H*| (4.7x that) plus 5 standard errors."""
    r, sigma, m = 0.6, 1.0, 65536
    X = inputs(8, 3, seed=6, radius=r)
    estimate = monte_carlo_ntk("softmax", X, m, 32, seed=200)
    limit = infinite_ntk("softmax", X, sigma)
    bias = 4 * math.exp(4 * sigma**2 * r**2) / m * float(limit.abs().max())
    assert float(((estimate.mean - limit).abs() - 5 * estimate.standard_error).max()) <= bias
    assert 5 * float(estimate.standard_error.max()) + bias < 0.01 * float(limit.abs().max())


def test_closed_forms_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64)  # orthogonal: <x1,x2> = 0
    y = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    relu = infinite_ntk("relu", torch.cat([x, y]))
    assert relu[0, 0] == pytest.approx(0.5)  # <x,x> (pi - arccos 1) / (2 pi)
    assert relu[1, 1] == pytest.approx(0.125)
    assert relu[0, 1] == 0.0
    assert relu[0, 2] == pytest.approx(0.6 * (math.pi - math.acos(0.6)) / (2 * math.pi))
    exp = infinite_ntk("exp", torch.cat([x, y]), sigma=0.5)
    assert exp[0, 2] == pytest.approx(0.6 * math.exp(0.25 * ((1.6) ** 2 + 0.8**2) / 2))
    soft = infinite_ntk("softmax", torch.cat([x, y]), sigma=2.0)
    assert soft[1, 2] == pytest.approx(0.4 * math.exp(4.0 * 0.4))
    two = infinite_ntk("relu", x, out_dim=2)
    torch.testing.assert_close(two, torch.kron(torch.eye(2, dtype=torch.float64), infinite_ntk("relu", x)))
    with pytest.raises(ValueError, match="unknown activation"):
        infinite_ntk("swish", x)


def test_relu_diagonal_is_half_the_squared_norm():
    """H*_ii = |x_i|^2 (pi - arccos 1) / (2 pi) = |x_i|^2 / 2, also where the computed cosine of x_i with
    itself rounds below 1 (before the fix 49 of these 200 diagonals were off, by up to 9e-9 relative)."""
    X = torch.randn(200, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.3
    squared = (X * X).sum(1).numpy()
    np.testing.assert_allclose(infinite_ntk("relu", X).diagonal().numpy(), squared / 2, rtol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_operators_match_their_dense_matrices(activation, monkeypatch):
    X = inputs(11, 4, seed=7)
    net = TwoLayerNet(4, 48, 2, activation, seed=8)
    V = torch.randn(22, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    finite = kernel_operator(net, X)
    torch.testing.assert_close(finite.matvec(V), ntk(net, X) @ V, rtol=1e-11, atol=1e-11)
    unnormalized = kernel_operator(net, X, normalized=False)
    torch.testing.assert_close(unnormalized.matvec(V), ntk(net, X, normalized=False) @ V, rtol=1e-11, atol=1e-9)
    for cache in (False, True):
        limit = kernel_operator(activation, X, out_dim=2, cache=cache)
        expected = infinite_ntk(activation, X, out_dim=2) @ V
        torch.testing.assert_close(limit.matvec(V), expected, rtol=1e-12, atol=1e-12)
    for workers in (None, 1, 3):  # tiles shared among threads (default: torch's count), or all on one
        blocks = infinite_ntk_vector(activation, X, V[:11], tile=3, workers=workers)
        torch.testing.assert_close(blocks, infinite_ntk(activation, X) @ V[:11], rtol=1e-12, atol=1e-12)
    index = torch.tensor([12, 0, 21, 5, 16])  # both outputs' columns, unordered
    dense = infinite_ntk(activation, X, out_dim=2)
    for group_bytes in (infinite.BLOCK_BYTES, 2 * 8 * 4 * 11):  # all columns at once, or by groups of 2
        monkeypatch.setattr(infinite, "BLOCK_BYTES", group_bytes)
        torch.testing.assert_close(kernel_operator(activation, X, out_dim=2).columns(index), dense[:, index],
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", PAPERS)  # closed-form H*: quadrature at n = 150 would be slow
def test_lanczos_matches_dense_lambda_min(activation):
    X = inputs(150, 6, seed=9)
    net = TwoLayerNet(6, 256, 2, activation, seed=10)
    dense = lambda_min(net, X)
    lanczos = lambda_min(net, X, solver="lanczos")
    assert dense.method == "dense" and lanczos.method == "lanczos" and lanczos.converged
    assert lanczos.value == pytest.approx(dense.value, rel=1e-8)
    assert lanczos.residual <= 1e-8 * dense.value
    limit_dense = lambda_min(activation, X)
    for cache in (False, True):
        limit = lambda_min(kernel_operator(activation, X, cache=cache), solver="lanczos")
        assert limit.converged and limit.value == pytest.approx(limit_dense.value, rel=1e-8)
    top = extreme_eigenvalue(net, X, "largest", dense_limit=0)
    assert top.value == pytest.approx(float(torch.linalg.eigvalsh(ntk(net, X))[-1]), rel=1e-8)


def test_spectral_norm_and_leading_eigenvalues_matrix_free():
    X = inputs(120, 5, seed=11)
    net = TwoLayerNet(5, 512, 1, "softmax", seed=12)
    difference = kernel_operator(net, X) - kernel_operator("softmax", X)
    dense = float(torch.linalg.matrix_norm(ntk(net, X) - infinite_ntk("softmax", X), ord=2))
    assert spectral_norm(difference).value == pytest.approx(dense, rel=1e-12)
    assert spectral_norm(difference, dense_limit=0).value == pytest.approx(dense, rel=1e-7)
    values = leading_eigenvalues(net, X, count=5, dense_limit=0)
    expected = torch.linalg.eigvalsh(ntk(net, X)).flip(0)[:5].numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-7)
    assert len(leading_eigenvalues(net, X)) == 120


def test_lambda_min_of_a_matrix_and_bad_input():
    K = torch.diag(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
    assert lambda_min(K).value == 1.0 and float(lambda_min(K.numpy())) == 1.0
    with pytest.raises(ValueError, match="square"):
        lambda_min(torch.ones(2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        lambda_min(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="inputs X"):
        lambda_min("relu")
    with pytest.raises(ValueError, match="which"):
        extreme_eigenvalue(K, which="middle")
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_ntk("relu", inputs(3, 2), 8, 1)
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma must be positive"):
            infinite_ntk("exp", inputs(3, 2), sigma)
        with pytest.raises(ValueError, match="sigma must be positive"):
            lambda_min("softmax", inputs(3, 2), sigma=sigma)
    # exp(sigma^2 ||x_i + x_j||^2 / 2) at sigma = 30, ||x_i|| = 1: exponent 1800 > log(max float64) = 709.8
    assert torch.isinf(infinite_ntk("exp", torch.eye(2, dtype=torch.float64), 30.0)).any()
    for solver in ("dense", "cholesky", "lanczos"):
        with pytest.raises(OverflowError, match="H\\*\\(exp\\) overflows float64 at sigma = 30"):
            lambda_min("exp", inputs(5, 2), sigma=30.0, solver=solver)


def test_unconverged_lanczos_is_reported_with_an_upper_estimate(monkeypatch):
    """A tiny basis with one restart cannot resolve lambda_min of a kernel with condition number
    1e11: the result says so and is still an upper bound (a Rayleigh quotient)."""
    monkeypatch.setattr(eigensolvers, "LANCZOS_BASES", (8,))
    values = np.geomspace(1e-8, 1e3, 400)
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((400, 400)))[0]
    K = (Q * values) @ Q.T
    result = lambda_min(K, solver="lanczos", maxiter=1)
    assert result.method == "lobpcg" and result.matvecs > 0 and not result.converged
    v = result.vector.ravel()
    assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-12)
    assert result.value == pytest.approx(v @ K @ v, rel=1e-10)  # the value is v's Rayleigh quotient ...
    assert result.residual == pytest.approx(np.linalg.norm(K @ v - result.value * v), rel=1e-10)
    assert result.value > 10 * values[0]  # ... far above lambda_min = 1e-8, which is why it is unconverged
    assert result.residual > 1e-10 * result.value  # and its residual misses the Lanczos tolerance


def test_pass_ntk_broadcasts_over_seeds():
    from overparam.coefficients import forward

    X = inputs(6, 3, seed=13)
    nets = [TwoLayerNet(3, 32, 2, "softmax", seed=s) for s in range(3)]
    batched = forward(X, torch.stack([net.W for net in nets]), torch.stack([net.a for net in nets]), "softmax",
                      1.0, chunk=8)
    kernels = pass_ntk(batched)
    assert kernels.shape == (3, 12, 12)
    for kernel, net in zip(kernels, nets):
        torch.testing.assert_close(kernel, ntk(net, X), rtol=1e-12, atol=1e-12)
