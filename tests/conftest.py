"""Shared test setup.

Tests solve many tiny problems; on a 2-core machine torch's intra-op threads only add
synchronisation cost there (and spin badly when other processes load the cores), so the
suite runs torch single-threaded. Numerics do not depend on the thread count.
"""

import builtins
from types import SimpleNamespace

import pytest
import torch

from overparam.cli import run

torch.set_num_threads(1)


@pytest.fixture
def without_sklearn(monkeypatch):
    """Imports of scikit-learn fail, as where the 'data' extra is not installed."""
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)


@pytest.fixture
def overparam(capsys, monkeypatch):
    """The console entry point run in-process: overparam(*args) -> returncode (0 on success), stdout, stderr."""

    def invoke(*args):
        monkeypatch.setattr("sys.argv", ["overparam", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            run()
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=exit_info.value.code or 0, stdout=captured.out, stderr=captured.err)

    return invoke
