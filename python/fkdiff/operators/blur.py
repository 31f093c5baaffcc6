"""Deblurring: convolution of every channel with a kernel, ``y_shape = x_shape``.

Convolution convention (both operators): a kernel of size ``k`` has its centre at index
``k // 2`` and ``y[i] = sum_t kernel[t] x[i + k // 2 - t]`` (a true convolution; for odd ``k`` the
centre is the middle tap). This is ``conv2d(x, flip(kernel), padding='same')`` in torch's
cross-correlation terms, even sizes included.

* :class:`Deblurring`: a separable kernel ``kernel_h ⊗ kernel_w`` with **zero padding** and
  'same' output size; ``A = A_h ⊗ A_w`` with ``A_h``, ``A_w`` the banded ``H x H``, ``W x W``
  convolution matrices, and the SVD from theirs (:class:`~fkdiff.operators.image_base.KroneckerOperator`).
* :class:`CircularDeblurring`: any 2-D kernel with **circular** (periodic) boundary, diagonal in
  the Fourier basis; ``V`` is a real orthonormal Fourier basis, everything runs through
  ``torch.fft`` in ``O(D log D)``.
* :func:`gaussian_blur`, :func:`uniform_blur`: the usual kernels, either boundary.

Kernels are normalised to sum 1 by default (``normalize=True``), so that a constant image keeps its
value away from the borders (everywhere, under the circular boundary).
"""

from __future__ import annotations

import math
import operator

import torch

from .image_base import DEFAULT_S_MIN, ImageOperator, KroneckerOperator, check_s_min, check_x_shape, cut_rank

__all__ = ["Deblurring", "CircularDeblurring", "gaussian_blur", "uniform_blur", "convolution_matrix"]


def _check_kernel(kernel, name: str, dims: tuple[int, ...], normalize: bool) -> torch.Tensor:
    """``kernel`` as a float64 CPU tensor: one of ``dims`` dimensions, non-empty, finite,
    non-negative entries, positive sum; scaled to sum 1 when ``normalize``."""
    try:
        k = torch.as_tensor(kernel).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected a tensor, got {type(kernel).__name__}") from None
    if k.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name}: expected a {want} kernel, got shape {tuple(k.shape)}")
    if k.numel() == 0:
        raise ValueError(f"{name}: is empty")
    if k.is_complex() or k.dtype == torch.bool:
        raise ValueError(f"{name}: expected real values, got dtype {k.dtype}")
    k = k.to(torch.float64)
    if not torch.isfinite(k).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if (k < 0).any():
        raise ValueError(f"{name}: entries must be non-negative (a blur kernel)")
    total = float(k.sum())
    if total <= 0:
        raise ValueError(f"{name}: must have a positive sum")
    return k / total if normalize else k.clone()


def convolution_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, n)`` float64 matrix of 1-D 'same' convolution with zero padding:
    ``M[i, j] = kernel[k // 2 + i - j]`` where that index is in ``[0, k)``, else 0."""
    k = kernel.numel()
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    t = k // 2 + i - j
    inside = (t >= 0) & (t < k)
    return torch.where(inside, kernel.to(torch.float64)[t.clamp(0, k - 1)], torch.zeros((), dtype=torch.float64))


class Deblurring(KroneckerOperator):
    """Separable blur, zero padding, 'same' size: ``y_c = A_h x_c A_w^T`` for every channel.

    Args:
        kernel: a 1-D kernel (used along both axes unless ``kernel_w`` is given), or a 2-D kernel
            that is separable (numerical rank 1; it is factored by an SVD). Non-negative, finite,
            positive sum, no longer than the image along its axis.
        x_shape: ``(C, H, W)``; ``y_shape = x_shape``.
        kernel_w: the 1-D kernel along the width (only with a 1-D ``kernel``).
        s_min: relative cut (default 1e-6, MATH.md); a blur's small singular values are many.
        normalize: scale each 1-D kernel to sum 1 (default True).

    Convolution: centre at ``k // 2`` (module docstring); outside the image counts as 0.
    ``A``/``At`` multiply by the banded 1-D matrices (``O(D (H + W))``, the cost of ``Vt``
    anyway); ``conv2d`` is avoided on purpose: cuDNN runs float32 convolutions in TF32 by default
    on recent GPUs, which would break ``A = U S V^T`` at float32 precision.
    """

    def __init__(self, kernel, x_shape, kernel_w=None, *, s_min: float = DEFAULT_S_MIN, normalize: bool = True):
        x_shape = check_x_shape(x_shape)
        s_min = check_s_min(s_min)
        _, H, W = x_shape
        k = _check_kernel(kernel, "kernel", (1, 2), normalize=False)
        if k.dim() == 2:
            if kernel_w is not None:
                raise ValueError("kernel_w: only with a 1-D kernel (a 2-D kernel holds both axes)")
            U, S, Vh = torch.linalg.svd(k)
            if S.numel() > 1 and float(S[1]) > 1e-10 * float(S[0]):
                raise ValueError("kernel: the 2-D kernel is not separable (rank > 1); use CircularDeblurring for a general kernel")
            k_h, k_w = U[:, 0] * S[0].sqrt(), Vh[0] * S[0].sqrt()
            if float(k_h.sum()) < 0:
                k_h, k_w = -k_h, -k_w
            k_h, k_w = k_h.clamp(min=0), k_w.clamp(min=0)
        else:
            k_h = k
            k_w = k if kernel_w is None else _check_kernel(kernel_w, "kernel_w", (1,), normalize=False)
        if normalize:
            k_h, k_w = k_h / k_h.sum(), k_w / k_w.sum()
        if k_h.numel() > H:
            raise ValueError(f"kernel: height {k_h.numel()} exceeds the image height {H}")
        if k_w.numel() > W:
            raise ValueError(f"kernel: width {k_w.numel()} exceeds the image width {W}")
        self.kernel_h, self.kernel_w = k_h, k_w
        self._setup_kronecker(convolution_matrix(k_h, H), convolution_matrix(k_w, W), x_shape, s_min)


class CircularDeblurring(ImageOperator):
    """Convolution with any 2-D kernel under the circular boundary, ``y_shape = x_shape``.

    Args:
        kernel: ``(kh, kw)``, non-negative, finite, positive sum, ``kh <= H``, ``kw <= W``; centre
            at ``(kh // 2, kw // 2)`` (module docstring).
        x_shape: ``(C, H, W)``.
        s_min: relative cut (default 1e-6, MATH.md).
        normalize: scale the kernel to sum 1 (default True).

    SVD. With ``F`` the orthonormal 2-D DFT (``norm='ortho'``) of a channel and ``K`` the DFT of
    the kernel placed with its centre at the origin, ``F y = K ⊙ F x``. The real basis: each pair
    of conjugate modes ``{k, -k}`` (``k != -k``) gives two coordinates
    ``sqrt(2) Re F x[k]`` and ``sqrt(2) Im F x[k]`` (``k`` the representative in ``rfft2``'s half
    spectrum); each self-conjugate mode (DC and, for even sizes, the Nyquist rows/columns) gives
    ``F x[k]``, which is real. Both coordinates of a pair have singular value ``|K[k]|``; ``U`` is
    the same basis composed with the rotation by ``K / |K|`` (a sign for self-conjugate modes), so
    ``A = U S V^T`` exactly. Coordinates are sorted by ``|K|`` globally (non-increasing, stable:
    ties keep channel-major, then half-spectrum order). ``A``/``At`` multiply the spectrum by
    ``K`` / ``conj(K)`` directly (the exact operator; ``U S V^T`` drops the modes below the cut).
    """

    def __init__(self, kernel, x_shape, *, s_min: float = DEFAULT_S_MIN, normalize: bool = True):
        x_shape = check_x_shape(x_shape)
        s_min = check_s_min(s_min)
        C, H, W = x_shape
        k = _check_kernel(kernel, "kernel", (2,), normalize)
        kh, kw = k.shape
        if kh > H or kw > W:
            raise ValueError(f"kernel: size {(kh, kw)} exceeds the image size {(H, W)}")
        self.kernel = k
        Wr = W // 2 + 1
        kpad = torch.zeros(H, W, dtype=torch.float64)
        rows = (torch.arange(kh) - kh // 2) % H
        cols = (torch.arange(kw) - kw // 2) % W
        kpad.index_put_((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), k, accumulate=True)
        K = torch.fft.rfft2(kpad)  # (H, Wr)

        # classify the half-spectrum cells
        k1 = torch.arange(H)[:, None].expand(H, Wr)
        k2 = torch.arange(Wr)[None, :].expand(H, Wr)
        edge = (k2 == 0) | ((W % 2 == 0) & (k2 == W // 2))
        selfc = edge & ((k1 == 0) | ((H % 2 == 0) & (2 * k1 == H)))
        redundant = edge & (2 * k1 > H)  # the conjugate of the cell at (H - k1, k2)
        partner = torch.where(redundant, (H - k1) % H, k1)
        # Hermitian-consistent K: real on self-conjugate cells, conj(partner) on redundant ones
        K = torch.where(redundant, K[partner, k2].conj(), K)
        K = torch.where(selfc, K.real.to(K.dtype), K)
        mag = K.abs()
        phase = torch.where(mag > 0, K / mag.clamp(min=1e-300), torch.ones((), dtype=K.dtype))
        phase = torch.where(selfc, torch.where(K.real < 0, -1.0, 1.0).to(K.dtype), phase)  # exact +-1

        # coordinates: Re of self/representative cells, Im of representatives; per channel H W of them
        rep = ~selfc & ~redundant
        valid = torch.stack([rep | selfc, rep], dim=-1).reshape(-1)  # (H * Wr * 2,)
        pos = valid.nonzero().flatten()  # spectral (real-view) positions, one channel
        cell = pos // 2
        sv_one = mag.reshape(-1)[cell]
        one = torch.ones((), dtype=torch.float64)
        sqrt2 = torch.full((), 2.0, dtype=torch.float64).sqrt()
        scale_one = torch.where(selfc.reshape(-1)[cell], one, sqrt2)
        P = H * Wr * 2
        offsets = torch.arange(C)[:, None] * P
        src = (pos[None, :] + offsets).reshape(-1)  # (D,)
        values, order = torch.sort(sv_one.repeat(C), descending=True, stable=True)
        rank = cut_rank(values, s_min)
        src = src[order]
        scale = scale_one.repeat(C)[order]

        # V's gather: spectral position p takes coef[p] * xbar[gather[p]]
        coord_of = torch.full((C * P,), -1, dtype=torch.long)
        coord_of[src] = torch.arange(src.numel())
        part = torch.arange(2)
        src_pos = ((partner * Wr + k2)[..., None] * 2 + part).reshape(-1)  # (P,) same-channel source
        inv_sqrt2 = 1 / sqrt2
        coef = torch.empty(H, Wr, 2, dtype=torch.float64)
        coef[..., 0] = torch.where(selfc, one, inv_sqrt2)
        coef[..., 1] = torch.where(selfc, 0 * one, torch.where(redundant, -inv_sqrt2, inv_sqrt2))
        gather = coord_of[(src_pos[None, :] + offsets).reshape(-1)]
        coef = coef.reshape(-1).repeat(C)
        gather = torch.where(coef != 0, gather, torch.zeros((), dtype=torch.long))

        self._half = (H, W, Wr)
        self._setup(x_shape, x_shape, values[:rank], s_min)
        self._register(src=src, scale=scale, gather=gather, coef=coef, K=K, Kc=K.conj(), phase=phase, phase_c=phase.conj())

    # --- real Fourier coordinates <-> images
    def _coords(self, spec: torch.Tensor) -> torch.Tensor:
        """Half spectrum ``(batch, C, H, Wr)`` complex -> ``(batch, D)`` real coordinates."""
        r = torch.view_as_real(spec).reshape(spec.shape[0], -1)
        out = r.index_select(1, self._const("src", r))
        return out.mul_(self._const("scale", r))

    def _spectrum(self, v: torch.Tensor) -> torch.Tensor:
        """``(batch, D)`` real coordinates -> Hermitian-consistent half spectrum ``(batch, C, H, Wr)``."""
        C = self.x_shape[0]
        H, _, Wr = self._half
        z = v.index_select(1, self._const("gather", v)).mul_(self._const("coef", v))
        return torch.view_as_complex(z.view(v.shape[0], C, H, Wr, 2))

    def _image(self, spec: torch.Tensor) -> torch.Tensor:
        H, W, _ = self._half
        return torch.fft.irfft2(spec, s=(H, W), norm="ortho")

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: real Fourier coordinates sorted by ``|K|``."""
        self.check_x(x)
        return self._coords(torch.fft.rfft2(x, norm="ortho"))

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        """``(batch, D) -> (batch, C, H, W)``."""
        self._check_flat(xbar, self.dim_x, "xbar")
        return self._image(self._spectrum(xbar))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: the coordinates of ``y`` rotated back by ``K / |K|``."""
        self.check_y(y)
        spec = torch.fft.rfft2(y, norm="ortho")
        return self._coords(spec.mul_(self._const("phase_c", spec)))

    def U(self, ybar: torch.Tensor) -> torch.Tensor:
        self._check_flat(ybar, self.dim_y, "ybar")
        spec = self._spectrum(ybar)
        return self._image(spec * self._const("phase", spec))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Circular convolution, ``irfft2(K * rfft2(x))``."""
        self.check_x(x)
        spec = torch.fft.rfft2(x)
        H, W, _ = self._half
        return torch.fft.irfft2(spec.mul_(self._const("K", spec)), s=(H, W))

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """Circular correlation, ``irfft2(conj(K) * rfft2(y))``."""
        self.check_y(y)
        spec = torch.fft.rfft2(y)
        H, W, _ = self._half
        return torch.fft.irfft2(spec.mul_(self._const("Kc", spec)), s=(H, W))


# ---------------------------------------------------------------------------------------- presets


def _check_size(size, name: str = "size") -> int:
    if isinstance(size, bool):
        raise ValueError(f"{name}: expected a positive int, got {size!r}")
    try:
        n = operator.index(size)
    except TypeError:
        raise ValueError(f"{name}: expected a positive int, got {size!r}") from None
    if n < 1:
        raise ValueError(f"{name}: expected a positive int, got {size!r}")
    return n


def _make(k1d: torch.Tensor, x_shape, boundary: str, s_min: float):
    if boundary == "zero":
        return Deblurring(k1d, x_shape, s_min=s_min)
    if boundary == "circular":
        return CircularDeblurring(torch.outer(k1d, k1d), x_shape, s_min=s_min)
    raise ValueError(f"boundary: expected 'zero' or 'circular', got {boundary!r}")


def gaussian_blur(sigma: float, size: int | None, x_shape, *, boundary: str = "zero", s_min: float = DEFAULT_S_MIN):
    """Isotropic Gaussian blur: the separable kernel ``exp(-(t - (size - 1) / 2)^2 / (2 sigma^2))``
    on ``t = 0 .. size - 1``, normalised to sum 1.

    Args:
        sigma: standard deviation in pixels, > 0.
        size: taps per axis; ``None`` gives ``2 ceil(3 sigma) + 1`` (covers +-3 sigma, 99.7% of
            the mass). Must not exceed the image's height or width.
        x_shape: ``(C, H, W)``.
        boundary: ``"zero"`` (:class:`Deblurring`, default: no wrap-around artefacts) or
            ``"circular"`` (:class:`CircularDeblurring`).
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")
    n = 2 * math.ceil(3 * sigma) + 1 if size is None else _check_size(size)
    t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return _make(k / k.sum(), x_shape, boundary, s_min)


def uniform_blur(size: int, x_shape, *, boundary: str = "zero", s_min: float = DEFAULT_S_MIN):
    """Box blur: the mean over a ``size x size`` window (separable ``ones(size) / size``).

    ``boundary`` as in :func:`gaussian_blur`. Even sizes are allowed (centre at ``size // 2``).
    """
    n = _check_size(size)
    return _make(torch.full((n,), 1.0 / n, dtype=torch.float64), x_shape, boundary, s_min)
