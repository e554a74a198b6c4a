"""Data loading and preprocessing for scr2mae."""

from ._datasets import pbmc68k_counts

__all__ = ["pbmc68k_counts"]
