"""DDRM — denoising diffusion restoration models (Kawar et al., 2022), as fixed in MATH.md
("Baselines").

Variance-exploding form in the SVD basis: ``xt = x / sqrt(abar)``, ``sig_t = sqrt((1 - abar_t) /
abar_t)``, ``xt = x0 + sig_t eps``. Each step ``t -> t'`` calls the denoiser once (x0hat, epshat
at ``x_t = sqrt(abar_t) xt``) and sets, per spectral coordinate,

* free (``i >= r``): ``x0hat + sqrt(1 - eta_c^2) sig_t' epshat + eta_c sig_t' z``;
* observed, ``s_i sig_t' <= sigma_y`` (less noisy than y):
  ``x0hat + sqrt(1 - eta^2) sig_t' (s_i / sigma_y) (ybar_i - x0hat_i) + eta sig_t' z``;
* observed, ``s_i sig_t' > sigma_y`` or ``sigma_y = 0`` (noisier than y):
  ``eta_b ybar_i + (1 - eta_b) x0hat_i + sqrt(sig_t'^2 - eta_b^2 sigma_y^2 / s_i^2) z``.

Start (Kawar et al.): observed coordinates with ``s_i sig_T > sigma_y`` at
``N(ybar_i, sig_T^2 - sigma_y^2 / s_i^2)``, all others ``N(0, sig_T^2)``. Fresh noise per sample
(the DCPS repository's wrapper shares one draw across the batch). Noiseless observed coordinates
land on ``ybar`` at ``t = 0`` (eta_b = 1).
"""

from __future__ import annotations

import math

import torch

from ..diffusion import time_grid
from ._guidance import NoiseStream, Observation, check_float, check_int, check_max_batch
from .base import DenoiserCalls, Problem, Sampler, SamplingResult, progress_bar

__all__ = ["DDRM"]


class DDRM(Sampler):
    """Denoising diffusion restoration.

    Args:
        num_steps: steps on ``time_grid(abar, num_steps)``.
        eta: eta_A, the noise share on observed coordinates less noisy than y (0.85, official).
        eta_b: weight of ``ybar`` on observed coordinates noisier than y (1, official).
        eta_c: the noise share on free coordinates; None means ``eta`` (official; the
            MCGdiff/DCPS repositories used 1).
        max_batch: at most this many rows per denoiser call.
    """

    name = "ddrm"
    rotated = True

    def __init__(self, num_steps: int = 300, eta: float = 0.85, eta_b: float = 1.0, eta_c: float | None = None, *, max_batch: int | None = None):
        self.num_steps = check_int("num_steps", num_steps)
        self.eta = check_float("eta", eta, low=0.0, high=1.0)
        self.eta_b = check_float("eta_b", eta_b, low=0.0, high=1.0)
        self.eta_c = self.eta if eta_c is None else check_float("eta_c", eta_c, low=0.0, high=1.0)
        self.max_batch = check_max_batch(max_batch)

    def __repr__(self) -> str:
        return f"DDRM(num_steps={self.num_steps}, eta={self.eta}, eta_b={self.eta_b}, eta_c={self.eta_c})"

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        abar = problem.alphas_cumprod
        obs = Observation.of(problem)
        r, sigma_y = obs.r, problem.sigma_y
        noise = NoiseStream(key, problem.num_samples, problem.dim, problem.dtype, problem.device)
        noisy_y = obs.noise_var(sigma_y).sqrt()  # sigma_y / s_i: the noise of ybar_i

        def sig(t: int) -> float:
            return math.sqrt((1.0 - float(abar[t])) / float(abar[t]))

        grid = [int(t) for t in time_grid(abar, self.num_steps)]
        # start: xt_T in the VE variable
        sT = sig(grid[-1])
        xt = sT * noise.normal()
        if r:
            ahead = obs.s * sT > sigma_y
            start = obs.ybar + (sT**2 - noisy_y**2).clamp_min(0).sqrt() * xt[:, :r] / sT
            xt[:, :r] = torch.where(ahead, start, xt[:, :r])

        bar = progress_bar(self.num_steps, progress, "DDRM")
        for i in range(self.num_steps, 0, -1):
            t, t_prev = grid[i], grid[i - 1]
            x0hat, epshat = calls.denoise(math.sqrt(float(abar[t])) * xt, t)
            sp = sig(t_prev)
            z = noise.normal()
            new = x0hat + math.sqrt(1.0 - self.eta_c**2) * sp * epshat + self.eta_c * sp * z  # free
            if r:
                x0o, zo = x0hat[:, :r], z[:, :r]
                if sigma_y > 0:
                    behind = x0o + math.sqrt(1.0 - self.eta**2) * sp * (obs.ybar - x0o) / noisy_y + self.eta * sp * zo
                else:
                    behind = x0o  # never used: with sigma_y = 0 every observed coordinate is "ahead"
                ahead_std = (sp**2 - self.eta_b**2 * noisy_y**2).clamp_min(0).sqrt()
                ahead = self.eta_b * obs.ybar + (1.0 - self.eta_b) * x0o + ahead_std * zo
                use_ahead = (obs.s * sp > sigma_y) | (sigma_y == 0)
                new[:, :r] = torch.where(use_ahead, ahead, behind)
            xt = new
            calls.check(f"DDRM step {t} -> {t_prev}")
            bar.update()
        bar.close()
        samples = problem.operator.V(xt).reshape(problem.num_samples, *problem.x_shape)
        return SamplingResult(samples=samples, info={"eta": self.eta, "eta_b": self.eta_b, "eta_c": self.eta_c})
