"""Pure-PyTorch twin of every compiled kernel (the ``torch`` backend).

This module is the executable form of ``csrc/KERNELS.md``: the CPU, CUDA and Triton backends
are tested against it, run in float64. It follows the same protocol as the compiled backends —
validated, contiguous inputs and preallocated outputs — so it can stand in for any of them, and
it is written for clarity, not speed (it allocates freely).

Conventions shared by every backend
-----------------------------------
* Shapes: ``B`` populations, ``N`` particles, ``d`` coordinates; particles ``(B, N, d)``,
  log-weights ``(B, N)``. Per-population vectors are ``(B, m)`` with batch stride ``m`` or ``0``.
* Noise: the normal for the 64-bit element counter ``e`` comes from Philox4x32-10 block
  ``e >> 2`` (key = seed, counter = (lo, hi, 0, 0), Triton's constants), lane ``e & 3``; uniforms
  by Triton's ``uint_to_uniform_float``; Box–Muller on lanes (0, 1) and (2, 3) as Triton's
  ``randn4x``. Element ``(b, n, i)`` of a ``(B, N, d)`` kernel uses
  ``e = offset + (b * N + n) * d + i`` (mod 2**64), so results do not depend on how the work is
  split. The uniforms are exactly the float32 values every backend computes; this twin evaluates
  log/cos/sin in float64 on them (backends are allowed 1e-5 absolute).
* Systematic resampling: ``ancestors[j] = min{i : C_i / S > (j + u) / N}`` on the inclusive
  float64 cumulative sum ``C`` of ``exp(lw - max lw)`` (``S = C[-1]``), i.e. PyTorch's
  ``searchsorted(C / S, (j + u) / N, right=True)``; ancestors come out sorted.
* Flags: errors are OR-ed into a ``(1,)`` int32 tensor (bits in :mod:`fkdiff.ops._flags`).
"""

from __future__ import annotations

import math

import torch

from ._flags import (
    FLAG_ANCESTOR_RANGE,
    FLAG_GRADIENT_NONFINITE,
    FLAG_LOGW_ALL_ZERO,
    FLAG_LOGW_NAN,
    FLAG_LOGW_POSINF,
    FLAG_POTENTIAL_NAN,
)

__all__ = [
    "philox",
    "uniform_from_words",
    "normal_from_words",
    "normal",
    "normal_like_counter",
    "logsumexp_stats",
    "resample",
    "gaussian_potential",
    "mutation",
    "tamed_langevin",
    "variational_update",
]

_MASK32 = 0xFFFFFFFF
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
_UNIFORM_SCALE = 4.6566127342e-10  # Triton's scale (a float32 constant)


def _or_flag(flags: torch.Tensor, bit: int) -> None:
    flags.bitwise_or_(bit)


# --------------------------------------------------------------------------------------------
# Philox4x32-10 in int64 arithmetic (uint32 values kept in the low 32 bits)
# --------------------------------------------------------------------------------------------


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of the 64-bit product of the constant ``a`` and uint32 ``b``."""
    b_lo = b & 0xFFFF
    b_hi = b >> 16
    p_lo = a * b_lo  # < 2**48
    p_hi = a * b_hi  # < 2**48
    mid = p_hi + (p_lo >> 16)  # < 2**49
    hi = mid >> 16
    lo = ((mid & 0xFFFF) << 16) | (p_lo & 0xFFFF)
    return hi & _MASK32, lo & _MASK32


def philox_words(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 blocks for 64-bit ``counters`` (int64 tensor of bit patterns) -> (n, 4) int64
    tensor of uint32 words (values in [0, 2**32))."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = seed & _MASK32, seed >> 32
    c0 = counters & _MASK32
    c1 = (counters >> 32) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return torch.stack([c0, c1, c2, c3], dim=-1)


def _as_int64_bits(values: int) -> int:
    """Reinterpret an unsigned 64-bit Python int as a signed one (torch has no uint64 math)."""
    values &= 0xFFFFFFFFFFFFFFFF
    return values - (1 << 64) if values >= (1 << 63) else values


def _counters(start: int, n: int, device) -> torch.Tensor:
    """int64 bit patterns of the 64-bit counters start, start + 1, ..., start + n - 1 (mod 2**64)."""
    base = torch.arange(n, dtype=torch.int64, device=device)
    # int64 addition wraps like uint64 addition on the bit patterns.
    return base + _as_int64_bits(start)


def philox(out: torch.Tensor, seed: int, counter: int) -> None:
    """Protocol 7: ``out (n, 4) int32`` gets the words of Philox blocks counter, counter + 1, ..."""
    words = philox_words(seed, _counters(counter, out.shape[0], out.device))
    out.copy_(torch.where(words >= 2**31, words - 2**32, words).to(torch.int32))


def uniform_from_words(words: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float``: float32 uniforms in [0, 1) from uint32 words."""
    x = torch.where(words >= 2**31, words - 2**32, words)  # int32 bit pattern
    x = torch.where(x < 0, -x - 1, x)
    return x.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def normal_from_words(words: torch.Tensor) -> torch.Tensor:
    """(n, 4) Philox words -> (n, 4) float64 normals (Box–Muller on lanes (0,1) and (2,3),
    evaluated in float64 on the float32 uniforms)."""
    u = uniform_from_words(words).to(torch.float64)
    u1 = torch.clamp(u[:, 0::2], min=float(torch.tensor(1e-7, dtype=torch.float32)))
    u2 = u[:, 1::2]
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = 2.0 * math.pi * u2
    z = torch.empty_like(u)
    z[:, 0::2] = r * torch.cos(theta)
    z[:, 1::2] = r * torch.sin(theta)
    return z


def normal_like_counter(seed: int, start: int, n: int, device="cpu") -> torch.Tensor:
    """float64 normals z(start), ..., z(start + n - 1) of the element counters (see module doc)."""
    if n == 0:
        return torch.empty(0, dtype=torch.float64, device=device)
    start &= 0xFFFFFFFFFFFFFFFF
    first_block = start >> 2
    last_block = ((start + n - 1) & 0xFFFFFFFFFFFFFFFF) >> 2
    if last_block >= first_block:
        nblocks = last_block - first_block + 1
        z = normal_from_words(philox_words(seed, _counters(first_block, nblocks, device))).reshape(-1)
        lane0 = start & 3
        return z[lane0 : lane0 + n]
    # The counter wrapped past 2**64: evaluate per element.
    e = _counters(start, n, device)
    blocks = (e >> 2) & ((1 << 62) - 1)  # logical shift of the uint64 bit pattern
    z = normal_from_words(philox_words(seed, blocks))
    return z.gather(1, (e & 3).unsqueeze(1)).squeeze(1)


def normal(out: torch.Tensor, seed: int, offset: int) -> None:
    """Protocol 6: ``out[k] = z(offset + k)``."""
    out.copy_(normal_like_counter(seed, offset, out.numel(), out.device).to(out.dtype))


def _noise(seed: int, offset: int, shape, device) -> torch.Tensor:
    n = math.prod(shape)
    return normal_like_counter(seed, offset, n, device).reshape(shape)


# --------------------------------------------------------------------------------------------
# Weights and resampling
# --------------------------------------------------------------------------------------------


def _weight_flags(lw: torch.Tensor) -> torch.Tensor:
    """Per-population int32 error bits of a (B, N) log-weight tensor."""
    bits = torch.zeros(lw.shape[0], dtype=torch.int32, device=lw.device)
    bits |= torch.isnan(lw).any(dim=1).to(torch.int32) * FLAG_LOGW_NAN
    bits |= (lw == math.inf).any(dim=1).to(torch.int32) * FLAG_LOGW_POSINF
    bits |= (lw == -math.inf).all(dim=1).to(torch.int32) * FLAG_LOGW_ALL_ZERO
    return bits


def logsumexp_stats(log_weights: torch.Tensor, out: torch.Tensor, flags: torch.Tensor) -> None:
    """Protocol 1: ``out[b] = (max, sum exp(lw - max), sum exp(2 (lw - max)))`` in float64."""
    lw = log_weights.to(torch.float64)
    bits = _weight_flags(lw)
    bad = bits != 0
    m = torch.where(bad, 0.0, lw.amax(dim=1))
    w = torch.exp(lw - m[:, None])
    stats = torch.stack([m, w.sum(dim=1), (w * w).sum(dim=1)], dim=1)
    out.copy_(torch.where(bad[:, None], math.nan, stats))
    _or_flag(flags, _reduce_or(bits))


def _reduce_or(bits: torch.Tensor) -> int:
    value = 0
    for b in bits.tolist():
        value |= int(b)
    return value


def cdf(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised inclusive float64 CDF of each population's weights, ``(B, N)``."""
    lw = log_weights.to(torch.float64)
    m = lw.amax(dim=1, keepdim=True)
    c = torch.cumsum(torch.exp(lw - m), dim=1)
    return c / c[:, -1:]


def resample(
    log_weights: torch.Tensor,
    ancestors: torch.Tensor,
    flags: torch.Tensor,
    *,
    u: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> None:
    """Protocol 2: ancestors by inverse CDF at ``(j + u) / N`` (systematic) or at ``positions``.

    A population whose weights are invalid (NaN, +inf, all -inf) gets ``ancestors[j] = j``.
    """
    B, N = log_weights.shape
    bits = _weight_flags(log_weights.to(torch.float64))
    bad = bits != 0
    safe_lw = torch.where(bad[:, None], 0.0, log_weights.to(torch.float64))
    c = cdf(safe_lw)
    if positions is None:
        j = torch.arange(N, dtype=torch.float64, device=log_weights.device)
        q = (j[None, :] + u.to(torch.float64)[:, None]) / N
    else:
        q = positions.to(torch.float64)
    anc = torch.searchsorted(c, q.contiguous(), right=True).clamp_(max=N - 1)
    identity = torch.arange(N, device=log_weights.device).expand(B, N)
    anc = torch.where(bad[:, None], identity, anc)
    ancestors.copy_(anc)
    if x is not None:
        rows.copy_(torch.gather(x, 1, anc[:, :, None].expand(B, N, x.shape[2])))
    _or_flag(flags, _reduce_or(bits))


# --------------------------------------------------------------------------------------------
# Gaussian potentials
# --------------------------------------------------------------------------------------------


def _quadratic(x, t, a, v) -> torch.Tensor:
    """sum_i (t_i - a_i x_i)^2 / (2 v_i) over the last axis, float64, with v = inf giving 0."""
    x, t, a, v = (z.to(torch.float64) for z in (x, t, a, v))
    r = t[:, None, :] - a[:, None, :] * x
    prec = torch.where(torch.isinf(v), 0.0, 0.5 / v)
    terms = r * r * prec[:, None, :]
    terms = torch.where(torch.isinf(v)[:, None, :] & torch.isfinite(r), 0.0, terms)
    return terms.sum(dim=-1)


def gaussian_potential(
    x: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    flags: torch.Tensor,
    *,
    accumulate: bool,
    const: torch.Tensor | None = None,
    x2: torch.Tensor | None = None,
    t2: torch.Tensor | None = None,
    a2: torch.Tensor | None = None,
    v2: torch.Tensor | None = None,
) -> None:
    """Protocol 3: ``out = [out] + const - Q(x; t, a, v) + Q(x2; t2, a2, v2)`` per particle,
    ``Q(x; t, a, v) = sum_i (t_i - a_i x_i)^2 / (2 v_i)``."""
    value = -_quadratic(x, t, a, v)
    if x2 is not None:
        value = value + _quadratic(x2, t2, a2, v2)
    if const is not None:
        value = value + const.to(torch.float64)[:, None]
    if accumulate:
        value = value + out.to(torch.float64)
    if torch.isnan(value).any():
        _or_flag(flags, FLAG_POTENTIAL_NAN)
    out.copy_(value)


# --------------------------------------------------------------------------------------------
# Closed-form auxiliary mutation (MCGdiff) and tamed Langevin (DCPS)
# --------------------------------------------------------------------------------------------


def mutation(
    m: torch.Tensor,
    ancestors: torch.Tensor | None,
    K: torch.Tensor,
    c: torch.Tensor,
    s: torch.Tensor,
    seed: int,
    offset: int,
    out: torch.Tensor,
    flags: torch.Tensor,
) -> None:
    """Protocol 4: ``out[b,j,i] = K c + (1 - K) m[b, a_j, i] + s z(offset + (b N + j) d + i)``.

    An ancestor outside ``[0, Np)`` sets the ancestor-range flag and makes that row NaN."""
    B, Np, d = m.shape
    N = out.shape[1]
    dt = torch.float64
    if ancestors is None:
        parents = m.to(dt)
        valid = torch.ones(B, N, dtype=torch.bool, device=m.device)
    else:
        anc = ancestors.to(torch.int64)
        valid = (anc >= 0) & (anc < Np)
        parents = torch.gather(m.to(dt), 1, anc.clamp(0, Np - 1)[:, :, None].expand(B, N, d))
    z = _noise(seed, offset, (B, N, d), m.device)
    K64, c64, s64 = K.to(dt)[:, None, :], c.to(dt)[:, None, :], s.to(dt)[:, None, :]
    value = K64 * c64 + (1.0 - K64) * parents + s64 * z
    value = torch.where(valid[:, :, None], value, math.nan)
    if not bool(valid.all()):
        _or_flag(flags, FLAG_ANCESTOR_RANGE)
    out.copy_(value)


def tamed_langevin(
    x: torch.Tensor,
    grad: torch.Tensor,
    gamma: float,
    seed: int,
    offset: int,
    out: torch.Tensor,
    flags: torch.Tensor,
) -> None:
    """Protocol 5: ``out = x + gamma G / (1 + gamma ||G||) + sqrt(2 gamma) z`` with the norm per
    particle (over the last axis)."""
    B, N, d = x.shape
    g64 = grad.to(torch.float64)
    norm = torch.linalg.vector_norm(g64, dim=-1, keepdim=True)
    if not bool(torch.isfinite(norm).all()):
        _or_flag(flags, FLAG_GRADIENT_NONFINITE)
    z = _noise(seed, offset, (B, N, d), x.device)
    value = x.to(torch.float64) + gamma * g64 / (1.0 + gamma * norm) + math.sqrt(2.0 * gamma) * z
    out.copy_(value)


# --------------------------------------------------------------------------------------------
# DCPS's Gaussian fit: one normalised-gradient step and a fresh draw
# --------------------------------------------------------------------------------------------


def variational_update(
    mu: torch.Tensor,
    log_std: torch.Tensor,
    m: torch.Tensor,
    grad: torch.Tensor,
    xi: torch.Tensor,
    var: float,
    lr_mu: float,
    lr_l: float,
    seed: int,
    offset: int,
    sample: torch.Tensor,
    flags: torch.Tensor,
) -> None:
    """Protocol 8, per row (last axis) of ``(B, N, d)`` arrays, with ``std = exp(log_std)``:

    ``gm = (mu - m) - var g`` and ``gl = std^2 - var - var g std xi`` (the gradients of
    ``-log beta(mu + std xi) + KL(N(mu, std^2) || N(m, var))`` in ``mu`` and ``log_std``, times
    ``var``, with ``g`` the gradient of ``log beta`` at the sample); ``mu -= lr_mu gm / ||gm||``
    and ``log_std -= lr_l gl / ||gl||`` (a zero direction leaves its row); then ``xi = z`` and
    ``sample = mu + exp(log_std) z`` with ``z`` the normals at ``offset + (b N + n) d + i``. A
    non-finite norm sets the gradient flag and makes its row NaN. Updates ``mu``, ``log_std``,
    ``xi`` in place and writes ``sample``."""
    B, N, d = mu.shape
    f = lambda t: t.to(torch.float64)  # noqa: E731
    g = f(grad)
    std = torch.exp(f(log_std))
    gm = (f(mu) - f(m)) - var * g
    gl = std * std - var - var * g * std * f(xi)
    coefs = []
    for direction, lr in ((gm, lr_mu), (gl, lr_l)):
        norm = torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
        finite = torch.isfinite(norm)
        if not bool(finite.all()):
            _or_flag(flags, FLAG_GRADIENT_NONFINITE)
        coef = torch.where(norm > 0, lr / norm.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(norm))
        coefs.append(torch.where(finite, coef, math.nan))
    new_mu = f(mu) - coefs[0] * gm
    new_l = f(log_std) - coefs[1] * gl
    z = _noise(seed, offset, (B, N, d), mu.device)
    sample.copy_(new_mu + torch.exp(new_l) * z)
    mu.copy_(new_mu)
    log_std.copy_(new_l)
    xi.copy_(z)
