"""MCGdiff's closed-form auxiliary mutation, reading parents through the ancestor array.

``x'[b, j, i] = K_i c_i + (1 - K_i) m[b, a_j, i] + s_i z``: on coordinates still observed the
Gaussian product of the DDIM kernel ``N(m, sigma^2)`` and the potential ``N(c, v)`` (``K =
sigma^2 / (sigma^2 + v)``, ``s = sqrt(K v)``); on free coordinates ``K = 0`` and ``s = sigma``. The
resampled population is never written: the kernel gathers ``m[b, a_j]`` as it reads.
"""

from __future__ import annotations

import torch

from . import _backends, _validate
from .noise import resolve_seed


def auxiliary_mutation(
    mean: torch.Tensor,
    gain,
    center,
    noise_scale,
    *,
    ancestors: torch.Tensor | None = None,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``x'[b, j] = K c + (1 - K) mean[b, a_j] + s z`` for every output particle.

    Args:
        mean: ``(Np, d)`` or ``(B, Np, d)`` parent means (float32/float64).
        gain: ``K`` per coordinate: a number, ``(d,)`` or ``(B, d)``.
        center: ``c`` per coordinate (the observation's pull), same forms.
        noise_scale: ``s`` per coordinate, same forms.
        ancestors: ``(N,)`` / ``(B, N)`` int32/int64 parent indices in ``[0, Np)`` (e.g. from
            :func:`fkdiff.ops.resample`); None means ``a_j = j``. An index out of range is an
            error (flag) and its row comes out NaN; it is never read out of bounds.
        seed, offset: the noise ``z`` of element ``(b, j, i)`` is Philox normal number
            ``offset + (b N + j) d + i`` of key ``seed`` (see :mod:`fkdiff.ops.noise`); with no
            seed, one is drawn from ``generator``.
        out: ``(N, d)`` / ``(B, N, d)`` output; must not overlap ``mean`` when ancestors are given.

    Returns:
        The new particles, shape ``(B, N, d)`` (or ``(N, d)``), dtype of ``mean``.
    """
    m = _validate.tensor("mean", mean, ndims=(2, 3))
    squeeze = m.dim() == 2
    m3 = _validate.contiguous(m.unsqueeze(0) if squeeze else m)
    B, Np, d = m3.shape
    device, dtype = m3.device, m3.dtype
    anc = None
    N = Np
    if ancestors is not None:
        anc = _validate.tensor("ancestors", ancestors, dtypes=_validate.INDEX_DTYPES, ndims=(m.dim() - 1,))
        _validate.same_device(m3, ancestors=anc)
        anc = _validate.contiguous(anc.unsqueeze(0) if squeeze else anc)
        if anc.shape[0] != B:
            raise ValueError(f"ancestors: expected {B} populations, got shape {tuple(ancestors.shape)}")
        N = anc.shape[1]
    shape = (N, d) if squeeze else (B, N, d)
    result = _validate.output("out", out, shape, dtype, device)
    if anc is not None and N > 0 and result.untyped_storage().data_ptr() == m3.untyped_storage().data_ptr():
        raise ValueError("out: must not share memory with mean when ancestors are given")
    K = _validate.population_vector("gain", gain, B, d, dtype, device)
    c = _validate.population_vector("center", center, B, d, dtype, device)
    s = _validate.population_vector("noise_scale", noise_scale, B, d, dtype, device)
    seed = resolve_seed(seed, generator)
    offset = _validate.seed_value("offset", offset)
    _backends.run(
        device, backend, flags, "auxiliary_mutation",
        lambda module, word: module.mutation(m3, anc, K, c, s, seed, offset, result.view(B, N, d), word),
    )
    return result
