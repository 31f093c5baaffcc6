"""Shared machinery of the image operators (``x_shape = (C, H, W)``).

* :class:`ImageOperator`: the common base. It validates shapes, stores the float64 singular
  values on the CPU, and converts its constant tensors (index permutations, small per-axis
  matrices, kernel spectra) lazily to each ``(dtype, device)`` an input arrives in, once.
* :class:`KroneckerOperator`: ``A = A_h ⊗ A_w`` applied to every channel, ``Y_c = A_h X_c A_w^T``,
  with its SVD assembled from the SVDs of the two small 1-D matrices (separable blur, bicubic
  super-resolution).
* :func:`householder_with_first` (an orthogonal matrix whose first column is constant) and
  :func:`cut_rank` (MATH.md's relative cut ``s > s_min * max s``).

Nothing of size ``D x D`` is ever formed: the constants are O(D) index/scale vectors and per-axis
matrices (``H x H``, ``W x W``, ``r^2 x r^2``).
"""

from __future__ import annotations

import math
import operator

import torch

from .base import LinearOperator

__all__ = ["ImageOperator", "KroneckerOperator", "householder_with_first", "cut_rank", "check_x_shape"]

DEFAULT_S_MIN = 1e-6  # MATH.md: singular values below 1e-6 * max s count as unobserved


def check_x_shape(x_shape) -> tuple[int, int, int]:
    """``x_shape`` as a tuple ``(C, H, W)`` of positive ints, or a ValueError naming it."""
    try:
        if any(isinstance(n, bool) for n in x_shape):
            raise TypeError
        shape = tuple(operator.index(n) for n in x_shape)
    except TypeError:
        raise ValueError(f"x_shape: expected (C, H, W) of ints, got {x_shape!r}") from None
    if len(shape) != 3:
        raise ValueError(f"x_shape: expected (C, H, W), got {x_shape!r}")
    if min(shape) < 1:
        raise ValueError(f"x_shape: every size must be positive, got {shape}")
    return shape


def check_s_min(s_min) -> float:
    if isinstance(s_min, bool) or not isinstance(s_min, (int, float)) or not math.isfinite(s_min) or not 0 <= s_min < 1:
        raise ValueError(f"s_min: expected a number in [0, 1), got {s_min!r}")
    return float(s_min)


def cut_rank(s_sorted: torch.Tensor, s_min: float) -> int:
    """Number of leading entries of the non-increasing ``s_sorted`` above ``s_min * s_sorted[0]``
    (0 when all vanish)."""
    if s_sorted.numel() == 0 or float(s_sorted[0]) <= 0:
        return 0
    return int((s_sorted > s_min * float(s_sorted[0])).sum())


def householder_with_first(n: int) -> torch.Tensor:
    """A fixed ``(n, n)`` float64 orthogonal (and symmetric) matrix whose first column is
    ``ones(n) / sqrt(n)``: the Householder reflection that swaps ``e_1`` and that vector. Its other
    columns span the constant vector's orthogonal complement (the directions an average cannot see).
    """
    u = torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)
    w = -u
    w[0] += 1.0
    norm2 = float(w @ w)
    if norm2 < 1e-30:  # n == 1: u is e_1 already
        return torch.eye(n, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64) - (2.0 / norm2) * torch.outer(w, w)


def _check_floating(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor (float32 or float64), got {t.dtype}")


class ImageOperator(LinearOperator):
    """Base of the image operators: ``x`` batches ``(batch, C, H, W)``, spectral coordinates
    ``(batch, D)``.

    Subclasses call :meth:`_setup` with the float64 singular values and register their constant
    tensors (float64, complex128 or int64, on the CPU) with :meth:`_register`; :meth:`_const`
    returns them converted to an input's dtype and device, built once per ``(dtype, device)``.
    Floating constants follow the input's dtype (complex ones its complex counterpart); index
    tensors only its device.
    """

    def _setup(self, x_shape, y_shape, singular_values: torch.Tensor, s_min: float) -> None:
        self.x_shape = tuple(x_shape)
        self.y_shape = tuple(y_shape)
        self.s_min = s_min
        self._s = singular_values.to(torch.float64).cpu().contiguous()
        self._rank = int(self._s.numel())
        if not hasattr(self, "_masters"):
            self._masters = {}
        self._masters["s"] = self._s
        self._cache: dict = {}

    def _register(self, **tensors: torch.Tensor) -> None:
        if not hasattr(self, "_masters"):
            self._masters = {}
        for name, t in tensors.items():
            self._masters[name] = t.detach().cpu().contiguous()

    def _const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        master = self._masters[name]
        if master.is_floating_point():
            dtype = like.dtype
        elif master.is_complex():
            dtype = torch.complex128 if like.dtype in (torch.float64, torch.complex128) else torch.complex64
        else:
            dtype = master.dtype
        key = (name, dtype, like.device)
        t = self._cache.get(key)
        if t is None:
            t = master.to(device=like.device, dtype=dtype).contiguous()
            self._cache[key] = t
        return t

    @property
    def singular_values(self) -> torch.Tensor:
        """``(rank,)`` float64 on the CPU, non-increasing, all above ``s_min * max s``."""
        return self._s

    @property
    def rank(self) -> int:
        return self._rank

    def _scaled(self, spectral: torch.Tensor, out_dim: int) -> torch.Tensor:
        """``S`` (or ``S^T``) on spectral coordinates, with the cached singular values."""
        out = spectral.new_zeros(spectral.shape[0], out_dim)
        r = self._rank
        out[:, :r] = spectral[:, :r] * self._const("s", spectral)
        return out

    # input checks: shapes as the base's check_x / check_y, plus a floating dtype
    def check_x(self, x: torch.Tensor, name: str = "x") -> None:
        super().check_x(x, name)
        _check_floating(x, name)

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        super().check_y(y, name)
        _check_floating(y, name)

    def _check_flat(self, v: torch.Tensor, dim: int, name: str) -> None:
        if v.dim() != 2 or v.shape[1] != dim:
            raise ValueError(f"{name}: expected shape (batch, {dim}), got {tuple(v.shape)}")
        _check_floating(v, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(x_shape={self.x_shape}, y_shape={self.y_shape}, rank={self.rank})"


class IdentityUOperator(ImageOperator):
    """An image operator whose left singular vectors are the identity (``U = I``): ``Ut``
    flattens ``y`` and ``U`` reshapes it back (super-resolution by pooling, colorization,
    denoising)."""

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """``(batch, *y_shape) -> (batch, d_y)``: ``y`` flattened."""
        self.check_y(y)
        return y.reshape(y.shape[0], -1).clone()

    def U(self, ybar: torch.Tensor) -> torch.Tensor:
        self._check_flat(ybar, self.dim_y, "ybar")
        return ybar.reshape(ybar.shape[0], *self.y_shape).clone()


class KroneckerOperator(ImageOperator):
    """``Y_c = A_h X_c A_w^T`` for every channel ``c``, i.e. ``A = I_C ⊗ A_h ⊗ A_w``.

    With full SVDs ``A_h = U_h S_h V_h^T`` (``(m_h, H)``) and ``A_w = U_w S_w V_w^T`` (``(m_w, W)``),
    coefficient ``(c, i, j)`` of ``V_h^T X_c V_w`` has singular value ``s_h[i] * s_w[j]`` (zero when
    ``i >= m_h`` or ``j >= m_w``). These ``D = C H W`` products are sorted once, globally
    (non-increasing, stable, so ties keep channel-major order); ``Vt`` returns the coefficients in
    that order and the first ``rank`` (those above the cut) are the observed ones. ``Ut`` puts the
    matching ``(c, i, j)`` of ``U_h^T Y_c U_w`` first, then the remaining ``d_y - rank`` in
    increasing flat order. ``A``/``At`` apply ``A_h``, ``A_w`` directly (``O(D (H + W))``
    matmuls; they are the exact operator, whereas ``U S V^T`` is the truncated one: the two differ
    by at most ``s_min * max s * |x|``).

    The SVDs run once, in float64, on the CPU.
    """

    def _setup_kronecker(self, A_h: torch.Tensor, A_w: torch.Tensor, x_shape, s_min: float) -> None:
        C, H, W = x_shape
        A_h = A_h.to(torch.float64).cpu()
        A_w = A_w.to(torch.float64).cpu()
        m_h, m_w = A_h.shape[0], A_w.shape[0]
        U_h, S_h, Vh_h = torch.linalg.svd(A_h, full_matrices=True)
        U_w, S_w, Vh_w = torch.linalg.svd(A_w, full_matrices=True)
        s_h = torch.zeros(H, dtype=torch.float64)
        s_h[: S_h.numel()] = S_h
        s_w = torch.zeros(W, dtype=torch.float64)
        s_w[: S_w.numel()] = S_w
        grid = torch.outer(s_h, s_w).expand(C, H, W).reshape(-1)
        values, order = torch.sort(grid, descending=True, stable=True)
        rank = cut_rank(values, s_min)
        # the observed (c, i, j) all have i < m_h, j < m_w (their product is > 0)
        obs = order[:rank]
        c, rem = obs // (H * W), obs % (H * W)
        i, j = rem // W, rem % W
        obs_y = (c * m_h + i) * m_w + j
        d_y = C * m_h * m_w
        free_y = torch.ones(d_y, dtype=torch.bool)
        free_y[obs_y] = False
        perm_y = torch.cat([obs_y, free_y.nonzero().flatten()])
        self._setup(x_shape, (C, m_h, m_w), values[:rank], s_min)
        self._register(
            perm_x=order,
            inv_x=torch.argsort(order),
            perm_y=perm_y,
            inv_y=torch.argsort(perm_y),
            Ah=A_h,
            AhT=A_h.T,
            AwT=A_w.T,
            Aw=A_w,
            Vh_h=Vh_h,  # V_h^T
            V_h=Vh_h.T,
            V_w=Vh_w.T,
            Vh_w=Vh_w,  # V_w^T
            Uh_t=U_h.T,
            U_h=U_h,
            U_w=U_w,
            Uw_t=U_w.T,
        )

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: ``V_h^T X_c V_w`` in sorted order."""
        self.check_x(x)
        z = self._const("Vh_h", x) @ (x @ self._const("V_w", x))
        return z.reshape(x.shape[0], -1).index_select(1, self._const("perm_x", x))

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        """``(batch, D) -> (batch, C, H, W)``, the inverse of :meth:`Vt`."""
        self._check_flat(xbar, self.dim_x, "xbar")
        z = xbar.index_select(1, self._const("inv_x", xbar)).view(xbar.shape[0], *self.x_shape)
        return self._const("V_h", xbar) @ (z @ self._const("Vh_w", xbar))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """``(batch, C, m_h, m_w) -> (batch, d_y)``: ``U_h^T Y_c U_w``, observed first."""
        self.check_y(y)
        z = self._const("Uh_t", y) @ (y @ self._const("U_w", y))
        return z.reshape(y.shape[0], -1).index_select(1, self._const("perm_y", y))

    def U(self, ybar: torch.Tensor) -> torch.Tensor:
        """``(batch, d_y) -> (batch, C, m_h, m_w)``, the inverse of :meth:`Ut`."""
        self._check_flat(ybar, self.dim_y, "ybar")
        z = ybar.index_select(1, self._const("inv_y", ybar)).view(ybar.shape[0], *self.y_shape)
        return self._const("U_h", ybar) @ (z @ self._const("Uw_t", ybar))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """``A_h X_c A_w^T`` (exact, untruncated)."""
        self.check_x(x)
        return self._const("Ah", x) @ (x @ self._const("AwT", x))

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """``A_h^T Y_c A_w``."""
        self.check_y(y)
        return self._const("AhT", y) @ (y @ self._const("Aw", y))
