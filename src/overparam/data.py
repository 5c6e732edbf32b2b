"""Datasets: synthetic generators, user files (.npz, .csv), and the checks the theory needs (SPEC §1).

Every generator returns float64 numpy arrays X (n, d) and y (n, k) and takes a seed.
The theory assumes ||x_i|| <= 1 and no two inputs parallel; `check_theory_assumptions` warns
when either fails (then lambda = 0 and the convergence theorems say nothing).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN = ("sphere", "teacher", "moons", "circles")


class TheoryAssumptionWarning(UserWarning):
    """The data breaks an assumption of the convergence theorems (SPEC §1)."""


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    name: str

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def k(self) -> int:
        return self.y.shape[1]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_size(n: int, d: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")


def unit_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} (normalised Gaussians)."""
    _check_size(n, d)
    if d == 1 and n > 2:
        raise ValueError("the sphere in d = 1 has only the points +1 and -1; use d >= 2")
    X = _rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def sphere(n: int, d: int, k: int = 1, seed: int = 0) -> Dataset:
    """x_i uniform on S^{d-1}, labels y_i ~ N(0, I_k) independent of x (pure memorisation)."""
    X = unit_sphere(n, d, seed)
    y = _rng(seed + 1_000_003).standard_normal((n, k))
    return Dataset(X, y, "sphere")


def teacher(n: int, d: int, k: int = 1, seed: int = 0, width: int = 8,
            activation: str = "relu") -> Dataset:
    """x_i uniform on S^{d-1}, y = a small random two-layer teacher network, normalised to unit RMS."""
    X = unit_sphere(n, d, seed)
    rng = _rng(seed + 2_000_003)
    W = rng.standard_normal((width, d))
    a = rng.standard_normal((width, k))
    Z = X @ W.T
    if activation == "relu":
        H = np.maximum(Z, 0)
    elif activation == "exp":
        H = np.exp(Z)
    else:
        H = np.exp(Z - Z.max(1, keepdims=True))
        H /= H.sum(1, keepdims=True)
    y = H @ a
    y -= y.mean(0)
    y /= np.sqrt(np.mean(y**2)) + 1e-300
    return Dataset(X, y, f"teacher-{activation}")


def moons(n: int, noise: float = 0.05, seed: int = 0) -> Dataset:
    """Two interleaved half circles in 2-D, labels +-1, scaled into the unit ball."""
    _check_size(n, 2)
    rng = _rng(seed)
    upper = n // 2
    t = np.pi * rng.random(n)
    X = np.where(np.arange(n)[:, None] < upper,
                 np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    X = X + noise * rng.standard_normal((n, 2))
    X -= np.array([0.5, 0.25])
    y = np.where(np.arange(n) < upper, 1.0, -1.0)[:, None]
    return Dataset(X / np.linalg.norm(X, axis=1).max(), y, "moons")


def circles(n: int, noise: float = 0.03, factor: float = 0.5, seed: int = 0) -> Dataset:
    """Two concentric circles in 2-D (radii 1 and `factor`), labels +-1, inside the unit ball."""
    _check_size(n, 2)
    rng = _rng(seed)
    outer = n // 2
    t = 2 * np.pi * rng.random(n)
    radius = np.where(np.arange(n) < outer, 1.0, factor)
    X = radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1) + noise * rng.standard_normal((n, 2))
    y = np.where(np.arange(n) < outer, 1.0, -1.0)[:, None]
    return Dataset(X / np.linalg.norm(X, axis=1).max(), y, "circles")


DIGITS_CLASSES = tuple(range(10))


def digits(classes=DIGITS_CLASSES, n: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's handwritten digits (1,797 8x8 images, d = 64; shipped with scikit-learn, no download).

    The images of `classes` are centred per feature (the mean image of those classes is subtracted)
    and then projected to the unit sphere, x_i = c_i / ||c_i||, as the theory needs (SPEC §1).
    n points (all when None) are the first n of a seeded permutation, so at one seed a smaller n is a
    subset of a larger one. Labels: two classes give y = +1 for classes[0], -1 for classes[1] (k = 1);
    more give one-hot rows over `classes` in the order given (k = len(classes)).
    Needs scikit-learn (pip install 'overparam[data]').
    """
    chosen = _digit_classes(classes)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the digits data set needs scikit-learn: pip install 'overparam[data]'") from None
    images = load_digits()
    rows = np.flatnonzero(np.isin(images.target, chosen))
    if n is None:
        n = len(rows)
    if int(n) != n or not 1 <= n <= len(rows):
        raise ValueError(f"digits of classes {list(chosen)} have {len(rows)} images; choose n from 1 to {len(rows)}")
    centred = images.data[rows] - images.data[rows].mean(0)
    pick = _rng(seed).permutation(len(rows))[:int(n)]
    X = centred[pick] / np.linalg.norm(centred[pick], axis=1, keepdims=True)
    labels = images.target[rows[pick]]
    onehot = (labels[:, None] == np.array(chosen)[None, :]).astype(np.float64)
    y = onehot[:, :1] - onehot[:, 1:] if len(chosen) == 2 else onehot
    return Dataset(X, y, "digits-" + "-".join(map(str, chosen)))


def _digit_classes(classes) -> tuple[int, ...]:
    chosen = tuple(classes)
    if len(chosen) < 2 or len(set(chosen)) != len(chosen) or not set(chosen) <= set(DIGITS_CLASSES):
        raise ValueError(f"digits classes must be at least two distinct digits from 0 to 9, got {list(chosen)}")
    return tuple(int(c) for c in chosen)


def builtin(name: str, n: int, d: int = 2, k: int = 1, seed: int = 0) -> Dataset:
    """A built-in dataset by name: sphere, teacher, moons or circles (the last two are 2-D, k = 1)."""
    if name == "sphere":
        return sphere(n, d, k, seed)
    if name == "teacher":
        return teacher(n, d, k, seed)
    if name in ("moons", "circles"):
        if k != 1:
            raise ValueError(f"{name} has scalar labels (k = 1), got k = {k}")
        return (moons if name == "moons" else circles)(n, seed=seed)
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(BUILTIN)}, or a .npz/.csv file")


def project_to_ball(X: np.ndarray, mode: str = "ball") -> np.ndarray:
    """mode 'sphere': x / ||x|| (DZPS19's ||x|| = 1); 'ball': divide every x by max_i ||x_i||."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0) and mode == "sphere":
        raise ValueError("cannot project a zero input onto the sphere; remove zero rows")
    if mode == "sphere":
        return X / norms
    if mode == "ball":
        largest = norms.max()
        return X / largest if largest > 0 else X
    raise ValueError(f"unknown normalisation {mode!r}: use 'sphere' or 'ball'")


def load(path: str | Path, label_columns: list[int] | None = None) -> Dataset:
    """User data from .npz (arrays X, y; no pickles) or .csv (label columns by index, default last).

    .csv: numeric, comma separated, an optional header line; `label_columns` picks the labels
    (negative indices allowed), the other columns are the inputs.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = {"X", "y"} - set(archive.files)
                if missing:
                    raise ValueError(f"{path} lacks array(s) {sorted(missing)}; save it with np.savez(path, X=X, y=y)")
                X, y = np.asarray(archive["X"], dtype=np.float64), np.asarray(archive["y"], dtype=np.float64)
        except (OSError, ValueError) as error:
            if "lacks array" in str(error):
                raise
            raise ValueError(f"cannot read {path} as .npz with numeric arrays X and y: {error}") from None
    elif suffix == ".csv":
        X, y = _load_csv(path, label_columns or [-1])
    else:
        raise ValueError(f"unsupported data file {path.name!r}: use .npz (arrays X, y) or .csv")
    return Dataset(*validate(X, y), name=path.stem)


def _load_csv(path: Path, label_columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        [float(value) for value in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on an empty file; we raise below
            table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    except ValueError as error:
        reason = str(error).split("; use `usecols`")[0]  # numpy's advice is about its API, not the file
        raise ValueError(f"cannot read {path} as numeric CSV: {reason}") from None
    if table.size == 0:
        raise ValueError(f"{path} has no data rows (n = 0): give at least one row of numbers")
    columns = table.shape[1]
    labels = sorted({c % columns for c in label_columns if -columns <= c < columns})
    if len(labels) != len(set(label_columns)):
        raise ValueError(f"label columns {label_columns} are out of range for {columns} columns in {path}")
    if len(labels) == columns:
        raise ValueError(f"every column of {path} is a label; leave at least one input column")
    inputs = [c for c in range(columns) if c not in labels]
    return table[:, inputs], table[:, labels]


def validate(X, y) -> tuple[np.ndarray, np.ndarray]:
    """X as (n, d), y as (n, k), both finite float64; raises ValueError saying what to fix."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"y must be (n,) or (n, k), got shape {y.shape}")
    if X.shape[0] == 0:
        raise ValueError("the data has no rows (n = 0)")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}; they must match")
    for name, array in (("X", X), ("y", y)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} has {int((~np.isfinite(array)).sum())} non-finite value(s); remove or impute them")
    return X, y


def check_theory_assumptions(X: np.ndarray, atol: float = 1e-10) -> list[str]:
    """Warn (TheoryAssumptionWarning) and return messages for norms > 1 and duplicate/parallel inputs."""
    problems = []
    norms = np.linalg.norm(X, axis=1)
    if norms.max() > 1 + atol:
        problems.append(
            f"max ||x_i|| = {norms.max():.4g} > 1: the theory assumes ||x|| <= 1; pass --normalize ball (or sphere)"
        )
    if np.any(norms == 0):
        problems.append("an input is zero: its NTK row vanishes and lambda = 0")
    else:
        U = X / norms[:, None]
        count, example = 0, None
        for start in range(0, len(U), 2048):  # blocks keep memory at O(2048 n)
            cosine = np.abs(U[start:start + 2048] @ U.T)
            rows, cols = np.nonzero(cosine >= 1 - atol)
            above = cols > rows + start
            count += int(above.sum())
            if example is None and above.any():
                example = (rows[above][0] + start, cols[above][0])
        if count:
            problems.append(
                f"{count} pair(s) of duplicate or parallel inputs (e.g. rows {example[0]} and {example[1]}): "
                "then lambda = 0 and the convergence theorems do not apply"
            )
    for message in problems:
        warnings.warn(message, TheoryAssumptionWarning, stacklevel=2)
    return problems
