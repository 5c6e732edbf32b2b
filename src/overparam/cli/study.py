"""`overparam study`: run the study's sections and write report.html / report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..activations import CHOICES, PAPERS
from ..study import preset as study_preset
from ..study.config import GOALS
from ..study import StudyConfig, run_study
from .common import EXIT_INTERRUPTED, WRITE_ERRORS, Failed, app, output_folder, parse_device, print_json, show_progress


@app.command()
def study(
    preset: str = typer.Option("quick", help="quick (2 CPU cores, < 10 min), paper (a night on 2 CPU cores, an "
                               "hour on one GPU) or full (a cluster)"),
    out: Path = typer.Option(Path("out/study"), help="folder for report.html, report.md, figures, tables, runs.db"),
    backend: str = typer.Option("local", help="local or ray (width sweeps)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a TOML file whose tables override the preset: "
                                               "[study] for the shared settings, one table per section (a report's "
                                               "study.toml re-runs it exactly)"),
    only: Optional[str] = typer.Option(None, help="comma-separated sections to run, e.g. concentration,training"),
    activations: Optional[str] = typer.Option(None, help=f"comma-separated activations every section runs for "
                                              f"[{','.join(PAPERS)}], each one of {CHOICES}"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object when done"),
    plan: bool = typer.Option(False, "--plan", help="print each section's units and expected time on this machine "
                              "(units already in --out excluded), then exit without computing"),
) -> None:
    """Run the experiments the papers lack and write a report a researcher can use.

    Prints the plan (each section's units and expected time) before it starts. Re-running the same command
    reuses every finished run; Ctrl-C leaves a valid partial report.
    """
    config = study_preset(preset)
    if config_file is not None:
        try:
            found = config_file.is_file()
        except OSError as error:  # e.g. a name too long for the file system
            raise ValueError(f"--config {str(config_file)[:80]!r}: cannot be read "
                             f"({WRITE_ERRORS.get(error.errno, 'not a readable path')})") from None
        if not found:
            raise ValueError(f"--config {config_file}: no such file; give the path of a TOML file")
        config = StudyConfig.from_toml(config_file, base=config)
    parse_device(device)
    if only:
        config = config.only([part.strip() for part in only.split(",") if part.strip()])
    if activations is not None:
        config = config.with_activations(part.strip() for part in activations.split(",") if part.strip())
    if plan:
        plans = _plan(config, out, device)
        if json_output:
            print_json({"plan": plans})
        else:
            _print_plan(plans)
        return
    output_folder(out)
    if not json_output:
        _print_plan(_plan(config, out, device))
    if show_progress(json_output):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn()) as bar:
            tasks = {}

            def on_section(key, title, units):
                tasks["current"] = bar.add_task(title, total=units)

            def on_tick(k=1):
                bar.advance(tasks["current"], k)

            result = _run(config, out, backend, device, on_section, on_tick)
    else:
        result = _run(config, out, backend, device, None, None)
    payload = {"report": str(result.html), "markdown": str(result.markdown), "seconds": round(result.seconds, 1),
               "reused_units": result.reused, "computed_units": result.computed,
               "sections": {s.key: s.status for s in result.sections}, "failures": result.failures}
    if json_output:
        print_json(payload)
    else:
        for section in result.sections:
            typer.echo(f"  {section.title}: {section.status}" + (f" ({section.note})" if section.note else ""))
        typer.echo(f"report: {result.html} ({result.seconds:.0f} s; {result.reused} finished units reused)")
    if result.failures:
        raise Failed(f"{len(result.failures)} section(s) failed, e.g. {result.failures[0]}")


def _run(config, out, backend, device, on_section, on_tick):
    try:
        return run_study(config, out, backend, device, on_section, on_tick)
    except KeyboardInterrupt as interrupt:
        partial = interrupt.args[0] if interrupt.args else None
        where = f" {partial.html}" if partial is not None else ""
        raise Failed(f"interrupted; partial report in{where}. Re-run the same command to resume.",
                     EXIT_INTERRUPTED) from None


def _plan(config, out: Path, device: str) -> dict:
    """The study's plan (`study.plan`) as plain data: sections, units, pending units, expected seconds, rates."""
    from ..study.plan import calibrate, plan_study

    rates = calibrate(device)
    sections = plan_study(config, out, rates)
    known = [s.seconds for s in sections if s.seconds is not None]
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return {"device": device, "sections": [vars(s) for s in sections],
            "expected_seconds": sum(known) if len(known) == len(sections) else None,
            "upper_bound_seconds": sum(s.bounded for s in sections) if len(known) == len(sections) else None,
            "preset": config.preset, "goal_seconds": GOALS.get(config.preset, {}).get(kind),
            "rates_gflops": {"gd": rates.gd / 1e9, "kernel_products": rates.gemm / 1e9,
                             "eigensolves": rates.dense / 1e9},
            "overheads_ms": {"gd_step": 1e3 * rates.step, "call": 1e3 * rates.call},
            "method": "per-unit operation counts (cost model) / this machine's rates, plus fixed overheads per GD "
                      "step and per unit or sweep task, from a one-second calibration"}


def _duration(seconds) -> str:
    if seconds is None:
        return "unknown"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _verdict(goal: float, expected: float, bounded: float) -> str:
    """Whether a plan of `expected` seconds, `bounded` of them width scans' upper bounds, fits `goal` seconds."""
    shrink = "shrink the sections that take the most (grids, draws, seeds, step budgets) with --config"
    if expected <= goal:
        return "within it"
    if expected - bounded <= goal:
        return (f"beyond it as an upper bound only: {_duration(bounded)} of it are width scans planned as if every "
                f"width ran its whole step budget, where a seed's scan ends two widths after it succeeds; the rest "
                f"({_duration(expected - bounded)}) is within it. If a run takes longer, {shrink}")
    return f"beyond it: {shrink}"


def _print_plan(plan: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rates = plan["rates_gflops"]
    table = Table(title=f"Plan on this machine ({plan['device']}): expected {_duration(plan['expected_seconds'])}")
    for column in ("section", "units", "to compute", "expected time"):
        table.add_column(column, justify="left" if column == "section" else "right")
    for section in plan["sections"]:
        expected = f"invalid: {section['error']}" if section["error"] else _duration(section["seconds"])
        if section["unknown"]:
            expected += f" ({section['unknown']} units without a cost model)"
        table.add_row(section["title"], str(section["units"]), str(section["pending"]), expected)
    console = Console()
    console.print(table)
    where = [f"  {section['key']}: {section['dominant']}" for section in plan["sections"] if section["dominant"]]
    if where:
        console.print("Where the time goes (the group of units with the most expected time):\n" + "\n".join(where),
                      highlight=False)
    goal, expected, bounded = plan["goal_seconds"], plan["expected_seconds"], plan["upper_bound_seconds"]
    if goal is not None and expected is not None:
        console.print(f"The {plan['preset']} preset is sized for {_duration(goal)} on {plan['device']} (its whole "
                      f"study); this plan expects {_duration(expected)}: {_verdict(goal, expected, bounded)}.",
                      highlight=False)
    overheads = plan["overheads_ms"]
    console.print(f"Estimate: each unit's operation count (cost model, overparam.study.plan) divided by rates "
                  f"measured now with one torch thread (GD {rates['gd']:.2g}, kernel products "
                  f"{rates['kernel_products']:.2g}, eigensolves {rates['eigensolves']:.2g} GFLOP/s), plus "
                  f"{overheads['gd_step']:.2g} ms per GD step and {overheads['call']:.2g} ms per unit or sweep task; "
                  "width scans as if every width ran (an upper bound). An order of magnitude, not a promise. Units "
                  "already in --out are not counted.")
