"""The Gaussian-mixture benchmark: a prior whose posterior is known exactly (MATH.md).

Prior: 25 components with means ``(8i, 8j, 8i, 8j, ...)`` for ``i, j in {-2, ..., 2}``, identity
covariances, weights ``∝ chi^2_1`` draws (or uniform draws). With a linear-Gaussian likelihood
``y = A x + sigma_y z`` the posterior is again a Gaussian mixture, with one shared covariance
``Sigma' = (I + A^T A / sigma_y^2)^{-1}``, means ``m_c = Sigma' (mu_c + A^T y / sigma_y^2)`` and
weights ``w_c' ∝ w_c N(y; A mu_c, sigma_y^2 I + A A^T)``; the evidence is
``p(y) = sum_c w_c N(y; A mu_c, sigma_y^2 I + A A^T)``. Noiseless (sigma_y = 0): in the rotated
basis ``xbar = V^T x`` the observed part equals ``ybar`` and the free part is a mixture with
weights ``∝ w_c N(ybar; (V^T mu_c)_obs, I)``, means ``(V^T mu_c)_free`` and identity covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diffusion import GaussianMixtureDenoiser
from ..operators import DenseOperator

__all__ = [
    "GaussianMixture",
    "InverseProblem",
    "gmm25_prior",
    "dcps_inverse_problem",
    "mcgdiff_inverse_problem",
    "exact_posterior",
    "log_evidence",
]


@dataclass
class GaussianMixture:
    """``sum_c w_c N(means_c, cov)`` with one covariance shared by every component (float64).

    ``cov`` is ``(D, D)``; for the prior it is the identity."""

    means: torch.Tensor  # (K, D)
    weights: torch.Tensor  # (K,), sums to 1
    cov: torch.Tensor  # (D, D)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws, ``(n, D)`` float64."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + z @ self.cov_sqrt().T

    def cov_sqrt(self) -> torch.Tensor:
        """A square root ``L`` with ``L L^T = cov`` (eigen-decomposition: the noiseless
        posterior's covariance is singular)."""
        evals, evecs = torch.linalg.eigh(0.5 * (self.cov + self.cov.T))
        return evecs * evals.clamp(min=0).sqrt()

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K)``: ``log N(x; means_c, cov)`` for every point and component."""
        chol = torch.linalg.cholesky(self.cov)
        diff = x.to(torch.float64)[:, None, :] - self.means[None]
        sol = torch.linalg.solve_triangular(chol, diff.reshape(-1, self.dim).T, upper=False).T.reshape(diff.shape)
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (sol * sol).sum(-1) - 0.5 * (logdet + self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(torch.log(self.weights) + self.component_log_prob(x), dim=-1)

    def denoiser(self, alphas_cumprod) -> GaussianMixtureDenoiser:
        """The exact denoiser of this mixture (identity covariance only)."""
        if not torch.allclose(self.cov, torch.eye(self.dim, dtype=self.cov.dtype)):
            raise ValueError("denoiser: the closed-form denoiser needs identity covariances")
        return GaussianMixtureDenoiser(self.means, self.weights, alphas_cumprod)


def gmm25_prior(dim: int, weights: str = "chi2", generator: torch.Generator | None = None) -> GaussianMixture:
    """The 25-component benchmark prior in ``dim`` dimensions.

    Args:
        dim: ``d_x >= 2``; the means repeat the pattern ``(8i, 8j)`` (an odd last coordinate gets
            ``8i``).
        weights: ``"chi2"`` (squared standard normals, the MCGdiff/DCPS scripts) or
            ``"uniform"`` (uniform draws, the later MGPS code).
    """
    if dim < 1:
        raise ValueError(f"dim: expected >= 1, got {dim}")
    grid = torch.arange(-2, 3, dtype=torch.float64) * 8.0
    ii, jj = torch.meshgrid(grid, grid, indexing="ij")
    pair = torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)  # (25, 2)
    means = pair.repeat(1, (dim + 1) // 2)[:, :dim].contiguous()
    if weights == "chi2":
        w = torch.randn(25, generator=generator, dtype=torch.float64) ** 2
    elif weights == "uniform":
        w = torch.rand(25, generator=generator, dtype=torch.float64)
    else:
        raise ValueError(f"weights: expected 'chi2' or 'uniform', got {weights!r}")
    return GaussianMixture(means, w / w.sum(), torch.eye(dim, dtype=torch.float64))


@dataclass
class InverseProblem:
    """``y = A x + sigma_y z`` with a mixture prior; ``x_true`` is the draw that made ``y``."""

    prior: GaussianMixture
    operator: DenseOperator
    y: torch.Tensor  # (d_y,)
    sigma_y: float
    x_true: torch.Tensor  # (d_x,)

    @property
    def A(self) -> torch.Tensor:
        return self.operator.matrix


def _observe(prior, A, sigma_y, generator) -> InverseProblem:
    x_true = prior.sample(1, generator)[0]
    noise = torch.randn(A.shape[0], generator=generator, dtype=torch.float64)
    y = A @ x_true + sigma_y * noise
    return InverseProblem(prior, DenseOperator(A), y, float(sigma_y), x_true)


def dcps_inverse_problem(prior: GaussianMixture, d_y: int = 1, sigma_y: float = 1.0, generator=None) -> InverseProblem:
    """DCPS-style generator: ``A ~ N(0, 1)^{d_y x d_x}``, ``x* ~ prior``, ``y = A x* + sigma_y z``."""
    A = torch.randn(d_y, prior.dim, generator=generator, dtype=torch.float64)
    return _observe(prior, A, sigma_y, generator)


def mcgdiff_inverse_problem(prior: GaussianMixture, d_y: int = 1, generator=None) -> InverseProblem:
    """MCGdiff-style generator: random orthogonal U, V (from the SVD of a Gaussian matrix),
    singular values sorted ``U(0, 1)`` draws, ``A = U diag(s) V_{1:d_y}^T``, ``sigma_y = u max s``."""
    A0 = torch.randn(d_y, prior.dim, generator=generator, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(A0, full_matrices=False)
    s = torch.sort(torch.rand(d_y, generator=generator, dtype=torch.float64), descending=True).values
    A = U @ torch.diag(s) @ Vh[:d_y]
    sigma_y = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(s.max())
    return _observe(prior, A, sigma_y, generator)


def _likelihood_mixture_terms(prior: GaussianMixture, A: torch.Tensor, sigma_y: float):
    """``(A mu_c, C)`` with ``C = sigma_y^2 I + A Sigma A^T`` (the marginal covariance of y)."""
    mean_y = prior.means @ A.T
    C = sigma_y**2 * torch.eye(A.shape[0], dtype=torch.float64) + A @ prior.cov @ A.T
    return mean_y, C


def _log_normal(y: torch.Tensor, means: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    dist = torch.distributions.MultivariateNormal(means, covariance_matrix=cov)
    return dist.log_prob(y)


def log_evidence(problem: InverseProblem) -> float:
    """``log p(y) = log sum_c w_c N(y; A mu_c, sigma_y^2 I + A A^T)`` (sigma_y > 0)."""
    if problem.sigma_y <= 0:
        raise ValueError("sigma_y: the evidence is a density in y only for sigma_y > 0")
    mean_y, C = _likelihood_mixture_terms(problem.prior, problem.A, problem.sigma_y)
    return float(torch.logsumexp(torch.log(problem.prior.weights) + _log_normal(problem.y, mean_y, C), dim=0))


def exact_posterior(problem: InverseProblem) -> GaussianMixture:
    """The posterior mixture of ``x`` given ``y`` (noisy or noiseless), float64.

    Noiseless: a degenerate Gaussian mixture in the original basis: the shared covariance is
    ``V_free V_free^T`` (zero along the observed directions) and the means put the observed
    coordinates at ``ybar``."""
    prior, A, y, sigma_y = problem.prior, problem.A, problem.y, problem.sigma_y
    D = prior.dim
    if sigma_y > 0:
        precision = torch.linalg.inv(prior.cov) + A.T @ A / sigma_y**2
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        rhs = prior.means @ torch.linalg.inv(prior.cov).T + (A.T @ y / sigma_y**2)[None, :]
        means = rhs @ cov.T
        mean_y, C = _likelihood_mixture_terms(prior, A, sigma_y)
        logw = torch.log(prior.weights) + _log_normal(y, mean_y, C)
        return GaussianMixture(means, torch.softmax(logw, 0), cov)
    if not torch.allclose(prior.cov, torch.eye(D, dtype=torch.float64)):
        raise ValueError("exact_posterior: the noiseless case needs identity prior covariances")
    op = problem.operator
    r = op.rank
    V = op.right_singular_vectors
    ybar = op.rotated_observation(y[None])[0]
    rotated = prior.means @ V  # (K, D): V^T mu_c
    logw = torch.log(prior.weights) - 0.5 * ((rotated[:, :r] - ybar[None]) ** 2).sum(-1)
    means_bar = rotated.clone()
    means_bar[:, :r] = ybar
    V_free = V[:, r:]
    return GaussianMixture(means_bar @ V.T, torch.softmax(logw, 0), V_free @ V_free.T)
