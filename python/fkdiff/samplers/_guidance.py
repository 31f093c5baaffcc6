"""Pieces the guidance samplers share (DCPS, DPS, PiGDM, DDRM): the observation in the SVD basis,
the counter-based noise stream, the backward kernel's variance, gradients through the denoiser,
and argument checks.

Everything works on flat spectral coordinates ``xbar = V^T x`` (``Sampler.rotated = True``): the
first ``r`` coordinates are observed, ``ybar_i = (U^T y)_i / s_i``, and a Gaussian likelihood
``N(c y; A mu, v A A^T + sigma^2 I)`` is, up to a constant, ``sum_{i < r} -(c ybar_i - mu_i)^2 /
(2 (v + sigma^2 / s_i^2))`` (MATH.md, Notation).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .. import ops
from ..diffusion import DDIMStep
from .base import DenoiserCalls, Problem

_U64 = 1 << 64


# --------------------------------------------------------------------------------------------
# Argument checks (clear ValueErrors naming the hyper-parameter)
# --------------------------------------------------------------------------------------------


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value, *, low: float = 0.0, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name}: expected a finite number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_max_batch(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1):
        raise ValueError(f"max_batch: expected a positive int or None, got {value!r}")
    return None if value is None else int(value)


# --------------------------------------------------------------------------------------------
# The observation in the SVD basis
# --------------------------------------------------------------------------------------------


@dataclass
class Observation:
    """``y`` seen in the SVD basis, in the working dtype.

    ``ybar (r,)`` and ``s (r,)`` for the observed coordinates; ``perp2`` is the squared norm of the
    part of ``y`` outside the range of A (a constant of ``||y - A x||^2``)."""

    r: int
    ybar: torch.Tensor
    s: torch.Tensor
    perp2: float

    @classmethod
    def of(cls, problem: Problem) -> "Observation":
        r = problem.rank
        perp2 = 0.0
        if problem.operator.dim_y > r:
            Uty = problem.operator.Ut(problem.y.to(torch.float64))
            perp2 = float((Uty[:, r:] ** 2).sum())
        return cls(r, problem.ybar, problem.singular_values, perp2)

    def noise_var(self, sigma: float) -> torch.Tensor:
        """``sigma^2 / s_i^2``: the observation noise in units of ``xbar_i``."""
        return sigma**2 / self.s**2

    def log_gaussian(self, mu: torch.Tensor, scale: float, var: torch.Tensor | float) -> torch.Tensor:
        """``(B,)``: ``-sum_{i < r} (scale ybar_i - mu_i)^2 / (2 var_i)`` (constant dropped)."""
        if self.r == 0:
            return mu.new_zeros(mu.shape[0])
        resid = scale * self.ybar - mu[:, : self.r]
        return -0.5 * (resid * resid / var).sum(-1)


# --------------------------------------------------------------------------------------------
# Noise: Philox at the counter ((step * B + b) * N + n) * D + d (N = 1 here)
# --------------------------------------------------------------------------------------------


class NoiseStream:
    """Fresh ``(B, D)`` standard normals per draw event; event ``e`` uses the Philox elements
    ``e * B * D + b * D + d`` of the call's key, so samples do not depend on ``max_batch``."""

    def __init__(self, key: int, B: int, D: int, dtype: torch.dtype, device: torch.device):
        self.key, self.B, self.D, self.dtype, self.device = key, B, D, dtype, device
        self.event = 0

    def next_offset(self) -> int:
        offset = (self.event * self.B * self.D) % _U64
        self.event += 1
        return offset

    def normal(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The next ``(B, D)`` draw (into ``out``, a contiguous ``(B, D)`` buffer, when given)."""
        flat = None if out is None else out.view(-1)
        z = ops.normal(self.B * self.D, seed=self.key, offset=self.next_offset(), dtype=self.dtype, device=self.device, out=flat)
        return z.view(self.B, self.D)


class Workspace:
    """Named ``(B, D)`` buffers reused across the steps of one sampler call.

    Every fresh array of a few MB costs its page faults on a CPU (measured: an elementwise op
    into a new (1e4, 100) array took 3.5 ms, into an existing one 0.3 ms); the samplers write
    their per-step temporaries here instead. ``state(x)`` gives the buffer of a ping-pong pair
    that does not hold ``x``, for the next state."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.buffers: dict[str, torch.Tensor] = {}

    def __call__(self, name: str) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = torch.empty_like(self.like)
        return buf

    def state(self, x: torch.Tensor) -> torch.Tensor:
        a = self("state_a")
        return self("state_b") if a.data_ptr() == x.data_ptr() else a


# --------------------------------------------------------------------------------------------
# Backward kernels
# --------------------------------------------------------------------------------------------


def x0_posterior_var(abar_t: float, data_variance: float = 1.0) -> float:
    """``r_t^2 = s_d^2 (1 - abar_t) / (abar_t s_d^2 + 1 - abar_t)``: the variance of x0 given x_t
    under a ``N(0, s_d^2 I)`` prior (MATH.md, moment-matched kernel)."""
    return data_variance * (1.0 - abar_t) / (abar_t * data_variance + 1.0 - abar_t)


def kernel_var(step: DDIMStep, kernel: str, data_variance: float = 1.0) -> float:
    """Variance of the backward kernel ``t -> t'``: ``sigma^2`` (``"ddim"``) or
    ``sigma^2 + c0^2 r_t^2`` (``"moment"``)."""
    var = step.sigma**2
    if kernel == "moment" and step.abar_t < 1.0:
        var += step.c_x0_total**2 * x0_posterior_var(step.abar_t, data_variance)
    return var


# --------------------------------------------------------------------------------------------
# Gradients through the denoiser
# --------------------------------------------------------------------------------------------


def value_and_grad(calls: DenoiserCalls, x: torch.Tensor, t: int, objective, cols: int, *,
                   outputs: bool = True, plus: tuple[float, float] = (0.0, 0.0), out: torch.Tensor | None = None):
    """``objective(x, x0hat, epshat) -> (B,)`` and its gradient in ``x`` through the denoiser.

    The objective sees the first ``cols`` coordinates of ``x``, ``x0hat`` and ``epshat`` only
    (the observed ones in the SVD basis: every guidance term depends on nothing else). Runs
    forward and backward in chunks of at most ``calls.max_batch`` rows (the objective is a sum
    over rows, so the gradient does not depend on the chunking), counts one VJP per row, and
    returns ``(value, grad + plus[0] x0hat + plus[1] x, x0hat, epshat)``, all detached, the
    latter three ``(B, D)`` (``x0hat, epshat`` are None with ``outputs=False``). ``plus``
    folds in, e.g., the score ``-(x - sqrt(abar) x0hat) / (1 - abar)``; ``out`` (a ``(B, D)``
    buffer) receives the gradient.

    A denoiser with a closed-form VJP (``has_vjp``, e.g. the Gaussian mixture) is not traced:
    autograd runs on the objective alone, the cotangent goes through ``predict_with_vjp``
    (``epshat = (x - sqrt(abar) x0hat) / sqrt(1 - abar)``), and with ``outputs=False`` only the
    observed coordinates of x0hat and epshat are formed."""
    size = calls.chunk_rows(x.shape[0])
    closed = bool(getattr(calls.denoiser, "has_vjp", False))
    abar = float(calls.denoiser.alphas_cumprod[t])
    a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
    x0_weight, x_weight = plus
    values, grads, x0s, epss = [], [], [], []
    for start in range(0, x.shape[0], size):
        chunk = x.detach()[start:start + size]
        dst = None if out is None else out[start:start + size]
        if closed:
            x0, eps, vjp = calls.denoise_with_vjp(chunk, t, None if outputs else cols)
            leaves = [v[:, :cols].detach().requires_grad_(True) for v in (chunk, x0, eps)]
            with torch.enable_grad():
                val = objective(*leaves)
            gx = g0 = ge = None
            if cols > 0 and val.requires_grad:
                gx, g0, ge = torch.autograd.grad(val.sum(), leaves, allow_unused=True)
            w = torch.zeros_like(leaves[1]) if g0 is None else g0
            if ge is not None:
                w = w.add(ge, alpha=-a / b)  # through x0hat inside epshat
            g = vjp(w, x0_weight, x_weight, out=dst)
            if gx is not None:
                g[:, :cols] += gx
            if ge is not None:
                g[:, :cols].add_(ge, alpha=1.0 / b)  # epshat's own x
            # (no finiteness pass over g: a closed form is non-finite only where x or the
            # objective is, and the sampler's next denoiser output, which is checked, sees it)
        else:
            xc = chunk.detach().requires_grad_(True)  # a leaf sharing the caller's memory (autograd only reads it)
            with torch.enable_grad():
                x0, eps = calls.denoise(xc, t)
                val = objective(xc[:, :cols], x0[:, :cols], eps[:, :cols])
                g = torch.autograd.grad(val.sum(), xc)[0] if val.requires_grad else torch.zeros_like(xc)
            if x0_weight:
                g.add_(x0.detach(), alpha=x0_weight)
            if x_weight:
                g.add_(chunk, alpha=x_weight)
            if dst is not None:
                g = dst.copy_(g)
        calls.vjp_rows += chunk.shape[0]
        values.append(val.detach())
        grads.append(g)
        x0s.append(x0.detach() if outputs else None)
        epss.append(eps.detach() if outputs else None)
    if len(values) == 1:  # torch.cat of one tensor would still copy it
        return values[0], grads[0], x0s[0], epss[0]
    cat = torch.cat
    grad = out if out is not None else cat(grads)
    return cat(values), grad, (cat(x0s) if outputs else None), (cat(epss) if outputs else None)
