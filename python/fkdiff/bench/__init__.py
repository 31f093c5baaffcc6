"""Benchmarks shipped with fkdiff, so that they run from an installed wheel.

``fkdiff bench kernels`` (or ``python -m fkdiff.bench.kernels``) times every kernel of
:mod:`fkdiff.ops` against the plain PyTorch code a user would write and against a memory copy of
the same number of bytes; see :mod:`fkdiff.bench.kernels`.
"""

__all__ = ["kernels"]
