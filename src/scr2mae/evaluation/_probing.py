"""Linear probing of representations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["ProbeResult", "cross_validated_probe"]


@dataclass(frozen=True)
class ProbeResult:
    """Scores of a cross-validated linear probe.

    Attributes
    ----------
    balanced_accuracy
        Balanced accuracy of the out-of-fold predictions.
    macro_f1
        Macro-averaged F1 of the out-of-fold predictions.
    predictions
        Out-of-fold predicted label of every sample.
    """

    balanced_accuracy: float
    macro_f1: float
    predictions: np.ndarray


def cross_validated_probe(
    X: np.ndarray,
    labels: np.ndarray,
    n_splits: int = 5,
    Cs: np.ndarray | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
) -> ProbeResult:
    """Logistic-regression probe scored on out-of-fold predictions.

    Features are standardised inside each fold; the inverse regularisation strength is chosen
    by an inner 3-fold grid search on the training part of each fold (balanced accuracy).

    Parameters
    ----------
    X
        Representation, ``(n_samples, n_features)``.
    labels
        Class of each sample.
    n_splits
        Number of stratified outer folds.
    Cs
        Grid of inverse regularisation strengths; default ``logspace(-2, 1, 4)``.
    seed
        Seed of the fold assignment.
    n_jobs
        Parallel jobs of the inner grid search (scikit-learn convention).

    Returns
    -------
    :class:`ProbeResult`.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    if X.ndim != 2 or X.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`X` must be 2-D with one row per label; got X {X.shape} and {labels.shape[0]} labels."
        )
    if not np.isfinite(X).all():
        raise ValueError("`X` contains NaN or infinite values.")
    _, counts = np.unique(labels, return_counts=True)
    if counts.size < 2:
        raise ValueError("`labels` must contain at least two classes.")
    if counts.min() < n_splits:
        raise ValueError(
            f"every class needs at least n_splits={n_splits} samples; smallest has {counts.min()}."
        )
    Cs = np.logspace(-2, 1, 4) if Cs is None else np.asarray(Cs)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        {"logisticregression__C": Cs},
        scoring="balanced_accuracy",
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=seed),
        n_jobs=n_jobs,
    )
    outer = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    pred = cross_val_predict(search, X, labels, cv=outer)
    return ProbeResult(
        balanced_accuracy=float(balanced_accuracy_score(labels, pred)),
        macro_f1=float(f1_score(labels, pred, average="macro")),
        predictions=pred,
    )
