"""Gaussian mixtures p_0 and their exact OU marginals p_t, log-densities and scores (docs/mathematics.md#diffusion).

If p_0 = sum_k pi_k N(mu_k, Sigma_k), the OU process gives

    p_t = sum_k pi_k N(alpha_t mu_k, Sigma_k(t)),   Sigma_k(t) = alpha_t^2 Sigma_k + h_t I.

Sigma_k = 0 is allowed (p_0 then puts mass pi_k on the point mu_k): p_t has a density for every
t > 0 and the formulas below stay exact. Each Sigma_k is diagonalised once, Sigma_k = U_k diag(lam_k) U_k^T,
so Sigma_k(t) = U_k diag(alpha_t^2 lam_k + h_t) U_k^T for every t at the cost of one projection:

    log N(x; alpha mu_k, Sigma_k(t)) = -1/2 sum_j [ z_j^2 / v_j + log(2 pi v_j) ],
    z = U_k^T (x - alpha mu_k),   v = alpha^2 lam_k + h,
    grad log p_t(x) = sum_k P(k | x, t) * ( -U_k (z / v) ),

with the posterior P(k | x, t) = softmax_k(log pi_k + log N_k). Times t are a scalar or one per
point, so a batch may mix times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import process


@dataclass
class GaussianMixture:
    """p_0 = sum_k weights[k] N(means[k], covariances[k]); weights (K,), means (K, d), covariances (K, d, d).

    Covariances must be symmetric positive semi-definite; zero matrices give point masses.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    name: str = "gmm"
    eigenvalues: torch.Tensor = field(init=False, repr=False)
    eigenvectors: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weights = torch.as_tensor(self.weights, dtype=torch.float64)
        means = torch.as_tensor(self.means, dtype=torch.float64)
        covs = torch.as_tensor(self.covariances, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(means.shape)}")
        K, d = means.shape
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match the means, got {tuple(weights.shape)}")
        if covs.shape != (K, d, d):
            raise ValueError(f"covariances must have shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        for name, tensor in (("weights", weights), ("means", means), ("covariances", covs)):
            if not torch.isfinite(tensor).all():
                raise ValueError(f"mixture {name} must be finite")
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("mixture weights must be non-negative with a positive sum")
        if not torch.allclose(covs, covs.transpose(-1, -2), rtol=0, atol=1e-12 * (1 + covs.abs().max())):
            raise ValueError("mixture covariances must be symmetric")
        lam, U = torch.linalg.eigh(covs)
        scale = 1e-10 * (1 + lam.abs().amax())
        if (lam < -scale).any():
            raise ValueError(f"mixture covariances must be positive semi-definite (eigenvalue {float(lam.min()):.3g})")
        self.weights = weights / weights.sum()
        self.means, self.covariances = means, covs
        self.eigenvalues, self.eigenvectors = lam.clamp_min(0), U

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def has_density(self) -> bool:
        """True when p_0 itself has a density (every Sigma_k positive definite)."""
        return bool((self.eigenvalues > 0).all())

    def sample_with_labels(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws from p_0 (float64, CPU) and the component each came from: (n, d), (n,)."""
        labels = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        xi = torch.randn(int(n), self.dim, generator=generator, dtype=torch.float64)
        root = self.eigenvectors * self.eigenvalues.sqrt()[:, None, :]  # U diag(sqrt(lam))
        x = self.means[labels] + torch.einsum("nij,nj->ni", root[labels], xi)
        return x, labels

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws from p_0, shape (n, d), float64 on the CPU."""
        return self.sample_with_labels(n, generator)[0]

    def _components(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per point and component: log(pi_k N_k(x)) (n, K), z (n, K, d) and v (n, K, d)."""
        x = x.to(torch.float64)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != x.shape[:1]:
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if (t < 0).any():
            raise ValueError("times must be >= 0")
        lam, U, means = (self.eigenvalues.to(x.device), self.eigenvectors.to(x.device), self.means.to(x.device))
        a, hv = process.alpha(t), process.h(t)
        v = a[:, None, None] ** 2 * lam[None] + hv[:, None, None]  # (n, K, d)
        if (v <= 0).any():
            raise ValueError("p_t has no density here: a zero-covariance component at t = 0; use t > 0")
        diff = x[:, None, :] - a[:, None, None] * means[None]  # (n, K, d)
        z = torch.einsum("nkd,kde->nke", diff, U)
        log_normal = -0.5 * ((z * z / v).sum(-1) + torch.log(v).sum(-1) + self.dim * math.log(2 * math.pi))
        return torch.log(self.weights.to(x.device))[None] + log_normal, z, v

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(x), shape (n,); t a scalar or (n,)."""
        joint, _, _ = self._components(x, t)
        return torch.logsumexp(joint, dim=1)

    def mahalanobis(self, x: torch.Tensor, t) -> torch.Tensor:
        """sqrt((x - alpha_t mu_k)^T C_k^{-1} (x - alpha_t mu_k)), C_k = alpha_t^2 Sigma_k + h_t I: the distance
        from x to component k of p_t in that component's own metric, shape (n, K)."""
        _, z, v = self._components(x, t)
        return (z * z / v).sum(-1).sqrt()

    def posterior(self, x: torch.Tensor, t) -> torch.Tensor:
        """P(component k | x_t = x), shape (n, K)."""
        joint, _, _ = self._components(x, t)
        return torch.softmax(joint, dim=1)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """grad_x log p_t(x), shape (n, d), exact."""
        joint, z, v = self._components(x, t)
        U = self.eigenvectors.to(x.device)
        per_component = -torch.einsum("nke,kde->nkd", z / v, U)
        return (torch.softmax(joint, dim=1)[..., None] * per_component).sum(1)

    def denoiser(self, x: torch.Tensor, t) -> torch.Tensor:
        """E[x_0 | x_t = x] = (x + h_t grad log p_t(x)) / alpha_t (Tweedie), shape (n, d).

        This is the regression target the network learns (docs/mathematics.md#diffusion).
        """
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return (x + process.h(t)[:, None] * self.score(x, t)) / process.alpha(t)[:, None]

    def describe(self) -> dict:
        """Plain data: weights, means, covariances."""
        return {"name": self.name, "weights": self.weights.tolist(), "means": self.means.tolist(),
                "covariances": self.covariances.tolist()}


def standard_means(k: int, d: int, radius: float, seed: int = 0) -> torch.Tensor:
    """k means at distance `radius` from 0: evenly on a circle (d = 2), evenly on [-r, r] (d = 1),
    or at seeded uniformly random directions (d >= 3). Shape (k, d)."""
    if d == 1:
        return torch.linspace(-radius, radius, k, dtype=torch.float64)[:, None] if k > 1 else torch.zeros(1, 1, dtype=torch.float64)
    if d == 2:
        angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        return radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    directions = torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return radius * directions / directions.norm(dim=1, keepdim=True)


def isotropic_mixture(k: int, d: int, radius: float = 3.0, std: float = 0.3,
                      weights: torch.Tensor | None = None, seed: int = 0, name: str = "gmm") -> GaussianMixture:
    """sum_k pi_k N(mu_k, std^2 I) with `standard_means`; std = 0 gives k point masses; weights default equal."""
    for label, value in (("k", k), ("d", d)):
        if int(value) != value or value < 1:
            raise ValueError(f"mixture {label} must be a positive integer, got {value!r}")
    if not (radius >= 0 and math.isfinite(radius)):
        raise ValueError(f"mixture radius must be finite and >= 0, got {radius!r}")
    if not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"mixture std must be finite and >= 0, got {std!r}")
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights
    covariances = std ** 2 * torch.eye(d, dtype=torch.float64).expand(k, d, d).clone()
    return GaussianMixture(weights, standard_means(int(k), int(d), float(radius), seed), covariances, name)
