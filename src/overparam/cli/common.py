"""Shared pieces of the CLI: the typer app, the one-line error exit, JSON and progress output."""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import typer

app = typer.Typer(
    name="overparam",
    help="Over-parameterized two-layer networks (relu, exp, softmax), trained as the theorems analyse them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Exceptions that mean the user gave bad input: reported in one line with exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OverflowError, FloatingPointError,
               KeyError)


def fail(message: str) -> None:
    """Print `overparam: error: message` on stderr and exit with code 2."""
    typer.echo(f"overparam: error: {message}", err=True)
    raise typer.Exit(code=2)


def user_errors(command: Callable) -> Callable:
    """Decorator: turn the library's user-input exceptions into a one-line error and exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            text = str(error).strip().splitlines()
            fail(text[0] if text else type(error).__name__)

    return wrapper


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


def show_progress(json_mode: bool) -> bool:
    """Progress bars only for a person at a terminal, never with --json."""
    return not json_mode and sys.stderr.isatty()


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
    """Over-parameterized two-layer networks (relu, exp, softmax), trained as the theorems analyse them."""


def _is(error: BaseException, name: str) -> bool:
    # typer >= 0.2x vendors click privately, older typer uses click: match the class by name.
    return any(cls.__name__ == name for cls in type(error).__mro__)


def run() -> None:
    """Console-script entry point: usage errors become one line on stderr with exit code 2."""
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        typer.echo("overparam: interrupted", err=True)
        sys.exit(130)
    except Exception as error:
        if _is(error, "NoArgsIsHelpError"):
            typer.echo(error.format_message())
            sys.exit(0)
        if _is(error, "UsageError"):
            ctx = getattr(error, "ctx", None)
            command = f"overparam {ctx.info_name} --help" if ctx is not None and ctx.parent else "overparam --help"
            typer.echo(f"overparam: error: {error.format_message()} (see '{command}')", err=True)
            sys.exit(2)
        if _is(error, "Abort"):
            typer.echo("overparam: interrupted", err=True)
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)
