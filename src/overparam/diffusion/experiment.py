"""The whole diffusion experiment: train denoisers, score them exactly, sample, measure (docs/mathematics.md#diffusion).

For each activation a `TwoLayerNet` learns E[x_0 | x_t, t] (training.py); its Tweedie score is
compared with the exact score of p_t (score error, overall and per t) and drives a sampler whose
output is measured against fresh draws of p_0 (W2, MMD, NLL, recovered weights). Two baselines run
through the same samplers and metrics: the exact score (the sampler's own discretisation floor)
and the trivial score -x (the N(0, I) score). A third row, `p0`, scores a fresh sample of p_0
itself: the finite-sample floor of W2 and MMD.

Common random numbers: every score function sees the same score-error draws and the samplers the
same initial points and Brownian increments, so differences between rows come from the scores.

`run` is made of pieces that also work one score at a time (the study's section (f) caches each
activation separately): `draw` (the shared draws from p_0), `fit_score` (train one denoiser),
`measure` (score error, samples and sample metrics of one score), `p0_row` and `metrics_dict`.

With `twins` (e.g. ("theta0", "hstar")) each network also gets its kernel twins (twin.py): early-stopped
kernel regression on the same pairs, stopped at the t* that minimises the same held-out loss, scored and
sampled like the network (rows named "<activation> twin_<kind>" among the samples and curves).

`run_experiment(config, out_dir)` returns the metrics dict (the CLI's --json object):

    {"<activation>": {"score_error", "score_error_stderr", "w2", "mmd", "nll", "weights",
                      "weight_error", "precision", "recall", "between": {metric: position}, "training": {...},
                      "twins": {"<kind>": {<the same metrics>, "twin": {"t_star", "stop_step", "heldout_loss",
                                                                       "at_limit", "lr", "seconds", ...}}}},
     "baselines": {"exact": {...}, "trivial": {...}, "p0": {...}}}

("twins" only when config.twins is not empty.)

between[metric] = (trivial - learned) / (trivial - exact): 1 means as good as the exact score,
0 as bad as -x, negative worse than -x; None where -x is not worse than the exact score on that
metric. Recovered weights are left out of `between` (see RANKED). Metrics that need the true density (score error, NLL,
weights) are None for sample-only data, where `exact` is None too.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import resources
from ..activations import SOFTMAX, resolve
from ..models import resolve_dtype
from . import metrics
from .datasets import SampleSet, parse_data
from .mixtures import GaussianMixture
from .process import Horizon, time_grid
from .samplers import SAMPLERS, sample
from .score import LearnedScore, ScoreErrorCurve, curve_times, score_error, score_error_curve, trivial_score
from .training import DenoiserFit, TrainingConfig, fit_denoiser
from .twin import TWINS, TwinFit, kernel_twin

#: Default sampler steps: Euler–Maruyama needs more steps than Heun (which calls the score twice).
DEFAULT_SAMPLER_STEPS = {"sde": 100, "ode": 50}
#: Metrics where lower is better, placed between the two baselines in `between`.
#: (Not the recovered weights: -x samples N(0, I), which a symmetric mixture's components split
#: evenly, so on that metric -x is no worse than the exact score and the scale is undefined.)
RANKED = ("score_error", "w2", "mmd", "nll")


@dataclass
class DiffusionConfig:
    """Everything one diffusion run needs (plain data; the CLI flags map onto these fields).

    `training` describes the network and its training for every activation in `activations`
    (its own `activation` field is replaced by each of them).
    """

    data: str = "gmm:k=8,d=2"
    activations: tuple[str, ...] = (SOFTMAX.name,)
    n: int = 4096
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampler: str = "sde"
    sampler_steps: int | None = None
    spacing: str = "quadratic"
    t0: float = 1e-3
    T: float = 5.0
    n_samples: int = 2000
    n_score: int = 4096
    curve_points: int = 12
    curve_samples: int = 512
    quiver_times: tuple[float, ...] = (0.05, 0.3, 1.0)
    seed: int = 0
    twins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.activations = tuple(self.activations)
        if not self.activations:
            raise ValueError("give at least one activation")
        for activation in self.activations:
            resolve(activation)
        if len(set(self.activations)) != len(self.activations):
            raise ValueError(f"activations repeat: {', '.join(self.activations)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: use 'sde' (reverse SDE) or 'ode' (probability flow)")
        for name in ("n", "n_samples", "n_score", "curve_points", "curve_samples"):
            value = getattr(self, name)
            if int(value) != value or value < (2 if name in ("n", "n_samples", "curve_samples") else 1):
                raise ValueError(f"{name} must be a positive integer (>= 2 for sample counts), got {value!r}")
        if self.sampler_steps is None:
            self.sampler_steps = DEFAULT_SAMPLER_STEPS[self.sampler]
        self.twins = tuple(self.twins)
        unknown = [kind for kind in self.twins if kind not in TWINS]
        if unknown:
            raise ValueError(f"unknown kernel twin {unknown[0]!r}: use {' or '.join(TWINS)} (comma-separated)")

    @property
    def horizon(self) -> Horizon:
        return Horizon(self.t0, self.T)

    def training_for(self, activation: str) -> TrainingConfig:
        return replace(self.training, activation=activation)


@dataclass
class DiffusionResult:
    """Everything a run produced: the metrics dict, and the arrays behind the figures."""

    config: DiffusionConfig
    truth: GaussianMixture | None
    metrics: dict
    reference: np.ndarray
    samples: dict[str, np.ndarray]
    curves: dict[str, ScoreErrorCurve] = field(default_factory=dict)
    fits: dict[str, DenoiserFit] = field(default_factory=dict)
    scores: dict[str, Callable] = field(default_factory=dict)
    twins: dict[str, TwinFit] = field(default_factory=dict)
    bayes_val_loss: float | None = None
    mmd_bandwidth: float | None = None

    def details(self) -> dict:
        """Plain data for results.json: config, truth, metrics, curves, training records."""
        return {
            "config": asdict(self.config),
            "truth": self.truth.describe() if self.truth is not None else {"name": self.config.data, "exact": False},
            "likelihood_time": (metrics.likelihood_time(self.truth, self.config.t0) if self.truth is not None else None),
            "metrics": self.metrics,
            "bayes_val_loss": self.bayes_val_loss,
            "mmd_bandwidth": self.mmd_bandwidth,
            "curves": {name: {"times": c.times.tolist(), "value": _finite(c.value), "stderr": _finite(c.stderr)}
                       for name, c in self.curves.items()},
            "training": self.training_records(),
        }

    def training_records(self) -> dict:
        """name -> `training_record` of its fit."""
        return {name: training_record(fit) for name, fit in self.fits.items()}


@dataclass
class Draws:
    """The run's draws from p_0, shared by every score (common random numbers).

    x0 (n, d): the training samples; reference (n_samples, d): the sample every sampler's output
    is measured against; fresh (n_samples, d): a second sample of p_0 (the `p0` row); bandwidth:
    the MMD kernel width (median heuristic on the reference); truth: the mixture, None for
    sample-only data.
    """

    source: GaussianMixture | SampleSet
    truth: GaussianMixture | None
    x0: torch.Tensor
    reference: np.ndarray
    fresh: np.ndarray
    bandwidth: float


@dataclass
class ScoreMeasurement:
    """What one score function produced: its metrics row, its samples (n_samples, d) and its
    score-error curve (None for sample-only data)."""

    row: dict
    samples: np.ndarray
    curve: ScoreErrorCurve | None


def require_memory(config: DiffusionConfig) -> None:
    """`resources.require` for the largest pass: the denoiser's network over its N = n x noise_draws
    training pairs (inputs of dimension d + 2, targets d), or over the samples or score draws."""
    d = parse_data(config.data).dim
    training = config.training
    rows = max(config.n * training.noise_draws, config.n_samples, config.n_score)
    itemsize = resolve_dtype(training.dtype).itemsize
    resources.require(resources.network_bytes(rows, d + 2, d, training.width, itemsize) + 8 * 4 * rows * d,
                      training.device, f"the score network of m = {training.width} neurons on {rows} rows",
                      "use a smaller --n, --noise-draws, --samples or --score-samples, or a smaller --width")


def draw(config: DiffusionConfig) -> Draws:
    """The draws from p_0 that every score of a run with `config` shares (same seed, same draws)."""
    source = parse_data(config.data)
    generator = torch.Generator().manual_seed(config.seed)
    x0 = source.sample(config.n, generator)
    reference = source.sample(config.n_samples, generator).numpy()
    fresh = source.sample(config.n_samples, generator).numpy()
    truth = source if isinstance(source, GaussianMixture) else None
    return Draws(source, truth, x0, reference, fresh, metrics.median_bandwidth(reference, seed=config.seed))


def fit_score(activation: str, config: DiffusionConfig, draws: Draws) -> tuple[DenoiserFit, LearnedScore]:
    """Train the `activation` denoiser on draws.x0 and return it with its Tweedie score."""
    fit = fit_denoiser(draws.x0, config.horizon, config.training_for(activation), seed=config.seed)
    return fit, LearnedScore(fit.net, fit.embedding)


def fit_twin(kind: str, activation: str, config: DiffusionConfig, draws: Draws,
             fit: DenoiserFit | None = None) -> TwinFit:
    """The `kind` kernel twin of the `activation` denoiser on draws.x0 (its pairs and held-out split); with the
    fitted network, theta0 takes the step the network trained with."""
    if fit is not None and kind == "theta0" and fit.twin is not None:
        return fit.twin  # the twin that set the network's budget
    lr = fit.history.lr if fit is not None and kind == "theta0" else None
    return kernel_twin(kind, draws.x0, config.horizon, config.training_for(activation), config.seed, lr=lr)


def twin_name(activation: str, kind: str) -> str:
    """The twin's name among a run's scores, samples and curves."""
    return f"{activation} twin_{kind}"


def baseline_scores(truth: GaussianMixture | None) -> dict[str, Callable]:
    """The two reference scores: `exact` (grad log p_t, only with a mixture truth) and `trivial` (-x)."""
    return ({"exact": truth.score} if truth is not None else {}) | {"trivial": trivial_score}


def measure(score: Callable, config: DiffusionConfig, draws: Draws) -> ScoreMeasurement:
    """Score error (overall and per t, exact data only), then samples and their metrics, for one score.

    Every call reseeds its generators from config.seed: every score sees the same score-error
    draws, initial points and Brownian increments.
    """
    row: dict = {"score_error": None, "score_error_stderr": None}
    curve = None
    if draws.truth is not None:
        error = score_error(score, draws.truth, config.horizon, config.n_score,
                            torch.Generator().manual_seed(config.seed + 2))
        row.update(score_error=_finite(error.value), score_error_stderr=_finite(error.stderr))
        curve = score_error_curve(score, draws.truth, curve_times(config.horizon, config.curve_points),
                                  config.curve_samples, torch.Generator().manual_seed(config.seed + 3))
    drawn = sample(score, config.n_samples, draws.source.dim, config.horizon, config.sampler, config.sampler_steps,
                   config.spacing, torch.Generator().manual_seed(config.seed + 1),
                   device=torch.device(config.training.device))
    samples = drawn.cpu().numpy()
    row.update(sample_metrics(config, draws, samples))
    return ScoreMeasurement(row, samples, curve)


def sample_metrics(config: DiffusionConfig, draws: Draws, x: np.ndarray) -> dict:
    """W2 and MMD of samples x (N, d) against draws.reference; NLL, recovered weights, precision and recall
    under the truth."""
    out = {"w2": _finite(metrics.wasserstein2(x, draws.reference, seed=config.seed)),
           "mmd": _finite(metrics.mmd_rbf(x, draws.reference, draws.bandwidth, seed=config.seed)),
           "nll": None, "weights": None, "weight_error": None, "precision": None, "recall": None}
    if draws.truth is not None:
        weights = metrics.recovered_weights(draws.truth, x, config.t0)
        precision, recall = metrics.precision_recall(draws.truth, x, config.t0)
        out.update(nll=_finite(metrics.negative_log_likelihood(draws.truth, x, config.t0)), weights=weights.tolist(),
                   weight_error=metrics.weight_error(draws.truth, weights), precision=precision, recall=recall)
    return out


def p0_row(config: DiffusionConfig, draws: Draws) -> dict:
    """The `p0` baseline: the fresh draws of p_0 measured like samples (no score involved)."""
    return {"score_error": None, "score_error_stderr": None, **sample_metrics(config, draws, draws.fresh)}


def between(learned: dict, exact: dict | None, trivial: dict) -> dict:
    """(trivial - learned) / (trivial - exact) for each metric in RANKED (module docstring)."""
    position = {}
    for name in RANKED:
        value, low, high = learned.get(name), (exact or {}).get(name), trivial.get(name)
        if None in (value, low, high) or not high > low + 1e-12 * abs(low):
            position[name] = None  # undefined unless -x is measurably worse than the exact score
        else:
            position[name] = (high - value) / (high - low)
    return position


def metrics_dict(rows: dict[str, dict], p0: dict, training: dict[str, dict]) -> dict:
    """The documented metrics dict from the per-score rows (learned, exact, trivial), the p0 row
    and each activation's training summary (`DenoiserFit.summary()`)."""
    result = {activation: {**rows[activation], "between": between(rows[activation], rows.get("exact"),
                                                                   rows["trivial"]),
                           "training": summary}
              for activation, summary in training.items()}
    result["baselines"] = {"exact": rows.get("exact"), "trivial": rows["trivial"], "p0": p0}
    return result


def bayes_val_loss(truth: GaussianMixture, fit: DenoiserFit) -> float:
    """Held-out mean ||D(x_t, t) - x_0||^2 of the exact denoiser D = E[x_0 | x_t, t] on fit's held-out
    pairs: the floor of the learned denoiser's held-out loss (the pairs depend on the seed, not the
    activation)."""
    pairs = fit.val_pairs
    return float((truth.denoiser(pairs.xt, pairs.t) - pairs.x0).square().sum(1).mean())


def training_record(fit: DenoiserFit) -> dict:
    """Plain-data training curves: steps and training MSE, held-out steps and losses, the kept step."""
    return {"step": fit.history.step.tolist(), "train_mse": _finite(fit.train_mse),
            "val_step": np.asarray(fit.val_step).tolist(), "val_loss": _finite(fit.val_loss),
            "best_step": int(fit.best_step)}


def run(config: DiffusionConfig, progress: Callable[[str], None] | None = None) -> DiffusionResult:
    """Run the experiment described by `config` (module docstring); writes nothing."""
    say = progress or (lambda message: None)
    time_grid(config.horizon, config.sampler_steps, config.spacing)  # validate before any training
    require_memory(config)
    draws = draw(config)
    scores: dict[str, Callable] = {}
    fits: dict[str, DenoiserFit] = {}
    twins: dict[str, TwinFit] = {}
    for activation in config.activations:
        training = config.training_for(activation)
        say(f"training {activation} (width {training.width}, {training.optimizer}, up to {training.steps} steps)")
        fits[activation], scores[activation] = fit_score(activation, config, draws)
        for kind in config.twins:
            say(f"kernel twin {kind} of {activation}: one eigendecomposition, t* by the held-out loss")
            name = twin_name(activation, kind)
            twins[name] = fit_twin(kind, activation, config, draws, fits[activation])
            scores[name] = twins[name].score()
    scores.update(baseline_scores(draws.truth))
    measured: dict[str, ScoreMeasurement] = {}
    for name, score in scores.items():
        say(f"scoring and sampling with the {name} score ({config.sampler}, {config.sampler_steps} steps)")
        measured[name] = measure(score, config, draws)
    result = metrics_dict({name: m.row for name, m in measured.items()}, p0_row(config, draws),
                          {activation: fit.summary() for activation, fit in fits.items()})
    for activation in config.activations:
        if config.twins:
            result[activation]["twins"] = {
                kind: {**measured[twin_name(activation, kind)].row,
                       "twin": twins[twin_name(activation, kind)].summary()} for kind in config.twins}
    bayes = bayes_val_loss(draws.truth, next(iter(fits.values()))) if draws.truth is not None else None
    return DiffusionResult(config, draws.truth, result, draws.reference,
                           {name: m.samples for name, m in measured.items()},
                           {name: m.curve for name, m in measured.items() if m.curve is not None},
                           fits, scores, twins, bayes, draws.bandwidth)


def write(result: DiffusionResult, out_dir) -> list[Path]:
    """results.json, samples.npz, training_<activation>.parquet and the figures in out_dir."""
    from . import figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "samples.npz"]
    (out / "results.json").write_text(json.dumps(result.details(), indent=1, allow_nan=False))
    np.savez(out / "samples.npz", reference=result.reference, **result.samples)
    for name, fit in result.fits.items():
        fit.history.save(out / f"training_{name}.parquet")
        written.append(out / f"training_{name}.parquet")
    written += figures.all_figures(result, out)
    return written


def run_experiment(config: DiffusionConfig, out_dir=None, progress: Callable[[str], None] | None = None) -> dict:
    """Run the experiment and return its metrics dict; with out_dir also write results and figures."""
    result = run(config, progress)
    if out_dir is not None:
        write(result, out_dir)
    return result.metrics


def _finite(values):
    """float(s) with NaN and inf replaced by None, so results are strict JSON."""
    if isinstance(values, (list, tuple, np.ndarray)):
        return [_finite(value) for value in values]
    return float(values) if values is not None and math.isfinite(values) else None
