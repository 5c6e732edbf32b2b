"""TwoLayerNet: forward and closed-form gradient against torch.autograd and finite differences."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam import TwoLayerNet
from overparam.activations import BUILTIN, parse_scale, resolve

#: Every built-in activation (the papers' three, tanh, sigmoid, gelu).
ACTIVATIONS = BUILTIN


#: phi written independently of overparam with torch primitives (gelu in its erf form, docs/mathematics.md#elementwise).
REFERENCE_PHI = {
    "relu": torch.relu, "exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "gelu": lambda z: z * 0.5 * (1 + torch.erf(z / math.sqrt(2))),
    "softmax": lambda z: z.shape[1] * torch.softmax(z, dim=1),
}


def reference_output(W, a, X, activation, kappa):
    """F written directly from docs/mathematics.md#networks, #elementwise with torch primitives (autograd-able); activation: a
    built-in's name or record."""
    phi = REFERENCE_PHI[getattr(activation, "name", activation)]
    return kappa * phi(X @ W.T) @ a


def sample_inputs(n, d, seed=0, radius=0.9):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return radius * X / X.norm(dim=1, keepdim=True)


CASES = list(itertools.product(ACTIVATIONS, (1, 3), ("independent", "coupled"), (None, "1", "1/sqrt(m)", "1/m", 0.37)))


@pytest.mark.parametrize("activation,k,init,scale", CASES)
def test_forward_and_gradient_match_autograd(activation, k, init, scale):
    net = TwoLayerNet(5, 24, k, activation, scale=scale, init=init, seed=3, chunk_size=10)
    X = sample_inputs(7, 5)
    y = torch.randn(7, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W = net.W.clone().requires_grad_(True)
    F = reference_output(W, net.a, X, activation, net.kappa)
    (0.5 * (F - y).square().sum()).backward()
    torch.testing.assert_close(net(X), F.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.grad(X, y), W.grad, rtol=1e-10, atol=1e-11)
    assert net.loss(X, y) == pytest.approx(0.5 * float((F.detach() - y).square().sum()), rel=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradient_matches_central_finite_differences(activation):
    net = TwoLayerNet(3, 6, 2, activation, seed=5)
    X = sample_inputs(4, 3, seed=2)
    y = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grad = net.grad(X, y)
    W0 = net.W.clone()
    h = 1e-6
    numeric = torch.zeros_like(W0)
    for r, j in itertools.product(range(6), range(3)):
        for sign in (1, -1):
            net.W = W0.clone()
            net.W[r, j] += sign * h
            numeric[r, j] += sign * net.loss(X, y) / (2 * h)
    net.W = W0
    # Central differences carry O(h^2) truncation and O(eps/h) rounding error: about 1e-9 here.
    torch.testing.assert_close(grad, numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("keep", (False, True))
def test_chunked_equals_unchunked(activation, keep):
    X = sample_inputs(9, 4, seed=4)
    y = torch.randn(9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    whole = TwoLayerNet(4, 50, 2, activation, seed=8, chunk_size=50)
    chunked = whole.copy()
    chunked.chunk_size = 7  # uneven last chunk
    torch.testing.assert_close(chunked(X), whole(X), rtol=1e-13, atol=1e-13)
    forward = chunked.forward_pass(X, keep=keep)
    torch.testing.assert_close(forward.vjp(forward.out - y), whole.grad(X, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reused_workspace_gives_the_same_pass_and_memory(activation):
    """A forward pass written into an earlier pass's workspace (as train() does step to step) equals a
    fresh one, uses that memory (each chunk's GEMM in its spare chunk), and J^T V from its kept chunks
    equals the recomputed one; `out` receives J^T V."""
    X = sample_inputs(9, 4, seed=4)
    V = torch.randn(9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    net = TwoLayerNet(4, 50, 2, activation, seed=8, chunk_size=7)
    first = net.forward_pass(X, keep=True)
    assert first.workspace.numel() == 9 * (50 + 7)  # the kept chunks and one chunk's staging space
    net.W = net.W * 1.1
    reused = net.forward_pass(X, keep=True, workspace=first.workspace)
    assert reused.workspace.data_ptr() == first.workspace.data_ptr()
    fresh = net.forward_pass(X, keep=False)
    assert torch.equal(reused.out, fresh.out)
    out = torch.full_like(net.W, float("nan"))
    assert reused.vjp(V, out=out) is out
    torch.testing.assert_close(out, fresh.vjp(V), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(reused.jvp(net.W), fresh.jvp(net.W), rtol=1e-13, atol=1e-13)
    small = torch.empty(10, dtype=torch.float64)  # too small: a new workspace is made
    assert net.forward_pass(X, keep=True, workspace=small).workspace.numel() == 9 * 57
    with pytest.raises(ValueError, match="out has shape"):
        reused.vjp(V, out=torch.empty(3, 4, dtype=torch.float64))


def test_default_chunks_fit_the_budget_in_rows_of_whole_cache_lines():
    """default_chunk: even, at least 2, n x chunk x (k + 2) values within CHUNK_BYTES, and where a row can
    hold one, rows of whole 64-byte lines that are not a multiple of 2 KiB; the widest such width."""
    from overparam.chunks import CHUNK_BYTES, default_chunk

    for n in (1, 7, 64, 1000, 1024, 4096, 10**6):
        for k in (1, 2, 3):
            for itemsize in (4, 8):
                chunk, per_neuron = default_chunk(n, k, itemsize), n * (k + 2) * itemsize
                assert chunk >= 2 and chunk % 2 == 0
                assert chunk == 2 or chunk * per_neuron <= CHUNK_BYTES
                if chunk * itemsize >= 128:
                    assert chunk * itemsize % 64 == 0 and chunk * itemsize % 2048 != 0
                    wider = [w for w in range(chunk + 1, CHUNK_BYTES // per_neuron + 1)
                             if w * itemsize % 64 == 0 and w * itemsize % 2048 != 0]
                    assert wider == []


@pytest.mark.parametrize("dtype,columns", [(torch.float32, 32), (torch.float32, 8), (torch.float64, 32)])
def test_transposed_product_is_E_transpose_R_in_either_operand_order(dtype, columns):
    from overparam.chunks import transposed_product

    gen = torch.Generator().manual_seed(0)
    E = torch.rand(64, 40, generator=gen, dtype=torch.float64)
    R = torch.randn(64, columns, generator=gen, dtype=torch.float64)
    product = transposed_product(E.to(dtype), R.to(dtype))
    assert product.shape == (40, columns)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(product.double(), E.T @ R, rtol=tolerance, atol=tolerance)
    batched = transposed_product(E.expand(3, 64, 40).to(dtype), R.to(dtype))
    torch.testing.assert_close(batched.double(), (E.T @ R).expand(3, 40, columns), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("shape,k", [((64, 40), 1), ((64, 40), 2), ((3, 64, 40), 1), ((3, 64, 40), 5)])
def test_thin_product_is_E_times_A_in_either_operand_order(shape, k):
    from overparam.chunks import thin_product

    gen = torch.Generator().manual_seed(1)
    E = torch.rand(*shape, generator=gen, dtype=torch.float64)
    A = torch.randn(*shape[:-2], shape[-1], k, generator=gen, dtype=torch.float64)
    product = thin_product(E, A)
    assert product.shape == (*shape[:-1], k)
    torch.testing.assert_close(product, E @ A, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("activation", [name for name in BUILTIN if not resolve(name).normalised])
def test_pass_without_output_gives_the_same_jacobian_products(activation):
    X = sample_inputs(9, 4, seed=4)
    V = torch.randn(9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    net = TwoLayerNet(4, 50, 2, activation, seed=8, chunk_size=7)
    bare, full = net.forward_pass(X, keep=False, output=False), net.forward_pass(X, keep=False)
    assert bare.out is None
    torch.testing.assert_close(bare.vjp(V), full.vjp(V), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(bare.jvp(net.W), full.jvp(net.W), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("keep", (False, True))
@pytest.mark.parametrize("shift_devices", (("cuda",), ("cpu", "cuda")))  # CPU, GPU paths (the same here)
def test_softmax_chunks_in_the_order_of_a_give_the_same_products(keep, shift_devices, monkeypatch):
    """Softmax, one output, random signs: the neurons are chunked in the order of a_r, so that a takes one
    value on each run of a chunk (two runs in one chunk) and J^T V takes d GEMM columns there. F, J^T V,
    J v and Theta equal the one-chunk pass (plain slices); an a with three values keeps slices."""
    from overparam import coefficients
    from overparam.chunks import chunk_width, neuron_chunks
    from overparam.kernels.finite import pass_ntk

    monkeypatch.setattr(coefficients, "BOUNDED_SHIFT_DEVICES", shift_devices)

    X = sample_inputs(9, 4, seed=4)
    V = torch.randn(9, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    whole = TwoLayerNet(4, 50, 1, "softmax", seed=8, chunk_size=50)
    chunked = whole.copy()
    chunked.chunk_size = 7
    forward, reference = chunked.forward_pass(X, keep=keep), whole.forward_pass(X, keep=False)
    assert all(isinstance(neurons, torch.Tensor) for neurons in forward.chunks)
    assert torch.equal(torch.sort(torch.cat(forward.chunks)).values, torch.arange(50))
    for neurons, runs in zip(forward.chunks, forward.chunk_runs):
        assert [columns.start for columns, _ in runs] == [0] + [columns.stop for columns, _ in runs[:-1]]
        assert runs[-1][0].stop == len(neurons)
        for columns, value in runs:
            assert torch.all(chunked.a[neurons[columns]] == value)
    assert sum(len(runs) == 2 for runs in forward.chunk_runs) == 1
    W = whole.W.clone().requires_grad_(True)  # and both against autograd
    F = reference_output(W, whole.a, X, "softmax", whole.kappa)
    (F * V).sum().backward()
    torch.testing.assert_close(forward.out, F.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward.vjp(V), W.grad, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(forward.out, reference.out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(forward.vjp(V), reference.vjp(V), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward.jvp(whole.W), reference.jvp(whole.W), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pass_ntk(forward), pass_ntk(reference), rtol=1e-12, atol=1e-12)
    three = torch.tensor([[1.0], [-1.0], [0.5]], dtype=torch.float64).repeat(10, 1)
    chunks, runs = neuron_chunks(three, 7, by_sign=True, paired=False)
    assert runs == [None] * len(chunks) and all(isinstance(neurons, slice) for neurons in chunks)
    one = torch.ones(30, 1, dtype=torch.float64)  # one value: one run per chunk
    chunks, runs = neuron_chunks(one, 7, by_sign=True, paired=False)
    assert runs == [[(slice(0, chunk_width(neurons)), 1.0)] for neurons in chunks]


def test_paired_product_equals_the_plain_one_and_is_exactly_zero_on_equal_pairs():
    from overparam.chunks import paired_matmul

    gen = torch.Generator().manual_seed(2)
    P = torch.rand(3, 16, 40, generator=gen, dtype=torch.float64)
    A_even = torch.randn(3, 20, 2, generator=gen, dtype=torch.float64)
    A = torch.stack([A_even, -A_even], dim=-2).reshape(3, 40, 2)
    torch.testing.assert_close(paired_matmul(P, A), P @ A, rtol=1e-13, atol=1e-13)
    equal = P[..., 0::2].repeat_interleave(2, dim=-1)
    assert torch.count_nonzero(paired_matmul(equal, A)) == 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("k", (1, 3))
def test_coupled_network_sums_pairs_only_while_they_are_equal(activation, k):
    """A coupled init's pairs are summed while each is as the init made it (F(W(0)) exactly zero); after a
    GD step, or with other signs, the network is evaluated as any other, and matches autograd."""
    from overparam.chunks import coupled_pairs

    net = TwoLayerNet(5, 24, k, activation, init="coupled", seed=3, chunk_size=10)
    X = sample_inputs(7, 5)
    y = torch.randn(7, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert coupled_pairs(net.W, net.a) and torch.count_nonzero(net(X)) == 0
    stepped, signs = net.copy(), net.copy()
    stepped.W = net.W - 0.1 * net.grad(X, y)
    signs.a = net.a.abs()
    assert not coupled_pairs(stepped.W, stepped.a) and not coupled_pairs(signs.W, signs.a)
    if activation == "softmax" and k == 1:  # now in the order of a: slices no more
        assert all(isinstance(neurons, torch.Tensor) for neurons in stepped.forward_pass(X).chunks)
    for other in (stepped, signs):
        W = other.W.clone().requires_grad_(True)
        F = reference_output(W, other.a, X, activation, other.kappa)
        (0.5 * (F - y).square().sum()).backward()
        torch.testing.assert_close(other(X), F.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(other.grad(X, y), W.grad, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("k", (1, 4))
def test_coupled_init_output_is_exactly_zero(activation, k):
    net = TwoLayerNet(6, 64, k, activation, init="coupled", seed=11, chunk_size=18)
    out = net(sample_inputs(20, 6, seed=9))
    assert out.shape == (20, k)
    assert torch.count_nonzero(out) == 0
    assert torch.equal(net.W[0::2], net.W[1::2]) and torch.equal(net.a[0::2], -net.a[1::2])


@pytest.mark.parametrize("init", ("independent", "coupled"))
def test_initial_weights_of_several_seeds_are_each_seeds_network(init):
    from overparam import initial_weights

    W, a = initial_weights(6, 3, 2, init, 0.5, [4, 0, 9])
    assert W.shape == (3, 6, 3) and a.shape == (3, 6, 2)
    for j, seed in enumerate([4, 0, 9]):
        net = TwoLayerNet(3, 6, 2, init=init, sigma=0.5, seed=seed)
        assert torch.equal(W[j], net.W) and torch.equal(a[j], net.a)
    if init == "coupled":
        assert torch.equal(W[:, 0::2], W[:, 1::2]) and torch.equal(a[:, 0::2], -a[:, 1::2])


def test_softmax_does_not_overflow_where_value_is_finite():
    net = TwoLayerNet(2, 8, 1, "softmax", seed=0)
    net.W = net.W * 1e3  # pre-activations of order 1e3: exp overflows, softmax is finite
    X = sample_inputs(3, 2)
    expected = reference_output(net.W, net.a, X, "softmax", net.kappa)
    assert torch.isfinite(net(X)).all()
    torch.testing.assert_close(net(X), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fold_devices", (("cuda",), ("cpu", "cuda")))  # online max; the folded shift (GPU)
def test_softmax_with_weights_large_enough_to_overflow_matches_autograd(fold_devices, monkeypatch):
    """float32 pre-activations near 100 (2^144: exp overflows) make `exponent_shift` nonzero: the shift is
    folded into the GEMM (GPU path) or the online maximum is taken (CPU), and both match float64 autograd
    without the fallback. At ordinary scale the shift is exactly zero (no pass shifts the exponents)."""
    from overparam import coefficients
    from overparam.coefficients import LOG2E, exponent_shift

    monkeypatch.setattr(coefficients, "BOUNDED_SHIFT_DEVICES", fold_devices)
    fallbacks = []
    online = coefficients._softmax_sums_online
    monkeypatch.setattr(coefficients, "_softmax_sums_online", lambda *args: fallbacks.append(1) or online(*args))
    gen = torch.Generator().manual_seed(3)
    direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    X = direction + 0.05 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    X /= X.norm(dim=-1, keepdim=True)
    W = direction + 0.05 * torch.randn(12, 3, generator=gen, dtype=torch.float64)
    W *= 100 / W.norm(dim=-1, keepdim=True)
    X, W = X.float().double(), W.float().double()  # the reference sees the float32 inputs exactly
    net = TwoLayerNet(3, 12, 2, "softmax", seed=4, chunk_size=4, dtype="float32")
    net.W = W.float()
    shift = exponent_shift(X.float() * LOG2E, net.W, 12)
    assert bool((shift > 10).all())
    assert not bool(exponent_shift(X.float() * LOG2E, net.W / 2, 12).any())
    a = net.a.double()
    y = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    W_ref = W.clone().requires_grad_(True)
    (0.5 * (reference_output(W_ref, a, X, "softmax", net.kappa) - y).square().sum()).backward()
    torch.testing.assert_close(net(X.float()).double(), reference_output(W, a, X, "softmax", net.kappa),
                               rtol=2e-5, atol=2e-5)  # float32 exponents near 144 (log2): about 150 eps
    torch.testing.assert_close(net.grad(X.float(), y.float()).double(), W_ref.grad, rtol=2e-5, atol=2e-5)
    assert len(fallbacks) == (0 if "cpu" in fold_devices else 2)  # CPU: forward and grad take the online max


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("far", [40.0, 2000.0])
def test_softmax_with_a_loose_shift_bound_matches_autograd(dtype, far, monkeypatch):
    """One neuron of norm `far`, orthogonal to every input, makes the bound ||x_i|| max_r ||w_r|| on the
    exponents loose: by 40 no exponential can overflow and none is shifted; by 2000 the shift
    (`exponent_shift`) is so far above every exponent that each shifted term underflows, and the forward
    pass must fall back to the exact online maximum. Both agree with autograd."""
    from overparam import coefficients

    monkeypatch.setattr(coefficients, "BOUNDED_SHIFT_DEVICES", ("cpu", "cuda"))
    fallbacks = []
    online = coefficients._softmax_sums_online
    monkeypatch.setattr(coefficients, "_softmax_sums_online", lambda *args: fallbacks.append(1) or online(*args))
    net = TwoLayerNet(3, 12, 2, "softmax", seed=4, chunk_size=4)
    W = net.W.clone()
    W[5] = torch.tensor([0.0, 0.0, far], dtype=torch.float64)
    net.W = W
    X = sample_inputs(7, 3, seed=2)
    X[:, 2] = 0  # every input orthogonal to neuron 5: its pre-activation is 0, far below the bound
    y = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net32 = net.copy() if dtype == torch.float64 else TwoLayerNet(3, 12, 2, "softmax", seed=4, chunk_size=4,
                                                                  dtype="float32")
    net32.W, net32.a = net.W.to(dtype), net.a.to(dtype)
    W_ref = net.W.clone().requires_grad_(True)
    loss = 0.5 * (reference_output(W_ref, net.a, X, "softmax", net.kappa) - y).square().sum()
    loss.backward()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(net32(X.to(dtype)).double(), reference_output(net.W, net.a, X, "softmax", net.kappa),
                               rtol=tol, atol=tol)
    torch.testing.assert_close(net32.grad(X.to(dtype), y.to(dtype)).double(), W_ref.grad, rtol=tol, atol=tol)
    assert bool(fallbacks) == (far > 100)


def test_exp_overflow_names_largest_preactivation():
    net = TwoLayerNet(2, 4, 1, "exp", seed=0, dtype="float32")
    net.W = torch.tensor([[100.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(OverflowError, match=r"largest <w_r, x_i> is 100"):
        net(X)


def test_scale_parsing_and_paper_defaults():
    assert parse_scale(None, "relu", 400) == pytest.approx(1 / 20)
    assert parse_scale(None, "exp", 400) == 1.0
    assert parse_scale(None, "softmax", 400) == 1.0
    assert parse_scale("1/m", "exp", 400) == pytest.approx(1 / 400)
    assert parse_scale("0.25", "exp", 400) == 0.25
    for bad in ("1/n", -1.0, "nan"):
        with pytest.raises(ValueError):
            parse_scale(bad, "exp", 400)


def test_initialisation_statistics_match_the_papers():
    net = TwoLayerNet(4, 20000, 2, "exp", sigma=0.5, seed=1)
    assert float(net.W.std()) == pytest.approx(0.5, rel=0.01)  # 80,000 draws: sd error 0.25%
    assert set(net.a.unique().tolist()) == {-1.0, 1.0}
    assert float(net.a.mean()) == pytest.approx(0.0, abs=0.02)  # 40,000 signs: sd 0.005
    again = TwoLayerNet(4, 20000, 2, "exp", sigma=0.5, seed=1)
    assert torch.equal(net.W, again.W) and torch.equal(net.a, again.a)


@pytest.mark.parametrize("bad", [dict(width=0), dict(width=7, init="coupled"), dict(activation="swish"),
                                 dict(init="mirror"), dict(sigma=0.0), dict(dtype="int8")])
def test_bad_constructor_arguments_raise_clear_errors(bad):
    kwargs = dict(in_dim=3, width=8, activation="exp") | bad
    with pytest.raises(ValueError):
        TwoLayerNet(**kwargs)


def test_bad_inputs_raise_clear_errors():
    net = TwoLayerNet(3, 8)
    with pytest.raises(ValueError, match="d = 2 columns"):
        net(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="n = 0"):
        net(torch.zeros(0, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        net(torch.tensor([[0.0, float("nan"), 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        net.loss(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(5))


def test_replacing_w_or_a_with_a_bad_value_says_what_is_wrong():
    net = TwoLayerNet(3, 8, 2, "exp", seed=0)
    W, a = net.W, net.a
    with pytest.raises(ValueError, match=r"d = in_dim = 3 columns .* got shape \(8, 4\)"):
        net.W = torch.zeros(8, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(m, d\) matrix .* got shape \(24,\)"):
        net.W = torch.zeros(24, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"W has 1 non-finite value\(s\) \(NaN or inf\)"):
        net.W = W.clone().index_put_((torch.tensor([2]), torch.tensor([1])), torch.tensor(float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="W must be a tensor or an array of numbers"):
        net.W = [["x", 1.0, 2.0]]
    with pytest.raises(ValueError, match=r"a must be an \(m, k\) = \(8, 2\) matrix.*got shape \(8, 3\)"):
        net.a = torch.ones(8, 3)
    with pytest.raises(ValueError, match=r"got shape \(6, 2\); to change the width assign W first"):
        net.a = torch.ones(6, 2)
    with pytest.raises(ValueError, match=r"a has 2 non-finite value\(s\)"):
        net.a = torch.tensor([[float("inf"), 1.0]] + [[1.0, 1.0]] * 6 + [[1.0, float("-inf")]])
    assert net.W is W and net.a is a  # a refused value leaves the network as it was
    net.W = torch.zeros(5, 3, dtype=torch.float64)  # a new width is fine until F is needed
    with pytest.raises(ValueError, match=r"W has 5 rows \(neurons\) but a has 8: .* assign an a of shape \(5, 2\)"):
        net(sample_inputs(4, 3))


def test_replaced_w_and_a_give_the_formula_output():
    net = TwoLayerNet(3, 8, 2, "exp", seed=0)
    X = sample_inputs(5, 3, seed=7)
    # A view of a batch of weights is used as it is, without a copy.
    stacked = torch.randn(4, 8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net.W = stacked[2]
    assert net.W.data_ptr() == stacked[2].data_ptr()
    torch.testing.assert_close(net(X), net.kappa * torch.exp(X @ stacked[2].T) @ net.a, rtol=1e-13, atol=0)
    # Array-likes and integer tensors are converted to the network's dtype and device.
    rows = np.linspace(-0.5, 0.5, 24).reshape(8, 3)
    net.W = rows
    net.a = torch.tensor([[1, -1]] * 4 + [[-1, 1]] * 4)
    assert net.W.dtype == net.a.dtype == torch.float64
    signs = torch.tensor([[1.0, -1.0]] * 4 + [[-1.0, 1.0]] * 4, dtype=torch.float64)
    expected = net.kappa * torch.exp(X @ torch.from_numpy(rows).T) @ signs
    torch.testing.assert_close(net(X), expected, rtol=1e-13, atol=0)
    # A float32 a follows W's float64; a new width: W first, then a.
    net.W = rows[:3]
    net.a = torch.tensor([[0.5, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float32)
    assert net.width == 3 and net.a.dtype == torch.float64
    expected = net.kappa * torch.exp(X @ torch.from_numpy(rows[:3]).T) @ torch.tensor(
        [[0.5, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(net(X), expected, rtol=1e-13, atol=0)


@settings(max_examples=25, deadline=None)
@given(activation=st.sampled_from(ACTIVATIONS), n=st.integers(1, 6), m=st.integers(1, 12),
       k=st.integers(1, 3), chunk=st.integers(1, 13), seed=st.integers(0, 10_000))
def test_gradient_property_any_shape_and_chunk(activation, n, m, k, chunk, seed):
    net = TwoLayerNet(3, m, k, activation, seed=seed, chunk_size=chunk)
    X = sample_inputs(n, 3, seed=seed)
    y = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, k)))
    W = net.W.clone().requires_grad_(True)
    F = reference_output(W, net.a, X, activation, net.kappa)
    (0.5 * (F - y).square().sum()).backward()
    torch.testing.assert_close(net.grad(X, y), W.grad, rtol=1e-10, atol=1e-11)
