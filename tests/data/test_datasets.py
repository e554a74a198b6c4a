import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from scr2mae.data import pbmc68k_batches, pbmc68k_counts


def _batch_score(adata) -> float:
    """Cross-validated balanced accuracy of predicting the batch from 20 PCs of ``.X``."""
    pcs = PCA(20, random_state=0).fit_transform(adata.X.toarray())
    clf = LogisticRegression(max_iter=2000)
    return cross_val_score(clf, pcs, adata.obs["batch"], cv=3, scoring="balanced_accuracy").mean()


def test_pbmc68k_batches_thins_the_real_counts_per_batch():
    full = pbmc68k_counts()
    adata = pbmc68k_batches(n_batches=3, seed=1)
    assert adata.shape == full.shape and list(adata.obs_names) == list(full.obs_names)
    assert list(adata.obs["batch"].cat.categories) == ["batch_0", "batch_1", "batch_2"]
    counts, original = adata.layers["counts"].toarray(), full.layers["counts"].toarray()
    assert counts.dtype == np.int32 and (counts >= 0).all() and (counts <= original).all()
    assert (counts.sum(1) > 0).all()
    assert 0.3 < counts.sum() / original.sum() < 0.95
    # same seed, same data; the cell types are kept
    again = pbmc68k_batches(n_batches=3, seed=1)
    assert (again.layers["counts"] != adata.layers["counts"]).nnz == 0
    assert (adata.obs["bulk_labels"] == full.obs["bulk_labels"]).all()


def test_pbmc68k_batches_has_a_batch_effect_only_when_asked():
    shifted = _batch_score(pbmc68k_batches(n_batches=3, seed=0))
    none = _batch_score(pbmc68k_batches(n_batches=3, capture_sd=0.0, seed=0))
    assert shifted > 0.9  # chance is 1/3
    assert none < 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"n_batches": 1}, {"n_batches": 2.5}, {"capture_sd": -1.0}, {"capture_sd": float("nan")}],
)
def test_pbmc68k_batches_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        pbmc68k_batches(**kwargs)
