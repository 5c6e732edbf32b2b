"""`overparam threshold`: the optimisation and kernel width thresholds (docs/mathematics.md#thresholds) of a runs store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .common import app, output_file, print_json

if TYPE_CHECKING:
    from ..sweep.analysis import ThresholdReport


@app.command()
def threshold(
    store: Path = typer.Argument(..., help="runs store written by `overparam sweep`"),
    delta: float = typer.Option(0.1, help="success rate required: 1 - delta"),
    bootstrap: int = typer.Option(1000, help="bootstrap replicates over seeds"),
    level: float = typer.Option(0.95, help="confidence level of the intervals"),
    activation: Optional[str] = typer.Option(None, help="only this activation"),
    init: Optional[str] = typer.Option(None, help="only this init"),
    figure: Optional[Path] = typer.Option(None, help="log-log figure [<store>_thresholds.png]"),
    no_figure: bool = typer.Option(False, "--no-figure", help="do not write the figure"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Smallest width reaching tol (and ||H(W(0)) - H*|| <= lambda/4) for 1 - delta of seeds, per n,
    with bootstrap intervals and the fitted exponent p of m* ~ C n^p next to the theory's."""
    from ..sweep.analysis import plot_thresholds, thresholds  # scipy.optimize: loaded only when needed

    figure = None if no_figure else output_file(figure or store.with_name(f"{store.stem}_thresholds.png"), "--figure")
    report = thresholds(store, delta=delta, bootstrap=bootstrap, level=level, activation=activation, init=init)
    path = None
    if figure is not None:
        path = plot_thresholds(report, figure)
    if json_output:
        print_json({**report.to_dict(), "figure": str(path) if path else None})
        return
    _print_report(report, path)


def _width(value: float, widths: list[int] | None = None) -> str:
    if not math.isfinite(value):
        return f"> {max(widths)}" if widths else "inf"
    return f"<= {int(value)}" if widths and value <= widths[0] else f"{value:g}"


def _print_report(report: ThresholdReport, figure: Path | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for kind in ("optimization", "kernel"):
        rows = sorted((t for t in report.thresholds if t.kind == kind),
                      key=lambda t: tuple(str(v).zfill(12) for v in t.family.values()))
        if not rows:
            continue
        names = list(rows[0].family)
        table = Table(title=f"{kind} threshold m*: fitted success rate >= {1 - report.delta:g} "
                            f"({report.level:.0%} bootstrap interval)")
        for name in names + ["successes / runs by width", "m*", "interval"]:
            table.add_column(name)
        for t in rows:
            grid = "  ".join(f"{w}:{s}/{r}" for w, s, r in zip(t.widths, t.successes, t.runs))
            table.add_row(*[str(t.family[name]) for name in names], grid, _width(t.width, t.widths),
                          escape(f"[{_width(t.low)}, {_width(t.high)}]"))
        console.print(table)
    if report.fits:
        table = Table(title="m* ~ C n^p (least squares on log-log; bootstrap interval for p)")
        names = [name for name in report.fits[0].family]
        for name in ["threshold"] + names + ["n", "p", "interval", "C", "theory p"]:
            table.add_column(name)
        for fit in report.fits:
            theory = ", ".join(f"{order} ({source})" for source, order in fit.theory)
            table.add_row(fit.kind, *[str(fit.family.get(name)) for name in names], ",".join(map(str, fit.ns)),
                          f"{fit.p:.2f}", escape(f"[{fit.p_low:.2f}, {fit.p_high:.2f}]"), f"{fit.C:.3g}", theory)
        console.print(table)
    else:
        console.print("no power-law fit: it needs thresholds inside the width grid for at least two n")
    if figure is not None:
        console.print(f"figure: {figure}")
