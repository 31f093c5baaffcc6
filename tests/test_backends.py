"""What was built, what runs here, and the default choice."""

from __future__ import annotations

import torch

import fkdiff
from fkdiff import _C, ops


def test_backends_report():
    info = fkdiff.backends()
    assert set(info) == {"cpu", "cuda", "triton", "torch"}
    for status in info.values():
        assert set(status) == {"built", "devices", "detail"}
    assert info["torch"]["devices"][0] == "cpu"
    assert info["cpu"]["built"] and info["cpu"]["devices"] == ["cpu"]
    assert info["cuda"]["built"] == bool(_C.has_cuda())
    if not torch.cuda.is_available():
        assert info["cuda"]["devices"] == []


def test_cpu_is_the_default_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("FKDIFF_BACKEND", raising=False)
    from fkdiff.ops import _backends

    name, _ = _backends.resolve(torch.device("cpu"))
    assert name == "cpu"


def test_cpu_isa_is_named():
    assert _C.cpu_isa() in _C.cpu_isas_built.split(",")


def test_cuda_entry_points_fail_cleanly_without_a_gpu():
    """The module imports on a machine with no GPU; a CUDA kernel called there raises."""
    if not _C.has_cuda() or torch.cuda.is_available():
        return
    assert _C.cuda_device_count() == 0
