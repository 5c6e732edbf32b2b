"""Section (f): diffusion. How well each network learns the score, and how good its samples are
(docs/mathematics.md#diffusion).

One unit per predictor: a `Denoiser` per (activation, n, m) of the learning-curve grid trains the Tweedie
denoiser F ~ E[x_0 | x_t, t] on n draws of p_0 by full-batch GD with early stopping, measures its exact
score error E_t h_t E_{p_t}||s - grad log p_t||^2 (overall and per t), samples with it and measures the
samples (W2, MMD^2, NLL, recovered weights, precision and recall). One `Baselines` unit measures the exact
score (the sampler's own discretisation floor), the trivial score -x and fresh draws of p_0 (the
finite-sample floor of W2 and MMD). Every unit runs the pieces of `overparam.diffusion.experiment` on the
same draws and seeds, so the rows are those that `overparam diffusion` reports for the same settings and
differ only by their scores. Another predictor is one more subclass of `Measured` with its own record.

The kernel theory behind it (issue 23, `overparam.diffusion.twin_study`): a `KernelComparison` per activation
scores the network beside its kernel twins (early-stopped kernel regression on the same pairs with its own
Theta(W(0)) and with m kappa^2 H*, each stopped at the t* of the held-out loss; H* also at `twin_large_n` draws)
and the exact posterior mean; a `TwinCoupling` per width measures the network against its Theta(W(0)) twin at
the same step, whose decay in m is HRX24's coupling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

from .. import plots
from ..activations import resolve
from ..diffusion import experiment, figures
from ..diffusion.datasets import parse_data
from ..diffusion.experiment import RANKED, DiffusionConfig, ScoreMeasurement
from ..diffusion.mixtures import GaussianMixture
from ..diffusion.score import ScoreErrorCurve
from ..diffusion.training import DenoiserFit, TrainingConfig
from ..diffusion.twin_study import COLUMNS as KERNEL_FIELDS
from ..diffusion.twin_study import Coupling, KernelRow, bridging_reading, coupling, fitted_slope, kernel_rows
from ..sweep.analysis import fit_power_law
from .framework import Plot, Report, SectionConfig, StudySection, Unit, require_grid, require_positive, table
from .report import Fact


@dataclass(frozen=True)
class Config(SectionConfig):
    """data: p_0's spec; n draws of it to learn from; width m; GD step budget (early stopping may end
    sooner); sampler and its steps; samples per score (W2, MMD, NLL); score-error Monte Carlo draws; the
    learning curves: every width at n, every n at m (one seed per point)."""

    data: str = "gmm:k=4,d=2"
    n: int = 1024
    width: int = 512
    steps: int = 1500
    sampler: str = "sde"
    sampler_steps: int = 100
    samples: int = 1000
    score_samples: int = 4096
    widths: tuple[int, ...] = (64, 256, 512)
    ns: tuple[int, ...] = (256, 512, 1024)
    # the kernel comparison: one dense eigendecomposition of the (0.8 n d)^2 kernel Theta(W(0)) and of the
    # (0.8 twin_large_n)^2 H* per activation (CPU), affordable at the quick preset's n, not at the paper's
    twins: bool = True
    twin_large_n: int = 4096

    def check(self) -> None:
        for name in ("n", "width", "steps", "sampler_steps", "samples", "score_samples"):
            require_positive(name, getattr(self, name))
        if self.twins and not (self.twin_large_n == 0 or self.twin_large_n > self.n):
            raise ValueError(f"twin_large_n must be 0 (no H* twin at a larger n) or above n = {self.n}, "
                             f"got {self.twin_large_n}")
        require_grid("widths", self.widths)
        require_grid("ns", self.ns)
        if self.sampler not in ("sde", "ode"):
            raise ValueError(f"sampler must be sde or ode, got {self.sampler!r}")


def curve_grid(cfg: Config) -> list[tuple[int, int]]:
    """(n, m) of the learning curves: the main point, every width at n = cfg.n, every n at m = cfg.width."""
    pairs = [(cfg.n, cfg.width)] + [(cfg.n, m) for m in cfg.widths]
    return list(dict.fromkeys(pairs + [(n, cfg.width) for n in cfg.ns]))


# ----------------------------------------------------------------------------------- records


@dataclass
class Metrics:
    """One score's row of `overparam diffusion` (`experiment.measure`); None where not measurable
    (non-finite, or a metric that needs the true density on sample-only data)."""

    score_error: float | None = None
    score_error_stderr: float | None = None
    w2: float | None = None
    mmd: float | None = None
    nll: float | None = None
    weights: list[float] | None = None
    weight_error: float | None = None
    precision: float | None = None
    recall: float | None = None


@dataclass
class Curve:
    """Unweighted score error E_(p_t)||s - grad log p_t||^2 (and its standard error) at `times`."""

    times: list[float]
    value: list[float]
    stderr: list[float]

    def as_curve(self) -> ScoreErrorCurve:
        return ScoreErrorCurve(*(np.asarray(v, dtype=float) for v in (self.times, self.value, self.stderr)))


@dataclass
class Measurement:
    """What one score produced: its metrics, its samples (n_samples, d) and its score-error curve (None for
    sample-only data)."""

    metrics: Metrics
    samples: list[list[float]]
    curve: Curve | None

    @classmethod
    def of(cls, measured: ScoreMeasurement) -> "Measurement":
        curve = measured.curve
        return cls(Metrics(**measured.row), measured.samples.tolist(),
                   None if curve is None else Curve(curve.times.tolist(), curve.value.tolist(), curve.stderr.tolist()))


@dataclass
class DenoiserTraining:
    """steps: GD steps run; best_step: the kept (best held-out) step; best_val_loss: the held-out mean
    ||F - x_0||^2 there; the curves behind the training figure (`experiment.training_record`)."""

    steps: int
    best_step: int
    lr: float
    best_val_loss: float
    wall_seconds: float
    step: list[int]
    train_mse: list[float | None]
    val_step: list[int]
    val_loss: list[float | None]

    @classmethod
    def of(cls, fit: DenoiserFit) -> "DenoiserTraining":
        summary, curves = fit.summary(), experiment.training_record(fit)
        return cls(summary["steps"], summary["best_step"], summary["lr"], summary["best_val_loss"],
                   summary["wall_seconds"], curves["step"], curves["train_mse"], curves["val_step"],
                   curves["val_loss"])

    @property
    def curves(self) -> dict:
        """The plain-data record `figures.plot_training` draws."""
        return {"step": self.step, "train_mse": self.train_mse, "val_step": self.val_step,
                "val_loss": self.val_loss, "best_step": self.best_step}

    def ended_by(self, budget: int) -> str:
        """Early stopping, or the step budget (with the held-out loss still falling when the kept step is the
        last one)."""
        if self.steps < budget:
            return "early stopping"
        return "budget, held-out loss still falling" if self.best_step == budget else "budget"


@dataclass
class LearnedRecord:
    """A trained network's measurement and training; bayes_val_loss: the exact denoiser's held-out loss on
    the same held-out pairs (None for sample-only data); field: its score on the figure's grid (2-D data)."""

    measurement: Measurement
    training: DenoiserTraining
    bayes_val_loss: float | None
    field: list | None

    @property
    def metrics(self) -> Metrics:
        return self.measurement.metrics


@dataclass
class BaselinesRecord:
    """scores: the exact (exact data only) and trivial scores' measurements; p0: a second fresh sample of p_0
    measured like samples; reference: the draws of p_0 every sample is measured against."""

    scores: dict[str, Measurement]
    p0: Metrics
    reference: list[list[float]]


# ------------------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Measured(Unit):
    """The settings every measured score of one run shares: p_0, the n draws (which also fix the reference
    draws after them), the sampler, the sample counts and the seed. The library's defaults fill the rest of
    `DiffusionConfig` (t0, T, spacing, curve points): bump VERSION when they change."""

    data: str
    n: int
    sampler: str
    sampler_steps: int
    samples: int
    score_samples: int
    seed: int

    def config(self, training: TrainingConfig) -> DiffusionConfig:
        """The `overparam diffusion` settings of this unit."""
        return DiffusionConfig(data=self.data, activations=(training.activation,), n=self.n, training=training,
                               sampler=self.sampler, sampler_steps=self.sampler_steps, n_samples=self.samples,
                               n_score=self.score_samples, seed=self.seed)


@dataclass(frozen=True)
class Baselines(Measured):
    """The exact and trivial scores through the same measurements, the p0 row and the reference draws."""

    RECORD = BaselinesRecord

    def compute(self, ctx) -> BaselinesRecord:
        config = self.config(TrainingConfig(device=ctx.device))
        draws = experiment.draw(config)
        scores = {name: Measurement.of(experiment.measure(score, config, draws))
                  for name, score in experiment.baseline_scores(draws.truth).items()}
        return BaselinesRecord(scores, Metrics(**experiment.p0_row(config, draws)), draws.reference.tolist())


@dataclass(frozen=True)
class Denoiser(Measured):
    """One network of width m trained on the n draws (`experiment.fit_score`), then scored and sampled."""

    RECORD = LearnedRecord

    activation: str
    width: int
    steps: int
    sigma: float

    def compute(self, ctx) -> LearnedRecord:
        config = self.config(TrainingConfig(activation=self.activation, width=self.width, steps=self.steps,
                                            sigma=self.sigma, device=ctx.device))
        draws = experiment.draw(config)
        fit, score = experiment.fit_score(self.activation, config, draws)
        measured = experiment.measure(score, config, draws)
        field = None
        if draws.reference.shape[1] == 2:
            points = figures.field_grid(figures.plot_limits(draws.reference))
            field = figures.evaluate_field(score, points, config.quiver_times).tolist()
        bayes = experiment.bayes_val_loss(draws.truth, fit) if draws.truth is not None else None
        return LearnedRecord(Measurement.of(measured), DenoiserTraining.of(fit), bayes, field)


@dataclass
class KernelRecord:
    """One activation's predictors (`twin_study.KernelRow`: network, twin_theta0, twin_hstar (at n and at the
    larger n), posterior_mean) and the network's coupling to its Theta(W(0)) twin."""

    rows: list[KernelRow]
    coupling: Coupling


@dataclass(frozen=True)
class KernelComparison(Measured):
    """The network of the main point beside its kernel twins and the posterior mean (`twin_study.kernel_rows`;
    it trains the same network as the main point's `Denoiser`: same settings and seed)."""

    RECORD = KernelRecord

    activation: str
    width: int
    steps: int
    sigma: float
    large_n: int

    def compute(self, ctx) -> KernelRecord:
        config = self.config(TrainingConfig(activation=self.activation, width=self.width, steps=self.steps,
                                            sigma=self.sigma, device=ctx.device))
        rows, link = kernel_rows(config, self.activation, large_n=self.large_n or None)
        return KernelRecord(rows, link)


@dataclass(frozen=True)
class TwinCoupling(Measured):
    """The network of width m against its Theta(W(0)) twin at the network's kept step (`twin_study.coupling`)."""

    RECORD = Coupling

    activation: str
    width: int
    steps: int
    sigma: float

    def compute(self, ctx) -> Coupling:
        config = self.config(TrainingConfig(activation=self.activation, width=self.width, steps=self.steps,
                                            sigma=self.sigma, device=ctx.device))
        draws = experiment.draw(config)
        fit, _ = experiment.fit_score(self.activation, config, draws)
        return coupling(fit, experiment.fit_twin("theta0", self.activation, config, draws, fit), config, draws)


# -------------------------------------------------------------------------------------- rows


def _number(value) -> float:
    return float("nan") if value is None else float(value)


@dataclass
class ScoreRow:
    """One score's row of the main table; between_<metric>: (trivial - score) / (trivial - exact)
    (`experiment.between`; NaN for the baselines and where undefined)."""

    score: str
    score_error: float
    score_error_se: float
    w2: float
    mmd: float
    nll: float
    weight_error: float
    precision: float
    recall: float
    between_score_error: float = float("nan")
    between_w2: float = float("nan")
    between_mmd: float = float("nan")
    between_nll: float = float("nan")

    @classmethod
    def of(cls, score: str, m: Metrics, between: dict | None = None) -> "ScoreRow":
        positions = {f"between_{name}": _number(value) for name, value in (between or {}).items()}
        return cls(score, *(_number(v) for v in (m.score_error, m.score_error_stderr, m.w2, m.mmd, m.nll,
                                                 m.weight_error, m.precision, m.recall)), **positions)


SCORE_COLUMNS = [("score", "score"), ("score error", "score_error"), ("± se", "score_error_se"), ("W2", "w2"),
                 ("MMD^2", "mmd"), ("NLL", "nll"), ("weights TV", "weight_error"), ("precision", "precision"),
                 ("recall", "recall"), *((f"between: {name}", f"between_{name}") for name in RANKED)]


@dataclass
class TrainingRow:
    """held_out_loss: the kept network's held-out mean ||F - x_0||^2; exact_denoiser: E[x_0 | x_t, t]'s on
    the same pairs; excess: their difference."""

    activation: str
    steps: int
    kept_step: int
    lr: float
    held_out_loss: float
    exact_denoiser: float
    excess: float
    seconds: float

    @classmethod
    def of(cls, activation: str, record: LearnedRecord) -> "TrainingRow":
        t, bayes = record.training, record.bayes_val_loss
        return cls(activation, t.steps, t.best_step, t.lr, t.best_val_loss, _number(bayes),
                   t.best_val_loss - bayes if bayes is not None else float("nan"), t.wall_seconds)


TRAINING_COLUMNS = [("activation", "activation"), ("steps run", "steps"), ("kept step", "kept_step"), ("lr", "lr"),
                    ("held-out loss", "held_out_loss"), ("exact denoiser", "exact_denoiser"), ("excess", "excess"),
                    ("seconds", "seconds")]


@dataclass
class CurveRow:
    """One network of the learning-curve grid (one seed), with what ended its training."""

    activation: str
    n: int
    width: int
    score_error: float
    score_error_se: float
    w2: float
    mmd: float
    precision: float
    recall: float
    held_out_loss: float
    kept_step: int
    steps: int
    ended_by: str

    @classmethod
    def of(cls, unit: Denoiser, record: LearnedRecord, budget: int) -> "CurveRow":
        m, t = record.metrics, record.training
        return cls(unit.activation, unit.n, unit.width, *(_number(v) for v in (
            m.score_error, m.score_error_stderr, m.w2, m.mmd, m.precision, m.recall)), t.best_val_loss,
            t.best_step, t.steps, t.ended_by(budget))


CURVE_COLUMNS = [("activation", "activation"), ("n", "n"), ("m", "width"), ("score error", "score_error"),
                 ("± se", "score_error_se"), ("W2", "w2"), ("MMD^2", "mmd"), ("precision", "precision"),
                 ("recall", "recall"), ("held-out loss", "held_out_loss"), ("kept step", "kept_step"),
                 ("steps run", "steps"), ("ended by", "ended_by")]
#: The learning curves' metrics: figure label -> CurveRow field.
CURVE_METRICS = {"score error": "score_error", "W2": "w2", "MMD^2": "mmd"}
#: The two curves: axis -> the CurveRow field along it.
AXES = {"m": "width", "n": "n"}


# ------------------------------------------------------------------------------------ section


class Diffusion(StudySection):
    KEY, TITLE, Config = "diffusion", "(f) Diffusion: score estimation and sample quality", Config

    @staticmethod
    def baselines(study, cfg: Config) -> Baselines:
        return Baselines(data=cfg.data, n=cfg.n, sampler=cfg.sampler, sampler_steps=cfg.sampler_steps,
                         samples=cfg.samples, score_samples=cfg.score_samples, seed=study.seed)

    @staticmethod
    def denoiser(study, cfg: Config, activation: str, n: int, width: int) -> Denoiser:
        return Denoiser(data=cfg.data, n=n, sampler=cfg.sampler, sampler_steps=cfg.sampler_steps,
                        samples=cfg.samples, score_samples=cfg.score_samples, seed=study.seed,
                        activation=activation, width=width, steps=cfg.steps, sigma=study.sigma)

    @staticmethod
    def kernel(study, cfg: Config, activation: str) -> KernelComparison:
        return KernelComparison(data=cfg.data, n=cfg.n, sampler=cfg.sampler, sampler_steps=cfg.sampler_steps,
                                samples=cfg.samples, score_samples=cfg.score_samples, seed=study.seed,
                                activation=activation, width=cfg.width, steps=cfg.steps, sigma=study.sigma,
                                large_n=cfg.twin_large_n)

    @staticmethod
    def coupling(study, cfg: Config, activation: str, width: int) -> TwinCoupling:
        return TwinCoupling(data=cfg.data, n=cfg.n, sampler=cfg.sampler, sampler_steps=cfg.sampler_steps,
                            samples=cfg.samples, score_samples=cfg.score_samples, seed=study.seed,
                            activation=activation, width=width, steps=cfg.steps, sigma=study.sigma)

    def networks(self, study, cfg: Config) -> list[Denoiser]:
        """One network per activation and (n, m) of the learning-curve grid."""
        return [self.denoiser(study, cfg, a, n, m) for a in study.activations for n, m in curve_grid(cfg)]

    def units(self, study, cfg) -> list[Measured]:
        units = [self.baselines(study, cfg), *self.networks(study, cfg)]
        if cfg.twins and isinstance(parse_data(cfg.data), GaussianMixture):  # it needs exact scores
            units += [self.kernel(study, cfg, a) for a in study.activations]
            units += [self.coupling(study, cfg, a, m) for a in study.activations for m in cfg.widths
                      if m != cfg.width]
        return units

    def couplings(self, study, cfg: Config, records) -> dict[str, list[Coupling]]:
        """Per activation, the network-twin coupling at every width of cfg.widths (and the main width)."""
        out = {}
        for activation in study.activations:
            main = records[self.kernel(study, cfg, activation)].coupling
            links = [main if m == cfg.width else records[self.coupling(study, cfg, activation, m)]
                     for m in sorted(set(cfg.widths) | {cfg.width})]
            out[activation] = links
        return out

    def report(self, study, cfg, records) -> Report:
        base: BaselinesRecord = records[self.baselines(study, cfg)]
        learned = {a: records[self.denoiser(study, cfg, a, cfg.n, cfg.width)] for a in study.activations}
        # the main point's `overparam diffusion` settings, which the captions and readings name
        config = self.baselines(study, cfg).config(TrainingConfig(width=cfg.width, steps=cfg.steps))
        scores = score_rows(learned, base)
        training = [TrainingRow.of(a, r) for a, r in learned.items()]
        curves = [CurveRow.of(unit, records[unit], cfg.steps) for unit in self.networks(study, cfg)]
        slopes = curve_slopes(curves, study, cfg)
        kernel = {}
        if cfg.twins and isinstance(parse_data(cfg.data), GaussianMixture):
            kernel = {a: records[self.kernel(study, cfg, a)] for a in study.activations}
        links = self.couplings(study, cfg, records) if kernel else {}
        distance_slopes = {a: _distance_slope(ls) for a, ls in links.items()}
        kernel_report = kernel_parts(kernel, links, distance_slopes, base, cfg) if kernel else Report()
        return Report(
            reading=[*reading(scores, training, learned, base, config),
                     *learning_curve_reading(curves, slopes, base, study, cfg), *kernel_report.reading],
            tables=[
                table("diffusion", "Score error (weighted, ± standard error), sample quality against "
                      f"{config.n_samples} fresh draws of p_0, and position between -x (0) and the exact score (1); "
                      "exact = the sampler's discretisation floor, p0 = a second fresh sample of p_0 (the "
                      "finite-sample floor)", scores, SCORE_COLUMNS),
                table("diffusion_training", "Denoiser training (full-batch GD, lr = 1/lambda_max, early stopping "
                      "on held-out pairs)", training, TRAINING_COLUMNS),
                table("diffusion_curves", "Learning curves: each network at every (n, m) of the grid (one seed "
                      "each), with what ended its training", curves, CURVE_COLUMNS), *kernel_report.tables],
            plots=[*sample_plots(config, base, learned),
                   Plot("diffusion_curves", "Learning curves: score error, W2 and MMD^2 of each network against "
                        f"width m at n = {cfg.n} (top) and against the number of draws n at m = {cfg.width} "
                        "(bottom), one seed per point; dashed: the exact score's value (the sampler's floor), "
                        "dotted: a fresh sample of p_0 (the finite-sample floor), both at the main point.",
                        curve_figure(curves, slopes, base, study, cfg)), *kernel_report.plots],
            facts=facts(scores, slopes, study, cfg) + kernel_report.facts)


def score_rows(learned: dict[str, LearnedRecord], base: BaselinesRecord) -> list[ScoreRow]:
    """The networks' rows (with their position between -x and the exact score), then exact, trivial, p0."""
    exact, trivial = base.scores.get("exact"), base.scores["trivial"]
    rows = [ScoreRow.of(a, r.metrics, experiment.between(asdict(r.metrics), exact and asdict(exact.metrics),
                                                          asdict(trivial.metrics))) for a, r in learned.items()]
    rows += [ScoreRow.of(name, m.metrics) for name, m in base.scores.items()]
    return rows + [ScoreRow.of("p0", base.p0)]


def facts(scores: list[ScoreRow], slopes: dict, study, cfg) -> list[Fact]:
    """Per activation: the score error at the main point (95% Monte Carlo interval, ± 1.96 se), the samples'
    precision and recall there, and the score error's slope in m."""
    at = f"n = {cfg.n}, m = {cfg.width}"
    named = {r.score: r for r in scores}
    out = []
    for row in (named[a] for a in study.activations):
        if row.score_error == row.score_error:
            half = 1.96 * row.score_error_se
            out.append(Fact(row.score, f"diffusion score error ({at})", row.score_error, row.score_error - half,
                            row.score_error + half))
        if row.precision == row.precision:
            out += [Fact(row.score, f"diffusion samples' precision ({at})", row.precision),
                    Fact(row.score, f"diffusion samples' recall ({at})", row.recall)]
        out.append(Fact(row.score, f"diffusion score error slope in m (n = {cfg.n})",
                        slopes[row.score, "m", "score error"]))
    return out


def series(rows: list[CurveRow], activation: str, axis: str, cfg: Config) -> list[CurveRow]:
    """The rows of one curve: over m at n = cfg.n (axis "m") or over n at m = cfg.width (axis "n")."""
    if axis == "m":
        return sorted((r for r in rows if r.activation == activation and r.n == cfg.n and r.width in cfg.widths),
                      key=lambda r: r.width)
    return sorted((r for r in rows if r.activation == activation and r.width == cfg.width and r.n in cfg.ns),
                  key=lambda r: r.n)


def curve_slopes(rows: list[CurveRow], study, cfg: Config) -> dict:
    """{(activation, axis, metric): least-squares log-log slope of the metric against m or n} (NaN where
    fewer than two points are positive; one seed per point, so no interval)."""
    slopes = {}
    for activation in study.activations:
        for axis, along in AXES.items():
            line = series(rows, activation, axis, cfg)
            for name, metric in CURVE_METRICS.items():
                points = [(getattr(r, along), getattr(r, metric)) for r in line if getattr(r, metric) > 0]
                slopes[activation, axis, name] = fit_power_law(*zip(*points))[0] if len(points) > 1 else float("nan")
    return slopes


# ------------------------------------------------------------------------------------ figures


def sample_plots(config: DiffusionConfig, base: BaselinesRecord, learned: dict[str, LearnedRecord]) -> list[Plot]:
    """Samples, score error against t (exact data), training curves and score field (2-D data)."""
    reference = np.asarray(base.reference, dtype=float)
    samples = {name: np.asarray(m.samples, dtype=float)
               for name, m in {**{a: r.measurement for a, r in learned.items()}, **base.scores}.items()}
    title = (f"samples against the truth ({config.data}, n = {config.n}, m = {config.training.width}, "
             f"{config.sampler} sampler with {config.sampler_steps} steps)")
    plots = [Plot("diffusion_samples", f"{config.n_samples} samples from each score, first two coordinates, beside "
                  "fresh draws of p_0: each network's Tweedie score, the exact score (what the sampler gives with no "
                  "score error) and -x (the score of N(0, I)).", figures.plot_samples(reference, samples, title))]
    truth = parse_data(config.data)
    exact_data = isinstance(truth, GaussianMixture)
    if exact_data:
        curves = {name: m.curve.as_curve()
                  for name, m in {**{a: r.measurement for a, r in learned.items()}, **base.scores}.items()}
        plots.append(Plot("diffusion_score_error", "Score error E_(p_t)||s - grad log p_t||^2 against t (left) and "
                          "weighted by h_t (right; its mean over t is the score error), "
                          f"{config.curve_samples} draws per t, ± 2 standard errors.",
                          figures.plot_score_error(curves)))
    bayes = next(iter(learned.values())).bayes_val_loss
    plots.append(Plot("diffusion_training", "Denoiser training: mean ||F - x_0||^2 on the training pairs (solid) and "
                      "the held-out pairs (dashed) against GD step; dotted: the kept (best held-out) step; "
                      "dash-dotted: the exact denoiser's held-out loss.",
                      figures.plot_training({a: r.training.curves for a, r in learned.items()}, bayes)))
    fields = {a: np.asarray(r.field, dtype=float) for a, r in learned.items() if r.field is not None}
    if fields:
        points = figures.field_grid(figures.plot_limits(reference))
        true_field = figures.evaluate_field(truth.score, points, config.quiver_times) if exact_data else None
        plots.append(Plot("diffusion_score_field", "Learned score field (colour) over the true one (black) at a few "
                          "t; arrows share one scale per panel, set by the true field.",
                          figures.plot_score_field(points, config.quiver_times, fields, true_field)))
    return plots


def curve_figure(rows: list[CurveRow], slopes: dict, base: BaselinesRecord, study, cfg: Config):
    fig, axes = plots.figure(2, 3, size=(15, 8))
    exact = base.scores.get("exact")
    floors = {"W2": [exact and exact.metrics.w2, base.p0.w2], "MMD^2": [exact and exact.metrics.mmd, base.p0.mmd]}
    for row_axes, (axis, along), label in zip(axes, AXES.items(), ("width m", "draws n")):
        for ax, (name, metric) in zip(row_axes, CURVE_METRICS.items()):
            for activation in study.activations:
                line = series(rows, activation, axis, cfg)
                ax.plot([getattr(r, along) for r in line], [getattr(r, metric) for r in line], marker="o",
                        color=resolve(activation).color,
                        label=f"{activation}: slope {slopes[activation, axis, name]:+.2f}")
            for value, style in zip(floors.get(name, []), ("--", ":")):
                if value is not None and value > 0:
                    ax.axhline(value, color="grey", ls=style, lw=1)
            ax.set(xscale="log", yscale="log", xlabel=label, ylabel=name)
            plots.finish(ax, legend=7)
    return fig


# ------------------------------------------------------------------------------------ reading


def _listing(values: dict, digits: str = ".3g") -> str:
    return ", ".join(f"{name} {format(value, digits)}" for name, value in values.items())


def _position(value: float) -> str:
    if value != value:
        return "position undefined"
    if value < 0:
        return f"{value:.2f}: worse than -x"
    return f"{value:.2f} of the way from -x to exact"


def reading(scores: list[ScoreRow], training: list[TrainingRow], learned: dict[str, LearnedRecord],
            base: BaselinesRecord, config: DiffusionConfig) -> list[str]:
    named = {r.score: r for r in scores}
    rows = {a: named[a] for a in learned}
    exact, trivial, p0 = named.get("exact"), named["trivial"], named["p0"]
    text = []
    if exact is not None:
        text.append(_score_error_reading(rows, trivial, config))
        text.append(_curve_reading(learned, base.scores["trivial"].curve))
    else:
        text.append(f"{config.data} is known only through samples: there is no exact score, so neither the score "
                    "error, nor the likelihood, nor the exact-score baseline could be measured.")
    text.append(_sample_reading(rows, exact, trivial, p0, config))
    if exact is not None:
        text.append(
            f"Under the true p_0: the negative log-likelihood per sample was {p0.nll:.3g} for fresh draws, "
            f"{exact.nll:.3g} with the exact score, {trivial.nll:.3g} with -x, and "
            f"{_listing({a: r.nll for a, r in rows.items()})} with the networks. Recovered mixture weights (total "
            f"variation to the true weights): p_0 {p0.weight_error:.3g}, exact {exact.weight_error:.3g}, -x "
            f"{trivial.weight_error:.3g}, {_listing({a: r.weight_error for a, r in rows.items()})}.")
    text.append(_training_reading(rows, training, exact is not None, config))
    return text


def _score_error_reading(rows: dict[str, ScoreRow], trivial: ScoreRow, config: DiffusionConfig) -> str:
    described = "; ".join(f"{a} {r.score_error:.3g} ± {r.score_error_se:.2g} ({_position(r.between_score_error)})"
                          for a, r in rows.items())
    text = (f"Score error E_t h_t E_(p_t)||s - grad log p_t||^2 over t ~ U[{config.t0:g}, {config.T:g}] "
            f"({config.n_score} draws, the same for every score): -x scored {trivial.score_error:.3g} ± "
            f"{trivial.score_error_se:.2g}, the exact score 0. The networks (m = {config.training.width}, "
            f"trained on n = {config.n} draws of {config.data}): {described}.")
    ordered = sorted(rows, key=lambda a: rows[a].score_error)
    if len(ordered) > 1:
        best, second, worst = (rows[a] for a in (ordered[0], ordered[1], ordered[-1]))
        gap = second.score_error - best.score_error
        noise = math.hypot(best.score_error_se, second.score_error_se)
        text += (f" {best.score} had the lowest score error, {worst.score_error / best.score_error:.2g}x below "
                 f"{worst.score}; its lead over {second.score} was {gap:.2g}, {gap / noise:.1f} combined standard "
                 "errors.")
    return text


def _curve_reading(learned: dict[str, LearnedRecord], trivial_curve: Curve) -> str:
    times, trivial = np.asarray(trivial_curve.times), np.asarray(trivial_curve.value, dtype=float)
    parts = []
    for activation, record in learned.items():
        value = np.asarray(record.measurement.curve.value, dtype=float)
        above = times[value >= trivial]
        where = f" (at or above it at t = {', '.join(f'{t:.2g}' for t in above)})" if len(above) else ""
        parts.append(f"{activation} below -x's at {len(value) - len(above)} of {len(value)} times{where}, largest "
                     f"at t = {times[int(np.argmax(value))]:.2g} ({value.max():.3g})")
    return "Per t, the unweighted error E_(p_t)||s - grad log p_t||^2 (figure) was: " + "; ".join(parts) + "."


def _sample_reading(rows: dict[str, ScoreRow], exact: ScoreRow | None, trivial: ScoreRow, p0: ScoreRow,
                    config: DiffusionConfig) -> str:
    text = (f"Samples ({config.n_samples} per score, {config.sampler} sampler, {config.sampler_steps} steps from "
            f"t = {config.T:g} down to t0 = {config.t0:g}) against {config.n_samples} fresh draws of p_0. W2: a "
            f"second fresh sample of p_0 (the finite-sample floor) {p0.w2:.3g}")
    if exact is not None:
        text += (f", the exact score {exact.w2:.3g} (the sampler's discretisation floor, "
                 f"{exact.w2 / p0.w2:.2g}x the p_0 floor)")
    positions = {a: (f" ({_position(r.between_w2)})" if r.between_w2 == r.between_w2 else "") for a, r in rows.items()}
    text += f", -x {trivial.w2:.3g}; " + "; ".join(f"{a} {r.w2:.3g}{positions[a]}" for a, r in rows.items())
    closest = min(rows, key=lambda a: rows[a].w2)
    text += f". {closest} came closest in W2"
    if exact is not None and rows[closest].w2 < exact.w2:
        text += (f", {exact.w2 - rows[closest].w2:.2g} below the exact score (W2 between two samples of p_0 "
                 f"is {p0.w2:.3g} here, so differences of that size are within sampling noise)")
    return (text + f". MMD^2 (Gaussian kernel, median-distance width): p_0 {p0.mmd:.2g}"
            + (f", exact {exact.mmd:.2g}" if exact is not None else "")
            + f", -x {trivial.mmd:.2g}, " + _listing({a: r.mmd for a, r in rows.items()}, ".2g") + ".")


def _training_reading(rows: dict[str, ScoreRow], training: list[TrainingRow], exact_data: bool,
                      config: DiffusionConfig) -> str:
    bayes = training[0].exact_denoiser if exact_data else None
    parts = [f"{t.activation} {t.held_out_loss:.4g}" + ("" if bayes is None else f" (excess {t.excess:+.3g})")
             + f" at step {t.kept_step} of {t.steps}" for t in training]
    text = "Held-out loss mean ||F - x_0||^2 of the kept network"
    if bayes is not None:
        text += (f", against {bayes:.4g} for the exact denoiser E[x_0 | x_t, t] on the same held-out pairs (the "
                 "floor: the labels x_0 are noisy)")
    text += ": " + "; ".join(parts) + "."
    budget = config.training.steps
    kept_last = [t.activation for t in training if t.kept_step == budget]
    stopped = [f"{t.activation} at step {t.steps}" for t in training if t.steps < budget]
    if kept_last:
        text += (f" {', '.join(kept_last)} kept the last step of the {budget}-step budget: the held-out "
                 "loss was still falling when training stopped.")
    if stopped:
        text += f" Early stopping ended {', '.join(stopped)}."
    if config.training.time_law == "matched" and bayes is not None and len(training) > 1:
        by_loss = [t.activation for t in sorted(training, key=lambda t: t.held_out_loss)]
        by_error = sorted(rows, key=lambda a: rows[a].score_error)
        text += (" Training times follow the matched law, under which the expected excess loss is proportional to "
                 f"the score error; the order by held-out loss ({', '.join(by_loss)}) "
                 + ("matches" if by_loss == by_error else "differs from")
                 + f" the order by measured score error ({', '.join(by_error)}).")
    return text


def _endings(rows: list[CurveRow]) -> str:
    """What ended the trainings of `rows`, each reason once with its count (the points named where few)."""
    unique = {(r.n, r.width): r for r in rows}
    reasons = {}
    for (n, m), r in unique.items():
        reasons.setdefault(r.ended_by, []).append(f"(n = {n}, m = {m})")
    return "Training ended by: " + "; ".join(
        f"{reason} at {len(points)} of {len(unique)} points" + (f" {', '.join(points)}" if len(points) <= 2 else "")
        for reason, points in reasons.items()) + "."


def learning_curve_reading(rows: list[CurveRow], slopes: dict, base: BaselinesRecord, study, cfg: Config) -> list[str]:
    text = []
    for activation in study.activations:
        by_m, by_n = series(rows, activation, "m", cfg), series(rows, activation, "n", cfg)
        text.append(
            f"{activation} learning curves (one seed per point): score error {by_m[0].score_error:.3g} at m = "
            f"{by_m[0].width} to {by_m[-1].score_error:.3g} at m = {by_m[-1].width} (slope "
            f"{slopes[activation, 'm', 'score error']:+.2f}), W2 slope {slopes[activation, 'm', 'W2']:+.2f}, MMD^2 "
            f"slope {slopes[activation, 'm', 'MMD^2']:+.2f} in m; score error {by_n[0].score_error:.3g} at n = "
            f"{by_n[0].n} to {by_n[-1].score_error:.3g} at n = {by_n[-1].n} (slope "
            f"{slopes[activation, 'n', 'score error']:+.2f}), W2 slope {slopes[activation, 'n', 'W2']:+.2f}, MMD^2 "
            f"slope {slopes[activation, 'n', 'MMD^2']:+.2f} in n. " + _endings(by_m + by_n))
    widest = max(cfg.widths + (cfg.width,))
    p0, exact = base.p0, base.scores.get("exact")
    if p0.precision is None:
        return text
    floor = p0.precision
    parts = []
    for activation in study.activations:
        row = next(r for r in rows if r.activation == activation and r.n == cfg.n and r.width == widest)
        separated = row.precision >= floor - 0.05 and row.recall == 1.0
        verdict = ("separates the modes" if separated else
                   f"bridges them: {1 - row.precision:.1%} of its samples lie more than 3 standard deviations from "
                   f"every mode (fresh draws of p_0: {1 - floor:.1%}), recall {row.recall:.2f}; its training ended "
                   f"by {row.ended_by} at step {row.steps} with held-out loss {row.held_out_loss:.4g}")
        parts.append(f"{activation} precision {row.precision:.3f}, recall {row.recall:.2f}: {verdict}")
    if len(rows) > 2:
        rho = spearmanr([r.precision for r in rows], [r.held_out_loss for r in rows])[0]
        text.append(f"Over all {len(rows)} learning-curve runs, precision and held-out loss had Spearman rank "
                    f"correlation {rho:+.2f}" + (": the runs that fit the denoiser better put fewer samples between "
                                                 "the modes." if rho < -0.5 else "."))
    text.append(f"Mode separation by the widest networks (m = {widest}, n = {cfg.n}), against fresh draws of p_0 "
                f"(precision {floor:.3f}, recall {p0.recall:.2f})"
                + (f" and the exact score (precision {exact.metrics.precision:.3f}, recall "
                   f"{exact.metrics.recall:.2f})" if exact is not None else "") + ": " + "; ".join(parts) + ".")
    return text


# ------------------------------------------------------------------------ the kernel comparison (issue 23)


def _cell(value):
    return "" if value is None else value


KERNEL_COLUMNS = [(name, (lambda r, name=name: _cell(getattr(r, name)))) for name in KERNEL_FIELDS]
COUPLING_COLUMNS = [("activation", "activation"), ("n", "n"), ("m", "m"), ("step", "step"),
                    ("RMS distance", "distance"), ("relative", "relative"), ("score gap", "score_gap"),
                    ("± se", "score_gap_stderr")]


def _distance_slope(links: list[Coupling]):
    usable = [link for link in links if link.distance > 0]
    return fitted_slope([l.m for l in usable], [l.distance for l in usable]) if len(usable) > 1 else None


def kernel_parts(kernel: dict[str, KernelRecord], links: dict[str, list[Coupling]], slopes: dict,
                 base: BaselinesRecord, cfg: Config) -> Report:
    """Tables, figures, reading and facts of the kernel comparison."""
    rows = [row for record in kernel.values() for row in record.rows]
    reading = []
    for activation, record in kernel.items():
        twin = next(r for r in record.rows if r.predictor == "twin_theta0")
        link, slope = record.coupling, slopes[activation]
        budget = f"{cfg.steps / twin.t_star:.2g} t*" if twin.t_star else "no t*"
        reading.append(
            f"{activation}, the network against its Theta(W(0)) twin at the kept step {link.step}: RMS distance "
            f"{link.distance:.3g} ({link.relative:.2%} of the twin's output), score gap {link.score_gap:.3g} ± "
            f"{link.score_gap_stderr:.2g}; against m the distance fell as m^{slope.exponent:+.2f} over m = "
            f"{', '.join(str(l.m) for l in links[activation])}" if slope is not None else
            f"{activation}: network-twin distance {link.distance:.3g} at m = {link.m}")
        reading[-1] += (f". The twin's held-out loss is least at t* = {twin.t_star:.3g} steps"
                        + (" (still falling at the end of the scan)" if twin.at_limit else "")
                        + f"; the {cfg.steps}-step budget is {budget}, so "
                        + ("the budget cut the network before the stopping time its kernel sets, and the twin "
                           "gives the long-time limit." if cfg.steps < twin.t_star else
                           "the budget reached the stopping time its kernel sets."))
        reading.append(bridging_reading(record.rows, cfg.samples))
    reference = np.asarray(base.reference, dtype=float)
    fig = sample_grid(reference, kernel)
    plots = [Plot("diffusion_kernel_samples", f"{cfg.samples} samples from each network (left), its Theta(W(0)) "
                  "twin and its H* twin at t* (at n and at the larger n), and the exact posterior mean (right), one "
                  "row per activation, over fresh draws of p_0 (grey).", fig),
             Plot("diffusion_twin_distance", "RMS distance between each network and its Theta(W(0)) twin at the "
                  "network's kept step over the held-out inputs, against width m at n = "
                  f"{cfg.n}, with the fitted power law.", figures.plot_twin_distance(links, slopes))]
    tables = [table("diffusion_kernel", "Each network beside its kernel twins (early-stopped kernel regression "
                    "on the same pairs, stopped at the t* of the held-out loss) and the exact posterior mean: stop "
                    "step, held-out loss (the H* twin at the larger n has its own held-out pairs), score error, "
                    "precision, recall, and the network's RMS distance to its Theta(W(0)) twin at the same step",
                    rows, KERNEL_COLUMNS),
              table("diffusion_twin_distance", "Network against its Theta(W(0)) twin at the network's kept step, "
                    "per width: RMS distance over the held-out inputs, relative to the twin's output, and the "
                    "weighted score error between the two scores", [l for ls in links.values() for l in ls],
                    COUPLING_COLUMNS)]
    facts = [Fact(a, f"diffusion network-twin distance slope in m (n = {cfg.n})", s.exponent)
             for a, s in slopes.items() if s is not None]
    return Report(reading=reading, tables=tables, plots=plots, facts=facts)


def sample_grid(reference: np.ndarray, kernel: dict[str, KernelRecord]):
    """Samples of every predictor, one row per activation, over the reference draws."""
    columns = max(len(record.rows) for record in kernel.values())
    fig, axes = plots.figure(len(kernel), columns, size=(2.8 * columns, 2.9 * len(kernel)), sharex=True,
                             sharey=True, squeeze=False)
    x0, x1, y0, y1 = figures.plot_limits(reference)
    for ax_row, (activation, record) in zip(axes, kernel.items()):
        for ax, row in zip(ax_row, record.rows):
            points = np.asarray(row.samples, dtype=float)
            finite = np.isfinite(points).all(1)
            ax.scatter(reference[:, 0], reference[:, 1], s=1, color="0.85")
            color = "black" if row.predictor == "posterior_mean" else resolve(activation).color
            ax.scatter(points[finite, 0], points[finite, 1], s=2, alpha=0.5, color=color)
            ax.set_title(f"{activation} {row.predictor} (n = {row.n})\nprecision {row.precision:.2f}", fontsize=8)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_aspect("equal")
    return fig


SECTION = Diffusion()
