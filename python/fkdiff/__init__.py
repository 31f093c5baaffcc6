"""fkdiff — posterior sampling with diffusion priors, on a compiled core.

The kernels (resampling, Gaussian potentials, MCGdiff's auxiliary mutation, DCPS's tamed Langevin
step) are in :mod:`fkdiff.ops`; :func:`backends` reports which backends were built and can run here.
"""

from . import ops
from .ops import backends

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "ops"]
