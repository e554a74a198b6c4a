"""Evaluation helpers: linear probing of representations."""

from ._probing import ProbeResult, cross_validated_probe

__all__ = ["ProbeResult", "cross_validated_probe"]
