"""A plain matrix as an SVD operator (the SVD is computed once, in float64)."""

from __future__ import annotations

import torch

from .base import LinearOperator


class DenseOperator(LinearOperator):
    """``A`` given as a ``(d_y, d_x)`` matrix.

    Args:
        matrix: the operator; its full SVD is computed once in float64.
        s_min: relative cut: singular values below ``s_min * max s`` count as unobserved
            (default 1e-6, MATH.md).
    """

    def __init__(self, matrix: torch.Tensor, s_min: float = 1e-6):
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2:
            raise ValueError(f"matrix: expected shape (d_y, d_x), got {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("matrix: contains NaN or inf")
        self.matrix = matrix.to(torch.float64)
        self.y_shape = (matrix.shape[0],)
        self.x_shape = (matrix.shape[1],)
        U, S, Vh = torch.linalg.svd(self.matrix.cpu(), full_matrices=True)
        cut = float(s_min) * float(S.max()) if S.numel() else 0.0
        rank = int((S > cut).sum()) if S.numel() and float(S.max()) > 0 else 0
        self._s = S[:rank].contiguous()
        self._U = U.to(matrix.device)
        self._V = Vh.T.contiguous().to(matrix.device)
        self._s = self._s.to(matrix.device)

    @property
    def singular_values(self) -> torch.Tensor:
        return self._s

    def V(self, xbar):
        return xbar @ self._V.T.to(xbar.dtype)

    def Vt(self, x):
        self.check_x(x)
        return x @ self._V.to(x.dtype)

    def U(self, ybar):
        return ybar @ self._U.T.to(ybar.dtype)

    def Ut(self, y):
        self.check_y(y)
        return y @ self._U.to(y.dtype)

    def A(self, x):
        self.check_x(x)
        return x @ self.matrix.T.to(x.dtype)

    def At(self, y):
        self.check_y(y)
        return y @ self.matrix.to(y.dtype)

    @property
    def right_singular_vectors(self) -> torch.Tensor:
        """``(d_x, d_x)`` matrix V (columns), float64."""
        return self._V
