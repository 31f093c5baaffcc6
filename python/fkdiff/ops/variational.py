"""DCPS's Gaussian fit: one normalised-gradient step on the mean and log-std, then a fresh draw.

DCPS fits ``r = N(mu, diag(std^2))``, ``std = exp(log_std)``, to ``beta(x') p(x' | x_t)`` by a
few steps on ``-log beta(mu + std xi) + KL(r || N(m, var))`` with one reparameterised sample
``mu + std xi`` per step (MATH.md, DCPS). Given ``g``, the gradient of ``log beta`` at that sample,
the two gradients times ``var`` are

    gm = (mu - m) - var g,        gl = std^2 - var - var g std xi,

and a normalised step moves each by ``lr`` in per-particle L2 norm. The step's next sample needs
fresh normals, so the kernel also draws them: one pass reads ``mu, log_std, m, g, xi`` and
writes ``mu, log_std, xi, sample`` (9 arrays; the unfused chain makes ~20 passes).
"""

from __future__ import annotations

import torch

from . import _backends, _validate
from .noise import resolve_seed


def _nonnegative(name: str, value) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _validate.positive_number(name, value)


def variational_update(
    mu: torch.Tensor,
    log_std: torch.Tensor,
    m: torch.Tensor,
    grad: torch.Tensor,
    xi: torch.Tensor,
    var: float,
    lr_mu: float,
    lr_l: float,
    *,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    sample: torch.Tensor | None = None,
    backend: str | None = None,
    flags: torch.Tensor | None = None,
) -> torch.Tensor:
    """One normalised-gradient step of the Gaussian fit of every particle, then its next sample.

    Args:
        mu, log_std: ``(N, d)`` or ``(B, N, d)`` mean and log standard deviation of each
            particle's Gaussian (float32/float64, contiguous: updated in place).
        m: the prior kernel's mean (the KL term's centre), same shape and dtype.
        grad: the gradient of ``log beta`` at the current sample ``mu + exp(log_std) xi``.
        xi: the normals that made that sample (contiguous; overwritten by the new ones).
        var: the prior kernel's variance (> 0).
        lr_mu, lr_l: step lengths (>= 0) of ``mu`` and ``log_std`` in per-particle L2 norm; a
            particle whose direction is zero keeps its parameter.
        seed, offset: the new normal of element ``(b, n, i)`` is Philox normal number
            ``offset + (b N + n) d + i`` (:mod:`fkdiff.ops.noise`); drawn from ``generator``
            when no seed is given.
        sample: output ``mu + exp(log_std) xi`` after the step (allocated when None; must not
            share memory with the other arguments).

    A non-finite norm (NaN or inf in ``grad``, ``mu`` or ``log_std``) raises
    :class:`~fkdiff.ops.KernelValueError` on the CPU, or sets the gradient bit of ``flags`` on
    a GPU; that particle's outputs are NaN.

    Returns:
        ``sample``.
    """
    mus = _validate.tensor("mu", mu, ndims=(2, 3))
    named = {"log_std": log_std, "m": m, "grad": grad, "xi": xi}
    checked = {name: _validate.tensor(name, value, ndims=(2, 3)) for name, value in named.items()}
    _validate.same_device(mus, **checked)
    for name, value in checked.items():
        if value.shape != mus.shape:
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match mu {tuple(mus.shape)}")
        if value.dtype != mus.dtype:
            raise TypeError(f"{name}: dtype {value.dtype} differs from mu's {mus.dtype}")
    for name, value in (("mu", mus), ("log_std", checked["log_std"]), ("xi", checked["xi"])):
        if not value.is_contiguous():
            raise ValueError(f"{name}: must be contiguous (it is updated in place)")
    var = _validate.positive_number("var", var)
    lr_mu = _nonnegative("lr_mu", lr_mu)
    lr_l = _nonnegative("lr_l", lr_l)
    result = _validate.output("sample", sample, mus.shape, mus.dtype, mus.device)
    owned = {"mu": mus, "log_std": checked["log_std"], "xi": checked["xi"], "m": checked["m"], "grad": checked["grad"]}
    for name, value in owned.items():
        if value.numel() and value.data_ptr() == result.data_ptr():
            raise ValueError(f"sample: must not share memory with {name}")
    if len({t.data_ptr() for t in (mus, checked["log_std"], checked["xi"])}) < 3 and mus.numel():
        raise ValueError("mu, log_std, xi: must be three distinct buffers")
    seed = resolve_seed(seed, generator)
    offset = _validate.seed_value("offset", offset)
    as3 = lambda t: t.unsqueeze(0) if t.dim() == 2 else t  # noqa: E731
    mu3, ls3, xi3 = as3(mus), as3(checked["log_std"]), as3(checked["xi"])
    m3, g3 = as3(_validate.contiguous(checked["m"])), as3(_validate.contiguous(checked["grad"]))
    s3 = as3(result)
    _backends.run(
        mus.device, backend, flags, "variational_update",
        lambda module, word: module.variational_update(mu3, ls3, m3, g3, xi3, var, lr_mu, lr_l, seed, offset, s3, word),
    )
    return result
