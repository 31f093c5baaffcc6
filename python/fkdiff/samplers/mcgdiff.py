"""MCGdiff: sequential Monte Carlo over the backward diffusion chain with closed-form auxiliary
kernels (Cardoso, Janati, Le Corff, Moulines), as fixed in MATH.md ("MCGdiff").

Everything happens in the SVD basis of the operator, ``xbar = V^T x``, where the observation reads
``ybar_i = (U^T y)_i / s_i = xbar_{0,i} + (sigma_y / s_i) z_i`` on the ``r`` observed coordinates.

Setup. Observed coordinate ``i`` gets a release time ``tau_i`` on the grid and a residual variance
``rho_i``: with ``noise_matching="exact"``, ``tau_i`` is the largest grid time with
``(1 - abar_tau) / abar_tau <= sigma_y^2 / s_i^2`` and ``rho_i = max(abar_tau sigma_y^2 / s_i^2 -
(1 - abar_tau), kappa)``, so that ``N(x_tau; sqrt(abar_tau) ybar_i, rho_i)`` integrated against the
forward kernel is exactly the likelihood ``N(ybar_i; xbar_{0,i}, sigma_y^2 / s_i^2) /
sqrt(abar_tau)``. At an active time ``t >= tau_i`` the potential is
``g_{t,i} = N(xbar_i; sqrt(abar_t) ybar_i, v_{t,i})``, ``v_{t,i} = 1 - (abar_t / abar_tau_i)(1 - rho_i)``.

Per step ``t -> t'`` (``act'`` = coordinates with ``tau_i <= t'``), for each of B independent runs
of N particles: one denoiser call gives the DDIM(eta) mean ``m`` and the kernel variance ``k^2``
(``sigma^2``, or ``sigma^2 + c0^2 r_t^2`` for ``kernel="moment"``); then

1. weight: ``sum_{act'} log N(sqrt(abar_t') ybar_i; m_i, k^2 + v_{t',i}) - log N(xbar_i; sqrt(abar_t) ybar_i, v_{t,i})``
   (:func:`fkdiff.ops.mcgdiff_log_weight`, both sums over act');
2. resample ancestors (:func:`fkdiff.ops.resample`);
3. mutate from the ancestor's ``m`` (:func:`fkdiff.ops.auxiliary_mutation`, gather on read): on act'
   ``K_i sqrt(abar_t') ybar_i + (1 - K_i) m_i + sqrt(K_i v_{t',i}) z``, ``K_i = k^2 / (k^2 + v_{t',i})``;
   elsewhere ``m_i + k z``.

Potentials (``potential``). ``"paper"`` (default): the ones above, MATH.md's. ``"pigdm"``: the
potential of ``t'`` is PiGDM's likelihood ``N(ybar; x0hat(x_t'), r_t'^2 + sigma_y^2 / s^2)``
with x0hat linearised at the parent's noise estimate, ``x0hat(x_t') ~ (x_t' - sqrt(1 - abar_t')
epshat(x_t)) / sqrt(abar_t')``, widened by the kernel's fresh-noise variance ``k^2`` of the step
into t': ``g_t'(x_t', x_t) = N(xbar_i; sqrt(abar_t') ybar_i + sqrt(1 - abar_t') epshat_i(x_t),
k^2 + abar_t' (r_t'^2 + sigma_y^2 / s_i^2))`` on every observed coordinate (no release times;
at t_n, with no parent, ``epshat = 0`` and ``k^2 = 1 - abar_n``; at t_0 the likelihood, matched
exactly as above with ``tau_i = t_0``). The potentials then depend on the path ``(x_t', x_t)``;
the path target is still the chain times ``g_{t_0}``, so the time-0 law and ``log_evidence`` are
those of the default, and the same closed-form weight and mutation apply once the centre's
offset ``sqrt(1 - abar_t') epshat`` is subtracted (it is carried along the ancestry). The
observed coordinates then follow the denoiser's own noise instead of being pulled towards
``sqrt(abar_t) ybar`` from the prior's guess: on images it restores the observed structure in
the free pixels better at a few particles (bench/RESULTS.md). Without the ``k^2`` term the
potential pins the observed coordinates to a noise path the stochastic kernel cannot produce
(measured: evidence off by 100 nats and a biased mean on a Gaussian prior, mode weights off by
0.78 on a mixture), which is why it is there.

Into ``t_0 = 0`` the DDIM kernel is deterministic: coordinates still active there use the kernel
``N(x0hat_i, r^2)``, ``r^2 = 1 - abar_{t_1}`` (``kernel="moment"``: its own ``r_{t_1}^2``, the same
for unit data variance), so that the same closed-form weight and proposal apply.

Randomness: the call's key seeds Philox; the initial draw is step 0 and the j-th transition step
j, the element ``(b, n, d)`` of step j uses the counter ``((j B + b) N + n) D + d``. Resampling
uniforms and the final one-draw-per-run come from a ``torch.Generator`` seeded with the same key.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .. import ops
from ..diffusion import GaussianMixtureDenoiser, ddim_step, time_grid
from .base import DenoiserCalls, Problem, Sampler, SamplingResult, progress_bar

__all__ = ["MCGDiff"]


def _choice(name: str, value, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {tuple(allowed)}, got {value!r}")
    return value


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _positive_float(name: str, value, why: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name}: expected a finite number > 0{why}, got {value!r}")
    return float(value)


def _log_normal(x: np.ndarray, mean, var) -> np.ndarray:
    """Elementwise ``log N(x; mean, var)`` on float64 numpy arrays (bookkeeping, not a particle loop)."""
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * math.pi * var))


class MCGDiff(Sampler):
    """MCGdiff posterior sampler (MATH.md, "MCGdiff"), B independent filters of N particles.

    Args:
        num_particles: N per run. Default 1024: on the mixture benchmark N ~ 1000 is what reaches
            the Monte Carlo noise floor (the paper's mixture runs use 1000; N = 64 is badly biased
            on informative problems, algorithms.md §1.12).
        num_steps: n, jumps of the backward chain. Default 100, the released step count (a short
            chain is itself inexact, MATH.md "Chain error": use the full chain where exactness
            matters).
        eta: DDIM(eta) stochasticity. Default 1 (the DDPM bridge, as the released image configs);
            ``eta <= 0`` is an error: the closed-form proposal needs ``sigma > 0``.
        kappa: floor of the potential's residual variance (noiseless observations, and the
            variance at ``t_0``). Default 1e-4, the released package's value.
        resampling: one of :data:`fkdiff.ops.SCHEMES`. Default ``"systematic"`` (lowest variance,
            sorted ancestors; the paper uses multinomial, still available).
        ess_threshold: None (default): resample at every step, as the paper. A float in (0, 1]:
            resample a run only when its ESS / N falls below it; weights multiply across steps
            otherwise.
        spacing: time grid, ``"uniform"`` in the table index (default, the released image grid)
            or ``"sqrt_abar"`` (the released mixture scripts' grid).
        kernel: ``"ddim"`` (default, the papers' backward kernel) or ``"moment"`` (variance
            ``sigma^2 + c0^2 r_t^2``, MATH.md Notation).
        data_variance: ``s_d^2`` of the moment kernel's ``r_t^2`` (default 1: unit-variance data,
            and the exact value for the identity-covariance mixture components).
        noise_matching: ``"exact"`` (default, MATH.md decision: the likelihood variance is matched
            exactly by the residual variance ``rho_i``) or ``"released"`` (nearest grid time,
            ``rho_i = kappa``).
        last_step: ``"exact"`` (default: closed-form proposal with ``N(x0hat, r^2)`` into t_0) or
            ``"released"`` (noiseless observed coordinates set to ``ybar``, no weights).
        init: ``"exact"`` (default: draw from ``phi_n ∝ g_n N(0, I)``) or ``"prior"`` (``N(0, I)``
            without weights, the released code).
        final_weights: ``"none"`` (default; the draw already targets the posterior) or
            ``"released"`` (the released package's final correction, which counts the observation
            twice: samples too narrow along the observed directions).
        potential: ``"paper"`` (default, MATH.md: ``N(xbar; sqrt(abar_t) ybar, v_t)``) or
            ``"pigdm"`` (centred on the denoiser's noise estimate, module docstring; exact in the
            same limit, better images at a few particles).
        max_batch: at most this many rows per denoiser call (None: all B N at once); results do
            not depend on it.
        return_particles: also return the (B, N) particles, their normalised log-weights and the
            last step's ancestry.

    The evidence estimate ``log_evidence`` (B,) is consistent for ``log p(y)`` (sigma_y > 0) with
    the default options ``noise_matching``, ``last_step``, ``init`` (the released options change
    the target; ``last_step="released"`` leaves out the last step's factor).
    """

    name = "mcgdiff"

    KERNELS = ("ddim", "moment")
    POTENTIALS = ("paper", "pigdm")
    SPACINGS = ("uniform", "sqrt_abar")

    def __init__(
        self,
        num_particles: int = 1024,
        num_steps: int = 100,
        eta: float = 1.0,
        kappa: float = 1e-4,
        resampling: str = "systematic",
        ess_threshold: float | None = None,
        spacing: str = "uniform",
        kernel: str = "ddim",
        noise_matching: str = "exact",
        last_step: str = "exact",
        init: str = "exact",
        final_weights: str = "none",
        max_batch: int | None = None,
        return_particles: bool = False,
        data_variance: float = 1.0,
        potential: str = "paper",
    ):
        self.num_particles = _positive_int("num_particles", num_particles)
        self.num_steps = _positive_int("num_steps", num_steps)
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(float(eta)):
            raise ValueError(f"eta: expected a finite number > 0, got {eta!r}")
        if eta <= 0:
            raise ValueError(f"eta: MCGdiff needs eta > 0 (its proposal needs sigma > 0), got {eta!r}")
        self.eta = float(eta)
        self.kappa = _positive_float("kappa", kappa)
        self.resampling = _choice("resampling", resampling, ops.SCHEMES)
        if ess_threshold is not None:
            if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, numbers.Real) or not 0 < float(ess_threshold) <= 1:
                raise ValueError(f"ess_threshold: expected None or a number in (0, 1], got {ess_threshold!r}")
            ess_threshold = float(ess_threshold)
        self.ess_threshold = ess_threshold
        self.spacing = _choice("spacing", spacing, self.SPACINGS)
        self.kernel = _choice("kernel", kernel, self.KERNELS)
        self.noise_matching = _choice("noise_matching", noise_matching, ("exact", "released"))
        self.last_step = _choice("last_step", last_step, ("exact", "released"))
        self.init = _choice("init", init, ("exact", "prior"))
        self.final_weights = _choice("final_weights", final_weights, ("none", "released"))
        if max_batch is not None:
            max_batch = _positive_int("max_batch", max_batch)
        self.max_batch = max_batch
        if not isinstance(return_particles, bool):
            raise ValueError(f"return_particles: expected a bool, got {return_particles!r}")
        self.return_particles = return_particles
        self.data_variance = _positive_float("data_variance", data_variance)
        self.potential = _choice("potential", potential, self.POTENTIALS)
        if self.potential == "pigdm":
            for name in ("noise_matching", "final_weights"):
                if getattr(self, name) == "released":
                    raise ValueError(f"{name}: 'released' is the released code's rule for its own potentials; "
                                     f"potential='pigdm' has no release times (use {name}={'exact' if name == 'noise_matching' else 'none'!r})")

    def __repr__(self) -> str:
        keys = ("num_particles", "num_steps", "eta", "kappa", "resampling", "ess_threshold", "spacing", "kernel",
                "noise_matching", "last_step", "init", "final_weights", "potential")
        return "MCGDiff(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"

    def __call__(self, denoiser, operator, y, sigma_y, **kwargs) -> SamplingResult:
        # A closed-form mixture denoiser knows its dimension: say so before any rotation fails.
        dim = getattr(denoiser, "dim", None) if isinstance(denoiser, GaussianMixtureDenoiser) else None
        dim_x = getattr(operator, "dim_x", None)
        if dim is not None and dim_x is not None and dim != dim_x:
            raise ValueError(f"denoiser: works in dimension {dim}, but the operator's x has dimension {dim_x}")
        return super().__call__(denoiser, operator, y, sigma_y, **kwargs)

    # ----------------------------------------------------------------------------------------
    # Setup: release times and residual variances
    # ----------------------------------------------------------------------------------------

    def release_times(self, abar_grid: torch.Tensor, s: torch.Tensor, sigma_y: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k_tau, rho)``: the grid position of each observed coordinate's release time and its
        residual variance (float64), MATH.md "MCGdiff"."""
        ratio = (sigma_y / s) ** 2  # (r,) likelihood variance of ybar_i
        snr_inv = (1 - abar_grid) / abar_grid  # (n + 1,) increasing along the grid
        if self.potential == "pigdm" or self.noise_matching == "exact":
            if self.potential == "pigdm":
                # no release: every coordinate stays active down to t_0, where its potential is
                # the likelihood, matched exactly as below (its variance carries sigma_y)
                k_tau = torch.zeros(ratio.shape, dtype=torch.int64)
            else:  # largest grid time with (1 - abar) / abar <= sigma_y^2 / s_i^2 (t_0 always qualifies)
                k_tau = (snr_inv[None, :] <= ratio[:, None] * (1 + 1e-12)).sum(1) - 1
            abar_tau = abar_grid[k_tau]
            rho = (abar_tau * ratio - (1 - abar_tau)).clamp(min=self.kappa)
        else:  # the released rule: nearest grid time, residual variance kappa
            k_tau = (sigma_y**2 * abar_grid[None, :] - (1 - abar_grid[None, :]) * s[:, None] ** 2).abs().argmin(1)
            rho = torch.full_like(ratio, self.kappa)
        return k_tau, rho

    # ----------------------------------------------------------------------------------------
    # The algorithm
    # ----------------------------------------------------------------------------------------

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        B, N, D, r = problem.num_samples, self.num_particles, problem.dim, problem.rank
        dtype, device = problem.dtype, problem.device
        f64 = dict(dtype=torch.float64)  # the small per-coordinate bookkeeping lives on the CPU
        dev = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731  (per-coordinate vectors for the kernels)

        # --- setup: grid, release times tau_i, residual variances rho_i, potential variances v
        grid = time_grid(problem.alphas_cumprod, self.num_steps, self.spacing)  # t_0 = 0 < ... < t_n
        n = grid.numel() - 1
        abar = problem.alphas_cumprod.to(**f64).cpu()[grid]  # (n + 1,)
        s = problem.singular_values.to(**f64).cpu()
        ybar = problem.ybar.to(**f64).cpu()
        k_tau, rho = self.release_times(abar, s, problem.sigma_y)
        abar_tau = abar[k_tau]

        # per-step bookkeeping on (r,) float64 vectors in numpy: a step's few small vectors cost
        # microseconds there instead of a dozen torch dispatches (measured 1.5 ms a step)
        abar_np, ybar_np, rho_np, abar_tau_np = abar.numpy(), ybar.numpy(), rho.numpy(), abar_tau.numpy()
        k_tau_np = k_tau.numpy()
        if r and (np.diff(k_tau_np) < 0).any():  # pragma: no cover - guaranteed by the SVD order
            raise RuntimeError("MCGDiff: release times are not ordered like the singular values")
        # act(t_k) = {i : tau_i <= t_k} is a prefix of the observed coordinates (tau_i is
        # non-decreasing in i because s_i is non-increasing): keep its size
        num_active = np.searchsorted(k_tau_np, np.arange(n + 1), side="right")

        lik_np = ((problem.sigma_y / s) ** 2).numpy()  # (r,) likelihood variance of ybar_i
        if self.potential == "pigdm":
            # the noise the potential of t_k leaves to the kernel: the variance of the kernel's
            # step into t_k (its fresh noise), and 1 - abar_n at t_n (no parent: all of it)
            noise_into = {k: self._kernel_variance(ddim_step(abar_np[k + 1], abar_np[k], self.eta), float(abar_np[k + 1]),
                                                   False, 0)[1] for k in range(1, n)}
            noise_into[n] = 1 - float(abar_np[n])

        def potential_var(k: int, m: int | None = None) -> np.ndarray:
            """``v_{t_k, i}`` on the first ``m`` observed coordinates (default: the active ones)."""
            m = int(num_active[k]) if m is None else m
            if self.potential == "pigdm" and k > 0:
                return noise_into[k] + abar_np[k] * (self._r2(float(abar_np[k])) + lik_np[:m])
            return 1 - abar_np[k] / abar_tau_np[:m] * (1 - rho_np[:m])

        def vec(values_obs, fill: float) -> torch.Tensor:
            """A (D,) per-coordinate vector for the kernels: observed part, then ``fill``."""
            out = torch.full((D,), fill, **f64)
            out[: len(values_obs)] = torch.as_tensor(values_obs, **f64)
            return dev(out)

        gen = torch.Generator(device=device)
        gen.manual_seed(key)
        flags = ops.new_flags(device)
        step_size = B * N * D  # Philox counters per step

        # --- initialisation from phi_n ∝ g_n N(0, I) (or the prior, init="prior")
        v_n = potential_var(n)
        center_n = math.sqrt(abar_np[n]) * ybar_np[: len(v_n)]
        if self.init == "exact":
            gain = vec(np.ones(len(v_n)), 0.0)
            center = vec(center_n / (1 + v_n), 0.0)
            scale = vec(np.sqrt(v_n / (1 + v_n)), 1.0)
            log_z = torch.full((B,), float(_log_normal(center_n, 0.0, 1 + v_n).sum()), dtype=torch.float64, device=device)  # log ∫ g_n p_n
        else:
            gain, center, scale = vec([], 0.0), vec([], 0.0), vec([], 1.0)
            log_z = torch.zeros(B, dtype=torch.float64, device=device)
        x = ops.auxiliary_mutation(
            torch.zeros(B, 1, D, dtype=dtype, device=device), gain, center, scale,
            ancestors=torch.zeros(B, N, dtype=torch.int64, device=device), seed=key, offset=0, flags=flags,
        )
        x_next = torch.empty_like(x)
        mean = torch.empty_like(x)  # the DDIM mean, rewritten at every step (no per-step allocation)
        ops.check_flags(flags, "MCGDiff initialisation")

        lw = None  # carried normalised log-weights (None: uniform, the default resample-every-step)
        lw_inc = torch.empty(B, N, dtype=dtype, device=device)
        ancestors = torch.empty(B, N, dtype=torch.int64, device=device)
        identity = torch.arange(N, device=device).expand(B, N)
        ess_trace = torch.empty(n, B, dtype=torch.float64, device=device)
        # final_weights="released": log g_{tau_min}(x_{tau_min}) carried along the ancestry
        k_min = int(k_tau.min()) if r else 0
        released_g = None

        shift_old = None  # potential="pigdm": the current potential's centre offset (B, N, r)
        bar = progress_bar(n, progress, "MCGdiff")
        for j in range(1, n + 1):
            k = n - j + 1  # t = t_k -> t' = t_{k-1}
            t, t_new = int(grid[k]), int(grid[k - 1])
            where = f"MCGdiff step {j}/{n} (t={t} -> {t_new})"
            last = k == 1
            m_new = int(num_active[k - 1])  # act' (a prefix, act' ⊂ act)
            v_old, v_new = potential_var(k, m_new), potential_var(k - 1, m_new)
            target_old = math.sqrt(abar_np[k]) * ybar_np[:m_new]
            target_new = math.sqrt(abar_np[k - 1]) * ybar_np[:m_new]

            if self.final_weights == "released" and k == k_min and k_min > 0:
                released_g = self._released_potential(x, k, m_new, abar_np, ybar_np, potential_var, dev, flags)

            # 1. one denoiser call over the B N particles: the DDIM(eta) mean m, straight into its
            # buffer, and the kernel variance k^2: k2_obs on act', k2_free elsewhere
            step = ddim_step(float(abar_np[k]), float(abar_np[k - 1]), self.eta)
            if self.potential == "pigdm":
                # the new potential is centred at sqrt(abar_t') ybar + shift_new, shift_new =
                # sqrt(1 - abar_t') epshat(x_t) on the observed coordinates (none into t_0, where
                # it is the likelihood). Working with mean - shift_new and x - shift_old, the
                # centres are sqrt(abar) ybar again and the same weight and mutation kernels apply.
                x0hat, epshat = calls.denoise(x.view(B * N, D), t)
                torch.mul(x0hat, step.c_x0, out=mean.view(B * N, D)).add_(epshat, alpha=step.c_eps)
                shift_new = None
                if k > 1 and m_new:
                    shift_new = epshat.view(B, N, D)[..., :m_new] * math.sqrt(1 - abar_np[k - 1])
                    mean[..., :m_new] -= shift_new
                if shift_old is not None:
                    x[..., :m_new] -= shift_old
            else:
                calls.ddim_mean(x.view(B * N, D), t, step, out=mean.view(B * N, D))
            k2_obs, k2_free = self._kernel_variance(step, float(abar_np[k]), last, m_new)

            if last and self.last_step == "released":
                # the paper code: observed coordinates still active land on ybar, no weights
                ess_trace[j - 1] = ops.ess(lw, flags=flags) if lw is not None else float(N)
                gain, center = vec(np.ones(m_new), 0.0), vec(ybar_np[:m_new], 0.0)
                scale = vec(np.zeros(m_new), math.sqrt(k2_free))
                ops.auxiliary_mutation(mean, gain, center, scale, seed=key, offset=j * step_size, out=x_next, flags=flags)
                ancestors.copy_(identity)
            else:
                # 2. weight: the new potential under the kernel over the old one, both over act'
                # (their Gaussian normalisers are the same for every particle: into log_z only)
                var_new = k2_obs + v_new
                per_step = dev(torch.from_numpy(np.concatenate([target_new, var_new, target_old, v_old])))
                ops.mcgdiff_log_weight(
                    mean, x, *per_step.view(4, m_new).unbind(0), coords=m_new, normalized=False, out=lw_inc, flags=flags,
                )
                normalizer = float(-0.5 * (np.log(2 * math.pi * var_new).sum() - np.log(2 * math.pi * v_old).sum()))
                total = lw_inc if lw is None else lw + lw_inc
                lse, ess = ops.log_sum_exp_and_ess(total, flags=flags)
                log_z += lse + (normalizer - (math.log(N) if lw is None else 0.0))
                ess_trace[j - 1] = ess

                # 3. resample ancestors (every step, or where ESS / N fell below the threshold)
                ops.resample(total, self.resampling, generator=gen, out=ancestors, flags=flags)
                if self.ess_threshold is None:
                    lw = None
                else:
                    keep = (ess < self.ess_threshold * N)[:, None]
                    ancestors.copy_(torch.where(keep, ancestors, identity))
                    lw = torch.where(keep, -math.log(N), ops.log_normalize(total, flags=flags))

                # 4. mutate from the ancestors' means: closed form on act', the kernel elsewhere
                gain_obs = k2_obs / var_new
                gain = vec(gain_obs, 0.0)
                center = vec(target_new, 0.0)
                scale = vec(np.sqrt(gain_obs * v_new), math.sqrt(k2_free))
                ops.auxiliary_mutation(mean, gain, center, scale, ancestors=ancestors, seed=key, offset=j * step_size,
                                       out=x_next, flags=flags)
            if self.potential == "pigdm":  # back from the shifted frame, along the ancestry
                shift_old = None
                if shift_new is not None:
                    shift_old = shift_new.gather(1, ancestors[..., None].expand(B, N, m_new))
                    x_next[..., :m_new] += shift_old
            if released_g is not None:
                released_g = released_g.gather(1, ancestors)
            x, x_next = x_next, x

            calls.check(where)
            ops.check_flags(flags, where)
            bar.update(1)
        bar.close()

        # --- output: the final weights, one particle per run drawn by them, mapped back with V
        final = lw if lw is not None else torch.full((B, N), -math.log(N), dtype=dtype, device=device)
        if self.final_weights == "released" and r:
            final = final + self._released_final(x, k_min, released_g, ybar, s, problem.sigma_y, potential_var, dev, flags)
        final = ops.log_normalize(final.contiguous(), flags=flags)
        ops.check_flags(flags, "MCGdiff output")
        cdf = torch.cumsum(final.to(torch.float64).exp(), dim=1)
        u = torch.rand(B, 1, generator=gen, dtype=torch.float64, device=device) * cdf[:, -1:]
        choice = torch.searchsorted(cdf, u).clamp(max=N - 1)[:, 0]
        op = problem.operator
        samples = op.V(x[torch.arange(B, device=device), choice]).reshape(B, *problem.x_shape)

        log_evidence = log_z + self._evidence_jacobian(problem, abar_tau, s)
        info = {
            "grid": grid,
            "release_times": grid[k_tau] if r else grid.new_zeros(0),
            "residual_variance": rho,
            "choice": choice,
            "settings": repr(self),
        }
        result = SamplingResult(samples=samples, ess=ess_trace, log_evidence=log_evidence, info=info)
        if self.return_particles:
            result.particles = op.V(x.view(B * N, D)).reshape(B, N, *problem.x_shape)
            result.log_weights = final
            info["ancestors"] = ancestors.clone()
        return result

    # ----------------------------------------------------------------------------------------
    # Pieces
    # ----------------------------------------------------------------------------------------

    def _r2(self, abar_t: float) -> float:
        """``r_t^2 = s_d^2 (1 - abar_t) / (abar_t s_d^2 + 1 - abar_t)``: the variance of x_0 given
        x_t for data of variance ``s_d^2`` (``1 - abar_t`` at the default s_d^2 = 1, PiGDM's)."""
        sd2 = self.data_variance
        return sd2 * (1 - abar_t) / (abar_t * sd2 + 1 - abar_t)

    def _kernel_variance(self, step, abar_t: float, last: bool, m_new: int) -> tuple[np.ndarray, float]:
        """Variance of the backward kernel: ``(m_new,)`` float64 on the active coordinates, and the
        value on every other coordinate.

        DDIM: ``sigma^2`` everywhere; into t_0 (sigma = 0) the coordinates still active use
        ``N(x0hat, r^2)``, ``r^2 = 1 - abar_{t_1}``. Moment kernel: ``sigma^2 + c0^2 r_t^2``
        everywhere, ``r_t^2 = s_d^2 (1 - abar_t) / (abar_t s_d^2 + 1 - abar_t)``."""
        if self.kernel == "moment":
            k2 = step.sigma**2 + step.c_x0_total**2 * self._r2(abar_t)
            return np.full(m_new, k2), k2
        return np.full(m_new, (1 - abar_t) if last else step.sigma**2), step.sigma**2

    def _released_potential(self, x, k, m_new, abar, ybar, potential_var, dev, flags):
        """``log g_{tau_min}(x_{tau_min})`` over the coordinates released at tau_min (B, N)."""
        v = torch.from_numpy(potential_var(k))
        m_old = v.numel()
        v = v[m_new:]
        target = torch.from_numpy(math.sqrt(abar[k]) * ybar[m_new:m_old])
        const = float(ops.gaussian_log_normalizer(v))
        return ops.gaussian_log_potential(x, dev(target), dev(v), coords=slice(m_new, m_old), const=const, flags=flags)

    def _released_final(self, x, k_min, released_g, ybar, s, sigma_y, potential_var, dev, flags):
        """The released package's final log-weight: ``log N(U^T y; S xbar_obs, sigma_y^2) -
        log g_{tau_min}(x_{tau_min})`` (noiseless: ``- log g_0(x_0)``)."""
        r = ybar.numel()
        if k_min == 0:  # noiseless: the coordinates active at t_0, at x_0
            v = torch.from_numpy(potential_var(0))
            m0 = v.numel()
            const = float(ops.gaussian_log_normalizer(v))
            return -ops.gaussian_log_potential(x, dev(ybar[:m0]), dev(v), coords=m0, const=const, flags=flags)
        var = (sigma_y / s) ** 2
        const = float(ops.gaussian_log_normalizer(var))
        like = ops.gaussian_log_potential(x, dev(ybar), dev(var), coords=r, const=const, flags=flags)
        return like - released_g

    def _evidence_jacobian(self, problem: Problem, abar_tau: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """From the Feynman–Kac normaliser to ``log p(y)``: ``g_{tau_i,i}`` integrates against the
        forward kernel to ``N(ybar_i; xbar_{0,i}, sigma_y^2 / s_i^2) / sqrt(abar_tau_i)``, and
        ``N((U^T y)_i; s_i xbar_i, sigma_y^2) = N(ybar_i; xbar_i, sigma_y^2 / s_i^2) / s_i``; the
        unobserved components of ``U^T y`` (d_y > rank) are pure noise ``N(0, sigma_y^2)``."""
        out = float((0.5 * torch.log(abar_tau) - torch.log(s)).sum()) if s.numel() else 0.0
        dim_y, r = problem.operator.dim_y, problem.rank
        if dim_y > r and problem.sigma_y > 0:
            rest = problem.operator.Ut(problem.y.to(torch.float64))[0, r:].cpu().numpy()
            out += float(_log_normal(rest, 0.0, problem.sigma_y**2).sum())
        return torch.tensor(out, dtype=torch.float64, device=problem.device)
