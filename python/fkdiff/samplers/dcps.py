"""DCPS — divide-and-conquer posterior sampling (Janati, Moufad, Durmus, Moulines, Olsson), as
fixed in MATH.md ("DCPS").

The grid ``0 = t_0 < ... < t_n`` is cut into ``L`` blocks of equal length at grid indices
``k_0 = 0 < k_1 < ... < k_L = n``. Block ``l`` targets ``pi_l ∝ g_{k_l} p_{k_l}`` with
``g_{k_l}(x) = N(sqrt(abar_{k_l}) y; A x, sigma_{y,l}^2 I)``, ``sigma_{y,l} = max(sigma_y,
sigma_min)``. Inside block ``l`` the potential seen from time ``j`` is the backward function

    beta_hat(x_j) = N(sqrt(abar_k) y; A mu_{k|j}(x_j), var_{k|j} A A^T + sigma_{y,l}^2 I),

``mu_{k|j}`` the DDPM bridge mean from ``(x0hat(x_j), x_j)`` to ``k = k_l``, and ``var_{k|j}`` the
bridge variance (``potential="dps"``), plus ``c0^2 r_j^2`` with ``r_j^2 = 1 - abar_j``
(``"pigdm"``: x0 given x_j spread around x0hat), or zero (``"plugin"``, the default: the released
code). In the SVD basis the covariance is diagonal.

Per block, from the top: ``M`` tamed-ULA steps on ``log beta_hat + log p_{k_{l+1}}`` (the compiled
kernel :func:`fkdiff.ops.tamed_langevin`), then for each step ``j+1 -> j`` a mean-field Gaussian
``r = N(mu, diag(exp(2 l)))`` started at the backward kernel and moved by ``K`` normalised gradient
steps on ``-E_r[log beta_hat(x)] + KL(r || p_{j|j+1})`` (one reparameterised sample per step, the
gradient through the denoiser by autograd, or by the denoiser's closed-form VJP when it has one:
the Gaussian mixture, ``value_and_grad``), and ``x_j ~ r``. The chain ends with the step to
``t = 0`` (``final="exact"``; the backward kernel into 0 is deterministic under ``kernel="ddim"``:
``x0hat``) or at ``t_1`` (``final="released"``). Per-step temporaries live in a per-call
:class:`~fkdiff.samplers._guidance.Workspace` (no fresh (B, D) arrays per step).

Step sizes: a normalised step moves ``mu``, and separately the log-std vector ``l``, by exactly
``lr`` in per-sample L2 norm. ``lr_mode="absolute"`` is the released code (its 1.5 for 256 x 256
images is a move of a few percent of the kernel's noise; at d = 1 the same number multiplies the
std by e^1.5). ``lr_mode="relative"`` (default) scales it to the kernel: ``mu`` moves by
``lr * sigma_{j|j+1} sqrt(D)`` (a fraction of the norm of the kernel's own noise) and ``l`` by
``lr * sqrt(D)`` (a log-std change of ``lr`` per coordinate on average).
"""

from __future__ import annotations

import math
import warnings

import torch

from .. import ops
from ..diffusion import ddim_step, time_grid
from ._guidance import (
    NoiseStream,
    Observation,
    Workspace,
    check_choice,
    check_float,
    check_int,
    check_max_batch,
    kernel_var,
    value_and_grad,
)
from .base import DenoiserCalls, Problem, Sampler, SamplingResult, progress_bar

__all__ = ["DCPS"]


class DCPS(Sampler):
    """Divide-and-conquer posterior sampler.

    Args:
        num_blocks: L, the number of blocks (the released code's ``L = 4`` boundaries are 3 blocks).
        num_steps: n, the DDPM steps in all (grid ``time_grid(abar, n)``); blocks are ``n / L`` long.
        langevin_steps: M, tamed-ULA steps at the start of each block (Table 1: 50 and 500).
        gamma: TULA step size.
        gradient_steps: K, normalised gradient steps per variational fit (0: the prior kernel).
        lr: step length of the normalised gradient steps (see ``lr_mode``). Default 0.1 relative
            (measured on the mixture benchmark; see the module docstring of the tests).
        lr_mode: ``"relative"`` (mu moves by ``lr sigma_{j|j+1} sqrt(D)``, l by ``lr sqrt(D)``)
            or ``"absolute"`` (both by ``lr``, the released code).
        potential: backward function: ``"plugin"`` (no covariance term, as the released code),
            ``"pigdm"`` (bridge + x0 spread ``1 - abar_j``, MATH.md's first choice) or ``"dps"``
            (bridge variance only). Default ``"plugin"``: measured better than ``"pigdm"`` in
            every configuration of the mixture benchmark (d_x = 10, 3 problems, 2000 samples:
            SW median 2.41 vs 3.01 at M = 50, 2.27 vs 2.57 at M = 500; variance ratio along the
            observed direction 0.9-1.7 vs 3-21): with gamma = 1e-3 the Langevin phase does not
            mix between modes, and the weaker PiGDM-like guidance under-pulls inside the blocks.
        sigma_min: floor of the potentials' noise (DCPS needs ``sigma_{y,l} > 0``).
        final: ``"exact"`` ends at t = 0; ``"released"`` returns the state at ``t_1``.
        kernel: ``"ddim"`` (the DDPM kernel) or ``"moment"`` (variance ``sigma^2 + c0^2 r_t^2``)
            as the prior kernel of the KL term and of the initialisation.
        data_variance: ``s_d^2`` of the moment-matched kernel.
        max_batch: at most this many rows per denoiser call (forward and backward).
    """

    name = "dcps"
    rotated = True

    def __init__(
        self,
        num_blocks: int = 3,
        num_steps: int = 300,
        langevin_steps: int = 5,
        gamma: float = 1e-3,
        gradient_steps: int = 2,
        lr: float | None = None,
        lr_mode: str = "relative",
        potential: str = "plugin",
        sigma_min: float = 1e-3,
        final: str = "exact",
        kernel: str = "ddim",
        max_batch: int | None = None,
        *,
        data_variance: float = 1.0,
    ):
        self.num_blocks = check_int("num_blocks", num_blocks)
        self.num_steps = check_int("num_steps", num_steps)
        if self.num_blocks > self.num_steps:
            raise ValueError(f"num_blocks: at most num_steps ({self.num_steps}) blocks, got {num_blocks}")
        self.langevin_steps = check_int("langevin_steps", langevin_steps, minimum=0)
        self.gamma = check_float("gamma", gamma, low=0.0, low_open=True)
        self.gradient_steps = check_int("gradient_steps", gradient_steps, minimum=0)
        self.lr_mode = check_choice("lr_mode", lr_mode, ("relative", "absolute"))
        if lr is None:
            lr = 0.1 if self.lr_mode == "relative" else 1.0
        self.lr = check_float("lr", lr, low=0.0)
        self.potential = check_choice("potential", potential, ("pigdm", "dps", "plugin"))
        self.sigma_min = check_float("sigma_min", sigma_min, low=0.0, low_open=True)
        self.final = check_choice("final", final, ("exact", "released"))
        self.kernel = check_choice("kernel", kernel, ("ddim", "moment"))
        self.data_variance = check_float("data_variance", data_variance, low=0.0, low_open=True)
        self.max_batch = check_max_batch(max_batch)

    def __repr__(self) -> str:
        return (
            f"DCPS(num_blocks={self.num_blocks}, num_steps={self.num_steps}, langevin_steps={self.langevin_steps}, "
            f"gamma={self.gamma}, gradient_steps={self.gradient_steps}, lr={self.lr}, lr_mode={self.lr_mode!r}, "
            f"potential={self.potential!r}, sigma_min={self.sigma_min}, final={self.final!r}, kernel={self.kernel!r})"
        )

    # ----------------------------------------------------------------------------------------
    # The algorithm
    # ----------------------------------------------------------------------------------------

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        if problem.sigma_y < self.sigma_min:
            warnings.warn(
                f"DCPS: sigma_y = {problem.sigma_y:g} is below sigma_min = {self.sigma_min:g}; the block "
                f"potentials use sigma_min instead (DCPS needs a non-degenerate potential)",
                stacklevel=3,
            )
        self._abar = problem.alphas_cumprod
        self._obs = Observation.of(problem)
        self._sigma = max(problem.sigma_y, self.sigma_min)
        self._calls = calls
        self._flags = ops.new_flags(problem.device)
        noise = NoiseStream(key, problem.num_samples, problem.dim, problem.dtype, problem.device)

        grid = [int(t) for t in time_grid(self._abar, self.num_steps)]
        n, L = self.num_steps, self.num_blocks
        bounds = [round(l * n / L) for l in range(L + 1)]  # k_0 = 0 < k_1 < ... < k_L = n
        last = 0 if self.final == "exact" else 1  # the chain stops at t_last

        bar = progress_bar(L * self.langevin_steps + n - last, progress, "DCPS")
        x = noise.normal()  # x_n ~ p_n = N(0, I)
        self._ws = Workspace(x)
        for l in reversed(range(L)):
            t_k, top = grid[bounds[l]], bounds[l + 1]
            # 1. tamed ULA towards beta_hat_{k_l | k_{l+1}} p_{k_{l+1}}
            for m in range(self.langevin_steps):
                x = self.langevin_step(x, grid[top], t_k, noise)
                calls.check(f"DCPS block {l}, Langevin step {m}")
                ops.check_flags(self._flags, f"DCPS block {l}, Langevin step {m}")
                bar.update()
            # 2. variational kernels j + 1 -> j down to the block's target time k_l
            for j in range(top - 1, max(bounds[l], last) - 1, -1):
                x = self.variational_step(x, grid[j + 1], grid[j], t_k, noise)
                calls.check(f"DCPS block {l}, step {grid[j + 1]} -> {grid[j]}")
                ops.check_flags(self._flags, f"DCPS block {l}, step {grid[j + 1]} -> {grid[j]}")
                bar.update()
        bar.close()

        samples = problem.operator.V(x).reshape(problem.num_samples, *problem.x_shape)
        info = {"blocks": [grid[b] for b in bounds], "sigma_potential": self._sigma, "lr": self.lr, "lr_mode": self.lr_mode}
        return SamplingResult(samples=samples, info=info)

    # ----------------------------------------------------------------------------------------
    # The backward function and its gradient
    # ----------------------------------------------------------------------------------------

    def log_backward(self, x: torch.Tensor, x0hat: torch.Tensor, epshat: torch.Tensor, t: int, t_k: int) -> torch.Tensor:
        """``(B,)``: ``log beta_hat(x)`` seen from time ``t`` towards the block target ``t_k < t``.

        Only the ``r`` observed coordinates of the bridge mean enter it (diagonal in the SVD
        basis); ``value_and_grad`` hands this objective those coordinates only."""
        abar_t, abar_k = float(self._abar[t]), float(self._abar[t_k])
        bridge = ddim_step(abar_t, abar_k, eta=1.0)  # q_{k|0,t}: the DDPM bridge
        mu = bridge.mean(x0hat, epshat)
        var = {"plugin": 0.0, "dps": bridge.sigma**2, "pigdm": bridge.sigma**2 + bridge.c_x0_total**2 * (1.0 - abar_t)}[self.potential]
        return self._obs.log_gaussian(mu, math.sqrt(abar_k), var + self._obs.noise_var(self._sigma))

    def grad_log_backward(self, x: torch.Tensor, t: int, t_k: int, score: bool = False) -> torch.Tensor:
        """``grad_x log beta_hat(x)`` (plus the score ``-(x - sqrt(abar_t) x0hat) / (1 - abar_t)``
        with ``score=True``); at ``t = t_k`` beta_hat is ``g_k`` itself (no denoiser call)."""
        if t == t_k:
            if score:  # pragma: no cover - Langevin runs at a block's top time, never at t_k
                raise ValueError("DCPS: no score at the block's target time")
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                val = self._obs.log_gaussian(xr, math.sqrt(float(self._abar[t_k])), self._obs.noise_var(self._sigma))
                (g,) = torch.autograd.grad(val.sum(), xr)
            return g
        abar_t = float(self._abar[t])
        plus = (math.sqrt(abar_t) / (1.0 - abar_t), -1.0 / (1.0 - abar_t)) if score else (0.0, 0.0)
        _, g, _, _ = value_and_grad(self._calls, x, t, lambda xr, x0, eps: self.log_backward(xr, x0, eps, t, t_k),
                                    self._obs.r, outputs=False, plus=plus, out=self._ws("grad"))
        return g

    # ----------------------------------------------------------------------------------------
    # The two moves
    # ----------------------------------------------------------------------------------------

    def langevin_step(self, x: torch.Tensor, t: int, t_k: int, noise: NoiseStream) -> torch.Tensor:
        """One tamed-ULA step at time t on ``log beta_hat_{k|t} + log p_t`` (the score from x0hat)."""
        drift = self.grad_log_backward(x, t, t_k, score=True)
        return ops.tamed_langevin(x, drift, self.gamma, seed=noise.key, offset=noise.next_offset(), flags=self._flags,
                                  out=self._ws.state(x))

    def variational_step(self, x: torch.Tensor, t: int, t_prev: int, t_k: int, noise: NoiseStream) -> torch.Tensor:
        """``x_{t_prev} ~ r``, the mean-field fit of ``beta_hat_{k|t_prev}(x') p(x' | x_t)``."""
        ws = self._ws
        step = ddim_step(float(self._abar[t]), float(self._abar[t_prev]), eta=1.0)
        m = self._calls.ddim_mean(x, t, step, out=ws("m"))  # one GEMM for the mixture
        var = kernel_var(step, self.kernel, self.data_variance)
        if var <= 0.0:  # a deterministic kernel (into t = 0): the family degenerates to its mean
            return ws.state(x).copy_(m)
        D = x.shape[1]
        lr_mu, lr_l = (self.lr * math.sqrt(var * D), self.lr * math.sqrt(D)) if self.lr_mode == "relative" else (self.lr, self.lr)
        xi = noise.normal(out=ws("xi"))
        if self.gradient_steps == 0:
            return torch.add(m, xi, alpha=math.sqrt(var), out=ws.state(x))
        mu, log_std = ws("mu").copy_(m), ws("log_std").fill_(0.5 * math.log(var))
        sample = torch.add(mu, xi, alpha=math.sqrt(var), out=ws("sample"))
        for k in range(self.gradient_steps):
            g = self.grad_log_backward(sample, t_prev, t_k)  # grad_x log beta_hat at the sample
            # One fused kernel: the normalised steps on -log beta_hat(mu + std xi) + KL(N(mu, std^2)
            # || N(m, var)) in mu and log std (gradients (mu - m) / var - g and std^2 / var - 1 -
            # g std xi, by the chain rule), then the next sample with fresh xi (after the last
            # step: x_{t_prev} itself).
            out = ws.state(x) if k == self.gradient_steps - 1 else sample
            sample = ops.variational_update(mu, log_std, m, g, xi, var, lr_mu, lr_l, seed=noise.key,
                                            offset=noise.next_offset(), sample=out, flags=self._flags)
        return sample
