"""Test data shared by the model tests."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
from scipy import sparse


def program_counts(n_cells, seed, n_genes, library, n_batches=2, gene_prefix="G"):
    """Counts of three cell types with distinct gene programs, dealt to ``n_batches`` batches.

    The programs are the same for every ``seed``; ``library`` is the ``[low, high)`` range of
    each cell's expected total. Returns the AnnData (counts in ``X``, ``.obs["batch"]``) and
    each cell's type.
    """
    rng = np.random.default_rng(seed)
    programs = np.random.default_rng(1).gamma(0.5, 1.0, size=(3, n_genes))
    kind = rng.integers(0, 3, size=n_cells)
    profile = programs[kind] / programs[kind].sum(1, keepdims=True)
    counts = rng.poisson(profile * rng.integers(*library, size=(n_cells, 1)))
    ad = anndata.AnnData(X=sparse.csr_matrix(counts.astype(np.float32)))
    ad.obs_names = [f"c{seed}_{i}" for i in range(n_cells)]
    ad.var_names = [f"{gene_prefix}{i}" for i in range(n_genes)]
    ad.obs["batch"] = pd.Categorical([f"b{i % n_batches}" for i in range(n_cells)])
    return ad, kind
