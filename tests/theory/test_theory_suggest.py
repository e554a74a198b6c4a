"""suggest_mask_range on AnnData and matrices."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scr2mae.masking import UniformRatio
from scr2mae.theory import MaskRangeSuggestion, suggest_mask_range


@pytest.fixture(scope="module")
def counts():
    # counts driven by a few latent programmes, so the gene covariance has strong directions
    rng = np.random.default_rng(0)
    z = rng.standard_normal((600, 4))
    w = rng.standard_normal((4, 80)) * 0.5
    rate = np.exp(1.0 + z @ w + rng.normal(size=80))
    return rng.poisson(np.minimum(rate, 500)).astype(np.float32)


def test_suggestion_from_anndata_layer_leaves_data_untouched(counts):
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.zeros_like(counts))
    before = adata.layers["counts"].toarray().copy()
    res = suggest_mask_range(
        adata, layer="counts", n_top_genes=60, ratios=np.arange(0.05, 0.95, 0.05)
    )
    assert isinstance(res, MaskRangeSuggestion)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), before)
    assert not adata.X.toarray().any()
    lo, hi = res.mask_range
    assert 0.05 <= lo < hi <= 0.9 + 1e-9 and hi - lo >= 0.1 - 1e-9
    assert res.risk.shape == (3, res.ratios.size) and res.n_features == 60
    # the range spans the optimal ratios of the quantiles where masking helps
    informative = res.optimal_ratios[res.informative]
    assert lo <= informative.min() and informative.max() <= hi
    # stronger directions have larger eigenvalues and reach lower risk
    assert np.all(np.diff(res.eigenvalues) > 0)
    assert res.risk[-1].min() < res.risk[0].min()
    assert isinstance(res.to_masking(), UniformRatio)
    assert res.to_masking().mask_range == res.mask_range


def test_matrix_inputs_agree_and_counts_are_normalised(counts):
    dense = suggest_mask_range(counts, n_top_genes=40, ratios=[0.1, 0.3, 0.5, 0.7])
    sparse = suggest_mask_range(sp.csr_matrix(counts), n_top_genes=40, ratios=[0.1, 0.3, 0.5, 0.7])
    np.testing.assert_allclose(dense.risk, sparse.risk, rtol=1e-8)
    assert dense.mask_range == sparse.mask_range
    # passing the log-normalised matrix as already normalised gives the same answer
    lognorm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    again = suggest_mask_range(lognorm, n_top_genes=40, ratios=[0.1, 0.3, 0.5, 0.7])
    np.testing.assert_allclose(again.risk, dense.risk, rtol=1e-8)


def test_more_overparametrised_models_mask_more(counts):
    ratios = np.arange(0.05, 0.95, 0.025)
    small_model = suggest_mask_range(counts, n_top_genes=60, samples_per_feature=2.0, ratios=ratios)
    large_model = suggest_mask_range(
        counts, n_top_genes=60, samples_per_feature=0.25, ratios=ratios
    )
    assert large_model.optimal_ratios[-1] > small_model.optimal_ratios[-1]


def test_plot_draws_the_curves(counts):
    res = suggest_mask_range(counts, n_top_genes=30, ratios=[0.1, 0.3, 0.5])
    fig = res.plot()
    ax = fig.axes[0]
    assert len(ax.get_lines()) >= 2 * len(res.quantiles)
    assert ax.get_xlabel() == "masking ratio p"


def test_suggest_validation(counts):
    adata = ad.AnnData(counts)
    with pytest.raises(ValueError, match="layer"):
        suggest_mask_range(adata, layer="missing")
    with pytest.raises(ValueError, match="layer"):
        suggest_mask_range(counts, layer="counts")
    with pytest.raises(TypeError, match="data"):
        suggest_mask_range("not a matrix")
    with pytest.raises(ValueError, match="quantiles"):
        suggest_mask_range(counts, quantiles=[1.5])
    with pytest.raises(ValueError, match="samples_per_feature"):
        suggest_mask_range(counts, samples_per_feature=0)
    with pytest.raises(ValueError, match="non-finite"):
        suggest_mask_range(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="counts"):
        suggest_mask_range(-counts, counts=True)
    with pytest.raises(ValueError, match="2 genes"):
        suggest_mask_range(np.ones((10, 4)))
