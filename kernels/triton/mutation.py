"""Mutation kernel: out[b, j, i] = K c + (1 - K) m[b, a_j, i] + s z(offset + (b N + j) d + i)."""
import triton
import triton.language as tl

from .philox import row_tile_noise, seed_words, u64_from_words


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi"])
def mutation_kernel(m_ptr, anc_ptr, K_ptr, c_ptr, s_ptr, out_ptr, flags_ptr,
                    R, N, Np, d,
                    s_mb, s_mn, s_ab, s_an, s_kb, s_cb, s_sb, s_ob, s_on,
                    seed_lo, seed_hi, off_lo, off_hi,
                    HAS_ANC: tl.constexpr, ALIGNED: tl.constexpr,
                    BR: tl.constexpr, G: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    r32 = pid_r * BR + tl.arange(0, BR)
    rmask = r32 < R
    b32 = r32 // N
    n32 = r32 - b32 * N
    r = r32.to(tl.int64)
    b = b32.to(tl.int64)
    n = n32.to(tl.int64)
    q = pid_c.to(tl.int64) * G + tl.arange(0, G).to(tl.int64)

    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    z, i = row_tile_noise(sl, sh, off, r, d, q, ALIGNED)
    mask = rmask[:, None, None] & (i >= 0) & (i < d)

    if HAS_ANC:
        a = tl.load(anc_ptr + b * s_ab + n * s_an, mask=rmask, other=0).to(tl.int64)
        bad = rmask & ((a < 0) | (a >= Np))
        src = tl.where(bad, 0, a)
        lmask = mask & (bad == 0)[:, None, None]
    else:
        src = n
        lmask = mask
    m_row = b * s_mb + src * s_mn
    o_row = b * s_ob + n * s_on
    if ALIGNED:
        m_row = tl.multiple_of(m_row, 4)
        o_row = tl.multiple_of(o_row, 4)
    mv = tl.load(m_ptr + m_row[:, None, None] + i, mask=lmask, other=0.0)
    bb = b[:, None, None]
    Kv = tl.load(K_ptr + bb * s_kb + i, mask=mask, other=0.0)
    cv = tl.load(c_ptr + bb * s_cb + i, mask=mask, other=0.0)
    sv = tl.load(s_ptr + bb * s_sb + i, mask=mask, other=0.0)
    res = Kv * cv + (1.0 - Kv) * mv + sv * z.to(mv.dtype)
    if HAS_ANC:
        res = tl.where(bad[:, None, None], float("nan"), res)
    tl.store(out_ptr + o_row[:, None, None] + i, res.to(out_ptr.dtype.element_ty), mask=mask)
    if HAS_ANC:
        anybad = tl.max(bad.to(tl.int32), axis=0)
        tl.atomic_or(flags_ptr, 8, mask=anybad > 0)
