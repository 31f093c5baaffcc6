"""Linear operators in the SVD protocol (:mod:`fkdiff.operators.base`)."""

from .base import LinearOperator
from .check import check_svd
from .blur import CircularDeblurring, Deblurring, gaussian_blur, uniform_blur
from .colorization import Colorization
from .dense import DenseOperator
from .image_base import ImageOperator
from .inpainting import Denoising, Inpainting, Outpainting, box_inpainting, half_inpainting, random_inpainting
from .superres import BicubicSuperResolution, SuperResolution

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "check_svd",
    "ImageOperator",
    "Inpainting",
    "Outpainting",
    "Denoising",
    "box_inpainting",
    "random_inpainting",
    "half_inpainting",
    "SuperResolution",
    "BicubicSuperResolution",
    "Deblurring",
    "CircularDeblurring",
    "gaussian_blur",
    "uniform_blur",
    "Colorization",
]
