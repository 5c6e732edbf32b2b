"""Shared test setup.

Tests solve many tiny problems; on a 2-core machine torch's intra-op threads only add
synchronisation cost there (and spin badly when other processes load the cores), so the
suite runs torch single-threaded. Numerics do not depend on the thread count.
"""

import builtins

import pytest
import torch

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
