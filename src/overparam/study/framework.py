"""The shape of a study section: units of work that compute named records, and a report built from them.

A section is a subclass of `StudySection` in one module, listed in `registry.SECTIONS`:

- `Config`: its own frozen dataclass of settings (a `SectionConfig`), validated where it is built;
- `units(study, cfg)`: the units of work, frozen dataclasses (`Unit`) whose `compute(ctx)` returns a
  record (a dataclass) and whose cache key is derived from their class and fields, never written by hand;
- `report(study, cfg, records)`: tables (columns picked from records by field name), figures (`Plot`:
  the stem written once) and a reading built from the records.

The runner (`runner.run_study`) owns the rest: it computes or reuses every unit through the study's
store, ticks the progress, saves figures and tables, and sets the section's status.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from .report import Fact, Table

#: Bump to recompute every cached unit (a change of the record format shared by all sections).
SCHEMA = 1


# ----------------------------------------------------------------------------------- records


def to_json(record) -> Any:
    """A record (dataclass, possibly nested in lists, tuples and dicts) as plain JSON data."""
    if dataclasses.is_dataclass(record):
        return {f.name: to_json(getattr(record, f.name)) for f in fields(record)}
    if isinstance(record, (list, tuple)):
        return [to_json(value) for value in record]
    if isinstance(record, dict):
        return {str(key): to_json(value) for key, value in record.items()}
    return record


def from_json(kind, value) -> Any:
    """The inverse of `to_json` for the annotated type `kind` (a dataclass, list[...], tuple[...], dict[...])."""
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: from_json(hints[f.name], value[f.name]) for f in fields(kind) if f.name in value})
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        concrete = [a for a in arguments if a is not type(None)]
        return from_json(concrete[0], value) if len(concrete) == 1 else value
    if origin is list:
        return [from_json(arguments[0], v) for v in value] if arguments else list(value)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(from_json(arguments[0], v) for v in value)
        return tuple(from_json(a, v) for a, v in zip(arguments, value)) if arguments else tuple(value)
    if origin is dict:
        return {k: from_json(arguments[1], v) for k, v in value.items()} if arguments else dict(value)
    return value


class RunStatus:
    """For a record of one training run with a `status` field ("converged", "max_steps", "failed", ...)."""

    @property
    def ok(self) -> bool:
        """The run produced numbers (it did not fail before or during training)."""
        return self.status != "failed"

    @property
    def converged(self) -> bool:
        return self.status == "converged"


# ------------------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One unit of work: a frozen dataclass of everything its result depends on.

    Subclasses set RECORD (the dataclass `compute` returns) and may bump VERSION when `compute` changes
    what it returns for the same fields. `compute(ctx)` may use only its fields, `ctx.device` and
    `ctx.request(other_unit)`.
    """

    RECORD: ClassVar[type]
    VERSION: ClassVar[int] = 1

    def compute(self, ctx: "UnitContext"):
        raise NotImplementedError

    @property
    def key(self) -> str:
        """`module.Class/vVERSION.SCHEMA:digest`, the digest of the fields as canonical JSON."""
        body = json.dumps(to_json(self), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(body.encode()).hexdigest()[:24]
        kind = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
        return f"{kind}/v{self.VERSION}.{SCHEMA}:{digest}"


@dataclass
class UnitContext:
    """What a unit's compute may use besides its own fields: the device, other units (`request`), and for
    units that run width sweeps (`sweeps.SweepSlice`) the study's runs store and the sweep backend."""

    device: str
    request: Callable[[Unit], Any]
    store_path: Path | None = None
    backend: str = "local"


# ------------------------------------------------------------------------------------ config


def _matches(value, kind) -> bool:
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (str, bool):
        return isinstance(value, kind)
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, arguments[0]) for v in value)
    return True


def _type_name(kind) -> str:
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        return f"a list of {_type_name(arguments[0])}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


@dataclass(frozen=True)
class SectionConfig:
    """Base of a section's settings: lists become tuples, every field is type-checked, then `check()`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            kind = hints[f.name]
            if typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is float:
                value = tuple(float(v) if _matches(v, float) else v for v in value)
                object.__setattr__(self, f.name, value)
            elif kind is float and _matches(value, float):
                object.__setattr__(self, f.name, float(value))
            if not _matches(getattr(self, f.name), kind):
                raise ValueError(f"{f.name} must be {_type_name(kind)}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Raise ValueError (one line) for settings that cannot be run; subclasses add their rules."""

    def check_with(self, core) -> None:
        """Rules that involve the study's shared settings (`StudyConfig`: init, d, activations)."""


def require_positive(name: str, value) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def require_grid(name: str, values, minimum: int = 1) -> None:
    """A non-empty, strictly increasing grid of positive values (at least `minimum` of them)."""
    if len(values) < minimum:
        raise ValueError(f"{name} needs at least {minimum} value{'s' if minimum > 1 else ''}, got {list(values)}")
    if any(not v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {list(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {list(values)}")


def require_seeds(name: str, value: int) -> None:
    if value < 2:
        raise ValueError(f"{name} must be at least 2: the section draws intervals over seeds, got {value}")


def require_even(name: str, widths, init: str) -> None:
    odd = [m for m in widths if m % 2]
    if init == "coupled" and odd:
        raise ValueError(f"{name} must be even under coupled init (neurons come in pairs), got {odd}")


# ------------------------------------------------------------------------------------ report


@dataclass
class Plot:
    """A matplotlib figure the runner saves as figures/<stem>.png and .svg."""

    stem: str
    caption: str
    figure: Any = field(repr=False)


def table(stem: str, caption: str, records, columns) -> Table:
    """A table of `records`: columns are (header, field name of the record or a function of it) pairs."""
    return Table(stem, caption, [header for header, _ in columns],
                 [[(get(r) if callable(get) else getattr(r, get)) for _, get in columns] for r in records])


@dataclass
class Report:
    """What a section shows: reading paragraphs, tables (`report.Table`), plots, and the facts it adds to
    the study's summary table (one row per activation, `report.Fact`)."""

    reading: list[str] = field(default_factory=list)
    tables: list = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)


class StudySection:
    """Base of a section; see the module docstring. `records` maps each unit to its record."""

    KEY: ClassVar[str]
    TITLE: ClassVar[str]
    Config: ClassVar[type[SectionConfig]] = SectionConfig

    def units(self, study, cfg) -> list[Unit]:
        raise NotImplementedError

    def report(self, study, cfg, records: Mapping[Unit, Any]) -> Report:
        raise NotImplementedError
