"""`python -m overparam ...`: the same as the `overparam` command."""

from .cli import run

run()
