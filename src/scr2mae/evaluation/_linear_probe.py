"""Donor-level linear probing of cell representations (appendix C.8 of the R2MAE paper)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._validation import check_int

__all__ = [
    "LinearProbeResult",
    "cap_cells_per_donor",
    "donor_level_auroc",
    "donor_level_spearman",
    "linear_probe",
    "macro_auroc",
    "split_donors",
]

#: appendix C.8 grids
RIDGE_ALPHAS = np.logspace(0, 8, 20)
LOGISTIC_CS = np.logspace(-6, 2, 10)
CLASSIFICATION_METRICS = ("balanced_accuracy", "macro_f1", "auroc_cell", "auroc_donor")
REGRESSION_METRICS = ("spearman_cell", "spearman_donor")


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes
    ----------
    task
        ``"classification"`` or ``"regression"``.
    metrics
        Test-set metrics: ``balanced_accuracy``, ``macro_f1``, ``auroc_cell``,
        ``auroc_donor`` (classification) or ``spearman_cell``, ``spearman_donor`` (regression).
    best_param
        Regularisation chosen by the grid search (``C`` or ``alpha``).
    train_donors, test_donors
        The donor split.
    test_indices
        Positions (in the input) of the test cells after capping.
    predictions
        Predicted label (classification) or value (regression) of each test cell.
    probabilities
        Class probabilities of the test cells (classification only), columns ``classes``.
    classes
        Class labels of the probe (classification only).
    """

    task: str
    metrics: dict[str, float]
    best_param: float
    train_donors: np.ndarray
    test_donors: np.ndarray
    test_indices: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None = None
    classes: np.ndarray | None = field(default=None)


def split_donors(
    donors, train_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly assign whole donors to a training and a test set.

    Parameters
    ----------
    donors
        Donor of each cell.
    train_fraction
        Fraction of donors in the training set (at least one donor goes to each side).
    seed
        Seed of the draw.

    Returns
    -------
    ``(train_donors, test_donors)``: sorted arrays of donor ids, disjoint.
    """
    unique = np.unique(np.asarray(donors).astype(str))
    if unique.size < 2:
        raise ValueError(f"`donors` must contain at least two donors, got {unique.size}.")
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"`train_fraction` must lie in (0, 1), got {train_fraction!r}.")
    rng = np.random.default_rng(seed)
    n_train = int(np.clip(round(train_fraction * unique.size), 1, unique.size - 1))
    chosen = rng.permutation(unique.size)[:n_train]
    return np.sort(unique[chosen]), np.delete(unique, chosen)


def cap_cells_per_donor(donors, max_cells: int | None, seed: int = 0) -> np.ndarray:
    """Positions of at most ``max_cells`` randomly chosen cells of every donor.

    Parameters
    ----------
    donors, seed
        As in :func:`split_donors`.
    max_cells
        Maximum number of cells kept per donor; ``None`` keeps all.

    Returns
    -------
    Sorted integer positions of the kept cells.
    """
    donors = np.asarray(donors).astype(str)
    if max_cells is None:
        return np.arange(donors.size)
    check_int("max_cells", max_cells)
    rng = np.random.default_rng(seed)
    keep = []
    for donor in np.unique(donors):
        idx = np.flatnonzero(donors == donor)
        if idx.size > max_cells:
            idx = rng.choice(idx, max_cells, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def macro_auroc(y_true, scores, classes) -> float:
    """Macro-averaged one-vs-rest AUROC (binary AUROC of the second class for two classes).

    Classes absent from ``y_true`` (or present in every sample) are left out of the average;
    NaN if no class can be scored.

    Parameters
    ----------
    y_true
        True labels.
    scores
        ``(n_samples, n_classes)`` class probabilities, columns ordered as ``classes``.
    classes
        Class labels of the columns of ``scores``.
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes)
    if scores.ndim != 2 or scores.shape != (y_true.size, classes.size):
        raise ValueError(
            f"`scores` must have shape (n_samples, n_classes) = ({y_true.size}, {classes.size}), "
            f"got {scores.shape}."
        )
    if classes.size == 2:
        positive = y_true == classes[1]
        if positive.all() or not positive.any():
            return float("nan")
        return float(roc_auc_score(positive, scores[:, 1]))
    aucs = []
    for j, cls in enumerate(classes):
        positive = y_true == cls
        if positive.any() and not positive.all():
            aucs.append(roc_auc_score(positive, scores[:, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


def donor_level_auroc(y_true, scores, classes, donors) -> float:
    """Macro AUROC at donor level: each donor's class probabilities are averaged over its cells.

    The donor's label is its most frequent cell label (for donor-level traits such as
    disease status all its cells share it).
    """
    donors = np.asarray(donors).astype(str)
    y_true = np.asarray(y_true)
    frame = pd.DataFrame(np.asarray(scores, dtype=np.float64))
    mean_scores = frame.groupby(donors, sort=True).mean()
    labels = pd.Series(y_true).groupby(donors, sort=True).agg(lambda s: s.value_counts().index[0])
    return macro_auroc(labels.loc[mean_scores.index].to_numpy(), mean_scores.to_numpy(), classes)


def donor_level_spearman(y_true, y_pred, donors) -> float:
    """Spearman correlation between donors' mean true and mean predicted values."""
    donors = np.asarray(donors).astype(str)
    frame = pd.DataFrame({"true": np.asarray(y_true, float), "pred": np.asarray(y_pred, float)})
    means = frame.groupby(donors).mean()
    if len(means) < 3:
        return float("nan")
    return float(spearmanr(means["true"], means["pred"]).statistic)


def linear_probe(
    X,
    target,
    donors,
    task: Literal["classification", "regression"] = "classification",
    train_fraction: float = 0.5,
    max_cells_per_donor: int | None = None,
    max_test_cells_per_donor: int | None = None,
    n_folds: int = 5,
    Cs=None,
    alphas=None,
    standardize: bool = True,
    seed: int = 0,
    n_jobs: int | None = None,
    max_iter: int = 100,
) -> LinearProbeResult:
    """Linear probe of a representation across donors (appendix C.8 of the R2MAE paper).

    1. Cells with a missing target (NaN / None / empty) are removed.
    2. Donors are split at random into training and test donors (no donor on both sides).
    3. Each donor keeps at most ``max_cells_per_donor`` random cells (training and test,
       unless ``max_test_cells_per_donor`` sets another cap for the test set).
    4. A logistic regression (classification; ``C`` over ``np.logspace(-6, 2, 10)``,
       selected for balanced accuracy) or a ridge regression (regression; ``alpha`` over
       ``np.logspace(0, 8, 20)``, selected for mean squared error) is tuned by GridSearchCV
       with ``n_folds``-fold cross-validation grouped by donor on the training cells, and
       refit on all of them.
    5. Test metrics: balanced accuracy and macro F1, and macro AUROC at cell and donor level
       (donor = mean of its cells' probabilities) for classification; Spearman correlation at
       cell and donor level (donor = mean over its cells) for regression.

    Parameters
    ----------
    X
        Representation, ``(n_cells, n_features)``.
    target
        Label (classification) or value (regression) of each cell.
    donors
        Donor of each cell.
    task
        ``"classification"`` or ``"regression"``.
    train_fraction
        Fraction of donors used for training.
    max_cells_per_donor
        Cap on the cells of each donor; ``None`` keeps all.
    max_test_cells_per_donor
        Separate cap for the test donors; defaults to ``max_cells_per_donor``.
    n_folds
        Folds of the donor-grouped cross-validation (reduced to the number of training donors
        if there are fewer).
    Cs, alphas
        Grids of the logistic ``C`` and ridge ``alpha``; default to the paper's grids.
    standardize
        Standardise features (fitted on training cells) before the linear model.
    seed
        Seed of the donor split and the cell capping.
    n_jobs
        Parallel jobs of the grid search.
    max_iter
        Iterations of the logistic-regression solver (scikit-learn's default, 100).

    Returns
    -------
    :class:`LinearProbeResult`.

    Raises
    ------
    ValueError
        For mismatched lengths, non-finite features, fewer than two donors on either side,
        a classification training set with a single class, or fewer than two training donors.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"`task` must be 'classification' or 'regression', got {task!r}.")
    X = np.asarray(X, dtype=np.float64)
    target = np.asarray(target, dtype=object if task == "classification" else np.float64)
    donors = np.asarray(donors).astype(str)
    if X.ndim != 2:
        raise ValueError(f"`X` must be 2-D (cells x features), got shape {X.shape}.")
    if target.shape != (X.shape[0],) or donors.shape != (X.shape[0],):
        raise ValueError(
            f"`target` and `donors` must have one entry per row of `X` ({X.shape[0]}); got "
            f"{target.shape} and {donors.shape}."
        )
    if not np.isfinite(X).all():
        raise ValueError("`X` contains NaN or infinite values.")
    check_int("n_folds", n_folds, 2)
    if task == "classification":
        present = np.array([v is not None and not pd.isna(v) and str(v) != "" for v in target])
        target = np.where(present, target, "").astype(str)
    else:
        present = np.isfinite(target)
    keep = np.flatnonzero(present)

    train_donors, test_donors = split_donors(donors[keep], train_fraction, seed)
    cap_test = max_cells_per_donor if max_test_cells_per_donor is None else max_test_cells_per_donor
    train_pos = keep[np.isin(donors[keep], train_donors)]
    test_pos = keep[np.isin(donors[keep], test_donors)]
    train_pos = train_pos[cap_cells_per_donor(donors[train_pos], max_cells_per_donor, seed)]
    test_pos = test_pos[cap_cells_per_donor(donors[test_pos], cap_test, seed + 1)]

    n_groups = np.unique(donors[train_pos]).size
    if n_groups < 2:
        raise ValueError("the training set needs at least two donors for grouped CV.")
    cv = GroupKFold(n_splits=min(n_folds, n_groups))
    steps = [StandardScaler()] if standardize else []
    Xtr, Xte = X[train_pos], X[test_pos]
    ytr, yte = target[train_pos], target[test_pos]
    groups = donors[train_pos]

    if task == "classification":
        if np.unique(ytr).size < 2:
            raise ValueError("the training donors carry a single class; cannot fit a classifier.")
        grid = LOGISTIC_CS if Cs is None else np.asarray(Cs, dtype=np.float64)
        pipe = make_pipeline(*steps, LogisticRegression(max_iter=max_iter))
        key, scoring = "logisticregression__C", "balanced_accuracy"
    else:
        grid = RIDGE_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)
        pipe = make_pipeline(*steps, Ridge())
        key, scoring = "ridge__alpha", "neg_mean_squared_error"
    search = GridSearchCV(pipe, {key: grid}, scoring=scoring, cv=cv, n_jobs=n_jobs)
    with warnings.catch_warnings():
        # a donor-grouped validation fold may hold a single class; its balanced accuracy is
        # still defined, and scikit-learn's notice about it is expected here
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        search.fit(Xtr, ytr, groups=groups)
    best = float(search.best_params_[key])
    pred = search.predict(Xte)
    test_donor_of_cell = donors[test_pos]

    if task == "classification":
        proba = search.predict_proba(Xte)
        classes = search.classes_
        metrics = {
            "balanced_accuracy": float(balanced_accuracy_score(yte, pred)),
            "macro_f1": float(f1_score(yte, pred, average="macro")),
            "auroc_cell": macro_auroc(yte, proba, classes),
            "auroc_donor": donor_level_auroc(yte, proba, classes, test_donor_of_cell),
        }
        return LinearProbeResult(
            task, metrics, best, train_donors, test_donors, test_pos, pred, proba, classes
        )
    metrics = {
        "spearman_cell": float(spearmanr(yte, pred).statistic),
        "spearman_donor": donor_level_spearman(yte, pred, test_donor_of_cell),
    }
    return LinearProbeResult(task, metrics, best, train_donors, test_donors, test_pos, pred)
