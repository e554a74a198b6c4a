"""Aligning a query AnnData to a trained model's genes, with unmeasured genes marked as NaN."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._validation import N_MEASURED_KEY, check_count_matrix

logger = logging.getLogger(__name__)

__all__ = ["align_to_genes", "gene_identifier_columns"]

#: ``.uns`` key of the alignment summary written into a prepared query
QUERY_UNS_KEY = "scr2mae_query"


def gene_identifier_columns(var: pd.DataFrame, max_columns: int = 8) -> dict[str, list[str]]:
    """Columns of ``var`` that can identify genes: text values, unique, none missing.

    A model keeps them (e.g. Ensembl IDs beside symbols) so that a query can be matched on
    either identifier.
    """
    columns = {}
    for name in var.columns:
        col = var[name]
        if not (
            pd.api.types.is_object_dtype(col)
            or pd.api.types.is_string_dtype(col)
            or isinstance(col.dtype, pd.CategoricalDtype)
        ):
            continue
        values = col.astype(object)
        if values.isna().any() or not values.is_unique:
            continue
        if not all(isinstance(v, str) for v in values):
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


def _min_overlap(min_gene_overlap: float | int, n_model: int) -> int:
    if isinstance(min_gene_overlap, bool) or not isinstance(min_gene_overlap, int | float):
        raise TypeError(
            f"`min_gene_overlap` must be a fraction or a number of genes, got {min_gene_overlap!r}."
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


def align_to_genes(
    adata: AnnData,
    model_genes: Sequence[str],
    *,
    model_identifiers: Mapping[str, Sequence[str]] | None = None,
    layer: str | None = None,
    out_layer: str | None = None,
    gene_key: str | None = None,
    min_gene_overlap: float | int = 0.25,
    nan_as_unmeasured: bool = False,
) -> AnnData:
    """A new AnnData with the model's genes in the model's order; unmeasured genes are NaN.

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
    needed = _min_overlap(min_gene_overlap, n_model)
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
    # the query's own counts are checked on the genes that are kept
    kept = counts[:, matched] if matched.size < counts.shape[1] else counts
    # the same layer name as the query's, so that messages name the matrix the user passed
    sub = AnnData(
        X=kept if layer is None else None,
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=pd.Index(target[position[matched]]).astype(str)),
        layers={} if layer is None else {layer: kept},
    )
    check_count_matrix(
        sub,
        layer,
        where="prepare_query_anndata",
        allow_empty=True,
        allow_unmeasured=nan_as_unmeasured,
    )
    x = sparse.csr_matrix(kept, dtype=np.float32)
    x.sum_duplicates()
    n_obs = x.shape[0]
    model_column = position[matched]
    missing = np.setdiff1d(np.arange(n_model), model_column)
    # unmeasured genes: explicit NaN entries, so that "not measured" is never read as zero
    fill = sparse.csr_matrix(
        (
            np.full(n_obs * missing.size, np.nan, dtype=np.float32),
            np.tile(np.arange(missing.size), n_obs),
            np.arange(0, n_obs * missing.size + 1, max(missing.size, 1))[: n_obs + 1]
            if missing.size
            else np.zeros(n_obs + 1, dtype=np.int64),
        ),
        shape=(n_obs, missing.size),
    )
    stacked = sparse.hstack([x, fill], format="csr")
    order = np.argsort(np.concatenate([model_column, missing]), kind="stable")
    aligned = stacked[:, order].tocsr()
    aligned.sort_indices()

    # measured zeros are implicit in the CSR; unmeasured genes are its explicit NaN entries
    n_nan = np.bincount(
        np.repeat(np.arange(n_obs), np.diff(aligned.indptr))[np.isnan(aligned.data)],
        minlength=n_obs,
    )
    cell_totals = np.asarray(
        sparse.csr_matrix(
            (np.nan_to_num(aligned.data, nan=0.0), aligned.indices, aligned.indptr),
            shape=aligned.shape,
        ).sum(axis=1)
    ).ravel()
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
    var["measured_in_query"] = np.isin(np.arange(n_model), model_column)
    obs = adata.obs.copy()
    obs[N_MEASURED_KEY] = (n_model - n_nan).astype(np.int64)
    out = AnnData(
        X=aligned if out_layer is None else None,
        obs=obs,
        var=var,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        layers={} if out_layer is None else {out_layer: aligned},
    )
    summary = {
        "n_model_genes": int(n_model),
        "n_query_genes": len(query_ids),
        "n_matched": int(matched.size),
        "n_dropped": int(n_dropped),
        "n_unmeasured_genes": int(missing.size),
        "matched_on": "var_names" if gene_key is None else str(gene_key),
    }
    out.uns[QUERY_UNS_KEY] = summary
    logger.info(
        "query aligned: %d of %d model genes measured, %d unmeasured (hidden from the encoder)",
        matched.size,
        n_model,
        missing.size,
    )
    return out
