"""The three activations' names, default output scales and the relu value (SPEC §2-3).

phi and phi' are applied where they are fused with the GEMMs, in `coefficients`: relu's
derivative 1{z > 0} in place, exp and the softmax numerators by exp2 of (x log2 e) W^T; the
softmax normalisation over neurons in `coefficients.forward`, because it couples all neurons.
"""

from __future__ import annotations

import torch

ACTIVATIONS = ("relu", "exp", "softmax")

#: Paper default output scale kappa per activation, as a string understood by `parse_scale`.
DEFAULT_SCALE = {"relu": "1/sqrt(m)", "exp": "1", "softmax": "1"}


def relu(z: torch.Tensor) -> torch.Tensor:
    """phi(z) = max(0, z)."""
    return torch.clamp_min(z, 0)


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    return activation


def parse_scale(scale: str | float | None, activation: str, width: int) -> float:
    """Output scale kappa: None (the paper's default), '1', '1/sqrt(m)', '1/m' or a number."""
    if scale is None:
        scale = DEFAULT_SCALE[activation]
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        value = float(scale)
    else:
        text = str(scale).replace(" ", "")
        named = {"1": 1.0, "1/sqrt(m)": width ** -0.5, "1/m": 1.0 / width}
        if text in named:
            value = named[text]
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"unknown scale {scale!r}: use '1', '1/sqrt(m)', '1/m' or a positive number"
                ) from None
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return value
