"""The nested-width kernel pass against `ntk()` of each prefix network (itself checked against the
torch.func Jacobian contraction in test_ntk.py), and its width profile against numpy spectra."""

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet
from overparam.data import sphere
from overparam.models import initial_weights
from overparam.kernels.nested import nested_ntk, width_profile
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk

from overparam.activations import BUILTIN

WIDTHS = [2, 6, 16, 64, 100, 256]


def prefix_kernel(activation, W, a, m, X, init):
    net = TwoLayerNet(W.shape[1], m, a.shape[1], activation, init=init)
    net.W, net.a = W[:m].clone(), a[:m].clone()
    return ntk(net, X)


@pytest.mark.parametrize("activation", BUILTIN)
@pytest.mark.parametrize("out_dim", [1, 3])
@pytest.mark.parametrize("init", ["independent", "coupled"])
def test_nested_pass_matches_ntk_at_every_width(activation, out_dim, init):
    X = torch.from_numpy(sphere(9, 4, seed=1).X)
    W, a = initial_weights(256, 4, out_dim, init, 1.0, seed=3)
    kernels = nested_ntk(X, W, a, activation, WIDTHS, chunk=14)  # chunks straddle the grid widths
    assert kernels.shape == (len(WIDTHS), 9 * out_dim, 9 * out_dim)
    for m, H in zip(WIDTHS, kernels):
        reference = prefix_kernel(activation, W, a, m, X, init)
        scale = max(1.0, float(reference.abs().max()))
        assert float((H - reference).abs().max()) <= 1e-10 * scale, (m, float((H - reference).abs().max()))


@pytest.mark.parametrize("out_dim", [1, 2])
def test_softmax_running_sums_rescale_when_the_shift_grows(out_dim):
    """Weights so large that exp overflows float64 unshifted: each chunk then takes its own maximum
    shift, and the running sums are rescaled to the largest so far (the online max-shift)."""
    X = torch.from_numpy(sphere(6, 3, seed=0).X)
    W, a = initial_weights(120, 3, out_dim, "independent", 400.0, seed=5)
    widths = [10, 40, 120]
    kernels = nested_ntk(X, W, a, "softmax", widths, chunk=8)
    assert torch.isfinite(kernels).all()
    for m, H in zip(widths, kernels):
        reference = prefix_kernel("softmax", W, a, m, X, "independent")
        assert float((H - reference).abs().max()) <= 1e-10 * max(1.0, float(reference.abs().max()))


def test_width_profile_against_numpy_spectra():
    X = torch.from_numpy(sphere(12, 5, seed=2).X)
    widths = [32, 128, 512]
    profile = width_profile(X, "exp", widths, init="coupled", seed=4)
    W, a = initial_weights(512, 5, 1, "coupled", 1.0, seed=4)
    limit = infinite_ntk("exp", X).numpy()
    assert profile.lam == pytest.approx(np.linalg.eigvalsh(limit)[0], rel=1e-12)
    for m, distance, smallest in zip(widths, profile.distance, profile.lambda_min):
        H = prefix_kernel("exp", W, a, m, X, "coupled").numpy()
        assert distance == pytest.approx(np.linalg.norm(H - limit, 2), rel=1e-9)
        assert smallest == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-9)


@pytest.mark.parametrize("widths, message", [([4, 4], "increasing"), ([8, 600], "exceeds"), ([0, 8], "increasing")])
def test_bad_widths_are_refused(widths, message):
    W, a = initial_weights(512, 3, 1)
    with pytest.raises(ValueError, match=message):
        nested_ntk(torch.from_numpy(sphere(5, 3).X), W, a, "relu", widths)


def test_coupled_widths_must_be_even():
    with pytest.raises(ValueError, match="even"):
        width_profile(torch.from_numpy(sphere(5, 3).X), "relu", [8, 13], init="coupled")


def spectral_distance(H, limit):
    return float(torch.linalg.matrix_norm(H - limit, 2))


@pytest.mark.parametrize("activation", BUILTIN)
@pytest.mark.parametrize("init", ["independent", "coupled"])
@pytest.mark.parametrize("out_dim", [1, 2])
def test_float32_products_keep_the_distances(activation, init, out_dim):
    """The mixed-precision pass (float32 chunk products, float64 running sums) against the float64 kernels of
    each prefix network (`ntk`): ||H(m) - H*||_2 within 2e-6 ||H*||_2, and within 1e-5 of itself."""
    X = torch.from_numpy(sphere(24, 5, seed=1).X)
    W, a = initial_weights(4096, 5, out_dim, init, 1.0, seed=3)
    widths = [16, 64, 256, 1024, 4096]
    limit = torch.kron(torch.eye(out_dim, dtype=torch.float64), infinite_ntk(activation, X))
    kernels = nested_ntk(X, W, a, activation, widths, chunk=300, products="float32")
    assert kernels.dtype == torch.float64
    scale = spectral_distance(limit, 0 * limit)
    for m, H in zip(widths, kernels):
        expected = spectral_distance(prefix_kernel(activation, W, a, m, X, init), limit)
        found = spectral_distance(H, limit)
        assert abs(found - expected) <= 2e-6 * scale, (m, found, expected)
        assert abs(found - expected) <= 1e-5 * expected, (m, found, expected)


def test_float32_products_keep_float64_where_exponentials_leave_its_range():
    """exp with weights so large that e^(2 z) overflows float32: the pass keeps float64 (exact to 1e-10)."""
    X = torch.from_numpy(sphere(6, 3, seed=0).X)
    W, a = initial_weights(64, 3, 1, "independent", 40.0, seed=5)
    H = nested_ntk(X, W, a, "exp", [64], products="float32")[0]
    reference = prefix_kernel("exp", W, a, 64, X, "independent")
    assert torch.isfinite(H).all()
    assert float((H - reference).abs().max()) <= 1e-10 * float(reference.abs().max())


@pytest.mark.parametrize("out_dim", [1, 2])
def test_coupled_pairs_with_the_online_shift(out_dim):
    """Coupled weights large enough for the online max-shift: the pass over the pairs' first neurons (P = A = 0)
    against `ntk` of each prefix network."""
    X = torch.from_numpy(sphere(6, 3, seed=0).X)
    W, a = initial_weights(120, 3, out_dim, "coupled", 400.0, seed=5)
    widths = [10, 40, 120]
    kernels = nested_ntk(X, W, a, "softmax", widths, chunk=8)
    for m, H in zip(widths, kernels):
        reference = prefix_kernel("softmax", W, a, m, X, "coupled")
        assert float((H - reference).abs().max()) <= 1e-10 * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("activation", ["relu", "softmax"])
def test_a_broken_pair_is_passed_neuron_by_neuron(activation):
    """Coupled weights with one pair broken are not treated as pairs: every neuron is summed."""
    X = torch.from_numpy(sphere(7, 3, seed=2).X)
    W, a = initial_weights(64, 3, 1, "coupled", 1.0, seed=1)
    W[41] += 0.5
    kernels = nested_ntk(X, W, a, activation, [16, 64], chunk=10)
    for m, H in zip([16, 64], kernels):
        reference = prefix_kernel(activation, W, a, m, X, "independent")
        assert float((H - reference).abs().max()) <= 1e-10 * max(1.0, float(reference.abs().max()))
