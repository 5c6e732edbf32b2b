"""Finished units of study work, kept in the study's SQLite file so a re-run reuses them.

One row per unit (key -> JSON value), written in its own transaction after the unit finishes:
an interrupted study loses at most the unit in flight.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Callable


class UnitCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS study_units (key TEXT PRIMARY KEY, section TEXT NOT NULL, "
            "value TEXT NOT NULL, created TEXT DEFAULT CURRENT_TIMESTAMP)"
        )
        self.reused = 0
        self.computed = 0

    def get(self, key: str):
        row = self.connection.execute("SELECT value FROM study_units WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, section: str, value) -> None:
        self.connection.execute("INSERT OR REPLACE INTO study_units (key, section, value) VALUES (?, ?, ?)",
                                (key, section, json.dumps(value)))

    def compute(self, key: str, section: str, work: Callable[[], object]):
        """The cached value of `key`, or work() stored under it."""
        value = self.get(key)
        if value is not None:
            self.reused += 1
            return value
        value = work()
        self.put(key, section, value)
        self.computed += 1
        return value

    def count(self, section: str | None = None) -> int:
        if section is None:
            return self.connection.execute("SELECT COUNT(*) FROM study_units").fetchone()[0]
        return self.connection.execute("SELECT COUNT(*) FROM study_units WHERE section = ?", (section,)).fetchone()[0]

    def close(self) -> None:
        self.connection.close()
