"""The study's sections, in report order: key -> the import path of the module that defines it.

Adding a section is one module defining `SECTION` (a `framework.StudySection`) and one line here, or
`register(key, "your.module")` from outside the package.
"""

from __future__ import annotations

from importlib import import_module

MODULES = {key: f"{__package__}.{name}" for key, name in (
    ("concentration", "concentration"),
    ("training", "training"),
    ("laziness", "laziness"),
    ("threshold", "thresholds"),
    ("perturbation", "perturbation"),
    ("initialisation", "initialisation"),
    ("diffusion", "diffusion"),
    ("generalisation", "generalisation"),
    ("real_data", "real_data"),
)}

#: The built-in sections (`MODULES` may hold more: see `register`).
SECTIONS = tuple(MODULES)


def register(key: str, module_path: str) -> None:
    """Add the section defined by `module_path` (a module with a `SECTION`) under `key`, after the others."""
    if key in MODULES and MODULES[key] != module_path:
        raise ValueError(f"section {key!r} is already registered (module {MODULES[key]})")
    MODULES[key] = module_path


def keys() -> tuple[str, ...]:
    """Every registered section, in report order."""
    return tuple(MODULES)


def module(key: str):
    """The module of section `key` (imported on first use)."""
    if key not in MODULES:
        raise ValueError(f"unknown section {key!r}: choose from {', '.join(MODULES)}")
    return import_module(MODULES[key])


def section(key: str):
    """The section object registered under `key`: its module's SECTION."""
    return module(key).SECTION
