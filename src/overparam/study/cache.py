"""Finished units of study work, kept in the study's runs store (`sweep.store.Store`, table
`study_units`) so a re-run reuses them; each unit is committed as it finishes, so an interrupted
study loses at most the unit in flight."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..sweep.store import Store
from .framework import from_json, to_json


class UnitCache:
    """`compute(key, section, work)` through the store at `path`, counting reused and computed units."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store(path)
        self.reused = 0
        self.computed = 0

    def get(self, key: str):
        return self.store.unit(key)

    def compute(self, key: str, section: str, work: Callable[[], object]):
        """The cached value of `key`, or work() stored under it."""
        value = self.store.unit(key)
        if value is not None:
            self.reused += 1
            return value
        value = work()
        self.store.save_unit(key, section, value)
        self.computed += 1
        return value

    def compute_unit(self, unit, ctx):
        """The record of `unit` (a `framework.Unit`): stored under its derived key, or computed and stored."""
        value = self.store.unit(unit.key)
        if value is not None:
            self.reused += 1
            return from_json(unit.RECORD, value)
        record = unit.compute(ctx)
        self.store.save_unit(unit.key, type(unit).__module__.rsplit(".", 1)[-1], to_json(record))
        self.computed += 1
        return record

    def close(self) -> None:
        self.store.close()
