"""The shared sweep unit: one (activation, n) slice of a width sweep, run into the study's runs.db.

Requested by the threshold and real-data sections. `overparam.sweep.run_sweep` trains the slice's runs
(every width, every seed; one group per width) with the study's backend and device, skipping runs the
store already holds; the unit's record is the slice's rows, from which the sections fit the optimisation
threshold m*_opt (docs/mathematics.md#thresholds) with `sweep.analysis.thresholds_from_rows`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
