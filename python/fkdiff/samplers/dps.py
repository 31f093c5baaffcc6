"""DPS — diffusion posterior sampling (Chung et al., 2023), as fixed in MATH.md ("Baselines").

Each step ``t -> t'`` is the DDIM(eta) step of the prior, then a move against the gradient of the
residual norm through the denoiser:

    x_{t'} = m(x_t) + sigma z - zeta * grad_{x_t} ||y - A x0hat(x_t)||,

with the norm **per sample** (the authors' code takes it over the whole batch) and a zero residual
giving a zero gradient (the authors' code divides 0 by 0 there). In the SVD basis
``||y - A x||^2 = sum_{i < r} s_i^2 (ybar_i - xbar_i)^2 + ||y_perp||^2``, the last term being the
part of y outside the range of A (kept: it enters the norm).
"""

from __future__ import annotations

import math

import torch

from ..diffusion import ddim_step, time_grid
from ._guidance import NoiseStream, Observation, check_choice, check_float, check_int, check_max_batch, kernel_var, value_and_grad
from .base import DenoiserCalls, Problem, Sampler, SamplingResult, progress_bar

__all__ = ["DPS"]


class DPS(Sampler):
    """Diffusion posterior sampling.

    Args:
        num_steps: DDIM steps on ``time_grid(abar, num_steps)``.
        zeta: guidance step (the gradient of the residual norm is multiplied by it).
        eta: DDIM eta of the prior step (1: DDPM).
        kernel: ``"ddim"`` or ``"moment"`` (kernel variance ``sigma^2 + c0^2 r_t^2``, MATH.md).
        data_variance: ``s_d^2`` of the moment-matched kernel.
        max_batch: at most this many rows per denoiser call (forward and backward).
    """

    name = "dps"
    rotated = True

    def __init__(self, num_steps: int = 300, zeta: float = 1.0, eta: float = 1.0, *, kernel: str = "ddim", data_variance: float = 1.0, max_batch: int | None = None):
        self.num_steps = check_int("num_steps", num_steps)
        self.zeta = check_float("zeta", zeta, low=0.0)
        self.eta = check_float("eta", eta, low=0.0, high=1.0)
        self.kernel = check_choice("kernel", kernel, ("ddim", "moment"))
        self.data_variance = check_float("data_variance", data_variance, low=0.0, low_open=True)
        self.max_batch = check_max_batch(max_batch)

    def __repr__(self) -> str:
        return f"DPS(num_steps={self.num_steps}, zeta={self.zeta}, eta={self.eta}, kernel={self.kernel!r})"

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        abar = problem.alphas_cumprod
        obs = Observation.of(problem)
        noise = NoiseStream(key, problem.num_samples, problem.dim, problem.dtype, problem.device)
        s2 = obs.s**2
        tiny = torch.finfo(problem.dtype).tiny

        def residual_norm(x, x0hat, epshat):  # ||y - A x0hat(x)|| per sample, safe at 0
            if obs.r == 0:
                return x.new_zeros(x.shape[0])
            sq = (s2 * (obs.ybar - x0hat[:, : obs.r]) ** 2).sum(-1) + obs.perp2
            return sq.clamp_min(tiny).sqrt()  # below `tiny` the clamp has zero gradient

        grid = [int(t) for t in time_grid(abar, self.num_steps)]
        bar = progress_bar(self.num_steps, progress, "DPS")
        x = noise.normal()  # x_n ~ N(0, I)
        for i in range(self.num_steps, 0, -1):
            t, t_prev = grid[i], grid[i - 1]
            _, grad, x0hat, epshat = value_and_grad(calls, x, t, residual_norm, obs.r)
            step = ddim_step(float(abar[t]), float(abar[t_prev]), self.eta)
            std = math.sqrt(kernel_var(step, self.kernel, self.data_variance))
            z = noise.normal()
            x = step.mean(x0hat, epshat) + std * z - self.zeta * grad
            calls.check(f"DPS step {t} -> {t_prev}")
            bar.update()
        bar.close()
        samples = problem.operator.V(x).reshape(problem.num_samples, *problem.x_shape)
        return SamplingResult(samples=samples, info={"zeta": self.zeta, "eta": self.eta})
