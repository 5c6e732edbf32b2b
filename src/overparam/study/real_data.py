"""Section: real data, scikit-learn's handwritten digits, true against random labels (ADHLW19).

ADHLW19 (Figure 1, Section 6) showed on MNIST and CIFAR that gradient descent fits true labels faster
than random ones and that the complexity term sqrt(2 y^T (H*)^{-1} y / n) is much smaller for true
labels (docs/mathematics.md#generalisation). Here on the digits (`data.digits`: d = 64, centred, on the
unit sphere), per activation:

- GD at one width on true labels and on random labels (the same inputs; y_i drawn uniformly from
  the label values), every seed trained in one batch: steps to tol and the loss curve;
- the complexity term against n, true labels against random ones (mean over label draws), and
  lambda_min(H*) of the digits beside the sphere's at the same n and d;
- the optimisation threshold m*_opt (docs/mathematics.md#thresholds; width sweeps in runs.db, one
  `sweeps.SweepSlice` per data set, activation and n) on the digits beside the sphere's.
For exp and softmax the complexity term is the same form applied to their kernels; no theorem states it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import activations, data, plots
from ..training.batched import train_batched
from ..kernels.regime import complexity
from ..models import TwoLayerNet, initial_weights, pairs_neurons
from ..kernels.infinite import infinite_ntk
from ..sweep.analysis import Threshold, thresholds_from_rows
from .framework import Plot, Report, RunStatus, SectionConfig, StudySection, Unit, require_grid, require_positive, table
from .report import Fact
from .stats import mean_and_error
from .sweeps import SweepSlice

LABELS = ("true", "random")
DIGITS_D = 64
CURVE_POINTS = 1000


@dataclass(frozen=True)
class Config(SectionConfig):
    """scikit-learn's digits of `classes`, true against random labels (ADHLW19): training at one width
    and n; the complexity term and lambda_min(H*) at ns; m*_opt at threshold_ns with its own budget rule."""

    classes: tuple[int, ...] = (3, 5)
    ns: tuple[int, ...] = (32, 64, 128, 256)
    label_draws: int = 5
    train_n: int = 64
    width: int = 256
    seeds: int = 4
    steps: int = 2000
    threshold_ns: tuple[int, ...] = (32, 64)
    threshold_widths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    threshold_seeds: int = 4
    budget: str = "theory:3"
    max_steps: int = 4000

    def check(self) -> None:
        if len(set(self.classes)) < 2 or any(not 0 <= c <= 9 for c in self.classes):
            raise ValueError(f"classes must be at least two distinct digits 0-9, got {list(self.classes)}")
        require_grid("ns", self.ns)
        require_grid("threshold_ns", self.threshold_ns)
        require_grid("threshold_widths", self.threshold_widths)
        for name in ("label_draws", "train_n", "width", "seeds", "steps", "threshold_seeds", "max_steps"):
            require_positive(name, getattr(self, name))


def digits_spec(classes) -> str:
    """The --data spec of the section's digits, e.g. digits:classes=3,5."""
    return "digits:classes=" + ",".join(map(str, classes))


def random_labels(y: np.ndarray, seed: int, draw: int) -> np.ndarray:
    """Labels drawn independently and uniformly from the distinct rows of y (+-1, or one-hot rows)."""
    values = np.unique(y, axis=0)
    return values[np.random.default_rng([seed, draw]).integers(len(values), size=len(y))]


# ------------------------------------------------------------------------------------- units


@dataclass
class LabelRun(RunStatus):
    """One seed's GD run on one kind of labels: status, steps taken, lr, the squared residual curve."""

    labels: str
    seed: int
    status: str
    steps: int = 0
    lr: float = float("nan")
    step: list[int] | None = None
    loss2: list[float] | None = None
    final_residual: float = float("nan")
    error: str = ""


@dataclass
class DigitsTraining:
    n: int
    width: int
    runs: list[LabelRun]


@dataclass(frozen=True)
class DigitsRun(Unit):
    """GD on the digits' true labels and on random labels (draw 0), seeds 0..seeds-1, as one batch."""

    RECORD = DigitsTraining

    activation: str
    classes: tuple[int, ...]
    n: int
    width: int
    seeds: int
    steps: int
    tol: float
    init: str
    sigma: float
    data_seed: int

    def compute(self, ctx) -> DigitsTraining:
        device = ctx.device
        dataset = data.digits(self.classes, n=self.n, seed=self.data_seed)
        seeds, width, n, k = self.seeds, self.width, dataset.n, dataset.k
        targets = {"true": dataset.y, "random": random_labels(dataset.y, self.data_seed, 0)}
        W0, a = initial_weights(width, DIGITS_D, k, self.init, self.sigma, range(seeds), device=device)
        kappa = TwoLayerNet(DIGITS_D, width, k, self.activation, init=self.init, sigma=self.sigma).kappa
        X = torch.from_numpy(dataset.X).to(device).expand(len(LABELS) * seeds, n, DIGITS_D)
        y = torch.stack([torch.from_numpy(targets[labels]) for labels in LABELS for _ in range(seeds)]).to(device)
        histories = train_batched(X, y, W0.repeat(len(LABELS), 1, 1), a.repeat(len(LABELS), 1, 1), self.activation,
                                  kappa, lr="auto", steps=self.steps, tol=self.tol,
                                  record_every=max(1, self.steps // CURVE_POINTS),
                                  paired=pairs_neurons(self.init, width))
        runs = []
        for index, history in enumerate(histories):
            labels, seed = LABELS[index // seeds], index % seeds
            if isinstance(history, Exception):
                runs.append(LabelRun(labels, seed, "failed", error=str(history)))
                continue
            runs.append(LabelRun(labels, seed, history.status, history.steps, history.lr, history.step.tolist(),
                                 (history.residual_norm**2).tolist(), float(history.residual_norm[-1])))
        return DigitsTraining(n, width, runs)


@dataclass
class DigitsKernel:
    """The complexity term for the true labels and for each random draw; lambda_min(H*) on the digits and
    on the sphere at the same n and d (NaN where H* is not finite or not positive definite)."""

    complexity_true: float
    complexity_random: list[float]
    lambda_digits: float
    lambda_sphere: float


@dataclass(frozen=True)
class DigitsKernelUnit(Unit):
    """H* (docs/mathematics.md#ntk) of the first n digits and of n points on the sphere in d = 64."""

    RECORD = DigitsKernel

    activation: str
    classes: tuple[int, ...]
    n: int
    label_draws: int
    sigma: float
    data_seed: int

    def compute(self, ctx) -> DigitsKernel:
        dataset = data.digits(self.classes, n=self.n, seed=self.data_seed)
        H = infinite_ntk(self.activation, torch.from_numpy(dataset.X), self.sigma).numpy()
        sphere = infinite_ntk(self.activation, torch.from_numpy(data.unit_sphere(self.n, DIGITS_D, self.data_seed)),
                              self.sigma).numpy()
        return DigitsKernel(_complexity(H, dataset.y),
                            [_complexity(H, random_labels(dataset.y, self.data_seed, j))
                             for j in range(self.label_draws)],
                            _lambda_min(H), _lambda_min(sphere))


def _complexity(H: np.ndarray, y: np.ndarray) -> float:
    """NaN where H* is not positive definite (the term is then infinite; the reading says so)."""
    try:
        return complexity(H, y)
    except ValueError:
        return float("nan")


def _lambda_min(H: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(H)[0]) if np.isfinite(H).all() else float("nan")


def sweep_slices(study, cfg) -> dict[str, list[SweepSlice]]:
    """The width sweeps of the threshold part, {data name: slices}: the digits and the sphere at the same n and
    d = 64, the section's own budget rule capped at its max_steps."""
    k = 1 if len(cfg.classes) == 2 else len(cfg.classes)
    return {name: [SweepSlice(a, n, cfg.threshold_widths, DIGITS_D, k, cfg.threshold_seeds, study.init, spec,
                              study.seed, study.sigma, study.tol, cfg.budget, cfg.max_steps)
                   for a in study.activations for n in cfg.threshold_ns]
            for name, spec in (("digits", digits_spec(cfg.classes)), ("sphere", "sphere"))}


# ------------------------------------------------------------------------------------ tables


@dataclass
class TrainingRow:
    activation: str
    labels: str
    converged: int
    runs: int
    steps: float
    steps_se: float
    final_residual: float
    lr: float

    @property
    def converged_text(self) -> str:
        return f"{self.converged}/{self.runs}"


@dataclass
class ComplexityRow:
    activation: str
    n: int
    true: float
    random: float
    random_se: float
    lambda_digits: float
    lambda_sphere: float

    @property
    def ratio(self) -> float:
        return self.random / self.true

    @property
    def sphere_over_digits(self) -> float:
        return self.lambda_sphere / self.lambda_digits


@dataclass
class DataThreshold:
    """m*_opt on one data set with its interval; cut: runs the step cap ended unconverged, of runs."""

    width: float
    low: float
    high: float
    cut: int
    runs: int

    @property
    def cut_text(self) -> str:
        return f"{self.cut}/{self.runs}"


@dataclass
class ThresholdRow:
    activation: str
    n: int
    digits: DataThreshold
    sphere: DataThreshold


TRAINING_COLUMNS = [("activation", "activation"), ("labels", "labels"), ("converged", "converged_text"),
                    ("steps", "steps"), ("± se", "steps_se"), ("final ||F - y||", "final_residual"), ("lr", "lr")]
COMPLEXITY_COLUMNS = [("activation", "activation"), ("n", "n"), ("complexity true", "true"),
                      ("complexity random", "random"), ("± se", "random_se"), ("random / true", "ratio"),
                      ("lambda_min digits", "lambda_digits"), ("lambda_min sphere", "lambda_sphere"),
                      ("sphere / digits", "sphere_over_digits")]
THRESHOLD_COLUMNS = [("activation", "activation"), ("n", "n"),
                     *((header, lambda r, name=name, part=part: getattr(getattr(r, name), part))
                       for name in ("digits", "sphere")
                       for header, part in (("m* " + name, "width"), ("low", "low"), ("high", "high"),
                                            ("cut " + name, "cut_text")))]


class RealDataSection(StudySection):
    KEY, TITLE, Config = "real_data", "(h) Real data: handwritten digits, true against random labels (ADHLW19)", Config

    def units(self, study, cfg) -> list[Unit]:
        own = []
        for a in study.activations:
            own.append(DigitsRun(a, cfg.classes, cfg.train_n, cfg.width, cfg.seeds, cfg.steps, study.tol, study.init,
                                 study.sigma, study.seed))
            own += [DigitsKernelUnit(a, cfg.classes, n, cfg.label_draws, study.sigma, study.seed) for n in cfg.ns]
        return own + [s for slices in sweep_slices(study, cfg).values() for s in slices]

    def report(self, study, cfg, records) -> Report:
        training = {u.activation: r for u, r in records.items() if isinstance(u, DigitsRun)}
        training_rows = [row for a in study.activations for row in training_table(a, training[a])]
        kernel_rows = [kernel_row(u.activation, u.n, r) for u, r in records.items() if isinstance(u, DigitsKernelUnit)]
        threshold_rows = threshold_table(study, cfg, {name: [records[s] for s in slices]
                                                      for name, slices in sweep_slices(study, cfg).items()})
        failed = sum(not run.ok for r in training.values() for run in r.runs) + sum(
            r.failed for u, r in records.items() if isinstance(u, SweepSlice))
        largest = {r.activation: r for r in kernel_rows}  # the last row per activation: its largest n
        return Report(
            reading=_reading(study, cfg, training_rows, kernel_rows, threshold_rows, failed),
            tables=[
                table("real_data_training", "GD on true and random labels (means over seeds; steps count the budget "
                      "for a seed that did not reach tol)", training_rows, TRAINING_COLUMNS),
                table("real_data_complexity", "Complexity term and lambda_min(H*) against n (random: mean over "
                      f"{cfg.label_draws} label draws)", kernel_rows, COMPLEXITY_COLUMNS),
                table("real_data_thresholds", f"Optimisation threshold m*_opt (rate >= {1 - study.delta:g}, bootstrap "
                      f"95% interval) on the digits and on the sphere, d = 64, widths {list(cfg.threshold_widths)}; "
                      f"cut: runs that reached the step cap {cfg.max_steps} unconverged / runs", threshold_rows,
                      THRESHOLD_COLUMNS)],
            plots=[
                Plot("real_data_training", f"Squared residual against step on {cfg.train_n} digits "
                     f"({', '.join(map(str, cfg.classes))}), m = {cfg.width}: true labels (solid) and random "
                     "labels (dashed), every seed; grey: tol^2.", _training_figure(study, cfg, training)),
                Plot("real_data_kernels", "Left: the complexity term sqrt(2 y^T (H*)^-1 y / n) against n, true labels "
                     "(solid) and random labels (dashed, mean over draws). Middle: lambda_min(H*) on the digits (solid) "
                     "and on the sphere at the same n and d = 64 (dashed). Right: the optimisation threshold m*_opt "
                     "on the digits (solid) and on the sphere (dashed); open triangles: beyond the width grid.",
                     _kernels_figure(study, cfg, kernel_rows, threshold_rows))],
            facts=[Fact(a, f"complexity random / true on digits at n = {largest[a].n}", largest[a].ratio)
                   for a in study.activations if a in largest])


def training_table(activation: str, record: DigitsTraining) -> list[TrainingRow]:
    rows = []
    for labels in LABELS:
        runs = [r for r in record.runs if r.labels == labels and r.ok]
        if runs:
            rows.append(TrainingRow(activation, labels, sum(r.status == "converged" for r in runs), len(runs),
                                    *mean_and_error([r.steps for r in runs]),
                                    float(np.mean([r.final_residual for r in runs])),
                                    float(np.mean([r.lr for r in runs]))))
    return rows


def kernel_row(activation: str, n: int, record: DigitsKernel) -> ComplexityRow:
    random, error = mean_and_error(record.complexity_random)
    return ComplexityRow(activation, n, record.complexity_true, random, error, record.lambda_digits,
                         record.lambda_sphere)


def threshold_table(study, cfg, sweeps: dict) -> list[ThresholdRow]:
    """m*_opt per (data, activation, n) from the sweeps' runs, fitted per data set, and the runs the step cap
    ended unconverged (status max_steps with a budget at the cap)."""
    found: dict[tuple, DataThreshold] = {}
    for name, records in sweeps.items():
        runs = [run for record in records for run in record.runs]
        fitted: list[Threshold] = thresholds_from_rows([run.as_row() for run in runs], study.delta, seed=study.seed,
                                                       kinds=("optimization",)).thresholds
        by_family = {(t.family["activation"], t.family["n"]): t for t in fitted}
        for a in study.activations:
            for n in cfg.threshold_ns:
                mine = [run for run in runs if run.config["activation"] == a and run.config["n"] == n]
                cut = sum(run.status == "max_steps" and run.budget >= cfg.max_steps for run in mine)
                t = by_family.get((a, n))
                found[name, a, n] = DataThreshold(*((t.width, t.low, t.high) if t is not None else (math.nan,) * 3),
                                                  cut, len(mine))
    return [ThresholdRow(a, n, found["digits", a, n], found["sphere", a, n])
            for a in study.activations for n in cfg.threshold_ns]


def _training_figure(study, cfg, training: dict):
    fig, axes = plots.figure(1, len(study.activations), size=(5 * len(study.activations), 4), squeeze=False)
    for ax, activation in zip(axes[0], study.activations):
        for labels, style in zip(LABELS, ("-", "--")):
            runs = [r for r in training[activation].runs if r.labels == labels and r.ok]
            for i, r in enumerate(runs):
                ax.semilogy(r.step, r.loss2, color=activations.resolve(activation).color, ls=style, lw=1.1,
                            label=f"{labels} labels" if i == 0 else None)
        ax.axhline(study.tol**2, color="grey", lw=0.8)
        ax.set(xlabel="step t", ylabel=r"$\|F(t) - y\|_2^2$",
               title=f"{activation}, digits n = {cfg.train_n}, m = {cfg.width}")
        plots.finish(ax)
    return fig


def _kernels_figure(study, cfg, kernel_rows: list[ComplexityRow], threshold_rows: list[ThresholdRow]):
    fig, (left, middle, right) = plots.figure(1, 3, size=(15, 4.2))
    for activation in study.activations:
        mine = [r for r in kernel_rows if r.activation == activation]
        ns = [r.n for r in mine]
        color = activations.resolve(activation).color
        left.plot(ns, [r.true for r in mine], "o-", color=color, label=f"{activation} true")
        left.errorbar(ns, [r.random for r in mine], yerr=[r.random_se for r in mine], fmt="s--", color=color,
                      capsize=3, label=f"{activation} random")
        middle.plot(ns, [r.lambda_digits for r in mine], "o-", color=color, label=f"{activation} digits")
        middle.plot(ns, [r.lambda_sphere for r in mine], "s--", color=color, label=f"{activation} sphere")
        rows = [r for r in threshold_rows if r.activation == activation]
        for name, style in (("digits", "-"), ("sphere", "--")):
            inside = [(r.n, getattr(r, name)) for r in rows if math.isfinite(getattr(r, name).width)]
            if inside:
                m = np.array([t.width for _, t in inside])
                low = np.minimum([t.low for _, t in inside], m)
                high = np.array([t.high if math.isfinite(t.high) else t.width for _, t in inside])
                right.errorbar([n for n, _ in inside], m, yerr=[m - low, np.maximum(high - m, 0)], fmt="o",
                               ls=style, color=color, capsize=3, label=f"{activation} {name}")
            beyond = [r.n for r in rows if not math.isfinite(getattr(r, name).width)]
            if beyond:
                right.scatter(beyond, [max(cfg.threshold_widths)] * len(beyond), marker="^",
                              facecolors="none" if name == "digits" else color, edgecolors=color)
    for ax, ylabel in ((left, r"$\sqrt{2 y^T (H^*)^{-1} y / n}$"), (middle, r"$\lambda_{min}(H^*)$"),
                       (right, "m*_opt")):
        ax.set(xscale="log", yscale="log", xlabel="n (points)", ylabel=ylabel)
        plots.finish(ax, legend=7)
    return fig


def _reading(study, cfg, training_rows: list[TrainingRow], kernel_rows: list[ComplexityRow],
             threshold_rows: list[ThresholdRow], failed: int) -> list[str]:
    text = [f"Data: scikit-learn's digits of classes {', '.join(map(str, cfg.classes))} (8x8 images, d = 64), "
            "centred per pixel over those classes and projected to the unit sphere; random labels are drawn "
            "independently and uniformly from the same label values, on the same inputs. The complexity term is "
            "ADHLW19's Theorem 5.1 form for relu and the same form applied to the exp and softmax kernels (no "
            "theorem states it for them)."]
    if failed:
        text.append(f"{failed} run(s) failed and are left out of the tables; see `overparam results` on this "
                    "study's runs.db.")
    trains_faster, separates = [], []
    for activation in study.activations:
        pair = {r.labels: r for r in training_rows if r.activation == activation}
        if len(pair) == len(LABELS):
            true, rand = pair["true"], pair["random"]
            text.append(f"{activation}, GD at m = {cfg.width} on n = {cfg.train_n}: ||F - y|| <= "
                        f"{study.tol:g} took {true.steps:.0f} steps on true labels ({true.converged_text} seeds reached "
                        f"it within {cfg.steps}) against {rand.steps:.0f} on random labels ({rand.converged_text}): "
                        + (f"random labels took {rand.steps / true.steps:.2g}x as many." if true.steps > 0 else "."))
            if rand.steps > true.steps + 2 * math.hypot(true.steps_se, rand.steps_se):
                trains_faster.append(activation)
        mine = [r for r in kernel_rows if r.activation == activation]
        if mine:
            ratios = [r.ratio for r in mine]
            first, last = mine[0], mine[-1]
            text.append(f"{activation}: the complexity term was {first.true:.3g} (true) against {first.random:.3g} "
                        f"(random) at n = {first.n} and {last.true:.3g} against {last.random:.3g} at n = "
                        f"{last.n}; random / true ranged from {min(ratios):.2g} to {max(ratios):.2g} and "
                        + ("grew" if ratios[-1] > ratios[0] else "did not grow") + " with n. lambda_min(H*) of the "
                        f"digits was {min(r.sphere_over_digits for r in mine):.2g} to "
                        f"{max(r.sphere_over_digits for r in mine):.2g} times smaller than the sphere's at the same n "
                        "and d.")
            if all(r.random - 2 * r.random_se > r.true for r in mine):
                separates.append(activation)
        for r in (r for r in threshold_rows if r.activation == activation):
            text.append(f"{activation}, n = {r.n}: m*_opt = {_threshold(r.digits, cfg.threshold_widths)} on the "
                        f"digits (true labels) against {_threshold(r.sphere, cfg.threshold_widths)} on the sphere"
                        + _cut(r.digits, "digits") + _cut(r.sphere, "sphere") + ".")
    compared = [r for r in threshold_rows if math.isfinite(r.digits.width) or math.isfinite(r.sphere.width)]
    if compared:
        below = sum(r.digits.width < r.sphere.width for r in compared)
        above = sum(r.digits.width > r.sphere.width for r in compared)
        text.append(f"m*_opt on the digits was below the sphere's at {below}, equal at {len(compared) - below - above} "
                    f"and above at {above} of {len(compared)} (activation, n)"
                    + ("; runs cut by the step cap count as failures, so where they occur m* depends on the cap "
                       f"{cfg.max_steps} as well as on the width." if any(
                           r.digits.cut or r.sphere.cut for r in compared) else "."))
    ratios = {a: [r.ratio for r in kernel_rows if r.activation == a] for a in study.activations}
    for i, first in enumerate(study.activations):
        for second in study.activations[i + 1:]:
            if ratios[first] and len(ratios[first]) == len(ratios[second]) and np.allclose(
                    ratios[first], ratios[second], rtol=1e-9, atol=0):
                text.append(f"{first} and {second} gave the same random / true ratios at every n (to 1e-9): their "
                            "H* are proportional on these unit-norm inputs (docs/mathematics.md#ntk), and the term "
                            "scales out.")
    both = [a for a in study.activations if a in trains_faster and a in separates]
    missing = [a for a in study.activations if a not in both]
    text.append("The true-versus-random gap ADHLW19 reported on MNIST (random labels slower to fit by more than two "
                "standard errors, and a larger complexity term at every n by more than two standard errors of the "
                "label draws) "
                + (f"appears here for {', '.join(both)}" if both else "does not appear here for any activation")
                + (f"; not for {', '.join(missing)} (" + "; ".join(
                    f"{a}: " + ", ".join(w for w, ok in (("training", a in trains_faster),
                                                        ("complexity", a in separates)) if not ok)
                    + " gap missing" for a in missing) + ")" if missing else "") + ".")
    return text


def _cut(threshold: DataThreshold, name: str) -> str:
    return (f"; {threshold.cut} of {threshold.runs} {name} runs stopped unconverged at the step cap, before their "
            "theory budget") if threshold.cut else ""


def _threshold(threshold: DataThreshold, widths) -> str:
    """m* [low, high]; '<= w' at the smallest width w, 'beyond the grid (> w)' past the largest."""
    if math.isinf(threshold.width):
        return f"beyond the grid (> {max(widths)})"
    return (("<= " if threshold.width == min(widths) else "") + f"{_width(threshold.width)} "
            f"[{_width(threshold.low)}, {_width(threshold.high)}]")


def _width(value: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "beyond the grid" if math.isinf(value) else f"{value:g}"


SECTION = RealDataSection()
