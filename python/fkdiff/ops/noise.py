"""The counter-based noise every kernel draws: Philox4x32-10 with Triton's conventions.

Element counter ``e`` (64-bit) -> Philox block ``e >> 2`` with key = seed, counter =
``(lo, hi, 0, 0)``; lane ``e & 3`` of the four normals that Box–Muller makes of its four words
(Triton's ``randn4x``: lanes (0, 1) from words (0, 1), lanes (2, 3) from words (2, 3)). A
``(B, N, d)`` kernel gives element ``(b, n, i)`` the counter ``offset + (b N + n) d + i``, so a
sampler that advances ``offset`` by ``B N d`` per step draws fresh noise each step, and the result
does not depend on chunking, threads or device. Every backend makes the same bits; normals agree to
1e-5 (fast vectorised log/sin/cos), and :func:`fkdiff.ops.reference.normal_like_counter` gives
them in float64.
"""

from __future__ import annotations

import torch

from . import _backends, _validate


def resolve_seed(seed, generator) -> int:
    """``seed`` checked, or one drawn from ``generator`` when ``seed`` is None."""
    if seed is None:
        return _validate.draw_seed(generator)
    if generator is not None:
        raise ValueError("seed: give either seed= or generator=, not both")
    return _validate.seed_value("seed", seed)


def normal(
    n: int,
    *,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    out: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``n`` standard normals ``z(offset), ..., z(offset + n - 1)`` of key ``seed`` (1-D)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    if dtype not in _validate.FLOAT_DTYPES:
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    device = out.device if isinstance(out, torch.Tensor) else torch.device(device)
    result = _validate.output("out", out, (n,), dtype if out is None else out.dtype, device, _validate.FLOAT_DTYPES)
    seed = resolve_seed(seed, generator)
    offset = _validate.seed_value("offset", offset)
    _, module = _backends.resolve(device, backend)
    if n:
        module.normal(result, seed, offset)
    return result


def philox(
    n: int,
    *,
    seed: int,
    counter: int = 0,
    device="cpu",
    out: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The raw words of Philox4x32-10 blocks ``counter, ..., counter + n - 1`` of key ``seed``:
    an ``(n, 4)`` int32 tensor of uint32 bit patterns."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    device = out.device if isinstance(out, torch.Tensor) else torch.device(device)
    result = _validate.output("out", out, (n, 4), torch.int32, device)
    seed = _validate.seed_value("seed", seed)
    counter = _validate.seed_value("counter", counter)
    _, module = _backends.resolve(device, backend)
    if n:
        module.philox(result, seed, counter)
    return result
