import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse


@pytest.fixture(scope="session")
def census_adata():
    rng = np.random.default_rng(3)
    n, g = 120, 30
    counts = rng.poisson(rng.gamma(2.0, 1.0, (1, g)), (n, g)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "dataset_id": np.where(np.arange(n) < 80, "ds_lung", "ds_other"),
            "donor_id": [f"d{i % 6}" for i in range(n)],
            "cell_type": rng.choice(["AT1", "AT2", "Unknown"], n),
            "disease": np.where(np.arange(n) % 6 < 3, "normal", "COPD"),
            "development_stage": np.where(
                np.arange(n) % 6 == 5, "80 year-old and over stage", "45-year-old stage"
            ),
            "tissue": "lung",
        },
        index=[f"c{i}" for i in range(n)],
    )
    var = pd.DataFrame(
        {
            "feature_id": [f"ENSG{i:05d}" for i in range(g)],
            "feature_name": [f"GENE{i}" for i in range(g)],
        },
        index=[f"ENSG{i:05d}" for i in range(g)],
    )
    return AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var)


@pytest.fixture(scope="session")
def local_census(tmp_path_factory, census_adata):
    from scr2mae.data import write_census_standin

    return write_census_standin(
        census_adata, tmp_path_factory.mktemp("census") / "census", counts_layer=None
    )
