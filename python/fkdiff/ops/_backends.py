"""Which kernel backends exist, which can run here, and which one a call uses.

Four backends implement the protocol of ``csrc/KERNELS.md``:

``torch``   the pure-PyTorch reference twin (:mod:`fkdiff.ops.reference`); any device, slow.
``cpu``     C++ kernels with OpenMP and SIMD in ``fkdiff._C``; CPU tensors.
``cuda``    CUDA kernels in ``fkdiff._C`` (when built with them); CUDA tensors.
``triton``  Triton kernels (``fkdiff.triton``); CUDA tensors, or CPU tensors when the process
            runs Triton's interpreter (``TRITON_INTERPRET=1`` set before the first import).

Choice, first match wins: the ``backend=`` argument of a call; the environment variable
``FKDIFF_BACKEND``; otherwise the fastest available for the tensors' device (CPU: ``cpu``,
then ``torch``; CUDA: ``cuda``, then ``triton``, then ``torch``). A forced backend that cannot run
the tensors raises :class:`BackendUnavailableError` naming the reason.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

NAMES = ("cpu", "cuda", "triton", "torch")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that is not built, not installed or cannot run these tensors."""


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _compiled():
    try:
        from fkdiff import _C
    except ImportError as exc:  # pragma: no cover - a broken install
        return None, f"fkdiff._C failed to import: {exc}"
    return _C, ""


@functools.lru_cache(maxsize=None)
def _triton_status() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed (pip install 'fkdiff[triton]')"
    return True, f"triton {importlib.import_module('triton').__version__}"


def _status(name: str) -> dict:
    """Build and run facts for one backend: built, devices it runs here, detail text."""
    if name == "torch":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        return {"built": True, "devices": devices, "detail": f"torch {torch.__version__} reference"}
    if name == "cpu":
        C, why = _compiled()
        if C is None:
            return {"built": False, "devices": [], "detail": why}
        isa = C.cpu_isa() if hasattr(C, "cpu_isa") else "?"
        omp = "OpenMP" if C.openmp else "no OpenMP"
        return {"built": True, "devices": ["cpu"], "detail": f"{isa} SIMD, {omp}"}
    if name == "cuda":
        C, why = _compiled()
        if C is None:
            return {"built": False, "devices": [], "detail": why}
        if not C.has_cuda():
            return {"built": False, "devices": [], "detail": "built without CUDA kernels (FKDIFF_CUDA=OFF or no nvcc)"}
        if not torch.cuda.is_available():
            return {"built": True, "devices": [], "detail": "compiled, but torch sees no CUDA device"}
        return {"built": True, "devices": ["cuda"], "detail": f"{torch.cuda.get_device_name()}"}
    if name == "triton":
        ok, detail = _triton_status()
        if not ok:
            return {"built": False, "devices": [], "detail": detail}
        devices = []
        if torch.cuda.is_available():
            devices.append("cuda")
        if _triton_interpreting():
            devices.append("cpu")
            detail += " (TRITON_INTERPRET=1: runs CPU tensors in the interpreter)"
        return {"built": True, "devices": devices, "detail": detail}
    raise ValueError(f"backend: unknown name {name!r}; expected one of {NAMES}")


def backends() -> dict[str, dict]:
    """What each backend is: ``{name: {"built": bool, "devices": [...], "detail": str}}``.

    ``built`` says whether it is installed or compiled into this build; ``devices`` lists the
    device types it can run here (empty: it cannot run on this machine)."""
    return {name: _status(name) for name in NAMES}


_DEFAULT_ORDER = {"cpu": ("cpu", "torch"), "cuda": ("cuda", "triton", "torch")}


@functools.lru_cache(maxsize=None)
def _module(name: str) -> ModuleType:
    if name == "torch":
        return importlib.import_module("fkdiff.ops.reference")
    return importlib.import_module(f"fkdiff.ops._backend_{name}")


def resolve(device: torch.device, backend: str | None = None) -> tuple[str, ModuleType]:
    """The backend name and module that runs tensors on ``device`` (see the module doc)."""
    if backend is not None:
        return _resolve(device.type, backend, "backend=")
    return _resolve(device.type, os.environ.get("FKDIFF_BACKEND") or None, "FKDIFF_BACKEND=")


@functools.lru_cache(maxsize=64)
def _resolve(device_type: str, forced: str | None, source: str) -> tuple[str, ModuleType]:
    # Cached: the answer depends only on the build and the machine, and the per-call cost of a
    # kernel at small N is dominated by this kind of Python work.
    device = torch.device(device_type)
    if forced is not None:
        forced = forced.lower()
        if forced not in NAMES:
            raise ValueError(f"{source}{forced!r} is not a backend; expected one of {NAMES}")
        status = _status(forced)
        if not status["built"]:
            raise BackendUnavailableError(f"{source}{forced!r} is not available: {status['detail']}")
        if device.type not in status["devices"]:
            runs = ", ".join(status["devices"]) or "no device on this machine"
            raise BackendUnavailableError(
                f"{source}{forced!r} cannot run {device.type} tensors (it runs: {runs}; {status['detail']})"
            )
        return forced, _module(forced)
    for name in _DEFAULT_ORDER.get(device.type, ("torch",)):
        if device.type in _status(name)["devices"]:
            return name, _module(name)
    return "torch", _module("torch")  # pragma: no cover - torch runs everywhere


def run(device: torch.device, backend: str | None, flags, where: str, call) -> None:
    """Run one kernel call: resolve the backend, hand ``call(module, flag_word)`` the flag word,
    then apply the flag policy of :func:`fkdiff.ops._flags.acquire` (raise at once on the CPU,
    defer on a GPU unless asked)."""
    from . import _flags

    name, module = resolve(device, backend)
    word, read_now = _flags.acquire(device, flags)
    call(module, word)
    _flags.release(word, read_now, f"{where} ({name} backend)")
