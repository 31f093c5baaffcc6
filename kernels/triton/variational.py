"""DCPS's Gaussian-fit step (protocol 8), per row of (R, d) arrays with std = exp(log_std):

    gm = (mu - m) - var g,  gl = std^2 - var - var g std xi,
    mu -= lr_mu gm / |gm|,  log_std -= lr_l gl / |gl|   (a zero direction: unchanged),
    xi = z(offset + r d + i),  sample = mu + exp(log_std) xi.

Rows that fit one tile take one kernel; longer rows take a sums kernel over column chunks and
then the update (mu, log_std and xi are updated in place, so every row's sums come first).
Scalars arrive as float32 hi/lo word pairs (``langevin._gamma``).
"""
import triton
import triton.language as tl

from .langevin import _gamma
from .philox import row_tile_noise, seed_words, u64_from_words


@triton.jit
def _terms(mu, ls, m, g, xi, var):
    sd = tl.exp(ls)
    gm = (mu - m) - var * g
    gl = sd * (sd - var * g * xi) - var
    return gm, gl


@triton.jit
def _coef(sumsq, lr):
    """lr / sqrt(sumsq), 0 for a zero direction (NaN stays NaN, inf gives NaN via the flag path)."""
    nrm = tl.sqrt(sumsq)
    safe = tl.where(nrm > 0, nrm, 1.0)
    c = tl.where(nrm > 0, lr / safe, 0.0)
    bad = (nrm != nrm) | (nrm == float("inf"))
    return tl.where(bad, float("nan"), c), bad


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "v_hi", "v_lo", "a_hi", "a_lo",
                               "b_hi", "b_lo"])
def fit_rows_kernel(mu_ptr, ls_ptr, m_ptr, g_ptr, xi_ptr, s_ptr, flags_ptr, R, d,
                    v_hi, v_lo, a_hi, a_lo, b_hi, b_lo, seed_lo, seed_hi, off_lo, off_hi,
                    ALIGNED: tl.constexpr, BR: tl.constexpr, G: tl.constexpr):
    """Whole rows in one tile (4 G >= d + 3, or >= d when ALIGNED); contiguous (R, d) arrays."""
    r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
    rmask = r < R
    q = tl.arange(0, G).to(tl.int64)
    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    z, i = row_tile_noise(sl, sh, off, r, d, q, ALIGNED)
    mask = rmask[:, None, None] & (i >= 0) & (i < d)
    row = r * d
    if ALIGNED:
        row = tl.multiple_of(row, 4)
    idx = row[:, None, None] + i
    mu = tl.load(mu_ptr + idx, mask=mask, other=0.0)
    ls = tl.load(ls_ptr + idx, mask=mask, other=0.0)
    m = tl.load(m_ptr + idx, mask=mask, other=0.0)
    g = tl.load(g_ptr + idx, mask=mask, other=0.0)
    xi = tl.load(xi_ptr + idx, mask=mask, other=0.0)
    dt = mu.dtype
    var = _gamma(v_hi, v_lo, dt)
    lr_mu = _gamma(a_hi, a_lo, dt)
    lr_l = _gamma(b_hi, b_lo, dt)
    gm, gl = _terms(mu, ls, m, g, xi, var)
    gm = tl.where(mask, gm, 0.0)
    gl = tl.where(mask, gl, 0.0)
    cm, bad_m = _coef(tl.sum(tl.sum(gm * gm, axis=2), axis=1), lr_mu)
    cl, bad_l = _coef(tl.sum(tl.sum(gl * gl, axis=2), axis=1), lr_l)
    new_mu = mu - cm[:, None, None] * gm
    new_ls = ls - cl[:, None, None] * gl
    zt = z.to(dt)
    tl.store(mu_ptr + idx, new_mu, mask=mask)
    tl.store(ls_ptr + idx, new_ls, mask=mask)
    tl.store(xi_ptr + idx, zt, mask=mask)
    tl.store(s_ptr + idx, new_mu + tl.exp(new_ls) * zt, mask=mask)
    anybad = tl.max((rmask & (bad_m | bad_l)).to(tl.int32), axis=0)
    tl.atomic_or(flags_ptr, 32, mask=anybad > 0)


@triton.jit(do_not_specialize=["v_hi", "v_lo"])
def fit_sums_kernel(mu_ptr, ls_ptr, m_ptr, g_ptr, xi_ptr, part_ptr, R, d, NC, v_hi, v_lo, CHUNK: tl.constexpr):
    """part[(r NC + c) 2 + {0, 1}] = sums of gm^2 and gl^2 over columns [c CHUNK, (c + 1) CHUNK)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid // NC
    c = pid - r * NC
    i = c * CHUNK + tl.arange(0, CHUNK).to(tl.int64)
    mask = i < d
    idx = r * d + i
    mu = tl.load(mu_ptr + idx, mask=mask, other=0.0)
    ls = tl.load(ls_ptr + idx, mask=mask, other=0.0)
    m = tl.load(m_ptr + idx, mask=mask, other=0.0)
    g = tl.load(g_ptr + idx, mask=mask, other=0.0)
    xi = tl.load(xi_ptr + idx, mask=mask, other=0.0)
    var = _gamma(v_hi, v_lo, mu.dtype)
    gm, gl = _terms(mu, ls, m, g, xi, var)
    gm = tl.where(mask, gm, 0.0)
    gl = tl.where(mask, gl, 0.0)
    tl.store(part_ptr + 2 * pid, tl.sum(gm * gm, axis=0))
    tl.store(part_ptr + 2 * pid + 1, tl.sum(gl * gl, axis=0))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "v_hi", "v_lo", "a_hi", "a_lo",
                               "b_hi", "b_lo"])
def fit_chunks_kernel(mu_ptr, ls_ptr, m_ptr, g_ptr, xi_ptr, s_ptr, part_ptr, flags_ptr, R, d, NC, NG,
                      v_hi, v_lo, a_hi, a_lo, b_hi, b_lo, seed_lo, seed_hi, off_lo, off_hi,
                      ALIGNED: tl.constexpr, G: tl.constexpr, NC_P2: tl.constexpr):
    """Long rows: one program per (row, chunk of G Philox groups); the row's sums from part."""
    p = tl.program_id(0).to(tl.int64)
    r = p // NG
    pid_c = p - r * NG
    pc = tl.arange(0, NC_P2)
    sums_m = tl.load(part_ptr + 2 * (r * NC + pc), mask=pc < NC, other=0.0)
    sums_l = tl.load(part_ptr + 2 * (r * NC + pc) + 1, mask=pc < NC, other=0.0)
    rr = r + tl.arange(0, 1).to(tl.int64)
    q = pid_c * G + tl.arange(0, G).to(tl.int64)
    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    z, i = row_tile_noise(sl, sh, off, rr, d, q, ALIGNED)
    mask = (i >= 0) & (i < d)
    row = r * d
    if ALIGNED:
        row = tl.multiple_of(row, 4)
    idx = row + i
    mu = tl.load(mu_ptr + idx, mask=mask, other=0.0)
    ls = tl.load(ls_ptr + idx, mask=mask, other=0.0)
    m = tl.load(m_ptr + idx, mask=mask, other=0.0)
    g = tl.load(g_ptr + idx, mask=mask, other=0.0)
    xi = tl.load(xi_ptr + idx, mask=mask, other=0.0)
    dt = mu.dtype
    var = _gamma(v_hi, v_lo, dt)
    cm, bad_m = _coef(tl.sum(sums_m, axis=0), _gamma(a_hi, a_lo, dt))
    cl, bad_l = _coef(tl.sum(sums_l, axis=0), _gamma(b_hi, b_lo, dt))
    gm, gl = _terms(mu, ls, m, g, xi, var)
    new_mu = mu - cm * gm
    new_ls = ls - cl * gl
    zt = z.to(dt)
    tl.store(mu_ptr + idx, new_mu, mask=mask)
    tl.store(ls_ptr + idx, new_ls, mask=mask)
    tl.store(xi_ptr + idx, zt, mask=mask)
    tl.store(s_ptr + idx, new_mu + tl.exp(new_ls) * zt, mask=mask)
    bad = (bad_m | bad_l).to(tl.int32) * (pid_c == 0).to(tl.int32)
    tl.atomic_or(flags_ptr, 32, mask=bad != 0)
