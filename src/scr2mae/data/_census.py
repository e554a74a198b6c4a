"""Loading single-cell counts from the CELLxGENE Census (or any SOMA experiment laid out like it).

The Census is a TileDB-SOMA collection: ``census_data/<organism>`` is an Experiment whose
``RNA`` measurement holds raw integer counts in the ``raw`` X layer, with cell metadata
(``donor_id``, ``cell_type``, ``disease``, ``development_stage``, ``dataset_id`` …) in ``obs``.
Every function here takes the Census location as an argument (``census_uri``), so a small local
experiment with the same layout goes through exactly the same code as the real Census.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData, read_h5ad
from scipy import sparse

from .._validation import check_count_matrix, check_int

__all__ = [
    "CENSUS_OBS_COLUMNS",
    "anndata_batches",
    "census_batches",
    "census_datamodule",
    "datamodule_batches",
    "embed_census",
    "load_census",
    "open_census",
    "parse_age_years",
    "read_cellxgene_h5ad",
    "write_census_standin",
]

#: obs columns kept by default (donor, cell type, disease and age are what the probes need)
CENSUS_OBS_COLUMNS = (
    "dataset_id",
    "donor_id",
    "cell_type",
    "cell_type_ontology_term_id",
    "disease",
    "development_stage",
    "tissue",
    "assay",
    "sex",
    "is_primary_data",
)

_ORGANISMS = {"homo sapiens": "homo_sapiens", "mus musculus": "mus_musculus"}


def _client_config(timeout: float | None) -> dict[str, str]:
    """TileDB's own S3 timeouts: each connection and each request, not the whole download."""
    if timeout is None:
        return {}
    ms = str(max(1, math.ceil(timeout * 1000)))
    return {"vfs.s3.connect_timeout_ms": ms, "vfs.s3.request_timeout_ms": ms}


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the Census cannot be reached"; everything else passes through."""
    import requests  # the release directory lookup of cellxgene_census
    import tiledbsoma

    return (tiledbsoma.DoesNotExistError, requests.RequestException, OSError)


def open_census(
    census_uri: str | None = None,
    census_version: str | None = "stable",
    timeout: float | None = 120.0,
):
    """Open the CELLxGENE Census, or a local SOMA collection with the Census layout.

    Parameters
    ----------
    census_uri
        Location of a Census copy (local path or ``s3://`` URI). ``None`` opens the public
        Census release ``census_version`` (needs network access).
    census_version
        Release to open when ``census_uri`` is ``None`` (e.g. ``"stable"`` or ``"2025-01-30"``).
    timeout
        Seconds TileDB waits to connect to the Census store and for each request (its
        ``vfs.s3.connect_timeout_ms`` and ``vfs.s3.request_timeout_ms``), for the open and
        every read through the returned handle; ``None`` keeps TileDB's defaults. A long
        download is not cut short as long as data keep arriving.

    Returns
    -------
    The opened ``tiledbsoma.Collection`` (use it as a context manager or call ``close()``).

    Raises
    ------
    ConnectionError
        When the Census cannot be reached (no network, timeout, missing location). Other
        errors are raised unchanged.
    """
    if census_uri is not None and not isinstance(census_uri, str):
        raise TypeError(f"`census_uri` must be a string or None, got {type(census_uri).__name__}.")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"`timeout` must be positive or None, got {timeout!r}.")
    import cellxgene_census

    config = _client_config(timeout)
    if census_uri is not None:
        where = f"the SOMA collection at {census_uri!r}"
        location = {"uri": census_uri}
    else:
        where = f"the CELLxGENE Census (release {census_version!r})"
        location = {"census_version": census_version}
    try:
        return cellxgene_census.open_soma(**location, tiledb_config=config)
    except _unreachable_errors() as err:
        raise ConnectionError(f"could not open {where}: {type(err).__name__}: {err}") from err


def _build_obs_filter(dataset_ids: Sequence[str] | None, obs_value_filter: str | None) -> str:
    parts = []
    if dataset_ids is not None:
        ids = [dataset_ids] if isinstance(dataset_ids, str) else list(dataset_ids)
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise ValueError(f"`dataset_ids` must be non-empty strings, got {dataset_ids!r}.")
        parts.append("dataset_id in [" + ", ".join(repr(i) for i in ids) + "]")
    if obs_value_filter is not None:
        if not isinstance(obs_value_filter, str) or not obs_value_filter.strip():
            raise ValueError(
                f"`obs_value_filter` must be a non-empty string, got {obs_value_filter!r}."
            )
        parts.append(f"({obs_value_filter})")
    if not parts:
        raise ValueError(
            "give `dataset_ids` and/or `obs_value_filter`; loading a whole Census organism into "
            "memory is not supported (use `census_datamodule` for out-of-core training)."
        )
    return " and ".join(parts)


def _experiment_name(organism: str) -> str:
    if not isinstance(organism, str):
        raise TypeError(f"`organism` must be a string, got {type(organism).__name__}.")
    key = organism.strip().lower().replace("_", " ")
    if key not in _ORGANISMS:
        raise ValueError(f"`organism` must be one of {sorted(_ORGANISMS)}, got {organism!r}.")
    return _ORGANISMS[key]


_AGE_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)[- ](year|month)[- ]old (?:human )?stage$")
_AGE_SCALES = {"year": 1.0, "month": 1.0 / 12.0}


def parse_age_years(development_stage: Sequence[str] | pd.Series) -> np.ndarray:
    """Exact age in years from Census ``development_stage`` labels.

    ``"63-year-old stage"`` gives 63 and ``"18-month-old stage"`` 1.5; broad categories
    (``"80 year-old and over stage"``, ``"sixth decade stage"``, ``"adult stage"``,
    ``"unknown"``) give NaN, because appendix C.8 removes cells "containing broad categories
    instead of exact ages" from the age regression.

    Parameters
    ----------
    development_stage
        Labels, one per cell.

    Returns
    -------
    Float array of ages in years (NaN where no exact age is given).
    """
    if isinstance(development_stage, str):
        raise TypeError("`development_stage` must be a sequence of labels, not a single string.")
    labels = pd.Series(development_stage, dtype="object").astype(str)
    uniques = pd.Series(labels.unique(), dtype="object")
    found = uniques.str.strip().str.lower().str.extract(_AGE_PATTERN)
    ages = found[0].astype(np.float64) * found[1].map(_AGE_SCALES).astype(np.float64)
    return labels.map(dict(zip(uniques, ages, strict=True))).to_numpy(dtype=np.float64)


def _finalise(adata: AnnData, counts_layer: str, var_index: str | None) -> AnnData:
    """Integer CSR counts in ``counts_layer`` and ``X``, string categories, ``age_years``."""
    X = adata.X = adata.X.tocsr() if sparse.issparse(adata.X) else sparse.csr_matrix(adata.X)
    # the Census "raw" layer holds integer counts; anything else was the wrong layer
    where = "Census X layer (load 'raw')"
    check_count_matrix(adata, None, where=where, allow_empty=True, allow_non_integer=False)
    counts = X.astype(np.int32 if (not X.data.size or X.data.max() < 2**31) else np.int64)
    adata.X = counts.copy()
    adata.layers[counts_layer] = counts
    for col in adata.obs.columns:
        if adata.obs[col].dtype == object:
            adata.obs[col] = adata.obs[col].astype("category")
    if "development_stage" in adata.obs:
        adata.obs["age_years"] = parse_age_years(adata.obs["development_stage"])
    if var_index is not None and var_index in adata.var:
        names = adata.var[var_index].astype(str)
        if names.is_unique:
            adata.var_names = names.to_numpy()
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    return adata


def load_census(
    dataset_ids: str | Sequence[str] | None = None,
    obs_value_filter: str | None = None,
    census_uri: str | None = None,
    organism: str = "Homo sapiens",
    obs_columns: Sequence[str] | None = CENSUS_OBS_COLUMNS,
    var_value_filter: str | None = None,
    x_layer: str = "raw",
    counts_layer: str = "counts",
    var_index: str | None = "feature_name",
    census_version: str | None = "stable",
    timeout: float | None = 120.0,
) -> AnnData:
    """Load cells of the CELLxGENE Census (selected by dataset id and/or obs filter) into memory.

    Parameters
    ----------
    dataset_ids
        One or several Census ``dataset_id`` values (e.g. the HLCA or SEA-AD dataset).
    obs_value_filter
        A SOMA value filter on ``obs``, e.g. ``"tissue_general == 'lung' and disease ==
        'normal'"``; combined with ``dataset_ids`` by ``and``.
    census_uri, census_version, timeout
        Census location and TileDB's timeouts, as in :func:`open_census`; a local SOMA
        collection with the Census layout works the same way.
    organism
        ``"Homo sapiens"`` or ``"Mus musculus"``.
    obs_columns
        ``obs`` columns to keep (those missing from the experiment are skipped); ``None``
        keeps all.
    var_value_filter
        Optional SOMA value filter on genes.
    x_layer
        X layer with raw counts (``"raw"`` in the Census).
    counts_layer
        Name of the layer that receives the integer counts (``X`` holds them too).
    var_index
        ``var`` column used as gene names when unique (``"feature_name"``); ``None`` keeps
        the Ensembl ids.

    Returns
    -------
    AnnData with integer counts (CSR) in ``.layers[counts_layer]`` and ``.X``, the kept
    ``obs`` columns as categories, and ``obs["age_years"]`` parsed from
    ``development_stage`` (see :func:`parse_age_years`).

    Raises
    ------
    ValueError
        For an empty selection or bad arguments.
    ConnectionError
        When the Census cannot be reached in time.
    """
    value_filter = _build_obs_filter(dataset_ids, obs_value_filter)
    exp_name = _experiment_name(organism)
    if not isinstance(counts_layer, str) or not counts_layer:
        raise ValueError(f"`counts_layer` must be a non-empty string, got {counts_layer!r}.")
    import cellxgene_census

    census = open_census(census_uri, census_version=census_version, timeout=timeout)
    try:
        experiment = census["census_data"][exp_name]
        available = set(experiment.obs.schema.names)
        columns = None
        if obs_columns is not None:
            columns = ["soma_joinid"] + [c for c in obs_columns if c in available]
        adata = cellxgene_census.get_anndata(
            census,
            organism=organism,
            measurement_name="RNA",
            X_name=x_layer,
            obs_value_filter=value_filter,
            var_value_filter=var_value_filter,
            obs_column_names=columns,
        )
    finally:
        census.close()
    if adata.n_obs == 0:
        raise ValueError(f"no cells match the filter {value_filter!r}.")
    return _finalise(adata, counts_layer, var_index)


def read_cellxgene_h5ad(
    path: str,
    counts_layer: str = "counts",
    var_index: str | None = "feature_name",
) -> AnnData:
    """Read an ``.h5ad`` downloaded from the CELLxGENE portal, with the raw counts restored.

    Portal files keep the raw counts in ``.raw.X`` (and normalised values in ``.X``) when
    both exist, otherwise the counts in ``.X``. Dataset-specific columns that the Census does
    not carry (for SEA-AD e.g. the ADNC score and supertypes) are kept.

    Parameters
    ----------
    path
        Path of the ``.h5ad`` file.
    counts_layer, var_index
        As in :func:`load_census` (``None`` for ``var_index`` keeps the file's index).

    Returns
    -------
    AnnData laid out as :func:`load_census` returns it.
    """
    if not isinstance(path, str | bytes) and not hasattr(path, "__fspath__"):
        raise TypeError(f"`path` must be a path, got {type(path).__name__}.")
    src = read_h5ad(path)
    if src.raw is not None:
        adata = AnnData(X=src.raw.X, obs=src.obs.copy(), var=src.raw.var.copy())
        if var_index is not None and var_index not in adata.var and var_index in src.var:
            adata.var[var_index] = src.var[var_index].reindex(adata.var_names).to_numpy()
    else:
        adata = AnnData(X=src.X, obs=src.obs.copy(), var=src.var.copy())
    return _finalise(adata, counts_layer, var_index)


def census_datamodule(
    dataset_ids: str | Sequence[str] | None = None,
    obs_value_filter: str | None = None,
    census_uri: str | None = None,
    organism: str = "Homo sapiens",
    batch_column_names: Sequence[str] = ("donor_id",),
    var_joinids: Sequence[int] | None = None,
    batch_size: int = 400,
    train_size: float = 0.9,
    seed: int = 0,
    x_layer: str = "raw",
    census_version: str | None = "stable",
    timeout: float | None = 120.0,
    **kwargs: Any,
):
    """Out-of-core training data for :class:`~scr2mae.R2MAEModel` from a SOMA experiment.

    Wraps scvi-tools' :class:`~scvi.dataloaders.TileDBDataModule` (which streams mini-batches
    through ``tiledbsoma_ml``) around a query of the Census, so that atlases larger than memory
    can be used::

        dm = census_datamodule(dataset_ids=[...], census_uri=None)
        model = R2MAEModel(registry=dm.registry)
        model.train(datamodule=dm, max_epochs=50)

    Parameters
    ----------
    dataset_ids, obs_value_filter
        Cell selection, as in :func:`load_census`.
    census_uri, organism, census_version, timeout
        Census location, as in :func:`load_census`.
    batch_column_names
        ``obs`` columns whose combination is the model's batch covariate.
    var_joinids
        ``soma_joinid`` of the genes to use (e.g. the highly variable genes found on a
        subsample); ``None`` uses all genes.
    batch_size
        Cells per mini-batch (the paper used 400).
    train_size
        Fraction of cells used for training; the rest is the validation set.
    seed
        Seed of the shuffling and of the train/validation split.
    x_layer
        X layer with raw counts.
    **kwargs
        Passed to :class:`~scvi.dataloaders.TileDBDataModule` (e.g. ``dataloader_kwargs``).

    Returns
    -------
    The ``TileDBDataModule``; the open Census is kept in its ``census`` attribute (close it
    when done).
    """
    value_filter = _build_obs_filter(dataset_ids, obs_value_filter)
    exp_name = _experiment_name(organism)
    if isinstance(batch_column_names, str) or not all(
        isinstance(c, str) for c in batch_column_names
    ):
        raise TypeError("`batch_column_names` must be a sequence of column names.")
    check_int("batch_size", batch_size, 2)
    if not 0.0 < float(train_size) <= 1.0:
        raise ValueError(f"`train_size` must lie in (0, 1], got {train_size!r}.")
    import tiledbsoma
    from scvi.dataloaders import TileDBDataModule

    census = open_census(census_uri, census_version=census_version, timeout=timeout)
    try:
        experiment = census["census_data"][exp_name]
        missing = set(batch_column_names) - set(experiment.obs.schema.names)
        if missing:
            raise ValueError(
                f"`batch_column_names` not in the experiment's obs: {sorted(missing)}."
            )
        coords = () if var_joinids is None else (np.asarray(var_joinids, dtype=np.int64),)
        query = experiment.axis_query(
            "RNA",
            obs_query=tiledbsoma.AxisQuery(value_filter=value_filter),
            var_query=tiledbsoma.AxisQuery(coords=coords),
        )
        datamodule = TileDBDataModule(
            query,
            layer_name=x_layer,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            batch_column_names=list(batch_column_names),
            train_size=float(train_size),
            split_seed=seed,
            dataloader_kwargs=kwargs.pop("dataloader_kwargs", {"num_workers": 0}),
            **kwargs,
        )
        if datamodule.n_obs == 0:
            raise ValueError(f"no cells match the filter {value_filter!r}.")
    except BaseException:
        census.close()
        raise
    datamodule.census = census
    return datamodule


def datamodule_batches(datamodule, which: str = "train"):
    """Mini-batches of a ``TileDBDataModule``'s training or validation loader.

    These are the *shuffled* mini-batches the model trains on, without cell ids: use them to
    look at training data. To embed cells, use :func:`embed_census` (or
    :func:`census_batches`), which reads them in a fixed order with their ``soma_joinid``.

    Parameters
    ----------
    datamodule
        A set-up or not yet set-up ``TileDBDataModule`` (it is set up if needed).
    which
        ``"train"`` or ``"val"``.

    Yields
    ------
    Dictionaries with ``"X"``, ``"batch"`` and the other registered tensors.
    """
    if which not in ("train", "val"):
        raise ValueError(f"`which` must be 'train' or 'val', got {which!r}.")
    if not hasattr(datamodule, "train_dataset"):
        datamodule.setup()
    loader = datamodule.train_dataloader() if which == "train" else datamodule.val_dataloader()
    if loader is None:
        raise ValueError("the data module has no validation split (train_size=1).")
    for batch in loader:
        yield datamodule.on_before_batch_transfer(batch, 0)


#: key of the cell ids in the mini-batches of :func:`census_batches`
_SOMA_JOINID = "soma_joinid"


def census_batches(datamodule, batch_size: int = 1024, x_layer: str | None = None):
    """Every cell of a data module's query, unshuffled, with its ``soma_joinid``.

    The inference pass of scvi-tools' Census workflow: one fixed-order read of all cells the
    ``TileDBDataModule`` was built on (training and validation cells alike), encoded as the
    data module encodes its mini-batches, so a model trained on it can embed them and the
    embeddings can be joined back to the cells.

    Parameters
    ----------
    datamodule
        The ``TileDBDataModule`` the model was trained with (e.g. from
        :func:`census_datamodule`).
    batch_size
        Cells per mini-batch.
    x_layer
        X layer with the raw counts; ``None`` reads the data module's own.

    Returns
    -------
    An iterator of dictionaries with ``"X"``, ``"batch"``, the data module's other tensors and
    ``"soma_joinid"`` (a long tensor with the cells' ids), in the query's cell order.
    """
    check_int("batch_size", batch_size)
    from tiledbsoma_ml import ExperimentDataset, experiment_dataloader

    columns = [_SOMA_JOINID, *(datamodule.batch_column_names or [])]
    if x_layer is None:
        x_layer = datamodule.dataset_kwargs.get("layer_name", "raw")
    dataset = ExperimentDataset(
        datamodule.query,
        layer_name=x_layer,
        obs_column_names=columns,
        batch_size=batch_size,
        shuffle=False,
    )

    def batches():
        for x, obs in experiment_dataloader(dataset, num_workers=0):
            ids = torch.as_tensor(obs[_SOMA_JOINID].to_numpy(dtype=np.int64))
            tensors = datamodule.on_before_batch_transfer((x, obs), 0)
            tensors[_SOMA_JOINID] = ids
            yield tensors

    return batches()


def embed_census(
    model, datamodule, batch_size: int = 1024, x_layer: str | None = None
) -> pd.DataFrame:
    """Latent representation of every cell of a data module's query, indexed by ``soma_joinid``.

    A model trained out of core (``R2MAEModel(registry=dm.registry)``) embeds the cells through
    :func:`census_batches`, so each row is labelled with its cell::

        z = embed_census(model, dm)
        obs = dm.query.obs().concat().to_pandas().set_index("soma_joinid")
        obs.join(z)

    Parameters
    ----------
    model
        A trained model with ``get_latent_representation(dataloader=...)`` (e.g.
        :class:`~scr2mae.R2MAEModel`).
    datamodule, batch_size, x_layer
        As in :func:`census_batches` (``batch_size`` cells per forward pass).

    Returns
    -------
    DataFrame with one row per cell (index ``soma_joinid``, in the query's order) and one
    column per latent dimension.
    """
    ids: list[torch.Tensor] = []

    def recording():
        for tensors in census_batches(datamodule, batch_size, x_layer):
            ids.append(tensors[_SOMA_JOINID])
            yield tensors

    z = np.asarray(model.get_latent_representation(dataloader=recording()))
    index = pd.Index(torch.cat(ids).numpy(), name=_SOMA_JOINID)
    return pd.DataFrame(z, index=index, columns=[f"latent_{i}" for i in range(z.shape[1])])


def anndata_batches(
    adata: AnnData, datamodule, layer: str | None = "counts", batch_size: int = 1024
):
    """Mini-batches of in-memory cells, encoded exactly as a ``TileDBDataModule`` encodes its own.

    A model trained out of core (``R2MAEModel(registry=dm.registry)``) has no AnnData of its
    own; this turns cells loaded with :func:`load_census` (same genes) into the tensor
    dictionaries the model reads, in the order of ``adata``, so that their embeddings can be
    put next to their metadata::

        z = model.get_latent_representation(dataloader=anndata_batches(adata, dm))

    Parameters
    ----------
    adata
        Cells with the data module's genes, in the same order (checked through
        ``var["soma_joinid"]``, which :func:`load_census` keeps), and its batch columns in
        ``obs``.
    datamodule, batch_size
        As in :func:`census_batches`.
    layer
        Layer with the counts; ``None`` uses ``adata.X``.

    Returns
    -------
    An iterator of dictionaries with ``"X"``, ``"batch"`` and the data module's other tensors.

    Raises
    ------
    ValueError
        When the genes differ from the data module's, a batch column is missing, or a batch
        value was not seen by the data module (all checked when called, before any reading).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    check_int("batch_size", batch_size)
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"layer {layer!r} not found; available layers: {sorted(adata.layers)}.")
    if "soma_joinid" not in adata.var:
        raise ValueError(
            "`adata.var` has no 'soma_joinid' column; load the cells with `load_census` so "
            "that their genes can be matched to the data module's."
        )
    expected = np.asarray(datamodule.query.var_joinids()).astype(np.int64)
    found = adata.var["soma_joinid"].to_numpy().astype(np.int64)
    if found.shape != expected.shape or not np.array_equal(found, expected):
        raise ValueError(
            f"the genes of `adata` ({found.size}) are not the data module's ({expected.size}) in "
            "the same order; subset with `adata[:, order]` where order follows "
            "`datamodule.query.var_joinids()`."
        )
    columns = list(datamodule.batch_column_names or [])
    missing = [c for c in columns if c not in adata.obs]
    if missing:
        raise ValueError(f"batch columns missing from `adata.obs`: {missing}.")
    obs = adata.obs[columns].copy()
    if columns:
        keys = obs[columns].astype(str).agg(datamodule.batch_colsep.join, axis=1)
        unseen = sorted(set(keys) - {str(v) for v in datamodule.batch_encoder.classes_})
        if unseen:
            raise ValueError(f"batch values not seen by the data module: {unseen[:5]}.")
    matrix = adata.X if layer is None else adata.layers[layer]

    def batches():
        for start in range(0, adata.n_obs, batch_size):
            chunk = matrix[start : start + batch_size]
            chunk = chunk.toarray() if sparse.issparse(chunk) else np.asarray(chunk)
            part = obs.iloc[start : start + batch_size].reset_index(drop=True)
            yield datamodule.on_before_batch_transfer((chunk.astype(np.float32), part), 0)

    return batches()


def write_census_standin(
    adata: AnnData,
    uri: str,
    organism: str = "Homo sapiens",
    counts_layer: str | None = "counts",
) -> str:
    """Write an AnnData as a local SOMA collection laid out like the CELLxGENE Census.

    The result can be passed as ``census_uri`` to :func:`load_census`,
    :func:`census_datamodule` and :func:`open_census`, which then run exactly as against the
    public Census. This is how the tutorials and tests exercise the Census code without
    network access; it also lets you stage your own data for out-of-core training.

    Parameters
    ----------
    adata
        Cells with raw integer counts and Census-style ``obs`` columns (``dataset_id``,
        ``donor_id``, ``disease``, ...). It is not modified.
    uri
        Folder to create (it must not exist yet).
    organism
        ``"Homo sapiens"`` or ``"Mus musculus"``: the experiment is written to
        ``census_data/homo_sapiens`` or ``census_data/mus_musculus``.
    counts_layer
        Layer with the counts (``None``: ``adata.X``); written as the ``raw`` X layer of the
        ``RNA`` measurement.

    Returns
    -------
    The location of the collection (``uri`` as a string).

    Raises
    ------
    FileExistsError
        When ``uri`` already exists.
    ValueError
        When the counts are not finite non-negative integers, the matrix is empty or the
        layer is missing.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    uri = os.fspath(uri)
    if os.path.exists(uri):
        raise FileExistsError(f"{uri!r} already exists; choose a new folder.")
    exp_name = _experiment_name(organism)
    # the stand-in holds integer counts, as the Census does (they are read back as integers)
    check_count_matrix(
        adata, counts_layer, where="write_census_standin", allow_empty=True, allow_non_integer=False
    )
    counts = adata.X if counts_layer is None else adata.layers[counts_layer]
    import tiledbsoma.io

    counts = sparse.csr_matrix(counts, dtype=np.float32)
    obs = adata.obs.copy()
    for col in obs.columns:  # SOMA stores plain strings; categories are restored on reading
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].astype(str)
    var = adata.var.copy()
    for col in ("feature_id", "feature_name"):
        if col not in var:
            var[col] = np.asarray(adata.var_names, dtype=str)
    staged = AnnData(X=counts, obs=obs, var=var)
    with tiledbsoma.Collection.create(uri) as census:
        census.add_new_collection("census_info")
        census.add_new_collection("census_data")
    exp_uri = f"{uri}/census_data/{exp_name}"
    tiledbsoma.io.from_anndata(exp_uri, staged, measurement_name="RNA", X_layer_name="raw")
    with tiledbsoma.Collection.open(f"{uri}/census_data", "w") as data:
        data.set(exp_name, tiledbsoma.Experiment.open(exp_uri))
    return uri
