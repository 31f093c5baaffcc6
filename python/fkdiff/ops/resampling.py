"""Resampling of B independent weighted populations, in log-weight space.

Schemes, by name (one signature, particles-style registry):

``systematic`` (default)  one uniform ``u`` per population; the lowest variance of the four, the
                         ancestors come out sorted (the row gather then streams), and it is exactly
                         testable: each offspring count is ``floor(N W_i)`` or ``ceil(N W_i)``.
``stratified``            one uniform per output: ``q_j = (j + U_j) / N``.
``multinomial``           N sorted i.i.d. uniforms (from normalised exponential spacings, O(N)).
``residual``              ``floor(N W_i)`` copies of each particle, the remaining ``R`` outputs
                         multinomial on the residual weights ``N W_i - floor(N W_i)``.

Convention: with ``C`` the normalised inclusive cumulative sum of the weights (float64 carries and
total), the ancestor of output j is the smallest i with ``C_i > q_j``; for systematic
``q_j = (j + u) / N``. Every scheme returns sorted ancestors.

Randomness: ``u`` (systematic) may be given per population; otherwise uniforms are drawn from
``generator`` (a ``torch.Generator``; the default generator when None) on the generator's device
and moved to the weights' device.
"""

from __future__ import annotations

import math

import torch

from . import _backends, _validate

SCHEMES = ("systematic", "multinomial", "stratified", "residual")


def _as_batch(name: str, log_weights) -> tuple[torch.Tensor, bool]:
    lw = _validate.tensor(name, log_weights, ndims=(1, 2))
    squeeze = lw.dim() == 1
    lw = lw.unsqueeze(0) if squeeze else lw
    if lw.shape[1] == 0:
        raise ValueError(f"{name}: needs at least one particle, got shape {tuple(log_weights.shape)}")
    return _validate.contiguous(lw), squeeze


def _uniforms(shape, generator, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(shape, generator=generator, dtype=torch.float64, device=gen_device)
    return draws.to(device, non_blocking=True)


def _systematic_u(u, B: int, generator, device) -> torch.Tensor:
    if u is None:
        return _uniforms((B,), generator, device)
    if isinstance(u, (int, float)) and not isinstance(u, bool):
        if not 0.0 <= float(u) < 1.0:
            raise ValueError(f"u: expected a number in [0, 1), got {u}")
        return torch.full((B,), float(u), dtype=torch.float64, device=device)
    u = _validate.tensor("u", u, ndims=(0, 1))
    u = u.reshape(-1).to(device=device, dtype=torch.float64)
    if u.numel() == 1:
        u = u.expand(B)
    if u.shape[0] != B:
        raise ValueError(f"u: expected one offset per population ({B}), got {u.shape[0]}")
    return _validate.contiguous(u)


def _sorted_uniforms(B: int, n: int, generator, device) -> torch.Tensor:
    """(B, n) sorted i.i.d. uniforms on [0, 1): normalised cumulative exponential spacings."""
    e = -torch.log1p(-_uniforms((B, n + 1), generator, device))
    c = torch.cumsum(e, dim=1)
    return (c[:, :n] / c[:, n:]).clamp_(max=math.nextafter(1.0, 0.0))


def _positions(scheme: str, lw: torch.Tensor, generator) -> torch.Tensor:
    """Sorted positions in [0, 1) for the multinomial and stratified schemes."""
    B, N = lw.shape
    device = lw.device
    if scheme == "multinomial":
        return _sorted_uniforms(B, N, generator, device)
    if scheme == "stratified":
        j = torch.arange(N, dtype=torch.float64, device=device)
        return (j + _uniforms((B, N), generator, device)) / N
    raise AssertionError(scheme)


def _residual(lw, generator, ancestors, flags, module, x=None, rows=None) -> None:
    """Residual resampling from validated (B, N) log-weights into ``ancestors`` (and ``rows``)."""
    B, N = lw.shape
    device = lw.device
    stats = torch.empty(B, 3, dtype=torch.float64, device=device)
    module.logsumexp_stats(lw, stats, flags)
    scaled = N * torch.exp(lw.to(torch.float64) - stats[:, :1]) / stats[:, 1:2]
    # A flagged population (stats are NaN) keeps every particle once: identity ancestors.
    scaled = torch.where(torch.isnan(stats[:, 1:2]), 1.0, scaled)
    deterministic = torch.floor(scaled)
    residual = (scaled - deterministic).clamp_(min=0.0)
    R = (N - deterministic.sum(dim=1)).round_().clamp_(0, N).to(torch.int64)  # (B,)
    # R sorted uniforms per population from N + 1 exponential spacings normalised by the R-th sum;
    # only the first R positions of a population are used.
    e = -torch.log1p(-_uniforms((B, N + 1), generator, device))
    c = torch.cumsum(e, dim=1)
    total = torch.gather(c, 1, R[:, None])
    positions = (c[:, :N] / total).clamp_(max=math.nextafter(1.0, 0.0)).contiguous()
    safe = torch.where((R == 0)[:, None], torch.zeros_like(residual), torch.log(residual))
    picks = torch.empty(B, N, dtype=torch.int64, device=device)
    module.resample(safe.to(lw.dtype).contiguous(), picks, flags, positions=positions)
    used = (torch.arange(N, device=device)[None, :] < R[:, None]).to(torch.int64)
    counts = deterministic.to(torch.int64).scatter_add_(1, picks, used)
    ends = torch.cumsum(counts, dim=1)
    result = torch.searchsorted(ends, torch.arange(N, device=device).expand(B, N).contiguous(), right=True)
    ancestors.copy_(result.clamp_(max=N - 1))
    if x is not None:
        rows.copy_(torch.gather(x, 1, ancestors.to(torch.int64)[:, :, None].expand_as(x)))


def _run(lw, scheme, generator, u, ancestors, flags, module, x=None, rows=None) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: unknown resampling scheme {scheme!r}; expected one of {SCHEMES}")
    if u is not None and scheme != "systematic":
        raise ValueError(f"u: only the systematic scheme takes an offset, not {scheme!r}")
    B = lw.shape[0]
    if scheme == "systematic":
        module.resample(lw, ancestors, flags, u=_systematic_u(u, B, generator, lw.device), x=x, rows=rows)
    elif scheme == "residual":
        _residual(lw, generator, ancestors, flags, module, x=x, rows=rows)
    else:
        positions = _positions(scheme, lw, generator)
        module.resample(lw, ancestors, flags, positions=_validate.contiguous(positions), x=x, rows=rows)


def resample(
    log_weights: torch.Tensor,
    scheme: str = "systematic",
    *,
    generator: torch.Generator | None = None,
    u=None,
    out: torch.Tensor | None = None,
    index_dtype: torch.dtype = torch.int64,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ancestor indices of B independent populations.

    Args:
        log_weights: ``(N,)`` or ``(B, N)`` float32/float64 unnormalised log-weights; ``-inf``
            entries are particles of weight zero. NaN, ``+inf`` or a population of all ``-inf``
            is an error (a ``ValueError`` at once on the CPU, at :func:`fkdiff.ops.check_flags`
            on a GPU unless ``flags=`` is given).
        scheme: ``"systematic"`` (default), ``"multinomial"``, ``"stratified"`` or ``"residual"``.
        generator: source of the uniforms when ``u`` is not given.
        u: systematic offset(s) in [0, 1): a number or ``(B,)`` tensor.
        out: optional ``(N,)``/``(B, N)`` int32/int64 contiguous output.
        index_dtype: dtype of the returned ancestors when ``out`` is None (int64: ready for
            ``torch.gather``/``index_select``; int32 halves the bytes).
        backend: force ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"torch"`` (see
            :func:`fkdiff.backends`).
        flags: a ``(1,)`` int32 device tensor collecting error bits instead of raising.

    Returns:
        ``ancestors`` of the shape of ``log_weights``, sorted along the last axis.
    """
    lw, squeeze = _as_batch("log_weights", log_weights)
    if index_dtype not in _validate.INDEX_DTYPES:
        raise TypeError(f"index_dtype: expected torch.int32 or torch.int64, got {index_dtype}")
    dtype = out.dtype if isinstance(out, torch.Tensor) else index_dtype
    ancestors = _validate.output("out", out, log_weights.shape, dtype, lw.device, _validate.INDEX_DTYPES)
    _backends.run(
        lw.device, backend, flags, "resample",
        lambda module, word: _run(lw, scheme, generator, u, ancestors.view(lw.shape), word, module),
    )
    return ancestors


def resample_rows(
    x: torch.Tensor,
    log_weights: torch.Tensor,
    scheme: str = "systematic",
    *,
    generator: torch.Generator | None = None,
    u=None,
    out: torch.Tensor | None = None,
    ancestors_out: torch.Tensor | None = None,
    index_dtype: torch.dtype = torch.int64,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The resampled population itself: ``rows[b, j] = x[b, ancestors[b, j]]`` with the ancestors
    of :func:`resample` (same arguments), gathered in the same kernel.

    Args:
        x: ``(N, d)`` or ``(B, N, d)`` particles (float32/float64; its dtype need not match the
            log-weights'), with ``log_weights`` of shape ``(N,)`` or ``(B, N)``.
        out: optional output for the rows, shape and dtype of ``x``.
        ancestors_out: optional output for the ancestors.

    Returns:
        ``(rows, ancestors)``. For a population flagged invalid, ``rows`` is ``x`` unchanged.
    """
    lw, squeeze = _as_batch("log_weights", log_weights)
    xs = _validate.tensor("x", x, ndims=(2, 3))
    _validate.same_device(lw, x=xs)
    x3 = xs.unsqueeze(0) if xs.dim() == 2 else xs
    if x3.shape[:2] != lw.shape or xs.dim() != log_weights.dim() + 1:
        raise ValueError(
            f"x: shape {tuple(xs.shape)} does not match log_weights {tuple(log_weights.shape)} "
            "(expected x of shape (*log_weights.shape, d))"
        )
    x3 = _validate.contiguous(x3)
    rows = _validate.output("out", out, xs.shape, xs.dtype, lw.device)
    dtype = ancestors_out.dtype if isinstance(ancestors_out, torch.Tensor) else index_dtype
    ancestors = _validate.output("ancestors_out", ancestors_out, log_weights.shape, dtype, lw.device, _validate.INDEX_DTYPES)
    _backends.run(
        lw.device, backend, flags, "resample_rows",
        lambda module, word: _run(lw, scheme, generator, u, ancestors.view(lw.shape), word, module, x=x3, rows=rows.view(x3.shape)),
    )
    return rows, ancestors


def _stats(log_weights, backend, flags, where) -> tuple[torch.Tensor, torch.Tensor, bool]:
    lw, squeeze = _as_batch("log_weights", log_weights)
    stats = torch.empty(lw.shape[0], 3, dtype=torch.float64, device=lw.device)
    _backends.run(lw.device, backend, flags, where, lambda module, word: module.logsumexp_stats(lw, stats, word))
    return lw, stats, squeeze


def ess(log_weights: torch.Tensor, *, backend: str | None = None, flags: torch.Tensor | None = None) -> torch.Tensor:
    """Effective sample size ``(sum w)^2 / sum w^2`` of each population, float64: ``(B,)`` for
    ``(B, N)`` log-weights, a 0-d tensor for ``(N,)``. Computed from the max-shifted sums in float64."""
    _, stats, squeeze = _stats(log_weights, backend, flags, "ess")
    value = stats[:, 1] * stats[:, 1] / stats[:, 2]
    return value[0] if squeeze else value


def log_normalize(
    log_weights: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log_weights - logsumexp(log_weights)`` per population, in the input dtype (the
    log-normaliser is accumulated in float64). ``out`` may be ``log_weights`` itself."""
    lw, stats, squeeze = _stats(log_weights, backend, flags, "log_normalize")
    result = _validate.output("out", out, log_weights.shape, lw.dtype, lw.device)
    log_total = (stats[:, 0] + torch.log(stats[:, 1])).to(lw.dtype)
    torch.sub(lw, log_total[:, None], out=result.view(lw.shape))
    return result


def log_sum_exp(log_weights: torch.Tensor, *, backend: str | None = None, flags: torch.Tensor | None = None) -> torch.Tensor:
    """``log sum exp`` of each population in float64 (``(B,)``, or 0-d for ``(N,)`` input)."""
    _, stats, squeeze = _stats(log_weights, backend, flags, "log_sum_exp")
    value = stats[:, 0] + torch.log(stats[:, 1])
    return value[0] if squeeze else value


def log_sum_exp_and_ess(
    log_weights: torch.Tensor, *, backend: str | None = None, flags: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_sum_exp` and :func:`ess` from one pass over the weights (a sampler step needs
    both: the evidence increment and the ESS trace)."""
    _, stats, squeeze = _stats(log_weights, backend, flags, "log_sum_exp_and_ess")
    lse = stats[:, 0] + torch.log(stats[:, 1])
    value = stats[:, 1] * stats[:, 1] / stats[:, 2]
    return (lse[0], value[0]) if squeeze else (lse, value)
