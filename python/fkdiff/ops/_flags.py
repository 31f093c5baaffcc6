"""Error bits that kernels OR into a device-side int32 flag word (mirror of csrc/include/fkdiff/flags.h).

Kernels never synchronise with the host to report bad values. On the CPU the front door reads
the word right after the call and raises at once; on a GPU the word lives on the device and is
read (one synchronisation) only when the caller asks: :func:`fkdiff.ops.check_flags`, which a
sampler calls at most once per step.
"""

from __future__ import annotations

FLAG_LOGW_NAN = 1
FLAG_LOGW_POSINF = 2
FLAG_LOGW_ALL_ZERO = 4
FLAG_ANCESTOR_RANGE = 8
FLAG_POTENTIAL_NAN = 16
FLAG_GRADIENT_NONFINITE = 32

#: What each bit means, phrased for the exception message (argument first).
MESSAGES = {
    FLAG_LOGW_NAN: "log_weights: contains NaN",
    FLAG_LOGW_POSINF: "log_weights: contains +inf",
    FLAG_LOGW_ALL_ZERO: "log_weights: every weight of a population is zero (all -inf)",
    FLAG_ANCESTOR_RANGE: "ancestors: an index lies outside [0, number of parents)",
    FLAG_POTENTIAL_NAN: "x: the Gaussian potential came out NaN (NaN in x, target, scale or var)",
    FLAG_GRADIENT_NONFINITE: "grad: a particle's gradient has a non-finite norm (NaN or inf)",
}


def describe(bits: int) -> list[str]:
    """The messages of the bits set in ``bits``, lowest bit first."""
    return [msg for bit, msg in MESSAGES.items() if bits & bit]
