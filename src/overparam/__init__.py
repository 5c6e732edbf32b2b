"""overparam: over-parameterized two-layer networks (relu, exp, softmax) trained as the
convergence theorems analyse them. Formulas: SPEC.md; see the README for the tour."""

from .models import TwoLayerNet, initial_weights
from .train import History, TrainState, train

__version__ = "0.1.0"

__all__ = ["TwoLayerNet", "initial_weights", "History", "TrainState", "train", "__version__"]
