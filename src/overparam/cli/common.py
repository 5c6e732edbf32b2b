"""Shared pieces of the CLI: the typer app, the one place errors become exit codes, JSON and progress output."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import tempfile
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
from ..models import resolve_device
from ..resources import InsufficientMemory
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
#: Exit codes: success, a run that failed or diverged, bad input (also a size this machine cannot
#: hold: the input asks too much of it), interrupted (128 + SIGINT).
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
#: What to change after an out-of-memory error that no check foresaw (see `out_of_memory`).
OUT_OF_MEMORY_ADVICE = "use a smaller --n or --width, a lower --dense-limit (the matrix-free eigensolver) or " \
                       "another --device"


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


def json_text(payload) -> str:
    """`payload` as strict JSON (non-finite floats become null / "inf", numpy values plain)."""
    return json.dumps(_plain(payload), allow_nan=False)


def print_json(payload: dict) -> None:
    """One JSON object on stdout (see `json_text`)."""
    typer.echo(json_text(payload))


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
    resolve_device(device)  # a GPU that is not there is refused here, before any work
    return device


def output_folder(out: Path, flag: str = "--out") -> Path:
    """Create the --out folder (and parents) and make sure a file can be written in it; a path that
    exists as a file, or one that cannot be created or written (`cannot_write`), is a one-line error."""
    try:
        if out.exists() and not out.is_dir():
            fail(f"{flag} {str(out)!r} is a file; give a folder (it is created when missing)")
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        cannot_write(out, flag, error)
    return out


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"overparam {__version__}")
        raise typer.Exit()


def output_file(path: Path, flag: str, make_folder: bool = False) -> Path:
    """A file the command will write (a store, a figure), checked without writing anything: it is not a
    folder, an existing file opens for appending, and its folder (with make_folder, the nearest folder
    that exists: the writer creates the rest) takes a new file; otherwise a one-line error (`cannot_write`)."""
    folder = path.parent
    try:
        while make_folder and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not folder.is_dir():
            raise (NotADirectoryError(errno.ENOTDIR, "not a directory") if folder.exists()
                   else FileNotFoundError(errno.ENOENT, "no such file or directory"))
        if path.exists():
            open(path, "ab").close()  # opened for appending and closed: the contents stay as they are
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        cannot_write(path, flag, error)
    return path


#: Why a path cannot be written, in words, by errno (anything else: the system's own words).
WRITE_ERRORS = {
    errno.ENOENT: "its folder does not exist or takes no new files",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "it is on a read-only file system",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.ENAMETOOLONG: "the name is too long",
}


def cannot_write(path: Path, flag: str, error: OSError) -> None:
    """Stop with `cannot write --flag 'path': <the reason in words>` (exit code 2)."""
    reason = WRITE_ERRORS.get(error.errno, (error.strerror or str(error) or type(error).__name__).lower())
    fail(f"cannot write {flag} {str(path)!r}: {reason}")


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Over-parameterized two-layer networks, trained as the theorems analyse them."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed: a MemoryError (numpy's, `InsufficientMemory`),
    torch's OutOfMemoryError (a GPU), or the RuntimeError torch's CPU allocator raises."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error)))


def memory_line(error: BaseException) -> str:
    """One line for an allocation that failed: `InsufficientMemory` already says what to change."""
    if isinstance(error, InsufficientMemory):
        return str(error)
    return f"out of memory ({_one_line(error)}); {OUT_OF_MEMORY_ADVICE}"


def run() -> None:
    """Console-script entry point, and the one place exceptions become exit codes: bad usage or
    input (USER_ERRORS) and memory the machine does not have (`out_of_memory`) -> 2 with one line
    on stderr, a failed result (`Failed`) -> its code (1: diverged or failed, 130: interrupted)
    with one line, Ctrl-C -> 130; anything else is a bug and keeps its traceback."""
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
    except Exception as error:
        if not out_of_memory(error):
            raise  # a bug: its traceback is the report
        typer.echo(f"overparam: error: {memory_line(error)}", err=True)
        sys.exit(EXIT_USAGE)
    if code == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt inside a command into this code
        typer.echo("overparam: interrupted", err=True)
        if not all(finished.is_set() for finished in _WORKERS):
            sys.stdout.flush()  # an `interruptible` worker still inside native code: finalising the
            sys.stderr.flush()  # interpreter under it can abort the process (SIGABRT), so skip that
            os._exit(code)
    sys.exit(code if isinstance(code, int) else 0)
