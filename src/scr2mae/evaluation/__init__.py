"""Evaluation helpers: linear probing of representations and training-time measurement."""

from ._probing import ProbeResult, cross_validated_probe
from ._timing import EpochTimer

__all__ = ["EpochTimer", "ProbeResult", "cross_validated_probe"]
