#!/usr/bin/env python3
"""A plain PyTorch DCPS with the step structure of the authors' released code: a *speed* baseline
for ``bench/bench_samplers.py``, not a correctness reference.

It follows the released package (algorithms.md §2, ``posterior_samplers/dcps.py``: ``dcps``,
``ula``/``ula_step``, ``dcps_step``, ``kl_div``, ``normalized_grad_step``), step for step:

* everything lives in the *original* basis (no SVD): the block potential is
  ``log N(sqrt(abar_k) y; A x, sigma^2 I) = -||sqrt(abar_k) y - x @ A^T||^2 / (2 sigma^2)`` with the
  dense matrix ``A`` (the released ``pot_func``/``ipot``), and the bridge mean to the block's
  target time ``k`` is the released ``bridge_kernel_statistics`` with ``s = 0``:
  ``mu_{k|t}(x) = c_x x + c_0 x0hat(x)`` (eta = 1); the potential seen from ``t`` is the plug-in
  ``log N(sqrt(abar_k) y; A mu_{k|t}(x), sigma^2 I)`` (no ``sigma_{k|t}^2 A A^T`` term);
* gradients by ``torch.autograd.grad`` through the denoiser (``denoiser.predict(x, t)`` ->
  ``(x0hat, epshat)``), the whole batch at once;
* at each block start, ``M`` tamed-ULA steps at the block's top time (the released ``ula``):
  ``G = grad log-potential + score`` (score ``-epshat / sqrt(1 - abar)``), then
  ``x <- x + gamma G / (1 + gamma ||G||) + sqrt(2 gamma) z``, norm per sample, an unfused
  elementwise chain with a fresh normal draw (the released ``torch.randn_like``);
* each step ``j+1 -> j`` inside the block (the released ``dcps_step``): the DDPM (DDIM eta = 1)
  mean ``m`` and std ``sigma`` from one denoiser call, then ``mu = m.clone().requires_grad_()``,
  ``log_std = full(log sigma).requires_grad_()`` and ``K`` normalised gradient steps on the
  released ``kl_div`` loss ``-log g(mu_{k|j}(x')) + KL(N(mu, e^{2 l}) || N(m, sigma^2))``,
  ``x' = mu + exp(l) xi``, differentiated by autograd w.r.t. ``mu`` and ``log_std`` through the
  denoiser, each update ``p - lr g / (||g|| + 1e-8)`` (norm per sample, no ``torch.optim``);
  then ``x_j = mu + exp(l) z``;
* at ``j == k`` (the block's target time) the bridge is the identity and the potential is ``g``
  itself (no denoiser call);
* initial state ``N(0, I)``.

Where it departs from the released code, it does so to do the same arithmetic per step as
:class:`fkdiff.DCPS` (``potential="plugin"``, ``lr_mode="relative"``, ``final="exact"``): the
time grid is :func:`fkdiff.diffusion.time_grid` ("uniform") with block bounds
``round(l n / L)``; ``sigma = max(sigma_y, 1e-3)``; the step lengths are relative
(``lr_mu = lr sigma_{j|j+1} sqrt(D)``, ``lr_l = lr sqrt(D)``, lr = 0.1; the released code uses one
absolute lr for both); the VI loss evaluates ``g`` at the bridge *mean* ``mu_{k|j}(x')`` (the
released ``kl_div`` adds a second draw ``sigma_{k|j} xi'``); the ULA graph is cut after each step
(the released ``ula`` keeps growing it; same arithmetic); and the chain ends with the
deterministic step into ``t = 0`` (``x0hat`` of the last state) instead of returning ``x_{t_1}``.
The random numbers are torch's (``generator`` if given), not :class:`fkdiff.DCPS`'s Philox stream.

    python bench/baseline_dcps.py --samples 10000 --steps 6     # a quick timing
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from fkdiff.diffusion import time_grid


def bridge_coefficients(abar_t: float, abar_k: float, eta: float = 1.0):
    """The released ``bridge_kernel_statistics(ell=t, t=k, s=0)``: ``(c_x, c_0, std)`` with
    ``mean = c_x x_t + c_0 x0hat`` (``abar_0 = 1``), for ``k <= t``."""
    if abar_k == abar_t:  # the identity bridge
        return 1.0, 0.0, 0.0
    std = eta * math.sqrt(max((1.0 - abar_t / abar_k) * (1.0 - abar_k) / (1.0 - abar_t), 0.0))
    c_x = math.sqrt(max((1.0 - abar_k - std**2) / (1.0 - abar_t), 0.0))
    c_0 = math.sqrt(abar_k) - c_x * math.sqrt(abar_t)
    return c_x, c_0, std


class BaselineDCPS:
    """``BaselineDCPS(...)(denoiser, operator, y, sigma_y, num_samples)`` -> ``(num_samples, D)``.

    ``denoiser`` is the prior's denoiser in the *original* basis (e.g. ``prior.denoiser(abar)``);
    ``operator`` needs the dense matrix (``operator.matrix``, a :class:`DenseOperator`)."""

    def __init__(
        self,
        num_blocks: int = 3,
        num_steps: int = 300,
        langevin_steps: int = 5,
        gamma: float = 1e-3,
        gradient_steps: int = 2,
        lr: float = 0.1,
    ):
        self.num_blocks = int(num_blocks)
        self.num_steps = int(num_steps)
        self.langevin_steps = int(langevin_steps)
        self.gamma = float(gamma)
        self.gradient_steps = int(gradient_steps)
        self.lr = float(lr)

    def __call__(self, denoiser, operator, y, sigma_y, num_samples, generator: torch.Generator | None = None):
        dtype = torch.float32
        y = torch.as_tensor(y).reshape(-1)
        device = y.device
        A = operator.matrix.to(device, dtype)  # (d_y, D)
        D = A.shape[1]
        y = y.to(dtype)
        sigma = max(float(sigma_y), 1e-3)
        N = int(num_samples)

        abar = denoiser.alphas_cumprod.to(torch.float64)
        grid = [int(t) for t in time_grid(abar, self.num_steps)]
        n, L = self.num_steps, self.num_blocks
        bounds = [round(l * n / L) for l in range(L + 1)]

        def randn_like(x):  # the released torch.randn_like, from the caller's generator
            return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

        def log_pot(x, scaled_obs):  # (B,): the released pot_func, log g_k(x) up to a constant
            resid = (scaled_obs - x @ A.T) / sigma
            return -0.5 * (resid * resid).sum(-1)

        def log_backward(x, t, t_k, scaled_obs):
            """(B,) plug-in ``log N(scaled_obs; A mu_{k|t}(x), sigma^2 I)``, the graph through the
            denoiser; ``t == t_k``: ``g`` itself. Also returns epshat (None at t == t_k)."""
            if t == t_k:
                return log_pot(x, scaled_obs), None
            x0hat, epshat = denoiser.predict(x, t)
            c_x, c_0, _ = bridge_coefficients(float(abar[t]), float(abar[t_k]))
            return log_pot(c_x * x + c_0 * x0hat, scaled_obs), epshat

        def ula(x, t, t_k, scaled_obs):  # the released ula / ula_step
            abar_t = float(abar[t])
            for _ in range(self.langevin_steps):
                x = x.detach().requires_grad_()
                val, eps = log_backward(x, t, t_k, scaled_obs)
                (grad,) = torch.autograd.grad(val.sum(), x)
                with torch.no_grad():
                    score = -eps / math.sqrt(1.0 - abar_t)
                    grad = score + grad
                    grad_norm = torch.norm(grad, dim=-1, keepdim=True)
                    step_size = self.gamma / (1 + self.gamma * grad_norm)
                    x = x + step_size * grad + math.sqrt(2 * self.gamma) * randn_like(x)
            return x.detach()

        def normalized_grad_step(p, g, lr):  # the released normalized_grad_step
            grad_norm = torch.norm(g, dim=-1, keepdim=True)
            return p - (lr / (1e-8 + grad_norm)) * g

        def dcps_step(x, t, t_prev, t_k, scaled_obs):  # the released dcps_step + kl_div
            abar_t, abar_p = float(abar[t]), float(abar[t_prev])
            c_x, c_0, std = bridge_coefficients(abar_t, abar_p)  # DDPM kernel t -> t_prev
            with torch.no_grad():
                x0hat, _ = denoiser.predict(x, t)
                m = c_x * x + c_0 * x0hat
            if std <= 0.0:  # into t = 0: deterministic (x0hat)
                return m
            log_prior_std = math.log(std)
            lr_mu, lr_l = self.lr * std * math.sqrt(D), self.lr * math.sqrt(D)
            mu = m.clone().requires_grad_()
            log_std = torch.full_like(m, log_prior_std).requires_grad_()
            for _ in range(self.gradient_steps):
                q_sample = mu + log_std.exp() * randn_like(mu)
                pot, _ = log_backward(q_sample, t_prev, t_k, scaled_obs)
                d = log_std - log_prior_std
                kl = 0.5 * (-2 * d.sum() + (2 * d).exp().sum() + torch.sum((mu - m) ** 2) / std**2)
                loss = -pot.sum() + kl
                mu_grad, log_std_grad = torch.autograd.grad(loss, (mu, log_std))
                with torch.no_grad():
                    mu = normalized_grad_step(mu, mu_grad, lr_mu)
                    log_std = normalized_grad_step(log_std, log_std_grad, lr_l)
                mu.requires_grad_(), log_std.requires_grad_()
            with torch.no_grad():
                return mu.detach() + log_std.detach().exp() * randn_like(mu)

        with torch.enable_grad():
            x = torch.randn(N, D, dtype=dtype, device=device, generator=generator)  # x_n ~ N(0, I)
            for l in reversed(range(L)):
                t_k, top = grid[bounds[l]], bounds[l + 1]
                scaled_obs = math.sqrt(float(abar[t_k])) * y
                x = ula(x, grid[top], t_k, scaled_obs)
                for j in range(top - 1, bounds[l] - 1, -1):
                    x = dcps_step(x, grid[j + 1], grid[j], t_k, scaled_obs)
        return x.detach()


def main(argv=None) -> int:
    from fkdiff.bench.samplers import make_problem

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--dim", type=int, default=100)
    args = p.parse_args(argv)
    prob, den = make_problem(args.dim)  # the problem bench/bench_samplers.py times
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    out = BaselineDCPS(num_blocks=args.blocks, num_steps=args.steps)(den, prob.operator, prob.y, prob.sigma_y, args.samples, generator=g)
    dt = time.perf_counter() - t0
    print(f"baseline DCPS N={args.samples} steps={args.steps} blocks={args.blocks}: {dt:.3f} s, "
          f"{args.samples * args.steps / dt:.3g} sample-steps/s, mean sample norm {float(out.norm(dim=-1).mean()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
