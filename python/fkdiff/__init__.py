"""fkdiff — posterior sampling with diffusion priors, on a compiled core.

Samplers: :class:`MCGDiff`, :class:`DCPS` and the baselines :class:`DPS`, :class:`PiGDM`,
:class:`DDRM`, each called as ``sampler(denoiser, operator, y, sigma_y, num_samples=...)``.
The kernels (resampling, Gaussian potentials, MCGdiff's auxiliary mutation, DCPS's tamed Langevin
step and Gaussian-fit step) are in :mod:`fkdiff.ops`; :func:`backends` reports which backends were
built and can run here. Users' networks become denoisers through :mod:`fkdiff.adapters`; linear
operators (dense, and matrix-free image operators) are in :mod:`fkdiff.operators`; the small
image prior shipped with the package is :mod:`fkdiff.prior`.
"""

from . import adapters, ops
from .adapters import from_diffusers, from_model_range, from_network, observation_to_model_range, to_model_range
from .ops import backends
from .samplers import DCPS, DDRM, DPS, MCGDiff, PiGDM, SamplingResult

__version__ = "0.1.0"

__all__ = [
    "__version__", "backends", "ops", "adapters", "MCGDiff", "DCPS", "DPS", "PiGDM", "DDRM", "SamplingResult",
    "from_diffusers", "from_network", "to_model_range", "from_model_range", "observation_to_model_range",
]
