"""The single-cell front: :class:`R2MAEModel` and its torch module."""

from ._model import R2MAEModel
from ._module import R2MAEModule

__all__ = ["R2MAEModel", "R2MAEModule"]
