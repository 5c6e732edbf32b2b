"""Denoising score matching as regression: data, early stopping, and a learned score that beats -x."""

import numpy as np
import pytest
import torch

from overparam import TwoLayerNet
from overparam.diffusion import (EarlyStopping, Horizon, LearnedScore, TrainingConfig, fit_denoiser, parse_data,
                                 score_error, trivial_score)
from overparam.diffusion.training import noisy_pairs, split
from overparam.training.loop import TrainState


def test_small_softmax_network_beats_the_trivial_score():
    """k = 8 mixture in 2-D, 400 samples, m = 128: the Tweedie score is far better than -x.

    Measured: learned 0.061 +- 0.004, trivial 0.251 +- 0.01 (weighted score error, t in [1e-3, 5]).
    """
    mixture, horizon = parse_data("gmm:k=8,d=2"), Horizon()
    x0 = mixture.sample(400, torch.Generator().manual_seed(0))
    fit = fit_denoiser(x0, horizon, TrainingConfig(activation="softmax", width=128, steps=100), seed=0)
    learned = score_error(LearnedScore(fit.net, fit.embedding), mixture, horizon, 4000,
                          torch.Generator().manual_seed(1))
    trivial = score_error(trivial_score, mixture, horizon, 4000, torch.Generator().manual_seed(1))
    assert learned.value < 0.35 * trivial.value
    assert trivial.value - learned.value > 10 * (learned.stderr + trivial.stderr)


def test_fit_keeps_the_best_held_out_network():
    mixture, horizon = parse_data("gmm:k=4,d=2"), Horizon()
    x0 = mixture.sample(200, torch.Generator().manual_seed(2))
    config = TrainingConfig(activation="relu", width=64, steps=40, eval_every=5, patience=100, noise_draws=3)
    fit = fit_denoiser(x0, horizon, config, seed=3)
    assert (fit.n_train, fit.n_val) == (3 * 160, 3 * 40)
    assert list(fit.val_step) == list(range(0, 41, 5))
    assert fit.best_val_loss == pytest.approx(min(fit.val_loss)) and fit.best_step in fit.val_step
    pairs = fit.val_pairs
    restored = (fit.net(fit.embedding(pairs.xt, pairs.t)) - pairs.x0).square().sum(1).mean()
    assert float(restored) == pytest.approx(fit.best_val_loss, rel=1e-12)
    np.testing.assert_allclose(fit.train_mse, 2 * fit.history.loss / fit.n_train)


class ScriptedStopping(EarlyStopping):
    """EarlyStopping whose held-out losses are given in advance."""

    def __init__(self, losses, **kwargs):
        super().__init__(None, None, **kwargs)
        self.losses = iter(losses)

    def held_out_loss(self, net):
        return next(self.losses)


def test_early_stopping_stops_after_patience_and_restores_the_best():
    net = TwoLayerNet(2, 4, 1, "relu")
    stopper = ScriptedStopping([5.0, 4.0, 3.0, 3.5, 3.6, 3.7], every=10, patience=3, last_step=1000)
    extra: dict = {}
    stopped_at = None
    for step in range(0, 100):
        net.W = torch.full_like(net.W, float(step))
        state = TrainState(step, net, None, None, None, None, 0.1, extra)
        if stopper(state):
            stopped_at = step
            break
    assert stopped_at == 50 and stopper.best_step == 20 and stopper.best_loss == 3.0
    assert extra["val_step"] == [0, 10, 20, 30, 40, 50]
    stopper.restore(net)
    assert torch.all(net.W == 20.0)


def test_pairs_and_split():
    horizon = Horizon(1e-2, 2.0)
    x0 = torch.arange(20, dtype=torch.float64).reshape(10, 2)
    pairs = noisy_pairs(x0, horizon, 3, torch.Generator().manual_seed(4))
    assert pairs.xt.shape == (30, 2) and torch.equal(pairs.x0[10:20], x0)
    assert (pairs.t >= 1e-2).all() and (pairs.t <= 2.0).all()
    train, held = split(x0, 0.3, torch.Generator().manual_seed(5))
    assert len(train) == 7 and len(held) == 3
    assert sorted(torch.cat([train, held])[:, 0].tolist()) == x0[:, 0].tolist()
    with pytest.raises(ValueError, match="noise_draws"):
        TrainingConfig(noise_draws=0)
    with pytest.raises(ValueError, match="time law"):
        TrainingConfig(time_law="sometimes")


def test_twin_budget_sets_the_budget_and_patience_ends_training():
    """twin_budget = 2: budget 2 t* of the network's own Theta(W(0)) twin, evaluations every t*/50 steps, and
    the held-out loss stops improving before the budget (measured: t* = 1011, stopped at 903, kept 798)."""
    import math

    from overparam.diffusion.training import TWIN_EVALUATIONS
    from overparam.diffusion.twin import kernel_twin

    mixture, horizon = parse_data("gmm:k=4,d=2"), Horizon()
    x0 = mixture.sample(200, torch.Generator().manual_seed(5))
    config = TrainingConfig(activation="relu", width=256, steps=100000, twin_budget=2.0)
    fit = fit_denoiser(x0, horizon, config, seed=1)
    twin = kernel_twin("theta0", x0, horizon, config, seed=1)
    assert fit.budget == math.ceil(2 * twin.stop.time) and not fit.budget_cut
    assert fit.history.lr == pytest.approx(twin.lr, rel=1e-12)
    every = math.ceil(twin.stop.time / TWIN_EVALUATIONS)
    assert list(fit.val_step[:3]) == [0, every, 2 * every]
    assert fit.ended_by == "early stopping" and fit.history.steps < fit.budget
    assert fit.summary()["twin_t_star"] == twin.stop.time


def test_twin_budget_is_capped_by_steps_and_says_so():
    mixture, horizon = parse_data("gmm:k=4,d=2"), Horizon()
    x0 = mixture.sample(100, torch.Generator().manual_seed(5))
    fit = fit_denoiser(x0, horizon, TrainingConfig(activation="relu", width=64, steps=5, twin_budget=2.0), seed=1)
    assert fit.twin.stop.time > 2.5 and fit.budget == 5 and fit.budget_cut
    assert fit.summary()["budget_cut"] is True


@pytest.mark.parametrize("settings,fragment", [({"twin_budget": -1.0}, "twin_budget must be a positive"),
                                               ({"twin_budget": 2.0, "optimizer": "adam"}, "needs optimizer 'gd'")])
def test_bad_twin_budgets_are_refused(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        TrainingConfig(**settings)
