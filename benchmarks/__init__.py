"""overparam's benchmarks: each times overparam against a baseline measured in the same run.

`python -m benchmarks [--quick] [--only NAME ...] [--device cpu|cuda]` runs every benchmark module,
prints one table of ratios and saves it, with a description of the machine, to
benchmarks/results/<UTC timestamp>.json.

The convention every module `benchmarks/<name>.py` follows:

    def run(quick: bool = False) -> list[dict]        # optionally also a `device: str` argument

returns one row per comparison, a plain dict with at least

    benchmark   what is timed, with its shapes    "gd_step exp n=1024 d=32 m=65536 float32"
    baseline    what it is compared against       "autograd + SGD"
    ratio       the number the goal is about      e.g. baseline_s / time_s (a speed-up) or
                                                  time_s / baseline_s (distance to a floor)
    time_s      overparam's time in seconds
    baseline_s  the baseline's time in seconds
    goal        the target for `ratio`: ">= 3x faster", "<= 1.3x the floor" (an operator and a
                number first, so the runner can say whether it is met), or "" for none

and any further keys (memory, chunk sizes, notes), kept in the JSON. quick=True: small shapes that
finish in seconds. Each module is also a script (`python benchmarks/<name>.py --help`) with the
full-size defaults and its own flags. A module listed in MODULES that is missing or raises gives
a row saying so; the others still run.
"""

#: Benchmark modules, in the order they run; other modules here that define run() follow them.
MODULES = ("gd_step", "ntk", "sweep", "sharding", "nested_ntk")
