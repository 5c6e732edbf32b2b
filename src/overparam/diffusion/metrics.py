"""Sample-quality metrics: W2 (POT), RBF MMD, NLL under the true mixture, recovered weights.

- W2(P, Q) = ( min_coupling E ||x - y||^2 )^{1/2} between the two empirical measures, solved
  exactly by `ot.emd2` (network simplex) on the squared-Euclidean cost (`ot.emd2_1d`, by sorting,
  in one dimension); sets above `max_points` (default 5000) are subsampled uniformly first,
  because the exact solver is O(n^3).
- MMD^2 with the Gaussian kernel k(x, y) = exp(-||x - y||^2 / (2 b^2)), unbiased U-statistic
      MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j),
  which can be slightly negative when P = Q. The bandwidth b comes from the median heuristic on
  the *reference* sample only (b = median pairwise distance of the fresh p_0 draws), so every
  sampler in a run is scored with the same kernel.
- NLL = -mean_i log p(x_i) under the true mixture: p_0 when it has a density, else p_{t0}
  (a mixture of points has no density; the samplers target p_{t0} anyway).
- Precision: the share of samples within 3 standard deviations of some component of p_{t0}, in that
  component's own metric (Mahalanobis, covariance alpha^2 Sigma_k + h I at t0); recall: the share of
  components holding at least half their expected share pi_k of the samples, a sample counting for the
  component nearest it in that metric when it is within 3 of it. Samples bridging two modes lower
  precision; modes left empty lower recall.
- Recovered weights: each sample goes to its most probable component under p_{t0}
  (argmax_k P(k | x, t0)); the weights are the fractions, the error is the total variation
  1/2 sum_k |pi_hat_k - pi_k|.

POT is imported on first use: it takes about a second, and the CLI imports this package at start-up.
"""

from __future__ import annotations

import numpy as np
import torch

from .mixtures import GaussianMixture

EXACT_W2_POINTS = 5000


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _subsample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= limit else x[rng.choice(len(x), limit, replace=False)]


def wasserstein2(x, y, max_points: int = EXACT_W2_POINTS, seed: int = 0) -> float:
    """Exact W2 between the empirical measures of x (n, d) and y (m, d) (uniform weights)."""
    import ot

    rng = np.random.default_rng(seed)
    x, y = _subsample(_numpy(x), max_points, rng), _subsample(_numpy(y), max_points, rng)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if x.shape[1] == 1:  # exact by sorting; the network simplex is slow on 1-D costs
        return float(np.sqrt(max(ot.emd2_1d(x[:, 0], y[:, 0], metric="sqeuclidean"), 0.0)))
    cost = ot.dist(x, y, metric="sqeuclidean")
    weights_x, weights_y = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return float(np.sqrt(max(ot.emd2(weights_x, weights_y, cost, numItermax=10 ** 8), 0.0)))


def median_bandwidth(reference, max_points: int = 2000, seed: int = 0) -> float:
    """Median heuristic: the median pairwise Euclidean distance within `reference` (subsampled)."""
    from scipy.spatial.distance import pdist

    x = _subsample(_numpy(reference), max_points, np.random.default_rng(seed))
    distances = pdist(x)
    value = float(np.median(distances))
    return value if value > 0 else 1.0


def mmd_rbf(x, y, bandwidth: float, max_points: int = 5000, seed: int = 0) -> float:
    """Unbiased MMD^2 with k(x, y) = exp(-||x - y||^2 / (2 bandwidth^2)) (at most max_points each)."""
    rng = np.random.default_rng(seed)
    x, y = _subsample(_numpy(x), max_points, rng), _subsample(_numpy(y), max_points, rng)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")

    from scipy.spatial.distance import cdist

    def mean_kernel(a: np.ndarray, b: np.ndarray, same: bool) -> float:
        K = np.exp(-cdist(a, b, metric="sqeuclidean") / (2 * bandwidth ** 2))
        if same:
            return float((K.sum() - np.trace(K)) / (len(a) * (len(a) - 1)))
        return float(K.mean())

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)


def likelihood_time(mixture: GaussianMixture, t0: float) -> float:
    """The time whose marginal scores samples: 0 when p_0 has a density, else t0."""
    return 0.0 if mixture.has_density else float(t0)


def negative_log_likelihood(mixture: GaussianMixture, x, t0: float) -> float:
    """-mean log p(x) under p_0 (or p_{t0} when p_0 has no density); inf if a sample is not finite."""
    x = torch.as_tensor(_numpy(x))
    if not torch.isfinite(x).all():
        return float("inf")
    return float(-mixture.log_prob(x, likelihood_time(mixture, t0)).mean())


def precision_recall(mixture: GaussianMixture, x, t0: float, radius: float = 3.0) -> tuple[float, float]:
    """(precision, recall) of samples x (N, d) against the mixture's components at t0 (module docstring);
    non-finite samples are near no component."""
    x = torch.as_tensor(_numpy(x))
    finite = torch.isfinite(x).all(1)
    distance = mixture.mahalanobis(x[finite], t0)  # (N_finite, K)
    nearest, component = distance.min(1)
    near = nearest <= radius
    share = torch.bincount(component[near], minlength=mixture.n_components).double() / len(x)
    return float(near.sum()) / len(x), float((share >= mixture.weights / 2).double().mean())


def recovered_weights(mixture: GaussianMixture, x, t0: float) -> np.ndarray:
    """Fraction of samples whose most probable component under p_{t0} is k, shape (K,)."""
    x = torch.as_tensor(_numpy(x))
    finite = torch.isfinite(x).all(1)
    labels = mixture.posterior(x[finite], t0).argmax(1)
    return (torch.bincount(labels, minlength=mixture.n_components).double() / len(x)).numpy()


def weight_error(mixture: GaussianMixture, weights: np.ndarray) -> float:
    """Total variation 1/2 sum_k |pi_hat_k - pi_k| (non-finite samples count as lost mass)."""
    return 0.5 * float(np.abs(weights - mixture.weights.numpy()).sum() + (1 - weights.sum()))
