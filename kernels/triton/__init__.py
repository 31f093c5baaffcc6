"""Triton kernels of fkdiff (see csrc/KERNELS.md)."""
