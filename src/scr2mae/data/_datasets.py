"""Small real datasets that ship with the installed packages (no download needed)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

__all__ = ["pbmc68k_counts"]


def pbmc68k_counts() -> AnnData:
    """scanpy's bundled ``pbmc68k_reduced`` (700 PBMCs × 765 genes) with its raw counts restored.

    scanpy ships this dataset with ``.raw.X = log1p(counts / n_counts × 1e4)``, where
    ``n_counts`` is each cell's total over all genes of the original matrix. Inverting that
    transform and rounding recovers the integer counts exactly (the largest deviation from an
    integer before rounding is below 0.1).

    Returns
    -------
    A new AnnData with integer counts in ``.layers["counts"]`` (CSR, int32), the
    log-normalised values of ``.raw.X`` in ``.X``, and the ``.obs`` columns of the original
    (including the FACS-sorted ``bulk_labels``).
    """
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    lognorm = src.raw.X
    lognorm = lognorm.toarray() if sparse.issparse(lognorm) else np.asarray(lognorm)
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)[:, None]
    counts = np.rint(np.expm1(lognorm.astype(np.float64)) * n_counts / 1e4)
    if np.abs(np.expm1(lognorm.astype(np.float64)) * n_counts / 1e4 - counts).max() > 0.25:
        raise RuntimeError("pbmc68k_reduced no longer has the expected raw layout.")
    adata = AnnData(
        X=sparse.csr_matrix(lognorm.astype(np.float32)),
        obs=src.obs.copy(),
        var=src.raw.var.copy(),
    )
    adata.layers["counts"] = sparse.csr_matrix(counts.astype(np.int32))
    adata.obsm["X_umap_scanpy"] = np.asarray(src.obsm["X_umap"])
    return adata
