"""Count-matrix and `.obs` checks shared by the model and the data helpers (run before any
AnnData is registered or any training starts)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .masking._checks import check_int as check_int

_CHUNK_ROWS = 10_000

#: ``.obs`` column written by :meth:`~scr2mae.R2MAEModel.prepare_query_anndata`: the number of
#: model genes measured in each cell.
N_MEASURED_KEY = "scr2mae_n_measured_genes"


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


def counts_anndata(matrix, layer: str | None, obs: pd.DataFrame, var: pd.DataFrame) -> AnnData:
    """An AnnData holding ``matrix`` as ``layers[layer]``, or as ``X`` when ``layer`` is None."""
    layers = {} if layer is None else {layer: matrix}
    return AnnData(X=matrix if layer is None else None, obs=obs, var=var, layers=layers)


def _names(layer: str | None, where: str) -> tuple[str, str]:
    """The message prefix naming the caller, and the name of the checked matrix."""
    return f"{where}: " if where else "", "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _iter_blocks(mat):
    """Yield (row_offset, block) pairs where block is a numpy array or CSR matrix."""
    for start in range(0, mat.shape[0], _CHUNK_ROWS):
        block = mat[start : start + _CHUNK_ROWS]
        yield start, sparse.csr_matrix(block) if sparse.issparse(block) else np.asarray(block)


# The rules that tell counts from normalised or log-normalised data are listed in the docstring
# of `check_count_matrix`; ambient correction moves each entry by its own amount, which leaves
# neither a common total nor a per-cell unit.
_EQUAL_TOTAL_RTOL = 1e-3
_SAMPLE_CELLS = 500  # cells read for rule 2, evenly spaced through the matrix
_MIN_NONZERO = 5  # cells with fewer non-zero values are not judged by rule 2
_UNIT_DIVISORS = (1, 2, 3, 4)  # the smallest count of a cell may be 1, 2, 3 or 4
_MAX_MULTIPLE = 1e4  # larger ratios to the unit cannot be told from chance
_ON_GRID = 0.95  # share of a cell's values that must be multiples of its unit
_CELLS_ON_GRID = 0.8  # share of judged cells that must look rescaled
_LOG_MAX = 15.0
_LOG_NON_INTEGER = 0.9
_LOG_MIN_GENES = 100  # non-zero values per cell (mean) before rule 3 applies
_INVERSES = (
    ("", lambda v: v),
    ("log1p", np.expm1),
    ("log2(1 + x)", lambda v: np.exp2(v) - 1.0),
    ("log10(1 + x)", lambda v: np.power(10.0, v) - 1.0),
)


def _rescaled_share(block: sparse.csr_matrix, inverse) -> float:
    """Share of the cells (with enough non-zero values) whose values, after ``inverse``, are
    integer multiples of one per-cell unit; 0 when no cell can be judged."""
    nnz = np.diff(block.indptr)
    judged = nnz >= _MIN_NONZERO
    if not judged.any():
        return 0.0
    block = block[judged]
    nnz = nnz[judged]
    starts = block.indptr[:-1]
    with np.errstate(over="ignore", invalid="ignore"):
        values = inverse(block.data.astype(np.float64))
    non_integer = np.add.reduceat((block.data != np.round(block.data)).astype(float), starts)
    unit = np.minimum.reduceat(values, starts)
    ratio = values / np.repeat(unit, nnz)
    on_grid = np.zeros(nnz.size)
    for divisor in _UNIT_DIVISORS:
        multiple = ratio * divisor
        near = (multiple <= _MAX_MULTIPLE) & (
            np.abs(multiple - np.round(multiple)) <= 0.02 + 1e-5 * multiple
        )
        on_grid = np.maximum(on_grid, np.add.reduceat(near.astype(float), starts) / nnz)
    # a cell of integers with a few corrected entries is not rescaled (its unit is 1): the unit
    # must be non-integer (0.5 for halved counts, 10^4 / total for counts per 10^4) or most
    # values must be (log1p of counts has the unit 1)
    rescaled = (on_grid >= _ON_GRID) & ((unit != np.round(unit)) | (non_integer / nnz >= 0.5))
    return float(rescaled.mean())


def _sample_rows(mat) -> sparse.csr_matrix:
    n_obs = mat.shape[0]
    rows = np.unique(np.linspace(0, n_obs - 1, min(n_obs, _SAMPLE_CELLS)).astype(np.int64))
    block = mat[rows]
    block = sparse.csr_matrix(block if sparse.issparse(block) else np.asarray(block), dtype=float)
    block.data = np.nan_to_num(block.data, nan=0.0)  # unmeasured genes take no part
    block.eliminate_zeros()
    block.sort_indices()
    return block


def _transformed_reason(
    mat, cell_totals: np.ndarray, n_non_integer: int, n_nonzero: int, max_value: float
) -> str | None:
    """Why the non-integer values of ``mat`` look normalised or log-transformed, else None."""
    totals = cell_totals[cell_totals > 0]
    if totals.size >= 2:
        median = float(np.median(totals))
        if (totals.max() - totals.min()) <= _EQUAL_TOTAL_RTOL * median:
            return (
                f"looks normalised: every cell sums to {median:.6g} and {n_non_integer:,} values "
                "are non-integer, as after `sc.pp.normalize_total`"
            )
    sample = _sample_rows(mat)
    for name, inverse in _INVERSES:
        if name and max_value > 40:  # log data never reaches 40 (log2 of 10^12)
            continue
        share = _rescaled_share(sample, inverse)
        if share >= _CELLS_ON_GRID:
            if not name:
                return (
                    f"looks normalised: in {share:.0%} of the cells checked, the non-integer "
                    "values are integer multiples of one per-cell factor (counts scaled per "
                    "cell, e.g. `sc.pp.normalize_total` or counts per million)"
                )
            return (
                f"looks log-normalised: in {share:.0%} of the cells checked, the non-integer "
                f"values are {name} of counts scaled per cell (e.g. `sc.pp.normalize_total` "
                "then `sc.pp.log1p`)"
            )
    if (
        n_nonzero >= _LOG_MIN_GENES * cell_totals.size
        and max_value <= _LOG_MAX
        and n_non_integer >= _LOG_NON_INTEGER * n_nonzero
    ):
        return (
            f"looks log-transformed: no value exceeds {max_value:.3g} and "
            f"{n_non_integer / n_nonzero:.0%} of the non-zero values are non-integer"
        )
    return None


def _check_values(values: np.ndarray, prefix: str, name: str, allow_unmeasured: bool):
    """Refuse non-numeric, infinite, negative and (unless allowed) NaN values.

    Returns the NaN positions of ``values`` when there are any (and they are allowed).
    """
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise ValueError(f"{prefix}{name} must be numeric counts, got dtype {values.dtype}.")
    if not values.size:
        return None
    nan = None
    if np.issubdtype(values.dtype, np.floating):
        if np.isinf(values).any():
            raise ValueError(f"{prefix}{name} contains infinite values.")
        nan = np.isnan(values)
        if not nan.any():
            nan = None
        elif not allow_unmeasured:
            raise ValueError(
                f"{prefix}{name} contains {int(nan.sum())} NaN value(s); counts must be "
                "finite. If NaN marks genes that were not measured, align the data with "
                "`R2MAEModel.prepare_query_anndata(adata, model, nan_as_unmeasured=True)`, "
                "which records them as unmeasured genes of each cell's panel."
            )
    finite = values if nan is None else values[~nan]
    if finite.size and finite.min() < 0:
        raise ValueError(
            f"{prefix}{name} contains negative values (min {finite.min():.4g}); "
            "raw non-negative counts are required, not centred, scaled or "
            "batch-corrected data (pass `layer=` naming the counts)."
        )
    return nan


def check_count_matrix(
    adata: AnnData,
    layer: str | None = None,
    *,
    where: str = "",
    allow_empty: bool = False,
    allow_unmeasured: bool = False,
    allow_non_integer: bool = True,
    measured_genes: np.ndarray | None = None,
    report_empty_genes: bool = True,
) -> None:
    """Check that a layer holds counts usable by a count model.

    Counts are raw integers or non-negative, non-integer counts corrected for ambient RNA
    (SoupX, DecontX, CellBender); the latter are accepted with a warning that says how many
    values are not integers. Normalised or log-normalised data is refused. The rules that
    tell them apart, in order:

    1. every cell sums to the same total (within 0.1 %) while values are non-integer: counts
       normalised to a common total (``sc.pp.normalize_total``);
    2. in at least 80 % of up to 500 cells spread through the matrix (those with at least five
       non-zero values), 95 % of the values are integer multiples of one per-cell unit (the
       cell's smallest non-zero value, or it divided by 2, 3 or 4) and the unit, or at least
       half of the values, are non-integer; either as they are (counts scaled per cell, also
       after a gene subset) or after undoing ``log1p``, ``log2(1 + x)`` or ``log10(1 + x)``
       (log-normalised data). Ambient correction moves every entry by its own amount and
       leaves no such unit; a cell of integers with a few corrected entries has the unit 1;
    3. cells have on average at least 100 non-zero values, no value exceeds 15 and at least
       90 % of the non-zero values are non-integer: the range of log-transformed data (also
       rounded log values, which rule 2 misses), which counts of cells with that many
       detected genes exceed in some gene.

    Parameters
    ----------
    adata
        The AnnData to check; it is only read.
    layer
        Layer with the counts, ``None`` for ``adata.X``. Messages name it
        (``adata.layers['counts']`` or ``adata.X``).
    where
        Optional text naming the caller, prefixed to error messages.
    allow_empty
        Accept cells without any counts (e.g. when only storing the matrix). Genes without
        counts are always accepted: they are measured zeros, common in subsets and small
        queries (a warning names how many).
    allow_unmeasured
        Accept NaN entries as genes a cell's assay did not measure (only
        :meth:`~scr2mae.R2MAEModel.prepare_query_anndata` reads them so, when asked; the
        AnnData it returns holds no NaN).
    allow_non_integer
        Accept non-integer counts that do not look normalised, with a warning. ``False``
        refuses every non-integer value (where integers are stored, as for the Census).
    measured_genes
        Optional boolean ``(genes,)``: ``False`` marks genes no cell measured (the panels of a
        prepared query), which are not reported as genes without counts.
    report_empty_genes
        Warn about measured genes without counts (off for a sample of the cells).

    Warns
    -----
    UserWarning
        When values are non-integer but accepted (how many, of how many non-zero values), and
        when genes have no counts.

    Raises
    ------
    ValueError
        If the matrix has no cells or genes, contains infinite or negative values, NaN (unless
        unmeasured genes are allowed), non-integer values that look normalised or
        log-transformed (or any, unless ``allow_non_integer``), or (unless ``allow_empty``)
        cells without any counts.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}.")
    prefix, name = _names(layer, where)
    mat = _matrix(adata, layer)
    n_obs, n_vars = mat.shape
    if n_obs == 0:
        raise ValueError(f"{prefix}{name} has zero cells.")
    if n_vars == 0:
        raise ValueError(f"{prefix}{name} has zero genes.")
    cell_totals = np.zeros(n_obs, dtype=np.float64)
    gene_totals = np.zeros(n_vars, dtype=np.float64)
    gene_nan = np.zeros(n_vars, dtype=np.int64)  # unmeasured entries per gene
    n_non_integer = n_nonzero = 0
    example = None  # one non-integer value, for the messages
    max_value = 0.0
    for start, block in _iter_blocks(mat):
        values = block.data if sparse.issparse(block) else block
        nan = _check_values(values, prefix, name, allow_unmeasured)
        if nan is not None:  # unmeasured entries count as zeros (in a copy)
            values = values[~nan]
            if sparse.issparse(block):
                gene_nan += np.bincount(block.indices[nan], minlength=n_vars)
                block = block.copy()
                block.data[nan] = 0.0
            else:
                gene_nan += nan.sum(axis=0)
                block = np.where(nan, 0.0, block)
        if values.size:
            max_value = max(max_value, float(values.max()))
            n_nonzero += int(np.count_nonzero(values))
            if np.issubdtype(values.dtype, np.floating):
                fractional = values != np.round(values)
                n_frac = int(np.count_nonzero(fractional))
                if n_frac and example is None:
                    example = float(values[fractional].flat[0])
                n_non_integer += n_frac
        cell_totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
        gene_totals += np.asarray(block.sum(axis=0)).ravel()
    if n_non_integer:
        reason = _transformed_reason(mat, cell_totals, n_non_integer, n_nonzero, max_value)
        if reason is not None:
            raise ValueError(
                f"{prefix}{name} {reason}. Pass raw counts (`layer=` naming them, e.g. "
                "'counts'); counts corrected for ambient RNA are accepted."
            )
        percent = 100 * n_non_integer / n_nonzero
        share = f"{n_non_integer:,} of {n_nonzero:,} non-zero values ({percent:.3g} %)"
        if not allow_non_integer:
            raise ValueError(
                f"{prefix}{name} contains non-integer values: {share}, e.g. {example:.6g}; "
                "integer counts are required here."
            )
        warnings.warn(
            f"{prefix}{name} holds non-integer counts: {share} are not integers (e.g. "
            f"{example:.6g}). They are used as they are, as counts corrected for ambient RNA "
            "(SoupX, DecontX, CellBender); if they are not counts, pass the raw counts instead.",
            UserWarning,
            stacklevel=3,
        )
    # genes unmeasured in every cell are not "genes without counts"
    unmeasured = gene_nan == n_obs
    if measured_genes is not None:
        unmeasured |= ~np.asarray(measured_genes, dtype=bool)
    empty_genes = np.flatnonzero((gene_totals == 0) & ~unmeasured)
    if empty_genes.size and not allow_empty and report_empty_genes:
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


#: cells :func:`check_count_sample` checks, spread evenly through the matrix
SAMPLE_CELLS = 2_000


def check_count_sample(
    adata: AnnData,
    layer: str | None = None,
    *,
    where: str = "",
    measured_genes: np.ndarray | None = None,
    n_cells: int | None = None,
) -> None:
    """:func:`check_count_matrix` on ``n_cells`` cells spread evenly through the matrix.

    For an AnnData met by a ``get_*`` call, which may read a few of many cells: the sample
    tells counts from normalised or log-normalised data, and :func:`check_count_rows` checks
    every block of cells as it is read. Genes without counts in the sample are not reported.
    ``n_cells`` defaults to :data:`SAMPLE_CELLS`.
    """
    n_cells = SAMPLE_CELLS if n_cells is None else n_cells
    mat = _matrix(adata, layer)
    n_obs = mat.shape[0]
    rows = np.unique(np.linspace(0, max(n_obs - 1, 0), min(n_obs, n_cells)).astype(np.int64))
    block = mat[rows] if rows.size < n_obs else mat
    obs, var = pd.DataFrame(index=adata.obs_names[rows]), pd.DataFrame(index=adata.var_names)
    sample = counts_anndata(block, layer, obs, var)
    check_count_matrix(
        sample,
        layer,
        where=where,
        measured_genes=measured_genes,
        report_empty_genes=rows.size == n_obs,
    )


def check_count_rows(block, obs_names: Sequence[str], layer: str | None, where: str = "") -> None:
    """Check a block of counts as it is read: finite, non-negative, no NaN, no empty cell.

    ``block`` holds the cells' counts (SciPy sparse or dense), ``obs_names`` their names for the
    messages; ``layer`` and ``where`` are as in :func:`check_count_matrix`.
    """
    prefix, name = _names(layer, where)
    values = block.data if sparse.issparse(block) else np.asarray(block)
    _check_values(values, prefix, name, allow_unmeasured=False)
    totals = np.asarray(block.sum(axis=1)).ravel()
    empty = np.flatnonzero(totals == 0)
    if empty.size:
        examples = [obs_names[i] for i in empty[:3]]
        raise ValueError(
            f"{prefix}{name} has cell(s) without any counts (e.g. {examples}); remove them "
            "first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
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
        if key is not None and key not in adata.obs.columns:
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
