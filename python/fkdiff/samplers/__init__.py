"""Posterior samplers (one module per algorithm, each reads like MATH.md)."""

from .base import SamplingResult, Sampler

__all__ = ["SamplingResult", "Sampler"]
