"""Gaussian potential:
out[b, n] = (out if accumulate else 0) + const[b] - sum_i (t - a x)^2 / (2 v) + sum_i (t2 - a2 x2)^2 / (2 v2)
"""
import triton
import triton.language as tl


@triton.jit
def _quad_sum(x_ptr, t_ptr, a_ptr, v_ptr, b, n, nmask, m, s_xb, s_xn, s_tb, s_ab, s_vb,
              BR: tl.constexpr, BC: tl.constexpr):
    """sum_i (t_i - a_i x[b, n, i])^2 / (2 v_i) for the BR rows n (v = +inf contributes 0)."""
    x_row = b * s_xb + n.to(tl.int64) * s_xn
    acc = tl.zeros([BR, BC], dtype=x_ptr.dtype.element_ty)
    for c0 in range(0, m, BC):
        cols = c0 + tl.arange(0, BC)
        cmask = cols < m
        t = tl.load(t_ptr + b * s_tb + cols, mask=cmask, other=0.0)
        a = tl.load(a_ptr + b * s_ab + cols, mask=cmask, other=0.0)
        v = tl.load(v_ptr + b * s_vb + cols, mask=cmask, other=1.0)
        live = cmask & (v != float("inf"))
        w = tl.where(live, 0.5 / v, 0.0)
        xv = tl.load(x_ptr + x_row[:, None] + cols[None, :],
                     mask=nmask[:, None] & cmask[None, :], other=0.0)
        diff = t[None, :] - a[None, :] * xv
        acc += tl.where(live[None, :], diff * diff * w[None, :], 0.0)
    return tl.sum(acc, axis=1)


@triton.jit
def potential_kernel(x_ptr, t_ptr, a_ptr, v_ptr, out_ptr, flags_ptr, const_ptr,
                     x2_ptr, t2_ptr, a2_ptr, v2_ptr,
                     N, m, s_xb, s_xn, s_tb, s_ab, s_vb, s_ob,
                     m2, s_x2b, s_x2n, s_t2b, s_a2b, s_v2b,
                     ACCUMULATE: tl.constexpr, HAS_CONST: tl.constexpr, HAS_X2: tl.constexpr,
                     BR: tl.constexpr, BC: tl.constexpr, BC2: tl.constexpr):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n = pid_n * BR + tl.arange(0, BR)
    nmask = n < N
    q1 = _quad_sum(x_ptr, t_ptr, a_ptr, v_ptr, b, n, nmask, m, s_xb, s_xn, s_tb, s_ab, s_vb,
                   BR, BC)
    res = -q1.to(tl.float64)
    if HAS_X2:
        q2 = _quad_sum(x2_ptr, t2_ptr, a2_ptr, v2_ptr, b, n, nmask, m2, s_x2b, s_x2n,
                       s_t2b, s_a2b, s_v2b, BR, BC2)
        res = res + q2.to(tl.float64)
    if HAS_CONST:
        res = res + tl.load(const_ptr + b).to(tl.float64)
    o_ptrs = out_ptr + b * s_ob + n.to(tl.int64)
    if ACCUMULATE:
        res = res + tl.load(o_ptrs, mask=nmask, other=0.0).to(tl.float64)
    tl.store(o_ptrs, res.to(out_ptr.dtype.element_ty), mask=nmask)
    isnan = nmask & (res != res)
    anybad = tl.max(isnan.to(tl.int32), axis=0)
    tl.atomic_or(flags_ptr, 16, mask=anybad > 0)


# ------------------------------------------------------------------------------------------------
# Long rows (few rows, many columns): a 1-D grid of (row, column chunk) programs writes float64
# partial sums into an O(rows x chunks) scratch; a finish kernel adds them in a fixed order
# (deterministic run to run, no atomics on the sums).
# ------------------------------------------------------------------------------------------------


@triton.jit
def _chunk_quad(x_ptr, t_ptr, a_ptr, v_ptr, b, n, c, m, s_xb, s_xn, s_tb, s_ab, s_vb,
                CHUNK: tl.constexpr, BC: tl.constexpr):
    """sum over the columns [c CHUNK, min((c + 1) CHUNK, m)) of one row (b, n), float64 result."""
    x_row = x_ptr + b * s_xb + n * s_xn
    c0 = c.to(tl.int64) * CHUNK
    acc = tl.zeros([BC], dtype=x_ptr.dtype.element_ty)
    for s0 in tl.static_range(0, CHUNK, BC):
        cols = c0 + s0 + tl.arange(0, BC)
        cmask = cols < m
        t = tl.load(t_ptr + b * s_tb + cols, mask=cmask, other=0.0)
        a = tl.load(a_ptr + b * s_ab + cols, mask=cmask, other=0.0)
        v = tl.load(v_ptr + b * s_vb + cols, mask=cmask, other=1.0)
        live = cmask & (v != float("inf"))
        w = tl.where(live, 0.5 / v, 0.0)
        xv = tl.load(x_row + cols, mask=cmask, other=0.0)
        diff = t - a * xv
        acc += tl.where(live, diff * diff * w, 0.0)
    return tl.sum(acc.to(tl.float64), axis=0)


@triton.jit
def potential_partials_kernel(x_ptr, t_ptr, a_ptr, v_ptr, part_ptr,
                              x2_ptr, t2_ptr, a2_ptr, v2_ptr,
                              N, m, s_xb, s_xn, s_tb, s_ab, s_vb,
                              m2, s_x2b, s_x2n, s_t2b, s_a2b, s_v2b, NC1, NCT,
                              HAS_X2: tl.constexpr, CHUNK: tl.constexpr, BC: tl.constexpr):
    """Program p = row * NCT + c: part[p] = -(chunk c of the first sum) for c < NC1, else
    +(chunk c - NC1 of the second sum)."""
    p = tl.program_id(0).to(tl.int64)
    r = p // NCT
    c = p - r * NCT
    b = r // N
    n = r - b * N
    if HAS_X2:
        if c < NC1:
            res = -_chunk_quad(x_ptr, t_ptr, a_ptr, v_ptr, b, n, c, m, s_xb, s_xn,
                               s_tb, s_ab, s_vb, CHUNK, BC)
        else:
            res = _chunk_quad(x2_ptr, t2_ptr, a2_ptr, v2_ptr, b, n, c - NC1, m2, s_x2b, s_x2n,
                              s_t2b, s_a2b, s_v2b, CHUNK, BC)
    else:
        res = -_chunk_quad(x_ptr, t_ptr, a_ptr, v_ptr, b, n, c, m, s_xb, s_xn,
                           s_tb, s_ab, s_vb, CHUNK, BC)
    tl.store(part_ptr + p, res)


@triton.jit
def potential_finish_kernel(part_ptr, out_ptr, flags_ptr, const_ptr, R, N, NCT, s_ob,
                            ACCUMULATE: tl.constexpr, HAS_CONST: tl.constexpr,
                            BR: tl.constexpr, NCP: tl.constexpr):
    """out[b, n] = (out if accumulate) + const[b] + sum_c part[(b N + n) NCT + c], in the
    order c = 0, 1, ... (fixed: deterministic)."""
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR).to(tl.int64)
    rmask = r < R
    b = r // N
    n = r - b * N
    res = tl.zeros([BR], dtype=tl.float64)
    for c0 in range(0, NCT, NCP):
        cc = c0 + tl.arange(0, NCP).to(tl.int64)
        pm = rmask[:, None] & (cc[None, :] < NCT)
        pv = tl.load(part_ptr + r[:, None] * NCT + cc[None, :], mask=pm, other=0.0)
        res += tl.sum(pv, axis=1)
    if HAS_CONST:
        res = res + tl.load(const_ptr + b, mask=rmask, other=0.0).to(tl.float64)
    o_ptrs = out_ptr + b * s_ob + n
    if ACCUMULATE:
        res = res + tl.load(o_ptrs, mask=rmask, other=0.0).to(tl.float64)
    tl.store(o_ptrs, res.to(out_ptr.dtype.element_ty), mask=rmask)
    isnan = rmask & (res != res)
    anybad = tl.max(isnan.to(tl.int32), axis=0)
    tl.atomic_or(flags_ptr, 16, mask=anybad > 0)
