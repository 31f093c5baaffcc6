"""fkdiff.ops — the kernel front door.

One Python function per kernel. Each validates its arguments (a ``TypeError``/``ValueError``
naming the argument), allocates its output unless ``out=`` is given, picks a backend
(:func:`fkdiff.backends`; ``backend=`` or ``FKDIFF_BACKEND`` force one) and runs it. Non-contiguous
inputs are copied; a non-contiguous ``out=`` is refused.

Bad values (NaN or ``+inf`` log-weights, a population of zero weight, an ancestor out of range, a
non-finite gradient) are found by the kernels themselves and OR-ed into an int32 flag word on the
device: on the CPU the call raises :class:`KernelValueError` (a ``ValueError``) at once; on a GPU
nothing synchronises per call, and :func:`check_flags` (which a sampler calls once per step) raises.

The conventions every backend shares (resampling offset, noise counters) are in
``csrc/KERNELS.md`` and :mod:`fkdiff.ops.reference`, the pure-PyTorch twin.
"""

from ._backends import BackendUnavailableError, backends
from ._flags import KernelValueError, check_flags, new_flags
from .langevin import tamed_langevin
from .mutation import auxiliary_mutation
from .noise import normal, philox
from .potential import gaussian_log_normalizer, gaussian_log_potential, mcgdiff_log_weight
from .resampling import SCHEMES, ess, log_normalize, log_sum_exp, log_sum_exp_and_ess, resample, resample_rows
from .variational import variational_update

__all__ = [
    "SCHEMES",
    "BackendUnavailableError",
    "KernelValueError",
    "auxiliary_mutation",
    "backends",
    "check_flags",
    "ess",
    "gaussian_log_normalizer",
    "gaussian_log_potential",
    "log_normalize",
    "log_sum_exp",
    "log_sum_exp_and_ess",
    "mcgdiff_log_weight",
    "new_flags",
    "normal",
    "philox",
    "resample",
    "resample_rows",
    "tamed_langevin",
    "variational_update",
]
