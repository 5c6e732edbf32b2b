"""The diffusion study section (f): its rows equal `overparam diffusion` for the same settings, and every column
of its three tables recomputed here by other routes: W2 by an optimal assignment (scipy), MMD^2, NLL, recovered
weights, precision and recall under the mixture written out in numpy/scipy (docs/mathematics.md#diffusion), and
the training columns and score errors from a plain GD loop (tests/plain_gd.py) with the early-stopping rule
written here, scored on the same draws with the mixture's score in numpy."""

import csv
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import plain_gd
from overparam import TwoLayerNet
from overparam.diffusion import experiment
from overparam.diffusion.datasets import parse_data
from overparam.diffusion.embedding import Embedding
from overparam.diffusion.process import forward_sample
from overparam.diffusion.training import TrainingConfig, noisy_pairs, split
from overparam.study import StudyConfig, run_study
from overparam.study.cache import UnitCache
from overparam.study.diffusion import SECTION, Baselines, Denoiser, curve_grid
from overparam.study.framework import from_json

TINY = StudyConfig(d=4, tol=1e-2, delta=0.5, sections=("diffusion",), settings={
    "diffusion": {"n": 256, "width": 64, "steps": 100, "sampler_steps": 20, "samples": 300, "score_samples": 2000,
                  "widths": (32, 64), "ns": (128, 256), "twin_large_n": 512}}).validate()
CFG = TINY.section("diffusion")


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion")
    result = run_study(TINY, out)
    cache = UnitCache(out / "runs.db")
    records = {unit: from_json(unit.RECORD, cache.get(unit.key)) for unit in SECTION.units(TINY, CFG)}
    cache.close()
    return out, result, records


def table(out, stem: str) -> list[dict]:
    with open(out / "tables" / f"{stem}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main_unit(activation: str) -> Denoiser:
    return SECTION.denoiser(TINY, CFG, activation, CFG.n, CFG.width)


def cell(row: dict, column: str) -> float:
    return float(row[column])


# ------------------------------------------------------------------- the mixture, written out in numpy


def mixture(unit):
    truth = experiment.draw(unit.config(TrainingConfig())).truth
    return truth.weights.numpy(), truth.means.numpy(), truth.covariances.numpy()


def components(truth, x: np.ndarray, t: float):
    """log(pi_k N(x; alpha mu_k, alpha^2 Sigma_k + h I)) (N, K) and the components' covariances C_k at time t."""
    weights, means, covs = truth
    alpha, h = math.exp(-t), -math.expm1(-2 * t)
    C = alpha**2 * covs + h * np.eye(means.shape[1])
    joint = np.stack([np.log(pi) + multivariate_normal(alpha * mu, c).logpdf(x)
                      for pi, mu, c in zip(weights, means, C)], 1)
    return joint, C


def mahalanobis(truth, x: np.ndarray, t: float) -> np.ndarray:
    _, means, _ = truth
    _, C = components(truth, x, t)
    alpha = math.exp(-t)
    return np.stack([np.sqrt(np.einsum("ni,ij,nj->n", x - alpha * mu, np.linalg.inv(c), x - alpha * mu))
                     for mu, c in zip(means, C)], 1)


def mixture_score(truth, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """grad log p_t(x) for p_t = sum_k pi_k N(alpha mu_k, alpha^2 Sigma_k + h I), one t per row."""
    weights, means, covs = truth
    alpha, h = np.exp(-t), -np.expm1(-2 * t)
    logs, grads = [], []
    for pi, mu, cov in zip(weights, means, covs):
        C = alpha[:, None, None] ** 2 * cov + h[:, None, None] * np.eye(x.shape[1])
        diff = x - alpha[:, None] * mu
        solved = np.linalg.solve(C, diff[:, :, None])[:, :, 0]
        logs.append(np.log(pi) - 0.5 * (diff * solved).sum(1) - 0.5 * np.linalg.slogdet(C)[1])
        grads.append(-solved)
    logs = np.stack(logs, 1)
    posterior = np.exp(logs - logsumexp(logs, 1, keepdims=True))
    return np.einsum("nk,knd->nd", posterior, np.stack(grads))


def exact_denoiser(truth, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """E[x_0 | x_t = x] = sum_k P(k | x) (mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k)), C_k = alpha^2 Sigma_k + h I."""
    weights, means, covs = truth
    alpha, h = np.exp(-t), -np.expm1(-2 * t)
    logs, posts = [], []
    for pi, mu, cov in zip(weights, means, covs):
        C = alpha[:, None, None] ** 2 * cov + h[:, None, None] * np.eye(x.shape[1])
        diff = x - alpha[:, None] * mu
        solved = np.linalg.solve(C, diff[:, :, None])[:, :, 0]
        logs.append(np.log(pi) - 0.5 * (diff * solved).sum(1) - 0.5 * np.linalg.slogdet(C)[1])
        posts.append(mu + alpha[:, None] * solved @ cov.T)
    logs = np.stack(logs, 1)
    posterior = np.exp(logs - logsumexp(logs, 1, keepdims=True))
    return np.einsum("nk,knd->nd", posterior, np.stack(posts))


# -------------------------------------------------------------------- sample metrics by other routes


def w2(x: np.ndarray, y: np.ndarray) -> float:
    """Equal sizes, uniform weights: an optimal coupling is a permutation (Birkhoff), found by assignment."""
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 with exp(-||x - y||^2 / (2 b^2)), the U-statistic written as plain sums."""
    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    return ((k(x, x).sum() - n) / (n * (n - 1)) + (k(y, y).sum() - m) / (m * (m - 1)) - 2 * k(x, y).mean())


def sample_columns(truth, x: np.ndarray, reference: np.ndarray, t0: float) -> dict:
    """Every sample column of a row: W2, MMD^2 (median-distance bandwidth of the reference), NLL under p_0
    (p_0 has a density here), recovered weights' total variation, precision and recall at t0."""
    assert np.isfinite(x).all()
    weights = truth[0]
    joint0, _ = components(truth, x, 0.0)
    joint, _ = components(truth, x, t0)
    recovered = np.bincount(joint.argmax(1), minlength=len(weights)) / len(x)
    distance = mahalanobis(truth, x, t0)
    near = distance.min(1) <= 3
    share = np.bincount(distance.argmin(1)[near], minlength=len(weights)) / len(x)
    return {"W2": w2(x, reference), "MMD^2": mmd2(x, reference, float(np.median(pdist(reference)))),
            "NLL": float(-logsumexp(joint0, 1).mean()), "weights TV": 0.5 * float(np.abs(recovered - weights).sum()),
            "precision": float(near.mean()), "recall": float((share >= weights / 2).mean())}


#: Tolerances of the sample columns (measured on the tiny run: W2 2e-16, NLL 4e-16 relative, the others equal).
#: W2: the LP optimum by two solvers (network simplex, Hungarian); MMD^2: a difference of O(1) kernel means over
#: 10^5 terms, so absolute; TV, precision, recall: counts over 300 samples, exact.
TOLERANCE = {"W2": dict(rel=1e-12), "MMD^2": dict(abs=1e-13), "NLL": dict(rel=1e-12), "weights TV": dict(abs=1e-15),
             "precision": dict(abs=1e-15), "recall": dict(abs=1e-15)}


# ------------------------------------------------------------ the denoiser trained by a plain GD loop


def power_iteration(W, a, Z, activation, kappa, iters=100, rtol=1e-4) -> float:
    """lambda_max(Theta) as `train`'s lr="auto" estimates it: the Rayleigh quotient <v, Theta v> of power
    iteration v <- Theta v / ||Theta v|| from a standard normal (N, out) start (a generator seeded 0), the first
    that changes by at most rtol relative; Theta = J J^T from the dense autograd Jacobian."""
    J = torch.autograd.functional.jacobian(lambda V: plain_gd.output(V, a, Z, activation, kappa).reshape(-1), W)
    theta = J.reshape(J.shape[0], -1) @ J.reshape(J.shape[0], -1).T
    v = torch.randn((Z.shape[0], a.shape[1]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v, previous = (v / v.norm()).reshape(-1), 0.0
    for _ in range(iters):
        w = theta @ v
        quotient = float(v @ w)
        if abs(quotient - previous) <= rtol * abs(quotient):
            break
        v, previous = w / w.norm(), quotient
    top = float(torch.linalg.eigvalsh(theta)[-1])
    assert top * (1 - 1e-3) <= quotient <= top * (1 + 1e-12)  # the estimate is the top eigenvalue's, from below
    return quotient


def plain_denoiser(unit: Denoiser) -> dict:
    """fit_denoiser's training written out: the same split, noisy pairs, embedding and W(0) (inputs), then GD
    with lr = 1 / lambda_max(Theta(W(0))) (`power_iteration`), the held-out loss every eval_every steps and at
    the budget, the best W kept (relative improvement 1e-4), a stop after `patience` evaluations without one.
    Returns the kept W with the network's pieces, the step counts, lr and the held-out pairs."""
    defaults = TrainingConfig()
    config = unit.config(replace(defaults, activation=unit.activation, width=unit.width, steps=unit.steps,
                                 sigma=unit.sigma))
    x0 = experiment.draw(config).x0
    generator = torch.Generator().manual_seed(unit.seed)
    train_x0, val_x0 = split(x0, defaults.val_fraction, generator)
    train = noisy_pairs(train_x0, config.horizon, defaults.noise_draws, generator, defaults.time_law)
    val = noisy_pairs(val_x0, config.horizon, defaults.noise_draws, generator, defaults.time_law)
    embedding = Embedding.fit(train.xt, config.horizon, defaults.bias)
    net = TwoLayerNet(embedding.in_dim(x0.shape[1]), unit.width, out_dim=x0.shape[1], activation=unit.activation,
                      init=defaults.init, sigma=unit.sigma, seed=unit.seed)
    Z, Zval = embedding(train.xt, train.t), embedding(val.xt, val.t)
    a, kappa = net.a.detach(), net.kappa
    lr = 1 / power_iteration(net.W.detach(), a, Z, unit.activation, kappa)
    W = net.W.detach().clone()
    best, best_step, best_W, since = math.inf, 0, W, 0
    for step in range(unit.steps + 1):
        if step % defaults.eval_every == 0 or step == unit.steps:
            loss = float((plain_gd.output(W, a, Zval, unit.activation, kappa) - val.x0).square().sum(1).mean())
            if loss < best * (1 - 1e-4):
                best, best_step, best_W, since = loss, step, W.clone(), 0
            else:
                since += 1
                if since >= defaults.patience:
                    break
        if step == unit.steps:
            break
        W.requires_grad_(True)
        (gradient,) = torch.autograd.grad(plain_gd.losses(W, a, Z, train.x0, unit.activation, kappa), W)
        W = (W - lr * gradient).detach()
    return {"W": best_W, "a": a, "kappa": kappa, "embedding": embedding, "steps": step, "best_step": best_step,
            "held_out": best, "lr": lr, "val": val, "config": config}


def score_errors(config, truth, score) -> tuple[float, float]:
    """E_t h_t ||s - grad log p_t||^2 and its standard error on the section's own draws (the generator seeded
    seed + 2 draws x_0, then t, then the noise), the score of p_t in numpy."""
    source = parse_data(config.data)
    generator = torch.Generator().manual_seed(config.seed + 2)
    x0 = source.sample(config.n_score, generator)
    t = config.horizon.sample_times(config.n_score, generator)
    xt = forward_sample(x0, t, generator)
    x, t = xt.numpy(), t.numpy()
    h = -np.expm1(-2 * t)
    values = h * ((score(x, t) - mixture_score(truth, x, t)) ** 2).sum(1)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# ---------------------------------------------------------------------------------------------- tests


def test_units_one_per_network_and_grid_point_plus_the_baselines(section):
    _, result, records = section
    assert curve_grid(CFG) == [(256, 64), (256, 32), (128, 64)]
    units = SECTION.units(TINY, CFG)
    # baselines, 3 networks of the curve grid, one kernel comparison and one coupling (m = 32) per activation
    assert len(units) == len(set(units)) == 1 + len(TINY.activations) * 5
    assert result.sections[0].status == "complete" and result.sections[0].reading
    # the baselines depend on none of the network's settings: one unit whatever the widths or budget
    other = TINY.with_settings("diffusion", width=32, steps=50)
    assert SECTION.units(other, other.section("diffusion"))[0].key == units[0].key
    assert isinstance(units[0], Baselines) and len({u.key for u in units}) == len(units)


def test_numbers_match_overparam_diffusion(section):
    """The tables equal `overparam diffusion` run alone with the same settings (softmax only: each activation
    is its own unit, so the rows must not depend on which other networks ran)."""
    out, _, records = section
    rows = {r["score"]: r for r in table(out, "diffusion")}
    assert list(rows) == [*TINY.activations, "exact", "trivial", "p0"]
    unit = main_unit("softmax")
    result = experiment.run(unit.config(TrainingConfig(activation="softmax", width=CFG.width, steps=CFG.steps,
                                                       sigma=TINY.sigma)))
    expected = {"softmax": result.metrics["softmax"], **result.metrics["baselines"]}
    columns = {"score error": "score_error", "± se": "score_error_stderr", "W2": "w2", "MMD^2": "mmd", "NLL": "nll",
               "weights TV": "weight_error", "precision": "precision", "recall": "recall"}
    for name, metrics in expected.items():
        for column, key in columns.items():
            if metrics[key] is None:
                assert rows[name][column] == "nan"
            else:
                assert cell(rows[name], column) == metrics[key]
    for metric, position in result.metrics["softmax"]["between"].items():
        assert cell(rows["softmax"], f"between: {metric}") == position
    training = {r["activation"]: r for r in table(out, "diffusion_training")}
    assert cell(training["softmax"], "held-out loss") == result.metrics["softmax"]["training"]["best_val_loss"]
    assert cell(training["softmax"], "exact denoiser") == result.bayes_val_loss
    # the cached records hold the very samples `run` draws (same seeds, same draws, same networks)
    np.testing.assert_array_equal(np.array(records[unit].measurement.samples), result.samples["softmax"])
    baselines = records[SECTION.baselines(TINY, CFG)]
    for name in ("exact", "trivial"):
        np.testing.assert_array_equal(np.array(baselines.scores[name].samples), result.samples[name])
    np.testing.assert_array_equal(np.array(baselines.reference), result.reference)


def test_sample_columns_of_every_score_by_other_routes(section):
    """W2, MMD^2, NLL, weights TV, precision and recall of every row of the main table, from the cached samples
    (the p0 row: the fresh draws) against the reference draws; the between columns from the table's own
    columns by (trivial - learned) / (trivial - exact)."""
    out, _, records = section
    rows = {r["score"]: r for r in table(out, "diffusion")}
    baselines = records[SECTION.baselines(TINY, CFG)]
    reference = np.array(baselines.reference)
    config = baselines_config = SECTION.baselines(TINY, CFG).config(TrainingConfig())
    truth = mixture(SECTION.baselines(TINY, CFG))
    samples = {**{a: records[main_unit(a)].measurement.samples for a in TINY.activations},
               **{name: m.samples for name, m in baselines.scores.items()}, "p0": experiment.draw(config).fresh}
    for name, x in samples.items():
        for column, value in sample_columns(truth, np.asarray(x, dtype=float), reference,
                                            baselines_config.t0).items():
            assert cell(rows[name], column) == pytest.approx(value, **TOLERANCE[column]), (name, column)
    for activation in TINY.activations:
        for column, metric in (("score error", "score_error"), ("W2", "w2"), ("MMD^2", "mmd"), ("NLL", "nll")):
            low, high, value = (cell(rows[s], column) for s in ("exact", "trivial", activation))
            assert cell(rows[activation], f"between: {metric}") == pytest.approx((high - value) / (high - low),
                                                                                 rel=1e-12)
    for name in ("exact", "trivial", "p0"):
        assert all(rows[name][f"between: {m}"] == "nan" for m in ("score_error", "w2", "mmd", "nll"))
    assert rows["p0"]["score error"] == rows["p0"]["± se"] == "nan"


def test_score_errors_and_training_columns_from_a_plain_gd_loop(section):
    """Per activation at the main point: steps run, kept step, lr, held-out loss, the exact denoiser's held-out
    loss (the closed-form posterior mean in numpy) and the excess, from `plain_denoiser`; the score error and its
    standard error of that network, of -x and of the exact score on the section's draws; the curve table's row
    of the main point equal to them."""
    out, _, _ = section
    rows = {r["score"]: r for r in table(out, "diffusion")}
    training = {r["activation"]: r for r in table(out, "diffusion_training")}
    curves = {(r["activation"], int(r["n"]), int(r["m"])): r for r in table(out, "diffusion_curves")}
    truth = mixture(main_unit("relu"))
    for activation in TINY.activations:
        fit = plain_denoiser(main_unit(activation))
        row = training[activation]
        assert (int(row["steps run"]), int(row["kept step"])) == (fit["steps"], fit["best_step"])
        # lr: the same power iteration on two constructions of Theta (dense Jacobian here, the library's kernel)
        assert cell(row, "lr") == pytest.approx(fit["lr"], rel=1e-12)
        # GD taken by two codes for up to 100 steps: measured agreement 2e-16 to 2e-15 relative, on every
        # column of this test (lr, held-out loss, exact denoiser, excess, score error and its se)
        assert cell(row, "held-out loss") == pytest.approx(fit["held_out"], rel=1e-12)
        val = fit["val"]
        bayes = float(((exact_denoiser(truth, val.xt.numpy(), val.t.numpy()) - val.x0.numpy()) ** 2).sum(1).mean())
        assert cell(row, "exact denoiser") == pytest.approx(bayes, rel=1e-12)
        assert cell(row, "excess") == pytest.approx(fit["held_out"] - bayes, rel=1e-12)
        assert 0 < cell(row, "seconds") < 3600  # a wall time: nothing to recompute, only its sanity

        embedding, W, a, kappa = fit["embedding"], fit["W"], fit["a"], fit["kappa"]

        def learned(x, t):  # Tweedie: (alpha F(embed(x, t)) - x) / h
            F = plain_gd.output(W, a, embedding(torch.from_numpy(x), torch.from_numpy(t)), activation, kappa)
            return (np.exp(-t)[:, None] * F.detach().numpy() - x) / -np.expm1(-2 * t)[:, None]

        error, stderr = score_errors(fit["config"], truth, learned)
        assert cell(rows[activation], "score error") == pytest.approx(error, rel=1e-12)
        assert cell(rows[activation], "± se") == pytest.approx(stderr, rel=1e-12)
        curve = curves[activation, CFG.n, CFG.width]
        for column in ("score error", "± se", "W2", "MMD^2", "precision", "recall"):
            assert curve[column] == rows[activation][column]
        assert (curve["held-out loss"], curve["kept step"], curve["steps run"]) == (
            row["held-out loss"], row["kept step"], row["steps run"])
    error, stderr = score_errors(fit["config"], truth, lambda x, t: -x)
    assert cell(rows["trivial"], "score error") == pytest.approx(error, rel=1e-12)
    assert cell(rows["trivial"], "± se") == pytest.approx(stderr, rel=1e-12)
    assert cell(rows["exact"], "score error") == 0.0 == cell(rows["exact"], "± se")


def test_learning_curve_rows_from_the_cached_units(section):
    """Every curve row: W2, MMD^2, precision and recall from its own samples against its own reference draws
    (they follow the n training draws), what ended its training from the step counts, and its held-out loss,
    steps and score error equal to the unit's record."""
    out, _, records = section
    rows = table(out, "diffusion_curves")
    assert [(r["activation"], int(r["n"]), int(r["m"])) for r in rows] == [
        (a, n, m) for a in TINY.activations for n, m in curve_grid(CFG)]
    for row in rows:
        unit = SECTION.denoiser(TINY, CFG, row["activation"], int(row["n"]), int(row["m"]))
        record = records[unit]
        config = unit.config(TrainingConfig())
        draws = experiment.draw(config)
        measured = sample_columns(mixture(unit), np.array(record.measurement.samples), draws.reference, config.t0)
        for column in ("W2", "MMD^2", "precision", "recall"):
            assert cell(row, column) == pytest.approx(measured[column], **TOLERANCE[column]), (row, column)
        steps, kept = int(row["steps run"]), int(row["kept step"])
        assert (steps, kept, cell(row, "held-out loss"), cell(row, "score error")) == (
            record.training.steps, record.training.best_step, record.training.best_val_loss,
            record.metrics.score_error)
        assert row["ended by"] == ("early stopping" if steps < CFG.steps else
                                   "budget, held-out loss still falling" if kept == steps else "budget")


def test_facts_per_activation(section):
    """Score error at the main point with mean ± 1.96 se, precision and recall there, and the score error's
    log-log least-squares slope over the widths at n (np.polyfit on the table's rows)."""
    out, result, _ = section
    rows = {r["score"]: r for r in table(out, "diffusion")}
    curves = table(out, "diffusion_curves")
    facts = {(f.activation, f.quantity): f for f in result.sections[0].facts}
    for activation in TINY.activations:
        error, se = cell(rows[activation], "score error"), cell(rows[activation], "± se")
        fact = facts[activation, f"diffusion score error (n = {CFG.n}, m = {CFG.width})"]
        assert (fact.value, fact.low, fact.high) == pytest.approx((error, error - 1.96 * se, error + 1.96 * se),
                                                                  rel=1e-15)
        assert facts[activation, f"diffusion samples' precision (n = {CFG.n}, m = {CFG.width})"].value == cell(
            rows[activation], "precision")
        assert facts[activation, f"diffusion samples' recall (n = {CFG.n}, m = {CFG.width})"].value == cell(
            rows[activation], "recall")
        line = sorted((int(r["m"]), cell(r, "score error")) for r in curves
                      if r["activation"] == activation and int(r["n"]) == CFG.n and int(r["m"]) in CFG.widths)
        slope = np.polyfit(np.log([m for m, _ in line]), np.log([e for _, e in line]), 1)[0]
        assert facts[activation, f"diffusion score error slope in m (n = {CFG.n})"].value == pytest.approx(
            slope, rel=1e-12)


def test_kernel_table_agrees_with_the_sections_other_tables(section):
    """The kernel comparison trains the main point's network again in its own unit: its row equals the main
    tables' (score error, precision, kept step, held-out loss), its posterior-mean row's held-out loss is the
    training table's exact denoiser, and its distance is the coupling table's at the main width."""
    from overparam.diffusion.twin_study import COLUMNS

    out, _, _ = section
    kernel = table(out, "diffusion_kernel")
    assert list(kernel[0]) == list(COLUMNS)
    main = {r["score"]: r for r in table(out, "diffusion")}
    training = {r["activation"]: r for r in table(out, "diffusion_training")}
    distance = {(r["activation"], int(r["m"])): r for r in table(out, "diffusion_twin_distance")}
    for activation in TINY.activations:
        rows = {(r["predictor"], int(r["n"])): r for r in kernel if r["activation"] == activation}
        assert set(rows) == {("network", CFG.n), ("twin_theta0", CFG.n), ("twin_hstar", CFG.n),
                             ("twin_hstar", CFG.twin_large_n), ("posterior_mean", CFG.n)}
        network = rows["network", CFG.n]
        assert cell(network, "score_error") == pytest.approx(cell(main[activation], "score error"), rel=1e-12)
        assert cell(network, "precision") == cell(main[activation], "precision")
        assert int(network["stop_step"]) == int(training[activation]["kept step"])
        assert cell(network, "heldout_loss") == pytest.approx(cell(training[activation], "held-out loss"), rel=1e-12)
        assert cell(rows["posterior_mean", CFG.n], "heldout_loss") == pytest.approx(
            cell(training[activation], "exact denoiser"), rel=1e-12)
        assert cell(network, "distance_to_twin") == pytest.approx(
            cell(distance[activation, CFG.width], "RMS distance"), rel=1e-12)
        assert all(rows[key]["distance_to_twin"] == "" for key in rows if key[0] != "network")
    assert {(a, m) for a, m in distance} == {(a, m) for a in TINY.activations for m in CFG.widths}


def test_twin_settings_are_checked_where_they_are_built():
    from overparam.study.diffusion import Config

    with pytest.raises(ValueError, match="twin_large_n must be 0"):
        Config(n=1024, twin_large_n=512)
    assert Config(n=1024, twin_large_n=0).twin_large_n == 0
    assert Config(n=1024, twin_large_n=512, twins=False).twins is False  # unused when the twins are off
    off = TINY.with_settings("diffusion", twins=False)
    assert not any(type(u).__name__ in ("KernelComparison", "TwinCoupling")
                   for u in SECTION.units(off, off.section("diffusion")))
