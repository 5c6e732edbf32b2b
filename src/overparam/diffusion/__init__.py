"""Score-based diffusion with two-layer networks, against exact ground truth (docs/mathematics.md#diffusion).

Modules, in the order data flows: `process` (OU forward process, time grids), `mixtures`
(Gaussian mixtures with exact p_t, log p_t and score), `datasets` (the `gmm:k=8,d=2` spec strings
and 2-D sample-only sets), `embedding` (embed(x_t, t) into the unit ball), `training` (denoising
score matching as regression, early stopping), `score` (Tweedie score, exact score error),
`samplers` (reverse SDE, probability-flow ODE), `metrics` (W2, MMD, NLL, weights), `experiment`
(the whole run), `figures`.

The API lives here, under `overparam.diffusion`, not in the top-level `overparam` namespace:
it is a separate application of the core networks, and importing it pulls in POT.
"""

from .datasets import SampleSet, parse_data
from .embedding import Embedding
from .experiment import DiffusionConfig, DiffusionResult, run, run_experiment
from .mixtures import GaussianMixture, isotropic_mixture
from .process import Horizon, alpha, forward_sample, h, time_grid
from .samplers import probability_flow, reverse_sde, sample
from .score import LearnedScore, score_error, score_error_curve, trivial_score
from .training import DenoiserFit, EarlyStopping, TrainingConfig, fit_denoiser

__all__ = [
    "SampleSet", "parse_data", "Embedding", "DiffusionConfig", "DiffusionResult", "run", "run_experiment",
    "GaussianMixture", "isotropic_mixture", "Horizon", "alpha", "forward_sample", "h", "time_grid",
    "probability_flow", "reverse_sde", "sample", "LearnedScore", "score_error", "score_error_curve",
    "trivial_score", "DenoiserFit", "EarlyStopping", "TrainingConfig", "fit_denoiser",
]
