"""The study's plan (`overparam.study.plan`) against the study's run, section by section and unit by unit.

One process: `calibrate()` (the plan's rates and per-unit overheads), `plan_study` (expected seconds of every
unit), then `run_study` into a fresh folder, each unit timed from the runner's ticks (a unit's time runs from
the previous tick, or the section's start, to its own tick; a section's time also holds its report and
figures), in wall-clock seconds and in this process's CPU seconds (the work itself on a machine shared with other
jobs; units and kernel passes run on one torch thread). ratio = max(run / plan, plan / run) per section (wall
clock), goal <= 2 (issue 22).

    python benchmarks/study_plan.py [--preset quick] [--only threshold ...] [--out DIR] [--json FILE]

quick=True (`python -m benchmarks --quick`): a tiny two-section study that runs in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from overparam.study import StudyConfig, preset, registry, run_study
from overparam.study.plan import calibrate, unit_cost

TINY = {"study": {"activations": ["relu"], "d": 3, "tol": 1e-2, "sections": ["concentration", "threshold"]},
        "concentration": {"n": 6, "widths": [8, 16], "seeds": 2},
        "threshold": {"ns": [4, 6], "kernel_ns": [4, 6], "widths": [2, 4], "draws": 1, "seeds": 2, "max_steps": 50,
                      "kernel_widths": [8, 16], "dimension_ds": [3], "dimension_ns": [4, 6], "lambda_ns": [4]}}


def measure(config: StudyConfig, out: Path, device: str = "cpu", log: Path | None = None) -> dict:
    """Plan and run `config` into `out`: per unit its kind, fields, planned and measured seconds (a unit `out`
    already holds is reused: its time is the lookup's). `log`: one JSON line per unit as it finishes."""
    rates = calibrate(device)
    units = []
    for key in config.sections:
        for unit in dict.fromkeys(registry.section(key).units(config, config.section(key))):
            cost = unit_cost(unit)
            units.append({"section": key, "kind": type(unit).__name__, "key": unit.key,
                          "fields": {f.name: getattr(unit, f.name) for f in dataclasses.fields(unit)},
                          "cost": None if cost is None else dataclasses.asdict(cost),
                          "plan_s": None if cost is None else rates.seconds(cost)})
    ticks = []
    done = iter(units)

    cpu = [time.process_time()]

    def on_section(key, title, count):
        ticks.append((key, None, time.perf_counter()))
        cpu.append(time.process_time())

    def on_tick(k=1):
        ticks.append((ticks[-1][0], "unit", time.perf_counter()))
        cpu.append(time.process_time())
        unit = next(done)
        unit["cpu_s"] = cpu[-1] - cpu[-2]  # this process's CPU time: the work, whatever else shares the cores
        if log is not None:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({**unit, "run_s": ticks[-1][2] - ticks[-2][2]}, default=str) + "\n")

    start = time.perf_counter()
    result = run_study(config, out, device=device, on_section=on_section, on_tick=on_tick)
    ticks.append((None, None, time.perf_counter()))
    sections, unit_times = {}, []
    for (key, what, at), (_, _, after) in zip(ticks, ticks[1:]):
        sections[key] = sections.get(key, 0.0) + (after - at)
    for (_, _, before), (_, what, at) in zip(ticks, ticks[1:]):
        if what == "unit":
            unit_times.append(at - before)
    for unit, seconds in zip(units, unit_times):
        unit["run_s"] = seconds
    rows = []
    for key in config.sections:
        planned = [u["plan_s"] for u in units if u["section"] == key]
        plan = None if None in planned else sum(planned)
        rows.append({"section": key, "units": len(planned), "plan_s": plan, "run_s": sections.get(key)})
    return {"rates": dataclasses.asdict(rates), "sections": rows, "units": units,
            "seconds": time.perf_counter() - start, "study_seconds": result.seconds}


def rows_of(measured: dict, label: str) -> list[dict]:
    rows = []
    for section in measured["sections"]:
        plan, run = section["plan_s"], section["run_s"]
        ratio = max(run / plan, plan / run) if plan and run else None
        rows.append({"benchmark": f"study plan {label} {section['section']} ({section['units']} units)",
                     "baseline": "the plan's expected seconds", "time_s": run, "baseline_s": plan,
                     "ratio": ratio, "goal": "<= 2x apart"})
    return rows


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    config = StudyConfig.from_data(TINY) if quick else preset("quick")
    with tempfile.TemporaryDirectory() as out:
        return rows_of(measure(config, Path(out), device), "tiny" if quick else "quick")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--only", nargs="+", help="sections to run")
    parser.add_argument("--out", type=Path, help="results folder (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="write every unit's plan and run time here")
    parser.add_argument("--log", type=Path, help="append one JSON line per unit here as it finishes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = preset(args.preset)
    if args.only:
        config = config.only(args.only)
    with tempfile.TemporaryDirectory() as scratch:
        measured = measure(config, args.out or Path(scratch), args.device, args.log)
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1, default=str) + "\n")
    print(f"rates (GFLOP/s and overheads): {measured['rates']}")
    print(f"{'section':16} {'units':>6} {'plan s':>9} {'run s':>9} {'run/plan':>9}")
    for row in measured["sections"]:
        plan, run_s = row["plan_s"], row["run_s"]
        print(f"{row['section']:16} {row['units']:6d} {plan:9.1f} {run_s:9.1f} {run_s / plan:9.2f}")
    total_plan = sum(r["plan_s"] for r in measured["sections"])
    print(f"{'all':16} {sum(r['units'] for r in measured['sections']):6d} {total_plan:9.1f} "
          f"{measured['seconds']:9.1f} {measured['seconds'] / total_plan:9.2f}")


if __name__ == "__main__":
    main()
