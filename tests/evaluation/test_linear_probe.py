import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from scr2mae.evaluation import (
    cap_cells_per_donor,
    donor_level_auroc,
    donor_level_spearman,
    linear_probe,
    macro_auroc,
    split_donors,
)


def _donor_data(n_donors=12, cells=30, seed=0):
    rng = np.random.default_rng(seed)
    donors = np.repeat([f"d{i:02d}" for i in range(n_donors)], cells)
    age = np.repeat(rng.uniform(20, 80, n_donors), cells)
    sick = np.repeat(np.arange(n_donors) % 2 == 0, cells)
    labels = rng.choice(["A", "B", "C"], donors.size)
    X = rng.normal(size=(donors.size, 6))
    X[:, 0] += (labels == "A") * 3.0
    X[:, 1] += (labels == "B") * 3.0
    X[:, 2] += (age - 50) / 10
    X[:, 3] += sick * 1.5
    return X, donors, labels, age, np.where(sick, "AD", "normal")


def test_split_donors_is_disjoint_and_reproducible():
    donors = np.repeat(["a", "b", "c", "d", "e"], 3)
    train, test = split_donors(donors, 0.6, seed=1)
    assert len(train) == 3 and len(test) == 2
    assert set(train).isdisjoint(test) and set(train) | set(test) == set("abcde")
    again = split_donors(donors, 0.6, seed=1)
    np.testing.assert_array_equal(train, again[0])
    with pytest.raises(ValueError, match="two donors"):
        split_donors(["a", "a"])
    with pytest.raises(ValueError, match="train_fraction"):
        split_donors(donors, 1.0)


def test_cap_cells_per_donor():
    donors = np.array(["a"] * 10 + ["b"] * 3)
    keep = cap_cells_per_donor(donors, 4, seed=0)
    assert (donors[keep] == "a").sum() == 4 and (donors[keep] == "b").sum() == 3
    assert np.all(np.diff(keep) > 0)
    assert cap_cells_per_donor(donors, None).size == 13
    with pytest.raises(ValueError, match="max_cells"):
        cap_cells_per_donor(donors, 0)


def test_probe_never_leaks_a_donor_and_caps_cells():
    X, donors, labels, _, _ = _donor_data()
    for seed in range(3):
        res = linear_probe(X, labels, donors, max_cells_per_donor=10, seed=seed, Cs=[0.1, 1.0])
        assert set(res.train_donors).isdisjoint(res.test_donors)
        test_donors = donors[res.test_indices]
        assert set(test_donors) == set(res.test_donors)
        assert set(test_donors).isdisjoint(res.train_donors)
        assert np.all(np.unique(test_donors, return_counts=True)[1] == 10)
        assert res.metrics["balanced_accuracy"] > 0.8


def test_classification_metrics_match_sklearn():
    X, donors, labels, _, _ = _donor_data(seed=1)
    res = linear_probe(X, labels, donors, seed=0)
    from sklearn.metrics import balanced_accuracy_score, f1_score

    y = labels[res.test_indices]
    assert res.metrics["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, res.predictions)
    )
    assert res.metrics["macro_f1"] == pytest.approx(f1_score(y, res.predictions, average="macro"))
    assert res.metrics["auroc_cell"] == pytest.approx(
        roc_auc_score(y, res.probabilities, multi_class="ovr", average="macro")
    )
    assert res.best_param in np.logspace(-6, 2, 10)


def test_macro_and_donor_auroc_on_hand_made_inputs():
    y = np.array(["n", "n", "ad", "ad", "n", "ad"])
    p_ad = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    scores = np.c_[p_ad, 1 - p_ad]  # columns ordered as classes ["ad", "n"]
    classes = np.array(["ad", "n"])
    assert macro_auroc(y, scores, classes) == pytest.approx(roc_auc_score(y == "n", 1 - p_ad))
    donors = np.array(["x", "x", "y", "y", "z", "w"])
    # donors: x (n, mean p_ad .25), y (ad, .575), z (n, .2), w (ad, .9) -> perfectly separated
    assert donor_level_auroc(y, scores, classes, donors) == pytest.approx(1.0)
    three = np.eye(3)[[0, 1, 2, 0]] * 0.7 + 0.1
    y3 = np.array(["a", "b", "c", "a"])
    assert macro_auroc(y3, three, np.array(["a", "b", "c"])) == pytest.approx(
        roc_auc_score(y3, three, multi_class="ovr", average="macro")
    )


def test_regression_probe_and_donor_spearman():
    X, donors, _, age, _ = _donor_data(seed=2)
    res = linear_probe(X, age, donors, task="regression", seed=0)
    y = age[res.test_indices]
    assert res.metrics["spearman_cell"] == pytest.approx(spearmanr(y, res.predictions).statistic)
    d = donors[res.test_indices]
    means_true = [y[d == k].mean() for k in np.unique(d)]
    means_pred = [res.predictions[d == k].mean() for k in np.unique(d)]
    assert res.metrics["spearman_donor"] == pytest.approx(
        spearmanr(means_true, means_pred).statistic
    )
    assert res.metrics["spearman_donor"] > 0.8
    assert res.best_param in np.logspace(0, 8, 20)
    assert donor_level_spearman([1, 2, 3, 4], [4, 3, 2, 1], ["a", "b", "c", "d"]) == -1.0


def test_donor_level_disease_probe_drops_missing_targets():
    X, donors, _, _, status = _donor_data(seed=3)
    target = status.astype(object)
    target[:30] = None  # first donor unlabeled: removed before the split
    res = linear_probe(X, target, donors, seed=0)
    assert "d00" not in set(res.train_donors) | set(res.test_donors)
    assert res.metrics["auroc_donor"] > 0.7


def test_probe_rejects_bad_input():
    X, donors, labels, _, _ = _donor_data()
    with pytest.raises(ValueError, match="task"):
        linear_probe(X, labels, donors, task="clustering")
    with pytest.raises(ValueError, match="one entry per row"):
        linear_probe(X, labels[:-1], donors)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(bad, labels, donors)
    with pytest.raises(ValueError, match="n_folds"):
        linear_probe(X, labels, donors, n_folds=1)
