"""Philox4x32-10 and the fkdiff element-noise convention as Triton jit helpers.

Bit for bit the generator of csrc/include/fkdiff/philox.h: key (seed_lo, seed_hi), counter
(c_lo, c_hi, 0, 0), 10 rounds.  Seeds and 64-bit offsets travel into kernels as two int32 bit
patterns (lo, hi) so that Triton never specialises them.
"""
import triton
import triton.language as tl

PHILOX_ROUND_A: tl.constexpr = tl.constexpr(0xD2511F53)
PHILOX_ROUND_B: tl.constexpr = tl.constexpr(0xCD9E8D57)
PHILOX_KEY_A: tl.constexpr = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B: tl.constexpr = tl.constexpr(0xBB67AE85)


@triton.jit
def philox4x32_10(seed_lo, seed_hi, c_lo, c_hi):
    """One Philox4x32-10 block per element of the uint32 tensors c_lo / c_hi (same shape).

    seed_lo / seed_hi: uint32 scalars.  Returns four uint32 tensors (w0, w1, w2, w3).
    """
    c0 = c_lo
    c1 = c_hi
    c2 = c_lo * 0
    c3 = c_lo * 0
    k0 = seed_lo + c2
    k1 = seed_hi + c2
    for _ in tl.static_range(10):
        p0 = c0
        p2 = c2
        c0 = tl.umulhi(p2 * 0 + PHILOX_ROUND_B, p2) ^ c1 ^ k0
        c2 = tl.umulhi(p0 * 0 + PHILOX_ROUND_A, p0) ^ c3 ^ k1
        c1 = p2 * PHILOX_ROUND_B
        c3 = p0 * PHILOX_ROUND_A
        k0 = k0 + PHILOX_KEY_A
        k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


@triton.jit
def uint_to_uniform(w):
    """Triton's uint_to_uniform_float for 32-bit words: fold the sign, scale to [0, 1)."""
    x = w.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    return x.to(tl.float32) * 4.6566127342e-10


@triton.jit
def _neg2log(u):
    """-2 log(u) for u in [1e-7, 1) in float32, accurate near u = 1 (series in t = u - 1)."""
    t = u - 1.0  # exact for u >= 0.5
    # log(1 + t) = t - t^2/2 + t^3/3 - t^4/4 + t^5/5 - t^6/6, |t| < 2^-5: truncation < 1e-11
    p = -1.0 / 6.0
    p = p * t + 0.2
    p = p * t - 0.25
    p = p * t + (1.0 / 3.0)
    p = p * t - 0.5
    p = p * t + 1.0
    series = p * t
    direct = tl.log(u)
    lg = tl.where(t > -0.03125, series, direct)
    return -2.0 * lg


@triton.jit
def _sincos_turns(b):
    """(cos(2 pi b), sin(2 pi b)) for b in [0, 1), float32, branch-free (no libdevice range
    reduction): quarter-turn quadrant k = round(4 b) and x = (4 b - k) pi / 2 in [-pi/4, pi/4]
    (4 b - k is exact), then Taylor polynomials (truncation < 3e-9) and a quadrant rotation.
    Absolute error a few float32 ulps of 1."""
    t = b * 4.0
    kf = tl.floor(t + 0.5)
    x = (t - kf) * 1.5707963267948966
    x2 = x * x
    sp = 1.0 / 362880.0
    sp = sp * x2 - 1.0 / 5040.0
    sp = sp * x2 + 1.0 / 120.0
    sp = sp * x2 - 1.0 / 6.0
    sn = x + x * (x2 * sp)
    cp = 1.0 / 40320.0
    cp = cp * x2 - 1.0 / 720.0
    cp = cp * x2 + 1.0 / 24.0
    cp = cp * x2 - 0.5
    cs = 1.0 + x2 * cp
    q = kf.to(tl.int32) & 3
    swap = (q & 1) != 0
    c = tl.where(swap, sn, cs)
    s = tl.where(swap, cs, sn)
    c = tl.where((q == 1) | (q == 2), -c, c)
    s = tl.where(q >= 2, -s, s)
    return c, s


@triton.jit
def box_muller(a, b):
    """(r cos(2 pi b), r sin(2 pi b)), r = sqrt(-2 log(max(a, 1e-7))), float32."""
    a = tl.maximum(a, 1.0e-7)
    r = tl.sqrt(_neg2log(a))
    c, s = _sincos_turns(b)
    return r * c, r * s


@triton.jit
def normals4(seed_lo, seed_hi, g_lo, g_hi):
    """The four normals of Philox block (g_lo, g_hi) (uint32 tensors): Triton's randn4x."""
    w0, w1, w2, w3 = philox4x32_10(seed_lo, seed_hi, g_lo, g_hi)
    u0 = uint_to_uniform(w0)
    u1 = uint_to_uniform(w1)
    u2 = uint_to_uniform(w2)
    u3 = uint_to_uniform(w3)
    z0, z1 = box_muller(u0, u1)
    z2, z3 = box_muller(u2, u3)
    return z0, z1, z2, z3


@triton.jit
def seed_words(seed_lo, seed_hi):
    """int32 bit patterns (kernel scalars) -> uint32 key words."""
    return seed_lo.to(tl.uint32, bitcast=True), seed_hi.to(tl.uint32, bitcast=True)


@triton.jit
def u64_from_words(lo, hi):
    """int32 bit patterns (kernel scalars) -> one uint64 scalar."""
    lo64 = lo.to(tl.uint32, bitcast=True).to(tl.uint64)
    hi64 = hi.to(tl.uint32, bitcast=True).to(tl.uint64)
    return (hi64 << 32) | lo64


@triton.jit
def split_u64(g):
    """uint64 tensor -> (lo, hi) uint32 tensors."""
    return (g & 0xFFFFFFFF).to(tl.uint32), (g >> 32).to(tl.uint32)


@triton.jit
def group_of(g0, q):
    """Philox block (g0 + q) mod 2**62: the block index of a 64-bit counter that wrapped."""
    return (g0 + q.to(tl.uint64)) & 0x3FFFFFFFFFFFFFFF


@triton.jit
def select_lane(z0, z1, z2, z3, lane):
    return tl.where(lane == 0, z0, tl.where(lane == 1, z1, tl.where(lane == 2, z2, z3)))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "ctr_lo", "ctr_hi"])
def philox_kernel(out_ptr, n, seed_lo, seed_hi, ctr_lo, ctr_hi, BLOCK: tl.constexpr):
    """out (n, 4) int32: row k = Philox block counter + k."""
    pid = tl.program_id(0)
    k = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = k < n
    sl, sh = seed_words(seed_lo, seed_hi)
    g = u64_from_words(ctr_lo, ctr_hi) + k.to(tl.uint64)
    g_lo, g_hi = split_u64(g)
    w0, w1, w2, w3 = philox4x32_10(sl, sh, g_lo, g_hi)
    base = out_ptr + k * 4
    tl.store(base + 0, w0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(base + 1, w1.to(tl.int32, bitcast=True), mask=mask)
    tl.store(base + 2, w2.to(tl.int32, bitcast=True), mask=mask)
    tl.store(base + 3, w3.to(tl.int32, bitcast=True), mask=mask)



@triton.jit
def lanes_contiguous(z0, z1, z2, z3):
    """(G,) x 4 -> (4 G,) with element 4 g + l = z_l[g].  join keeps the four lanes of a group
    in one thread (contiguous, vectorisable stores) and computes each group exactly once; a
    broadcast z_l[:, None] against a (G, 4) lane index instead may replicate the whole Philox /
    Box-Muller computation over the threads that hold the lanes."""
    z = tl.join(tl.join(z0, z2), tl.join(z1, z3))  # [g, h, k] = z_{2h + k}: row-major = z0 z1 z2 z3
    return tl.reshape(z, [z0.shape[0] * 4])


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi"])
def normal_kernel(out_ptr, n, seed_lo, seed_hi, off_lo, off_hi, GROUPS: tl.constexpr,
                  ALIGNED: tl.constexpr):
    """out[k] = z(offset + k) for k < n; a program covers GROUPS Philox blocks (4 GROUPS
    elements): one Philox block per 4 outputs, Box-Muller once per pair, contiguous stores.
    ALIGNED: offset % 4 == 0 (element k = 0 is lane 0 of its block)."""
    pid = tl.program_id(0).to(tl.int64)
    sl, sh = seed_words(seed_lo, seed_hi)
    off = u64_from_words(off_lo, off_hi)
    g0 = off >> 2                               # Philox block of element k = 0
    q = pid * GROUPS + tl.arange(0, GROUPS).to(tl.int64)
    g_lo, g_hi = split_u64(group_of(g0, q))
    z0, z1, z2, z3 = normals4(sl, sh, g_lo, g_hi)
    z = lanes_contiguous(z0, z1, z2, z3).to(out_ptr.dtype.element_ty)
    j = tl.arange(0, 4 * GROUPS)
    if ALIGNED:
        base = pid * (4 * GROUPS)               # element index of slot 0
        tl.store(out_ptr + base + j, z, mask=j < n - base)
    else:
        s = (off & 3).to(tl.int64)              # lane of element k = 0
        base = pid * (4 * GROUPS) - s
        tl.store(out_ptr + base + j, z, mask=(j >= -base) & (j < n - base))


@triton.jit
def row_tile_noise(sl, sh, off, r, d, q, ALIGNED: tl.constexpr):
    """Noise for a (BR, G, 4) tile of a row-major (R, d) element array.

    r: (BR,) int64 global rows (b * N + n); q: (G,) int64 Philox-group slots within a row.
    Element (row r, column i) has counter e = off + r * d + i (mod 2**64).  Slot (r, q, l) holds
    column i = 4 q + l - s_r, where s_r = (off + r d) & 3, so that every slot row of 4 is one
    Philox block.  Returns (z float32, i int64), both (BR, G, 4); i may fall outside [0, d).
    When ALIGNED (off % 4 == 0 and d % 4 == 0) s_r = 0.
    """
    e_row = off + r.to(tl.uint64) * d
    g_row = e_row >> 2
    lane = tl.arange(0, 4).to(tl.int64)
    if ALIGNED:
        i = 4 * q[None, :, None] + lane[None, None, :] + 0 * r[:, None, None]
    else:
        s = (e_row & 3).to(tl.int64)
        i = 4 * q[None, :, None] + lane[None, None, :] - s[:, None, None]
    g = (g_row[:, None] + q[None, :].to(tl.uint64)) & 0x3FFFFFFFFFFFFFFF
    g_lo, g_hi = split_u64(g)
    z0, z1, z2, z3 = normals4(sl, sh, g_lo, g_hi)
    z = select_lane(z0[:, :, None], z1[:, :, None], z2[:, :, None], z3[:, :, None],
                    lane[None, None, :])
    return z, i
