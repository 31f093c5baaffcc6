"""Posterior samplers (one module per algorithm, each reads like MATH.md)."""

from .base import SamplingResult, Sampler
from .mcgdiff import MCGDiff
from .dcps import DCPS
from .ddrm import DDRM
from .dps import DPS
from .pigdm import PiGDM

__all__ = ["SamplingResult", "Sampler", "MCGDiff", "DCPS", "DPS", "PiGDM", "DDRM"]
