"""Shared fixtures: which backends run here, on which device, and float64 references.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors; the variable must be
set before any ``@triton.jit`` decorator runs, so it is set here, before fkdiff is imported.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fkdiff  # noqa: E402
from fkdiff.ops import _flags  # noqa: E402

try:  # hypothesis: keep example counts modest, no deadline (the interpreter is slow)
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "fkdiff", max_examples=int(os.environ.get("FKDIFF_HYPOTHESIS_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], derandomize=True
    )
    settings.load_profile("fkdiff")
except ImportError:  # pragma: no cover
    pass


def runnable_backends() -> list[tuple[str, str]]:
    """(backend, device) pairs that can run on this machine, the reference excluded.

    ``FKDIFF_TEST_BACKENDS=cpu-cpu,torch-cpu`` restricts or extends the list (debugging)."""
    chosen = os.environ.get("FKDIFF_TEST_BACKENDS")
    if chosen:
        return [tuple(item.split("-", 1)) for item in chosen.split(",") if item]
    pairs = []
    for name, status in fkdiff.backends().items():
        if name == "torch":
            continue
        for device in status["devices"]:
            pairs.append((name, device))
    return pairs


BACKENDS = runnable_backends()


def backend_id(pair) -> str:
    return f"{pair[0]}-{pair[1]}"


@pytest.fixture(params=BACKENDS, ids=[backend_id(p) for p in BACKENDS])
def backend(request):
    """A (name, device) pair of a compiled/Triton backend that runs here."""
    return request.param


def interpreted(name: str, device: str) -> bool:
    """Triton on CPU tensors runs in the (slow) interpreter: tests keep its sizes small."""
    return name == "triton" and device == "cpu"


@pytest.fixture(autouse=True)
def _clear_pending_flags():
    yield
    _flags._pending.clear()


def gen(seed: int) -> torch.Generator:
    """A seeded CPU generator (tests draw everything from explicit generators)."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def single_thread():
    """Sampler tests run on one thread: their timings stay predictable on a shared 2-core CI
    machine, and results do not depend on the thread count anyway."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
