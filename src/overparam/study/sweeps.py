"""The shared sweep units: one (activation, n) slice of a width sweep, run into the study's runs.db.

`SweepSlice` (the real-data section) runs every width and seed; `WidthScan` (the threshold section) runs
the widths in increasing order and ends a seed's scan once it reached the target at two successive widths. `overparam.sweep.run_sweep` trains the slice's runs
(every width, every seed; one group per width) with the study's backend and device, skipping runs the
store already holds; the unit's record is the slice's rows, from which the sections fit the optimisation
threshold m*_opt (docs/mathematics.md#thresholds) with `sweep.analysis.thresholds_from_rows`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..sweep import run_sweep
from ..sweep.spec import SweepSpec
from ..sweep.store import Store
from .framework import Unit


@dataclass
class SweptRun:
    """One run of the sweep as the store keeps it: its config (the group's, width included), seed, status
    (converged | max_steps | diverged | failed), steps taken, step budget, lambda_min(H*) and whether that
    lambda was at the rounding level (then the run never counts as a success)."""

    config: dict
    width: int
    seed: int
    status: str
    steps: int | None
    budget: int | None
    lambda_min: float | None
    lambda_rounding: bool | None

    def as_row(self) -> dict:
        """The dict `sweep.analysis.thresholds_from_rows` reads."""
        return asdict(self)


@dataclass
class SweepRecord:
    runs: list[SweptRun]

    @property
    def failed(self) -> int:
        return sum(run.status == "failed" for run in self.runs)


@dataclass(frozen=True)
class SweepSlice(Unit):
    """GD at every width of `widths` and seeds 0..seeds-1 on `data` (a data spec, e.g. "sphere") with n points
    in d dimensions, k outputs; lr "auto"; step budget `budget` ("theory:c" or a count) capped at max_steps."""

    RECORD = SweepRecord

    activation: str
    n: int
    widths: tuple[int, ...]
    d: int
    k: int
    seeds: int
    init: str
    data: str
    data_seed: int
    sigma: float
    tol: float
    budget: str
    max_steps: int

    def table(self) -> dict:
        """The slice as a [sweep] table (`sweep.spec`)."""
        return {"activations": [self.activation], "widths": list(self.widths), "n": [self.n], "d": self.d,
                "k": self.k, "seeds": self.seeds, "init": self.init, "data": self.data, "data_seed": self.data_seed,
                "lr": "auto", "tol": self.tol, "steps": self.budget, "max_steps": self.max_steps, "sigma": self.sigma,
                "kernel_widths": "none"}  # the sections measure the kernel condition with their own units

    def compute(self, ctx) -> SweepRecord:
        table = self.table()
        run_sweep(table, ctx.store_path, backend=ctx.backend, device=ctx.device)
        hashes = {group.config_hash for group in SweepSpec.from_dict(table).groups()}
        with Store(ctx.store_path, create=False) as store:
            rows = [row for row in store.runs(activation=self.activation, n=self.n, d=self.d)
                    if row["config_hash"] in hashes]
        return SweepRecord([SweptRun(row["config"], row["width"], row["seed"], row["status"], row["steps"],
                                     row["budget"], row["lambda_min"],
                                     None if row["lambda_rounding"] is None else bool(row["lambda_rounding"]))
                            for row in rows])


def _swept(row: dict) -> SweptRun:
    return SweptRun(row["config"], row["width"], row["seed"], row["status"], row["steps"], row["budget"],
                    row["lambda_min"], None if row["lambda_rounding"] is None else bool(row["lambda_rounding"]))


@dataclass(frozen=True)
class WidthScan(Unit):
    """GD of the weight seeds `seeds` on one data draw (`data_seed`), n points in d dimensions, k outputs, at
    the widths of `widths` in increasing order; a seed's scan ends once it reached the target at two
    successive widths (`scan_outcomes` counts the widths above as successes). lr "auto"; step budget
    `budget` ("theory:c" or a count) capped at max_steps."""

    RECORD = SweepRecord

    activation: str
    n: int
    widths: tuple[int, ...]
    d: int
    k: int
    seeds: tuple[int, ...]
    init: str
    data: str
    data_seed: int
    sigma: float
    tol: float
    budget: str
    max_steps: int

    def table(self, width: int, seeds) -> dict:
        """One width of the scan as a [sweep] table (`sweep.spec`)."""
        return {"activations": [self.activation], "widths": [width], "n": [self.n], "d": self.d, "k": self.k,
                "seeds": list(seeds), "init": self.init, "data": self.data, "data_seed": self.data_seed,
                "lr": "auto", "tol": self.tol, "steps": self.budget, "max_steps": self.max_steps, "sigma": self.sigma,
                "kernel_widths": "none"}  # the section's kernel threshold is its own unit (KernelScan)

    def compute(self, ctx) -> SweepRecord:
        streak = {seed: 0 for seed in self.seeds}  # successive successes up to the last width run
        runs = []
        for width in self.widths:
            active = [seed for seed in self.seeds if streak[seed] < 2]
            if not active:
                break
            table = self.table(width, active)
            run_sweep(table, ctx.store_path, backend=ctx.backend, device=ctx.device)
            (group,) = SweepSpec.from_dict(table).groups()
            with Store(ctx.store_path, create=False) as store:
                rows = [_swept(row) for row in store.runs(activation=self.activation, n=self.n, d=self.d,
                                                          width=width, seed=active)
                        if row["config_hash"] == group.config_hash]
            for run in rows:
                streak[run.seed] = streak[run.seed] + 1 if success(run) else 0
            runs += rows
        return SweepRecord(runs)


def success(run: SweptRun) -> bool:
    """GD reached the target; a run whose lambda_min(H*) was at the rounding level never counts
    (`sweep.analysis`: its budget, drawn from lambda, is not a measurement)."""
    return run.status == "converged" and not run.lambda_rounding


def scan_outcomes(widths, seeds, runs: list[SweptRun]) -> np.ndarray:
    """(widths, seeds) outcomes of a `WidthScan`: 1 where GD reached the target, 0 where it did not (any other
    GD status), NaN for a failed run; above a seed's last width run, 1 if its last two runs succeeded (the
    scan ended there), else NaN (not run)."""
    outcomes = np.full((len(widths), len(seeds)), math.nan)
    row = {width: i for i, width in enumerate(widths)}
    column = {seed: j for j, seed in enumerate(seeds)}
    last = {}
    for run in runs:
        i, j = row[run.width], column[run.seed]
        outcomes[i, j] = math.nan if run.status == "failed" else float(success(run))
        last[j] = max(last.get(j, -1), i)
    for j, i in last.items():
        if i >= 1 and outcomes[i, j] == 1 and outcomes[i - 1, j] == 1:
            outcomes[i + 1:, j] = 1.0
    return outcomes
