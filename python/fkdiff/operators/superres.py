"""Super-resolution: downsampling by an integer factor ``r``, ``y_shape = (C, H / r, W / r)``.

* :class:`SuperResolution`: ``r x r`` average pooling. Each block is its own little SVD: singular
  value ``1 / r`` on the block's constant direction, zero on the ``r^2 - 1`` others.
* :class:`BicubicSuperResolution`: antialiased bicubic downsampling (Keys kernel, ``a = -0.5``,
  stretched by ``r``: ``4 r`` taps), separable, with the SVD of the two 1-D matrices.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from .image_base import DEFAULT_S_MIN, IdentityUOperator, KroneckerOperator, check_s_min, check_x_shape, householder_with_first

__all__ = ["SuperResolution", "BicubicSuperResolution", "bicubic_matrix"]


def _check_factor(factor, x_shape) -> int:
    if isinstance(factor, bool):
        raise ValueError(f"factor: expected a positive int, got {factor!r}")
    try:
        r = operator.index(factor)
    except TypeError:
        raise ValueError(f"factor: expected a positive int, got {factor!r}") from None
    if r < 1:
        raise ValueError(f"factor: expected a positive int, got {factor!r}")
    _, H, W = x_shape
    if H % r or W % r:
        raise ValueError(f"factor: {r} must divide the image height and width, got (H, W) = {(H, W)}")
    return r


class SuperResolution(IdentityUOperator):
    """``r x r`` average pooling: ``y[c, i, j] = mean(x[c, r i : r i + r, r j : r j + r])``.

    Args:
        factor: ``r``, a positive int dividing ``H`` and ``W`` (1 gives the identity).
        x_shape: ``(C, H, W)``; ``y_shape = (C, H / r, W / r)``.

    SVD, block by block (``N = C (H / r) (W / r)`` blocks, in ``y``'s flat order): with ``Q`` the
    fixed ``r^2 x r^2`` orthogonal matrix of :func:`householder_with_first` (first column
    ``ones / r``) and a block's pixels in row-major order, ``Vt`` lists coefficient 0 of every
    block, then coefficient 1 of every block, and so on (``D = r^2 N`` entries). The first ``N``
    (the block averages times ``r``) are observed with singular value ``1 / r``; ``U`` is the
    identity (``Ut(y) = y`` flattened). ``A`` is ``avg_pool2d``; ``At`` spreads ``y / r^2`` over
    each block.
    """

    def __init__(self, factor: int, x_shape):
        x_shape = check_x_shape(x_shape)
        r = _check_factor(factor, x_shape)
        C, H, W = x_shape
        self.factor = r
        n_blocks = C * (H // r) * (W // r)
        self._setup(x_shape, (C, H // r, W // r), torch.full((n_blocks,), 1.0 / r, dtype=torch.float64), DEFAULT_S_MIN)
        Q = householder_with_first(r * r)
        self._register(Q=Q, Qt=Q.T)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, r^2, N)``: pixel-in-block index first."""
        C, H, W = self.x_shape
        r = self.factor
        b = x.reshape(x.shape[0], C, H // r, r, W // r, r).permute(0, 3, 5, 1, 2, 4)
        return b.reshape(x.shape[0], r * r, -1)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: ``Q^T`` on each block, coefficient-major."""
        self.check_x(x)
        return (self._const("Qt", x) @ self._blocks(x)).reshape(x.shape[0], -1)

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        """``(batch, D) -> (batch, C, H, W)``."""
        self._check_flat(xbar, self.dim_x, "xbar")
        C, H, W = self.x_shape
        r = self.factor
        b = self._const("Q", xbar) @ xbar.view(xbar.shape[0], r * r, -1)
        b = b.view(xbar.shape[0], r, r, C, H // r, W // r).permute(0, 3, 4, 1, 5, 2)
        return b.reshape(xbar.shape[0], C, H, W)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Block means (``avg_pool2d``)."""
        self.check_x(x)
        if self.factor == 1:
            return x.clone()
        return F.avg_pool2d(x, self.factor)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """Each block receives ``y / r^2``."""
        self.check_y(y)
        C, h, w = self.y_shape
        r = self.factor
        z = (y / (r * r)).reshape(y.shape[0], C, h, 1, w, 1).expand(y.shape[0], C, h, r, w, r)
        return z.reshape(y.shape[0], C, h * r, w * r)


def _keys_cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (support ``|t| < 2``)."""
    t = t.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_matrix(n: int, factor: int, a: float = -0.5) -> torch.Tensor:
    """The ``(n / r, n)`` float64 matrix of 1-D antialiased bicubic downsampling by ``r``.

    Output ``i`` sits at input coordinate ``c_i = (i + 0.5) r - 0.5`` (pixel centres at integers,
    the ``align_corners=False`` / PIL convention); input ``j`` gets weight ``k_a((j - c_i) / r)``
    (Keys kernel stretched by ``r``, so ``4 r`` taps as in PIL's and DDRM's antialiased
    'bicubic'), normalised so that each row sums to 1. Taps outside ``[0, n)`` are reflected
    half-sample symmetrically (``-1 -> 0``, ``n -> n - 1``, as ``numpy.pad(mode='symmetric')``)
    and their weight added to the pixel they land on. In the interior this equals
    ``torch.nn.functional.interpolate(mode='bicubic', antialias=True)`` (which instead drops
    outside taps and renormalises).
    """
    r, m = factor, n // factor
    centres = (torch.arange(m, dtype=torch.float64) + 0.5) * r - 0.5
    base = torch.floor(centres) - 2 * r
    j = base[:, None] + torch.arange(4 * r + 2, dtype=torch.float64)[None, :]  # covers |j - c| < 2r
    w = _keys_cubic((j - centres[:, None]) / r, a)
    w = w / w.sum(1, keepdim=True)
    j = j.long() % (2 * n)
    j = torch.where(j >= n, 2 * n - 1 - j, j)
    rows = torch.arange(m)[:, None].expand_as(j)
    M = torch.zeros(m, n, dtype=torch.float64)
    M.index_put_((rows.reshape(-1), j.reshape(-1)), w.reshape(-1), accumulate=True)
    return M


class BicubicSuperResolution(KroneckerOperator):
    """Antialiased bicubic downsampling by ``r``: ``y_c = B_H x_c B_W^T`` per channel, with
    ``B_n = bicubic_matrix(n, r)`` (Keys kernel ``a = -0.5``, ``4 r`` taps, half-sample symmetric
    reflection at the borders; see :func:`bicubic_matrix`).

    Args:
        factor: ``r``, a positive int dividing ``H`` and ``W``.
        x_shape: ``(C, H, W)``; ``y_shape = (C, H / r, W / r)``.
        s_min: relative cut (default 1e-6, MATH.md): products ``s_h s_w`` below
            ``s_min * max`` count as unobserved.

    SVD: :class:`~fkdiff.operators.image_base.KroneckerOperator` (products of the 1-D singular
    values, sorted globally). ``A``/``At`` apply ``B_H``, ``B_W`` directly.
    """

    def __init__(self, factor: int, x_shape, *, s_min: float = DEFAULT_S_MIN):
        x_shape = check_x_shape(x_shape)
        r = _check_factor(factor, x_shape)
        s_min = check_s_min(s_min)
        _, H, W = x_shape
        self.factor = r
        self._setup_kronecker(bicubic_matrix(H, r), bicubic_matrix(W, r), x_shape, s_min)

