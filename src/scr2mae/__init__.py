"""scr2mae: randomly random mask autoencoding (R2MAE) for single-cell genomics and beyond."""

from importlib.metadata import PackageNotFoundError, version

from . import data, evaluation, integrations, masking, theory
from .model import R2MAEModel, R2MAEModule

try:
    __version__ = version("scr2mae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "R2MAEModel",
    "R2MAEModule",
    "data",
    "evaluation",
    "integrations",
    "masking",
    "theory",
]
