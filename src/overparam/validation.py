"""Checks at the door: shapes, finiteness and dtype, with messages that say how to fix the input."""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(values, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be numeric: {error}") from None
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name} must be real numbers, got dtype {tensor.dtype}")
    tensor = tensor.to(dtype=dtype, device=device)
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf); remove or impute them")
    return tensor


def as_inputs(X, in_dim: int | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """X as an (n, d) tensor of `dtype` on `device`; n >= 1, finite, d == in_dim if given."""
    if isinstance(X, torch.Tensor) and X.dtype == dtype and X.device == device and X.dim() == 2 \
            and X.shape[0] > 0 and (in_dim is None or X.shape[1] == in_dim):
        if not torch.isfinite(X).all():
            raise ValueError("X has non-finite values (NaN or inf); remove or impute them")
        return X
    X = _as_tensor(X, "X", dtype, device)
    if X.dim() == 1 and in_dim is not None and X.shape[0] == in_dim:
        X = X[None, :]
    if X.dim() != 2:
        raise ValueError(f"X must be a 2-D array (n, d), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows (n = 0): give at least one input")
    if in_dim is not None and X.shape[1] != in_dim:
        raise ValueError(f"X has d = {X.shape[1]} columns but the network expects in_dim = {in_dim}")
    return X


def as_targets(y, n: int, out_dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """y as an (n, k) tensor: (n,) is accepted when k == 1."""
    y = _as_tensor(y, "y", dtype, device)
    if y.dim() == 1 and out_dim == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[0] != n or y.shape[1] != out_dim:
        raise ValueError(
            f"y must have shape ({n},) or ({n}, {out_dim}) to match X and out_dim, got {tuple(y.shape)}"
        )
    return y


class UserInputError(ValueError):
    """Input the user can fix (a flag, a file, a spec); the message says how. A ValueError, so
    code that catches bad values catches it too; the CLI prints it in one line and exits 2."""
