"""Data loading and preprocessing for scr2mae."""

from . import _census
from ._census import *  # noqa: F403 (the names of its __all__)
from ._datasets import pbmc68k_batches, pbmc68k_counts
from ._inference import inference_batches
from ._inmemory import InMemoryDataModule
from ._ondisk import OnDiskDataModule, read_backed
from ._panels import measured_genes
from ._preprocess import log_normalize, preprocess_counts
from ._synthetic import synthetic_donor_counts

__all__ = [
    *_census.__all__,
    "InMemoryDataModule",
    "OnDiskDataModule",
    "inference_batches",
    "log_normalize",
    "measured_genes",
    "pbmc68k_batches",
    "pbmc68k_counts",
    "preprocess_counts",
    "read_backed",
    "synthetic_donor_counts",
]

_MOVED = {"MaskingStepCallback", "R2MAEDataCollator"}


def __getattr__(name: str):
    # moved to scr2mae.integrations.transformers (imported on first use: `import scr2mae`
    # stays fast and does not need transformers)
    if name in _MOVED:
        import warnings

        from ..integrations import transformers

        warnings.warn(
            f"`scr2mae.data.{name}` moved to `scr2mae.integrations.transformers.{name}`; "
            "the old path will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(transformers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
