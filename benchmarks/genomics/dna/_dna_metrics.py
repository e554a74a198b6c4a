"""Variant-effect metrics: AUROC, AUPRC, partial AUROC and per-class AUPRC (Table 3).

Scores are "higher = more likely pathogenic"; for GPN-MSA LLRs pass ``-llr``.

* **AUROC**: area under the ROC curve, ties counted one half (Mann-Whitney).
* **AUPRC**: average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score
  thresholds in decreasing order (the step-wise estimator of scikit-learn's
  ``average_precision_score``; no interpolation).
* **pAUROC at max FPR f** (default 0.001): the area under the ROC curve for FPR in ``[0, f]``
  (ROC linearly interpolated at ``f``), *standardised with the McClish correction*
  ``0.5 * (1 + (A - A_min) / (A_max - A_min))`` with ``A_min = f^2 / 2`` (chance diagonal) and
  ``A_max = f`` (perfect), so that 0.5 is chance and 1 is perfect. This is what
  ``sklearn.metrics.roc_auc_score(max_fpr=f)`` returns, and it matches Table 3, where an
  uninformative model (NT) scores 0.500. :func:`partial_auroc` with ``mcclish=False`` returns
  the raw area ``A`` instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(
            f"`labels` and `scores` must be 1-d of equal length, got {y.shape} and {s.shape}."
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("`labels` must be 0/1 (1 = pathogenic).")
    if not np.isfinite(s).all():
        raise ValueError("`scores` must be finite.")
    y = y.astype(int)
    if y.min(initial=1) == y.max(initial=0) or len(y) == 0:
        raise ValueError("`labels` must contain both classes.")
    return y, s


def roc_curve_points(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr)`` at every distinct threshold, starting at ``(0, 0)``."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (len(y) - y.sum())]
    return fpr, tpr


def auroc(labels, scores) -> float:
    """Area under the ROC curve (trapezoids; ties count one half)."""
    fpr, tpr = roc_curve_points(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def auprc(labels, scores) -> float:
    """Area under the precision-recall curve as average precision (see module docstring)."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def partial_auroc(labels, scores, max_fpr: float = 0.001, *, mcclish: bool = True) -> float:
    """Partial AUROC over FPR in ``[0, max_fpr]``, McClish-standardised by default.

    Parameters
    ----------
    labels, scores
        Binary labels (1 = pathogenic) and scores (higher = more pathogenic).
    max_fpr
        Upper FPR limit, in ``(0, 1]``.
    mcclish
        Return the standardised value (0.5 chance, 1 perfect; as scikit-learn) instead of the
        raw area (between 0 and ``max_fpr``).
    """
    if not 0.0 < float(max_fpr) <= 1.0:
        raise ValueError(f"`max_fpr` must lie in (0, 1], got {max_fpr}.")
    fpr, tpr = roc_curve_points(labels, scores)
    if max_fpr == 1.0:
        return auroc(labels, scores)
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.r_[fpr[:stop], max_fpr]
    y_end = np.interp(max_fpr, fpr, tpr)
    y = np.r_[tpr[:stop], y_end]
    area = float(np.trapezoid(y, x))
    if not mcclish:
        return area
    a_min, a_max = 0.5 * max_fpr**2, max_fpr
    return float(0.5 * (1.0 + (area - a_min) / (a_max - a_min)))


def table3_metrics(
    variants: pd.DataFrame, llr: np.ndarray, *, max_fpr: float = 0.001
) -> dict[str, float]:
    """The Table 3 columns for one model from its LLRs.

    ``missense`` set: AUROC and AUPRC. ``regulatory`` set: pAUROC (max FPR ``max_fpr``,
    McClish) and AUPRC, and AUPRC per class (5'UTR, 3'UTR, ncRNA: the pathogenic and benign
    variants of that class). Pathogenicity score = ``-llr``.
    """
    llr = np.asarray(llr, dtype=float)
    if len(llr) != len(variants):
        raise ValueError(f"got {len(llr)} scores for {len(variants)} variants.")
    score = -llr
    out: dict[str, float] = {}
    mis = (variants["set"] == "missense").to_numpy()
    reg = (variants["set"] == "regulatory").to_numpy()
    lab = variants["label"].to_numpy()
    out["missense AUROC"] = auroc(lab[mis], score[mis])
    out["missense AUPRC"] = auprc(lab[mis], score[mis])
    out["regulatory pAUROC"] = partial_auroc(lab[reg], score[reg], max_fpr)
    out["regulatory AUPRC"] = auprc(lab[reg], score[reg])
    for cls in ("5'UTR", "3'UTR", "ncRNA"):
        sel = reg & (variants["class"] == cls).to_numpy()
        out[f"{cls} AUPRC"] = auprc(lab[sel], score[sel])
    return out
