"""Tamed Langevin: out = x + gamma g / (1 + gamma |g|) + sqrt(2 gamma) z(offset + (b N + n) d + i)."""
import triton
import triton.language as tl

from .philox import row_tile_noise, seed_words, u64_from_words


@triton.jit
def _gamma(g_hi, g_lo, dtype: tl.constexpr):
    """gamma from its float32 hi/lo words (scalar kernel arguments are float32 on a GPU)."""
    hi = tl.full([], g_hi, tl.float32)
    lo = tl.full([], g_lo, tl.float32)
    if dtype == tl.float64:
        gam = hi.to(tl.float64) + lo.to(tl.float64)
    else:
        gam = hi
    return gam


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "g_hi", "g_lo"])
def langevin_rows_kernel(x_ptr, g_ptr, out_ptr, flags_ptr,
                         R, N, d, s_xb, s_xn, s_gb, s_gn, s_ob, s_on,
                         g_hi, g_lo, seed_lo, seed_hi, off_lo, off_hi,
                         ALIGNED: tl.constexpr, BR: tl.constexpr, G: tl.constexpr):
    """Whole rows in one tile (4 G >= d + 3, or >= d when ALIGNED)."""
    pid_r = tl.program_id(0)
    r32 = pid_r * BR + tl.arange(0, BR)
    rmask = r32 < R
    b32 = r32 // N
    n32 = r32 - b32 * N
    r = r32.to(tl.int64)
    b = b32.to(tl.int64)
    n = n32.to(tl.int64)
    q = tl.arange(0, G).to(tl.int64)
    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    z, i = row_tile_noise(sl, sh, off, r, d, q, ALIGNED)
    mask = rmask[:, None, None] & (i >= 0) & (i < d)
    x_row = b * s_xb + n * s_xn
    g_row = b * s_gb + n * s_gn
    o_row = b * s_ob + n * s_on
    if ALIGNED:
        x_row = tl.multiple_of(x_row, 4)
        g_row = tl.multiple_of(g_row, 4)
        o_row = tl.multiple_of(o_row, 4)
    gv = tl.load(g_ptr + g_row[:, None, None] + i, mask=mask, other=0.0)
    xv = tl.load(x_ptr + x_row[:, None, None] + i, mask=mask, other=0.0)
    dt = gv.dtype
    gam = _gamma(g_hi, g_lo, dt)
    noise_scale = tl.sqrt(2.0 * gam)
    norm = tl.sqrt(tl.sum(tl.sum(gv * gv, axis=2), axis=1))
    res = xv + (gam * gv) / (1.0 + gam * norm)[:, None, None] + noise_scale * z.to(dt)
    tl.store(out_ptr + o_row[:, None, None] + i, res.to(out_ptr.dtype.element_ty), mask=mask)
    nonfinite = rmask & ((norm != norm) | (norm == float("inf")))
    anybad = tl.max(nonfinite.to(tl.int32), axis=0)
    tl.atomic_or(flags_ptr, 32, mask=anybad > 0)


@triton.jit
def langevin_sumsq_kernel(g_ptr, part_ptr, R, N, d, NC, s_gb, s_gn, CHUNK: tl.constexpr):
    """part[r, c] = sum of grad^2 over the columns [c CHUNK, (c + 1) CHUNK) of row r.

    1-D grid over R * NC programs, row-major (a row's chunks are consecutive).
    """
    pid = tl.program_id(0).to(tl.int64)
    r = pid // NC
    c = pid - r * NC
    b = r // N
    n = r - b * N
    i = c * CHUNK + tl.arange(0, CHUNK).to(tl.int64)
    mask = i < d
    gv = tl.load(g_ptr + b * s_gb + n * s_gn + i, mask=mask, other=0.0)
    tl.store(part_ptr + pid, tl.sum(gv * gv, axis=0))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "g_hi", "g_lo"])
def langevin_chunks_kernel(x_ptr, g_ptr, out_ptr, part_ptr, flags_ptr,
                           R, N, d, NC, NG, s_xb, s_xn, s_gb, s_gn, s_ob, s_on,
                           g_hi, g_lo, seed_lo, seed_hi, off_lo, off_hi,
                           ALIGNED: tl.constexpr, G: tl.constexpr, NC_P2: tl.constexpr):
    """Long rows: one program per (row, chunk of G Philox groups); rows' norms from part.

    1-D grid over R * NG programs, run in the reverse order of langevin_sumsq_kernel so that
    the gradient it read last is still in L2.  NG = number of group chunks per row.
    """
    p = (tl.num_programs(0) - 1 - tl.program_id(0)).to(tl.int64)
    r = p // NG
    pid_c = p - r * NG
    b = r // N
    n = r - b * N
    pc = tl.arange(0, NC_P2)
    parts = tl.load(part_ptr + r * NC + pc, mask=pc < NC, other=0.0)
    norm = tl.sqrt(tl.sum(parts, axis=0))
    rr = r + tl.arange(0, 1).to(tl.int64)
    q = pid_c.to(tl.int64) * G + tl.arange(0, G).to(tl.int64)
    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    z, i = row_tile_noise(sl, sh, off, rr, d, q, ALIGNED)
    mask = (i >= 0) & (i < d)
    x_row = b * s_xb + n * s_xn
    g_row = b * s_gb + n * s_gn
    o_row = b * s_ob + n * s_on
    if ALIGNED:
        x_row = tl.multiple_of(x_row, 4)
        g_row = tl.multiple_of(g_row, 4)
        o_row = tl.multiple_of(o_row, 4)
    gv = tl.load(g_ptr + g_row + i, mask=mask, other=0.0)
    xv = tl.load(x_ptr + x_row + i, mask=mask, other=0.0)
    dt = gv.dtype
    gam = _gamma(g_hi, g_lo, dt)
    noise_scale = tl.sqrt(2.0 * gam)
    res = xv + (gam * gv) / (1.0 + gam * norm.to(dt)) + noise_scale * z.to(dt)
    tl.store(out_ptr + o_row + i, res.to(out_ptr.dtype.element_ty), mask=mask)
    bad = ((norm != norm) | (norm == float("inf"))).to(tl.int32) * (pid_c == 0).to(tl.int32)
    tl.atomic_or(flags_ptr, 32, mask=bad != 0)
