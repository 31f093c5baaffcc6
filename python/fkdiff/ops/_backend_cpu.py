"""The ``cpu`` backend: C++ kernels with OpenMP and SIMD in :mod:`fkdiff._C` (``cpu_*``).

Thin glue implementing the protocol of ``csrc/KERNELS.md``: the front door has validated the
arguments and allocated the outputs; this module passes raw pointers, sizes and strides to the
compiled kernels (which release the GIL) with ``torch.get_num_threads()`` as the thread count.
No validation and no allocation here. Which instruction-set path runs: ``fkdiff._C.cpu_isa()``
(``FKDIFF_CPU_ISA=generic|avx2|avx512`` forces a narrower one).
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

_F64 = torch.float64
_I64 = torch.int64


def _code(t: torch.Tensor) -> int:
    return 1 if t.dtype == _F64 else 0


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _bs(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.stride(0)


def logsumexp_stats(log_weights: torch.Tensor, out: torch.Tensor, flags: torch.Tensor) -> None:
    B, N = log_weights.shape
    _C.cpu_logsumexp_stats(log_weights.data_ptr(), out.data_ptr(), flags.data_ptr(), B, N,
                           _code(log_weights), torch.get_num_threads())


def resample(log_weights: torch.Tensor, ancestors: torch.Tensor, flags: torch.Tensor, *, u=None,
             positions=None, x=None, rows=None) -> None:
    B, N = log_weights.shape
    row_bytes = 0
    if x is not None and rows is not None:
        row_bytes = (x.numel() // max(B * N, 1)) * x.element_size()
    _C.cpu_resample(log_weights.data_ptr(), ancestors.data_ptr(), int(ancestors.dtype == _I64),
                    flags.data_ptr(), B, N, _code(log_weights), _ptr(u), _ptr(positions),
                    _ptr(x) if row_bytes else 0, _ptr(rows) if row_bytes else 0, row_bytes,
                    torch.get_num_threads())


def gaussian_potential(x: torch.Tensor, t: torch.Tensor, a: torch.Tensor, v: torch.Tensor,
                       out: torch.Tensor, flags: torch.Tensor, *, accumulate: bool, const=None,
                       x2=None, t2=None, a2=None, v2=None) -> None:
    B, N, m = x.shape
    m2 = x2.shape[2] if x2 is not None else 0
    _C.cpu_gaussian_potential(
        x.data_ptr(), x.stride(1), m, t.data_ptr(), t.stride(0), a.data_ptr(), a.stride(0),
        v.data_ptr(), v.stride(0), out.data_ptr(), _code(out), flags.data_ptr(), B, N, _code(x),
        bool(accumulate), _ptr(const), _ptr(x2), x2.stride(1) if x2 is not None else 0, m2,
        _ptr(t2), _bs(t2), _ptr(a2), _bs(a2), _ptr(v2), _bs(v2), torch.get_num_threads())


def mutation(m: torch.Tensor, ancestors, K: torch.Tensor, c: torch.Tensor, s: torch.Tensor, seed: int,
             offset: int, out: torch.Tensor, flags: torch.Tensor) -> None:
    B, Np, d = m.shape
    N = out.shape[1]
    anc64 = int(ancestors is not None and ancestors.dtype == _I64)
    _C.cpu_mutation(m.data_ptr(), Np, _ptr(ancestors), anc64, K.data_ptr(), K.stride(0), c.data_ptr(),
                    c.stride(0), s.data_ptr(), s.stride(0), int(seed), int(offset), out.data_ptr(),
                    flags.data_ptr(), B, N, d, _code(m), torch.get_num_threads())


def tamed_langevin(x: torch.Tensor, grad: torch.Tensor, gamma: float, seed: int, offset: int,
                   out: torch.Tensor, flags: torch.Tensor) -> None:
    B, N, d = x.shape
    _C.cpu_tamed_langevin(x.data_ptr(), grad.data_ptr(), float(gamma), int(seed), int(offset),
                          out.data_ptr(), flags.data_ptr(), B, N, d, _code(x), torch.get_num_threads())


def variational_update(mu: torch.Tensor, log_std: torch.Tensor, m: torch.Tensor, grad: torch.Tensor,
                       xi: torch.Tensor, var: float, lr_mu: float, lr_l: float, seed: int, offset: int,
                       sample: torch.Tensor, flags: torch.Tensor) -> None:
    B, N, d = mu.shape
    _C.cpu_variational_update(mu.data_ptr(), log_std.data_ptr(), m.data_ptr(), grad.data_ptr(), xi.data_ptr(),
                              float(var), float(lr_mu), float(lr_l), int(seed), int(offset), sample.data_ptr(),
                              flags.data_ptr(), B * N, d, _code(mu), torch.get_num_threads())


def normal(out: torch.Tensor, seed: int, offset: int) -> None:
    _C.cpu_normal(out.data_ptr(), out.numel(), int(seed), int(offset), _code(out), torch.get_num_threads())


def philox(out: torch.Tensor, seed: int, counter: int) -> None:
    _C.cpu_philox(out.data_ptr(), out.shape[0], int(seed), int(counter), torch.get_num_threads())
