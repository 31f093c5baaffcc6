"""fkdiff — posterior sampling with diffusion priors, on a compiled core.

Samplers: :class:`MCGDiff`, :class:`DCPS` and the baselines :class:`DPS`, :class:`PiGDM`,
:class:`DDRM`, each called as ``sampler(denoiser, operator, y, sigma_y, num_samples=...)``.
The kernels (resampling, Gaussian potentials, MCGdiff's auxiliary mutation, DCPS's tamed Langevin
step) are in :mod:`fkdiff.ops`; :func:`backends` reports which backends were built and can run here.
"""

from . import ops
from .ops import backends
from .samplers import DCPS, DDRM, DPS, MCGDiff, PiGDM, SamplingResult

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "ops", "MCGDiff", "DCPS", "DPS", "PiGDM", "DDRM", "SamplingResult"]

from . import adapters  # noqa: E402
from .adapters import from_diffusers, from_model_range, from_network, observation_to_model_range, to_model_range  # noqa: E402

__all__ += ["adapters", "from_diffusers", "from_network", "to_model_range", "from_model_range", "observation_to_model_range"]
