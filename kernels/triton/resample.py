"""logsumexp statistics and resampling (systematic offsets or sorted positions).

Pipeline (all per population b, particle blocks k of BLOCK log-weights):
  lse_partials   block max m_k, s1_k = sum exp(lw - m_k), s2_k, flag bits; optionally zero-fills
                 the ancestors block
  lse_combine    M, S1, S2, population flag (and the logsumexp_stats output), atomic flags
  blocksum       integer block sums of the quantised weights round(exp(lw - M) 2^52 / S1)
  carries        exclusive integer prefix sums of the block sums (exact, order-free)
  markers        C_i (inclusive, int64), E_i = C_i - w_i, offspring bounds P_i = f(E_i),
                 O_i = f(C_i) (P_{i+1} == O_i exactly); particle i with O_i > P_i stores i at
                 output P_i (distinct addresses, no atomics), and into start[c] for every
                 output block c whose first output it owns (exactly one writer per c)
  apply          ancestors = running maximum over the output block, seeded with start[c],
                 clipped to [0, N - 1]; identity for flagged rows
  gather_rows    rows[b, j] = x[b, ancestors[b, j]]
"""
import triton
import triton.language as tl



@triton.jit
def lse_partials_kernel(lw_ptr, s_lb, N, NB, part_f_ptr, part_bits_ptr,
                        anc_ptr, s_ab,
                        FILL: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    idx = k * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    lw = tl.load(lw_ptr + b * s_lb + idx, mask=mask, other=float("-inf")).to(tl.float64)
    has_nan = tl.max((mask & (lw != lw)).to(tl.int32), axis=0)
    has_pinf = tl.max((mask & (lw == float("inf"))).to(tl.int32), axis=0)
    has_live = tl.max((mask & (lw != float("-inf"))).to(tl.int32), axis=0)
    m_k = tl.max(tl.where(lw == lw, lw, float("-inf")), axis=0)
    live = mask & (lw > float("-inf"))
    e = tl.where(live, tl.exp(tl.where(live, lw - m_k, 0.0)), 0.0)
    s1 = tl.sum(e, axis=0)
    s2 = tl.sum(e * e, axis=0)
    pb = b * NB + k
    tl.store(part_f_ptr + pb * 3 + 0, m_k)
    tl.store(part_f_ptr + pb * 3 + 1, s1)
    tl.store(part_f_ptr + pb * 3 + 2, s2)
    tl.store(part_bits_ptr + pb, has_nan + 2 * has_pinf + 4 * has_live)
    if FILL:
        tl.store(anc_ptr + b * s_ab + idx, tl.zeros([BLOCK], dtype=anc_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def lse_combine_kernel(part_f_ptr, part_bits_ptr, NB, out_ptr, info_ptr, flags_ptr,
                       HAS_OUT: tl.constexpr, CH: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    base = b * NB
    mvec = tl.full([CH], float("-inf"), tl.float64)
    for c0 in range(0, NB, CH):
        kk = c0 + tl.arange(0, CH)
        mk = tl.load(part_f_ptr + (base + kk) * 3, mask=kk < NB, other=float("-inf"))
        mvec = tl.maximum(mvec, mk)
    M = tl.max(mvec, axis=0)
    s1v = tl.zeros([CH], tl.float64)
    s2v = tl.zeros([CH], tl.float64)
    bits_v = tl.zeros([CH], tl.int32)
    for c0 in range(0, NB, CH):
        kk = c0 + tl.arange(0, CH)
        km = kk < NB
        mk = tl.load(part_f_ptr + (base + kk) * 3, mask=km, other=float("-inf"))
        s1k = tl.load(part_f_ptr + (base + kk) * 3 + 1, mask=km, other=0.0)
        s2k = tl.load(part_f_ptr + (base + kk) * 3 + 2, mask=km, other=0.0)
        bk = tl.load(part_bits_ptr + base + kk, mask=km, other=0)
        lv = mk > float("-inf")
        sc = tl.exp(tl.where(lv, mk - M, 0.0))
        s1v += tl.where(lv, s1k * sc, 0.0)
        s2v += tl.where(lv, s2k * sc * sc, 0.0)
        bits_v = bits_v | bk
    S1 = tl.sum(s1v, axis=0)
    S2 = tl.sum(s2v, axis=0)
    has_nan = tl.max(bits_v & 1, axis=0)
    has_pinf = tl.max(bits_v & 2, axis=0)
    has_live = tl.max(bits_v & 4, axis=0)
    pflag = has_nan | has_pinf | tl.where(has_live != 0, 0, 4)
    tl.store(info_ptr + b * 4 + 0, M)
    tl.store(info_ptr + b * 4 + 1, S1)
    tl.store(info_ptr + b * 4 + 2, S2)
    tl.store(info_ptr + b * 4 + 3, pflag.to(tl.float64))
    if HAS_OUT:
        bad = pflag != 0
        tl.store(out_ptr + b * 3 + 0, tl.where(bad, float("nan"), M))
        tl.store(out_ptr + b * 3 + 1, tl.where(bad, float("nan"), S1))
        tl.store(out_ptr + b * 3 + 2, tl.where(bad, float("nan"), S2))
    tl.atomic_or(flags_ptr, pflag, mask=pflag != 0)


@triton.jit
def _quantised_weights(lw_ptr, s_lb, b, idx, mask, info_ptr):
    """w_i = round(exp(lw_i - M) 2^52 / S1) as int64 (0 for -inf and masked lanes), flag.

    The total stays below 2^53, so every partial sum is exact in float64 too (equal weights
    then give exactly the reference's C_i / S = (i + 1) / N).
    """
    M = tl.load(info_ptr + b * 4 + 0)
    S1 = tl.load(info_ptr + b * 4 + 1)
    pflag = tl.load(info_ptr + b * 4 + 3)
    flagged = pflag != 0.0
    scale = tl.where(flagged, 1.0, 4503599627370496.0 / S1)
    lw = tl.load(lw_ptr + b * s_lb + idx, mask=mask, other=float("-inf")).to(tl.float64)
    # (a scalar bool AND-ed with a tensor bool is not int1 under the interpreter: broadcast first)
    ok = (lw * 0.0 + pflag) == 0.0
    live = mask & (lw > float("-inf")) & ok
    e = tl.exp(tl.where(live, lw - M, 0.0))
    # a positive weight keeps at least one quantum (a zero/non-zero weight decides ancestors
    # at q = 0 exactly, e.g. u = 0)
    w = tl.where(live, tl.floor(tl.fma(e, scale, 0.5)), 0.0)
    w = tl.where(live & (e > 0.0), tl.maximum(w, 1.0), w)
    w = tl.minimum(tl.maximum(w, 0.0), 4503599627370496.0)
    return w.to(tl.int64), ok


@triton.jit
def blocksum_kernel(lw_ptr, s_lb, N, NB, info_ptr, part_i_ptr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    idx = k * BLOCK + tl.arange(0, BLOCK)
    w, ok = _quantised_weights(lw_ptr, s_lb, b, idx, idx < N, info_ptr)
    tl.store(part_i_ptr + b * NB + k, tl.sum(w, axis=0))


@triton.jit
def carries_kernel(part_i_ptr, carry_ptr, NB, CH: tl.constexpr):
    """carry[b, 0] = 0, carry[b, k + 1] = sum_{k' <= k} part[b, k'] (exact int64)."""
    b = tl.program_id(0).to(tl.int64)
    running = tl.sum(tl.zeros([CH], tl.int64), axis=0)
    tl.store(carry_ptr + b * (NB + 1), running)
    for c0 in range(0, NB, CH):
        kk = c0 + tl.arange(0, CH)
        km = kk < NB
        v = tl.load(part_i_ptr + b * NB + kk, mask=km, other=0)
        cs = tl.cumsum(v, axis=0) + running
        tl.store(carry_ptr + b * (NB + 1) + 1 + kk, cs, mask=km)
        running = running + tl.sum(v, axis=0)


@triton.jit
def _count_less(row_ptr, x, N, NBITS):
    """#{j < N : row[j] < x} for a sorted row, vectorised over x (binary search)."""
    lo = tl.zeros(x.shape, tl.int64)
    hi = lo + N
    for _ in range(NBITS):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(row_ptr + mid, mask=active & (mid < N), other=float("inf"))
        less = v < x
        lo = tl.where(active & less, mid + 1, lo)
        hi = tl.where(active & (less == 0), mid, hi)
    return lo


@triton.jit
def _offspring_bound(cum, total, N, u, pos_row_ptr, NBITS, SYSTEMATIC: tl.constexpr):
    frac = cum.to(tl.float64) / total
    if SYSTEMATIC:
        # #{j < N : (j + u) / N < frac}, with q_j = (j + u) / N rounded exactly as the
        # reference does: a candidate from ceil(frac N - u), then exact comparisons (the
        # candidate is off by far less than 2).
        o = tl.ceil(frac * N - u)
        o = tl.minimum(tl.maximum(o, 0.0), N * 1.0)
        for _ in tl.static_range(2):
            down = (o > 0.0) & ((o - 1.0 + u) / N >= frac)
            o = tl.where(down, o - 1.0, o)
        for _ in tl.static_range(2):
            up = (o < N * 1.0) & ((o + u) / N < frac)
            o = tl.where(up, o + 1.0, o)
        res = o.to(tl.int64)
    else:
        res = _count_less(pos_row_ptr, frac, N, NBITS)
    return res


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def markers_kernel(lw_ptr, s_lb, N, NB, info_ptr, carry_ptr, u_ptr, pos_ptr, s_pb,
                   anc_ptr, s_ab, start_ptr, NBITS,
                   SYSTEMATIC: tl.constexpr, BLOCK: tl.constexpr):
    """Atomic-free markers.  Particle i with O_i > P_i owns the outputs [P_i, O_i); these ranges
    partition [0, N) exactly (P_{i+1} == O_i in exact integers, P_0 = 0, O_{N-1} = N), so

      * every owner stores i at its first output P_i of the zero-filled ancestors (distinct
        owners have distinct P_i: plain stores, no two programs touch one address), and
      * the owner of each output block's first output j0 = c BLOCK (exactly one particle has
        P_i <= j0 < O_i) stores i into start[b, c].

    apply_kernel then takes a running maximum per output block, seeded with start[b, c].
    """
    k = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    idx = k * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    w, ok = _quantised_weights(lw_ptr, s_lb, b, idx, mask, info_ptr)
    carry = tl.load(carry_ptr + b * (NB + 1) + k)
    total = tl.load(carry_ptr + b * (NB + 1) + NB).to(tl.float64)
    total = tl.where(total > 0.0, total, 1.0)
    C = tl.cumsum(w, axis=0) + carry
    E = C - w
    if SYSTEMATIC:
        u = tl.load(u_ptr + b)
    else:
        u = 0.0
    pos_row = pos_ptr + b * s_pb
    O = _offspring_bound(C, total, N, u, pos_row, NBITS, SYSTEMATIC)
    P = _offspring_bound(E, total, N, u, pos_row, NBITS, SYSTEMATIC)
    O = tl.where(idx == N - 1, N, O)
    positive = mask & (O > P) & ok
    P = tl.where(positive, P, 0)
    O = tl.where(positive, O, 0)
    tl.store(anc_ptr + b * s_ab + P, idx.to(anc_ptr.dtype.element_ty), mask=positive)
    # output blocks c with P <= c BLOCK < O: c in [ceil(P / BLOCK), ceil(O / BLOCK))
    c_first = (P + (BLOCK - 1)) // BLOCK
    n_c = tl.where(positive, (O + (BLOCK - 1)) // BLOCK - c_first, 0)
    srow = start_ptr + b * NB + c_first
    tl.store(srow, idx, mask=n_c > 0)
    n_max = tl.max(n_c, axis=0)
    for t in range(1, n_max):  # only particles with more than BLOCK offspring get here
        tl.store(srow + t, idx, mask=t < n_c)


@triton.jit
def apply_kernel(anc_ptr, s_ab, N, NB, start_ptr, info_ptr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    flagged = tl.load(info_ptr + b * 4 + 3) != 0.0
    carry = tl.load(start_ptr + b * NB + k)
    carry = tl.where(flagged, 0, carry)
    idx = k * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    a = tl.load(anc_ptr + b * s_ab + idx, mask=mask, other=0).to(tl.int32)
    a = tl.maximum(a, carry)
    a = tl.associative_scan(a, 0, _max_combine)
    a = tl.minimum(tl.maximum(a, 0), N - 1)
    a = tl.where(flagged, idx, a)
    tl.store(anc_ptr + b * s_ab + idx, a.to(anc_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gather_rows_kernel(x_ptr, anc_ptr, rows_ptr, N, d, s_xb, s_xn, s_ab, s_rb, s_rn,
                       BR: tl.constexpr, BC: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    j = pid_r * BR + tl.arange(0, BR)
    jm = j < N
    cols = pid_c.to(tl.int64) * BC + tl.arange(0, BC).to(tl.int64)
    cm = cols < d
    a = tl.load(anc_ptr + b * s_ab + j, mask=jm, other=0).to(tl.int64)
    mask = jm[:, None] & cm[None, :]
    v = tl.load(x_ptr + b * s_xb + (a * s_xn)[:, None] + cols[None, :], mask=mask)
    tl.store(rows_ptr + b * s_rb + (j.to(tl.int64) * s_rn)[:, None] + cols[None, :], v, mask=mask)
