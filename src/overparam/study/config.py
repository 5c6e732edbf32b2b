"""The study's configuration: shared settings, one validated config per section, presets as data, TOML.

`StudyConfig` holds what every section shares (activations, d, data seed, sigma, init, tol, delta),
which sections run, and per-section settings over each section's defaults (its `Config` dataclass,
whose defaults are the quick preset). A TOML file overrides a preset: a `[study]` table for the shared
settings and one table per section, e.g.

    [study]
    activations = ["relu", "exp"]
    [training]
    widths = [256, 1024]
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..activations import PAPERS, resolve
from .framework import SectionConfig
from . import registry
from .registry import section

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INITS = ("coupled", "independent")


@dataclass(frozen=True)
class StudyConfig:
    """Shared settings, the sections to run, and {section: {field: value}} over each section's defaults."""

    preset: str = "quick"
    activations: tuple[str, ...] = PAPERS
    d: int = 8
    seed: int = 0
    sigma: float = 1.0
    init: str = "coupled"
    tol: float = 1e-3
    delta: float = 0.25
    sections: tuple[str, ...] = field(default_factory=registry.keys)
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "activations", tuple(self.activations))
        object.__setattr__(self, "sections", tuple(self.sections))
        if not self.activations:
            raise ValueError("give at least one activation")
        for activation in self.activations:
            resolve(activation)
        if len(set(self.activations)) != len(self.activations):
            raise ValueError(f"activations repeat: {', '.join(self.activations)}")
        for name, value in (("d", self.d), ("seed", self.seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "d" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'd' else 0}, got {value!r}")
        if not (isinstance(self.sigma, (int, float)) and self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a positive number, got {self.sigma!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be coupled or independent, got {self.init!r}")
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ValueError(f"delta must lie in (0, 1), got {self.delta!r}")
        unknown = [key for key in (*self.sections, *self.settings) if key not in registry.MODULES]
        if unknown:
            raise ValueError(f"unknown section {unknown[0]!r}: choose from {', '.join(registry.MODULES)}")

    def section(self, key: str) -> SectionConfig:
        """The validated settings of section `key`: its Config's defaults with this study's overrides."""
        kind = section(key).Config
        values = dict(self.settings.get(key, {}))
        names = [f.name for f in fields(kind)]
        unknown = [name for name in values if name not in names]
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r} in [{key}]: choose from {', '.join(names)}")
        try:
            cfg = kind(**values)
            cfg.check_with(self)
        except ValueError as error:
            raise ValueError(f"[{key}] {error}") from None
        return cfg

    def validate(self) -> "StudyConfig":
        """Build every section's settings (raises ValueError with one line on the first invalid one)."""
        for key in registry.keys():
            self.section(key)
        return self

    def with_settings(self, key: str, **values) -> "StudyConfig":
        """The same study with section `key`'s fields set to `values`."""
        merged = {k: dict(v) for k, v in self.settings.items()}
        merged.setdefault(key, {}).update(values)
        return replace(self, settings=merged)

    def with_activations(self, activations) -> "StudyConfig":
        """The same study, every section run for these activations (names or 'module:attribute')."""
        return replace(self, activations=tuple(activations))

    def only(self, sections) -> "StudyConfig":
        unknown = set(sections) - set(registry.MODULES)
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}: choose from {', '.join(registry.MODULES)}")
        return replace(self, sections=tuple(s for s in registry.MODULES if s in sections))

    def core(self) -> dict:
        """The shared settings (the `[study]` table)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sections", "settings")}

    def to_data(self, sections=None) -> dict:
        """Every setting, shared and per section (defaults filled in; `sections`: those tables only, default
        every registered section): what `from_data` reads back."""
        data = {"study": {**self.core(), "sections": list(self.sections)}}
        for key in (registry.keys() if sections is None else sections):
            cfg = self.section(key)
            data[key] = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        return data

    def to_toml(self, sections=None) -> str:
        """The configuration as TOML (`overparam study --config FILE` runs exactly it): [study] and the tables
        of `sections` (default: those this study runs)."""
        data = self.to_data(sections if sections is not None else self.sections)
        return "\n".join(_toml_table(name, values) for name, values in data.items())

    @classmethod
    def from_data(cls, data: dict, base: "StudyConfig | None" = None) -> "StudyConfig":
        """`base` (default: the quick preset) with `data`'s tables over it: [study] and one per section."""
        base = base or cls()
        unknown = [name for name in data if name != "study" and name not in registry.MODULES]
        if unknown:
            raise ValueError(f"unknown table [{unknown[0]}]: use [study] or one of {', '.join(registry.MODULES)}")
        core = dict(data.get("study", {}))
        names = {f.name for f in fields(cls)} - {"settings"}
        wrong = [name for name in core if name not in names]
        if wrong:
            raise ValueError(f"unknown setting {wrong[0]!r} in [study]: choose from {', '.join(sorted(names))}")
        for name in ("activations", "sections"):
            if name in core and not isinstance(core[name], (list, tuple)):
                raise ValueError(f"{name} in [study] must be a list, got {core[name]!r}")
        settings = {k: dict(v) for k, v in base.settings.items()}
        for key in registry.keys():
            if key in data:
                if not isinstance(data[key], dict):
                    raise ValueError(f"[{key}] must be a table of settings, got {data[key]!r}")
                settings.setdefault(key, {}).update(data[key])
        config = replace(base, **core, settings=settings)
        return config.validate()

    @classmethod
    def from_toml(cls, path: str | Path, base: "StudyConfig | None" = None) -> "StudyConfig":
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
        return cls.from_data(data, base)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _toml_table(name: str, values: dict) -> str:
    return "\n".join([f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items()), ""])


#: The presets as data: tables over the defaults (the quick preset), as in a TOML file.
PRESETS = {
    # quick: the defaults, at d = 16 where GD's theory:3 budgets fit 8000 steps up to n = 256 (at d = 8 relu
    # needs 21,096 steps at n = 256, m = 2048), so the optimisation threshold reaches n = 256.
    "quick": {"study": {"preset": "quick", "d": 16}, "threshold": {"ns": [16, 32, 64, 128, 256]}},
    # paper: a night (<= 8 h planned, `overparam study --preset paper --plan`) on 2 CPU cores; beside quick: more
    # n (threshold to n = 256, kernel threshold to 256 and m = 2^24), 8 draws x 4 seeds, the d-axis over
    # d = 8..64, d = 16. Left out as they do not fit a night (GD steps of the theory:3 budget, from
    # lambda_max/lambda of H*): d = 4 (exp and softmax need 2.8e5 steps at n = 32, 1.6e8 at n = 128), n = 512,
    # exp and softmax at d = 8 beyond n = 64 (3.4e4 steps at n = 128, 1.7e5 at 256), and the former
    # 2e5-step generalisation and 2e4-step training budgets (runs that fail use all of them).
    "paper": {
        "study": {"preset": "paper", "d": 16, "delta": 0.1},
        "concentration": {"n": 256, "widths": [2**p for p in range(6, 18)], "seeds": 16},
        "training": {"n": 128, "widths": [512, 2048, 8192], "seeds": 8, "steps": 5000},
        "laziness": {"n": 128, "widths": [512, 2048, 8192], "seeds": 8, "steps": 5000},
        "threshold": {"ns": [16, 32, 64, 128, 256], "kernel_ns": [16, 32, 64, 128, 256],
                      "widths": [2**p for p in range(1, 13)], "draws": 8, "seeds": 4, "max_steps": 20000,
                      "kernel_widths": [2**p for p in range(6, 25)], "dimension_ns": [32, 64],
                      "dimension_ds": [8, 16, 32, 64], "lambda_ns": [*(2**p for p in range(4, 15)), 20000]},
        "perturbation": {"n": 128, "widths": [512, 2048, 8192], "seeds": 8, "steps": 5000},  # training's runs
        "initialisation": {"n": 128, "width": 8192, "seeds": 8, "steps": 5000},
        "diffusion": {"data": "gmm:k=8,d=2", "n": 4096, "width": 2048, "steps": 3000, "sampler_steps": 200,
                      "samples": 2000, "score_samples": 8192, "widths": [256, 512, 1024, 2048],
                      "ns": [1024, 2048, 4096], "twins": False},
        "generalisation": {"n": 128, "ns": [32, 64, 128, 256], "widths": [64, 256, 1024, 4096], "seeds": 4,
                           "steps": 20000},
        "real_data": {"ns": [32, 64, 128, 256, 365], "label_draws": 20, "train_n": 128, "width": 2048, "seeds": 4,
                      "steps": 5000, "threshold_ns": [32, 64, 128],
                      "threshold_widths": [2**p for p in range(1, 11)], "threshold_seeds": 4, "max_steps": 20000},
        "lazy_rich": {"widths": [256, 1024, 4096], "alphas": [10 ** (k / 4) for k in range(-12, 5)],
                      "seeds": 4, "steps": 5000, "test": 2000},
    },
    "full": {
        "study": {"preset": "full", "d": 32, "delta": 0.05},
        "concentration": {"n": 1024, "widths": [2**p for p in range(6, 21)], "seeds": 32},
        "training": {"n": 512, "widths": [2048, 8192, 32768, 131072], "seeds": 16, "steps": 50000},
        "laziness": {"n": 512, "widths": [2048, 8192, 32768, 131072], "seeds": 16, "steps": 50000},
        "threshold": {"ns": [16, 32, 64, 128, 256, 512, 1024], "kernel_ns": [16, 32, 64, 128, 256, 512],
                      "widths": [2**p for p in range(1, 19)], "draws": 16, "seeds": 8, "max_steps": 400000,
                      "kernel_widths": [2**p for p in range(6, 25)], "dimension_ns": [32, 64, 128, 256],
                      "dimension_ds": [4, 8, 16, 32, 64, 128], "lambda_ns": [*(2**p for p in range(4, 15)), 20000]},
        "perturbation": {"n": 512, "widths": [2048, 8192, 32768, 131072]},
        "initialisation": {"n": 512, "width": 32768, "seeds": 16, "steps": 50000},
        "diffusion": {"data": "gmm:k=8,d=2", "n": 32768, "width": 65536, "steps": 20000, "sampler_steps": 500,
                      "samples": 5000, "score_samples": 65536, "widths": [2**p for p in range(10, 17)],
                      "ns": [2**p for p in range(11, 16)], "twins": False},
        "generalisation": {"n": 1024, "ns": [64, 128, 256, 512, 1024, 2048], "seeds": 8,
                           "widths": [2**p for p in range(6, 19)], "steps": 1000000, "test": 5000},
        "real_data": {"classes": list(range(10)), "ns": [64, 128, 256, 512, 1024, 1797], "label_draws": 50,
                      "train_n": 1024, "width": 16384, "seeds": 16, "steps": 100000,
                      "threshold_ns": [64, 128, 256, 512, 1024], "threshold_widths": [2**p for p in range(1, 16)],
                      "threshold_seeds": 16, "max_steps": 200000},
        "lazy_rich": {"n": 64, "widths": [256, 1024, 4096, 16384, 65536],
                      "alphas": [10 ** (k / 4) for k in range(-16, 7)], "seeds": 8, "steps": 50000, "test": 5000},
    },
}


#: What each preset is sized for: seconds of expected time (`overparam study --plan`) per device kind.
GOALS = {"quick": {"cpu": 600}, "paper": {"cpu": 8 * 3600, "cuda": 3600}}


def preset(name: str) -> StudyConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use quick, paper or full")
    return StudyConfig.from_data(PRESETS[name])
