"""Datasets: synthetic generators, user files (.npz, .csv), and the checks the theory needs (SPEC §1).

Every generator returns float64 numpy arrays X (n, d) and y (n, k) and takes a seed.
The theory assumes ||x_i|| <= 1 and no two inputs parallel; `check_theory_assumptions` warns
when either fails (then lambda = 0 and the convergence theorems say nothing).
"""

from __future__ import annotations

import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from . import activations, resources

FILE_SUFFIXES = (".npz", ".csv")
#: float64 copies of X and y a built-in data set holds at once: the draws, the result, and in
#: `check_theory_assumptions` the unit rows and the k-d tree's own copy of them.
DATA_COPIES = 4


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
            activation: str | activations.Activation = activations.RELU) -> Dataset:
    """x_i uniform on S^{d-1}, y = a small random two-layer teacher network sum_r a_r phi_r(W, x) with
    Gaussian W and a (normalised activations: phi_r = S_r(x), the softmax over the teacher's neurons),
    centred and normalised to unit RMS."""
    activation = activations.resolve(activation)
    X = unit_sphere(n, d, seed)
    rng = _rng(seed + 2_000_003)
    W = rng.standard_normal((width, d))
    a = rng.standard_normal((width, k))
    Z = X @ W.T
    if activation.normalised:  # S is invariant to a shift per row: shift by the max, so no term overflows
        Z -= Z.max(1, keepdims=True)
    H = activation.value(torch.from_numpy(Z)).numpy()
    if activation.normalised:
        H /= H.sum(1, keepdims=True)
    y = H @ a
    y -= y.mean(0)
    y /= np.sqrt(np.mean(y**2)) + 1e-300
    return Dataset(X, y, f"teacher-{activation.name}")


#: Ridges J of `cosine_teacher`.
TEACHER_RIDGES = 4


def cosine_teacher(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """f*(x) = c sum_j cos(2 <u_j, x> + b_j), j = 1..J (`TEACHER_RIDGES`), u_j uniform on S^{d-1},
    b_j ~ U[0, 2 pi) drawn from `seed`; c makes the standard deviation of f* one over 20000 fixed points of
    the sphere. Shape (n,). Smooth enough that kernel regression learns it from tens of points in d = 8
    (docs/mathematics.md#generalisation)."""
    rng = _rng(seed + 3_000_017)
    U = unit_sphere(TEACHER_RIDGES, X.shape[1], seed + 3_000_019)
    b = rng.uniform(0, 2 * np.pi, TEACHER_RIDGES)

    def ridges(points: np.ndarray) -> np.ndarray:
        return np.cos(2 * points @ U.T + b).sum(1)

    return ridges(X) / ridges(unit_sphere(20000, X.shape[1], seed + 3_000_023)).std()


class Split(NamedTuple):
    """Training inputs X (n, d) and labels y (n, 1); test inputs X_test and labels y_test."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def teacher_split(n: int, d: int, test: int, noise: float, seed: int = 0) -> Split:
    """Noisy `cosine_teacher` labels y = f*(x) + noise * N(0, 1) on x uniform on S^{d-1}: n training
    points (`unit_sphere(n, d, seed)` with noise from `seed + 1`, so every n is the first n rows of a larger
    draw: training sets are nested) and `test` held-out points (seeds `seed + 2`, `seed + 3`), the same for
    every n, so a test MSE of noise^2 is the floor."""
    X = unit_sphere(n, d, seed)
    X_test = unit_sphere(test, d, seed + 2)
    y = cosine_teacher(X, seed) + noise * _rng(seed + 1).standard_normal(n)
    y_test = cosine_teacher(X_test, seed) + noise * _rng(seed + 3).standard_normal(test)
    return Split(X, y[:, None], X_test, y_test[:, None])


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
    Needs scikit-learn (a dependency of overparam; `pip install scikit-learn` where it was removed).
    """
    chosen = _digit_classes(classes)
    images = _digits_loader()()
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


def _digits_loader():
    """sklearn.datasets.load_digits, or a ValueError saying what to install."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    return load_digits


def _digit_classes(classes) -> tuple[int, ...]:
    chosen = tuple(classes)
    if len(chosen) < 2 or len(set(chosen)) != len(chosen) or not set(chosen) <= set(DIGITS_CLASSES):
        raise ValueError(f"digits classes must be at least two distinct digits from 0 to 9, got {list(chosen)}")
    return tuple(int(c) for c in chosen)


def _scalar_labels(name: str, k: int) -> None:
    if k != 1:
        raise ValueError(f"{name} has scalar labels (k = 1), got k = {k}")


def _integers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


@dataclass(frozen=True)
class Source:
    """A named dataset: make(n, d, k, seed, **options) -> Dataset; `options` maps each option
    a spec may set (`name:key=value,...`) to the function that parses its text; `shape(**options)`
    gives (d, k) for a dataset whose shape is its own (then make ignores d and k), None when they are free."""

    make: Callable[..., Dataset]
    options: dict[str, Callable[[str], object]] = field(default_factory=dict)
    shape: Callable[..., tuple[int, int]] | None = None


def _moons(n, d, k, seed, noise=0.05):
    _scalar_labels("moons", k)
    return moons(n, noise, seed)


def _circles(n, d, k, seed, noise=0.03, factor=0.5):
    _scalar_labels("circles", k)
    return circles(n, noise, factor, seed)


def _digits(n, d, k, seed, classes=DIGITS_CLASSES):
    return digits(classes, n, seed)


def _digits_shape(classes=DIGITS_CLASSES) -> tuple[int, int]:
    chosen = _digit_classes(classes)
    _digits_loader()  # a sweep of digits fails at its spec, not in every run, where scikit-learn is missing
    return 64, 1 if len(chosen) == 2 else len(chosen)


#: The built-in datasets a --data spec (or a sweep's `data`) names.
SOURCES: dict[str, Source] = {
    "sphere": Source(sphere),
    "teacher": Source(teacher, {"width": int, "activation": str}),
    "moons": Source(_moons, {"noise": float}, lambda **options: (2, 1)),
    "circles": Source(_circles, {"noise": float, "factor": float}, lambda **options: (2, 1)),
    "digits": Source(_digits, {"classes": _integers}, _digits_shape),
}
BUILTIN = tuple(SOURCES)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`name` or `name:key=value,key=value` -> (name, {key: value}); a piece without `=` continues
    the previous value, so `digits:classes=3,5` gives {"classes": "3,5"}."""
    name, colon, rest = str(spec).partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"data spec {spec!r} has no name: use e.g. sphere, teacher:width=16 or a .npz/.csv file")
    options: dict[str, str] = {}
    key = None
    for piece in rest.split(",") if colon else ():
        if "=" in piece:
            key, _, value = (part.strip() for part in piece.partition("="))
            if not key or key in options:
                raise ValueError(f"data spec {spec!r}: {'empty' if not key else 'repeated'} option name in {piece!r}")
            options[key] = value
        elif key is not None:
            options[key] += "," + piece.strip()
        else:
            raise ValueError(f"data spec {spec!r}: options are key=value, got {piece!r}")
    return name, options


def split_specs(text: str) -> list[str]:
    """Comma-separated specs: a piece that does not begin with a dataset name continues the spec before it,
    so `sphere,digits:classes=3,5` is ["sphere", "digits:classes=3,5"]."""
    specs: list[str] = []
    for piece in (part.strip() for part in str(text).split(",")):
        if specs and piece.partition(":")[0] not in SOURCES:
            specs[-1] += "," + piece
        elif piece:
            specs.append(piece)
    return specs


def _options(spec: str, name: str, raw: dict[str, str], parsers: dict[str, Callable[[str], object]]) -> dict:
    unknown = sorted(set(raw) - set(parsers))
    if unknown:
        known = ", ".join(parsers) or "none"
        raise ValueError(f"data spec {spec!r}: {name} has no option {unknown[0]!r} (its options: {known})")
    options = {}
    for key, text in raw.items():
        try:
            options[key] = parsers[key](text)
        except ValueError as error:
            raise ValueError(f"data spec {spec!r}: option {key}={text!r} is invalid ({error})") from None
    return options


def check_spec(spec: str) -> tuple[Source, dict]:
    """The `Source` a built-in spec names and its parsed options; ValueError says what is wrong."""
    name, raw = parse_spec(spec)
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(SOURCES)}, or a .npz/.csv file")
    return SOURCES[name], _options(spec, name, raw, SOURCES[name].options)


def builtin(spec: str, n: int, d: int = 2, k: int = 1, seed: int = 0) -> Dataset:
    """A built-in dataset from its spec (`parse_spec`): sphere, teacher, moons, circles (the last two
    are 2-D with k = 1), digits (d = 64), options after a colon, e.g. `teacher:width=16`,
    `moons:noise=0.1` or `digits:classes=3,5`."""
    source, options = check_spec(spec)
    width, outputs = (d, k) if source.shape is None else source.shape(**options)
    resources.require(DATA_COPIES * 8 * n * (width + outputs), "cpu", f"the {spec} data (n = {n}, d = {width})",
                      "use a smaller --n" + (" or --d" if source.shape is None else ""))
    return source.make(n, d, k, seed, **options)


def fixed_shape(spec: str) -> tuple[int, int] | None:
    """(d, k) of a built-in spec whose shape is its own (moons, circles, digits), None when d and k are
    free; raises ValueError for an unknown name or option, or data this install cannot load (digits without
    scikit-learn)."""
    source, options = check_spec(spec)
    return None if source.shape is None else source.shape(**options)


def is_file_spec(spec: str) -> bool:
    """Whether a --data spec names a file (an existing path, or a .npz/.csv name with or without options)."""
    return Path(spec).is_file() or parse_spec(spec)[0].lower().endswith(FILE_SUFFIXES)


def from_spec(spec: str, n: int = 64, d: int = 8, k: int = 1, seed: int = 0, *,
              label_columns: str | list[int] | None = None, normalize: str | None = None) -> tuple[Dataset, list[str]]:
    """The dataset a --data spec names, and the theory's complaints about it (`check_theory_assumptions`).

    A built-in spec (`builtin`) uses n, d, k and seed; a file (`load`) brings its own shape: `table.csv`,
    `table.csv:labels=3,4` or `label_columns` pick the CSV label columns. `normalize` projects the
    inputs (`project_to_ball`).
    """
    if is_file_spec(spec):
        path, raw = (spec, {}) if Path(spec).is_file() else parse_spec(spec)
        columns = _options(spec, Path(path).name, raw, {"labels": _integers}).get("labels", label_columns)
        dataset = load(path, _integers(columns) if isinstance(columns, str) else columns)
    else:
        dataset = builtin(spec, n, d, k, seed)
    if normalize:
        dataset.X = project_to_ball(dataset.X, normalize)
    return dataset, check_theory_assumptions(dataset.X, warn=False)


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
        X, y = _load_npz(path)
    elif suffix == ".csv":
        X, y = _load_csv(path, label_columns or [-1])
    else:
        raise ValueError(f"unsupported data file {path.name!r}: use .npz (arrays X, y) or .csv")
    return Dataset(*validate(X, y), name=path.stem)


#: What reading a damaged .npz can raise (numpy's zip and header parsers).
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, SyntaxError,
              TypeError, NotImplementedError, RuntimeError, OverflowError, MemoryError, zlib.error)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = set(archive.files)
            arrays = {name: archive[name] for name in ("X", "y") if name in files}
    except NPZ_ERRORS as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read {path} as .npz with numeric arrays X and y: {reason}") from None
    missing = sorted({"X", "y"} - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks array(s) {missing}; save it with np.savez(path, X=X, y=y)")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":  # strings would parse, complex would lose its imaginary part
            raise ValueError(f"array {name} of {path} has dtype {array.dtype}; X and y must be real numbers")
    return arrays["X"].astype(np.float64), arrays["y"].astype(np.float64)


def _load_csv(path: Path, label_columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {path} as CSV: it is not UTF-8 text") from None
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


def check_theory_assumptions(X: np.ndarray, atol: float = 1e-10, warn: bool = True) -> list[str]:
    """Messages for norms > 1 and duplicate/parallel inputs (|cos(x_i, x_j)| >= 1 - atol, `parallel_pairs`),
    each also a TheoryAssumptionWarning when warn."""
    problems = []
    norms = np.linalg.norm(X, axis=1)
    if norms.max() > 1 + atol:
        problems.append(
            f"max ||x_i|| = {norms.max():.4g} > 1: the theory assumes ||x|| <= 1; pass --normalize ball (or sphere)"
        )
    if np.any(norms == 0):
        problems.append("an input is zero: its NTK row vanishes and lambda = 0")
    else:
        count, example = parallel_pairs(X / norms[:, None], atol)
        if count:
            problems.append(
                f"{count} pair(s) of duplicate or parallel inputs (e.g. rows {example[0]} and {example[1]}): "
                "then lambda = 0 and the convergence theorems do not apply"
            )
    for message in problems if warn else ():
        warnings.warn(message, TheoryAssumptionWarning, stacklevel=2)
    return problems


def parallel_pairs(U: np.ndarray, atol: float = 1e-10) -> tuple[int, tuple[int, int] | None]:
    """(number of pairs i < j of unit rows with |<u_i, u_j>| >= 1 - atol, the first such (i, j)).

    For unit vectors |<u_i, u_j>| >= 1 - atol  <=>  min ||u_i -+ u_j|| <= r = sqrt(2 atol), so a k-d
    tree of the u_i answers it with ball queries of radius r around each u_i and -u_i: O(n d)
    memory and O(n log n) time, where comparing all pairs takes O(n^2) (days at n = 1e8).
    """
    from scipy.spatial import cKDTree

    radius = math.sqrt(2 * atol)
    tree = cKDTree(U)
    partners = tree.query_ball_point(U, radius, return_length=True) - 1  # each u_i finds itself
    partners += tree.query_ball_point(-U, radius, return_length=True)
    count = int(partners.sum()) // 2
    if not count:
        return 0, None
    first = int(np.flatnonzero(partners)[0])  # the smallest row with a partner: all its partners are later rows
    later = set(tree.query_ball_point(U[first], radius)) | set(tree.query_ball_point(-U[first], radius))
    return count, (first, min(later - {first}))
