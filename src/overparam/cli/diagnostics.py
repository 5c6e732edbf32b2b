"""`overparam train --diagnostics`: the theorems checked on the run (kernel columns, TheoryCheck,
a second figure), kept here so the train command only wires it in."""

from __future__ import annotations

from pathlib import Path

from ..kernels import plots as kernel_plots
from ..training.diagnostics import DIAGNOSTICS_DENSE_LIMIT, KernelDiagnostics
from ..kernels.regime import KernelRegime

#: Records per run when --diagnostics-every is not given.
RECORDS = 50


class TheoryMonitor:
    """A `KernelDiagnostics` callback for one run, plus the kernel-regime prediction to overlay
    (full-batch GD with n k <= the dense limit only: one eigendecomposition of Theta(W(0)))."""

    def __init__(self, net, X, y, lr, steps: int, optimizer: str, every: int | None = None) -> None:
        self.diagnostics = KernelDiagnostics(every or max(1, steps // RECORDS))
        self.regime = None
        if optimizer == "gd" and net.out_dim * len(X) <= DIAGNOSTICS_DENSE_LIMIT:
            self.regime = KernelRegime.of_network(net, X, y, lr)
        self.callbacks = [self.diagnostics]

    def finish(self, history, out: Path, title: str) -> dict:
        """TheoryCheck into the summary, the recorded columns to diagnostics.parquet, the figure."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        check = self.diagnostics.check(history)
        pq.write_table(pa.table(self.diagnostics.table(history)), out / "diagnostics.parquet")
        figure = kernel_plots.diagnostics(history, check, out / "diagnostics.png", self.regime, title=title)
        theory = check.summary()
        if self.regime is not None:
            theory["kernel_regime_final_residual"] = float(self.regime.residual_norm([history.steps])[0])
        return {"theory": theory, "diagnostics_figure": str(figure)}

    @staticmethod
    def print(summary: dict) -> None:
        from rich.console import Console
        from rich.table import Table

        theory = summary["theory"]
        yes = {True: "yes", False: "[red]no[/red]"}
        lam = theory["reference_lambda"]
        table = Table(title="theory check (docs/mathematics.md#predictions)", show_header=False)
        rows = [
            ("lambda", f"{lam:.4g} = lambda_min({theory['lambda_source']})"),
            ("eta_eff = lr m kappa^2", f"{theory['eta_eff']:.4g}"),
            ("linear convergence", f"{yes[theory['linear_convergence']]}: observed rate {theory['observed_rate']:.6f} "
                                   f"per step vs predicted {theory['predicted_rate']:.6f}"),
            ("kernel drift <= lambda/4", f"{yes[theory['kernel_within_quarter']]}: max "
                                         f"{theory['max_kernel_drift']:.3e} vs {lam / 4:.3e}"),
            ("lambda_min(H(W(t))) >= lambda/2", f"{yes[theory['kernel_above_half']]}: min {theory['min_lambda']:.4g}"),
            ("radius max_r ||w_r(T) - w_r(0)||", f"{theory['radius']:.4e}" + (
                f" (DZPS19 R' ~ {theory['dzps19_radius']:.3e})" if theory["dzps19_radius"] is not None else "")),
        ]
        if "kernel_regime_final_residual" in theory:
            rows.append(("kernel-regime ||F_lin(T) - y||", f"{theory['kernel_regime_final_residual']:.4e}"))
        for name, value in rows:
            table.add_row(name, value)
        console = Console()
        console.print(table)
        for note in theory["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
        console.print(f"diagnostics figure: {Path(summary['diagnostics_figure']).name}")
