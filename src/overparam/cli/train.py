"""`overparam train`: train one network by full-batch GD (or SGD/Adam) and report the run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from .. import data as datasets
from ..training import distributed
from ..activations import CHOICES, EXP
from .. import plots, resources
from ..models import TwoLayerNet, resolve_dtype
from ..training.loop import train as train_network
from .common import DATA_HELP, Failed, app, fail, output_folder, parse_device, print_json, show_progress
from .diagnostics import TheoryMonitor


@app.command()
def train(
    activation: str = typer.Option(EXP.name, help=CHOICES),
    width: int = typer.Option(1024, help="number of neurons m"),
    data: str = typer.Option("sphere", help=DATA_HELP),
    n: int = typer.Option(64, help="number of points (built-in data)"),
    d: int = typer.Option(8, help="input dimension (built-in sphere/teacher data)"),
    k: int = typer.Option(1, help="outputs per input (built-in sphere/teacher data)"),
    label_columns: Optional[str] = typer.Option(None, help="CSV label columns, e.g. '-1' or '3,4'"),
    normalize: Optional[str] = typer.Option(None, help="project inputs: 'ball' (divide by max norm) or 'sphere'"),
    steps: int = typer.Option(2000, help="step budget"),
    lr: str = typer.Option("auto", help="step size eta, or 'auto' = 1/lambda_max(Theta(W(0)))"),
    tol: float = typer.Option(1e-3, help="stop when ||F - y||_2 <= tol"),
    optimizer: str = typer.Option("gd", help="gd (full batch), sgd or adam"),
    batch_size: Optional[int] = typer.Option(None, help="minibatch size for sgd/adam"),
    init: str = typer.Option("coupled", help="independent or coupled (symmetric, F(W(0)) = 0)"),
    scale: Optional[str] = typer.Option(None, help="output scale kappa: 1, 1/sqrt(m), 1/m or a number"),
    sigma: float = typer.Option(1.0, help="initial weights w_r ~ N(0, sigma^2 I)"),
    output_scale: float = typer.Option(1.0, help="alpha: train alpha F on L(alpha F) / alpha^2 (lazy for large "
                                       "alpha, rich for small; 1 = the papers' scaling)"),
    seed: int = typer.Option(0, help="seed for data and initialisation"),
    dtype: str = typer.Option("float64", help="float64 or float32"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    nproc: int = typer.Option(1, min=1, help="processes to split the m neurons over (torch.distributed: "
                              "gloo on cpu, NCCL on cuda); under torchrun the launcher's processes"),
    diagnostics: bool = typer.Option(False, "--diagnostics", help="every K steps record lambda_min(H(W(t))), "
                                     "kernel drift, movement and the linear rate; theory check in the summary, "
                                     "diagnostics.png and diagnostics.parquet in --out"),
    diagnostics_every: Optional[int] = typer.Option(None, min=1, help="K for --diagnostics [steps / 50]"),
    out: Path = typer.Option(Path("out/train"), help="folder for history, figure and summary"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
) -> None:
    """Train a two-layer network and write history.parquet, loss.png and summary.json to --out."""
    parse_device(device)
    dataset, problems = datasets.from_spec(data, n, d, k, seed, label_columns=label_columns, normalize=normalize)
    learning_rate = lr if lr == "auto" else _positive_float(lr, "--lr")
    if not (output_scale > 0 and math.isfinite(output_scale)):
        fail(f"--output-scale must be a positive finite number, got {output_scale}")
    if diagnostics and output_scale != 1:
        fail("--diagnostics checks the theorems at the papers' scaling: drop --output-scale or --diagnostics")
    resources.require(resources.network_bytes(dataset.n, dataset.d, dataset.k, width, resolve_dtype(dtype).itemsize),
                      device, f"training m = {width} neurons on n = {dataset.n} points",
                      "use a smaller --n or --width, or another --device")
    net = TwoLayerNet(dataset.d, width, dataset.k, activation, scale=scale, init=init, sigma=sigma,
                      seed=seed, dtype=dtype, device=device)
    output_folder(out)
    if diagnostics and (nproc > 1 or distributed.launched()):
        fail("--diagnostics needs a single process (drop --nproc)")
    monitor = TheoryMonitor(net, dataset.X, dataset.y, learning_rate, steps, optimizer,
                            diagnostics_every) if diagnostics else None

    def run(progress=None):
        if nproc > 1 or distributed.launched():
            return distributed.train(net, dataset.X, dataset.y, nproc=nproc if nproc > 1 else None,
                                     lr=learning_rate, steps=steps, tol=tol, optimizer=optimizer,
                                     batch_size=batch_size, seed=seed, progress=progress,
                                     output_scale=output_scale)
        return train_network(net, dataset.X, dataset.y, lr=learning_rate, steps=steps, tol=tol,
                             optimizer=optimizer, batch_size=batch_size, seed=seed, progress=progress,
                             callbacks=monitor.callbacks if monitor else (), output_scale=output_scale)

    if show_progress(json_output, quiet) and distributed.is_main_process():
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("||F-y|| {task.fields[norm]:.3e}"), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("train", total=steps, norm=float("nan"))
            history = run(lambda step, norm: bar.update(task, completed=step, norm=norm))
    else:
        history = run()
    if not distributed.is_main_process():
        return  # under torchrun, rank 0 writes and prints the run

    history.save(out / "history.parquet")
    figure = plots.loss_curve(history, out / "loss.png",
                              title=f"{activation}, m = {width}, n = {dataset.n}: {history.status}")
    summary = {**history.summary(), "activation": activation, "width": width, "n": dataset.n,
               "d": dataset.d, "k": dataset.k, "data": dataset.name, "init": init, "kappa": net.kappa,
               "output_scale": output_scale,
               "warnings": problems, "out": str(out)}
    if monitor:
        summary.update(monitor.finish(history, out, title=f"{activation}, m = {width}, n = {dataset.n}"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "config.json").write_text(json.dumps(net.config(), indent=2) + "\n")

    if json_output:
        print_json(summary)
    else:
        _print_summary(summary, figure)
        if monitor:
            monitor.print(summary)
    if history.status == "diverged":
        raise Failed(f"training diverged: {history.message}")


def _positive_float(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        fail(f"{flag} takes a positive number or 'auto', got {text!r}")
    if not value > 0:
        fail(f"{flag} must be positive, got {text!r}")
    return value


def _print_summary(summary: dict, figure: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for message in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}")
    table = Table(title=f"overparam train: {summary['status']}", show_header=False)
    rows = [
        ("network", f"{summary['activation']}, m = {summary['width']}, init = {summary['init']}, kappa = {summary['kappa']:.4g}"
                    + (f", output scale alpha = {summary['output_scale']:.4g}" if summary["output_scale"] != 1 else "")),
        ("data", f"{summary['data']}: n = {summary['n']}, d = {summary['d']}, k = {summary['k']}"),
        ("steps", str(summary["steps"])),
        ("lr", f"{summary['lr']:.4g} ({summary['optimizer']})"),
        ("final loss", f"{summary['final_loss']:.4e}"),
        ("||F - y||_2", f"{summary['residual_norm']:.4e}"),
        ("max_r ||w_r(t) - w_r(0)||", f"{summary['max_movement']:.4e}"),
        ("||W(t) - W(0)||_F", f"{summary['total_movement']:.4e}"),
        ("wall time", f"{summary['wall_seconds']:.2f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print(summary["message"])
    console.print(f"history, summary and figure in {summary['out']} ({figure.name})")
