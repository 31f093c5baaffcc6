"""DCPS's tamed unadjusted Langevin step, with the norm per particle.

``x' = x + gamma G / (1 + gamma ||G||) + sqrt(2 gamma) z``: the taming keeps one step of length at
most 1 in the drift whatever the gradient (Brosse et al.'s TULA with the norm per particle).
"""

from __future__ import annotations

import torch

from . import _backends, _validate
from .noise import resolve_seed


def tamed_langevin(
    x: torch.Tensor,
    grad: torch.Tensor,
    gamma: float,
    *,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """One tamed Langevin step for every particle.

    Args:
        x: ``(N, d)`` or ``(B, N, d)`` particles (float32/float64); ``d`` may be a flattened image.
        grad: the gradient of the log-target at ``x``, same shape and dtype.
        gamma: step size > 0.
        seed, offset: noise of element ``(b, n, i)`` is Philox normal number
            ``offset + (b N + n) d + i`` (see :mod:`fkdiff.ops.noise`); drawn from ``generator``
            when no seed is given.
        out: output tensor; ``out=x`` updates in place.

    Returns:
        The moved particles (``out``).
    """
    xs = _validate.tensor("x", x, ndims=(2, 3))
    gs = _validate.tensor("grad", grad, ndims=(2, 3))
    _validate.same_device(xs, grad=gs)
    if gs.shape != xs.shape:
        raise ValueError(f"grad: shape {tuple(gs.shape)} does not match x {tuple(xs.shape)}")
    if gs.dtype != xs.dtype:
        raise TypeError(f"grad: dtype {gs.dtype} differs from x's {xs.dtype}")
    gamma = _validate.positive_number("gamma", gamma)
    result = _validate.output("out", out, xs.shape, xs.dtype, xs.device)
    x3 = xs.unsqueeze(0) if xs.dim() == 2 else xs
    g3 = gs.unsqueeze(0) if gs.dim() == 2 else gs
    in_place = result.data_ptr() == xs.data_ptr() and xs.is_contiguous()
    x3 = _validate.contiguous(x3)
    g3 = _validate.contiguous(g3)
    seed = resolve_seed(seed, generator)
    offset = _validate.seed_value("offset", offset)
    target = x3 if in_place else result.view(x3.shape)
    _backends.run(
        xs.device, backend, flags, "tamed_langevin",
        lambda module, word: module.tamed_langevin(x3, g3, gamma, seed, offset, target, word),
    )
    return result
