"""`python -m benchmarks`: run every benchmark, print one table of ratios, save JSON (see __init__)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import re
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from . import MODULES

HERE = Path(__file__).resolve().parent
GOAL = re.compile(r"^\s*(>=|<=|>|<)\s*([0-9.]+)")


def discover() -> list[str]:
    """MODULES first (present or not), then any other benchmark script in this folder."""
    others = sorted(path.stem for path in HERE.glob("*.py")
                    if not path.stem.startswith("_") and path.stem not in MODULES)
    return [*MODULES, *others]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """What the timings were taken on (and how busy it was: the load average)."""
    import torch

    description = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
        "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "device": device, "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        description["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return description


def goal_met(row: dict) -> bool | None:
    match = GOAL.match(str(row.get("goal", "")))
    ratio = row.get("ratio")
    if match is None or not isinstance(ratio, (int, float)):
        return None
    operator, target = match.group(1), float(match.group(2))
    return {">=": ratio >= target, "<=": ratio <= target, ">": ratio > target, "<": ratio < target}[operator]


def run_module(name: str, quick: bool, device: str) -> list[dict]:
    """The module's rows with status "ok", or one row saying it is missing or failed."""
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.{name}":
            return [{"benchmark": name, "status": f"failed to import: {error}"}]
        return [{"benchmark": name, "status": "missing (no benchmarks/%s.py)" % name}]
    except Exception as error:  # a broken module must not stop the others
        return [{"benchmark": name, "status": f"failed to import: {type(error).__name__}: {error}"}]
    if not callable(getattr(module, "run", None)):
        return [{"benchmark": name, "status": "no run(quick) function"}]
    options = {"device": device} if "device" in inspect.signature(module.run).parameters else {}
    if device != "cpu" and not options:
        return [{"benchmark": name, "status": f"skipped: run() takes no device, asked for {device}"}]
    start = time.perf_counter()
    try:
        rows = list(module.run(quick=quick, **options))
    except Exception as error:
        return [{"benchmark": name, "status": f"failed: {type(error).__name__}: {error}",
                 "traceback": traceback.format_exc()}]
    elapsed = time.perf_counter() - start
    for row in rows:
        row.setdefault("status", "ok")
        row["module"], row["module_seconds"], row["met"] = name, elapsed, goal_met(row)
    return rows


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def seconds(value) -> str:
        if not isinstance(value, (int, float)):
            return ""
        return f"{1e3 * value:.1f} ms" if value < 10 else f"{value:.1f} s"

    table = Table(title=title)
    for column in ("benchmark", "baseline", "time", "baseline time", "ratio", "goal", "met"):
        table.add_column(column, justify="right" if column in ("time", "baseline time", "ratio") else "left")
    for row in rows:
        if row.get("status", "ok") != "ok":
            table.add_row(row["benchmark"], f"[red]{row['status']}[/red]", "", "", "", "", "")
            continue
        met = {True: "yes", False: "[red]no[/red]", None: ""}[row.get("met")]
        ratio = row.get("ratio")
        table.add_row(row.get("benchmark", ""), row.get("baseline", ""), seconds(row.get("time_s")),
                      seconds(row.get("baseline_s")),
                      f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else "", row.get("goal", ""), met)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds, not minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmark modules")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (for modules whose run() takes it)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON file")
    args = parser.parse_args(argv)

    names = args.only or discover()
    started = datetime.now(timezone.utc)
    description = machine(args.device)
    rows: list[dict] = []
    for name in names:
        print(f"running benchmarks/{name}.py ...", flush=True)
        rows.extend(run_module(name, args.quick, args.device))
    description["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    print_table(rows, f"overparam benchmarks{' (quick)' if args.quick else ''} on {description['cpu']}, "
                      f"{description['cores']} cores, torch {description['torch']}, {args.device}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    payload = {"started": started.isoformat(), "quick": args.quick, "machine": description, "rows": rows}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"saved {path}")
    return 1 if any(row["status"].startswith("failed") for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
