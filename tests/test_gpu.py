"""The CUDA path against the CPU in float64: forward, gradient, kernel, GD and batched seeds.

Runs only where a CUDA GPU is present (never in CI, which has none); the same numbers are asserted
on the CPU by the rest of the suite, so these tests check that the device path computes the same
function: GPU chunking (chunks.GPU_CHUNK_BYTES), cached factors and the reductions.
"""

import pytest
import torch

from overparam import TwoLayerNet, ntk, train
from overparam.training.batched import train_batched
from overparam.chunks import default_chunk

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (CI has none)")

ACTIVATIONS = ("relu", "exp", "softmax")


def inputs(n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return 0.9 * X / X.norm(dim=1, keepdim=True), y


def pair(activation, width=512, init="independent", chunk_size=None):
    cpu = TwoLayerNet(6, width, 2, activation, init=init, seed=1, chunk_size=chunk_size)
    gpu = TwoLayerNet(6, width, 2, activation, init=init, seed=1, device="cuda", chunk_size=chunk_size)
    return cpu, gpu


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("chunk_size", [None, 100])
def test_forward_gradient_and_kernel_equal_the_cpu(activation, chunk_size):
    X, y = inputs(40, 6)
    cpu, gpu = pair(activation, chunk_size=chunk_size)
    torch.testing.assert_close(gpu(X.cuda()).cpu(), cpu(X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gpu.grad(X.cuda(), y.cuda()).cpu(), cpu.grad(X, y), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(ntk(gpu, X.cuda()).cpu(), ntk(cpu, X), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("init", ("independent", "coupled"))
def test_one_output_softmax_in_sign_ordered_chunks_equals_the_cpu(init):
    """One output, random signs: chunks are index sets in the order of a (`chunks.neuron_chunks`;
    for coupled init from the first step on, W(0) is summed by pairs), exponentials without a shift
    (none can overflow here), and the kept chunks in a reused workspace, as train() runs."""
    X, y = inputs(40, 6)
    y = y[:, :1]
    cpu = TwoLayerNet(6, 512, 1, "softmax", init=init, seed=1, chunk_size=100)
    gpu = TwoLayerNet(6, 512, 1, "softmax", init=init, seed=1, device="cuda", chunk_size=100)
    forward = gpu.forward_pass(X.cuda(), keep=True)
    assert all(isinstance(neurons, torch.Tensor) for neurons in forward.chunks) == (init == "independent")
    torch.testing.assert_close(forward.out.cpu(), cpu(X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward.vjp(forward.out - y.cuda()).cpu(), cpu.grad(X, y), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(ntk(gpu, X.cuda()).cpu(), ntk(cpu, X), rtol=1e-11, atol=1e-11)
    on_cpu, on_gpu = train(cpu, X, y, lr=1e-2, steps=100), train(gpu, X.cuda(), y.cuda(), lr=1e-2, steps=100)
    torch.testing.assert_close(torch.from_numpy(on_gpu.residual_norm), torch.from_numpy(on_cpu.residual_norm),
                               rtol=1e-9, atol=1e-12)


def test_gpu_chunk_is_sized_from_free_memory():
    free = torch.cuda.mem_get_info()[0]
    chunk = default_chunk(4096, 1, 4, "cuda")
    assert chunk % 2 == 0 and chunk * 4096 * 3 * 4 <= min(1 << 30, free // 16)
    assert chunk > default_chunk(4096, 1, 4, "cpu")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradient_descent_follows_the_cpu_trajectory(activation):
    X, y = inputs(24, 6, seed=2)
    cpu, gpu = pair(activation, width=256, init="coupled")
    on_cpu = train(cpu, X, y, lr="auto", steps=200, tol=1e-3)
    on_gpu = train(gpu, X.cuda(), y.cuda(), lr="auto", steps=200, tol=1e-3)
    assert on_gpu.status == on_cpu.status and on_gpu.steps == on_cpu.steps
    assert on_gpu.lr == pytest.approx(on_cpu.lr, rel=1e-8)
    torch.testing.assert_close(torch.from_numpy(on_gpu.residual_norm), torch.from_numpy(on_cpu.residual_norm),
                               rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(gpu.W.cpu(), cpu.W, rtol=1e-8, atol=1e-10)


def test_batched_seeds_on_the_gpu_equal_single_cpu_runs():
    X, y = inputs(16, 6, seed=3)
    nets = [TwoLayerNet(6, 128, 2, "exp", init="coupled", seed=s) for s in range(3)]
    W = torch.stack([net.W for net in nets]).cuda()
    a = torch.stack([net.a for net in nets]).cuda()
    histories = train_batched(X.cuda(), y.cuda(), W, a, "exp", nets[0].kappa, lr=1e-3, steps=50, paired=True)
    for seed, net in enumerate(nets):
        single = train(net, X, y, lr=1e-3, steps=50)
        torch.testing.assert_close(torch.from_numpy(histories[seed].residual_norm),
                                   torch.from_numpy(single.residual_norm), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(W[seed].cpu(), net.W, rtol=1e-10, atol=1e-12)


def test_study_training_unit_on_the_gpu_equals_the_cpu():
    from overparam.study.framework import UnitContext
    from overparam.study.training_run import TrainingRun

    unit = TrainingRun("softmax", 64, "coupled", 8, 4, 1.0, 0, 2, 300, 1e-2)
    on_cpu = unit.compute(UnitContext("cpu", None))
    on_gpu = unit.compute(UnitContext("cuda", None))
    assert on_gpu.lam == pytest.approx(on_cpu.lam, rel=1e-12)
    for gpu_run, cpu_run in zip(on_gpu.runs, on_cpu.runs):
        assert gpu_run.status == cpu_run.status and gpu_run.steps == cpu_run.steps
        for key in ("loss2", "kernel_loss2"):
            assert getattr(gpu_run, key) == pytest.approx(getattr(cpu_run, key), rel=1e-8, abs=1e-14)
        for key in ("drift", "max_movement", "lambda_min_H0", "lambda_min_HT"):
            assert getattr(gpu_run, key) == pytest.approx(getattr(cpu_run, key), rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("alpha", (0.2, 20.0))
def test_training_at_an_output_scale_on_the_gpu_equals_the_cpu(activation, alpha):
    X, y = inputs(16, 6)
    cpu, gpu = pair(activation, init="coupled")
    runs = [train(net, X, y, lr="auto", steps=200, record_every=1, output_scale=alpha) for net in (cpu, gpu)]
    torch.testing.assert_close(torch.from_numpy(runs[1].loss), torch.from_numpy(runs[0].loss), rtol=1e-9, atol=0)
    torch.testing.assert_close(gpu.W.cpu(), cpu.W, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation,alpha", [("relu", 0.1), ("exp", 0.03), ("softmax", 1.0)])
def test_a_lazy_rich_unit_on_the_gpu_equals_the_cpu(activation, alpha):
    from overparam.study.lazy_rich import LazyRichRun, compute_run

    run = LazyRichRun(activation, 256, alpha, 0, False, 16, 6, 1.0, 0, 0.1, 50, 1e-3, 2000, 6)
    on_cpu, on_gpu = compute_run(run, "cpu"), compute_run(run, "cuda")
    assert (on_gpu.status, on_gpu.steps, on_gpu.halvings) == (on_cpu.status, on_cpu.steps, on_cpu.halvings)
    for key in ("drift", "movement", "alignment_0", "alignment_T", "test_mse"):
        assert getattr(on_gpu, key) == pytest.approx(getattr(on_cpu, key), rel=1e-7)


def test_every_study_section_completes_on_the_gpu(tmp_path):
    from overparam.study import StudyConfig, run_study

    tiny = StudyConfig(d=4, tol=1e-2, delta=0.5, settings={
        "concentration": {"n": 12, "widths": (32, 128), "seeds": 2},
        "training": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 200},
        "laziness": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 200},
        "perturbation": {"n": 8, "widths": (64, 256), "seeds": 2, "steps": 200},
        "threshold": {"ns": (4, 8), "widths": (2, 8, 32), "seeds": 2, "max_steps": 200},
        "initialisation": {"n": 8, "width": 64, "seeds": 2},
        "diffusion": {"n": 256, "width": 64, "steps": 60, "sampler_steps": 20, "samples": 200, "score_samples": 1000,
                      "twin_large_n": 512},
        "lazy_rich": {"n": 8, "widths": (16, 32), "alphas": (0.1, 1.0, 10.0), "seeds": 2, "steps": 200, "test": 20}})
    result = run_study(tiny, tmp_path, device="cuda")
    assert result.failures == []
    assert [s.status for s in result.sections] == ["complete"] * len(result.sections)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("out_dim", [1, 2])
def test_nested_kernel_pass_equals_the_cpu(activation, out_dim):
    from overparam.models import initial_weights
    from overparam.kernels.nested import nested_ntk

    X, _ = inputs(30, 6)
    W, a = initial_weights(4096, 6, out_dim, "coupled", 1.0, 2)
    widths = [64, 256, 1000, 4096]
    cpu = nested_ntk(X, W, a, activation, widths, chunk=700)
    gpu = nested_ntk(X.cuda(), W.cuda(), a.cuda(), activation, widths)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-11, atol=1e-11)
