"""Each seed's nested kernel pass over a sweep's `kernel_widths` (docs/mathematics.md#nested-widths), kept in the
store so that `overparam threshold` measures the kernel threshold as the study does (`analysis.kernel_thresholds`).

A family is what the kernel at initialisation depends on: the runs' settings but width, seed and the training's
own (scale, lr, tol, steps, dtype). Per seed, W(0) is drawn once at the largest kernel width
(`models.initial_weights` with the seed) on the family's data (per seed when data_seed = "seed"), and the pass
runs with float32 chunk products and float64 sums, as the study's threshold section runs it.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import torch

from ..kernels.nested import width_profile
from .executors import torch_threads
from .spec import SweepSpec, config_hash
from .store import Store
from .task import group_data

#: The settings a kernel at initialisation depends on.
FAMILY_KEYS = ("activation", "init", "n", "d", "k", "sigma", "data", "data_seed")
#: The chunks' dtype of the pass (`kernels.nested.nested_ntk`'s products), the study's.
PRODUCTS = "float32"


def family(config: dict) -> dict:
    """The family of a run's config: its FAMILY_KEYS."""
    return {key: config[key] for key in FAMILY_KEYS}


def pending(spec: SweepSpec, store: Store) -> list[tuple[dict, int]]:
    """(family, seed) of every profile of `spec` the store lacks on its kernel widths."""
    if not spec.kernel_widths:
        return []
    done, widths = store.profiled(), json.dumps(list(spec.kernel_widths))
    families = {config_hash(family(group.config)): family(group.config) for group in spec.groups()}
    return [(members, seed) for key, members in families.items() for seed in spec.seeds
            if (key, seed, widths) not in done]


def measure(members: dict, seed: int, widths, device: str = "cpu"):
    """One seed's nested profile of a family (an `analysis.NestedProfile`, from `kernels.nested.width_profile`); where
    the pass cannot be computed (e.g. H* overflows), NaN distances and the error, which no threshold counts as a
    success."""
    from .analysis import NestedProfile  # scipy.optimize: loaded only when profiles are measured

    X, _ = group_data(members, [seed])
    try:
        found = width_profile(torch.from_numpy(X[0] if X.ndim == 3 else X), members["activation"], widths,
                              out_dim=members["k"], init=members["init"], sigma=members["sigma"], seed=seed,
                              device=device, products=PRODUCTS)
    except (ArithmeticError, RuntimeError) as error:  # e.g. H* overflows: no distance is a success
        return NestedProfile(members, seed, list(widths), [math.nan] * len(widths), math.nan,
                             f"{type(error).__name__}: {error}")
    return NestedProfile(members, seed, list(found.widths), found.distance, found.lam)


def record_profiles(spec: SweepSpec, store: Store, device: str = "cpu", threads: int = 1,
                    done: Callable[[], None] | None = None) -> int:
    """Measure and save every pending profile of `spec` in this process (`threads` torch threads);
    done() after each. Returns how many were measured."""
    work = pending(spec, store)
    with torch_threads(threads):
        for members, seed in work:
            store.save_profile(config_hash(members), measure(members, seed, spec.kernel_widths, device))
            if done is not None:
                done()
    return len(work)
