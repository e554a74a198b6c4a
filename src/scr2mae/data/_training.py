"""The data module that trains a model on an AnnData: in memory, or read from disk."""

from __future__ import annotations

from ._inmemory import InMemoryDataModule
from ._ondisk import OnDiskDataModule, is_on_disk
from ._panels import panel_layout

__all__ = ["training_datamodule"]


def training_datamodule(adata_manager, data_loader: str, batch_size: int, train_size, kwargs):
    """:class:`InMemoryDataModule` or, for a backed AnnData or ``data_loader="on_disk"``,
    :class:`OnDiskDataModule` (the split options are taken out of ``kwargs``); ``None`` for
    ``"scvi"`` (scvi-tools' loaders). ``adata_manager`` is ``None`` for a model without data."""
    if data_loader not in ("auto", "in_memory", "on_disk", "scvi"):
        raise ValueError(
            f"`data_loader` must be 'auto', 'in_memory', 'on_disk' or 'scvi', got {data_loader!r}."
        )
    if data_loader == "scvi":
        if adata_manager is not None and panel_layout(adata_manager) is not None:
            raise ValueError(
                "data_loader='scvi' cannot carry the genes some cells did not measure (panels "
                "of a prepared query); use 'auto', 'in_memory' or 'on_disk'."
            )
        return None
    if adata_manager is None:
        raise ValueError(
            "a model without an AnnData trains from a `datamodule` (e.g. "
            "`scr2mae.data.census_datamodule`)."
        )
    split = {
        "train_size": train_size,
        "validation_size": kwargs.pop("validation_size", None),
        "shuffle_set_split": kwargs.pop("shuffle_set_split", True),
    }
    for unused in ("load_sparse_tensor", "datasplitter_kwargs"):
        if kwargs.pop(unused, None):
            raise ValueError(f"`{unused}` is an option of data_loader='scvi' only.")
    backed = is_on_disk(adata_manager.adata)
    if data_loader == "in_memory" and backed:
        raise ValueError(
            "data_loader='in_memory' needs the AnnData in memory; this one is backed "
            "(use 'on_disk', or `adata.to_memory()`)."
        )
    module_cls = OnDiskDataModule if backed or data_loader == "on_disk" else InMemoryDataModule
    return module_cls(adata_manager, batch_size=batch_size, **split)
