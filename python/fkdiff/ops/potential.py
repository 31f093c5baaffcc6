"""Gaussian-potential log-weighting, and MCGdiff's fused importance weight.

Both work in the SVD basis of the operator, where the potential is a product over coordinates:
``log g(x) = sum_i -(t_i - a_i x_i)^2 / (2 v_i)`` over a chosen set of coordinates. One pass
over the particles; the sum is accumulated per particle.
"""

from __future__ import annotations

import math

import torch

from . import _backends, _validate


def _particles(name: str, value) -> tuple[torch.Tensor, bool]:
    """``(N, d)`` or ``(B, N, d)`` float particles as a 3-D view (no copy)."""
    x = _validate.tensor(name, value, ndims=(2, 3))
    squeeze = x.dim() == 2
    return (x.unsqueeze(0) if squeeze else x), squeeze


def _select(name: str, x: torch.Tensor, coords) -> torch.Tensor:
    """The coordinates the potential reads, as a view the kernels accept (unit last stride,
    rows ``ld`` apart) whenever possible: all of them, a leading count ``k``, or a ``slice``
    with step 1. An index tensor gathers a copy."""
    if coords is None:
        sel = x
    elif isinstance(coords, bool):
        raise TypeError(f"{name}: coords must be None, an int, a slice or an index tensor")
    elif isinstance(coords, int):
        if not 0 <= coords <= x.shape[-1]:
            raise ValueError(f"coords: expected a count in [0, {x.shape[-1]}], got {coords}")
        sel = x[..., :coords]
    elif isinstance(coords, slice):
        if coords.step not in (None, 1):
            raise ValueError("coords: a slice must have step 1 (use an index tensor otherwise)")
        sel = x[..., coords]
    elif isinstance(coords, torch.Tensor):
        if coords.dtype not in (torch.int32, torch.int64) or coords.dim() != 1:
            raise TypeError("coords: an index tensor must be 1-D int32/int64")
        sel = x.index_select(-1, coords.to(x.device, torch.int64))
    else:
        raise TypeError(f"coords: expected None, an int, a slice or an index tensor, got {type(coords).__name__}")
    # Kernels take rows ld apart with unit stride inside a row: copy anything else.
    B, N, m = sel.shape
    if m > 0 and (sel.stride(2) != 1 or sel.stride(0) != N * sel.stride(1) or sel.stride(1) < m):
        sel = sel.contiguous()
    return sel


def _run(where, x3, terms, out, accumulate, const, backend, flags, squeeze):
    """Validate outputs and constants, call the backend's ``gaussian_potential``."""
    B, N, _ = x3.shape
    device = x3.device
    result = _validate.output("out", out, (N,) if squeeze else (B, N), x3.dtype, device)
    if const is not None:
        if isinstance(const, (int, float)) and not isinstance(const, bool):
            const = torch.full((B,), float(const), dtype=torch.float64, device=device)
        else:
            const = _validate.tensor("const", const, ndims=(0, 1))
            _validate.same_device(x3, const=const)
            const = _validate.contiguous(const.to(torch.float64).reshape(-1).expand(B))
    _backends.run(
        device, backend, flags, where,
        lambda module, word: module.gaussian_potential(
            *terms[0], result.view(B, N), word, accumulate=accumulate, const=const, **terms[1]
        ),
    )
    return result


def _term(prefix, x3, target, scale, var, coords):
    """The (x, t, a, v) of one potential term, checked against each other."""
    sel = _select(f"{prefix}coords", x3, coords)
    B, N, m = sel.shape
    dtype, device = sel.dtype, sel.device
    t = _validate.population_vector(f"{prefix}target", target, B, m, dtype, device)
    a = _validate.population_vector(f"{prefix}scale", 1.0 if scale is None else scale, B, m, dtype, device)
    v = _validate.population_vector(f"{prefix}var", var, B, m, dtype, device)
    return sel, t, a, v


def gaussian_log_potential(
    x: torch.Tensor,
    target,
    var,
    *,
    scale=None,
    coords=None,
    const=None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-particle Gaussian log-potential ``[out] + const + sum_i -(t_i - a_i x_i)^2 / (2 v_i)``.

    Args:
        x: ``(N, d)`` or ``(B, N, d)`` particles, float32/float64.
        target: ``t``: a number, ``(m,)`` (shared) or ``(B, m)`` (one per population).
        var: ``v > 0`` per coordinate (number, ``(m,)`` or ``(B, m)``); ``+inf`` removes a
            coordinate.
        scale: ``a`` per coordinate (default 1).
        coords: which coordinates of ``x`` are weighted: None (all d), an int k (the first k), a
            ``slice`` (read in place, no copy) or an index tensor (gathered into a copy).
        const: a number or ``(B,)`` float64 added per population (e.g. Gaussian normalisers).
        out: ``(N,)`` / ``(B, N)`` output in x's dtype; with ``accumulate=True`` the potential is
            added to its current values (log-weights updated in place).

    Returns:
        ``(N,)`` or ``(B, N)`` log-potentials in x's dtype.
    """
    x3, squeeze = _particles("x", x)
    term = _term("", x3, target, scale, var, coords)
    return _run("gaussian_log_potential", x3, (term, {}), out, accumulate, const, backend, flags, squeeze)


def gaussian_log_normalizer(var: torch.Tensor) -> torch.Tensor:
    """``sum_i -0.5 log(2 pi v_i)`` over the last axis, float64 (``+inf`` entries skipped)."""
    v = var.to(torch.float64)
    return torch.where(torch.isinf(v), 0.0, -0.5 * torch.log(2 * math.pi * v)).sum(-1)


def mcgdiff_log_weight(
    mean: torch.Tensor,
    x: torch.Tensor,
    target_new,
    var_new,
    target_old,
    var_old,
    *,
    coords=None,
    normalized: bool = True,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """MCGdiff's importance weight of a step t -> t' in one pass (MATH.md, MCGdiff step 2):

    ``sum_i log N(target_new_i; mean_i, var_new_i) - log N(x_i; target_old_i, var_old_i)``

    over the coordinates still active after the step (``coords``): the new potential under the
    DDIM kernel's predicted mean (``target_new = sqrt(abar_t') ybar``, ``var_new = sigma^2 +
    v_{t'}``) minus the old potential at the current state (``target_old = sqrt(abar_t) ybar``,
    ``var_old = v_t``).

    Args:
        mean, x: ``(N, d)`` or ``(B, N, d)``, same dtype.
        normalized: include the Gaussian normalising constants (needed for the evidence
            estimate); they are the same for every particle of a population.
        out, accumulate: as in :func:`gaussian_log_potential`.
    """
    m3, squeeze = _particles("mean", mean)
    x3, squeeze_x = _particles("x", x)
    _validate.same_device(m3, x=x3)
    if squeeze != squeeze_x or m3.shape[:2] != x3.shape[:2]:
        raise ValueError(f"x: shape {tuple(x.shape)} does not match mean {tuple(mean.shape)}")
    if m3.dtype != x3.dtype:
        raise TypeError(f"x: dtype {x3.dtype} differs from mean's {m3.dtype}")
    new = _term("", m3, target_new, None, var_new, coords)
    old = _term("", x3, target_old, None, var_old, coords)
    const = None
    if normalized:
        const = gaussian_log_normalizer(new[3]) - gaussian_log_normalizer(old[3])
    extra = dict(x2=old[0], t2=old[1], a2=old[2], v2=old[3])
    return _run("mcgdiff_log_weight", m3, (new, extra), out, accumulate, const, backend, flags, squeeze)
