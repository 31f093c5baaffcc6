"""The SVD protocol every linear operator follows.

An operator ``A: R^{d_x} -> R^{d_y}`` acting on batches ``(batch, *x_shape) -> (batch, *y_shape)``
exposes its singular value decomposition ``A = U S V^T`` matrix-free:

* ``Vt(x)``: ``(batch, *x_shape) -> (batch, d_x)`` spectral coordinates ``xbar = V^T x``; the first
  ``rank`` of them are the observed ones, in the order of :attr:`singular_values` (non-increasing);
  the rest are free.
* ``V(xbar)``: the inverse rotation, ``(batch, d_x) -> (batch, *x_shape)``.
* ``Ut(y)``: ``(batch, *y_shape) -> (batch, d_y)``, first ``rank`` entries paired with the singular
  values; ``U(ybar)`` its inverse.
* ``singular_values``: ``(rank,)`` float64, non-increasing, all above the cut ``s_min`` (values
  below ``1e-6 * max s`` count as unobserved, MATH.md).
* ``A(x) = U(S Vt(x))`` and ``At(y) = V(S^T Ut(y))``.

``V`` and ``U`` must be real and orthogonal. Nothing of size ``d x d`` needs to exist for
matrix-free operators (the image operators of a later release); :class:`DenseOperator` stores its
factors because it is small by nature.
"""

from __future__ import annotations

import math

import torch


class LinearOperator:
    """Base class: subclasses set ``x_shape``, ``y_shape`` and implement the four rotations and
    :attr:`singular_values`; :meth:`A` and :meth:`At` come from them."""

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    @property
    def dim_x(self) -> int:
        return math.prod(self.x_shape)

    @property
    def dim_y(self) -> int:
        return math.prod(self.y_shape)

    @property
    def singular_values(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def rank(self) -> int:
        return int(self.singular_values.numel())

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def U(self, ybar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _scaled(self, spectral: torch.Tensor, out_dim: int) -> torch.Tensor:
        s = self.singular_values.to(spectral.dtype).to(spectral.device)
        out = spectral.new_zeros(spectral.shape[0], out_dim)
        out[:, : self.rank] = s * spectral[:, : self.rank]
        return out

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for a batch ``(batch, *x_shape)``."""
        return self.U(self._scaled(self.Vt(x), self.dim_y))

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for a batch ``(batch, *y_shape)``."""
        return self.V(self._scaled(self.Ut(y), self.dim_x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` (through the subclass's own :meth:`A` when it has a direct form)."""
        return self.A(x)

    def rotated_observation(self, y: torch.Tensor) -> torch.Tensor:
        """``ybar_i = (U^T y)_i / s_i`` on the observed coordinates: ``(batch, rank)``."""
        s = self.singular_values.to(y.dtype).to(y.device)
        return self.Ut(y)[:, : self.rank] / s

    def check_x(self, x: torch.Tensor, name: str = "x") -> None:
        if tuple(x.shape[1:]) != tuple(self.x_shape):
            raise ValueError(f"{name}: expected shape (batch, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        if tuple(y.shape[1:]) != tuple(self.y_shape):
            raise ValueError(f"{name}: expected shape (batch, {', '.join(map(str, self.y_shape))}), got {tuple(y.shape)}")
