"""Argument checks of the kernel front door: every message names the argument and what was expected.

Policy on memory layout: non-contiguous *inputs* are copied (``.contiguous()``), which is always
correct; a non-contiguous ``out=`` is refused, because writing into a copy would silently lose the
result.
"""

from __future__ import annotations

import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
UINT64_MAX = (1 << 64) - 1


def tensor(name: str, value, *, dtypes=FLOAT_DTYPES, ndims=None) -> torch.Tensor:
    """``value`` as a tensor of one of ``dtypes`` with one of ``ndims`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: dtype {str(value.dtype).replace('torch.', '')} is not supported; expected {names}")
    if ndims is not None and value.dim() not in ndims:
        raise ValueError(
            f"{name}: expected {' or '.join(str(n) for n in ndims)} dimensions, got shape {tuple(value.shape)}"
        )
    return value


def same_device(reference: torch.Tensor, **named) -> None:
    for name, value in named.items():
        if value is not None and value.device != reference.device:
            raise ValueError(f"{name}: on {value.device}, but the other tensors are on {reference.device}")


def contiguous(value: torch.Tensor) -> torch.Tensor:
    return value if value.is_contiguous() else value.contiguous()


def output(name: str, out, shape, dtype, device, dtypes=None) -> torch.Tensor:
    """Check a user's ``out=`` tensor, or allocate one."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(out.shape)}")
    allowed = dtypes if dtypes is not None else (dtype,)
    if out.dtype not in allowed:
        raise TypeError(f"{name}: expected dtype {' or '.join(str(d) for d in allowed)}, got {out.dtype}")
    if out.device != device:
        raise ValueError(f"{name}: on {out.device}, but the inputs are on {device}")
    if not out.is_contiguous():
        raise ValueError(f"{name}: must be contiguous (writing into a copy would lose the result)")
    return out


def population_vector(name: str, value, B: int, m: int, dtype, device) -> torch.Tensor:
    """A per-coordinate parameter as a ``(B, m)`` tensor with batch stride ``m`` or ``0``.

    Accepts a Python number, a ``(m,)`` tensor (shared by every population) or a ``(B, m)`` tensor."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.full((1, m), float(value), dtype=dtype, device=device).expand(B, m)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a number or a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    if value.device != device:
        raise ValueError(f"{name}: on {value.device}, but the other tensors are on {device}")
    if value.dim() == 0:
        return value.to(dtype).reshape(1).expand(m).contiguous().reshape(1, m).expand(B, m)
    if value.dim() == 1:
        if value.shape[0] != m:
            raise ValueError(f"{name}: expected {m} entries (one per coordinate), got {value.shape[0]}")
        return contiguous(value.to(dtype)).reshape(1, m).expand(B, m)
    if value.dim() == 2:
        if tuple(value.shape) == (1, m):
            return contiguous(value.to(dtype)).expand(B, m)
        if tuple(value.shape) != (B, m):
            raise ValueError(f"{name}: expected shape ({m},) or ({B}, {m}), got {tuple(value.shape)}")
        return contiguous(value.to(dtype))
    raise ValueError(f"{name}: expected shape ({m},) or ({B}, {m}), got {tuple(value.shape)}")


def seed_value(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int in [0, 2**64), got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= UINT64_MAX:
        raise ValueError(f"{name}: expected an int in [0, 2**64), got {value}")
    return value


def draw_seed(generator: torch.Generator | None) -> int:
    """One 63-bit key from ``generator`` (the default CPU generator when None).

    A CUDA generator costs one host synchronisation here; pass ``seed=`` in hot loops."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device, dtype=torch.int64).item())


def positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__}")
    value = float(value)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name}: expected a positive finite number, got {value}")
    return value
