"""Differential expression of :class:`~scr2mae.R2MAEModel` (scvi-tools' computation)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.model.base._de_core import _de_core

from ..data._panels import panel_layout

__all__ = ["DifferentialExpressionMixin", "raw_counts_properties"]


class DifferentialExpressionMixin:
    """:meth:`differential_expression` with unmeasured genes left out of the raw-count columns."""

    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1: list[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: Literal["vanilla", "change"] = "vanilla",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: list[str] | None = None,
        batchid2: list[str] | None = None,
        fdr_target: float = 0.05,
        silent: bool = False,
        **kwargs,
    ) -> pd.DataFrame:
        """:meth:`scvi.model.base.RNASeqMixin.differential_expression`: the same arguments and
        computation (``_de_core``; ``**kwargs`` go to ``get_bayes_factors``), with raw-count
        columns that skip the genes a cell did not measure and nothing written to ``adata``."""
        adata = self._validate_anndata(adata)
        model_fn = partial(self.get_normalized_expression, return_numpy=True, batch_size=batch_size)
        args = (groupby, group1, group2, idx1, idx2, all_stats, raw_counts_properties)
        args += (adata.var_names, mode, batchid1, batchid2, delta, batch_correction)
        manager = self.get_anndata_manager(adata, required=True)
        return _de_core(manager, model_fn, None, *args, fdr_target, silent, **kwargs)


def raw_counts_properties(adata_manager, idx1, idx2, var_idx=None) -> dict[str, np.ndarray]:
    """Raw-count columns of differential expression: each group's per-gene means, non-zero
    fractions and means per 10^4 counts over the cells that measured the gene (NaN where none
    did). Unlike scvi-tools' version, nothing is written to ``adata.obs``."""
    data = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    layout = panel_layout(adata_manager)
    out = {}
    for group, rows in (("1", idx1), ("2", idx2)):
        rows = np.asarray(rows)
        block = data[rows]
        block = np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=float)
        # counts per 10^4 of each cell's measured total (over all genes, before var_idx)
        scaling = 1e4 / np.clip(block.sum(axis=1), 1e-12, None)
        measured = np.ones(block.shape, dtype=bool) if layout is None else layout.measured(rows)
        if var_idx is not None:
            block, measured = block[:, var_idx], measured[:, var_idx]
        block = np.where(measured, block, 0.0)
        n = measured.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"raw_mean{group}"] = block.sum(axis=0) / n
            out[f"non_zeros_proportion{group}"] = (block != 0).sum(axis=0) / n
            out[f"raw_normalized_mean{group}"] = (block * scaling[:, None]).sum(axis=0) / n
    return out
