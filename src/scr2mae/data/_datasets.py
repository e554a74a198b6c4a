"""Small real datasets that ship with the installed packages (no download needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._validation import check_int, counts_anndata
from ._preprocess import log_normalize

__all__ = ["pbmc68k_batches", "pbmc68k_counts"]


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
    restored = np.expm1(lognorm.astype(np.float64)) * n_counts / 1e4
    counts = np.rint(restored)
    if np.abs(restored - counts).max() > 0.25:
        raise RuntimeError("pbmc68k_reduced no longer has the expected raw layout.")
    adata = AnnData(
        X=sparse.csr_matrix(lognorm.astype(np.float32)),
        obs=src.obs.copy(),
        var=src.raw.var.copy(),
    )
    adata.layers["counts"] = sparse.csr_matrix(counts.astype(np.int32))
    adata.obsm["X_umap_scanpy"] = np.asarray(src.obsm["X_umap"])
    return adata


def pbmc68k_batches(n_batches: int = 4, capture_sd: float = 0.5, seed: int = 0) -> AnnData:
    """:func:`pbmc68k_counts` dealt at random to ``n_batches`` simulated batches.

    The 700 cells come from one experiment, so this adds a batch effect of the kind that
    separates donors or chemistries: each batch gets its own capture efficiency per gene,
    ``clip(exp(N(-0.3, capture_sd²)), 0.2, 1)``, and every count is binomially thinned by the
    efficiency of its batch and gene. Cell types stay independent of the batch, so a
    well-integrated embedding mixes the batches within each FACS-sorted ``bulk_labels`` group.
    Cells left with no counts keep their original ones.

    Parameters
    ----------
    n_batches
        Number of batches (at least 2).
    capture_sd
        Spread of the log capture efficiencies across genes and batches (0: no batch effect).
    seed
        Seed of the batch assignment and of the thinning.

    Returns
    -------
    A new AnnData as :func:`pbmc68k_counts`, with the thinned counts in
    ``.layers["counts"]``, ``log1p`` of their counts per 10^4 in ``.X``, and the batch in
    ``.obs["batch"]`` (categories ``batch_0``, ``batch_1``, ...).
    """
    check_int("n_batches", n_batches, minimum=2)
    if not np.isfinite(capture_sd) or capture_sd < 0:
        raise ValueError(f"`capture_sd` must be a finite number >= 0, got {capture_sd!r}.")
    adata = pbmc68k_counts()
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, n_batches, adata.n_obs)
    log_eff = rng.normal(-0.3, capture_sd, (n_batches, adata.n_vars))
    efficiency = np.clip(np.exp(log_eff), 0.2, 1.0)
    counts = adata.layers["counts"].toarray().astype(np.int64)
    thinned = rng.binomial(counts, efficiency[batch])
    empty = thinned.sum(1) == 0
    thinned[empty] = counts[empty]
    adata.layers["counts"] = sparse.csr_matrix(thinned.astype(np.int32))
    adata.X = log_normalize(adata.layers["counts"])
    adata.obs["batch"] = pd.Categorical([f"batch_{b}" for b in batch])
    return adata


def cells_sample(adata: AnnData, layer: str | None, n_cells: int, seed: int = 0) -> AnnData:
    """A random sample of ``n_cells`` cells (all, if fewer): the counts of ``layer`` (``None``:
    ``.X``) in the same place, and ``.obs`` without scvi-tools' columns."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(adata.n_obs, size=min(n_cells, adata.n_obs), replace=False))
    counts = (adata.X if layer is None else adata.layers[layer])[rows]
    obs = adata.obs.iloc[rows].copy()
    obs = obs[[c for c in obs.columns if not str(c).startswith("_scvi")]]
    var = pd.DataFrame(index=adata.var_names.copy())
    return counts_anndata(counts, layer, obs, var)
