"""Data loading and preprocessing for scr2mae."""

from ._census import (
    CENSUS_OBS_COLUMNS,
    anndata_batches,
    census_datamodule,
    datamodule_batches,
    load_census,
    open_census,
    parse_age_years,
    read_cellxgene_h5ad,
    write_census_standin,
)
from ._datasets import pbmc68k_counts
from ._inmemory import InMemoryDataModule, inference_batches
from ._ondisk import OnDiskDataModule, read_backed
from ._preprocess import log_normalize, preprocess_counts
from ._synthetic import synthetic_donor_counts

__all__ = ["pbmc68k_counts"]
__all__ += [
    "CENSUS_OBS_COLUMNS",
    "InMemoryDataModule",
    "OnDiskDataModule",
    "anndata_batches",
    "census_datamodule",
    "datamodule_batches",
    "inference_batches",
    "load_census",
    "log_normalize",
    "open_census",
    "parse_age_years",
    "preprocess_counts",
    "read_backed",
    "read_cellxgene_h5ad",
    "synthetic_donor_counts",
    "write_census_standin",
]
__all__ += ["MaskingStepCallback", "R2MAEDataCollator"]


def __getattr__(name: str):
    # the transformers collator is imported on first use, keeping `import scr2mae` fast
    if name in ("MaskingStepCallback", "R2MAEDataCollator"):
        from . import _collator

        return getattr(_collator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
