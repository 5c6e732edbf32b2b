"""Shared pieces of the CLI: the typer app, the one place errors become exit codes, JSON and progress output."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import typer

try:  # typer >= 0.2x vendors click; older typer runs on click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from ..activations import PAPERS
from ..data import SOURCES
from ..validation import UserInputError

app = typer.Typer(
    name="overparam",
    help=f"Over-parameterized two-layer networks ({', '.join(PAPERS)} or your own activation), trained as the "
         "theorems analyse them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: --data's help: built-in specs (`overparam.data.SOURCES`) with their options, or a file.
DATA_HELP = f"{', '.join(SOURCES)} (options after a colon, e.g. teacher:width=16, digits:classes=3,5), or a .npz (arrays X, y) " \
            "or .csv file (table.csv:labels=3,4)"
#: Exceptions that mean the user gave bad input (UserInputError is a ValueError; OverflowError and
#: FloatingPointError: a sigma or scale beyond float64): one line, exit code 2. Others are bugs.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OverflowError, FloatingPointError)
#: Exit codes: success, a run that failed or diverged, bad input, interrupted (128 + SIGINT).
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class Failed(Exception):
    """The command ran and printed its result, but that result is a failure (a diverged run, a failed
    section) or was cut short: `run` prints `overparam: message` on stderr and exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str) -> None:
    """Stop the command with `overparam: error: message` on stderr and exit code 2 (see `run`)."""
    raise UserInputError(message)


def _plain(value):
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def print_json(payload: dict) -> None:
    """One JSON object on stdout (non-finite floats become null / "inf": strict JSON)."""
    typer.echo(json.dumps(_plain(payload), allow_nan=False))


def show_progress(json_mode: bool, quiet: bool = False) -> bool:
    """Progress bars only for a person at a terminal (stdout and stderr), never with --json or --quiet."""
    return not (json_mode or quiet) and sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def stage_bars(enabled: bool) -> Iterator[Callable | None]:
    """A library progress callback `progress(stage, done, total)` drawn as one rich bar per stage on stderr,
    with its elapsed time and an estimate of the time left (a pulsing bar where total is None: one LAPACK
    call of unknown progress); None when not `enabled`. Bars stay after their stage ends."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bars:
        tasks: dict[str, int] = {}

        def finish_open_stages() -> None:  # a stage ends when the next begins: stop its pulsing or its clock
            for task in bars.tasks:
                if not task.finished:
                    bars.update(task.id, total=task.completed or 1, completed=task.completed or 1)

        def update(stage: str, done: float, total: float | None) -> None:
            if stage not in tasks:
                finish_open_stages()
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update
        finish_open_stages()


#: Completion events of `interruptible` workers (one per call).
_WORKERS: list[threading.Event] = []


def interruptible(work: Callable):
    """work() in a daemon thread while this (main) thread waits: Ctrl-C then stops the command at once,
    also inside one long native call (a Cholesky factorisation of minutes) that would otherwise hold the
    KeyboardInterrupt until it returns; the abandoned thread ends with the process."""
    outcome: dict = {}
    finished = threading.Event()  # not Thread.is_alive: Python 3.11 reports False after an interrupted join
    _WORKERS.append(finished)

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=target, daemon=True).start()
    while not finished.wait(0.2):
        pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def parse_device(device: str) -> str:
    """`device` if it is cpu, cuda or cuda:N, else a one-line error (torch.device raises RuntimeError)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        fail(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    return device


def output_folder(out: Path) -> Path:
    """Create the --out folder (and parents); a path that exists as a file is a one-line error."""
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} is a file; give a folder (it is created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


@app.callback()
def main() -> None:
    """Over-parameterized two-layer networks, trained as the theorems analyse them."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def run() -> None:
    """Console-script entry point, and the one place exceptions become exit codes: bad usage or
    input (USER_ERRORS) -> 2 with one line on stderr, a failed result (`Failed`) -> its code (1:
    diverged or failed, 130: interrupted) with one line, Ctrl-C -> 130; anything else is a bug and
    keeps its traceback."""
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as error:
        typer.echo(error.format_message())
        sys.exit(0)
    except click_errors.UsageError as error:
        ctx = error.ctx
        command = f"overparam {ctx.info_name} --help" if ctx is not None and ctx.parent else "overparam --help"
        typer.echo(f"overparam: error: {error.format_message()} (see '{command}')", err=True)
        sys.exit(EXIT_USAGE)
    except USER_ERRORS as error:
        typer.echo(f"overparam: error: {_one_line(error)}", err=True)
        sys.exit(EXIT_USAGE)
    except Failed as failure:
        typer.echo(f"overparam: {_one_line(failure)}", err=True)
        sys.exit(failure.code)
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt inside a command into this code
        typer.echo("overparam: interrupted", err=True)
        if not all(finished.is_set() for finished in _WORKERS):
            sys.stdout.flush()  # an `interruptible` worker still inside native code: finalising the
            sys.stderr.flush()  # interpreter under it can abort the process (SIGABRT), so skip that
            os._exit(code)
    sys.exit(code if isinstance(code, int) else 0)
