"""Finished units of study work, kept in the study's runs store (`sweep.store.Store`, table
`study_units`) so a re-run reuses them; each unit is committed as it finishes, so an interrupted
study loses at most the unit in flight."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..sweep.store import Store


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

    def close(self) -> None:
        self.store.close()
