"""Colorization: observe the grey level (the mean of the three channels) of every pixel."""

from __future__ import annotations

import torch

from .image_base import DEFAULT_S_MIN, IdentityUOperator, check_x_shape, householder_with_first

__all__ = ["Colorization"]


class Colorization(IdentityUOperator):
    """``y[0, h, w] = (x[0, h, w] + x[1, h, w] + x[2, h, w]) / 3``; ``x_shape = (3, H, W)``,
    ``y_shape = (1, H, W)``.

    SVD, pixel by pixel: with ``Q`` the fixed 3 x 3 orthogonal matrix of
    :func:`~fkdiff.operators.image_base.householder_with_first` (first column
    ``(1, 1, 1) / sqrt(3)``), ``Vt`` lists coefficient 0 of every pixel (row-major), then
    coefficient 1 of every pixel, then coefficient 2 (``D = 3 H W``). The first ``H W`` are
    observed, all with singular value ``1 / sqrt(3)``; ``U`` is the identity (``Ut(y)`` is ``y``
    flattened). ``A`` is the channel mean, ``At`` copies ``y / 3`` into each channel.
    """

    def __init__(self, x_shape):
        x_shape = check_x_shape(x_shape)
        C, H, W = x_shape
        if C != 3:
            raise ValueError(f"x_shape: colorization needs 3 channels, got {C}")
        self._setup(x_shape, (1, H, W), torch.full((H * W,), 3.0**-0.5, dtype=torch.float64), DEFAULT_S_MIN)
        Q = householder_with_first(3)
        self._register(Q=Q, Qt=Q.T)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 3, H, W) -> (batch, 3 H W)``, coefficient-major."""
        self.check_x(x)
        return (self._const("Qt", x) @ x.reshape(x.shape[0], 3, -1)).reshape(x.shape[0], -1)

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        """``(batch, 3 H W) -> (batch, 3, H, W)``."""
        self._check_flat(xbar, self.dim_x, "xbar")
        return (self._const("Q", xbar) @ xbar.view(xbar.shape[0], 3, -1)).view(xbar.shape[0], *self.x_shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """The channel mean, ``(batch, 1, H, W)``."""
        self.check_x(x)
        return x.mean(dim=1, keepdim=True)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """``y / 3`` in each of the three channels."""
        self.check_y(y)
        return (y / 3).expand(y.shape[0], 3, *self.y_shape[1:]).contiguous()

