"""Numerical deterministic-equivalent risk for any covariance and any signal.

Theorem 3 of the paper treats ``beta`` an eigenvector of ``Sigma``; this module does not need
that. It uses the reduction described in :mod:`scr2mae.theory._closed_form` (masked covariance
``Sigma_z``, best masked predictor ``b*``, effective noise ``sigma_eff^2``) and the standard
deterministic equivalents of ridgeless regression with ``m = p n`` rows: ``kappa`` solves
``sum_i s_i / (s_i + kappa) = m`` over the eigenvalues ``s_i`` of ``Sigma_z`` (``kappa = 0``
when ``m >= d``), ``I - P ~ kappa (Sigma_z + kappa)^-1`` to first order, and

``E||(I - P) b||_A^2 ~ kappa^2 ||Q b||_A^2 + kappa^2 T_A / (1 - T_z) ||Q b||_{Sigma_z}^2``,
``E||Z^+ e||_A^2 ~ sigma_eff^2 T_A / (1 - T_z)``

with ``Q = (Sigma_z + kappa)^-1``, ``T_A = tr(A Sigma_z Q^2) / m`` and
``T_z = tr(Sigma_z^2 Q^2) / m``. The test metric is ``A = Sigma`` (fresh samples are
unmasked) and the error is measured against ``beta``, not ``b*``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from ._risk import RiskCurve
from ._validation import check_covariance, check_int, check_nonnegative, check_ratios, check_signal

__all__ = [
    "deterministic_prediction_norm",
    "deterministic_risk",
    "masked_covariance",
    "masked_target",
    "solve_fixed_point",
]


def masked_covariance(cov, ratio: float) -> np.ndarray:
    """Covariance of the masked covariates, ``(1 - p)^2 Sigma + p (1 - p) diag(Sigma)``.

    Parameters
    ----------
    cov
        Covariance ``Sigma`` of the unmasked covariates, shape ``(d, d)``.
    ratio
        Masking ratio ``p`` in ``(0, 1)``; each covariate is zeroed with probability ``p``.

    Returns
    -------
    The ``(d, d)`` covariance of ``z = b * x`` with ``b_j ~ Bernoulli(1 - p)``.
    """
    cov = check_covariance(cov)
    (p,) = check_ratios([ratio], "ratio")
    return _masked_covariance(cov, p)


def _masked_covariance(cov: np.ndarray, p: float) -> np.ndarray:
    out = (1.0 - p) ** 2 * cov
    out[np.diag_indices_from(out)] += p * (1.0 - p) * np.diag(cov)
    return out


def masked_target(cov, beta, ratio: float) -> np.ndarray:
    """Best linear predictor of ``y = x^T beta + eps`` from masked covariates.

    ``b* = (1 - p) Sigma_z^-1 Sigma beta``: the coefficients that min-norm regression on
    masked rows converges to when samples are plentiful. For ``Sigma = I`` it equals
    ``beta``; with correlated features it inflates the coefficients along strong directions.

    Parameters
    ----------
    cov, ratio
        As in :func:`masked_covariance`.
    beta
        True coefficients, shape ``(d,)`` or ``(d, k)``.

    Returns
    -------
    ``b*`` with the shape of ``beta``.
    """
    cov = check_covariance(cov)
    beta = check_signal(beta, cov.shape[0], allow_matrix=True)
    (p,) = check_ratios([ratio], "ratio")
    return (1.0 - p) * np.linalg.solve(_masked_covariance(cov, p), cov @ beta)


def solve_fixed_point(eigenvalues, n_effective: float) -> float:
    """Unique non-negative root ``kappa`` of ``sum_i s_i / (s_i + kappa) = m``.

    The left side falls strictly from the number of positive eigenvalues (at ``kappa = 0``)
    to 0, so a positive root exists and is unique exactly when ``m`` is smaller than that
    number; otherwise the ridgeless limit is ``kappa = 0`` (least squares, no bias).

    Parameters
    ----------
    eigenvalues
        Non-negative eigenvalues ``s_i`` of the (masked) covariance.
    n_effective
        Effective number of training rows ``m = p n`` (positive).

    Returns
    -------
    ``kappa >= 0``.
    """
    s = np.asarray(eigenvalues, dtype=float).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("`eigenvalues` must be a non-empty array of finite values >= 0.")
    m = check_nonnegative("n_effective", n_effective)
    if m == 0.0:
        raise ValueError("`n_effective` must be positive.")
    s = s[s > 0.0]
    if m >= s.size:
        return 0.0

    def excess(kappa: float) -> float:
        return float(np.sum(s / (s + kappa))) - m

    hi = float(s.max()) * s.size / m  # there the sum is at most m
    return float(brentq(excess, 0.0, hi, xtol=1e-14 * hi, rtol=1e-13, maxiter=500))


def _terms(p: float, cov: np.ndarray, cov_b: np.ndarray, ref: np.ndarray, m: float):
    """Bias pieces, amplification and explained variance at one ratio.

    ``cov_b`` is ``Sigma beta`` (d, k); ``ref`` (d, k) is the vector the estimate is compared
    with (``beta`` for the risk, 0 for the prediction magnitude).
    """
    s, vecs = np.linalg.eigh(_masked_covariance(cov, p))
    s = np.maximum(s, 1e-300)
    bt = (1.0 - p) * (vecs.T @ cov_b) / s[:, None]  # b* in the eigenbasis of Sigma_z
    b_star = vecs @ bt
    kappa = solve_fixed_point(s, m)
    q = 1.0 / (s + kappa)
    metric_diag = np.einsum("ij,ij->j", vecs, cov @ vecs)  # v_i^T Sigma v_i
    t = float(np.sum(metric_diag * s * q**2)) / m
    t_z = float(np.sum(s**2 * q**2)) / m
    amplification = t / (1.0 - t_z) if t_z < 1.0 else np.inf

    delta = b_star - ref
    misfit = np.einsum("ik,ik->k", delta, cov @ delta)
    if kappa > 0.0:
        qb = q[:, None] * bt
        cross = np.einsum("ik,ik->k", vecs.T @ (cov @ delta), qb)
        h = vecs @ qb
        shrink = np.einsum("ik,ik->k", h, cov @ h)
        shrink_z = np.einsum("i,ik->k", s, qb**2)
        bias = misfit - 2.0 * kappa * cross + kappa**2 * (shrink + amplification * shrink_z)
    else:
        bias = misfit
    explained = np.einsum("i,ik->k", s, bt**2)  # b*^T Sigma_z b*
    return bias, amplification, explained, kappa


def _sweep(ratios, cov, beta, n_samples, noise_var, centred: bool):
    """Checked ratios, then bias, variance, null risk, kappa, effective noise and whether
    ``beta`` was 1-d; the error is against ``beta`` if ``centred``, else against 0."""
    p = check_ratios(ratios)
    cov = check_covariance(cov)
    beta = check_signal(beta, cov.shape[0], allow_matrix=True)
    n = check_int("n_samples", n_samples)
    sigma2 = check_nonnegative("noise_var", noise_var)
    betas = beta[:, None] if beta.ndim == 1 else beta
    cov_b = cov @ betas
    null = np.einsum("ik,ik->k", betas, cov_b)
    ref = betas if centred else np.zeros_like(betas)
    bias, amp, explained, kappa = zip(*(_terms(r, cov, cov_b, ref, r * n) for r in p), strict=True)
    noise = sigma2 + null - np.array(explained)
    variance = noise * np.array(amp)[:, None]
    return p, np.array(bias), variance, null, np.array(kappa), noise, beta.ndim == 1


def deterministic_risk(ratios, cov, beta, *, n_samples: int, noise_var: float = 1.0) -> RiskCurve:
    """Deterministic-equivalent test risk for any covariance ``Sigma`` and coefficients ``beta``.

    Generalises Theorems 1-3 of the paper (``beta`` need not be an eigenvector of ``Sigma``).
    One eigendecomposition of ``Sigma_z`` per ratio, so the cost is ``O(d^3)`` per ratio and
    several signals (columns of ``beta``) share it.

    Parameters
    ----------
    ratios
        Masking ratio(s) ``p`` in ``(0, 1)``.
    cov
        Covariance ``Sigma`` of the unmasked covariates, shape ``(d, d)``, positive diagonal.
    beta
        True coefficients, shape ``(d,)``, or ``(d, k)`` for ``k`` signals at once.
    n_samples
        Number of samples ``n`` before masking (``p n`` become training rows).
    noise_var
        Label-noise variance ``sigma^2``.

    Returns
    -------
    :class:`RiskCurve`; arrays have shape ``(n_ratios,)`` for a 1-d ``beta`` and
    ``(n_ratios, k)`` otherwise. The risk is ``inf`` at the interpolation threshold
    ``p n = d``.

    Notes
    -----
    The derivation assumes Gaussian covariates, delocalised signals and a proportional regime
    (``d`` and ``p n`` large and comparable); the simulator of
    :func:`~scr2mae.theory.simulate_risk` is the referee.
    """
    p, bias, variance, null, kappa, noise, squeeze = _sweep(
        ratios, cov, beta, n_samples, noise_var, centred=True
    )
    if squeeze:
        return RiskCurve(p, bias[:, 0], variance[:, 0], float(null[0]), kappa, noise[:, 0])
    return RiskCurve(p, bias, variance, null, kappa, noise)


def deterministic_prediction_norm(
    ratios, cov, beta, *, n_samples: int, noise_var: float = 1.0
) -> np.ndarray:
    """Deterministic equivalent of the prediction magnitude ``E[(x^T beta_hat)^2]``.

    The quantity behind the feature-magnitude disparity of Fig. 1D: strong (spike-aligned)
    signals keep their magnitude under heavy masking while weak ones fade.

    Parameters
    ----------
    ratios, cov, beta, n_samples, noise_var
        As in :func:`deterministic_risk`.

    Returns
    -------
    Array of shape ``(n_ratios,)`` (1-d ``beta``) or ``(n_ratios, k)``.
    """
    _, bias, variance, *_, squeeze = _sweep(ratios, cov, beta, n_samples, noise_var, centred=False)
    out = bias + variance
    return out[:, 0] if squeeze else out
