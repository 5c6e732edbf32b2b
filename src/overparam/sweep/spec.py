"""What a sweep runs: a TOML [sweep] table (or the same keys as CLI flags), expanded into groups.

    [sweep]
    activations = ["relu", "exp", "softmax"]   # activations.BUILTIN names, or "module:attribute"
    widths = [64, 128, 256, 512]               # m
    n = [16, 32, 64]                           # points
    d = 8                                      # input dimension
    seeds = 8                                  # a count (seeds 0..7) or a list of seeds
    init = "coupled"                           # independent | coupled
    data = "sphere"                            # sphere | teacher | moons | circles | digits, options: "digits:classes=3,5"
    lr = "auto"                                # "auto" (1 / lambda_max(Theta(W(0)))) or a number
    tol = 1e-3                                 # target ||F - y||_2 <= tol
    steps = 2000                               # a number, or "theory:c" (docs/mathematics.md#thresholds)

More keys: k (outputs, 1), scale (kappa, the paper's default), sigma (1.0), data_seed
(0: one data set per (n, d, k), the theorems' probability is over the initialisation only;
"seed": every seed draws its own data too), max_steps (cap on a theory budget, 100000),
dtype ("float64"), record_every (curve resolution, default budget // 1000), kernel_widths (the widths of
each seed's nested kernel pass, from which `overparam threshold` measures the kernel threshold; default the
sweep's widths, "none" for no pass).
activations, widths, n, d, k, init, scale, sigma, data and lr may be lists: the sweep is their
product. Runs that differ only in seed form one group, trained as one batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..activations import parse_scale, resolve
from ..data import check_spec, fixed_shape
from ..models import INITS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Keys that may hold a list; the sweep is the product over them (in this order).
GRID_KEYS = ("activations", "widths", "n", "d", "k", "init", "scale", "sigma", "data", "lr")
SCALAR_KEYS = ("seeds", "data_seed", "tol", "steps", "max_steps", "dtype", "record_every", "kernel_widths")
DEFAULTS = {
    "d": 8, "k": 1, "seeds": 8, "init": "coupled", "scale": "default", "sigma": 1.0,
    "data": "sphere", "data_seed": 0, "lr": "auto", "tol": 1e-3, "steps": 2000,
    "max_steps": 100_000, "dtype": "float64", "record_every": None, "kernel_widths": None,
}
REQUIRED = ("activations", "widths", "n")


@dataclass(frozen=True)
class Group:
    """Runs that share every setting but the seed: trained together as one batch.

    `config` is plain data (the hash's input; the width is in it, the seed is not).
    """

    config: dict
    seeds: tuple[int, ...]
    config_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_hash", config_hash(self.config))

    def with_seeds(self, seeds) -> "Group":
        return Group(self.config, tuple(seeds))


def config_hash(config: dict) -> str:
    """First 16 hex digits of sha256 of the config as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: lists for the grid keys, scalars for the rest (see the module doc)."""

    activations: tuple[str, ...]
    widths: tuple[int, ...]
    n: tuple[int, ...]
    d: tuple[int, ...]
    k: tuple[int, ...]
    init: tuple[str, ...]
    scale: tuple[str | float, ...]
    sigma: tuple[float, ...]
    data: tuple[str, ...]
    lr: tuple[str | float, ...]
    seeds: tuple[int, ...]
    data_seed: int | str
    tol: float
    steps: int | str
    max_steps: int
    dtype: str
    record_every: int | None
    kernel_widths: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, table: dict) -> "SweepSpec":
        """Validate the keys of a [sweep] table; ValueError names the key and how to fix it."""
        unknown = sorted(set(table) - set(GRID_KEYS) - set(SCALAR_KEYS))
        if unknown:
            noun = "key" if len(unknown) == 1 else "keys"
            raise ValueError(f"unknown sweep {noun} {', '.join(map(repr, unknown))}; known keys: "
                             f"{', '.join(GRID_KEYS + SCALAR_KEYS)}")
        missing = [key for key in REQUIRED if key not in table]
        if missing:
            raise ValueError(f"the sweep needs {', '.join(missing)} (e.g. activations = [\"exp\"], "
                             "widths = [64, 128], n = [16, 32])")
        values = {**DEFAULTS, **table}
        grid = {key: _as_list(values[key], key) for key in GRID_KEYS}
        grid["activations"] = [_activation(v) for v in grid["activations"]]
        grid["init"] = [_choice(v, INITS, "init") for v in grid["init"]]
        grid["data"] = [_data(v) for v in grid["data"]]
        for key in ("widths", "n", "d", "k"):
            grid[key] = [_positive_int(v, key) for v in grid[key]]
        grid["sigma"] = [_positive_float(v, "sigma") for v in grid["sigma"]]
        grid["lr"] = [v if v == "auto" else _positive_float(v, "lr") for v in grid["lr"]]
        grid["scale"] = [_scale(v) for v in grid["scale"]]
        if "coupled" in grid["init"] and any(w % 2 for w in grid["widths"]):
            raise ValueError(f"coupled init pairs neurons, so every width must be even; got {grid['widths']}")
        for spec in grid["data"]:
            shape = fixed_shape(spec)
            if shape is not None and (grid["d"] != [shape[0]] or grid["k"] != [shape[1]]):
                raise ValueError(f"data = {spec!r} has its own shape: use d = {shape[0]} and k = {shape[1]}")
        seeds = values["seeds"]
        if isinstance(seeds, (list, tuple)):
            seeds = [_nonnegative_int(s, "seeds") for s in seeds]
            if len(set(seeds)) != len(seeds) or not seeds:
                raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
        else:
            seeds = list(range(_positive_int(seeds, "seeds")))
        data_seed = values["data_seed"]
        if data_seed != "seed":
            data_seed = _nonnegative_int(data_seed, "data_seed")
        tol = _float(values["tol"], "tol")
        if not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a finite number >= 0, got {values['tol']!r}")
        steps = _budget(values["steps"], tol)
        dtype = _choice(values["dtype"], ("float64", "float32"), "dtype")
        record_every = values["record_every"]
        if record_every is not None:
            record_every = _positive_int(record_every, "record_every")
        return cls(**{key: tuple(grid[key]) for key in GRID_KEYS}, seeds=tuple(seeds), data_seed=data_seed,
                   tol=tol, steps=steps, max_steps=_positive_int(values["max_steps"], "max_steps"),
                   dtype=dtype, record_every=record_every,
                   kernel_widths=_kernel_widths(values["kernel_widths"], grid["widths"], grid["init"]))

    def groups(self) -> list[Group]:
        """One Group per point of the grid, each holding all seeds."""
        groups = []
        for values in itertools.product(*(getattr(self, key) for key in GRID_KEYS)):
            point = dict(zip(GRID_KEYS, values))
            config = {
                "activation": point["activations"], "width": point["widths"], "n": point["n"],
                "d": point["d"], "k": point["k"], "init": point["init"], "scale": point["scale"],
                "sigma": point["sigma"], "data": point["data"], "data_seed": self.data_seed,
                "lr": point["lr"], "tol": self.tol, "steps": self.steps, "dtype": self.dtype,
                "record_every": self.record_every, "optimizer": "gd",
            }
            if isinstance(self.steps, str):
                config["max_steps"] = self.max_steps
            groups.append(Group(config, self.seeds))
        return groups

    @property
    def size(self) -> int:
        """Number of runs (grid points x seeds)."""
        return len(self.groups()) * len(self.seeds)


def load_spec(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    """Read the [sweep] table of a TOML file; `overrides` (e.g. CLI flags) replace its keys."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"sweep spec {str(path)!r} does not exist")
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    if "sweep" not in document or not isinstance(document["sweep"], dict):
        raise ValueError(f"{path} has no [sweep] table; start the file with [sweep]")
    return SweepSpec.from_dict({**document["sweep"], **(overrides or {})})


def theory_steps(multiple: float, initial_residual: float, tol: float, lr: float, width: int,
                 kappa: float, lam: float, cap: int) -> int:
    """docs/mathematics.md#thresholds budget T = c * 2 log(||F(0) - y||_2 / tol) / (eta_eff lambda), eta_eff = eta m kappa^2.

    0 when F(0) already meets tol; `cap` when the rate is zero or not finite (lambda <= 0).
    """
    if not initial_residual > tol:
        return 0
    rate = lr * width * kappa**2 * lam
    if not (rate > 0 and math.isfinite(rate)):
        return cap
    steps = multiple * 2.0 * math.log(initial_residual / tol) / rate
    return int(min(cap, math.ceil(steps)))


def budget_multiple(steps: int | str) -> float | None:
    """c of a "theory:c" budget, None for a fixed number of steps."""
    return float(steps.split(":", 1)[1]) if isinstance(steps, str) else None


def _budget(value, tol: float) -> int | str:
    if isinstance(value, str) and value.startswith("theory"):
        _, _, multiple = value.partition(":")
        try:
            c = float(multiple or 1.0)
        except ValueError:
            c = -1.0
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(f"steps = {value!r}: write 'theory:c' with a positive multiple c, e.g. 'theory:3'")
        if tol <= 0:
            raise ValueError("steps = 'theory:c' needs tol > 0 (the budget grows like log(||F(0) - y|| / tol))")
        return f"theory:{c:g}"
    return _nonnegative_int(value, "steps", "a number of steps or 'theory:c'")


def _kernel_widths(value, widths: list[int], inits: list[str]) -> tuple[int, ...]:
    """The nested pass's grid: increasing positive widths (even under coupled init), default the sweep's
    widths (sorted), () for "none"."""
    if value == "none":
        return ()
    if value is None:
        grid = sorted(widths)
    else:
        grid = [_positive_int(v, "kernel_widths") for v in _as_list(value, "kernel_widths")]
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"kernel_widths must be increasing, got {grid}")
    if "coupled" in inits and any(m % 2 for m in grid):
        raise ValueError(f"coupled init pairs neurons, so every kernel width must be even; got {grid}")
    return tuple(grid)


def _as_list(value, key: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{key} is an empty list; give at least one value")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{key} has repeated values {values}")
    return values


def _activation(value) -> str:
    """A built-in's name or 'module:attribute' naming an Activation, checked by resolving it."""
    if not isinstance(value, str):
        raise ValueError(f"activations = {value!r}: give names (strings) or 'module:attribute'")
    resolve(value)
    return value


def _choice(value, allowed, key: str) -> str:
    if value not in allowed:
        raise ValueError(f"{key} = {value!r} is not one of {', '.join(allowed)}")
    return value


def _data(value) -> str:
    """A built-in data spec (`data.check_spec`), e.g. "sphere" or "teacher:width=16"."""
    if not isinstance(value, str):
        raise ValueError(f"data = {value!r} is not a data spec such as \"sphere\" or \"teacher:width=16\"")
    check_spec(value)
    return value.strip()


def _float(value, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def _positive_float(value, key: str) -> float:
    number = _float(value, key)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{key} must be a positive finite number, got {value!r}")
    return number


def _nonnegative_int(value, key: str, what: str = "an integer >= 0") -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be {what}, got {value!r}")
    try:
        number = int(value)
        exact = number == value if isinstance(value, float) else True
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} must be {what}, got {value!r}") from None
    if not exact or number < 0:
        raise ValueError(f"{key} must be {what}, got {value!r}")
    return number


def _positive_int(value, key: str) -> int:
    number = _nonnegative_int(value, key, "a positive integer")
    if number < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return number


def _scale(value) -> str | float:
    """'default' (the paper's kappa per activation), '1', '1/sqrt(m)', '1/m' or a number."""
    if value == "default" or value is None:
        return "default"
    parse_scale(value, None, 2)  # raises a clear error for an unknown scale
    return value if isinstance(value, str) else float(value)
