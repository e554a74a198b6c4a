"""Data loading and preprocessing for scr2mae."""

from ._census import (
    CENSUS_OBS_COLUMNS,
    anndata_batches,
    census_batches,
    census_datamodule,
    datamodule_batches,
    embed_census,
    load_census,
    open_census,
    parse_age_years,
    read_cellxgene_h5ad,
    write_census_standin,
)
from ._datasets import pbmc68k_counts
from ._preprocess import log_normalize, preprocess_counts
from ._synthetic import synthetic_donor_counts

__all__ = ["pbmc68k_counts"]
__all__ += [
    "CENSUS_OBS_COLUMNS",
    "anndata_batches",
    "census_batches",
    "census_datamodule",
    "datamodule_batches",
    "embed_census",
    "load_census",
    "log_normalize",
    "open_census",
    "parse_age_years",
    "preprocess_counts",
    "read_cellxgene_h5ad",
    "synthetic_donor_counts",
    "write_census_standin",
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
