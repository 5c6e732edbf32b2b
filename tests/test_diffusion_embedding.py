"""embed(x, t) lands in the unit ball, is one-to-one, and is what its docstring says."""

import math

import numpy as np
import pytest
import torch

from overparam.diffusion import Embedding, Horizon


def test_embedding_stays_in_the_unit_ball_for_any_x():
    horizon = Horizon(1e-3, 5.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=gen, dtype=torch.float64) * torch.logspace(-3, 6, 1000, dtype=torch.float64)[:, None]
    t = horizon.sample_times(1000, gen)
    for bias in (True, False):
        z = Embedding(2.0, horizon, bias)(x, t)
        assert z.shape == (1000, 3 + 1 + bias) and (z.norm(dim=1) < 1).all()
    ends = Embedding(2.0, horizon)(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([1e-3, 5.0], dtype=torch.float64))
    np.testing.assert_allclose(ends[:, 3].numpy(), [-0.5, 0.5], atol=1e-15)  # tau / 2 at t0 and T
    np.testing.assert_allclose(ends[:, 4].numpy(), 0.5)


def test_embedding_formula_and_inverse():
    """x is recovered from z: u = sqrt(2) z_x = x / sqrt(R^2 + |x|^2) gives x = R u / sqrt(1 - |u|^2)."""
    horizon = Horizon(1e-2, 3.0)
    emb = Embedding(1.7, horizon)
    x = torch.tensor([[0.3, -4.0], [10.0, 2.0]], dtype=torch.float64)
    t = torch.tensor([0.05, 2.0], dtype=torch.float64)
    z = emb(x, t)
    u = math.sqrt(2) * z[:, :2]
    np.testing.assert_allclose((1.7 * u / torch.sqrt(1 - u.square().sum(1, keepdim=True))).numpy(), x.numpy(), rtol=1e-12)
    tau = 2 * (np.log(t.numpy()) - math.log(1e-2)) / (math.log(3.0) - math.log(1e-2)) - 1
    np.testing.assert_allclose(2 * z[:, 2].numpy(), tau, rtol=1e-14)


def test_fit_uses_the_rms_norm_and_bad_input_is_refused():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    assert Embedding.fit(x, Horizon()).radius == pytest.approx(math.sqrt(12.5))
    with pytest.raises(ValueError, match="t > 0"):
        Embedding(1.0, Horizon())(x, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="radius"):
        Embedding(0.0, Horizon())
