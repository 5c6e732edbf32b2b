"""The results store: one SQLite row per run (WAL mode), per-run curves in Parquet beside it.

    runs.db                      table `runs`, unique key (config_hash, seed)
                                 table `study_units`: `overparam study`'s finished units (key -> JSON)
                                 table `profiles`: nested width profiles, unique key (family_hash, seed)
    runs.curves/<hash>/<seed>-<id>.parquet   the run's History columns (step, loss, residual_norm, ...)

A study's width sweeps are rows of `runs`; its other units of work (a kernel, a training, a diffusion
model) are not runs of a sweep grid, so they are kept as JSON values under a key in `study_units`
of the same file: one store per results folder, one durability rule (a row per finished unit).

Durability: a curve file is written to a temporary name, fsynced and renamed into place; only
then is the run's row inserted, in one transaction per batch of results (synchronous=FULL);
the curve file a replaced row named is deleted after the commit.
A process killed at any point leaves finished rows intact and at most a "running" row for the
runs it had in flight, which the next sweep redoes. Rows are upserted on (config_hash, seed),
so no run is ever stored twice; concurrent writers wait for each other (busy timeout).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .spec import Group
from .task import RunResult

#: Statuses of a finished run; "running" marks a run in flight (or one whose process died).
FINISHED = ("converged", "max_steps", "diverged", "failed")
SCHEMA_VERSION = 1
CONFIG_COLUMNS = {
    "activation": "TEXT", "width": "INTEGER", "n": "INTEGER", "d": "INTEGER", "k": "INTEGER",
    "init": "TEXT", "scale": "TEXT", "sigma": "REAL", "data": "TEXT", "data_seed": "TEXT", "lr_rule": "TEXT",
    "tol": "REAL", "budget_rule": "TEXT", "dtype": "TEXT",
}
METRIC_COLUMNS = {
    "steps": "INTEGER", "budget": "INTEGER", "lr": "REAL", "lr_eff": "REAL", "initial_residual": "REAL",
    "final_residual": "REAL", "final_loss": "REAL", "lambda_min": "REAL", "kernel_distance": "REAL",
    "max_movement": "REAL", "total_movement": "REAL", "wall_seconds": "REAL", "batch_size": "INTEGER",
    "task_seconds": "REAL", "lambda_rounding": "INTEGER", "message": "TEXT", "overparam_version": "TEXT",
    "torch_version": "TEXT",
    "device": "TEXT", "host": "TEXT",
}
COLUMNS = {
    "config_hash": "TEXT NOT NULL", "seed": "INTEGER NOT NULL", **CONFIG_COLUMNS, "status": "TEXT NOT NULL",
    **METRIC_COLUMNS, "error": "TEXT", "curves": "TEXT", "config": "TEXT NOT NULL", "updated_at": "TEXT",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: Config keys stored in a column under another name (as text).
CONFIG_RENAMED = {"lr": "lr_rule", "steps": "budget_rule"}


def _config_columns(config: dict) -> dict:
    """The searchable copy of a config's fields (the full config is kept as JSON too)."""
    return {
        **{key: config[key] for key in ("activation", "width", "n", "d", "k", "init", "sigma", "data", "tol",
                                        "dtype")},
        "scale": str(config["scale"]), "data_seed": str(config["data_seed"]),
        **{column: str(config[key]) for key, column in CONFIG_RENAMED.items()},
    }


class Store:
    """A runs database at `path` (created with its schema when missing).

    create=False (readers: `overparam results`, `threshold`) refuses a file that is not already a
    runs store instead of adding the schema to it.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0, create: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"store {str(self.path)!r} is a folder; give a file name such as runs.db")
        if create:  # a writer makes its folder, as `--out` folders are made
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.parent.exists():
            raise ValueError(f"the folder of store {str(self.path)!r} does not exist")
        self.curves_dir = self.path.with_suffix(".curves")
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if not create and self.db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is None:
                self.db.close()
                raise ValueError(f"{self.path} is not a runs store (it has no runs table); "
                                 "write one with `overparam sweep`")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{self.path} is not a runs store: {error}") from None

    def _create_schema(self) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{self.path} has schema version {version}; this overparam reads {SCHEMA_VERSION}")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns}, PRIMARY KEY (config_hash, seed))")
            present = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
            for name in COLUMNS.keys() - present:  # a store from before the column was added
                self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {COLUMNS[name]}")
            self.db.execute("CREATE INDEX IF NOT EXISTS runs_by_shape ON runs (activation, init, n, d, width)")
            self.db.execute("CREATE TABLE IF NOT EXISTS study_units (key TEXT PRIMARY KEY, section TEXT NOT NULL, "
                            "value TEXT NOT NULL, created TEXT DEFAULT CURRENT_TIMESTAMP)")
            self.db.execute("CREATE TABLE IF NOT EXISTS profiles (family_hash TEXT NOT NULL, seed INTEGER NOT NULL, "
                            "family TEXT NOT NULL, widths TEXT NOT NULL, distance TEXT NOT NULL, lambda_min REAL, "
                            "error TEXT, updated_at TEXT, PRIMARY KEY (family_hash, seed))")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def finished(self, retry_failed: bool = False) -> set[tuple[str, int]]:
        """(config_hash, seed) of every run a sweep should skip."""
        statuses = [s for s in FINISHED if not (retry_failed and s == "failed")]
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(f"SELECT config_hash, seed FROM runs WHERE status IN ({marks})", statuses)
        return {(row[0], row[1]) for row in rows}

    def mark_running(self, group: Group) -> None:
        """Record the group's runs as in flight (never over a finished row, except a failed one)."""
        fields = {**_config_columns(group.config), "status": "running", "config": _json(group.config),
                  "config_hash": group.config_hash, "updated_at": _now()}
        names = list(fields) + ["seed"]
        sql = (f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               "ON CONFLICT (config_hash, seed) DO UPDATE SET status = 'running', error = NULL, "
               "updated_at = excluded.updated_at WHERE runs.status IN ('running', 'failed')")
        with self._transaction():
            self.db.executemany(sql, [list(fields.values()) + [seed] for seed in group.seeds])

    def save(self, results: Iterable[RunResult]) -> None:
        """Write the curves, then upsert all rows in one transaction."""
        rows = []
        for result in results:
            curves = self._write_curves(result) if result.curves is not None else None
            fields = {**_config_columns(result.config), "config_hash": result.config_hash, "seed": result.seed,
                      "status": result.status, "error": result.error, "curves": curves,
                      "config": _json(result.config), "updated_at": _now()}
            fields.update({key: value for key, value in result.metrics.items() if key in METRIC_COLUMNS})
            rows.append(fields)
        if not rows:
            return
        names = list(COLUMNS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in names if name not in ("config_hash", "seed"))
        sql = (f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT (config_hash, seed) DO UPDATE SET {updates}")
        with self._transaction():
            replaced = [self.db.execute("SELECT curves FROM runs WHERE config_hash = ? AND seed = ?",
                                        (row["config_hash"], row["seed"])).fetchone() for row in rows]
            self.db.executemany(sql, [[_plain(row.get(name)) for name in names] for row in rows])
        for old, row in zip(replaced, rows):
            if old is not None and old[0] and old[0] != row["curves"]:
                (self.path.parent / old[0]).unlink(missing_ok=True)

    def _write_curves(self, result: RunResult) -> str:
        """A new file per write (so a row always names the curve written with it)."""
        folder = self.curves_dir / result.config_hash
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{result.seed}-{uuid.uuid4().hex[:12]}"
        final = folder / f"{name}.parquet"
        temporary = folder / f".{name}.tmp"
        table = pa.table({name: np.asarray(column) for name, column in result.curves.items()})
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        return str(final.relative_to(self.path.parent))

    def runs(self, **filters) -> list[dict]:
        """All rows as dicts (config parsed from JSON), filtered by column = value or value list."""
        clauses, values = [], []
        for name, wanted in filters.items():
            if name not in COLUMNS:
                raise ValueError(f"cannot filter on {name!r}; columns: {', '.join(COLUMNS)}")
            if wanted is None:
                continue
            wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
            clauses.append(f"{name} IN ({', '.join('?' * len(wanted))})")
            values.extend(wanted)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = self.db.execute(f"SELECT * FROM runs{where} ORDER BY activation, init, n, d, width, config_hash, seed",
                                 values)
        rows = []
        for row in cursor:
            record = dict(row)
            record["config"] = json.loads(record["config"])
            rows.append(record)
        return rows

    def curve(self, row: dict) -> dict[str, np.ndarray]:
        """The recorded History columns of a run (a row from `runs`)."""
        if not row.get("curves"):
            raise ValueError(f"run {row['config_hash']}/{row['seed']} has no curves (status {row['status']})")
        table = pq.read_table(self.path.parent / row["curves"])
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def runs_table(self, **filters) -> pa.Table:
        """The runs (filtered as `runs`) as one Arrow table, a row per run: every column of the runs table,
        typed as declared (INTEGER int64, REAL float64, TEXT string; NULL stays null), then each config
        key without a column of its own as `config.KEY` (the full config stays as JSON in `config`)."""
        rows = self.runs(**filters)
        kinds = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string()}
        columns = {name: pa.array([_plain(row[name]) if name != "config" else _json(row["config"]) for row in rows],
                                  kinds[kind.split()[0]]) for name, kind in COLUMNS.items()}
        extra = sorted({key for row in rows for key in row["config"]} - COLUMNS.keys() - CONFIG_RENAMED.keys())
        for key in extra:
            columns[f"config.{key}"] = _arrow_column([row["config"].get(key) for row in rows])
        return pa.table(columns)

    def to_pandas(self, **filters):
        """`runs_table` as a pandas DataFrame (integer columns as pandas' nullable Int64)."""
        pandas = _require_pandas()
        return self.runs_table(**filters).to_pandas(types_mapper={pa.int64(): pandas.Int64Dtype()}.get)

    def curves_table(self, **filters) -> pa.Table:
        """The curves of every run (filtered as `runs`) that has them as one long Arrow table: the run's key
        `config_hash`, `seed`, then its History columns (step, loss, residual_norm, ...), one row per
        recorded step. Join with `runs_table` on (config_hash, seed) for the runs' settings."""
        tables = []
        for row in self.runs(**filters):
            if row.get("curves"):
                curve = pq.read_table(self.path.parent / row["curves"])
                key = {"config_hash": pa.array([row["config_hash"]] * curve.num_rows, pa.string()),
                       "seed": pa.array([row["seed"]] * curve.num_rows, pa.int64())}
                tables.append(pa.table({**key, **{name: curve.column(name) for name in curve.column_names}}))
        if not tables:
            return pa.table({"config_hash": pa.array([], pa.string()), "seed": pa.array([], pa.int64())})
        return pa.concat_tables(tables, promote_options="default")  # a column a run lacks is null there

    def curves_to_pandas(self, **filters):
        """`curves_table` as a pandas DataFrame."""
        _require_pandas()
        return self.curves_table(**filters).to_pandas()

    def profiles(self, **filters) -> list:
        """The nested width profiles (`analysis.NestedProfile`) whose family matches `filters` (setting = value or
        value list; settings a profile's family does not have, such as width, do not apply to it)."""
        from .analysis import NestedProfile

        found = []
        for row in self.db.execute("SELECT * FROM profiles ORDER BY family_hash, seed"):
            family = json.loads(row["family"])
            if all(wanted is None or name not in family
                   or family[name] in (list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted])
                   for name, wanted in filters.items()):
                found.append(NestedProfile(family, row["seed"], json.loads(row["widths"]), json.loads(row["distance"]),
                                           math.nan if row["lambda_min"] is None else row["lambda_min"], row["error"]))
        return found

    def profiled(self) -> set[tuple[str, int, str]]:
        """(family_hash, seed, widths as JSON) of every stored profile: what a sweep need not recompute."""
        return {(row[0], row[1], row[2]) for row in self.db.execute("SELECT family_hash, seed, widths FROM profiles")}

    def save_profile(self, family_hash: str, profile) -> None:
        """Record one seed's profile (an `analysis.NestedProfile`), replacing one of the same family and seed."""
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO profiles (family_hash, seed, family, widths, distance, lambda_min, "
                            "error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (family_hash, profile.seed, _json(profile.family), json.dumps(profile.widths),
                             json.dumps(profile.distance), profile.lam, profile.error, _now()))

    def unit(self, key: str):
        """The JSON value of a finished study unit, or None."""
        row = self.db.execute("SELECT value FROM study_units WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save_unit(self, key: str, section: str, value) -> None:
        """Record a finished unit (one committed row: an interrupted study keeps every finished unit)."""
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO study_units (key, section, value) VALUES (?, ?, ?)",
                            (key, section, json.dumps(value)))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so two
    writers queue on the busy timeout instead of failing on a lock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _arrow_column(values: list) -> pa.Array:
    """`values` as an Arrow column of their own type, or as text (JSON) where the runs disagree on it."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([value if value is None or isinstance(value, str) else json.dumps(value)
                         for value in values], pa.string())


def _require_pandas():
    """pandas, or an ImportError that says how to install it (it is the optional `pandas` extra)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("pandas is not installed; install it with: pip install 'overparam[pandas]'") from None
    return pandas
