"""Distances between sample sets and exact posteriors (MATH.md, Gaussian-mixture benchmark).

* :func:`sliced_wasserstein` — the mean over 100 random unit directions of the 1-D W1 distance
  between the projected sample sets (the papers' scripts; not POT's default ``p = 2`` with 50
  projections).
* :func:`mode_weight_error` — ``Δw``: the L1 distance between the component weights fitted to the
  samples by EM (components held at the exact posterior's, weights started uniform, run to
  convergence) and the exact posterior weights.
* :func:`observed_spread` — the variance of the samples along the observed directions (the leading
  right singular vectors of A) over the exact variance, and the fraction of samples more than 5 sd
  off there: sliced Wasserstein averages over directions and hides errors along the few observed
  ones.
* :func:`noise_floor` — the same distances between two exact sample sets of the same sizes (mean
  and sd over repeats): the yardstick of every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["sliced_wasserstein", "wasserstein_1d", "mode_weight_error", "observed_spread", "noise_floor", "NoiseFloor"]


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical laws of the columns of ``a (n, P)`` and ``b (m, P)`` -> ``(P,)``.

    Integrates ``|F_a - F_b|`` over the merged support (unequal sizes allowed), as
    ``scipy.stats.wasserstein_distance`` does, for all P projections at once."""
    n, m = a.shape[0], b.shape[0]
    a_sorted = torch.sort(a, dim=0).values
    b_sorted = torch.sort(b, dim=0).values
    allv = torch.sort(torch.cat([a_sorted, b_sorted], dim=0), dim=0).values  # (n + m, P)
    deltas = allv[1:] - allv[:-1]
    left = allv[:-1]
    cdf_a = torch.searchsorted(a_sorted.T.contiguous(), left.T.contiguous(), right=True).T.to(torch.float64) / n
    cdf_b = torch.searchsorted(b_sorted.T.contiguous(), left.T.contiguous(), right=True).T.to(torch.float64) / m
    return ((cdf_a - cdf_b).abs() * deltas).sum(0)


def random_directions(dim: int, n: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(dim, n)`` random unit vectors (normalised Gaussians)."""
    theta = torch.randn(dim, n, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 100, generator=None, directions=None) -> float:
    """Mean over ``n_projections`` random unit directions of W1 between the projections of the
    sample sets ``x (n, D)`` and ``y (m, D)``."""
    x = x.detach().to(torch.float64).cpu()
    y = y.detach().to(torch.float64).cpu()
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: expected (n, D) and (m, D) sample sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.inf
    theta = directions if directions is not None else random_directions(x.shape[1], n_projections, generator)
    return float(wasserstein_1d(x @ theta, y @ theta).mean())


def fitted_weights(samples: torch.Tensor, posterior, max_iter: int = 10_000, tol: float = 1e-10) -> torch.Tensor:
    """EM for the weights of ``posterior``'s components (means and covariance held fixed),
    started uniform, run until the weights move less than ``tol`` (L1)."""
    x = samples.detach().to(torch.float64).cpu()
    log_comp = _component_log_prob(posterior, x)  # (n, K)
    K = log_comp.shape[1]
    w = torch.full((K,), 1.0 / K, dtype=torch.float64)
    for _ in range(max_iter):
        resp = torch.softmax(torch.log(w) + log_comp, dim=1)
        new = resp.mean(0)
        if (new - w).abs().sum() < tol:
            w = new
            break
        w = new.clamp(min=1e-300)
    return w


def _component_log_prob(posterior, x: torch.Tensor) -> torch.Tensor:
    """``log N(x; m_c, Sigma)`` on the support of Sigma (the noiseless posterior is degenerate:
    project onto the eigenvectors with positive eigenvalues)."""
    evals, evecs = torch.linalg.eigh(0.5 * (posterior.cov + posterior.cov.T))
    keep = evals > 1e-10 * float(evals.max())
    basis, lam = evecs[:, keep], evals[keep]
    diff = (x[:, None, :] - posterior.means[None]) @ basis  # (n, K, r)
    return -0.5 * (diff * diff / lam).sum(-1) - 0.5 * (torch.log(lam).sum() + lam.numel() * math.log(2 * math.pi))


def mode_weight_error(samples: torch.Tensor, posterior) -> float:
    """Δw = L1 distance between EM-fitted component weights and the exact posterior weights."""
    if not torch.isfinite(samples).all():
        return math.inf
    return float((fitted_weights(samples, posterior) - posterior.weights).abs().sum())


def observed_spread(samples: torch.Tensor, posterior, A: torch.Tensor, n_sd: float = 5.0) -> dict:
    """Spread along the observed directions (leading right singular vectors of ``A``).

    Returns ``{"variance_ratio": mean over directions of var(samples . v) / exact var,
    "outlier_fraction": fraction of samples more than n_sd exact sd off in some observed
    direction}``. The exact law along ``v`` is the posterior mixture's projection: mean
    ``sum_c w_c m_c . v`` and variance ``v^T Sigma v + sum_c w_c (m_c . v - mean)^2``. In the
    noiseless case the exact variance is 0: the ratio is replaced by the RMS distance of the
    samples' observed coordinates to ``ybar`` (``"observed_rms"``)."""
    x = samples.detach().to(torch.float64).cpu()
    _, S, Vh = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
    dirs = Vh[S > 1e-6 * S.max()].T  # (D, r)
    proj = x @ dirs  # (n, r)
    comp_mean = posterior.means @ dirs  # (K, r)
    mean = posterior.weights @ comp_mean
    var = torch.diagonal(dirs.T @ posterior.cov @ dirs) + posterior.weights @ (comp_mean - mean) ** 2
    if float(var.max()) < 1e-12:
        return {"observed_rms": float(((proj - mean) ** 2).mean().sqrt()), "variance_ratio": math.nan, "outlier_fraction": math.nan}
    ratio = proj.var(dim=0) / var
    # "off" means outside every component's n_sd band along that direction
    comp_sd = torch.diagonal(dirs.T @ posterior.cov @ dirs).sqrt()
    near = ((proj[:, None, :] - comp_mean[None]).abs() <= n_sd * comp_sd).any(dim=1)  # (n, r)
    return {"variance_ratio": float(ratio.mean()), "outlier_fraction": float((~near).any(dim=1).double().mean()), "observed_rms": math.nan}


@dataclass
class NoiseFloor:
    """Distances between two independent exact sample sets: mean and sd over repeats."""

    sw_mean: float
    sw_sd: float
    dw_mean: float
    dw_sd: float
    n_samples: int
    repeats: int


def noise_floor(posterior, n_samples: int, n_reference: int | None = None, repeats: int = 10, generator=None) -> NoiseFloor:
    """SW and Δw of exact samples of size ``n_samples`` against exact samples of size
    ``n_reference`` (default the same), over ``repeats`` independent draws."""
    n_reference = n_reference or n_samples
    sws, dws = [], []
    for _ in range(repeats):
        a = posterior.sample(n_samples, generator)
        b = posterior.sample(n_reference, generator)
        sws.append(sliced_wasserstein(a, b, generator=generator))
        dws.append(mode_weight_error(a, posterior))
    sw, dw = torch.tensor(sws), torch.tensor(dws)
    return NoiseFloor(float(sw.mean()), float(sw.std()), float(dw.mean()), float(dw.std()), n_samples, repeats)
