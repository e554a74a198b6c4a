"""What scvi-tools' mixins give R2MAEModel: DE, posterior samples, likelihood parameters."""

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

from scr2mae import R2MAEModel

N_GENES = 60
PLANTED = np.arange(6)  # up four-fold in group B


def _two_groups(n_cells=400, seed=0):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(1).gamma(1.0, 1.0, size=N_GENES)
    group = rng.integers(0, 2, size=n_cells)
    profile = np.tile(base, (n_cells, 1))
    profile[np.ix_(group == 1, PLANTED)] *= 4.0
    profile /= profile.sum(1, keepdims=True)
    counts = rng.poisson(profile * rng.integers(800, 1600, size=(n_cells, 1)))
    ad = anndata.AnnData(X=sparse.csr_matrix(counts.astype(np.float32)))
    ad.obs_names = [f"c{i}" for i in range(n_cells)]
    ad.var_names = [f"G{i}" for i in range(N_GENES)]
    ad.obs["group"] = pd.Categorical(np.where(group == 1, "B", "A"))
    ad.obs["batch"] = pd.Categorical([f"b{i % 2}" for i in range(n_cells)])
    return ad


@pytest.fixture(scope="module")
def trained():
    scvi.settings.seed = 0
    ad = _two_groups()
    R2MAEModel.setup_anndata(ad, batch_key="batch")
    model = R2MAEModel(ad, n_hidden=64, n_latent=8)
    model.train(max_epochs=100, batch_size=64, enable_progress_bar=False)
    return model


def test_differential_expression_finds_the_planted_genes(trained):
    obs_before = list(trained.adata.obs.columns)
    de = trained.differential_expression(groupby="group", group1="B", group2="A", mode="change")
    assert list(trained.adata.obs.columns) == obs_before  # nothing written to the user's obs
    called = set(de.index[de["is_de_fdr_0.05"]])
    planted = {f"G{i}" for i in PLANTED}
    # every planted gene ranks above every unchanged one (over DE sampling seeds 0-5 the
    # planted genes' smallest P(DE) was 0.895-0.909, the unchanged genes' largest 0.876-0.882);
    # how many of them clear the 5 % FDR moves with the sampling (1-5 of 6 over those seeds)
    unchanged = de.drop(index=sorted(planted))
    assert de.loc[sorted(planted), "proba_de"].min() > unchanged["proba_de"].max()
    assert called & planted  # recall
    assert len(called - planted) <= 2  # false discoveries among the 54 unchanged genes
    assert (de.loc[sorted(planted), "lfc_mean"] > 0.5).all()  # log2 of the 2.8-fold change: 1.5
    np.testing.assert_allclose(
        de.loc["G0", "raw_mean1"],
        trained.adata[trained.adata.obs["group"] == "B"].X[:, 0].mean(),
        rtol=1e-6,
    )
    # vanilla mode and batch-corrected comparisons run through the same path
    vanilla = trained.differential_expression(groupby="group", batch_correction=True)
    assert set(vanilla["comparison"]) == {"A vs Rest", "B vs Rest"}


def test_samples_vary_with_the_hidden_gene_sets(trained):
    one = trained.get_normalized_expression(indices=np.arange(20), return_numpy=True)
    many = trained.get_normalized_expression(
        indices=np.arange(20), n_samples=8, return_mean=False, return_numpy=True
    )
    assert many.shape == (8, 20, N_GENES)
    assert many.std(axis=0).mean() > 0  # masks are the source of variation
    # the average over masked encodings stays near the full-input prediction
    assert np.abs(many.mean(0) - one).max() < 0.5 * one.max()
    np.testing.assert_allclose(many.sum(-1), 1.0, rtol=1e-4)


def test_posterior_predictive_and_likelihood_parameters(trained):
    params = trained.get_likelihood_parameters(indices=np.arange(50))
    assert params["mean"].shape == (50, N_GENES) and params["dispersions"].shape == (50, N_GENES)
    observed = trained.get_normalized_expression(
        indices=np.arange(50), library_size="latent", return_numpy=True
    )
    np.testing.assert_allclose(params["mean"], observed, rtol=1e-5)
    sample = trained.posterior_predictive_sample(indices=np.arange(50), n_samples=30)
    assert sample.shape == (50, N_GENES, 30)
    draws = sample.todense()
    assert np.all(draws >= 0) and np.all(draws == np.round(draws))
    # the draws average to the NB means
    rel = np.abs(draws.mean(-1).sum(0) - params["mean"].sum(0)) / params["mean"].sum(0)
    assert np.median(rel) < 0.1


def test_unknown_genes_in_gene_list_are_an_error(trained):
    with pytest.raises(ValueError, match=r"gene_list.*NOPE"):
        trained.get_normalized_expression(gene_list=["G1", "NOPE"])
    out = trained.get_normalized_expression(indices=[0, 1], gene_list=["G3", "G1"])
    assert list(out.columns) == ["G1", "G3"]  # scvi-tools keeps the model's gene order


def test_differential_expression_skips_unmeasured_genes(trained):
    query = _two_groups(120, seed=5)
    query = query[:, 10:].copy()  # the panel lacks G0-G9
    query.obs["batch"] = "b0"
    prepared = R2MAEModel.prepare_query_anndata(query, trained)
    de = trained.differential_expression(prepared, groupby="group", group1="B", group2="A")
    assert de.loc[[f"G{i}" for i in range(10)], "raw_mean1"].isna().all()
    measured = [f"G{i}" for i in range(10, N_GENES)]
    assert de.loc[measured, ["raw_mean1", "raw_normalized_mean2"]].notna().all().all()
    assert np.isfinite(de["bayes_factor"]).all()  # every gene is predicted
