import numpy as np
import pandas as pd
import pytest

from scr2mae.evaluation import transfer_labels

CENTRES = 8.0 * np.eye(5)[:3]  # three populations, 8 apart, in 5 dimensions


def _blobs(n_per_type, seed, centres=CENTRES, names=("A", "B", "C")):
    rng = np.random.default_rng(seed)
    z = np.vstack([c + rng.normal(0, 1, (n_per_type, centres.shape[1])) for c in centres])
    labels = np.repeat(np.asarray(names), n_per_type)
    return z, labels


def test_labels_of_separable_populations_are_transferred_without_doubt():
    z_ref, y_ref = _blobs(100, seed=0)
    z_query, y_query = _blobs(50, seed=1)
    result = transfer_labels(z_ref, y_ref, z_query)
    assert list(result.columns) == ["label", "uncertainty"]
    assert isinstance(result["label"].dtype, pd.CategoricalDtype)
    assert list(result["label"].cat.categories) == ["A", "B", "C"]
    assert (result["label"].to_numpy() == y_query).mean() == 1.0
    assert result["uncertainty"].max() < 0.01


def test_uncertainty_is_high_between_populations_and_for_a_type_the_reference_lacks():
    # populations that touch, as related cell types do
    centres = 3.0 * np.eye(5)[:3]
    z_ref, y_ref = _blobs(300, seed=0, centres=centres)
    rng = np.random.default_rng(2)

    def around(point, n=60):
        return point + rng.normal(0, 0.3, (n, 5))

    core = np.vstack([around(c) for c in centres])  # cells typical of A, B and C
    between = around((centres[0] + centres[1]) / 2)  # halfway between A and B
    novel = around(centres.mean(0))  # a fourth type, at the centre of A, B and C
    result = transfer_labels(
        z_ref, y_ref, np.vstack([core, between, novel]), threshold=0.2, return_probabilities=True
    )
    known, mid, new = result.iloc[:180], result.iloc[180:240], result.iloc[240:]
    assert (known["label"].to_numpy() == np.repeat(["A", "B", "C"], 60)).all()
    assert known["uncertainty"].quantile(0.9) < 0.05
    assert mid["uncertainty"].median() > 0.2
    assert new["uncertainty"].median() > 0.3
    # halfway cells split between A and B; C gets little of the vote
    assert mid["probability_C"].mean() < 0.1
    # the threshold marks the doubtful cells and leaves the others
    assert list(result["label"].cat.categories) == ["A", "B", "C", "unknown"]
    assert (known["label"] == "unknown").sum() == 0
    assert (mid["label"] == "unknown").mean() >= 0.5
    assert (new["label"] == "unknown").mean() >= 0.8
    np.testing.assert_array_equal(
        result["label"] == "unknown", result["uncertainty"].to_numpy() > 0.2
    )


def test_uncertainty_follows_the_true_class_posterior():
    """On a Gaussian mixture, 1 - max probability tracks the Bayes posterior's uncertainty."""
    centres = 3.0 * np.eye(5)[:3]
    rng = np.random.default_rng(5)
    z_ref, y_ref = _blobs(300, seed=4, centres=centres)
    kind = rng.integers(0, 3, 1500)
    z_query = centres[kind] + rng.normal(0, 1, (1500, 5))
    log_lik = -0.5 * ((z_query[:, None, :] - centres[None]) ** 2).sum(-1)
    posterior = np.exp(log_lik - log_lik.max(1, keepdims=True))
    posterior /= posterior.sum(1, keepdims=True)
    result = transfer_labels(z_ref, y_ref, z_query, n_neighbors=30, return_probabilities=True)
    probabilities = result[["probability_A", "probability_B", "probability_C"]].to_numpy()
    assert np.abs(probabilities - posterior).sum(1).mean() < 0.08
    true_uncertainty = 1 - posterior.max(1)
    assert np.corrcoef(result["uncertainty"], true_uncertainty)[0, 1] > 0.8
    accuracy = (result["label"].to_numpy() == np.array(["A", "B", "C"])[kind]).mean()
    assert accuracy > (posterior.argmax(1) == kind).mean() - 0.02  # near the Bayes rate


def test_weights_follow_the_gaussian_kernel_of_the_excess_distance():
    reference = np.array([[1.0], [2.0], [4.0], [30.0]])
    result = transfer_labels(
        reference, ["a", "b", "b", "a"], np.array([[0.0]]), n_neighbors=3, return_probabilities=True
    )
    d = np.array([1.0, 2.0, 4.0])
    w = np.exp(-0.5 * ((d - d[0]) / (2 * d.std())) ** 2)
    p_a = w[0] / w.sum()
    assert result.loc[0, "probability_a"] == pytest.approx(p_a, rel=1e-5)
    assert result.loc[0, "probability_b"] == pytest.approx(1 - p_a, rel=1e-5)
    assert result.loc[0, "label"] == ("a" if p_a > 0.5 else "b")
    assert result.loc[0, "uncertainty"] == pytest.approx(1 - max(p_a, 1 - p_a), rel=1e-5)
    # equal distances vote equally; a tie goes to the first category
    even = transfer_labels(np.array([[-1.0], [1.0]]), ["b", "a"], np.array([[0.0]]), n_neighbors=2)
    assert even.loc[0, "uncertainty"] == pytest.approx(0.5)
    assert even.loc[0, "label"] == "a"


def test_repeatable_with_a_seed_and_keeps_the_query_index_and_category_order():
    # overlapping populations, so that neighbours and votes matter
    z_ref, y_ref = _blobs(700, seed=3, centres=2.0 * np.eye(5)[:3])
    z_query, _ = _blobs(100, seed=4, centres=2.0 * np.eye(5)[:3])
    labels = pd.Categorical(y_ref, categories=["C", "A", "B"])
    query = pd.DataFrame(z_query, index=[f"cell{i}" for i in range(len(z_query))])
    first = transfer_labels(z_ref, labels, query, random_state=7)
    again = transfer_labels(z_ref, labels, query, random_state=7)
    pd.testing.assert_frame_equal(first, again)
    assert list(first.index) == list(query.index)
    assert list(first["label"].cat.categories) == ["C", "A", "B"]
    assert first["uncertainty"].between(0, 2 / 3 + 1e-9).all()
    assert first["uncertainty"].max() > 0.1  # the overlap shows


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"query_latent": np.zeros((4, 3))}, "5 dimensions and `query_latent` 3"),
        ({"query_latent": np.full((4, 5), np.nan)}, r"`query_latent` has NaN .* 4 cell"),
        ({"reference_latent": np.zeros(30)}, "`reference_latent` must be a 2-D array"),
        ({"reference_labels": ["A"] * 29}, "29 entries for 30 reference cells"),
        ({"reference_labels": ["A"] * 29 + [None]}, r"1 missing value\(s\)"),
        ({"n_neighbors": 31}, "more than the 30 reference cells"),
        ({"n_neighbors": 0}, "`n_neighbors` must be an integer >= 1"),
        ({"threshold": 1.5}, r"`threshold` must be a number in \[0, 1\]"),
        ({"threshold": True}, "`threshold`"),
        ({"threshold": 0.5, "unknown_label": "A"}, "`unknown_label` 'A' is one of"),
    ],
)
def test_bad_input_is_named(change, match):
    rng = np.random.default_rng(0)
    args = {
        "reference_latent": rng.normal(size=(30, 5)),
        "reference_labels": ["A", "B", "C"] * 10,
        "query_latent": rng.normal(size=(4, 5)),
    }
    args.update(change)
    with pytest.raises(ValueError, match=match):
        transfer_labels(**args)
