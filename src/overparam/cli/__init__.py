"""The `overparam` command line: thin wrappers that parse arguments, call the library, print.

Each subcommand lives in its own module and registers itself on `app`. User errors (bad flags,
bad files, bad values) exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

from .common import app, run  # noqa: F401  (run is the console script's entry point)
from . import train  # noqa: F401,E402  (registers `overparam train`)
from . import sweep, threshold, results  # noqa: F401,E402  (registers `overparam sweep`, `threshold`, `results`)

__all__ = ["app", "run"]
from . import study  # noqa: F401,E402  (registers `overparam study`)
from . import ntk  # noqa: F401,E402  (registers `overparam ntk` and `overparam bound`)
from . import diffusion  # noqa: F401,E402  (registers `overparam diffusion`)
