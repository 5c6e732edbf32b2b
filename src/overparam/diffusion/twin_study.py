"""The denoiser networks against the kernel theory they rest on, as named records a study section tabulates.

HRX24 reduce score matching with a wide network to early-stopped kernel regression (the kernel twin, twin.py).
For one activation at one (n, m) the predictors of E[x_0 | x_t, t] compared here (`PREDICTORS`) are:

- network: the trained denoiser, at its kept (best held-out) step;
- twin_theta0: GD on its own Theta(W(0)), same pairs and step, stopped at t* of the held-out loss;
- twin_hstar: GD on m kappa^2 H* at t* (at the section's n, and at a larger n the networks cannot afford);
- posterior_mean: the exact E[x_0 | x_t] of the mixture (a perfect denoiser: its score is grad log p_t).

Each is scored (weighted score error and its per-t curve) and sampled like the networks (precision, recall).
`Coupling` measures a network against its Theta(W(0)) twin at the same step (RMS over the held-out inputs and the
weighted score error between the two scores); against m it should fall (HRX24 Thm 3.9). `bridging_reading`
says from these numbers where samples that bridge the modes come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..sweep.analysis import fit_power_law
from . import experiment, process
from .experiment import DiffusionConfig, Draws
from .mixtures import GaussianMixture
from .score import LearnedScore, ScoreError, ScoreErrorCurve
from .training import DenoiserFit
from .twin import TwinFit, posterior_mean_score, twin_distance

PREDICTORS = ("network", "twin_theta0", "twin_hstar", "posterior_mean")
#: The columns of tables/diffusion_kernel.csv, in order (`KernelRow.csv_row`).
COLUMNS = ("activation", "n", "m", "predictor", "stop_step", "heldout_loss", "score_error", "precision", "recall",
           "distance_to_twin")


@dataclass
class KernelRow:
    """One predictor's numbers: the csv columns (None where a column does not apply), then what the figures and
    the reading need (score-error standard error, W2 and MMD^2 to fresh draws of p_0, the per-t score error,
    samples (n_samples, d), t* and whether the
    scan ended on it, seconds the twin took). Plain data only (lists, numbers), so that it passes through JSON."""

    activation: str
    n: int
    m: int
    predictor: str
    stop_step: int | None
    heldout_loss: float | None
    score_error: float | None
    precision: float | None
    recall: float | None
    distance_to_twin: float | None = None
    score_error_stderr: float | None = None
    w2: float | None = None
    mmd: float | None = None
    curve_times: list[float] | None = field(default=None, repr=False)
    curve_value: list[float] | None = field(default=None, repr=False)
    curve_stderr: list[float] | None = field(default=None, repr=False)
    samples: list[list[float]] | None = field(default=None, repr=False)
    t_star: float | None = None
    at_limit: bool | None = None
    seconds: float | None = None

    @property
    def curve(self) -> ScoreErrorCurve | None:
        """The per-t score error as a `ScoreErrorCurve` (what `figures.plot_score_error` takes)."""
        if self.curve_times is None:
            return None
        return ScoreErrorCurve(*(np.asarray(v, dtype=float) for v in (self.curve_times, self.curve_value,
                                                                       self.curve_stderr)))

    def csv_row(self) -> dict:
        """The `COLUMNS` of this row (None for an empty cell)."""
        return {name: getattr(self, name) for name in COLUMNS}


@dataclass
class Coupling:
    """A network against its Theta(W(0)) twin at the network's kept step.

    distance: RMS_i ||F(z_i) - f_step(z_i)|| over the held-out inputs; relative: distance / RMS_i ||f_step(z_i)||;
    score_gap: E_t h_t E_{x ~ p_t} ||s_network(x, t) - s_twin(x, t)||^2 (Monte Carlo, with its standard error).
    """

    activation: str
    n: int
    m: int
    step: int
    distance: float
    relative: float
    score_gap: float
    score_gap_stderr: float


@dataclass
class Slope:
    """log y = log constant + exponent log x by least squares over the points (x, y)."""

    exponent: float
    constant: float
    x: tuple
    y: tuple


def fitted_slope(x, y) -> Slope:
    """The power law through the points (x, y) (`sweep.analysis.fit_power_law`); needs two distinct x > 0, y > 0."""
    x, y = tuple(float(v) for v in x), tuple(float(v) for v in y)
    if len(set(x)) < 2 or min(x) <= 0 or min(y) <= 0:
        raise ValueError(f"a slope needs two distinct positive x and positive y, got x = {x}, y = {y}")
    exponent, constant = fit_power_law(x, y)
    return Slope(exponent, constant, x, y)


def score_gap(first, second, mixture: GaussianMixture, horizon, n: int, generator: torch.Generator) -> ScoreError:
    """E_{t ~ U[t0, T]} h_t E_{x ~ p_t} ||first(x, t) - second(x, t)||^2 from n fresh (x_0, t, xi)."""
    x0 = mixture.sample(n, generator)
    t = horizon.sample_times(n, generator)
    xt = process.forward_sample(x0, t, generator)
    values = process.h(t) * (first(xt, t) - second(xt, t)).square().sum(1)
    return ScoreError(float(values.mean()), float(values.std() / math.sqrt(n)), n)


def coupling(fit: DenoiserFit, twin: TwinFit, config: DiffusionConfig, draws: Draws) -> Coupling:
    """The network of `fit` against `twin` (its Theta(W(0)) twin) at the network's kept step (`Coupling`)."""
    if twin.kind != "theta0":
        raise ValueError(f"a network is coupled to its theta0 twin, got the {twin.kind} twin")
    pairs = fit.val_pairs
    Z = fit.embedding(pairs.xt, pairs.t)
    step = int(fit.best_step)
    distance = twin_distance(fit.net, twin, step, Z)
    scale = math.sqrt(float(twin.denoiser(step)(Z).square().sum(1).mean()))
    gap = score_gap(LearnedScore(fit.net, fit.embedding), twin.score(step), draws.truth, config.horizon,
                    config.n_score, torch.Generator().manual_seed(config.seed + 2))
    return Coupling(twin.activation, config.n, config.training.width, step, distance, distance / scale,
                    gap.value, gap.stderr)


def _row(activation: str, n: int, m: int, predictor: str, measured, **values) -> KernelRow:
    row, curve = measured.row, measured.curve
    lists = {} if curve is None else {"curve_times": curve.times.tolist(), "curve_value": curve.value.tolist(),
                                      "curve_stderr": curve.stderr.tolist()}
    return KernelRow(activation, n, m, predictor, score_error=row["score_error"], precision=row["precision"],
                     recall=row["recall"], score_error_stderr=row["score_error_stderr"], w2=row["w2"], mmd=row["mmd"],
                     samples=measured.samples.tolist(), **lists, **values)


def twin_row(twin: TwinFit, config: DiffusionConfig, draws: Draws) -> KernelRow:
    """The row of a kernel twin at its stop step."""
    measured = experiment.measure(twin.score(), config, draws)
    return _row(twin.activation, config.n, config.training.width, f"twin_{twin.kind}", measured,
                stop_step=twin.stop.step, heldout_loss=twin.stop.loss, t_star=twin.stop.time,
                at_limit=twin.stop.at_limit, seconds=twin.seconds)


def kernel_rows(config: DiffusionConfig, activation: str, fit: DenoiserFit | None = None,
                large_n: int | None = None) -> tuple[list[KernelRow], Coupling]:
    """The rows of every predictor for `activation` at config's (n, m), and the network's coupling to its twin.

    fit: the trained network (trained here when None); large_n: also the H* twin on large_n draws of p_0 (its
    row has n = large_n). Needs a mixture p_0 (the score error and the posterior mean are exact).
    """
    draws = experiment.draw(config)
    if draws.truth is None:
        raise ValueError(f"the kernel comparison needs a Gaussian-mixture p_0 (exact scores), got {config.data!r}")
    if fit is None:
        fit, _ = experiment.fit_score(activation, config, draws)
    n, m = config.n, config.training.width
    theta0 = experiment.fit_twin("theta0", activation, config, draws, fit)
    link = coupling(fit, theta0, config, draws)
    network = experiment.measure(LearnedScore(fit.net, fit.embedding), config, draws)
    rows = [_row(activation, n, m, "network", network, stop_step=int(fit.best_step), heldout_loss=fit.best_val_loss,
                 distance_to_twin=link.distance),
            twin_row(theta0, config, draws),
            twin_row(experiment.fit_twin("hstar", activation, config, draws), config, draws)]
    if large_n is not None:
        larger = replace(config, n=int(large_n))
        large_draws = experiment.draw(larger)
        rows.append(twin_row(experiment.fit_twin("hstar", activation, larger, large_draws), larger, large_draws))
    exact = experiment.measure(posterior_mean_score(draws.truth), config, draws)
    rows.append(_row(activation, n, m, "posterior_mean", exact, stop_step=None,
                     heldout_loss=experiment.bayes_val_loss(draws.truth, fit)))
    return rows, link


def width_couplings(config: DiffusionConfig, activation: str, widths) -> tuple[list[Coupling], Slope | None]:
    """The network-twin coupling at each width m (n fixed) and the slope of its distance against m."""
    links = []
    for width in widths:
        at = replace(config, training=replace(config.training, width=int(width)))
        draws = experiment.draw(at)
        fit, _ = experiment.fit_score(activation, at, draws)
        links.append(coupling(fit, experiment.fit_twin("theta0", activation, at, draws, fit), at, draws))
    usable = [link for link in links if link.distance > 0]
    slope = fitted_slope([l.m for l in usable], [l.distance for l in usable]) if len({l.m for l in usable}) > 1 \
        else None
    return links, slope


def hstar_against_n(config: DiffusionConfig, activation: str, ns) -> tuple[list[KernelRow], Slope | None]:
    """The H* twin's rows on n draws of p_0 for each n in `ns` (m from config: its kernel is m kappa^2 H*, and
    t* does not depend on m once lr is 'auto'), and the slope of its score error against n."""
    rows = []
    for n in ns:
        at = replace(config, n=int(n))
        draws = experiment.draw(at)
        rows.append(twin_row(experiment.fit_twin("hstar", activation, at, draws), at, draws))
    usable = [row for row in rows if row.score_error is not None and row.score_error > 0]
    slope = fitted_slope([row.n for row in usable], [row.score_error for row in usable]) \
        if len({row.n for row in usable}) > 1 else None
    return rows, slope


def _differs(first: float, second: float, samples: int) -> bool:
    """first < second by more than twice the binomial standard error of the difference of two shares."""
    spread = math.sqrt((first * (1 - first) + second * (1 - second)) / samples)
    return second - first > 2 * max(spread, 1 / samples)


def _gap_time(worse: KernelRow, better: KernelRow) -> tuple[float, float, float] | None:
    """(t, worse's, better's weighted error at t) where h_t E||s - grad log p_t||^2 of `worse` exceeds `better`'s
    most on their common per-t curve; None without curves."""
    if worse.curve is None or better.curve is None or not np.array_equal(worse.curve.times, better.curve.times):
        return None
    weight = process.h(torch.as_tensor(worse.curve.times)).numpy()
    first, second = weight * worse.curve.value, weight * better.curve.value
    index = int(np.argmax(first - second))
    return float(worse.curve.times[index]), float(first[index]), float(second[index])


def bridging_reading(rows: list[KernelRow], samples: int) -> str:
    """Where bridging comes from, for one activation's rows (`kernel_rows`), judged by precision (the share of
    samples near a mode, `samples` samples per predictor; a difference counts beyond twice its binomial
    standard error):

    - training: the network is less precise than its Theta(W(0)) twin stopped at t*;
    - the kernel: the H* twin is less precise than the posterior mean at every n measured;
    - the data size: the H* twin is less precise at the section's n but not at the largest n.
    Each named cause comes with the t at which the weighted score error of the less precise predictor
    exceeds the other's most."""
    by = {(row.predictor, row.n): row for row in rows}
    n = min(row.n for row in rows)
    network, theta0, exact = by[("network", n)], by[("twin_theta0", n)], by[("posterior_mean", n)]
    hstar = sorted((row for row in rows if row.predictor == "twin_hstar"), key=lambda row: row.n)
    parts = [f"{network.activation}: precision network {network.precision:.3f} (kept step {network.stop_step}), "
             f"twin theta0 {theta0.precision:.3f} (t* = {theta0.t_star:.3g}"
             f"{', still falling at the end of the scan (the rounding horizon)' if theta0.at_limit else ''}), "
             + ", ".join(f"twin H* at n = {row.n} {row.precision:.3f}" for row in hstar)
             + f", posterior mean {exact.precision:.3f}."]
    causes = []

    def located(text: str, worse: KernelRow, better: KernelRow) -> str:
        gap = _gap_time(worse, better)
        return text if gap is None else text + (f" (its weighted score error exceeds the other's most at t = "
                                                f"{gap[0]:.3g}: {gap[1]:.3g} against {gap[2]:.3g})")

    if _differs(network.precision, theta0.precision, samples):
        causes.append(located("training: the network bridges more than its Theta(W(0)) twin stopped at t*",
                              network, theta0))
    short = [row for row in hstar if _differs(row.precision, exact.precision, samples)]
    if hstar and len(short) == len(hstar):
        causes.append(located("the kernel: the H* twin bridges at every n measured", hstar[-1], exact))
    elif short and not _differs(hstar[-1].precision, exact.precision, samples):
        causes.append(located(f"the data size: the H* twin bridges at n = {short[0].n} but not at n = "
                              f"{hstar[-1].n}", short[0], hstar[-1]))
    if not causes:
        causes.append("none of training, kernel or data size: no comparison above differs by more than twice "
                      "its binomial standard error")
    parts.append("Bridging comes from " + "; ".join(causes) + ".")
    return " ".join(parts)
