"""overparam: over-parameterized two-layer networks (the papers' relu, exp and softmax, and any
elementwise activation) trained as the convergence theorems analyse them. Formulas: docs/mathematics.md; see
the README for the tour."""

from importlib import metadata as _metadata

from .activations import Activation
from .models import TwoLayerNet, initial_weights
from .training.loop import History, TrainState, train
from . import theory
from .kernels.infinite import infinite_ntk
from .kernels.spectra import lambda_min, spectral_norm
from .kernels.finite import monte_carlo_ntk, ntk
from .kernels.regime import KernelRegime
from .training.diagnostics import KernelDiagnostics, TheoryCheck

try:  # pyproject.toml's version is the one source: installed packages carry it in their metadata
    __version__ = _metadata.version("overparam")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["Activation", "TwoLayerNet", "initial_weights", "History", "TrainState", "train", "__version__",
           "ntk", "infinite_ntk", "monte_carlo_ntk", "lambda_min", "spectral_norm", "theory",
           "KernelRegime", "KernelDiagnostics", "TheoryCheck"]
