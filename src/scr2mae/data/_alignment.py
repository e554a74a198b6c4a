"""Aligning an AnnData to a gene vocabulary: genes it lacks become unmeasured (panel masks)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._validation import N_MEASURED_KEY, check_count_matrix, counts_anndata
from ._panels import PANEL_KEY, panel_layout, panel_name

logger = logging.getLogger(__name__)

__all__ = ["align_to_genes", "compare_var_names", "gene_identifier_columns"]

#: ``.uns`` key of the alignment summary written into a prepared query
QUERY_UNS_KEY = "scr2mae_query"
#: stored entries renumbered at a time when a query's genes are put in the model's order
_RENUMBER_SLICE = 1 << 22


def gene_identifier_columns(var: pd.DataFrame, max_columns: int = 8) -> dict[str, list[str]]:
    """Columns of ``var`` that can identify genes: text values, unique, none missing.

    A model keeps them (e.g. Ensembl IDs beside symbols) so that a query can be matched on
    either identifier.
    """
    columns = {}
    for name in var.columns:
        col = var[name]
        text = pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)
        if not (text or isinstance(col.dtype, pd.CategoricalDtype)):
            continue
        values = col.astype(object)  # all strings, hence none missing
        if not values.is_unique or not all(isinstance(v, str) for v in values):
            continue
        columns[str(name)] = [str(v) for v in values]
        if len(columns) == max_columns:
            break
    return columns


def _query_ids(adata: AnnData, gene_key: str | None) -> pd.Index:
    if gene_key is None:
        return pd.Index(adata.var_names.astype(str))
    if not isinstance(gene_key, str):
        raise TypeError(f"`gene_key` must be a string or None, got {type(gene_key).__name__}.")
    if gene_key not in adata.var.columns:
        raise ValueError(
            f"`gene_key`: column {gene_key!r} is not in the query's `.var` "
            f"(columns: {list(adata.var.columns)[:20]})."
        )
    column = adata.var[gene_key].astype(object)
    return pd.Index(column.where(column.notna(), None).map(lambda v: v if v is None else str(v)))


#: ``min_gene_overlap="auto"``: enough when this share of the model's genes matches, or when
#: this share of the query's own genes and at least this many genes do (a targeted panel whose
#: genes match passes; identifiers of another kind, which match almost none, do not)
AUTO_MODEL_SHARE, AUTO_QUERY_SHARE, AUTO_MIN_GENES = 0.25, 0.5, 20


def _min_overlap(min_gene_overlap: float | int | str, n_model: int, n_query: int) -> int:
    if min_gene_overlap == "auto":
        by_model = _min_overlap(AUTO_MODEL_SHARE, n_model, n_query)
        by_query = max(AUTO_MIN_GENES, int(np.ceil(AUTO_QUERY_SHARE * n_query - 1e-9)))
        return min(by_model, by_query)
    if isinstance(min_gene_overlap, bool) or not isinstance(min_gene_overlap, int | float):
        raise TypeError(
            "`min_gene_overlap` must be 'auto', a fraction or a number of genes, "
            f"got {min_gene_overlap!r}."
        )
    if isinstance(min_gene_overlap, float):
        if not 0.0 < min_gene_overlap <= 1.0:
            raise ValueError(
                f"`min_gene_overlap` as a fraction must lie in (0, 1], got {min_gene_overlap!r}."
            )
        return max(1, int(np.ceil(min_gene_overlap * n_model - 1e-9)))
    if min_gene_overlap < 1:
        raise ValueError(f"`min_gene_overlap` must be at least 1 gene, got {min_gene_overlap!r}.")
    return int(min_gene_overlap)


def _unique_rows(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the distinct rows of a bit-packed boolean matrix (in order of first
    appearance) and the distinct row of every row."""
    packed = np.ascontiguousarray(packed)
    keys = packed.view(np.dtype((np.void, max(packed.shape[1], 1)))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    codes, order = pd.factorize(inverse.ravel())  # numbered in order of first appearance
    return first[order], codes


def _unique_panels(panels: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Identical panels merged and numbered in order of the cells' first appearance; only the
    panels some cell uses are kept (a category column may name panels no cell has left)."""
    rows, inverse = _unique_rows(np.packbits(panels, axis=1))
    codes, order = pd.factorize(inverse[codes])
    return panels[rows][order], codes


def _nan_panels(x: sparse.csr_matrix, nan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's pattern of NaN genes as a panel: codes and masks (``True`` = measured).

    Panel 0 measures every gene (cells without NaN); the others are the distinct NaN sets.
    """
    n_obs, n_genes = x.shape
    positions = np.flatnonzero(nan)
    rows = np.searchsorted(x.indptr, positions, side="right") - 1
    affected = np.unique(rows)
    local = np.searchsorted(affected, rows)
    pattern = sparse.csr_matrix(
        (np.ones(positions.size, dtype=bool), (local, x.indices[positions])),
        shape=(affected.size, n_genes),
    )
    # densified 10,000 cells at a time
    chunks = (pattern[a : a + 10_000].toarray() for a in range(0, affected.size, 10_000))
    packed = np.concatenate([np.packbits(chunk, axis=1) for chunk in chunks])
    first, inverse = _unique_rows(packed)
    codes = np.zeros(n_obs, dtype=np.int64)
    codes[affected] = 1 + inverse
    measured = ~np.unpackbits(packed[first], axis=1, count=n_genes).astype(bool)
    return codes, np.vstack([np.ones((1, n_genes), dtype=bool), measured])


def align_to_genes(
    adata: AnnData,
    model_genes: Sequence[str],
    *,
    model_identifiers: Mapping[str, Sequence[str]] | None = None,
    layer: str | None = None,
    out_layer: str | None = None,
    gene_key: str | None = None,
    min_gene_overlap: float | int | str = "auto",
    nan_as_unmeasured: bool = False,
) -> AnnData:
    """A new AnnData with the model's genes in the model's order; unmeasured genes are masks.

    See :meth:`scr2mae.R2MAEModel.prepare_query_anndata`, which calls this with the model's
    genes; the parameters are documented there.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    model_genes = pd.Index([str(g) for g in model_genes])
    identifiers = dict(model_identifiers or {})
    query_ids = _query_ids(adata, gene_key)
    if gene_key is not None and gene_key in identifiers:
        target, target_name = pd.Index(identifiers[gene_key]), f"the model's .var[{gene_key!r}]"
    else:
        target, target_name = model_genes, "the model's gene names"
    present = np.asarray(query_ids.notna())
    ids_present = query_ids[present]
    duplicated = ids_present[ids_present.duplicated()].unique()
    if len(duplicated):
        where = "`.var_names`" if gene_key is None else f"`.var[{gene_key!r}]`"
        raise ValueError(
            f"the query's gene identifiers ({where}) have {len(duplicated)} duplicate(s), e.g. "
            f"{list(duplicated[:3])}; make them unique (e.g. `adata.var_names_make_unique()`, or "
            "sum the duplicated genes) before aligning."
        )
    position = np.full(len(query_ids), -1, dtype=np.int64)
    position[present] = target.get_indexer(ids_present)
    matched = np.flatnonzero(position >= 0)
    n_model = len(model_genes)
    needed = _min_overlap(min_gene_overlap, n_model, int(present.sum()))
    if matched.size < needed:
        hint = ""
        other = [k for k in identifiers if k != gene_key]
        if other:
            hint = (
                f" The model also knows its genes by `.var` column(s) {other}; if the query "
                "holds such identifiers, pass `gene_key=` naming the query's column."
            )
        raise ValueError(
            f"too little gene overlap: {matched.size} of the query's {len(query_ids)} genes "
            f"match {target_name} ({n_model} genes), fewer than the {needed} required "
            f"(`min_gene_overlap={min_gene_overlap!r}`). Query genes, e.g. "
            f"{list(query_ids[:3])}; model genes, e.g. {list(target[:3])}.{hint}"
        )
    n_dropped = len(query_ids) - matched.size
    if n_dropped:
        logger.info("dropped %d query gene(s) the model does not know", n_dropped)

    counts = adata.X if layer is None else adata.layers[layer]
    # a query prepared before (e.g. for another model) keeps its own unmeasured genes
    source = panel_layout(adata)
    # the query's own counts are checked on the genes that are kept
    kept = counts[:, matched] if matched.size < counts.shape[1] else counts
    # the same layer name as the query's, so that messages name the matrix the user passed
    var = pd.DataFrame(index=pd.Index(target[position[matched]]).astype(str))
    sub = counts_anndata(kept, layer, pd.DataFrame(index=adata.obs_names), var)
    check_count_matrix(
        sub,
        layer,
        where="prepare_query_anndata",
        allow_empty=True,
        allow_unmeasured=nan_as_unmeasured,
        measured_genes=None if source is None else source.measured_anywhere[matched],
    )
    # a copy (never the user's arrays): its entries are renumbered in place below
    x = sparse.csr_matrix(kept, dtype=np.float32, copy=kept is counts)
    x.sum_duplicates()
    n_obs = x.shape[0]
    if source is None:
        codes, masks = np.zeros(n_obs, dtype=np.int64), np.ones((1, matched.size), dtype=bool)
    else:
        codes, masks = source.codes.astype(np.int64), source.masks[:, matched]
    nan = np.isnan(x.data)
    if nan.any():
        # cells that share their NaN genes form a panel; the NaN entries are not kept
        nan_codes, nan_masks = _nan_panels(x, nan)
        pairs, codes = np.unique(np.stack([codes, nan_codes], 1), axis=0, return_inverse=True)
        masks = masks[pairs[:, 0]] & nan_masks[pairs[:, 1]]
        codes = codes.ravel()
        x.data[nan] = 0.0
        x.eliminate_zeros()
    model_column = position[matched]
    panels = np.zeros((masks.shape[0], n_model), dtype=bool)
    panels[:, model_column] = masks
    panels, codes = _unique_panels(panels, codes)
    # the model's gene order: only measured entries are stored (no entry per unmeasured gene);
    # the column numbers of `x` (a copy) are renumbered in place, a slice at a time
    lookup = model_column.astype(x.indices.dtype)
    for start in range(0, x.nnz, _RENUMBER_SLICE):
        part = x.indices[start : start + _RENUMBER_SLICE]
        part[:] = lookup[part]
    aligned = sparse.csr_matrix((x.data, x.indices, x.indptr), shape=(n_obs, n_model))
    aligned.sort_indices()

    cell_totals = np.asarray(aligned.sum(axis=1)).ravel()
    empty = np.flatnonzero(cell_totals == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} query cell(s) have no counts in the genes shared with the model "
            f"(e.g. {list(adata.obs_names[empty[:3]])}); drop them first, e.g. "
            "`query = query[np.asarray(query[:, shared_genes].X.sum(1)).ravel() > 0]`."
        )

    var = pd.DataFrame(index=model_genes)
    for key, values in identifiers.items():
        if key not in var.columns:
            var[key] = list(values)
    var["measured_in_query"] = measured = panels.any(axis=0)
    obs = adata.obs.copy()
    obs[N_MEASURED_KEY] = panels.sum(axis=1).astype(np.int64)[codes]
    obs[PANEL_KEY] = pd.Categorical.from_codes(codes, [panel_name(m, model_genes) for m in panels])
    out = counts_anndata(aligned, out_layer, obs, var)
    out.obsm.update({k: v.copy() for k, v in adata.obsm.items()})
    summary = {
        "n_model_genes": int(n_model),
        "n_query_genes": len(query_ids),
        "n_matched": int(matched.size),
        "n_dropped": int(n_dropped),
        "n_unmeasured_genes": int((~measured).sum()),
        "n_panels": len(panels),
        "matched_on": "var_names" if gene_key is None else str(gene_key),
    }
    out.uns[QUERY_UNS_KEY] = summary
    logger.info(
        "query aligned: %d of %d model genes measured, %d unmeasured in every cell (hidden "
        "from the encoder), %d panel(s)",
        int(measured.sum()),
        n_model,
        summary["n_unmeasured_genes"],
        len(panels),
    )
    return out


def compare_var_names(reference: np.ndarray, given: np.ndarray) -> None:
    if reference.shape == given.shape and np.array_equal(reference, given.astype(str)):
        return
    ref_set, given_set = set(reference.tolist()), set(given.astype(str).tolist())
    missing = [g for g in reference.tolist() if g not in given_set]
    extra = [g for g in given.astype(str).tolist() if g not in ref_set]
    if not missing and not extra:
        raise ValueError(
            "the AnnData has the model's genes in a different order; align it with "
            "`R2MAEModel.prepare_query_anndata(adata, model)`."
        )
    raise ValueError(
        f"the AnnData's genes do not match the model's: {len(missing)} missing "
        f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); the model was "
        f"trained on {len(reference)} genes, the AnnData has {len(given)}. Align it with "
        "`R2MAEModel.prepare_query_anndata(adata, model)`, which marks the missing genes as "
        "unmeasured."
    )
