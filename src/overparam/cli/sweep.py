"""`overparam sweep`: run a width sweep from a TOML spec (or the same keys as flags) into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..activations import CHOICES
from ..data import split_specs
from ..sweep import SweepProgress, SweepSpec, load_spec, run_sweep
from ..sweep.spec import GRID_KEYS
from .common import app, output_file, parse_device, print_json, show_progress


@app.command()
def sweep(
    spec: Optional[Path] = typer.Argument(None, help="TOML file with a [sweep] table (flags override its keys)"),
    store: Path = typer.Option(Path("runs.db"), help="SQLite store; curves go to <store>.curves/ beside it"),
    workers: Optional[int] = typer.Option(None, help="parallel tasks (local default 1: this process; ray: the cluster's CPUs)"),
    threads: int = typer.Option(1, help="torch threads per task (1 is fastest for small n x m)"),
    backend: str = typer.Option("local", help="local or ray"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a local Ray instance)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    retry_failed: bool = typer.Option(False, help="redo runs recorded as failed"),
    activations: Optional[str] = typer.Option(None, help=f"comma-separated, each one of {CHOICES}"),
    widths: Optional[str] = typer.Option(None, help="comma-separated widths m, e.g. 64,128,256"),
    n: Optional[str] = typer.Option(None, help="comma-separated numbers of points"),
    d: Optional[str] = typer.Option(None, help="input dimension(s) [8]"),
    k: Optional[str] = typer.Option(None, help="outputs per input [1]"),
    seeds: Optional[str] = typer.Option(None, help="a count (0..S-1) or comma-separated seeds [8]"),
    init: Optional[str] = typer.Option(None, help="independent and/or coupled [coupled]"),
    scale: Optional[str] = typer.Option(None, help="kappa: default, 1, 1/sqrt(m), 1/m or a number"),
    sigma: Optional[str] = typer.Option(None, help="initial weight scale(s) [1.0]"),
    data: Optional[str] = typer.Option(None, help="a dataset spec: sphere, teacher, moons, circles, digits:classes=3,5 [sphere]"),
    data_seed: Optional[str] = typer.Option(None, help="seed of the data set, or 'seed' for data per seed [0]"),
    lr: Optional[str] = typer.Option(None, help="'auto' (1/lambda_max(Theta(W(0)))) or step sizes [auto]"),
    tol: Optional[str] = typer.Option(None, help="target ||F - y||_2 [1e-3]"),
    steps: Optional[str] = typer.Option(None, help="step budget, or 'theory:c' (c x the predicted steps) [2000]"),
    max_steps: Optional[str] = typer.Option(None, help="cap on a theory budget [100000]"),
    dtype: Optional[str] = typer.Option(None, help="float64 or float32 [float64]"),
    record_every: Optional[str] = typer.Option(None, help="curve resolution in steps [budget // 1000]"),
    kernel_widths: Optional[str] = typer.Option(None, help="widths of each seed's nested kernel pass, from which "
                                                "`overparam threshold` measures the kernel threshold, or 'none' "
                                                "[the sweep's widths]"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON summary object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
) -> None:
    """Train every (activation, width, n, d, ...) x seed of a sweep; re-running resumes it."""
    flags = {"activations": activations, "widths": widths, "n": n, "d": d, "k": k, "seeds": seeds,
             "init": init, "scale": scale, "sigma": sigma, "data": data, "data_seed": data_seed, "lr": lr,
             "tol": tol, "steps": steps, "max_steps": max_steps, "dtype": dtype, "record_every": record_every,
             "kernel_widths": kernel_widths}
    overrides = {key: _split(key, value) for key, value in flags.items() if value is not None}
    plan = load_spec(spec, overrides) if spec is not None else SweepSpec.from_dict(overrides)
    device = parse_device(device)
    output_file(store, "--store", make_folder=True)

    def launch(progress=None):
        return run_sweep(plan, store, backend=backend, workers=workers, threads=threads, device=device,
                         ray_address=ray_address, retry_failed=retry_failed, progress=progress)

    if show_progress(json_output, quiet):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("done {task.fields[done]} failed {task.fields[failed]} "
                              "skipped {task.fields[skipped]} running {task.fields[running]}"),
                   TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("sweep", total=plan.size, done=0, failed=0, skipped=0, running=0)

            def update(counts: SweepProgress) -> None:
                bar.update(task, completed=counts.done + counts.failed + counts.skipped, done=counts.done,
                           failed=counts.failed, skipped=counts.skipped, running=counts.running)

            counts = launch(update)
    else:
        counts = launch()

    summary = {"store": str(store), "runs": counts.total, "trained": counts.done, "failed": counts.failed,
               "skipped": counts.skipped, "statuses": dict(counts.statuses), "kernel_profiles": counts.profiles,
               "seconds": counts.seconds}
    if json_output:
        print_json(summary)
        return
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(counts.statuses.items())) or "nothing new"
    typer.echo(f"{counts.total} runs: {statuses}; {counts.skipped} already in the store; "
               f"{counts.profiles} nested kernel profiles measured; {counts.seconds:.1f} s -> {store}")
    if counts.failed:
        typer.echo(f"{counts.failed} run(s) failed; see `overparam results {store} --status failed`")


def _split(key: str, text: str):
    """Comma-separated flag values become lists for the keys a sweep ranges over."""
    if key == "data":
        return split_specs(text)
    if key in GRID_KEYS or (key in ("seeds", "kernel_widths") and "," in text):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text
