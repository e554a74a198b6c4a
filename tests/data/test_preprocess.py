import numpy as np
import pytest
import scanpy as sc
from anndata import AnnData
from scipy import sparse

from scr2mae.data import log_normalize, preprocess_counts, synthetic_donor_counts


def test_preprocess_matches_scanpy_default_hvg_and_keeps_counts():
    adata = synthetic_donor_counts(n_donors=6, cells_per_donor=40, n_genes=200, seed=1)
    before = adata.layers["counts"].copy()
    out = preprocess_counts(adata, n_top_genes=50, min_genes=20)
    # the input is untouched
    assert (adata.layers["counts"] != before).nnz == 0 and "highly_variable" not in adata.var
    # the user's own columns survive, even where scanpy's filters use the same names
    adata.obs["n_genes"] = "mine"
    adata.var["n_cells"] = "mine"
    kept = preprocess_counts(adata, n_top_genes=50, min_genes=20)
    assert (kept.obs["n_genes"] == "mine").all() and (kept.var["n_cells"] == "mine").all()
    # the genes are scanpy's default (seurat) selection on log1p(cp10k)
    ref = adata.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=50)
    assert set(out.var_names) == set(ref.var_names[ref.var["highly_variable"]])
    # counts are the original integers of the kept cells and genes
    kept = adata[out.obs_names, out.var_names].layers["counts"]
    assert (out.layers["counts"] != kept).nnz == 0
    # cells expressing fewer than 20 of the selected genes are gone, the others kept
    n_expr = np.asarray((adata[:, out.var_names].layers["counts"] > 0).sum(1)).ravel()
    assert set(out.obs_names) == set(adata.obs_names[n_expr >= 20])
    assert (out.obs["n_hvg_expressed"] >= 20).all()
    np.testing.assert_allclose(
        out.X.toarray(), log_normalize(out.layers["counts"]).toarray(), rtol=1e-6
    )


def test_min_genes_filter_removes_sparse_cells():
    counts = np.zeros((5, 30), dtype=np.int32)
    counts[:, :] = 1
    counts[0, 3:] = 0  # expresses only 3 genes
    adata = AnnData(X=sparse.csr_matrix(counts))
    adata.layers["counts"] = adata.X.copy()
    out = preprocess_counts(adata, n_top_genes=None, min_genes=20)
    assert out.n_obs == 4 and out.n_vars == 30
    assert preprocess_counts(adata, n_top_genes=None, min_genes=None).n_obs == 5


def test_log_normalize_values():
    x = np.array([[1, 3, 0], [0, 0, 0]])
    expected = np.log1p(np.array([[2500.0, 7500.0, 0.0], [0, 0, 0]]))
    np.testing.assert_allclose(log_normalize(x), expected, rtol=1e-6)
    np.testing.assert_allclose(log_normalize(sparse.csr_matrix(x)).toarray(), expected, rtol=1e-6)


def test_preprocess_rejects_bad_input():
    adata = synthetic_donor_counts(n_donors=4, cells_per_donor=5, n_genes=20)
    with pytest.raises(ValueError, match="counts_layer"):
        preprocess_counts(adata, counts_layer="raw")
    with pytest.raises(ValueError, match="n_top_genes"):
        preprocess_counts(adata, n_top_genes=0)
    bad = adata.copy()
    counts = bad.layers["counts"].toarray()
    bad.layers["counts"] = counts / counts.sum(1, keepdims=True) * 1e4
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] looks normalised"):
        preprocess_counts(bad)
    bad = synthetic_donor_counts(n_donors=4, cells_per_donor=5, n_genes=200)
    bad.layers["counts"] = log_normalize(bad.layers["counts"])
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] looks log-normalised"):
        preprocess_counts(bad)
    with pytest.raises(TypeError):
        preprocess_counts(adata.X)


def test_preprocess_keeps_ambient_corrected_counts():
    adata = synthetic_donor_counts(n_donors=4, cells_per_donor=30, n_genes=200, seed=1)
    counts = adata.layers["counts"].astype(np.float32)
    rng = np.random.default_rng(0)
    counts.data = counts.data * rng.uniform(0.6, 1.0, counts.data.size).astype(np.float32)
    adata.layers["counts"] = counts
    with pytest.warns(UserWarning, match=r"preprocess_counts: .* holds non-integer counts"):
        out = preprocess_counts(adata, n_top_genes=50, min_genes=None)
    kept = adata[out.obs_names, out.var_names].layers["counts"].toarray()
    np.testing.assert_array_equal(out.layers["counts"].toarray(), kept)  # not rounded
    assert out.layers["counts"].dtype == np.float32
    np.testing.assert_allclose(
        out.X.toarray(), log_normalize(out.layers["counts"]).toarray(), rtol=1e-6
    )


def test_synthetic_data_carries_donor_traits():
    adata = synthetic_donor_counts(n_donors=10, cells_per_donor=30, n_genes=100, seed=0)
    assert adata.shape == (300, 100)
    per_donor = adata.obs.groupby("donor_id", observed=True)
    assert (per_donor["age_years"].nunique() == 1).all()
    assert (per_donor["disease"].nunique() == 1).all()
    assert (adata.obs.groupby("donor_id", observed=True)["disease"].first() == "disease").sum() == 5
    assert np.issubdtype(adata.layers["counts"].dtype, np.integer)
    assert adata.layers["counts"].sum(1).min() > 0
    again = synthetic_donor_counts(n_donors=10, cells_per_donor=30, n_genes=100, seed=0)
    assert (again.layers["counts"] != adata.layers["counts"]).nnz == 0
    with pytest.raises(ValueError, match="n_donors"):
        synthetic_donor_counts(n_donors=2)
