"""Data families p_0 for the diffusion experiment, named by a spec string such as `gmm:k=8,d=2`.

    gmm:k=8,d=2,radius=3,std=0.3,weights=equal,seed=0   Gaussian mixture (exact score at every t)
    points:k=8,d=2,radius=3                             the same with std = 0 (finitely many points)
    moons[:noise=0.1] | rings[:noise=0.1] | swissroll[:noise=0.1]
                                                        2-D sample-only sets (no exact score)

weights: `equal`, `random` (Dirichlet(2, ..., 2) from the spec's seed) or explicit values joined by
`/` (e.g. `weights=0.2/0.8`, normalised to sum 1). The spec's seed fixes the truth (random means for
d >= 3, random weights); the run's seed does not change it. The sample-only sets are drawn at a
fixed scale comparable to the default mixture (radius 3), never rescaled per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .mixtures import GaussianMixture, isotropic_mixture

MIXTURES = ("gmm", "points")
SAMPLE_ONLY = ("moons", "rings", "swissroll")
ALIASES = {"swiss_roll": "swissroll", "swiss-roll": "swissroll", "circles": "rings"}


@dataclass
class SampleSet:
    """A 2-D distribution known only through a sampler: `sample(n, generator)` -> (n, 2) float64."""

    name: str
    noise: float
    draw: Callable[[int, float, torch.Generator], torch.Tensor]

    dim = 2

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.draw(int(n), self.noise, generator)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def draw_moons(n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles (upper (cos u, sin u), lower (1 - cos u, 1/2 - sin u)), centred, x2."""
    u = _uniform(n, 0.0, math.pi, generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(u), 1 - torch.cos(u)) - 0.5
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u)) - 0.25
    points = torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return 2.0 * points


def draw_rings(n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Two concentric circles of radii 3 and 1.5, half the mass on each."""
    u = _uniform(n, 0.0, 2 * math.pi, generator)
    radius = torch.where(torch.rand(n, generator=generator) < 0.5, 3.0, 1.5).to(torch.float64)
    points = radius[:, None] * torch.stack([torch.cos(u), torch.sin(u)], 1)
    return points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def draw_swissroll(n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """The 2-D Swiss roll (u cos u, u sin u), u ~ U[1.5 pi, 4.5 pi], scaled by 3 / (4.5 pi)."""
    u = _uniform(n, 1.5 * math.pi, 4.5 * math.pi, generator)
    points = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) * (3.0 / (4.5 * math.pi))
    return points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


DRAWS = {"moons": draw_moons, "rings": draw_rings, "swissroll": draw_swissroll}


def parse_options(text: str, allowed: tuple[str, ...], name: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ValueError(f"bad data option {item!r} in {name}: write key=value")
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for {name}: use {', '.join(allowed)}")
        options[key] = value.strip()
    return options


def _number(options: dict, key: str, default, kind=float):
    if key not in options:
        return default
    try:
        value = kind(options[key])
    except ValueError:
        raise ValueError(f"data option {key}={options[key]!r} is not a valid {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"data option {key} must be finite, got {options[key]!r}")
    return value


def parse_weights(text: str, k: int, seed: int) -> torch.Tensor | None:
    if text == "equal":
        return None
    if text == "random":
        return torch.as_tensor(np.random.default_rng(seed).dirichlet(np.full(k, 2.0)), dtype=torch.float64)
    try:
        values = torch.tensor([float(part) for part in text.split("/")], dtype=torch.float64)
    except ValueError:
        raise ValueError(f"bad weights {text!r}: use equal, random, or values joined by '/' such as 0.2/0.8") from None
    if values.numel() != k:
        raise ValueError(f"weights {text!r} give {values.numel()} values but k = {k}")
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"weights {text!r} must be non-negative and finite with a positive sum")
    return values / values.sum()


def parse_data(spec: str) -> GaussianMixture | SampleSet:
    """The distribution named by `spec` (see the module docstring); ValueError in one line if bad."""
    name, _, rest = str(spec).strip().partition(":")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name in MIXTURES:
        allowed = ("k", "d", "radius", "std", "weights", "seed") if name == "gmm" else ("k", "d", "radius", "weights", "seed")
        options = parse_options(rest, allowed, name)
        k, d = _number(options, "k", 8, int), _number(options, "d", 2, int)
        if k < 1 or d < 1:
            raise ValueError(f"{name} needs k >= 1 and d >= 1, got k = {k}, d = {d}")
        seed = _number(options, "seed", 0, int)
        weights = parse_weights(options.get("weights", "equal"), k, seed)
        std = _number(options, "std", 0.3) if name == "gmm" else 0.0
        label = f"{name}:k={k},d={d}"
        return isotropic_mixture(k, d, _number(options, "radius", 3.0), std, weights, seed, label)
    if name in SAMPLE_ONLY:
        options = parse_options(rest, ("noise",), name)
        noise = _number(options, "noise", 0.1)
        if noise < 0:
            raise ValueError(f"{name} noise must be >= 0, got {noise}")
        return SampleSet(name, noise, DRAWS[name])
    known = ", ".join(MIXTURES + SAMPLE_ONLY)
    raise ValueError(f"unknown diffusion data {spec!r}: use one of {known} (e.g. gmm:k=8,d=2)")
