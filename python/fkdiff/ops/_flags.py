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


# --------------------------------------------------------------------------------------------
# Where the bits go, and when they are read
# --------------------------------------------------------------------------------------------

import os  # noqa: E402

import torch  # noqa: E402

_pending: dict[torch.device, torch.Tensor] = {}


class KernelValueError(ValueError):
    """Bad values found by a kernel (NaN log-weights, all-zero weights, ...); the message names
    the argument. A ``ValueError``, raised at once on the CPU and at :func:`check_flags` on a GPU."""

    def __init__(self, bits: int, where: str = ""):
        self.bits = bits
        lines = describe(bits)
        prefix = f"{where}: " if where else ""
        super().__init__(prefix + "; ".join(lines))


def _sync_checks() -> bool:
    return os.environ.get("FKDIFF_SYNC_CHECKS", "0") not in ("", "0")


def acquire(device: torch.device, flags: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """The flag word a kernel call writes into, and whether the front door reads it right after.

    * ``flags`` given (a ``(1,)`` int32 tensor on ``device``): the caller reads it when it wants
      (:func:`check_flags`); nothing is read here.
    * CPU, no ``flags``: a fresh word, read at once (reading costs nothing on the CPU).
    * GPU, no ``flags``: the device's pending word, read at the next :func:`check_flags`
      (no host synchronisation per call), or at once with ``FKDIFF_SYNC_CHECKS=1``.
    """
    if flags is not None:
        if not isinstance(flags, torch.Tensor) or flags.dtype != torch.int32 or flags.numel() != 1:
            raise TypeError("flags: expected a (1,) int32 tensor")
        if flags.device != device:
            raise ValueError(f"flags: on {flags.device}, but the inputs are on {device}")
        return flags.reshape(1), False
    if device.type == "cpu":
        return torch.zeros(1, dtype=torch.int32), True
    word = _pending.get(device)
    if word is None:
        word = _pending[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return word, _sync_checks()


def release(flags: torch.Tensor, read_now: bool, where: str) -> None:
    """Raise :class:`KernelValueError` if ``read_now`` and a bit is set (then clear the word)."""
    if read_now:
        bits = int(flags.item())
        if bits:
            flags.zero_()
            raise KernelValueError(bits, where)


def new_flags(device="cpu") -> torch.Tensor:
    """A zeroed ``(1,)`` int32 flag word to pass as ``flags=`` to several kernel calls."""
    return torch.zeros(1, dtype=torch.int32, device=device)


def check_flags(flags: torch.Tensor | torch.device | str | None = None, where: str = "") -> None:
    """Read a flag word once (one host synchronisation on a GPU), clear it, raise if set.

    ``flags`` is a word made by :func:`new_flags`, or a device whose pending word (the one kernel
    calls without ``flags=`` write into) is read; ``None`` reads the pending word of every device.
    """
    if isinstance(flags, torch.Tensor):
        words = [flags]
    elif flags is None:
        words = list(_pending.values())
    else:
        device = torch.device(flags)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        word = _pending.get(device)
        words = [] if word is None else [word]
    bits = 0
    for word in words:
        value = int(word.item())
        if value:
            word.zero_()
            bits |= value
    if bits:
        raise KernelValueError(bits, where)
