"""Image restoration tasks by name: the operator, the default noise, how to look at the
observation, and a classical reconstruction to compare the diffusion samplers with.

Images are ``(C, H, W)`` tensors in ``[-1, 1]`` (the network's range); operators act on batches
``(batch, C, H, W)`` (:mod:`fkdiff.operators`). Every task is built for an ``x_shape`` and gives:

* ``operator(x_shape)`` -> the :class:`~fkdiff.operators.LinearOperator`;
* ``sigma_y`` -> the default observation noise std in ``[-1, 1]`` units (0.05 for every task:
  DPS's Gaussian-noise setting, about 6 / 255 of the pixel range; ``sigma_y = 0`` is allowed);
* ``display(operator, y)`` -> the observation as an image of ``x_shape`` (for figures);
* ``classical(operator, y, sigma_y)`` -> the reconstruction a classical method gives, the
  yardstick of the samplers.

==================  ====================================================  =========================================
task                operator (``x_shape = (C, H, W)``)                    classical reconstruction
==================  ====================================================  =========================================
``inpaint-box``     centre box of half of each side hidden                biharmonic inpainting (scikit-image)
                    (:func:`~fkdiff.operators.box_inpainting`)
``inpaint-random``  20% of the pixels kept, all channels of a pixel       biharmonic inpainting
                    together (fixed mask, seed 0)
``outpaint-half``   left half observed, right half to fill                biharmonic inpainting (extrapolation)
``sr4``             4 x 4 average pooling (option ``bicubic=True``:       bicubic upsampling
                    antialiased bicubic downsampling)                     (``F.interpolate(mode="bicubic")``)
``deblur-gauss``    Gaussian blur, sigma 1.5 px, 11 taps (+-3 sigma),     Wiener (Tikhonov) deconvolution in the
                    zero boundary, separable (Kronecker SVD)              operator's SVD basis
``colorize``        the grey level (mean of the 3 channels)               the grey level in all 3 channels
==================  ====================================================  =========================================

Why 20% kept for ``inpaint-random``: DPS and DAPS drop 70% of the pixels (30% kept) on 256 x 256
faces. On the 32 x 32 digits, strokes are 2-3 pixels wide: at 20% (about 200 of 1024 pixels) a
stroke keeps a few pixels per segment, enough for a prior that knows digit shapes to reconnect
it, while interpolation blurs it into blobs. Biharmonic inpainting on the first 10 shipped test
images (sigma_y = 0.05) scores 19.9 / 22.9 / 25.0 / 27.4 dB PSNR (SSIM 0.64 / 0.75 / 0.79 /
0.81) with 10 / 20 / 30 / 50% kept: 20% leaves room for a prior without becoming a guess (10%
drops whole strokes).

Why sigma 1.5 for ``deblur-gauss``: the DPS/DDRM benchmarks blur 256 x 256 images with sigma 3
(61 taps) or 10 (DDRM): a few percent of the width. On 32 x 32 a sigma of 1.5 px (about 5% of
the width) makes strokes of 2-3 px visibly soft without wiping them out; the 11 taps cover
+-3 sigma (99.7% of the mass).

Example::

    from fkdiff.problems.images import get_task, observe

    task = get_task("sr4")
    op = task.operator((3, 32, 32))
    y = observe(op, x, task.sigma_y, generator)      # x: (3, 32, 32) in [-1, 1]
    baseline = task.classical(op, y, task.sigma_y)   # (3, 32, 32)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..operators import (
    BicubicSuperResolution,
    Colorization,
    Inpainting,
    LinearOperator,
    SuperResolution,
    box_inpainting,
    gaussian_blur,
    half_inpainting,
    random_inpainting,
)

__all__ = [
    "ImageTask",
    "BoxInpaintingTask",
    "RandomInpaintingTask",
    "HalfOutpaintingTask",
    "SuperResolutionTask",
    "GaussianDeblurTask",
    "ColorizationTask",
    "TASKS",
    "task_names",
    "get_task",
    "observe",
    "biharmonic_inpainting",
    "bicubic_upsampling",
    "wiener_deconvolution",
]

#: default observation noise std in [-1, 1] units (DPS's sigma = 0.05)
DEFAULT_SIGMA_Y = 0.05
#: value of the unobserved pixels in displayed observations (mid-grey in [-1, 1])
HOLE_VALUE = 0.0


# -------------------------------------------------------------------------------------- helpers


def _single(y: torch.Tensor, shape, name: str = "y") -> tuple[torch.Tensor, bool]:
    """``y`` as a batch ``(b, *shape)`` and whether it came without the batch axis."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(y).__name__}")
    shape = tuple(shape)
    if tuple(y.shape) == shape:
        return y.unsqueeze(0), True
    if y.dim() == len(shape) + 1 and tuple(y.shape[1:]) == shape:
        return y, False
    raise ValueError(f"{name}: expected shape {shape} or (batch, {', '.join(map(str, shape))}), got {tuple(y.shape)}")


def _as_before(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def observe(operator: LinearOperator, x: torch.Tensor, sigma_y: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y = A x + sigma_y z`` with ``z ~ N(0, I)`` drawn from ``generator`` (a CPU generator;
    the draw is moved to ``x``'s device, so ``y`` does not depend on the device).

    ``x`` is ``(C, H, W)`` (then ``y`` is ``operator.y_shape``) or a batch ``(b, C, H, W)``."""
    xb, single = _single(x, operator.x_shape, "x")
    if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) or sigma_y < 0:
        raise ValueError(f"sigma_y: expected a finite number >= 0, got {sigma_y!r}")
    y = operator.A(xb)
    if sigma_y > 0:
        z = torch.randn(tuple(y.shape), generator=generator, dtype=y.dtype)
        y = y + sigma_y * z.to(y.device)
    return _as_before(y, single)


def biharmonic_inpainting(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the pixels where ``mask`` is False by biharmonic interpolation of the others
    (:func:`skimage.restoration.inpaint_biharmonic`, all channels at once when the mask is the
    same in each, channel by channel otherwise).

    Args:
        y: ``(C, H, W)`` image, values at unobserved pixels ignored.
        mask: ``(C, H, W)`` or ``(H, W)`` bool, True = observed.
    """
    from skimage.restoration import inpaint_biharmonic

    C, H, W = y.shape
    mask = torch.as_tensor(mask).to(torch.bool).cpu()
    if mask.dim() == 2:
        mask = mask.expand(C, H, W)
    img = y.detach().to("cpu", torch.float64).numpy()
    missing = (~mask).numpy()
    if not missing.any():
        return y.clone()
    if (missing == missing[:1]).all():
        out = inpaint_biharmonic(np.moveaxis(img, 0, -1), missing[0], channel_axis=-1)
        out = np.moveaxis(out, -1, 0)
    else:
        out = np.stack([inpaint_biharmonic(img[c], missing[c]) if missing[c].any() else img[c] for c in range(C)])
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=y.device, dtype=y.dtype)


def bicubic_upsampling(y: torch.Tensor, factor: int) -> torch.Tensor:
    """``(C, h, w) -> (C, h r, w r)`` (or a batch of them): bicubic interpolation (Keys a = -0.75, torch's
    ``interpolate(mode="bicubic", align_corners=False)``), the usual super-resolution baseline."""
    batch = y.dim() == 4
    up = F.interpolate((y if batch else y.unsqueeze(0)).to(torch.float32), scale_factor=factor, mode="bicubic", align_corners=False)
    return (up if batch else up[0]).to(y.dtype)


def wiener_deconvolution(operator: LinearOperator, y: torch.Tensor, sigma_y: float, signal_std: float = 0.5,
                         floor: float = 0.01) -> torch.Tensor:
    """Wiener (Tikhonov) inversion in the operator's SVD basis around a constant image.

    With ``m`` the mean of ``y`` (a blur keeps the mean of an image away from its borders) and
    ``r = y - A (m 1)``: ``x = m 1 + V diag(s / (s^2 + lam)) (U^T r)_{1..rank}``,
    ``lam = (max(sigma_y, floor) / signal_std)^2``; coordinates outside the rank stay at 0.
    This is the posterior mean of a Gaussian prior ``N(m 1, signal_std^2 I)`` (``signal_std`` =
    0.5: the spread of pixel values in ``[-1, 1]``); the ``floor`` keeps the noiseless case from
    dividing by the tiny singular values of a blur.

    Args:
        operator: any :class:`~fkdiff.operators.LinearOperator`.
        y: ``operator.y_shape`` (or a batch of it).
    """
    yb, single = _single(y, operator.y_shape)
    lam = (max(float(sigma_y), floor) / signal_std) ** 2
    m = yb.reshape(yb.shape[0], -1).mean(1)
    ones = torch.ones((1, *operator.x_shape), dtype=yb.dtype, device=yb.device)
    base = m.view(-1, *([1] * len(operator.x_shape))) * ones
    resid = yb - operator.A(base)
    s = operator.singular_values.to(device=yb.device, dtype=yb.dtype)
    r = s.numel()
    coef = yb.new_zeros(yb.shape[0], operator.dim_x)
    coef[:, :r] = operator.Ut(resid)[:, :r] * (s / (s * s + lam))
    return _as_before(base + operator.V(coef).reshape(yb.shape[0], *operator.x_shape), single)


# ---------------------------------------------------------------------------------------- tasks


class ImageTask:
    """A restoration task: subclasses set :attr:`name`, :attr:`description`,
    :attr:`classical_name` and implement :meth:`operator`, :meth:`display` and :meth:`classical`.

    Attributes:
        name: the registry key (``"inpaint-box"``, ...).
        description: one line for tables and figure titles.
        sigma_y: the default noise std in ``[-1, 1]`` units.
        classical_name: the classical reconstruction's name (``"biharmonic"``, ...).
    """

    name = "task"
    description = ""
    classical_name = ""
    sigma_y = DEFAULT_SIGMA_Y
    #: channel counts the task accepts (None: any)
    channels: tuple[int, ...] | None = None

    def check_shape(self, x_shape) -> tuple[int, int, int]:
        try:
            shape = tuple(int(n) for n in x_shape)
        except TypeError:
            raise ValueError(f"x_shape: expected (C, H, W), got {x_shape!r}") from None
        if len(shape) != 3:
            raise ValueError(f"x_shape: expected (C, H, W), got {x_shape!r}")
        if self.channels is not None and shape[0] not in self.channels:
            want = " or ".join(map(str, self.channels))
            raise ValueError(f"{self.name}: needs images with {want} channels, got {shape[0]} (x_shape {shape})")
        return shape

    def operator(self, x_shape) -> LinearOperator:
        raise NotImplementedError

    def display(self, operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
        """The observation ``y`` (``operator.y_shape``) as an image of ``operator.x_shape``."""
        raise NotImplementedError

    def classical(self, operator: LinearOperator, y: torch.Tensor, sigma_y: float | None = None) -> torch.Tensor:
        """The classical reconstruction ``(C, H, W)`` from ``y`` (``operator.y_shape``)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """The task's parameters (for reports)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class _InpaintingBase(ImageTask):
    classical_name = "biharmonic"

    def display(self, operator: Inpainting, y: torch.Tensor) -> torch.Tensor:
        """Observed pixels as they are, the others mid-grey."""
        mask = operator.mask.to(y.device)
        return torch.where(mask, y, torch.full((), HOLE_VALUE, dtype=y.dtype, device=y.device))

    def classical(self, operator: Inpainting, y: torch.Tensor, sigma_y: float | None = None) -> torch.Tensor:
        return biharmonic_inpainting(y, operator.mask)


class BoxInpaintingTask(_InpaintingBase):
    """``inpaint-box``: a centred box hidden, ``fraction`` of each side (default 0.5: the
    128 x 128 box on 256 x 256 images of the DPS/DDRM benchmarks; 16 x 16 on 32 x 32)."""

    name = "inpaint-box"

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction
        self.description = f"centre box of {fraction:g} x each side hidden"

    def operator(self, x_shape):
        return box_inpainting(self.check_shape(x_shape), fraction=self.fraction)

    def settings(self):
        return {"fraction": self.fraction}


class RandomInpaintingTask(_InpaintingBase):
    """``inpaint-random``: ``keep`` of the pixels observed (default 0.2, module docstring), the
    same mask for every channel, drawn once with ``mask_seed`` (the mask is part of the task,
    not of the sampler's randomness)."""

    name = "inpaint-random"

    def __init__(self, keep: float = 0.2, mask_seed: int = 0):
        self.keep = keep
        self.mask_seed = mask_seed
        self.description = f"{100 * keep:g}% of the pixels kept at random"

    def operator(self, x_shape):
        return random_inpainting(self.check_shape(x_shape), self.keep, seed=self.mask_seed)

    def settings(self):
        return {"keep": self.keep, "mask_seed": self.mask_seed}


class HalfOutpaintingTask(_InpaintingBase):
    """``outpaint-half``: one half observed (``side``, default ``"left"``), the other to fill."""

    name = "outpaint-half"

    def __init__(self, side: str = "left"):
        if side not in ("left", "right", "top", "bottom"):
            raise ValueError(f"side: expected 'left', 'right', 'top' or 'bottom', got {side!r}")
        self.side = side
        self.description = f"{side} half observed"

    def operator(self, x_shape):
        return half_inpainting(self.check_shape(x_shape), self.side)

    def settings(self):
        return {"side": self.side}


class SuperResolutionTask(ImageTask):
    """``sr4``: downsampling by ``factor`` (4): ``factor x factor`` average pooling, or
    antialiased bicubic downsampling with ``bicubic=True``
    (:class:`~fkdiff.operators.BicubicSuperResolution`). The image sides must be multiples of
    ``factor``."""

    name = "sr4"
    classical_name = "bicubic"

    def __init__(self, factor: int = 4, bicubic: bool = False):
        self.factor = int(factor)
        self.bicubic = bool(bicubic)
        kind = "bicubic" if bicubic else "average-pool"
        self.description = f"x{self.factor} super-resolution ({kind} downsampling)"

    def operator(self, x_shape):
        shape = self.check_shape(x_shape)
        if self.bicubic:
            return BicubicSuperResolution(self.factor, shape)
        return SuperResolution(self.factor, shape)

    def display(self, operator, y):
        """The low-resolution image, each pixel repeated ``factor x factor`` times."""
        r = self.factor
        return y.repeat_interleave(r, dim=-2).repeat_interleave(r, dim=-1)

    def classical(self, operator, y, sigma_y=None):
        return bicubic_upsampling(y, self.factor)

    def settings(self):
        return {"factor": self.factor, "bicubic": self.bicubic}


class GaussianDeblurTask(ImageTask):
    """``deblur-gauss``: Gaussian blur of std ``sigma`` pixels (default 1.5) with ``size`` taps
    per axis (default ``2 ceil(3 sigma) + 1`` = 11), zero boundary (``boundary="circular"``
    for the periodic one).

    Zero in ``[-1, 1]`` units is mid-grey: under the zero boundary the blurred image of a dark
    picture gets a lighter frame (the DDRM benchmarks blur ``[-1, 1]`` images the same way); the
    samplers and the Wiener reconstruction model it exactly."""

    name = "deblur-gauss"
    classical_name = "wiener"

    def __init__(self, sigma: float = 1.5, size: int | None = None, boundary: str = "zero"):
        self.sigma = float(sigma)
        self.size = 2 * math.ceil(3 * self.sigma) + 1 if size is None else int(size)
        self.boundary = boundary
        self.description = f"Gaussian blur, sigma {self.sigma:g} px, {self.size} taps"

    def operator(self, x_shape):
        return gaussian_blur(self.sigma, self.size, self.check_shape(x_shape), boundary=self.boundary)

    def display(self, operator, y):
        """The blurred image itself."""
        return y.clone()

    def classical(self, operator, y, sigma_y=None):
        return wiener_deconvolution(operator, y, self.sigma_y if sigma_y is None else sigma_y)

    def settings(self):
        return {"sigma": self.sigma, "size": self.size, "boundary": self.boundary}


class ColorizationTask(ImageTask):
    """``colorize``: the grey level (mean of the three channels) of every pixel; RGB only."""

    name = "colorize"
    classical_name = "grey"
    channels = (3,)
    description = "grey level observed (mean of R, G, B)"

    def operator(self, x_shape):
        return Colorization(self.check_shape(x_shape))

    def display(self, operator, y):
        """The grey image in all three channels."""
        return y.expand(*y.shape[:-3], 3, *y.shape[-2:]).clone()

    def classical(self, operator, y, sigma_y=None):
        """The grey level copied to R, G and B (the least-squares image with no colour)."""
        return self.display(operator, y)


#: the task classes by name; :func:`get_task` builds them with options
TASKS: dict[str, type[ImageTask]] = {
    cls.name: cls
    for cls in (BoxInpaintingTask, RandomInpaintingTask, HalfOutpaintingTask, SuperResolutionTask, GaussianDeblurTask, ColorizationTask)
}


def task_names() -> list[str]:
    """The registered task names, in table order."""
    return list(TASKS)


def get_task(name: str, **options) -> ImageTask:
    """The task ``name`` built with ``options`` (e.g. ``get_task("sr4", bicubic=True)``,
    ``get_task("inpaint-random", keep=0.3)``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if isinstance(name, ImageTask):
        return name
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name](**options)
