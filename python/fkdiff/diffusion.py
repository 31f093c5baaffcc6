"""Diffusion core: DDPM schedules, time grids, DDIM(eta) coefficients and denoiser adapters.

Conventions (MATH.md, Notation):

* A schedule is the table ``abar[0..T]`` (``alphas_cumprod``) with ``abar[0] = 1``: index 0 is
  clean data and table index ``k >= 1`` is the network's timestep ``k - 1`` (the diffusers
  convention, whose ``alphas_cumprod[0]`` already carries one step of noise).
* A time grid is an increasing integer tensor ``0 = t_0 < t_1 < ... < t_n`` of table indices.
* A denoiser turns whatever its network predicts (epsilon, x0 or v) into ``x0hat(x_t, t)`` and
  ``epshat(x_t, t)`` with ``x_t = sqrt(abar_t) x0hat + sqrt(1 - abar_t) epshat``; the score is
  ``-(x_t - sqrt(abar_t) x0hat) / (1 - abar_t)``.
* DDIM(eta) jump ``t -> t'`` (``t' < t``): ``sigma = eta sqrt((1 - abar_t') / (1 - abar_t))
  sqrt(1 - abar_t / abar_t')`` and mean ``m = sqrt(abar_t') x0hat + sqrt(1 - abar_t' - sigma^2)
  epshat``; eta = 1 is the DDPM bridge; into ``t' = 0`` the jump is deterministic for every eta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "linear_schedule",
    "reversed_linear_schedule",
    "cosine_schedule",
    "check_schedule",
    "time_grid",
    "DDIMStep",
    "ddim_step",
    "Denoiser",
    "EpsilonDenoiser",
    "X0Denoiser",
    "VDenoiser",
    "GaussianMixtureDenoiser",
]


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def _table_from_betas(betas: torch.Tensor) -> torch.Tensor:
    abar = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)
    return torch.cat([torch.ones(1, dtype=torch.float64), abar])


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule: betas ``linspace(beta_start, beta_end, T)``; table of ``T + 1``
    entries (``abar[0] = 1``), float64."""
    if T < 1:
        raise ValueError(f"T: expected at least 1 step, got {T}")
    return _table_from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def reversed_linear_schedule(T: int = 999, beta_start: float = 0.02, beta_end: float = 1e-4) -> torch.Tensor:
    """The schedule of the MCGdiff mixture scripts: betas ``linspace(0.02, 1e-4, 999)`` (large
    steps first); table of 1000 entries."""
    return linear_schedule(T, beta_start, beta_end)


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, betas clipped at ``max_beta``; ``T + 1`` entries."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return _table_from_betas(betas)


def check_schedule(alphas_cumprod, name: str = "alphas_cumprod") -> torch.Tensor:
    """A user's table as float64 with ``abar[0] = 1``, decreasing, in (0, 1].

    A table without the leading 1 (as diffusers stores it, ``alphas_cumprod[0] < 1``) gets one
    prepended, so its index ``k`` is the network's timestep ``k - 1``."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().reshape(-1)
    if abar.numel() < 2 and not (abar.numel() == 1 and abar[0] < 1):
        raise ValueError(f"{name}: expected a table of at least 2 entries, got {abar.numel()}")
    if not torch.isfinite(abar).all() or (abar <= 0).any() or (abar > 1).any():
        raise ValueError(f"{name}: entries must lie in (0, 1]")
    if abar[0] < 1:
        abar = torch.cat([torch.ones(1, dtype=torch.float64), abar])
    if (abar[1:] > abar[:-1]).any():
        raise ValueError(f"{name}: must be non-increasing (abar[0] = 1 is clean data)")
    return abar


def time_grid(alphas_cumprod: torch.Tensor, num_steps: int, spacing: str = "uniform", insert=()) -> torch.Tensor:
    """Increasing table indices ``0 = t_0 < ... < t_n = T`` (``T = len(abar) - 1``).

    Args:
        num_steps: n, the number of jumps (the grid has ``n + 1`` points before insertions).
        spacing: ``"uniform"`` in the index, or ``"sqrt_abar"``: uniform in ``sqrt(abar)`` (the
            MCGdiff mixture scripts' grid: fine steps near the data, coarse ones near noise).
        insert: indices that must be on the grid (e.g. release times); they are added and the
            grid stays strictly increasing.
    """
    abar = check_schedule(alphas_cumprod)
    T = abar.numel() - 1
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps: expected 1..{T}, got {num_steps}")
    if spacing == "uniform":
        grid = torch.round(torch.linspace(0, T, num_steps + 1, dtype=torch.float64)).to(torch.int64)
    elif spacing == "sqrt_abar":
        root = abar.sqrt()
        targets = torch.linspace(1.0, float(root[-1]), num_steps + 1, dtype=torch.float64)
        # the index whose sqrt(abar) is closest to each target (root is decreasing)
        grid = torch.searchsorted(-root, -targets).clamp(0, T)
        grid[0], grid[-1] = 0, T
    else:
        raise ValueError(f"spacing: expected 'uniform' or 'sqrt_abar', got {spacing!r}")
    extra = torch.as_tensor(list(insert), dtype=torch.int64).reshape(-1)
    if extra.numel() and ((extra < 0) | (extra > T)).any():
        raise ValueError(f"insert: indices must lie in [0, {T}]")
    return torch.unique(torch.cat([grid, extra]))  # sorted, strictly increasing


# --------------------------------------------------------------------------------------------
# DDIM(eta) coefficients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DDIMStep:
    """Coefficients of one DDIM(eta) jump t -> t': ``m = c_x0 x0hat + c_eps epshat``, std ``sigma``.

    ``c_x0_total`` is the coefficient of x0hat in m once epshat is written in terms of x_t and
    x0hat (``epshat = (x_t - sqrt(abar_t) x0hat) / sqrt(1 - abar_t)``): the ``c0`` of MATH.md's
    moment-matched kernel."""

    abar_t: float
    abar_prev: float
    sigma: float
    c_x0: float
    c_eps: float

    @property
    def c_x0_total(self) -> float:
        return self.c_x0 - self.c_eps * math.sqrt(self.abar_t / (1.0 - self.abar_t))

    @property
    def c_xt(self) -> float:
        """Coefficient of x_t in m (the other half of the same rewrite)."""
        return self.c_eps / math.sqrt(1.0 - self.abar_t)

    def mean(self, x0hat: torch.Tensor, epshat: torch.Tensor) -> torch.Tensor:
        return self.c_x0 * x0hat + self.c_eps * epshat


def ddim_step(abar_t: float, abar_prev: float, eta: float = 1.0) -> DDIMStep:
    """DDIM(eta) jump from ``abar_t`` to ``abar_prev`` (the later, less noisy time t' < t)."""
    abar_t, abar_prev = float(abar_t), float(abar_prev)
    if not 0.0 < abar_t <= abar_prev <= 1.0:
        raise ValueError(f"ddim_step: need 0 < abar_t <= abar_prev <= 1, got {abar_t}, {abar_prev}")
    if eta < 0:
        raise ValueError(f"eta: expected eta >= 0, got {eta}")
    if abar_t == 1.0:
        return DDIMStep(abar_t, abar_prev, 0.0, 1.0, 0.0)
    sigma2 = eta**2 * (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
    sigma2 = min(max(sigma2, 0.0), 1.0 - abar_prev)
    return DDIMStep(abar_t, abar_prev, math.sqrt(sigma2), math.sqrt(abar_prev), math.sqrt(max(1.0 - abar_prev - sigma2, 0.0)))


# --------------------------------------------------------------------------------------------
# Denoisers
# --------------------------------------------------------------------------------------------


class Denoiser:
    """Base of every denoiser: ``denoise(x, t) -> (x0hat, epshat)`` at table index ``t >= 1``.

    ``x`` has shape ``(batch, *event_shape)``; subclasses implement :meth:`predict`, the raw
    network output converted to x0hat and epshat. :meth:`score` and :meth:`x0` derive from it.
    """

    alphas_cumprod: torch.Tensor

    def __init__(self, alphas_cumprod):
        self.alphas_cumprod = check_schedule(alphas_cumprod)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel() - 1

    def predict(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _check_time(self, t) -> int:
        t = int(t)
        if not 1 <= t <= self.num_timesteps:
            raise ValueError(f"t: expected a table index in [1, {self.num_timesteps}], got {t}")
        return t

    def denoise(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predict(x, self._check_time(t))

    __call__ = denoise

    def ddim_mean_into(self, x: torch.Tensor, t: int, step: DDIMStep, out: torch.Tensor) -> None:
        """The DDIM mean ``step.c_x0 x0hat + step.c_eps epshat`` at table index ``t``, written into
        ``out`` (shape of ``x``).

        The default combines :meth:`predict`'s two outputs. A closed-form denoiser overrides it
        to write the mean in one pass (:attr:`writes_in_place`): no epshat, no fresh (batch, D)
        arrays per step, which on a CPU also saves, past glibc's 32 MB mmap threshold, the page
        faults of every new allocation (measured: 2.4x on a whole MCGdiff step at N = 1e5,
        d = 100)."""
        x0, eps = self.predict(x, t)
        torch.mul(x0, step.c_x0, out=out).add_(eps, alpha=step.c_eps)

    @property
    def writes_in_place(self) -> bool:
        """Whether :meth:`ddim_mean_into` is native (one pass, no intermediate outputs)."""
        return type(self).ddim_mean_into is not Denoiser.ddim_mean_into

    #: whether :meth:`predict_with_vjp` exists (a closed-form vector–Jacobian product of x0hat;
    #: samplers use autograd through :meth:`predict` otherwise)
    has_vjp: bool = False

    def predict_with_vjp(self, x: torch.Tensor, t: int, cols: int | None = None):
        """``(x0hat, epshat, vjp)``: the outputs (their first ``cols`` coordinates only, when
        given) and ``vjp(w (batch, m), x0_weight=0, x_weight=0, out=None)`` = ``J^T [w, 0] +
        x0_weight x0hat + x_weight x`` (written into ``out`` when given), the vector–Jacobian product of ``x0hat`` at ``x`` for a cotangent
        on the first ``m`` coordinates, plus a linear combination of the full outputs (a score
        ``-(x - sqrt(abar) x0hat) / (1 - abar)`` is one) at no extra pass. Only denoisers with
        ``has_vjp`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form vector-Jacobian product")

    def x0(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return self.denoise(x, t)[0]

    def score(self, x: torch.Tensor, t: int) -> torch.Tensor:
        t = self._check_time(t)
        x0hat, _ = self.predict(x, t)
        abar = float(self.alphas_cumprod[t])
        return -(x - math.sqrt(abar) * x0hat) / (1.0 - abar)


class _NetworkDenoiser(Denoiser):
    """A network ``model(x, timestep) -> tensor`` (a ``torch.nn.Module`` or any callable).

    ``timestep`` is ``t - 1`` (the network's own index) as a 1-D long tensor of the batch size,
    unless ``timestep_fn`` maps the table index otherwise. The network runs with autograd only
    when grad mode is on and ``x`` requires grad (gradients in ``x``, never in its weights)."""

    def __init__(self, model: Callable, alphas_cumprod, timestep_fn: Callable[[int], int] | None = None):
        super().__init__(alphas_cumprod)
        if not callable(model):
            raise TypeError(f"model: expected a callable network, got {type(model).__name__}")
        self.model = model
        self.timestep_fn = timestep_fn or (lambda t: t - 1)

    def _network(self, x: torch.Tensor, t: int) -> torch.Tensor:
        steps = torch.full((x.shape[0],), self.timestep_fn(t), dtype=torch.long, device=x.device)
        # A graph only where a sampler differentiates in x (DPS, DCPS): never through the
        # network's parameters, which would cost memory on every call and forbid out= writes.
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            out = self.model(x, steps)
        if hasattr(out, "sample") and not isinstance(out, torch.Tensor):  # diffusers output
            out = out.sample
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model: returned {got} for an input of shape {tuple(x.shape)}; expected the same shape")
        return out

    def _coefs(self, t: int) -> tuple[float, float]:
        abar = float(self.alphas_cumprod[t])
        return math.sqrt(abar), math.sqrt(1.0 - abar)


class EpsilonDenoiser(_NetworkDenoiser):
    """A network predicting the noise epsilon."""

    def predict(self, x, t):
        a, b = self._coefs(t)
        eps = self._network(x, t)
        return (x - b * eps) / a, eps


class X0Denoiser(_NetworkDenoiser):
    """A network predicting the clean sample x0."""

    def predict(self, x, t):
        a, b = self._coefs(t)
        x0 = self._network(x, t)
        return x0, (x - a * x0) / b


class VDenoiser(_NetworkDenoiser):
    """A network predicting ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho)."""

    def predict(self, x, t):
        a, b = self._coefs(t)
        v = self._network(x, t)
        return a * x - b * v, b * x + a * v


class GaussianMixtureDenoiser(Denoiser):
    """The exact denoiser of a Gaussian mixture with identity covariances (no autograd).

    Prior ``p(x0) = sum_k w_k N(mu_k, I)``. Under ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` each
    component stays ``N(sqrt(abar) mu_k, I)``, so the responsibilities are a softmax of
    ``log w_k + sqrt(abar) <x, mu_k> - abar |mu_k|^2 / 2`` (one matrix product and a logsumexp) and
    ``x0hat = sqrt(abar) x + (1 - abar) sum_k r_k mu_k``.

    Args:
        means: ``(K, D)`` component means.
        weights: ``(K,)`` non-negative weights (normalised here).
        alphas_cumprod: the diffusion's table (``abar[0] = 1``).
    """

    def __init__(self, means: torch.Tensor, weights: torch.Tensor, alphas_cumprod):
        super().__init__(alphas_cumprod)
        means = torch.as_tensor(means)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if means.dim() != 2:
            raise ValueError(f"means: expected shape (K, D), got {tuple(means.shape)}")
        if weights.shape != means.shape[:1]:
            raise ValueError(f"weights: expected shape ({means.shape[0]},), got {tuple(weights.shape)}")
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("weights: must be non-negative with a positive sum")
        self.means = means
        self.log_weights = torch.log(weights / weights.sum())
        self._half_sq = 0.5 * (means * means).sum(-1)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def responsibilities(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``(batch, K)`` posterior component probabilities given ``x_t`` (t = 0: clean x)."""
        abar = float(self.alphas_cumprod[t])
        mu = self.means.to(x.dtype)
        bias = self._logit_bias(abar, x.dtype)
        # one fused GEMM + bias (no (batch, K) temporaries besides the logits themselves)
        logits = torch.addmm(bias, x, mu.T, alpha=math.sqrt(abar))
        return torch.softmax(logits, dim=-1)

    def _logit_bias(self, abar: float, dtype: torch.dtype) -> torch.Tensor:
        """``(K,)`` ``log w_k - abar |mu_k|^2 / 2``: the responsibilities' logits less ``sqrt(abar) <x, mu_k>``."""
        return (self.log_weights - abar * self._half_sq).to(dtype)

    def _mixture_mean(self, x: torch.Tensor, t: int, beta: float, alpha: float, out: torch.Tensor | None = None,
                      cols: int | None = None, with_resp: bool = False):
        """``beta x + alpha r(x) @ means`` on the first ``cols`` coordinates (default all) of
        ``(batch, D)`` rows ``x`` (``x0hat``: ``beta = sqrt(abar)``, ``alpha = 1 - abar``), into
        ``out`` when given (``out`` may be ``x`` itself when ``cols`` is ``D``); with
        ``with_resp`` also the ``(batch, K)`` responsibilities ``r(x)``.

        On the CPU (the ``cpu`` backend of :mod:`fkdiff.ops`, float32 / float64) one compiled pass
        (``fkdiff._C.cpu_mixture_mean``: the logits, softmax and weighted sum per row; 4-13x the
        PyTorch sequence at K = 25 and D = 4-10, 1.7x at D = 100, ``fkdiff bench kernels
        --kernels mixture``); elsewhere, or with ``FKDIFF_BACKEND=torch``, addmm +
        softmax + addmm, and whenever autograd records (the kernel has no backward). Both compute
        every row on its own: the result does not depend on how the rows are chunked."""
        abar = float(self.alphas_cumprod[t])
        mu = self.means if self.means.dtype == x.dtype else self.means.to(x.dtype)
        c = self.dim if cols is None else cols
        if self._compiled_path(x, out, c):
            from fkdiff import _C

            mu = mu.contiguous()
            bias = self._logit_bias(abar, x.dtype).contiguous()
            out = torch.empty((x.shape[0], c), dtype=x.dtype) if out is None else out
            resp = torch.empty((x.shape[0], mu.shape[0]), dtype=x.dtype) if with_resp else None
            _C.cpu_mixture_mean(x.data_ptr(), mu.data_ptr(), bias.data_ptr(), math.sqrt(abar), float(beta), float(alpha),
                                out.data_ptr(), 0 if resp is None else resp.data_ptr(), x.shape[0], mu.shape[0],
                                mu.shape[1], c, int(x.dtype == torch.float64), torch.get_num_threads())
        else:
            resp = self.responsibilities(x, t)
            out = torch.addmm(x[:, :c], resp, mu[:, :c], beta=beta, alpha=alpha, out=out)
        return (out, resp) if with_resp else out

    def _compiled_path(self, x: torch.Tensor, out: torch.Tensor | None, cols: int) -> bool:
        from .ops._backends import resolve

        if x.device.type != "cpu" or self.means.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return False
        if not x.is_contiguous() or x.shape[0] == 0 or not 0 < cols <= x.shape[1]:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.means.requires_grad):
            return False  # autograd traces the PyTorch sequence
        if out is not None:  # the kernel writes rows as it reads them: out is x (all columns), or apart from it
            if out.dtype != x.dtype or out.shape != (x.shape[0], cols) or not out.is_contiguous():
                return False
            if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() and (
                    out.data_ptr() != x.data_ptr() or cols != x.shape[1]):
                return False
        return resolve(x.device)[0] == "cpu"

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (batch, {self.dim}), got {tuple(x.shape)}")

    def predict(self, x, t):
        self._check_input(x)
        abar = float(self.alphas_cumprod[t])
        # x0hat = sqrt(abar) x + (1 - abar) r @ mu and epshat = (x - sqrt(abar) x0hat) / sqrt(1 - abar),
        # each in one fused op: the two outputs are the only (batch, D) arrays made (this runs on
        # every particle at every step, so temporaries are memory and time).
        x0hat = self._mixture_mean(x, t, beta=math.sqrt(abar), alpha=1.0 - abar)
        epshat = torch.add(x, x0hat, alpha=-math.sqrt(abar)).div_(math.sqrt(1.0 - abar))
        return x0hat, epshat

    has_vjp = True

    def predict_with_vjp(self, x, t, cols=None):
        # x0hat = a x + (1 - abar) R mu with R = softmax(a x mu^T + bias), a = sqrt(abar), so
        # J^T w = a w + (1 - abar) a sum_k R_k (u_k - <R, u>) mu_k with u_k = <w, mu_k>: thin GEMMs,
        # no autograd graph. A cotangent on m << D coordinates (the observed ones) makes the first
        # GEMM (batch, m) x (m, K); the outputs on ``cols`` coordinates cost (batch, K) x (K, cols).
        self._check_input(x)
        abar = float(self.alphas_cumprod[t])
        a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
        mu = self.means.to(x.dtype)
        c = self.dim if cols is None else cols
        x0hat, resp = self._mixture_mean(x, t, beta=a, alpha=1.0 - abar, cols=c, with_resp=True)
        epshat = torch.add(x[:, :c], x0hat, alpha=-a).div_(b)

        def vjp(w: torch.Tensor, x0_weight: float = 0.0, x_weight: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
            m = w.shape[1]
            u = w @ mu[:, :m].T  # (batch, K)
            u.sub_((resp * u).sum(-1, keepdim=True)).mul_(resp).mul_((1.0 - abar) * a)
            if x0_weight:
                u.add_(resp, alpha=x0_weight * (1.0 - abar))  # the (1 - abar) R mu part of x0hat
            beta = x0_weight * a + x_weight
            if beta:
                out = torch.addmm(x, u, mu, beta=beta, out=out)
            else:  # addmm would still copy x into out first (a full (batch, D) pass)
                out = torch.mm(u, mu, out=out)
            out[:, :m].add_(w, alpha=a)
            return out

        return x0hat, epshat, vjp

    def ddim_mean_into(self, x, t, step, out):
        # m = c0 x0hat + cx x with x0hat = sqrt(abar) x + (1 - abar) r @ mu (DDIMStep.c_x0_total,
        # c_xt): one GEMM with the bias x, straight into the sampler's buffer
        self._check_input(x)
        abar = float(self.alphas_cumprod[t])
        c0, cx = step.c_x0_total, step.c_xt
        self._mixture_mean(x, t, beta=c0 * math.sqrt(abar) + cx, alpha=c0 * (1.0 - abar), out=out)

    def log_prob(self, x: torch.Tensor, t: int = 0) -> torch.Tensor:
        """``log p_t(x)`` of the diffused mixture (for tests and diagnostics)."""
        abar = float(self.alphas_cumprod[t])
        mu = math.sqrt(abar) * self.means.to(x.dtype)
        sq = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        return torch.logsumexp(self.log_weights.to(x.dtype) - 0.5 * sq, dim=-1) - 0.5 * self.dim * math.log(2 * math.pi)
