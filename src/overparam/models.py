"""Two-layer networks with trained first layer W and fixed random signs a (SPEC §2)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import activations, chunks, coefficients
from .validation import as_inputs, as_targets

INITS = ("independent", "coupled")


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    named = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "float": torch.float32}
    if dtype not in named:
        raise ValueError(f"unknown dtype {dtype!r}: use float64 or float32")
    return named[dtype]


def resolve_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device '{device}' was asked for but this machine has {torch.cuda.device_count()} "
                         f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def initial_weights(
    width: int,
    in_dim: int,
    out_dim: int,
    init: str = "independent",
    sigma: float = 1.0,
    seed: int | Sequence[int] = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """W(0) with rows ~ N(0, sigma^2 I_d) and signs a uniform on {+1, -1}^{m x k}: (m, d) and (m, k),
    or for a sequence of seeds one network per seed stacked, (S, m, d) and (S, m, k).

    coupled (MOSW22): w_{2r+1} = w_{2r}, a_{2r+1} = -a_{2r}, so F(W(0), .) = 0.
    Draws on the CPU from `seed` so the same seed gives the same network on every device.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use 'independent' or 'coupled'")
    if init == "coupled" and width % 2:
        raise ValueError(f"coupled init pairs neurons, so the width must be even; got {width}")
    if not (sigma > 0):
        raise ValueError(f"sigma must be positive, got {sigma}")
    if not isinstance(seed, (int, np.integer)):
        drawn = [initial_weights(width, in_dim, out_dim, init, sigma, s, dtype, device) for s in seed]
        return torch.stack([W for W, _ in drawn]), torch.stack([a for _, a in drawn])
    gen = torch.Generator().manual_seed(int(seed))
    rows = width // 2 if init == "coupled" else width
    W = torch.randn(rows, in_dim, generator=gen, dtype=torch.float64) * sigma
    a = torch.randint(0, 2, (rows, out_dim), generator=gen).to(torch.float64) * 2 - 1
    if init == "coupled":
        W = W.repeat_interleave(2, dim=0)
        a = torch.stack([a, -a], dim=1).reshape(width, out_dim)
    return W.to(dtype=dtype, device=device), a.to(dtype=dtype, device=device)


def pairs_neurons(init: str, width: int) -> bool:
    """Whether a network of this init and (total) width sums its neurons in coupled pairs (2r, 2r+1),
    whose two terms cancel exactly at W(0) (see `coefficients.forward`'s `paired`)."""
    return init == "coupled" and width % 2 == 0


class TwoLayerNet:
    r"""$F_\ell(W, x) = \kappa \sum_r a_{r\ell}\, \phi_r(W, x)$ (SPEC §2, §11).

    activation: a name (`activations.BUILTIN`), 'module:attribute' or an `Activation`; kept as its
    record. Elementwise: $\phi_r = \phi(\langle w_r, x\rangle)$; softmax: $\phi_r = m\, S_r(x)$, S = softmax
    over neurons of $(\langle w_r, x\rangle)_r$.

    W (m, d) and a (m, k) may be read and replaced (checked on assignment, see `W` and `a`).
    `net(X)` maps (n, d) -> (n, k).
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        out_dim: int = 1,
        activation: str | activations.Activation = activations.RELU,
        scale: str | float | None = None,
        init: str = "independent",
        sigma: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str = "cpu",
        chunk_size: int | None = None,
    ) -> None:
        for name, value in (("in_dim", in_dim), ("width", width), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.activation = activations.resolve(activation)
        self.scale_spec = scale
        self.kappa = activations.parse_scale(scale, self.activation, width)
        self.init = init
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.chunk_size = chunk_size
        self._W, self._a = initial_weights(
            int(width), int(in_dim), int(out_dim), init, sigma, seed,
            resolve_dtype(dtype), resolve_device(device),
        )

    @property
    def W(self) -> torch.Tensor:
        """First-layer weights (m, d), row r = w_r; trained in place by `overparam.train`.

        Assigning checks the new value: 2-D with d = in_dim columns and finite. A floating-point
        tensor is kept as it is (a view is not copied; its dtype and device become the network's);
        anything else is converted to the network's dtype and device. The width m may change:
        then assign an a with the new number of rows too (the first forward pass checks).
        """
        return self._W

    @W.setter
    def W(self, value) -> None:
        W = _as_weights(value, "W", self._W)
        if W.dim() != 2 or W.shape[1] != self.in_dim or W.shape[0] < 1:
            raise ValueError(f"W must be an (m, d) matrix with d = in_dim = {self.in_dim} columns (row r is "
                             f"w_r), got shape {tuple(W.shape)}; build a new TwoLayerNet to change in_dim")
        self._W = W

    @property
    def a(self) -> torch.Tensor:
        """Fixed second-layer signs (m, k), one row per neuron of W.

        Assigning checks the new value: 2-D, m = W's rows, k = out_dim columns, finite; it is
        converted to W's dtype and device (a tensor that already has them is not copied).
        To change the width, assign W first, then a.
        """
        return self._a

    @a.setter
    def a(self, value) -> None:
        a = _as_weights(value, "a", self._a, self._W)
        m, k = self._W.shape[0], self.out_dim
        if a.dim() != 2 or a.shape != (m, k):
            raise ValueError(f"a must be an (m, k) = ({m}, {k}) matrix: one row per neuron of W (m = W's rows) "
                             f"and k = out_dim = {k} columns, got shape {tuple(a.shape)}; to change the "
                             "width assign W first, then a")
        self._a = a

    @property
    def width(self) -> int:
        return self.W.shape[0]

    @property
    def in_dim(self) -> int:
        return self.W.shape[1]

    @property
    def out_dim(self) -> int:
        return self.a.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    def chunk(self, n: int) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        return default_chunk_for(n, self.out_dim, self.W)

    def forward_pass(self, X: torch.Tensor, keep: bool | None = None,
                     workspace: torch.Tensor | None = None, output: bool = True,
                     weights: torch.Tensor | None = None) -> coefficients.Pass:
        """Forward pass with Jacobian products (`Pass`); keep=None keeps the per-chunk
        derivative factors when they fit a quarter of free memory. workspace: the `workspace` of
        a Pass no longer needed, reused for the kept factors; output=False: elementwise activations skip F
        where only Jacobian products are wanted (see `coefficients.forward`). weights: the pass at
        other first-layer weights of W's shape (e.g. W(0)) instead of W."""
        self.check_layers()
        X = as_inputs(X, self.in_dim, self.dtype, self.device)
        if keep is None:
            keep = fits_in_memory(X.shape[0], self.width, self.W)
        return coefficients.forward(
            X, self.W if weights is None else weights, self.a, self.activation, self.kappa, self.chunk(X.shape[0]),
            keep=keep, paired=pairs_neurons(self.init, self.width), workspace=workspace, output=output,
        )

    def check_layers(self) -> None:
        """W and a describe the same neurons: as many rows, one dtype, one device."""
        W, a = self._W, self._a
        if W.shape[0] != a.shape[0]:
            raise ValueError(f"W has {W.shape[0]} rows (neurons) but a has {a.shape[0]}: after giving W a new "
                             f"width, assign an a of shape ({W.shape[0]}, {a.shape[1]})")
        if W.dtype != a.dtype or W.device != a.device:
            raise ValueError(f"W is {W.dtype} on {W.device} but a is {a.dtype} on {a.device}: assign a again "
                             "after W (it is converted to W's dtype and device)")

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """F(W, X), shape (n, k)."""
        return self.forward_pass(X, keep=False).out

    def loss(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """L(W) = 1/2 sum_i ||F(W, x_i) - y_i||^2."""
        residual = self(X) - as_targets(y, X.shape[0], self.out_dim, self.dtype, self.device)
        return 0.5 * float(residual.square().sum())

    def grad(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_W L = sum_i sum_l r_{il} c_{irl} x_i in closed form (SPEC §3), shape (m, d)."""
        forward = self.forward_pass(X)
        residual = forward.out - as_targets(y, forward.X.shape[0], self.out_dim, self.dtype, self.device)
        return forward.vjp(residual)

    def copy(self) -> "TwoLayerNet":
        clone = object.__new__(TwoLayerNet)
        clone.__dict__.update(self.__dict__)
        clone._W, clone._a = self._W.clone(), self._a.clone()
        return clone

    def config(self) -> dict:
        """Plain-data description (enough to rebuild the initial network)."""
        return {
            "activation": self.activation.name, "width": self.width, "in_dim": self.in_dim,
            "out_dim": self.out_dim, "scale": self.scale_spec, "kappa": self.kappa,
            "init": self.init, "sigma": self.sigma, "seed": self.seed,
            "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
        }

    def __repr__(self) -> str:
        return (f"TwoLayerNet(activation={self.activation.name!r}, in_dim={self.in_dim}, width={self.width}, "
                f"out_dim={self.out_dim}, kappa={self.kappa:.4g}, init={self.init!r})")


def _as_weights(value, name: str, current: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """`value` as a finite tensor: a floating-point tensor is kept (converted to `like`'s dtype and
    device when `like` is given); anything else is converted to `current`'s dtype and device."""
    like = current if like is None else like
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        tensor = value if like is current else value.to(dtype=like.dtype, device=like.device)
    else:
        if isinstance(value, torch.Tensor) and value.is_complex():
            raise ValueError(f"{name} must be real, got dtype {value.dtype}")
        try:
            array = value if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
            tensor = torch.as_tensor(array, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{name} must be a tensor or an array of numbers, got {type(value).__name__}: "
                             f"{error}") from None
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf); assign finite weights")
    return tensor


def default_chunk_for(n: int, k: int, W: torch.Tensor) -> int:
    return chunks.default_chunk(n, k, W.element_size(), W.device)


def fits_in_memory(n: int, m: int, W: torch.Tensor) -> bool:
    """True when an n x m matrix of W's dtype takes at most a quarter of free memory."""
    return n * m * W.element_size() * 4 <= chunks.available_memory(W.device)
