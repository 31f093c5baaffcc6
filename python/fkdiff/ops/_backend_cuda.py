"""The ``cuda`` backend: the protocol of ``csrc/KERNELS.md`` on CUDA tensors.

Thin glue over the ``cuda_*`` launchers of :mod:`fkdiff._C` (``kernels/cuda/*.cu``): it reads
shapes, strides and data pointers of the (already validated) tensors, passes the caller's current
stream of the tensors' device, and allocates only the small scratch buffers the reductions need
(O(N / 2048) doubles for resampling, one double per (row, 1024 coordinates) for long rows) from
PyTorch's caching allocator on that stream. Nothing is cached between calls, so several devices
can be used in turn. Launches never synchronise with the host; error bits go to ``flags`` on the
device.
"""

from __future__ import annotations

import torch

from fkdiff import _C

__all__ = [
    "logsumexp_stats",
    "resample",
    "gaussian_potential",
    "mutation",
    "tamed_langevin",
    "variational_update",
    "normal",
    "philox",
]

_FLOAT = {torch.float32: 0, torch.float64: 1}
_INDEX = {torch.int32: 0, torch.int64: 1}


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"cuda backend: {message}")


def _cuda(name: str, t: torch.Tensor) -> torch.Tensor:
    _require(isinstance(t, torch.Tensor) and t.is_cuda, f"{name} must be a CUDA tensor")
    return t


def _float_code(name: str, t: torch.Tensor) -> int:
    code = _FLOAT.get(t.dtype)
    _require(code is not None, f"{name}: dtype {t.dtype} is not float32/float64")
    return code


def _index_code(name: str, t: torch.Tensor) -> int:
    code = _INDEX.get(t.dtype)
    _require(code is not None, f"{name}: dtype {t.dtype} is not int32/int64")
    return code


def _contig(name: str, t: torch.Tensor) -> torch.Tensor:
    # The front door passes contiguous inputs; outputs must be written in place.
    _require(t.is_contiguous(), f"{name} must be contiguous")
    return t


def _device_index(t: torch.Tensor) -> int:
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _scratch(nbytes: int, device: torch.device) -> torch.Tensor | None:
    # Freed right after the launch: the caching allocator only hands the block out again for
    # work ordered after ours on the same stream.
    if nbytes <= 0:
        return None
    return torch.empty(int(nbytes), dtype=torch.uint8, device=device)


def _row_vector(name: str, t: torch.Tensor, B: int, m: int, dtype: torch.dtype) -> int:
    """Checks a per-population ``(B, m)`` vector; returns its batch stride (m or 0)."""
    _cuda(name, t)
    _require(tuple(t.shape) == (B, m), f"{name}: expected shape ({B}, {m}), got {tuple(t.shape)}")
    _require(t.dtype == dtype, f"{name}: dtype {t.dtype} differs from {dtype}")
    if m > 1:
        _require(t.stride(1) == 1, f"{name}: last stride must be 1")
    return t.stride(0) if B > 1 else 0


def _flags(flags: torch.Tensor) -> torch.Tensor:
    _cuda("flags", flags)
    _require(flags.dtype == torch.int32 and flags.numel() >= 1, "flags must be a (1,) int32 tensor")
    return flags


# --------------------------------------------------------------------------------------------
# 1. logsumexp_stats
# --------------------------------------------------------------------------------------------


def _log_weights(log_weights: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """A (B, N) CUDA log-weight tensor with unit last stride, and its sizes."""
    lw = _cuda("log_weights", log_weights)
    _require(lw.dim() == 2, "log_weights must be (B, N)")
    B, N = lw.shape
    if N > 1:
        _require(lw.stride(1) == 1, "log_weights: last stride must be 1")
    return lw, B, N


def logsumexp_stats(log_weights: torch.Tensor, out: torch.Tensor, flags: torch.Tensor) -> None:
    lw, B, N = _log_weights(log_weights)
    if B == 0 or N == 0:
        return
    _contig("out", _cuda("out", out))
    _require(out.dtype == torch.float64 and tuple(out.shape) == (B, 3), "out must be (B, 3) float64")
    _flags(flags)
    code = _float_code("log_weights", lw)
    with torch.cuda.device(lw.device):
        scratch = _scratch(_C.cuda_logsumexp_stats_scratch_bytes(B, N), lw.device)
        _C.cuda_logsumexp_stats(
            _device_index(lw), lw.data_ptr(), code, B, N, lw.stride(0), out.data_ptr(), flags.data_ptr(),
            _ptr(scratch), _stream(lw),
        )


# --------------------------------------------------------------------------------------------
# 2. resample
# --------------------------------------------------------------------------------------------


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
    lw, B, N = _log_weights(log_weights)
    if B == 0 or N == 0:
        return
    _contig("ancestors", _cuda("ancestors", ancestors))
    _require(tuple(ancestors.shape) == (B, N), "ancestors must be (B, N)")
    index_code = _index_code("ancestors", ancestors)
    _flags(flags)
    _require((u is None) != (positions is None), "give exactly one of u and positions")
    pos_stride = 0
    if u is not None:
        _contig("u", _cuda("u", u))
        _require(u.dtype == torch.float64 and u.numel() == B, "u must be (B,) float64")
    else:
        _cuda("positions", positions)
        _require(positions.dtype == torch.float64 and tuple(positions.shape) == (B, N), "positions must be (B, N) float64")
        if N > 1:
            _require(positions.stride(1) == 1, "positions: last stride must be 1")
        pos_stride = positions.stride(0)
    _require((x is None) == (rows is None), "give both x and rows, or neither")
    x_code, d = 0, 0
    if x is not None:
        _contig("x", _cuda("x", x))
        _contig("rows", _cuda("rows", rows))
        _require(x.dim() == 3 and tuple(x.shape[:2]) == (B, N), "x must be (B, N, d)")
        _require(rows.shape == x.shape and rows.dtype == x.dtype, "rows must match x")
        x_code = _float_code("x", x)
        d = x.shape[2]
        if d == 0:
            x, rows = None, None
    code = _float_code("log_weights", lw)
    with torch.cuda.device(lw.device):
        scratch = _scratch(_C.cuda_resample_scratch_bytes(B, N), lw.device)
        _C.cuda_resample(
            _device_index(lw), lw.data_ptr(), code, B, N, lw.stride(0), ancestors.data_ptr(), index_code,
            flags.data_ptr(), _ptr(u), _ptr(positions), pos_stride, _ptr(x), _ptr(rows), x_code, d,
            _ptr(scratch), _stream(lw),
        )


# --------------------------------------------------------------------------------------------
# 3. gaussian_potential
# --------------------------------------------------------------------------------------------


def _term(prefix: str, x: torch.Tensor, t, a, v, B: int, N: int, dtype: torch.dtype):
    """(x, ld, m, t, st, a, sa, v, sv) of one quadratic term; x is read through its row stride."""
    _cuda(f"{prefix}x", x)
    _require(x.dim() == 3 and tuple(x.shape[:2]) == (B, N), f"{prefix}x must be (B, N, m)")
    _require(x.dtype == dtype, f"{prefix}x: dtype {x.dtype} differs from {dtype}")
    m = x.shape[2]
    if m == 0:
        return (0, 0, 0, 0, 0, 0, 0, 0, 0), None
    ld = x.stride(1)
    ok = (m == 1 or x.stride(2) == 1) and ld >= m and (B == 1 or x.stride(0) == N * ld)
    if not ok:  # not the (N * ld, ld, 1) layout the kernels read: a packed copy
        x = x.contiguous()
        ld = m
    st = _row_vector(f"{prefix}t", t, B, m, dtype)
    sa = _row_vector(f"{prefix}a", a, B, m, dtype)
    sv = _row_vector(f"{prefix}v", v, B, m, dtype)
    return (x.data_ptr(), ld, m, t.data_ptr(), st, a.data_ptr(), sa, v.data_ptr(), sv), x


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
    _cuda("x", x)
    _require(x.dim() == 3, "x must be (B, N, m)")
    B, N = x.shape[0], x.shape[1]
    if B == 0 or N == 0:
        return
    dtype = x.dtype
    code = _float_code("x", x)
    _contig("out", _cuda("out", out))
    _require(tuple(out.shape) == (B, N) and out.dtype == dtype, "out must be (B, N) in x's dtype")
    _flags(flags)
    term1, keep1 = _term("", x, t, a, v, B, N, dtype)
    has2 = x2 is not None
    term2, keep2 = (_term("2", x2, t2, a2, v2, B, N, dtype) if has2 else ((0, 0, 0, 0, 0, 0, 0, 0, 0), None))
    if const is not None:
        _contig("const", _cuda("const", const))
        _require(const.dtype == torch.float64 and const.numel() == B, "const must be (B,) float64")
    with torch.cuda.device(x.device):
        nbytes = _C.cuda_gaussian_potential_scratch_bytes(B, N, term1[2], term2[2] if has2 else 0)
        scratch = _scratch(nbytes, x.device)
        _C.cuda_gaussian_potential(
            _device_index(x), code, B, N, *term1, has2, *term2, _ptr(const), out.data_ptr(), bool(accumulate),
            flags.data_ptr(), _ptr(scratch), _stream(x),
        )
    del keep1, keep2  # packed copies (if any) live until after the launch is enqueued


# --------------------------------------------------------------------------------------------
# 4. mutation
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
    _contig("m", _cuda("m", m))
    _require(m.dim() == 3, "m must be (B, Np, d)")
    B, Np, d = m.shape
    code = _float_code("m", m)
    _contig("out", _cuda("out", out))
    _require(out.dim() == 3 and out.shape[0] == B and out.shape[2] == d and out.dtype == m.dtype, "out must be (B, N, d)")
    N = out.shape[1]
    index_code = 1
    if ancestors is not None:
        _contig("ancestors", _cuda("ancestors", ancestors))
        _require(tuple(ancestors.shape) == (B, N), "ancestors must be (B, N)")
        index_code = _index_code("ancestors", ancestors)
    else:
        _require(N == Np, "without ancestors out must have Np rows")
    _flags(flags)
    if B == 0 or N == 0 or d == 0:
        return
    sK = _row_vector("K", K, B, d, m.dtype)
    sc = _row_vector("c", c, B, d, m.dtype)
    ss = _row_vector("s", s, B, d, m.dtype)
    with torch.cuda.device(m.device):
        _C.cuda_mutation(
            _device_index(m), code, m.data_ptr(), B, Np, d, _ptr(ancestors), index_code, N, K.data_ptr(), sK,
            c.data_ptr(), sc, s.data_ptr(), ss, int(seed), int(offset), out.data_ptr(), flags.data_ptr(), _stream(m),
        )


# --------------------------------------------------------------------------------------------
# 5. tamed_langevin
# --------------------------------------------------------------------------------------------


def tamed_langevin(
    x: torch.Tensor,
    grad: torch.Tensor,
    gamma: float,
    seed: int,
    offset: int,
    out: torch.Tensor,
    flags: torch.Tensor,
) -> None:
    _contig("x", _cuda("x", x))
    _contig("grad", _cuda("grad", grad))
    _contig("out", _cuda("out", out))
    _require(x.dim() == 3 and grad.shape == x.shape and out.shape == x.shape, "x, grad, out must be (B, N, d)")
    _require(grad.dtype == x.dtype and out.dtype == x.dtype, "x, grad, out must share a dtype")
    _flags(flags)
    B, N, d = x.shape
    if B == 0 or N == 0 or d == 0:
        return
    code = _float_code("x", x)
    with torch.cuda.device(x.device):
        scratch = _scratch(_C.cuda_tamed_langevin_scratch_bytes(B, N, d), x.device)
        _C.cuda_tamed_langevin(
            _device_index(x), code, x.data_ptr(), grad.data_ptr(), B, N, d, float(gamma), int(seed), int(offset),
            out.data_ptr(), flags.data_ptr(), _ptr(scratch), _stream(x),
        )


# --------------------------------------------------------------------------------------------
# 8. variational_update
# --------------------------------------------------------------------------------------------


def variational_update(mu: torch.Tensor, log_std: torch.Tensor, m: torch.Tensor, grad: torch.Tensor,
                       xi: torch.Tensor, var: float, lr_mu: float, lr_l: float, seed: int, offset: int,
                       sample: torch.Tensor, flags: torch.Tensor) -> None:
    named = {"mu": mu, "log_std": log_std, "m": m, "grad": grad, "xi": xi, "sample": sample}
    for name, t in named.items():
        _contig(name, _cuda(name, t))
        _require(t.dim() == 3 and t.shape == mu.shape and t.dtype == mu.dtype,
                 f"{name} must be (B, N, d) like mu, with its dtype")
    _flags(flags)
    B, N, d = mu.shape
    if B * N == 0 or d == 0:
        return
    code = _float_code("mu", mu)
    with torch.cuda.device(mu.device):
        scratch = _scratch(_C.cuda_variational_update_scratch_bytes(B * N, d), mu.device)
        _C.cuda_variational_update(
            _device_index(mu), code, mu.data_ptr(), log_std.data_ptr(), m.data_ptr(), grad.data_ptr(), xi.data_ptr(),
            B * N, d, float(var), float(lr_mu), float(lr_l), int(seed), int(offset), sample.data_ptr(),
            flags.data_ptr(), _ptr(scratch), _stream(mu),
        )


# --------------------------------------------------------------------------------------------
# 6. normal, 7. philox
# --------------------------------------------------------------------------------------------


def normal(out: torch.Tensor, seed: int, offset: int) -> None:
    _contig("out", _cuda("out", out))
    code = _float_code("out", out)
    n = out.numel()
    if n == 0:
        return
    with torch.cuda.device(out.device):
        _C.cuda_normal(_device_index(out), out.data_ptr(), code, n, int(seed), int(offset), _stream(out))


def philox(out: torch.Tensor, seed: int, counter: int) -> None:
    _contig("out", _cuda("out", out))
    _require(out.dtype == torch.int32 and out.dim() == 2 and out.shape[1] == 4, "out must be (n, 4) int32")
    n = out.shape[0]
    if n == 0:
        return
    with torch.cuda.device(out.device):
        _C.cuda_philox(_device_index(out), out.data_ptr(), n, int(seed), int(counter), _stream(out))
