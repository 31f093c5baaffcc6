"""Inpainting, outpainting and denoising: operators that observe a subset of the pixels.

``A x = mask * x`` with ``y_shape = x_shape`` (unobserved entries of ``y`` are zeros, so ``y`` can
be looked at as an image). The SVD is a permutation: ``V = U = P`` puts the observed entries first
(in increasing flat ``(c, h, w)`` order), then the unobserved ones (same order); all singular values
are 1, ``rank`` = number of observed entries.
"""

from __future__ import annotations

import math

import torch

from .image_base import DEFAULT_S_MIN, IdentityUOperator, ImageOperator, check_x_shape

__all__ = ["Inpainting", "Outpainting", "Denoising", "box_inpainting", "random_inpainting", "half_inpainting"]


def _as_mask(mask, x_shape) -> torch.Tensor:
    """Validate ``mask`` ((H, W), (1, H, W) or (C, H, W); bool or 0/1) into a (C, H, W) bool."""
    mask = torch.as_tensor(mask).detach().cpu()
    C, H, W = x_shape
    if mask.dim() == 2 and tuple(mask.shape) == (H, W):
        mask = mask.unsqueeze(0)
    if mask.dim() != 3 or tuple(mask.shape[1:]) != (H, W) or mask.shape[0] not in (1, C):
        raise ValueError(f"mask: expected shape (H, W) = {(H, W)} or (C, H, W) = {(C, H, W)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask: values must be bool or 0/1 (True/1 = observed)")
        mask = mask != 0
    mask = mask.expand(C, H, W)
    if not mask.any():
        raise ValueError("mask: observes nothing (every entry is False/0)")
    return mask.contiguous()


class Inpainting(ImageOperator):
    """Observe the pixels where ``mask`` is True: ``y = mask * x``, ``y_shape = x_shape``.

    Args:
        mask: ``(H, W)`` (shared by all channels), ``(1, H, W)`` or ``(C, H, W)``; bool or 0/1
            values, True/1 = observed. Must observe at least one entry.
        x_shape: ``(C, H, W)``; may be omitted when ``mask`` is ``(C, H, W)``.

    SVD: ``V = U`` = the permutation that lists the observed entries first (increasing flat index),
    then the others; singular values all 1 (``rank`` = observed count). ``A``/``At`` multiply by the
    mask directly.
    """

    def __init__(self, mask, x_shape=None):
        if x_shape is None:
            m = torch.as_tensor(mask)
            if m.dim() != 3:
                raise ValueError(f"mask: give x_shape, or a mask of shape (C, H, W); got shape {tuple(m.shape)}")
            x_shape = tuple(m.shape)
        x_shape = check_x_shape(x_shape)
        mask = _as_mask(mask, x_shape)
        flat = mask.reshape(-1)
        observed = flat.nonzero().flatten()
        perm = torch.cat([observed, (~flat).nonzero().flatten()])
        self.mask = mask
        self._setup(x_shape, x_shape, torch.ones(observed.numel(), dtype=torch.float64), DEFAULT_S_MIN)
        self._register(perm=perm, inv=torch.argsort(perm), mask_f=mask.to(torch.float64))

    # presets (the same as the module-level functions)
    @classmethod
    def box(cls, x_shape, box_size=None, fraction=None) -> "Inpainting":
        """See :func:`box_inpainting`."""
        return box_inpainting(x_shape, box_size, fraction)

    @classmethod
    def random(cls, x_shape, keep: float, *, seed: int | None = None, generator: torch.Generator | None = None) -> "Inpainting":
        """See :func:`random_inpainting`."""
        return random_inpainting(x_shape, keep, seed=seed, generator=generator)

    @classmethod
    def half(cls, x_shape, side: str = "left") -> "Inpainting":
        """See :func:`half_inpainting`."""
        return half_inpainting(x_shape, side)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: observed entries first."""
        self.check_x(x)
        return x.reshape(x.shape[0], -1).index_select(1, self._const("perm", x))

    def V(self, xbar: torch.Tensor) -> torch.Tensor:
        """``(batch, D) -> (batch, C, H, W)``."""
        self._check_flat(xbar, self.dim_x, "xbar")
        return xbar.index_select(1, self._const("inv", xbar)).view(xbar.shape[0], *self.x_shape)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W) -> (batch, D)``: the same permutation as :meth:`Vt`."""
        self.check_y(y)
        return y.reshape(y.shape[0], -1).index_select(1, self._const("perm", y))

    def U(self, ybar: torch.Tensor) -> torch.Tensor:
        self._check_flat(ybar, self.dim_y, "ybar")
        return ybar.index_select(1, self._const("inv", ybar)).view(ybar.shape[0], *self.y_shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """``mask * x`` (zeros where unobserved)."""
        self.check_x(x)
        return x * self._const("mask_f", x)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """``mask * y``."""
        self.check_y(y)
        return y * self._const("mask_f", y)


class Outpainting(Inpainting):
    """Observe only a centred box (the complement of :func:`box_inpainting`'s mask).

    Args:
        x_shape: ``(C, H, W)``.
        box_size, fraction: the observed box, as for :func:`box_inpainting` (default: half of each
            side).
    """

    def __init__(self, x_shape, box_size=None, fraction=None):
        x_shape = check_x_shape(x_shape)
        super().__init__(_centre_box(x_shape, box_size, fraction), x_shape)


class Denoising(IdentityUOperator):
    """The identity, ``y = x`` (``y_shape = x_shape``): every singular value 1, ``V = U = I``.

    The full-mask case of :class:`Inpainting` without its permutation. Every method returns a new
    tensor (never a view of its input), like the other operators.
    """

    def __init__(self, x_shape):
        x_shape = check_x_shape(x_shape)
        self._setup(x_shape, x_shape, torch.ones(math.prod(x_shape), dtype=torch.float64), DEFAULT_S_MIN)

    def Vt(self, x):
        self.check_x(x)
        return x.reshape(x.shape[0], -1).clone()

    def V(self, xbar):
        self._check_flat(xbar, self.dim_x, "xbar")
        return xbar.reshape(xbar.shape[0], *self.x_shape).clone()

    def A(self, x):
        self.check_x(x)
        return x.clone()

    def At(self, y):
        self.check_y(y)
        return y.clone()


# ---------------------------------------------------------------------------------------- presets


def _pair(value, name: str):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected a number or a pair (height, width), got {value!r}")
        return tuple(value)
    return (value, value)


def _centre_box(x_shape, box_size=None, fraction=None) -> torch.Tensor:
    """(H, W) bool, True inside the centred box (top-left corner at ((H-h)//2, (W-w)//2))."""
    _, H, W = x_shape
    if box_size is not None and fraction is not None:
        raise ValueError("box_size, fraction: give one of them, not both")
    if box_size is not None:
        sizes = _pair(box_size, "box_size")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise ValueError(f"box_size: expected an int or a pair of ints, got {box_size!r}")
        h, w = sizes
        if not (1 <= h <= H and 1 <= w <= W):
            raise ValueError(f"box_size: {(h, w)} does not fit in an image of size {(H, W)}")
    else:
        fh, fw = _pair(0.5 if fraction is None else fraction, "fraction")
        for f in (fh, fw):
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
                raise ValueError(f"fraction: expected a number in (0, 1] or a pair of them, got {fraction!r}")
        h, w = max(1, round(fh * H)), max(1, round(fw * W))
    top, left = (H - h) // 2, (W - w) // 2
    box = torch.zeros(H, W, dtype=torch.bool)
    box[top : top + h, left : left + w] = True
    return box


def box_inpainting(x_shape, box_size=None, fraction=None) -> Inpainting:
    """Hide a centred box, observe the rest.

    Args:
        x_shape: ``(C, H, W)``.
        box_size: the box's ``(height, width)`` in pixels (an int for a square).
        fraction: or its size as a fraction of each side (a number, or a pair), rounded, at least
            one pixel. Default (neither given): 0.5, i.e. the 128 x 128 box on 256 x 256 images of
            the DPS/DDRM benchmarks. The box's top-left corner is ``((H - h) // 2, (W - w) // 2)``.
    """
    x_shape = check_x_shape(x_shape)
    return Inpainting(~_centre_box(x_shape, box_size, fraction), x_shape)


def random_inpainting(x_shape, keep: float, *, seed: int | None = None, generator: torch.Generator | None = None) -> Inpainting:
    """Observe a random set of ``round(keep * H * W)`` pixels (at least one), each across all
    channels, drawn without replacement (so the kept fraction is exact).

    Args:
        x_shape: ``(C, H, W)``.
        keep: fraction of pixels observed, in (0, 1].
        seed, generator: the randomness: a CPU ``torch.Generator``, or a seed for a fresh one.
            Default: seed 0, so that the same call always gives the same mask.
    """
    x_shape = check_x_shape(x_shape)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep: expected a fraction in (0, 1], got {keep!r}")
    if seed is not None and generator is not None:
        raise ValueError("seed, generator: give one of them, not both")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    _, H, W = x_shape
    n = max(1, round(keep * H * W))
    chosen = torch.randperm(H * W, generator=generator, device=generator.device)[:n].cpu()
    mask = torch.zeros(H * W, dtype=torch.bool)
    mask[chosen] = True
    return Inpainting(mask.view(H, W), x_shape)


def half_inpainting(x_shape, side: str = "left") -> Inpainting:
    """Observe one half of the image: ``side`` in ``"left"``, ``"right"``, ``"top"``, ``"bottom"``
    names the observed half. With an odd size the observed half is the larger one
    (``ceil(W / 2)`` columns or ``ceil(H / 2)`` rows), so it is never empty.
    """
    x_shape = check_x_shape(x_shape)
    _, H, W = x_shape
    mask = torch.zeros(H, W, dtype=torch.bool)
    hw, hh = (W + 1) // 2, (H + 1) // 2
    if side == "left":
        mask[:, :hw] = True
    elif side == "right":
        mask[:, W - hw :] = True
    elif side == "top":
        mask[:hh, :] = True
    elif side == "bottom":
        mask[H - hh :, :] = True
    else:
        raise ValueError(f"side: expected 'left', 'right', 'top' or 'bottom', got {side!r}")
    return Inpainting(mask, x_shape)
