"""The paper's preprocessing of single-cell counts (appendix C.8)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._validation import check_count_matrix, check_int

__all__ = ["log_normalize", "preprocess_counts"]


def log_normalize(counts, target_sum: float = 1e4) -> np.ndarray | sparse.csr_matrix:
    """``log1p(counts / library_size × target_sum)`` per cell (zero-count cells stay zero).

    Scanpy's :func:`scanpy.pp.normalize_total` then :func:`scanpy.pp.log1p`, on a matrix.

    Parameters
    ----------
    counts
        ``(cells, genes)`` counts, dense or sparse.
    target_sum
        Total each cell is scaled to before the logarithm (1e4: "counts per 10k").

    Returns
    -------
    Float32 array (CSR if the input is sparse).
    """
    import scanpy as sc

    if not target_sum > 0:
        raise ValueError(f"`target_sum` must be positive, got {target_sum!r}.")
    convert = sparse.csr_matrix if sparse.issparse(counts) else np.array
    adata = AnnData(X=convert(counts, dtype=np.float64))
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata.X.astype(np.float32)


def preprocess_counts(
    adata: AnnData,
    counts_layer: str | None = "counts",
    n_top_genes: int | None = 5000,
    min_genes: int | None = 20,
    target_sum: float = 1e4,
) -> AnnData:
    """Select highly variable genes and drop poorly covered cells, keeping the raw counts.

    Appendix C.8: the atlases "were subsetted to 5000 highly variable genes (HVGs) using the
    default procedure in Scanpy", and (HLCA) cells with "fewer than 20 of these HVGs" were
    removed. Scanpy's default procedure is :func:`scanpy.pp.highly_variable_genes` with
    ``flavor="seurat"`` on log-normalised counts (``normalize_total`` to ``target_sum`` then
    ``log1p``); this function does that on a copy. When the data have no more than
    ``n_top_genes`` genes, all genes are kept.

    Parameters
    ----------
    adata
        AnnData with raw counts; it is not modified.
    counts_layer
        Layer with the counts; ``None`` uses ``adata.X``.
    n_top_genes
        Number of highly variable genes (``None`` keeps all genes).
    min_genes
        Minimum number of the selected genes a cell must express (count > 0); ``None`` or 0
        keeps all cells.
    target_sum
        Library size used for the log-normalisation.

    Returns
    -------
    A new AnnData restricted to the selected genes and cells, with the counts unchanged in
    ``.layers["counts"]``, ``log1p`` counts-per-``target_sum`` in ``.X`` (computed on the
    selected genes), genes without any count in the kept cells removed,
    ``var["highly_variable"]``/``var["dispersions_norm"]`` from scanpy and
    ``obs["n_hvg_expressed"]``.

    Raises
    ------
    ValueError
        For a missing layer, non-count data, or when no cell is left.
    """
    import scanpy as sc

    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    if counts_layer is not None and counts_layer not in adata.layers:
        raise ValueError(
            f"`counts_layer` {counts_layer!r} is not a layer of `adata` "
            f"(layers: {list(adata.layers)})."
        )
    check_int("n_top_genes", n_top_genes, 1, allow_none=True)
    check_int("min_genes", min_genes, 0, allow_none=True)
    check_count_matrix(adata, counts_layer, where="preprocess_counts", allow_empty=True)
    counts = adata.X if counts_layer is None else adata.layers[counts_layer]
    counts = sparse.csr_matrix(counts) if not sparse.issparse(counts) else counts.tocsr()

    lognorm = AnnData(X=log_normalize(counts, target_sum), var=adata.var[[]].copy())
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        keep_genes = np.ones(adata.n_vars, dtype=bool)
        dispersions = np.full(adata.n_vars, np.nan)
    else:
        stats = sc.pp.highly_variable_genes(lognorm, n_top_genes=n_top_genes, inplace=False)
        keep_genes = stats["highly_variable"].to_numpy(dtype=bool)
        dispersions = stats["dispersions_norm"].to_numpy(dtype=np.float64)

    sub = counts[:, keep_genes]
    # scanpy's filters, without writing their columns over the user's obs/var
    keep_cells, n_expressed = sc.pp.filter_cells(sub, min_genes=min_genes or 0, inplace=False)
    if not keep_cells.any():
        raise ValueError(f"no cell expresses at least min_genes={min_genes} of the selected genes.")
    sub = sub[keep_cells]
    # genes without a single count in the kept cells carry nothing and break count models
    nonzero, _ = sc.pp.filter_genes(sub, min_cells=1, inplace=False)
    gene_pos = np.flatnonzero(keep_genes)[nonzero]
    sub = sub[:, nonzero]
    out = AnnData(
        X=log_normalize(sub, target_sum),
        obs=adata.obs.loc[keep_cells].copy(),
        var=adata.var.iloc[gene_pos].copy(),
    )
    out.layers["counts"] = sub.copy()
    out.var["highly_variable"] = True
    out.var["dispersions_norm"] = dispersions[gene_pos]
    out.obs["n_hvg_expressed"] = n_expressed[keep_cells]
    return out
