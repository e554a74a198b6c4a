import numpy as np
import pytest

from scr2mae.evaluation import cross_validated_probe


def _data(shift: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], 30)
    X = rng.normal(size=(90, 4))
    X[:, 0] += shift * (labels == "a")
    X[:, 1] += shift * (labels == "b")
    return X, labels


def test_probe_scores_out_of_fold_predictions():
    X, labels = _data(shift=6.0)
    separable = cross_validated_probe(X, labels, n_splits=3, Cs=[1.0])
    assert separable.balanced_accuracy == pytest.approx(1.0)
    assert separable.macro_f1 == pytest.approx(1.0)
    np.testing.assert_array_equal(separable.predictions, labels)
    noise = cross_validated_probe(np.random.default_rng(1).normal(size=(90, 4)), labels, Cs=[1.0])
    assert noise.balanced_accuracy < 0.6  # chance is 1/3
    again = cross_validated_probe(np.random.default_rng(1).normal(size=(90, 4)), labels, Cs=[1.0])
    np.testing.assert_array_equal(noise.predictions, again.predictions)


def test_probe_rejects_bad_input():
    X, labels = _data(shift=1.0)
    with pytest.raises(ValueError, match="one row per label"):
        cross_validated_probe(X[:-1], labels)
    with pytest.raises(ValueError, match="two classes"):
        cross_validated_probe(X, np.full(90, "a"))
    with pytest.raises(ValueError, match="n_splits"):
        cross_validated_probe(X, labels, n_splits=40)
