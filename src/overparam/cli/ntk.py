"""`overparam ntk` (the kernel of a dataset: finite, infinite, Monte Carlo) and `overparam bound`
(the theorems' width, step and iteration orders side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer

from .. import data as datasets
from ..kernels import plots as kernel_plots
from .. import theory
from ..activations import CHOICES, RELU
from ..kernels.comparison import compare_kernels
from ..kernels.eigensolvers import DENSE_LIMIT, SOLVERS
from ..kernels.nested import width_profile
from .common import (DATA_HELP, app, fail, interruptible, output_folder, parse_device, print_json, show_progress,
                     stage_bars)


@app.command("ntk")
def ntk_command(
    activation: str = typer.Option(RELU.name, help=CHOICES),
    width: Optional[int] = typer.Option(None, help="neurons m of the finite kernel H(W(0)) [1024; none "
                                        "with --infinite alone]"),
    widths: Optional[str] = typer.Option(None, help="increasing widths, e.g. 64,128,256: ||H(m) - H*||_2 / lambda "
                                         "and lambda_min(H(m)) at each, from one pass over the neurons"),
    infinite: bool = typer.Option(False, "--infinite", help="the infinite-width kernel H* (closed form or quadrature)"),
    monte_carlo: Optional[int] = typer.Option(None, "--monte-carlo", help="average H(W(0)) over this many "
                                              "initialisations (with standard errors)"),
    data: str = typer.Option("sphere", help=DATA_HELP),
    n: int = typer.Option(64, help="number of points (built-in data)"),
    d: int = typer.Option(8, help="input dimension (built-in sphere/teacher data)"),
    k: int = typer.Option(1, help="outputs per input (built-in sphere/teacher data)"),
    label_columns: Optional[str] = typer.Option(None, help="CSV label columns, e.g. '-1' or '3,4'"),
    normalize: Optional[str] = typer.Option(None, help="project inputs: 'ball' or 'sphere'"),
    init: str = typer.Option("independent", help="independent or coupled"),
    scale: Optional[str] = typer.Option(None, help="output scale kappa: 1, 1/sqrt(m), 1/m or a number"),
    sigma: float = typer.Option(1.0, help="initial weights w_r ~ N(0, sigma^2 I)"),
    seed: int = typer.Option(0, help="seed for data and initialisation"),
    dtype: str = typer.Option("float64", help="float64 or float32"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    dense_limit: int = typer.Option(DENSE_LIMIT, help="kernel side up to which --eigensolver auto uses eigvalsh "
                                    "(every eigenvalue); above it Cholesky where the matrix fits in memory, else "
                                    "matrix-free LOBPCG with a Nystrom preconditioner (H*) or Lanczos"),
    eigensolver: str = typer.Option("auto", help=f"lambda_min's solver: {', '.join(SOLVERS)} (auto: by size, "
                                    "--dense-limit and the memory available)"),
    out: Path = typer.Option(Path("out/ntk"), help="folder for spectrum.png and summary.json"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """lambda_min, lambda_max and condition number of H(W(0)) = Theta/(m kappa^2) and/or H*, their
    relative distance ||H(W(0)) - H*||_2 / ||H*||_2, and an eigenvalue-spectrum PNG."""
    parse_device(device)
    if eigensolver not in SOLVERS:
        fail(f"unknown --eigensolver {eigensolver!r}: choose one of {', '.join(SOLVERS)}")
    dataset, problems = datasets.from_spec(data, n, d, k, seed, label_columns=label_columns, normalize=normalize)
    X = torch.from_numpy(dataset.X)
    if widths is not None:
        grid = _parse_widths(widths)
        with stage_bars(show_progress(json_output, quiet)) as progress:
            profile = interruptible(lambda: width_profile(X, activation, grid, out_dim=dataset.k, init=init,
                                                          sigma=sigma, seed=seed, dtype=dtype, device=device,
                                                          progress=progress))
        _print_profile({"activation": activation, "n": dataset.n, "d": dataset.d, "k": dataset.k,
                        "data": dataset.name, "init": init, "sigma": sigma, "seed": seed, "warnings": problems,
                        **profile.to_dict()}, json_output)
        return
    output_folder(out)
    with stage_bars(show_progress(json_output, quiet)) as progress:
        comparison = interruptible(lambda: compare_kernels(
            activation, X, out_dim=dataset.k, width=width, infinite=infinite, monte_carlo=monte_carlo, scale=scale,
            init=init, sigma=sigma, seed=seed, dtype=dtype, device=device, dense_limit=dense_limit,
            solver=eigensolver, progress=progress))
    if comparison.rounding:
        problems.append(ROUNDING_WARNING)
    figure = kernel_plots.spectrum(comparison.spectra(), out / "spectrum.png",
                                   title=f"{activation} NTK spectrum, {dataset.name} n = {dataset.n}")
    summary = {"activation": activation, "n": dataset.n, "d": dataset.d, "k": dataset.k, "data": dataset.name,
               "sigma": sigma, **comparison.as_dict(), "warnings": problems, "spectrum": str(figure),
               "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if json_output:
        print_json(summary)
    else:
        _print_ntk(summary)


#: The warning when a spectrum is rounding (`kernels.eigensolvers.rounding_dominated`).
ROUNDING_WARNING = ("lambda_min is below the rounding level eps n lambda_max: the kernel's entries span more "
                    "than float64 resolves, so lambda_min and the condition number are not meaningful (try a "
                    "smaller sigma or inputs with ||x|| <= 1)")


def _parse_widths(text: str) -> list[int]:
    try:
        grid = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--widths must be comma-separated integers such as 64,128,256, got {text!r}")
    if not grid or any(m < 1 for m in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        fail(f"--widths must be increasing positive integers such as 64,128,256, got {text!r}")
    return grid


def _print_profile(summary: dict, json_output: bool) -> None:
    if json_output:
        print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"overparam ntk --widths: {summary['activation']}, {summary['init']} init, "
                        f"{summary['data']} n = {summary['n']}, lambda = lambda_min(H*) = {summary['lambda']:.6g}")
    for column in ("m", "||H(m) - H*||_2 / lambda", "lambda_min(H(m)) / lambda", "<= 1/4"):
        table.add_column(column, justify="right")
    for m, ratio, smallest in zip(summary["widths"], summary["distance_over_lambda"], summary["lambda_min"]):
        table.add_row(str(m), f"{ratio:.4g}", f"{smallest / summary['lambda']:.4g}", "yes" if ratio <= 0.25 else "no")
    console = Console()
    for message in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}")
    console.print(table)


def _print_ntk(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for message in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}")
    table = Table(title=f"overparam ntk: {summary['activation']}, {summary['data']} n = {summary['n']}")
    table.add_column("kernel")
    for name in ("lambda_min", "lambda_max", "condition number", "method"):
        table.add_column(name, justify="right")
    rows = []
    if summary["kernel"] != "infinite":
        name = "H(W(0))" if summary["kernel"] == "finite" else f"mean of {summary['monte_carlo']['samples']} H(W(0))"
        rows.append((f"{name}, m = {summary['width']}", summary))
    rows += [("H*", summary["infinite"])] if "infinite" in summary else []
    rows += [("H*", summary)] if summary["kernel"] == "infinite" else []
    for name, values in rows:
        method = values["method"] + ("" if values["converged"] else " (not converged)") + \
            (" (rounding)" if values["rounding"] else "")
        low = "below rounding" if values["lambda_min"] is None or values["lambda_min"] != values["lambda_min"] \
            else f"{values['lambda_min']:.6g}"
        table.add_row(name, low, f"{values['lambda_max']:.6g}", f"{values['condition_number']:.4g}", method)
    console.print(table)
    for name, values in rows:
        console.print(f"{name}: {values['method']}, because {values['method_reason']}")
    if "relative_distance" in summary:
        console.print(f"||H(W(0)) - H*||_2 / ||H*||_2 = {summary['relative_distance']:.4g}")
    if "monte_carlo" in summary:
        mc = summary["monte_carlo"]
        console.print(f"Monte Carlo: {mc['samples']} initialisations, max standard error {mc['max_standard_error']:.3g}"
                      + (f", max |mean - H*| / se = {mc['max_z']:.3g}" if "max_z" in mc else ""))
    console.print(f"spectrum figure and summary in {summary['out']}")


@app.command("bound")
def bound_command(
    n: int = typer.Option(..., help="number of training points"),
    lam: float = typer.Option(..., "--lambda", help="lambda = lambda_min(H*)"),
    delta: float = typer.Option(..., help="failure probability"),
    d: Optional[int] = typer.Option(None, help="input dimension: adds the exact capacity bound m >= n k / d"),
    k: int = typer.Option(1, help="outputs per input (for the capacity bound)"),
    epsilon: float = typer.Option(1e-3, help="target ||F - y||_2 (for the iteration count)"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Width, step and iteration ORDERS OF GROWTH (constant c = 1) of DZPS19, SY19, MOSW22, GMS23
    and SMX24 side by side (docs/mathematics.md#predictions); never exact bounds."""
    rows = theory.orders(n, lam, delta, epsilon)
    summary = {
        "n": n, "lambda": lam, "delta": delta, "epsilon": epsilon, "constant": theory.C,
        "label": "orders of growth with constant c = 1, not bounds",
        "works": {row.work: row.as_dict() for row in rows},
        "kernel_width": theory.kernel_width(n, lam, delta),
    }
    if d is not None:
        summary.update(d=d, k=k, capacity_width=theory.capacity_width(n, d, k))
    if json_output:
        print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"orders of growth (c = 1, not bounds): n = {n}, lambda = {lam:g}, delta = {delta:g}, "
                        f"epsilon = {epsilon:g}")
    for column in ("work", "network", "width m", "width order", "step eta", "iterations"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.work, f"{row.activation}, {row.init}", f"{row.width:.3g}", row.width_formula,
                      "-" if row.step is None else f"{row.step:.3g} ~ {row.step_formula}",
                      "-" if row.iterations is None else f"{row.iterations:.3g} ~ {row.iterations_formula}")
    console = Console()
    console.print(table)
    for row in rows:
        console.print(f"{row.work}: {row.note}")
    console.print(f"kernel concentration ||H(W(0)) - H*||_2 <= lambda/4: m ~ n^2 log(n/delta) / lambda^2 = "
                  f"{summary['kernel_width']:.3g} (order)")
    if d is not None:
        console.print(f"capacity (exact, necessary): m >= n k / d = {summary['capacity_width']}")
