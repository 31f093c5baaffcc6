"""PiGDM — pseudoinverse-guided diffusion (Song et al., 2023), as fixed in MATH.md ("Baselines").

Likelihood approximation ``log phat(y | x_t) = log N(y; A x0hat(x_t), r_t^2 A A^T + sigma_y^2 I)``
with ``r_t^2 = 1 - abar_t``; in the SVD basis it is ``-sum_{i < r} (ybar_i - x0hat_i)^2 /
(2 (r_t^2 + sigma_y^2 / s_i^2))``. Its gradient ``g`` through the denoiser (one VJP per step)
enters the DDIM(eta) step as a conditional score (MATH.md, Notation):
``epshat <- epshat - sqrt(1 - abar_t) g``, and x0hat and the mean are recomputed from it.

``scaling="dcps"`` is the DCPS repository's ``pgdm_svd``: the potential times ``r_t^2`` added to
the DDIM(1) step with weight ``sqrt(abar_t' abar_t)``, and the unguided x0hat as the last step.
"""

from __future__ import annotations

import math

from ..diffusion import ddim_step, time_grid
from ._guidance import NoiseStream, Observation, check_choice, check_float, check_int, check_max_batch, kernel_var, value_and_grad
from .base import DenoiserCalls, Problem, Sampler, SamplingResult, progress_bar

__all__ = ["PiGDM"]


class PiGDM(Sampler):
    """Pseudoinverse-guided diffusion.

    Args:
        num_steps: DDIM steps on ``time_grid(abar, num_steps)``.
        eta: DDIM eta (1: DDPM).
        scaling: ``"paper"`` (conditional score) or ``"dcps"`` (the DCPS repository's update).
        kernel: ``"ddim"`` or ``"moment"`` (kernel variance ``sigma^2 + c0^2 r_t^2``, MATH.md).
        data_variance: ``s_d^2`` of the moment-matched kernel.
        max_batch: at most this many rows per denoiser call (forward and backward).
    """

    name = "pigdm"
    rotated = True

    def __init__(self, num_steps: int = 300, eta: float = 1.0, scaling: str = "paper", *, kernel: str = "ddim", data_variance: float = 1.0, max_batch: int | None = None):
        self.num_steps = check_int("num_steps", num_steps)
        self.eta = check_float("eta", eta, low=0.0, high=1.0)
        self.scaling = check_choice("scaling", scaling, ("paper", "dcps"))
        self.kernel = check_choice("kernel", kernel, ("ddim", "moment"))
        self.data_variance = check_float("data_variance", data_variance, low=0.0, low_open=True)
        self.max_batch = check_max_batch(max_batch)

    def __repr__(self) -> str:
        return f"PiGDM(num_steps={self.num_steps}, eta={self.eta}, scaling={self.scaling!r}, kernel={self.kernel!r})"

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        abar = problem.alphas_cumprod
        obs = Observation.of(problem)
        noise = NoiseStream(key, problem.num_samples, problem.dim, problem.dtype, problem.device)
        noise_var = obs.noise_var(problem.sigma_y)

        grid = [int(t) for t in time_grid(abar, self.num_steps)]
        bar = progress_bar(self.num_steps, progress, "PiGDM")
        x = noise.normal()  # x_n ~ N(0, I)
        for i in range(self.num_steps, 0, -1):
            t, t_prev = grid[i], grid[i - 1]
            a_t, a_prev = float(abar[t]), float(abar[t_prev])
            r2 = 1.0 - a_t
            _, g, x0hat, epshat = value_and_grad(calls, x, t, lambda xr, x0, eps: obs.log_gaussian(x0, 1.0, r2 + noise_var), obs.r)
            step = ddim_step(a_t, a_prev, self.eta)
            std = math.sqrt(kernel_var(step, self.kernel, self.data_variance))
            z = noise.normal()
            if self.scaling == "paper":  # the conditional score replaces the score
                epshat = epshat - math.sqrt(1.0 - a_t) * g
                x0hat = (x - math.sqrt(1.0 - a_t) * epshat) / math.sqrt(a_t)
                x = step.mean(x0hat, epshat) + std * z
            elif t_prev == 0:  # "dcps": the released code returns the unguided x0hat at t_1
                x = x0hat
            else:
                x = step.mean(x0hat, epshat) + std * z + math.sqrt(a_prev * a_t) * r2 * g
            calls.check(f"PiGDM step {t} -> {t_prev}")
            bar.update()
        bar.close()
        samples = problem.operator.V(x).reshape(problem.num_samples, *problem.x_shape)
        return SamplingResult(samples=samples, info={"eta": self.eta, "scaling": self.scaling})
