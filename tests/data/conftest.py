import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse


def _write_census(root, adata):
    """A local stand-in for the CELLxGENE Census with one human experiment."""
    import tiledbsoma
    import tiledbsoma.io

    root = str(root)
    with tiledbsoma.Collection.create(root) as census:
        census.add_new_collection("census_info")
        census.add_new_collection("census_data")
    uri = f"{root}/census_data/homo_sapiens"
    tiledbsoma.io.from_anndata(uri, adata, measurement_name="RNA", X_layer_name="raw")
    with tiledbsoma.Collection.open(f"{root}/census_data", "w") as data:
        data.set("homo_sapiens", tiledbsoma.Experiment.open(uri))
    return root


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
    return _write_census(tmp_path_factory.mktemp("census") / "census", census_adata)
