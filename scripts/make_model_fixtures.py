"""Write the saved-model fixtures of ``tests/model/test_saved_fixtures.py``.

Each fixture is a small trained model saved with the code of the day it was made, with the
embedding it gave on fixed cells. The test loads every fixture with the current code and
checks that it gives the same embedding, so that saved models keep loading.

Run once, from the repository root: ``python scripts/make_model_fixtures.py``.
"""

from __future__ import annotations

import os
import shutil
import sys

import anndata
import numpy as np
import pandas as pd
import scvi
import torch
from scipy import sparse

import scr2mae

OUT = os.path.join("tests", "model", "fixtures")
WIDTHS = {"n_hidden": 16, "n_latent": 4, "dropout_rate": 0.1}


def cells(n_cells: int, seed: int, batches: list[str]) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    programs = np.random.default_rng(1).gamma(0.5, 1.0, size=(3, 40))
    kind = rng.integers(0, 3, size=n_cells)
    profile = programs[kind] / programs[kind].sum(1, keepdims=True)
    counts = rng.poisson(profile * rng.integers(200, 600, size=(n_cells, 1))).astype(np.float32)
    ad = anndata.AnnData(X=sparse.csr_matrix(counts))
    ad.obs_names = [f"c{seed}_{i}" for i in range(n_cells)]
    ad.var_names = [f"G{i}" for i in range(40)]
    ad.obs["batch"] = pd.Categorical([batches[i % len(batches)] for i in range(n_cells)])
    ad.obs["cell_type"] = pd.Categorical([f"t{k}" for k in kind])
    return ad


def write(name: str, model, adata: anndata.AnnData) -> None:
    folder = os.path.join(OUT, name)
    model.save(folder, overwrite=True, reference_cells=0)
    adata.write_h5ad(os.path.join(folder, "cells.h5ad"))
    z = model.get_latent_representation(adata)
    np.save(os.path.join(folder, "latent.npy"), z.astype(np.float32))


def main() -> None:
    torch.set_num_threads(1)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    reference = cells(120, 0, ["b0", "b1"])
    configs = {
        "default": {},
        "mmd": {"batch_correction": "mmd"},
        "adversarial": {"batch_correction": "adversarial"},
        "curriculum": {"mask_strategy": "r2mae_cl", "batch_correction": "none"},
    }
    models = {}
    for name, options in configs.items():
        adata = reference.copy()
        scr2mae.R2MAEModel.setup_anndata(adata, batch_key="batch")
        scvi.settings.seed = 0
        model = scr2mae.R2MAEModel(adata, **WIDTHS, **options)
        model.train(max_epochs=3, batch_size=32)
        write(name, model, reference.copy())
        models[name] = model
    # a scArches query model: an unseen lab on the default (mmd) reference
    query = cells(60, 1, ["lab_new"])
    query = scr2mae.R2MAEModel.prepare_query_anndata(query, models["default"])
    query_model = scr2mae.R2MAEModel.load_query_data(query, models["default"])
    scvi.settings.seed = 0
    query_model.train(max_epochs=2, batch_size=32)
    write("scarches_query", query_model, query.copy())
    print("fixtures written with", scr2mae.__name__, "at", sys.argv[0])


if __name__ == "__main__":
    main()
