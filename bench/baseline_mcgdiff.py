#!/usr/bin/env python3
"""A plain PyTorch MCGdiff with the step structure of the authors' released code: a *speed*
baseline for ``bench/bench_samplers.py``, not a correctness reference.

It follows the released package (algorithms.md §1, ``mcg_diff/particle_filter.py`` and
``utils.py: NetReparametrized``), step for step:

* the particles live in the SVD basis ``xbar = V^T x``, but the denoiser is evaluated in the
  original basis around every call: ``x = xbar @ V^T``, ``eps = net(x, t)``, ``epsbar = eps @ V``
  (the released ``NetReparametrized``); only the epsilon prediction is used;
* DDIM(eta) mean ``m = sqrt(abar'/abar) xbar + (sqrt(1 - abar' - sigma^2) - sqrt(abar'/abar)
  sqrt(1 - abar)) epsbar``;
* weight (fully adapted APF, before propagation) -> categorical (multinomial) resampling at every
  step, ``torch.multinomial(softmax(log_w), N, replacement=True)`` -> gather the means ->
  propagate with the closed-form proposal, each piece an unfused elementwise chain with
  ``torch.randn_like``;
* initial particles ``N(0, I)`` without weights (the released initialisation).

Potentials and variances are ours (:meth:`fkdiff.MCGDiff.release_times`, exact noise matching), and
the time grid is :func:`fkdiff.diffusion.time_grid` ("uniform"), so both samplers do the same
arithmetic per step. Output: one particle per call drawn uniformly (the released final weights
are left out; they cost one (N,) reduction).

    python bench/baseline_mcgdiff.py --particles 10000 --steps 10     # a quick timing
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from fkdiff.diffusion import ddim_step, time_grid
from fkdiff.samplers.mcgdiff import MCGDiff


class BaselineMCGDiff:
    """``BaselineMCGDiff(num_particles, num_steps)(denoiser, operator, y, sigma_y)`` -> ``(1, D)``.

    ``denoiser`` is the prior's denoiser in the *original* basis (e.g. ``prior.denoiser(abar)``)."""

    def __init__(self, num_particles: int = 1024, num_steps: int = 100, eta: float = 1.0, kappa: float = 1e-4):
        self.num_particles = int(num_particles)
        self.num_steps = int(num_steps)
        self.eta = float(eta)
        self.kappa = float(kappa)

    @torch.no_grad()
    def __call__(self, denoiser, operator, y, sigma_y, generator: torch.Generator | None = None):
        N = self.num_particles
        dtype = torch.float32
        V = operator.right_singular_vectors.to(dtype)  # (D, D), columns = right singular vectors
        D = V.shape[0]
        s = operator.singular_values.to(torch.float64)
        r = s.numel()
        ybar64 = operator.rotated_observation(torch.as_tensor(y, dtype=torch.float64).reshape(1, -1))[0]
        ybar = ybar64.to(dtype)

        abar_all = denoiser.alphas_cumprod.to(torch.float64)
        grid = time_grid(abar_all, self.num_steps, "uniform")
        abar = abar_all[grid]
        helper = MCGDiff(num_particles=N, num_steps=self.num_steps, kappa=self.kappa)
        k_tau, rho = helper.release_times(abar, s, float(sigma_y))
        abar_tau = abar[k_tau]

        def potential_var(k):  # (r,) v_{t_k,i}; inf where inactive
            v = 1 - abar[k] / abar_tau * (1 - rho)
            return torch.where(k_tau <= k, v, torch.full_like(v, math.inf)).to(dtype)

        def eps_net(xbar, t):
            # NetReparametrized: rotate to the original basis, run the net, rotate eps back
            x = xbar @ V.T
            _, eps = denoiser.predict(x, t)
            return eps @ V

        n = grid.numel() - 1
        x = torch.randn(N, D, dtype=dtype, generator=generator)  # released init: N(0, I), no weights
        for k in range(n, 0, -1):  # t_k -> t_{k-1}
            t = int(grid[k])
            a_t, a_p = float(abar[k]), float(abar[k - 1])
            st = ddim_step(a_t, a_p, self.eta)
            sigma2 = max(st.sigma**2, 1e-10)
            coef_x = math.sqrt(a_p / a_t)
            coef_eps = math.sqrt(max(1 - a_p - st.sigma**2, 0.0)) - coef_x * math.sqrt(1 - a_t)

            # predict
            eps = eps_net(x, t)
            mean = coef_x * x + coef_eps * eps

            # weights (active coordinates at t' in the numerator, at t in the denominator)
            v_new, v_old = potential_var(k - 1), potential_var(k)
            act_new = torch.isfinite(v_new)
            act_old = torch.isfinite(v_old)
            target_new = math.sqrt(a_p) * ybar
            target_old = math.sqrt(a_t) * ybar
            m_obs = mean[:, :r]
            x_obs = x[:, :r]
            lw_num = -((target_new[None] - m_obs) ** 2) / (2 * (sigma2 + v_new[None]))
            lw_num = torch.where(act_new[None], lw_num, torch.zeros_like(lw_num)).sum(-1)
            lw_den = -((x_obs - target_old[None]) ** 2) / (2 * v_old[None])
            lw_den = torch.where(act_old[None], lw_den, torch.zeros_like(lw_den)).sum(-1)
            log_w = lw_num - lw_den

            # resample: categorical on softmax of the log-weights, every step
            probs = torch.softmax(log_w, dim=0)
            ancestors = torch.multinomial(probs, N, replacement=True, generator=generator)
            mean = mean[ancestors]

            # propagate: closed form on the active coordinates, the prior kernel elsewhere
            gain = (sigma2 / (sigma2 + v_new)).clamp(1e-10, 1e10)  # (r,), 0 where inactive (v = inf)
            std_obs = (gain * v_new).nan_to_num(0.0).clamp(min=1e-10).sqrt()
            new_obs = gain[None] * target_new[None] + (1 - gain[None]) * mean[:, :r] + std_obs[None] * torch.randn_like(mean[:, :r])
            new_free = mean[:, r:] + math.sqrt(sigma2) * torch.randn_like(mean[:, r:])
            obs = torch.where(act_new[None], new_obs, mean[:, :r] + math.sqrt(sigma2) * torch.randn_like(mean[:, :r]))
            x = torch.cat([obs, new_free], dim=1)

        choice = torch.randint(N, (1,), generator=generator)
        return x[choice] @ V.T


def main(argv=None) -> int:
    from fkdiff.bench.samplers import make_problem

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--particles", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dim", type=int, default=100)
    args = p.parse_args(argv)
    prob, den = make_problem(args.dim)  # the problem bench/bench_samplers.py times
    t0 = time.perf_counter()
    out = BaselineMCGDiff(args.particles, args.steps)(den, prob.operator, prob.y, prob.sigma_y)
    dt = time.perf_counter() - t0
    print(f"baseline MCGdiff N={args.particles} steps={args.steps}: {dt:.3f} s, "
          f"{args.particles * args.steps / dt:.3g} particle-steps/s, sample norm {float(out.norm()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
