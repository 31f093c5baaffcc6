"""Triton backend: the protocol of ``csrc/KERNELS.md`` on the kernels in ``fkdiff.triton``.

Runs CUDA tensors on a GPU, and CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``
set before the first import). Inputs are validated by the front door; this module only picks
block sizes, splits seeds/offsets into 32-bit words and allocates O(N / block) scratch. It never
synchronises with the host.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["logsumexp_stats", "resample", "gaussian_potential", "mutation", "tamed_langevin",
           "variational_update", "normal", "philox"]

_U64 = (1 << 64) - 1

# Elements per program on a GPU, and under the interpreter (where each program costs ~0.5 ms,
# so programs are made as large as the test sizes need).
_GPU_TILE = 2048
_INTERP_TILE = 1 << 16
_GPU_RESAMPLE_BLOCK = 2048
_INTERP_RESAMPLE_BLOCK = 1 << 15
_GPU_LONG_ROW = 8192  # tamed Langevin: rows with more columns take the two-pass path
_GPU_CHUNK = 4096  # ... whose sum-of-squares chunks have this many columns
# Gaussian potential: rows of at least _POT_LONG columns, when the row-tile grid would have fewer
# than _POT_FEW_PROGRAMS programs, are split into column chunks (partials + a finish kernel).
_GPU_POT_LONG = 4096
_GPU_POT_FEW_PROGRAMS = 1024
_GPU_POT_CHUNK = 8192
_INTERP_POT_LONG = 4096
_INTERP_POT_FEW_PROGRAMS = 16
_INTERP_POT_CHUNK = 4096


@functools.lru_cache(maxsize=None)
def _k():
    """The kernel modules, imported lazily (Triton is an optional dependency)."""
    from fkdiff.triton import langevin, mutation, philox, potential, resample, variational  # noqa: PLC0415

    return {"philox": philox, "resample": resample, "potential": potential,
            "mutation": mutation, "langevin": langevin, "variational": variational}


def _np2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _gpu(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


def _w32(x: int) -> int:
    """The low 32 bits of x as a signed int32 value."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= (1 << 31) else x


def _words(v: int) -> tuple[int, int]:
    v = int(v) & _U64
    return _w32(v), _w32(v >> 32)


def _warps(elements: int) -> int:
    return 8 if elements >= 4096 else 4


def _last_unit(*ts) -> None:
    for t in ts:
        if t is not None and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError("triton backend: last dimension must be contiguous")


# ------------------------------------------------------------------------------------------------
# 7 / 6: Philox words and normals
# ------------------------------------------------------------------------------------------------


def philox(out: torch.Tensor, seed: int, counter: int) -> None:
    n = out.shape[0]
    if n == 0:
        return
    block = 1024 if _gpu(out) else _np2(min(n, _INTERP_TILE))
    sl, sh = _words(seed)
    cl, ch = _words(counter)
    _k()["philox"].philox_kernel[(triton_cdiv(n, block),)](out, n, sl, sh, cl, ch, BLOCK=block)


def normal(out: torch.Tensor, seed: int, offset: int) -> None:
    n = out.numel()
    if n == 0:
        return
    gpu = _gpu(out)
    groups = 1024 if gpu else _np2(min((n + 3) // 4 + 1, _INTERP_TILE // 4))
    sl, sh = _words(seed)
    ol, oh = _words(offset)
    grid = (triton_cdiv(n + (int(offset) & 3), 4 * groups),)
    _k()["philox"].normal_kernel[grid](out, n, sl, sh, ol, oh, GROUPS=groups,
                                       ALIGNED=(int(offset) & 3) == 0,
                                       num_warps=8 if gpu else 4)


def triton_cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


# ------------------------------------------------------------------------------------------------
# 1 / 2: logsumexp statistics and resampling
# ------------------------------------------------------------------------------------------------


def _resample_block(lw: torch.Tensor, N: int) -> int:
    if _gpu(lw):
        return min(_GPU_RESAMPLE_BLOCK, max(128, _np2(N)))
    return max(16, _np2(min(N, _INTERP_RESAMPLE_BLOCK)))


def _lse_pass(lw, flags, out, ancestors, block):
    """Partials + combine; returns (info (B, 4) float64 scratch, NB).

    With ``ancestors`` the partials kernel also zero-fills them (the markers' canvas)."""
    R = _k()["resample"]
    B, N = lw.shape
    NB = triton_cdiv(N, block)
    dev = lw.device
    part_f = torch.empty(B * NB * 3, dtype=torch.float64, device=dev)
    part_bits = torch.empty(B * NB, dtype=torch.int32, device=dev)
    info = torch.empty(B * 4, dtype=torch.float64, device=dev)
    fill = ancestors is not None
    anc = ancestors if fill else part_bits
    s_ab = ancestors.stride(0) if fill else 0
    nw = _warps(block) if _gpu(lw) else 4
    R.lse_partials_kernel[(NB, B)](lw, lw.stride(0), N, NB, part_f, part_bits, anc, s_ab,
                                   FILL=fill, BLOCK=block, num_warps=nw)
    ch = 1024 if _gpu(lw) else max(16, _np2(min(NB, 1024)))
    has_out = out is not None
    R.lse_combine_kernel[(B,)](part_f, part_bits, NB, out if has_out else part_f, info, flags,
                               HAS_OUT=has_out, CH=ch, num_warps=4)
    return info, NB


def logsumexp_stats(log_weights: torch.Tensor, out: torch.Tensor, flags: torch.Tensor) -> None:
    B, N = log_weights.shape
    if B == 0:
        return
    if N == 0:  # nothing to reduce: every population is "all -inf"
        out.fill_(float("nan"))
        flags.bitwise_or_(4)
        return
    _last_unit(log_weights)
    _lse_pass(log_weights, flags, out, None, _resample_block(log_weights, N))


def resample(log_weights: torch.Tensor, ancestors: torch.Tensor, flags: torch.Tensor, *, u=None,
             positions=None, x=None, rows=None) -> None:
    B, N = log_weights.shape
    if B == 0 or N == 0:
        return
    _last_unit(log_weights, ancestors, positions, x, rows)
    R = _k()["resample"]
    lw = log_weights
    dev = lw.device
    gpu = _gpu(lw)
    block = _resample_block(lw, N)
    info, NB = _lse_pass(lw, flags, None, ancestors, block)
    nw = _warps(block) if gpu else 4
    part_i = torch.empty(B * NB, dtype=torch.int64, device=dev)
    carry = torch.empty(B * (NB + 1), dtype=torch.int64, device=dev)
    R.blocksum_kernel[(NB, B)](lw, lw.stride(0), N, NB, info, part_i, BLOCK=block, num_warps=nw)
    ch = 1024 if gpu else max(16, _np2(min(NB, 1024)))
    R.carries_kernel[(B,)](part_i, carry, NB, CH=ch, num_warps=4)
    systematic = positions is None
    if systematic:
        u_t, pos_t, s_pb = u, lw, 0
    else:
        u_t, pos_t, s_pb = lw, positions, positions.stride(0)
    nbits = int(N).bit_length() + 1
    # start[b, c]: the owner of output c * block (one writer per entry, every entry written
    # for an unflagged population)
    start = torch.empty(B * NB, dtype=torch.int32, device=dev)
    R.markers_kernel[(NB, B)](lw, lw.stride(0), N, NB, info, carry, u_t, pos_t, s_pb,
                              ancestors, ancestors.stride(0), start, nbits,
                              SYSTEMATIC=systematic, BLOCK=block, num_warps=nw)
    R.apply_kernel[(NB, B)](ancestors, ancestors.stride(0), N, NB, start, info,
                            BLOCK=block, num_warps=nw)
    if x is not None and rows is not None:
        d = x.shape[2]
        if d == 0:
            return
        if gpu:
            bc = min(_np2(d), 1024)
            br = max(1, min(_GPU_TILE // bc, _np2(N)))
        else:
            bc = _np2(min(d, _INTERP_TILE))
            br = max(1, min(_INTERP_TILE // bc, _np2(N)))
        grid = (triton_cdiv(N, br), triton_cdiv(d, bc), B)
        R.gather_rows_kernel[grid](x, ancestors, rows, N, d, x.stride(0), x.stride(1),
                                   ancestors.stride(0), rows.stride(0), rows.stride(1),
                                   BR=br, BC=bc, num_warps=_warps(br * bc) if gpu else 4)


# ------------------------------------------------------------------------------------------------
# 3: Gaussian potential
# ------------------------------------------------------------------------------------------------


def gaussian_potential(x: torch.Tensor, t: torch.Tensor, a: torch.Tensor, v: torch.Tensor,
                       out: torch.Tensor, flags: torch.Tensor, *, accumulate: bool, const=None,
                       x2=None, t2=None, a2=None, v2=None) -> None:
    B, N, m = x.shape
    if B == 0 or N == 0:
        return
    _last_unit(x, t, a, v, out, x2, t2, a2, v2)
    gpu = _gpu(x)
    tile = _GPU_TILE if gpu else _INTERP_TILE
    has_x2 = x2 is not None
    m2 = x2.shape[2] if has_x2 else 0
    bc = max(1, min(_np2(max(m, 1)), 128 if gpu else tile))
    bc2 = max(1, min(_np2(max(m2, 1)), 128 if gpu else tile))
    br = max(1, min(tile // max(bc, bc2), _np2(N)))
    if has_x2:
        x2_, t2_, a2_, v2_ = x2, t2, a2, v2
        s2 = (x2.stride(0), x2.stride(1), t2.stride(0), a2.stride(0), v2.stride(0))
    else:
        x2_, t2_, a2_, v2_ = x, t, a, v
        s2 = (0, 0, 0, 0, 0)
    has_const = const is not None
    grid = (triton_cdiv(N, br), B)
    long_row = _GPU_POT_LONG if gpu else _INTERP_POT_LONG
    few = _GPU_POT_FEW_PROGRAMS if gpu else _INTERP_POT_FEW_PROGRAMS
    if max(m, m2) >= long_row and grid[0] * grid[1] < few:
        _potential_long_rows(x, t, a, v, out, flags, accumulate, const, x2_, t2_, a2_, v2_,
                             m2, s2, has_x2)
        return
    _k()["potential"].potential_kernel[grid](
        x, t, a, v, out, flags, const if has_const else out, x2_, t2_, a2_, v2_,
        N, m, x.stride(0), x.stride(1), t.stride(0), a.stride(0), v.stride(0), out.stride(0),
        m2, *s2,
        ACCUMULATE=bool(accumulate), HAS_CONST=has_const, HAS_X2=has_x2,
        BR=br, BC=bc, BC2=bc2, num_warps=(_warps(br * max(bc, bc2)) if gpu else 4))


def _potential_long_rows(x, t, a, v, out, flags, accumulate, const, x2, t2, a2, v2, m2, s2,
                         has_x2) -> None:
    """Few long rows: (row, column chunk) programs -> float64 partials -> fixed-order finish."""
    P = _k()["potential"]
    B, N, m = x.shape
    gpu = _gpu(x)
    chunk = _GPU_POT_CHUNK if gpu else _INTERP_POT_CHUNK
    bc = min(chunk, 2048 if gpu else chunk)
    nc1 = triton_cdiv(m, chunk)
    nct = nc1 + (triton_cdiv(m2, chunk) if has_x2 else 0)
    R_ = B * N
    nct = max(nct, 1)
    part = torch.empty(R_ * nct, dtype=torch.float64, device=x.device)
    P.potential_partials_kernel[(R_ * nct,)](
        x, t, a, v, part, x2, t2, a2, v2,
        N, m, x.stride(0), x.stride(1), t.stride(0), a.stride(0), v.stride(0),
        m2, *s2, nc1, nct,
        HAS_X2=has_x2, CHUNK=chunk, BC=bc, num_warps=8 if gpu else 4)
    ncp = min(_np2(nct), 64)
    br = max(1, min(_np2(R_), 4096 // ncp if gpu else 1024))
    has_const = const is not None
    P.potential_finish_kernel[(triton_cdiv(R_, br),)](
        part, out, flags, const if has_const else out, R_, N, nct, out.stride(0),
        ACCUMULATE=bool(accumulate), HAS_CONST=has_const, BR=br, NCP=ncp,
        num_warps=4)


# ------------------------------------------------------------------------------------------------
# 4 / 5: mutation and tamed Langevin (row tiles of Philox groups)
# ------------------------------------------------------------------------------------------------


def _aligned(offset: int, d: int, *strides: int) -> bool:
    return (int(offset) & 3) == 0 and d % 4 == 0 and all(s % 4 == 0 for s in strides)


def _row_tiling(R: int, d: int, aligned: bool, gpu: bool, tile: int | None = None):
    """(BR, G, NGC): BR rows x G Philox groups per program (at most ``tile`` elements, default
    the backend's tile), NGC column programs per row.

    On a GPU, BR depends on d alone, never on the number of rows R: a row's sums (the gradient
    norms of tamed Langevin and of the variational step) are reduced in an order the compiled
    block layout fixes, so a call on part of the rows must compile to the same layout as the
    whole call to give the same bits (seen on an H200: BR capped at R changed log_std by an ulp
    when a population was split in two). Under the interpreter numpy's row sums do not depend on
    the block, and BR is capped at R so that small problems do not pay for empty rows."""
    tile = tile or (_GPU_TILE if gpu else _INTERP_TILE)
    groups_row = triton_cdiv(d if aligned else d + 3, 4)
    if 4 * groups_row <= tile:
        G = _np2(groups_row)
        BR = max(1, tile // (4 * G) if gpu else min(tile // (4 * G), _np2(R)))
        return BR, G, 1
    G = tile // 4
    return 1, G, triton_cdiv(groups_row, G)


def mutation(m: torch.Tensor, ancestors, K: torch.Tensor, c: torch.Tensor, s: torch.Tensor,
             seed: int, offset: int, out: torch.Tensor, flags: torch.Tensor) -> None:
    B, Np, d = m.shape
    N = out.shape[1]
    R_ = B * N
    if R_ == 0 or d == 0:
        return
    _last_unit(m, ancestors, K, c, s, out)
    gpu = _gpu(m)
    aligned = _aligned(offset, d, m.stride(0), m.stride(1), out.stride(0), out.stride(1))
    BR, G, NGC = _row_tiling(R_, d, aligned, gpu)
    has_anc = ancestors is not None
    anc = ancestors if has_anc else m
    s_ab, s_an = (ancestors.stride(0), ancestors.stride(1)) if has_anc else (0, 0)
    sl, sh = _words(seed)
    ol, oh = _words(offset)
    grid = (triton_cdiv(R_, BR), NGC)
    _k()["mutation"].mutation_kernel[grid](
        m, anc, K, c, s, out, flags, R_, N, Np, d,
        m.stride(0), m.stride(1), s_ab, s_an, K.stride(0), c.stride(0), s.stride(0),
        out.stride(0), out.stride(1), sl, sh, ol, oh,
        HAS_ANC=has_anc, ALIGNED=aligned, BR=BR, G=G,
        num_warps=_warps(BR * G * 4) if gpu else 4)


def _gamma_words(gamma: float) -> tuple[float, float]:
    """gamma = hi + lo with hi, lo float32 values (kernels rebuild a float64 from both)."""
    g = float(gamma)
    hi = float(torch.tensor(g, dtype=torch.float32))
    lo = float(torch.tensor(g - hi, dtype=torch.float32))
    return hi, lo


def tamed_langevin(x: torch.Tensor, grad: torch.Tensor, gamma: float, seed: int, offset: int,
                   out: torch.Tensor, flags: torch.Tensor) -> None:
    B, N, d = x.shape
    R_ = B * N
    if R_ == 0 or d == 0:
        return
    _last_unit(x, grad, out)
    L = _k()["langevin"]
    gpu = _gpu(x)
    aligned = _aligned(offset, d, x.stride(0), x.stride(1), grad.stride(0), grad.stride(1),
                       out.stride(0), out.stride(1))
    g_hi, g_lo = _gamma_words(gamma)
    sl, sh = _words(seed)
    ol, oh = _words(offset)
    strides = (x.stride(0), x.stride(1), grad.stride(0), grad.stride(1), out.stride(0),
               out.stride(1))
    cols = d if aligned else d + 3
    long_row = _GPU_LONG_ROW if gpu else _INTERP_TILE
    if cols <= long_row:
        tile = max(_GPU_TILE if gpu else _INTERP_TILE, _np2(cols))
        BR, G, _ = _row_tiling(R_, d, aligned, gpu, tile)
        L.langevin_rows_kernel[(triton_cdiv(R_, BR),)](
            x, grad, out, flags, R_, N, d, *strides, g_hi, g_lo, sl, sh, ol, oh,
            ALIGNED=aligned, BR=BR, G=G, num_warps=_warps(BR * G * 4) if gpu else 4)
        return
    chunk = _GPU_CHUNK if gpu else _INTERP_TILE
    NC = triton_cdiv(d, chunk)
    part = torch.empty(R_ * NC, dtype=x.dtype, device=x.device)
    L.langevin_sumsq_kernel[(R_ * NC,)](grad, part, R_, N, d, NC, grad.stride(0), grad.stride(1),
                                        CHUNK=chunk, num_warps=_warps(chunk) if gpu else 4)
    G = (_GPU_TILE if gpu else _INTERP_TILE) // 4
    NG = triton_cdiv(triton_cdiv(cols, 4), G)
    L.langevin_chunks_kernel[(R_ * NG,)](
        x, grad, out, part, flags, R_, N, d, NC, NG, *strides, g_hi, g_lo, sl, sh, ol, oh,
        ALIGNED=aligned, G=G, NC_P2=max(2, _np2(NC)), num_warps=_warps(4 * G) if gpu else 4)


def variational_update(mu: torch.Tensor, log_std: torch.Tensor, m: torch.Tensor, grad: torch.Tensor,
                       xi: torch.Tensor, var: float, lr_mu: float, lr_l: float, seed: int, offset: int,
                       sample: torch.Tensor, flags: torch.Tensor) -> None:
    B, N, d = mu.shape
    R_ = B * N
    if R_ == 0 or d == 0:
        return
    for t in (mu, log_std, m, grad, xi, sample):
        if not t.is_contiguous():
            raise ValueError("triton backend: variational_update needs contiguous arrays")
    V = _k()["variational"]
    gpu = _gpu(mu)
    aligned = _aligned(offset, d)
    scalars = (*_gamma_words(var), *_gamma_words(lr_mu), *_gamma_words(lr_l))
    sl, sh = _words(seed)
    ol, oh = _words(offset)
    arrays = (mu, log_std, m, grad, xi, sample)
    cols = d if aligned else d + 3
    long_row = _GPU_LONG_ROW if gpu else _INTERP_TILE
    if cols <= long_row:
        tile = max(_GPU_TILE if gpu else _INTERP_TILE, _np2(cols))
        BR, G, _ = _row_tiling(R_, d, aligned, gpu, tile)
        V.fit_rows_kernel[(triton_cdiv(R_, BR),)](
            *arrays, flags, R_, d, *scalars, sl, sh, ol, oh,
            ALIGNED=aligned, BR=BR, G=G, num_warps=_warps(BR * G * 4) if gpu else 4)
        return
    chunk = _GPU_CHUNK if gpu else _INTERP_TILE
    NC = triton_cdiv(d, chunk)
    part = torch.empty(2 * R_ * NC, dtype=mu.dtype, device=mu.device)
    V.fit_sums_kernel[(R_ * NC,)](mu, log_std, m, grad, xi, part, R_, d, NC, *scalars[:2],
                                  CHUNK=chunk, num_warps=_warps(chunk) if gpu else 4)
    G = (_GPU_TILE if gpu else _INTERP_TILE) // 4
    NG = triton_cdiv(triton_cdiv(cols, 4), G)
    V.fit_chunks_kernel[(R_ * NG,)](
        *arrays, part, flags, R_, d, NC, NG, *scalars, sl, sh, ol, oh,
        ALIGNED=aligned, G=G, NC_P2=max(2, _np2(NC)), num_warps=_warps(4 * G) if gpu else 4)
