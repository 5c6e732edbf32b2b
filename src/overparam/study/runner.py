"""`run_study`: every section in turn over one results folder, resumable and safe to interrupt.

Finished units of work are kept in DIR/runs.db (see `cache.UnitCache`; width sweeps keep their
runs there too), so a re-run reuses them. After every section the report is rewritten, so an
interrupted study leaves a valid partial report. A section whose module fails to import or to
run is reported as failed (status, note, `StudyResult.failures`); the others still run.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..activations import PAPERS
from ..models import resolve_device
from . import registry
from .cache import UnitCache
from .config import StudyConfig
from .framework import Report, StudySection, UnitContext
from .legacy import FlatConfig, LegacySection
from .report import Figure, Section, save_figure, write_report

CONFIG_FILE = "study.toml"


@dataclass
class StudyContext:
    out: Path
    cache: UnitCache
    store_path: Path
    device: str
    backend: str
    tick: Callable[[int], None]
    preset: str
    activations: tuple[str, ...] = PAPERS

    def command(self, section: str) -> str:
        extra = "" if self.device == "cpu" else f" --device {self.device}"
        backend = "" if self.backend == "local" else f" --backend {self.backend}"
        return f"overparam study --config {self.out / CONFIG_FILE} --only {section} --out {self.out}{backend}{extra}"


@dataclass
class StudyResult:
    sections: list[Section]
    html: Path
    markdown: Path
    seconds: float
    interrupted: bool = False
    reused: int = 0
    computed: int = 0
    failures: list[str] = field(default_factory=list)


def device_name(device: str) -> str:
    """The device as the report names it: "cpu", or "cuda (<the GPU's name>)"."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def run_study(
    config: StudyConfig,
    out: str | Path,
    backend: str = "local",
    device: str = "cpu",
    on_section: Callable[[str, str, int], None] | None = None,
    on_tick: Callable[[int], None] | None = None,
) -> StudyResult:
    """Run the sections of `config` into `out` and write report.html / report.md there.

    on_section(key, title, units) is called as each section starts, on_tick(k) as k units finish.
    A KeyboardInterrupt ends the study after writing the partial report; it is then re-raised.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}: use local or ray")
    resolve_device(device)  # ValueError for a GPU that is not there: no section silently runs elsewhere
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "runs.db"
    cache = UnitCache(store_path)
    ctx = StudyContext(out, cache, store_path, device, backend, on_tick or (lambda k=1: None), config.preset,
                       config.activations)
    _write_config(config, out)
    sections = [Section(key, key) for key in config.sections]
    start = time.perf_counter()
    interrupted = False
    failures = []
    try:
        for index, key in enumerate(config.sections):
            try:
                spec = registry.section(key)
                sections[index].title = spec.TITLE
                cfg = config.section(key)
                if isinstance(spec, LegacySection):
                    flat = FlatConfig(config)
                    if on_section is not None:
                        on_section(key, spec.TITLE, spec.module.units(flat))
                    section = spec.module.run(flat, ctx)
                else:
                    section = run_section(spec, config, cfg, ctx, on_section)
                section.config, section.device = config.to_toml([key]), device_name(device)
                sections[index] = section
            except KeyboardInterrupt:
                sections[index].status = "partial"
                sections[index].note = "interrupted; re-run the same command to resume (finished runs are reused)"
                raise
            except Exception as error:  # a failed section is reported, the study goes on
                sections[index].status = "failed"
                sections[index].note = f"{type(error).__name__}: {error}"
                failures.append(f"{key}: {''.join(traceback.format_exception_only(error)).strip()}")
            _write(sections, config, ctx, start, interrupted)
    except KeyboardInterrupt:
        interrupted = True
    markdown, html = _write(sections, config, ctx, start, interrupted)
    result = StudyResult(sections, html, markdown, time.perf_counter() - start, interrupted,
                         cache.reused, cache.computed, failures)
    cache.close()
    if interrupted:
        raise KeyboardInterrupt(result)
    return result


def run_section(spec: StudySection, config: StudyConfig, cfg, ctx: StudyContext, on_section=None) -> Section:
    """Compute or reuse every unit of `spec` (one tick each), then render its report into `ctx.out`."""
    units = list(dict.fromkeys(spec.units(config, cfg)))
    if on_section is not None:
        on_section(spec.KEY, spec.TITLE, len(units))
    unit_context = UnitContext(ctx.device, lambda unit: ctx.cache.compute_unit(unit, unit_context), ctx.store_path,
                               ctx.backend)
    records = {}
    for unit in units:
        records[unit] = ctx.cache.compute_unit(unit, unit_context)
        ctx.tick()
    report: Report = spec.report(config, cfg, records)
    for plot in report.plots:
        save_figure(plot.figure, ctx.out, plot.stem)
    facts = [replace(fact, section=spec.KEY) for fact in report.facts]
    return Section(spec.KEY, spec.TITLE, "complete", reading=report.reading, tables=report.tables,
                   figures=[Figure(plot.stem, plot.caption) for plot in report.plots], command=ctx.command(spec.KEY),
                   facts=facts)


def _write_config(config: StudyConfig, out: Path) -> None:
    """DIR/study.toml: the configuration of the sections run, which their re-run commands read."""
    usable = []
    for key in config.sections:
        try:
            config.section(key)
            usable.append(key)
        except Exception:  # noqa: BLE001 - that section is reported as failed when its turn comes
            pass
    path = out / CONFIG_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(config.to_toml(usable), encoding="utf-8")
    temporary.replace(path)


def _write(sections, config, ctx, start, interrupted):
    seconds = time.perf_counter() - start
    done = sum(s.status == "complete" for s in sections)
    summary = (
        f"Preset '{config.preset}': {done} of {len(sections)} sections complete"
        + (" (interrupted: re-run the same command to resume)" if interrupted else "")
        + f". Networks F(W, x) = kappa sum_r a_r phi_r(W, x) with {', '.join(config.activations)} neurons, trained by "
        f"full-batch gradient descent as the convergence theorems analyse them. Every number below was measured "
        f"in this run ({seconds:.0f} s on {ctx.device}); the runs are in runs.db."
    )
    key_figure = next((f.stem for s in sections for f in s.figures if s.key == "threshold"), None) or \
        next((f.stem for s in sections for f in s.figures), None)
    meta = {
        "title": f"overparam study ({config.preset})",
        "summary": summary,
        "key_figure": key_figure,
        "key_caption": "Key figure (details in its section below).",
        "footer": f"overparam {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
                  f"{platform.machine()}; written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
    }
    return write_report(sections, meta, ctx.out)
