"""Count-matrix and `.obs` checks shared by the model and the data helpers (run before any
AnnData is registered or any training starts)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

_CHUNK_ROWS = 10_000

#: ``.obs`` column written by :meth:`~scr2mae.R2MAEModel.prepare_query_anndata`: the number of
#: model genes measured in each cell. Its presence is what allows NaN (= "not measured") entries.
N_MEASURED_KEY = "scr2mae_n_measured_genes"


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False) -> int | None:
    """Return ``value`` as ``int`` (``None`` passes when ``allow_none``).

    Raises
    ------
    ValueError
        Naming the argument, when ``value`` is not a whole number (booleans excluded) of at
        least ``minimum``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an integer >= {minimum}{none}, got {value!r}.")
    return int(value)


def _matrix(adata: AnnData, layer: str | None):
    if layer is None:
        if adata.X is None:
            raise ValueError("`adata.X` is empty (None); pass `layer=` naming the counts layer.")
        return adata.X
    if not isinstance(layer, str):
        raise TypeError(f"`layer` must be a string or None, got {type(layer).__name__}.")
    if layer not in adata.layers:
        available = sorted(adata.layers.keys()) or ["<none>"]
        raise ValueError(
            f"layer {layer!r} is not in `adata.layers`; available layers: {available}."
        )
    return adata.layers[layer]


def _iter_blocks(mat):
    """Yield (row_offset, block) pairs where block is a numpy array or CSR matrix."""
    n = mat.shape[0]
    for start in range(0, n, _CHUNK_ROWS):
        block = mat[start : start + _CHUNK_ROWS]
        if sparse.issparse(block):
            yield start, sparse.csr_matrix(block)
        else:
            yield start, np.asarray(block)


def _nan_to_zero(block):
    if sparse.issparse(block):
        block = block.copy()
        block.data = np.nan_to_num(block.data, nan=0.0)
        return block
    return np.nan_to_num(block, nan=0.0)


def check_count_matrix(
    adata: AnnData,
    layer: str | None = None,
    *,
    where: str = "",
    allow_empty: bool = False,
    allow_unmeasured: bool | None = None,
) -> None:
    """Check that a layer holds raw counts usable by a count model.

    Parameters
    ----------
    adata
        The AnnData to check; it is only read.
    layer
        Layer with the counts, ``None`` for ``adata.X``.
    where
        Optional text naming the caller, prefixed to error messages.
    allow_empty
        Accept cells without any counts (e.g. when only storing the matrix). Genes without
        counts are always accepted: they are measured zeros, common in subsets and small
        queries (a warning names how many).
    allow_unmeasured
        Accept NaN entries, which mark genes a cell's assay did not measure. ``None`` (default)
        accepts them only in an AnnData made by
        :meth:`~scr2mae.R2MAEModel.prepare_query_anndata` (it has the ``.obs`` column
        ``"scr2mae_n_measured_genes"``).

    Raises
    ------
    ValueError
        If the matrix has no cells or genes, contains infinite, negative or non-integer values,
        NaN (unless unmeasured genes are allowed), or (unless ``allow_empty``) cells without
        any counts.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}.")
    prefix = f"{where}: " if where else ""
    name = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    mat = _matrix(adata, layer)
    if allow_unmeasured is None:
        allow_unmeasured = N_MEASURED_KEY in adata.obs.columns
    n_obs, n_vars = mat.shape
    if n_obs == 0:
        raise ValueError(f"{prefix}{name} has zero cells.")
    if n_vars == 0:
        raise ValueError(f"{prefix}{name} has zero genes.")
    cell_totals = np.zeros(n_obs, dtype=np.float64)
    gene_totals = np.zeros(n_vars, dtype=np.float64)
    gene_nan = np.zeros(n_vars, dtype=np.int64)  # unmeasured entries per gene
    for start, block in _iter_blocks(mat):
        values = block.data if sparse.issparse(block) else block
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
            values.dtype, np.complexfloating
        ):
            raise ValueError(f"{prefix}{name} must be numeric counts, got dtype {values.dtype}.")
        if values.size:
            if np.issubdtype(values.dtype, np.floating):
                if np.isinf(values).any():
                    raise ValueError(f"{prefix}{name} contains infinite values.")
                nan = np.isnan(values)
                if nan.any():
                    if not allow_unmeasured:
                        raise ValueError(
                            f"{prefix}{name} contains {int(nan.sum())} NaN value(s); counts "
                            "must be finite. If NaN marks genes that were not measured, "
                            "align the data with `R2MAEModel.prepare_query_anndata(adata, "
                            "model, nan_as_unmeasured=True)`, which records them as unmeasured."
                        )
                    if sparse.issparse(block):
                        gene_nan += np.bincount(block.indices[nan], minlength=n_vars)
                    else:
                        gene_nan += nan.sum(axis=0)
                    values = values[~nan]
                    block = _nan_to_zero(block)
        if values.size:
            if values.min() < 0:
                raise ValueError(
                    f"{prefix}{name} contains negative values (min {values.min()}); "
                    "raw non-negative counts are required."
                )
            if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
                raise ValueError(
                    f"{prefix}{name} contains non-integer values; raw counts are required, not "
                    "normalised or log-transformed data (pass `layer=` naming the counts)."
                )
        cell_totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
        gene_totals += np.asarray(block.sum(axis=0)).ravel()
    # genes unmeasured in every cell are not "genes without counts"
    empty_genes = np.flatnonzero((gene_totals == 0) & (gene_nan < n_obs))
    if empty_genes.size and not allow_empty:
        examples = list(adata.var_names[empty_genes[:3]])
        warnings.warn(
            f"{prefix}{name} has {empty_genes.size} gene(s) without any counts (e.g. "
            f"{examples}); they are kept as measured zeros.",
            UserWarning,
            stacklevel=3,
        )
    if allow_empty:
        return
    empty_cells = np.flatnonzero(cell_totals == 0)
    if empty_cells.size:
        examples = list(adata.obs_names[empty_cells[:3]])
        raise ValueError(
            f"{prefix}{name} has {empty_cells.size} cell(s) without any counts (e.g. {examples}); "
            "remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )


def check_obs_keys(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    labels_key: str | None = None,
    categorical_covariate_keys: Sequence[str] | None = None,
    continuous_covariate_keys: Sequence[str] | None = None,
) -> None:
    """Check that the ``.obs`` columns named at setup exist and are usable.

    Parameters
    ----------
    adata
        The AnnData to check; it is only read.
    batch_key, labels_key
        Single categorical columns.
    categorical_covariate_keys, continuous_covariate_keys
        Lists of columns.

    Raises
    ------
    ValueError
        If a column is missing, a categorical column has missing values, or a continuous
        column is not numeric or not finite.
    """
    for arg, keys in (
        ("categorical_covariate_keys", categorical_covariate_keys),
        ("continuous_covariate_keys", continuous_covariate_keys),
    ):
        if isinstance(keys, str):
            raise TypeError(f"`{arg}` must be a list of column names, not a string ({keys!r}).")
    categorical = [("batch_key", batch_key), ("labels_key", labels_key)]
    categorical += [("categorical_covariate_keys", k) for k in categorical_covariate_keys or []]
    continuous = [("continuous_covariate_keys", k) for k in continuous_covariate_keys or []]
    for arg, key in categorical + continuous:
        if key is None:
            continue
        if key not in adata.obs.columns:
            raise ValueError(
                f"`{arg}`: column {key!r} is not in `adata.obs` "
                f"(columns: {list(adata.obs.columns)[:20]})."
            )
    for arg, key in categorical:
        if key is not None and adata.obs[key].isna().any():
            raise ValueError(
                f"`{arg}`: column {key!r} has {int(adata.obs[key].isna().sum())} missing values."
            )
    for arg, key in continuous:
        col = adata.obs[key]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ValueError(f"`{arg}`: column {key!r} must be numeric, got dtype {col.dtype}.")
        if not np.isfinite(col.to_numpy(dtype=np.float64)).all():
            raise ValueError(f"`{arg}`: column {key!r} contains NaN or infinite values.")
