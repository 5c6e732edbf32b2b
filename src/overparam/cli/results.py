"""`overparam results`: list and filter the runs of a store as a table, CSV, JSON or Parquet."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path
from typing import List, Optional

import pyarrow.parquet as pq
import typer

from ..sweep.store import COLUMNS, Store
from .common import app, fail, json_text, output_file

FORMATS = ("table", "csv", "json", "parquet")
TABLE_COLUMNS = ("activation", "init", "n", "d", "width", "seed", "status", "steps", "final_residual",
                 "kernel_distance", "lambda_min", "wall_seconds")


@app.command()
def results(
    store: Path = typer.Argument(..., help="runs store written by `overparam sweep`"),
    format: str = typer.Option("table", "--format", help="table, csv, json or parquet (parquet needs --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write csv, json or parquet to this file instead of stdout"),
    activation: Optional[str] = typer.Option(None, help="only this activation"),
    init: Optional[str] = typer.Option(None, help="only this init"),
    width: Optional[int] = typer.Option(None, help="only this width"),
    n: Optional[int] = typer.Option(None, help="only this n"),
    d: Optional[int] = typer.Option(None, help="only this d"),
    seed: Optional[int] = typer.Option(None, help="only this seed"),
    status: Optional[str] = typer.Option(None, help="converged, max_steps, diverged, failed or running"),
    where: Optional[List[str]] = typer.Option(None, help="more filters, column=value (repeatable)"),
) -> None:
    """One row per run; json is a list with one object per run (all columns, config parsed); parquet is
    `Store.runs_table` (all columns, config keys without a column of their own as config.KEY)."""
    if format not in FORMATS:
        fail(f"unknown format {format!r}: use table, csv, json or parquet")
    if format == "parquet" and out is None:
        fail("--format parquet writes a file: give it with --out FILE")
    if format == "table" and out is not None:
        fail("--out takes csv, json or parquet output: add --format csv, json or parquet")
    if out is not None and out.is_dir():
        fail(f"--out {str(out)!r} is a folder; give a file name")
    if out is not None:
        output_file(out, "--out", make_folder=True)
    if not store.exists():
        fail(f"store {str(store)!r} does not exist; run `overparam sweep` first")
    filters = {"activation": activation, "init": init, "width": width, "n": n, "d": d, "seed": seed,
               "status": status}
    for clause in where or []:
        name, equals, value = (part.strip() for part in clause.partition("="))
        if not equals or name not in COLUMNS:
            fail(f"--where takes column=value with a column among {', '.join(COLUMNS)}; got {clause!r}")
        filters[name] = _typed(name, value)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    with Store(store, create=False) as runs:
        if format == "parquet":
            written = runs.runs_table(**filters)
            pq.write_table(written, out)
            typer.echo(f"wrote {written.num_rows} run(s) to {out}")
            return
        rows = runs.runs(**filters)
    if format == "table":
        _print_table(rows, store)
        return
    with (open(out, "w", newline="") if out is not None else contextlib.nullcontext(sys.stdout)) as stream:
        if format == "json":
            stream.write(json_text(rows) + "\n")
        else:
            writer = csv.DictWriter(stream, fieldnames=list(COLUMNS), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "config": json.dumps(row["config"], sort_keys=True)})
    if out is not None:  # the file holds the data; stdout says where it went
        typer.echo(f"wrote {len(rows)} run(s) to {out}")


def _typed(name: str, value: str):
    """A --where value as its column's type (SQLite compares 8 and '8' as different)."""
    kind = COLUMNS[name].split()[0]
    try:
        return int(value) if kind == "INTEGER" else float(value) if kind == "REAL" else value
    except ValueError:
        fail(f"--where {name}={value!r}: {name} holds {'integers' if kind == 'INTEGER' else 'numbers'}")


def _print_table(rows: list[dict], store: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} run(s) in {store}")
    for name in TABLE_COLUMNS:
        table.add_column(name, justify="right" if name not in ("activation", "init", "status") else "left")
    for row in rows:
        cells = {name: _cell(row.get(name)) for name in TABLE_COLUMNS}
        if row.get("lambda_rounding"):  # lambda_min(H*) below its spectrum's rounding level: not a measurement
            cells["lambda_min"] += " (rounding)"
        table.add_row(*cells.values())
    Console().print(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
