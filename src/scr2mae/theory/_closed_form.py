"""Closed-form asymptotic risks: isotropic (Theorem 1) and spiked (Corollary 1) covariances.

Derivation in brief (section 3.1 of the paper). With masking ratio ``p`` a sample is a
training row when its target is masked (``m = p n`` rows) and each covariate is zeroed with
probability ``p``, giving ``z = b * x`` with ``b_j ~ Bernoulli(1 - p)``. Then

* ``Cov(z) = Sigma_z = (1 - p)^2 Sigma + p (1 - p) diag(Sigma)``,
* the best linear predictor of ``y`` from ``z`` is ``b* = (1 - p) Sigma_z^{-1} Sigma beta``,
* what ``z`` cannot explain acts as extra noise:
  ``sigma_eff^2 = sigma^2 + beta^T Sigma beta - b*^T Sigma_z b*``.

The min-norm fit on ``m`` rows then behaves like ridgeless regression with covariance
``Sigma_z``, target ``b*`` and noise ``sigma_eff^2``, evaluated against ``beta`` in the
metric ``Sigma`` (fresh samples are unmasked). For ``Sigma = I``: ``Sigma_z = (1 - p) I``,
``b* = beta``, ``sigma_eff^2 = sigma^2 + p ||beta||^2`` and, with ``gamma = d / (p n)``,

* ``gamma < 1``: bias ``0``, variance ``sigma_eff^2 gamma / ((1 - p)(1 - gamma))``;
* ``gamma > 1``: bias ``||beta||^2 (1 - 1/gamma)``, variance
  ``sigma_eff^2 / ((1 - p)(gamma - 1))``.
"""

from __future__ import annotations

import numpy as np

from ._risk import RiskCurve
from ._validation import check_int, check_nonnegative, check_ratios

__all__ = ["isotropic_risk", "spiked_fixed_point", "spiked_risk"]


def isotropic_risk(
    ratios,
    *,
    n_features: int,
    n_samples: int,
    noise_var: float = 1.0,
    signal_norm2: float = 1.0,
) -> RiskCurve:
    """Asymptotic test risk for an isotropic covariance ``Sigma = I`` (Theorem 1).

    With ``gamma = d / (p n)`` the ratio of features to training rows,

    * under-parametrised (``gamma < 1``): bias ``0`` and variance
      ``(sigma^2 + p r^2) gamma / ((1 - p)(1 - gamma))``;
    * over-parametrised (``gamma > 1``): bias ``r^2 (1 - 1/gamma)`` and variance
      ``(sigma^2 + p r^2) / ((1 - p)(gamma - 1))``,

    where ``r^2 = ||beta||^2``. The risk diverges at the interpolation threshold
    ``gamma = 1`` (``inf`` is returned there).

    Parameters
    ----------
    ratios
        Masking ratio(s) ``p``, each in ``(0, 1)``.
    n_features
        Number of covariates ``d``.
    n_samples
        Number of samples ``n`` before masking (``p n`` of them become training rows).
    noise_var
        Label-noise variance ``sigma^2``.
    signal_norm2
        Squared norm of the coefficients, ``||beta||^2``.

    Returns
    -------
    :class:`RiskCurve` with bias and variance per ratio.

    Examples
    --------
    >>> from scr2mae.theory import isotropic_risk
    >>> curve = isotropic_risk([0.1, 0.2, 0.3], n_features=300, n_samples=400, noise_var=0.5)
    >>> [round(float(r), 2) for r in curve.risk]
    [0.97, 1.05, 1.36]
    """
    p = check_ratios(ratios)
    d = check_int("n_features", n_features)
    n = check_int("n_samples", n_samples)
    sigma2 = check_nonnegative("noise_var", noise_var)
    r2 = check_nonnegative("signal_norm2", signal_norm2)

    gamma = d / (p * n)
    noise = sigma2 + p * r2
    over = gamma > 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = np.where(over, r2 * (1.0 - 1.0 / gamma), 0.0)
        variance = np.where(
            over,
            noise / ((1.0 - p) * (gamma - 1.0)),
            noise * gamma / ((1.0 - p) * (1.0 - gamma)),
        )
    variance = np.where(gamma == 1.0, np.inf, variance)
    kappa = np.where(over, (1.0 - p) * (gamma - 1.0), 0.0)
    return RiskCurve(p, bias, variance, r2, kappa, noise)


def spiked_fixed_point(ratios, *, n_features: int, n_samples: int, spike: float) -> np.ndarray:
    """Unique non-negative root ``kappa`` of the spiked model's fixed-point equation.

    For ``Sigma = I + theta u u^T`` with a delocalised unit vector ``u`` the masked covariance is
    ``Sigma_z = a I + b u u^T`` with ``a = (1 - p)(1 + p theta / d)`` and ``b = (1 - p)^2 theta``
    (exact when every ``u_j^2 = 1/d``). The ridgeless fixed point
    ``(d - 1) a / (a + kappa) + (a + b) / (a + b + kappa) = p n`` is the quadratic

    ``m kappa^2 + (m (2a + b) - d a - b) kappa + a (a + b)(m - d) = 0``,   ``m = p n``,

    whose roots have product ``a (a + b)(m - d) / m < 0`` when ``m < d``: exactly one is
    positive. When ``m >= d`` the min-norm fit is the least-squares fit and ``kappa = 0``.

    Parameters
    ----------
    ratios, n_features, n_samples
        As in :func:`isotropic_risk`.
    spike
        Spike strength ``theta >= 0``.

    Returns
    -------
    Array of ``kappa`` values, one per ratio.
    """
    p, d, n, theta = _check_spiked(ratios, n_features, n_samples, spike)
    a, b = _spiked_masked_spectrum(p, d, theta)
    return _spiked_kappa(p * n, d, a, b)


def _check_spiked(ratios, n_features: int, n_samples: int, spike: float):
    """The checked ``p``, ``d``, ``n`` and ``theta`` of the spiked model."""
    p = check_ratios(ratios)
    d = check_int("n_features", n_features)
    n = check_int("n_samples", n_samples)
    return p, d, n, check_nonnegative("spike", spike)


def _spiked_masked_spectrum(p: np.ndarray, d: int, theta: float):
    """Eigenvalues ``a`` (multiplicity ``d - 1``) and ``a + b`` (along ``u``) of Sigma_z."""
    a = (1.0 - p) * (1.0 + p * theta / d)
    b = (1.0 - p) ** 2 * theta
    return a, b


def _spiked_kappa(m: np.ndarray, d: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lin = m * (2.0 * a + b) - d * a - b
    const = a * (a + b) * (m - d)
    disc = np.sqrt(np.maximum(lin**2 - 4.0 * m * const, 0.0))
    # the positive root, written to avoid cancellation when lin > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(lin > 0.0, -2.0 * const / (lin + disc), (disc - lin) / (2.0 * m))
    return np.where(m < d, root, 0.0)


def spiked_risk(
    ratios,
    *,
    n_features: int,
    n_samples: int,
    spike: float,
    strength: float,
    noise_var: float = 1.0,
    signal_norm2: float = 1.0,
) -> RiskCurve:
    """Asymptotic test risk for the spiked covariance ``Sigma = I + theta u u^T`` (Corollary 1).

    ``beta = r (alpha u + sqrt(1 - alpha^2) v)`` with ``v`` a unit vector orthogonal to ``u``;
    ``alpha`` is the feature strength (alignment of the signal with the spike). In the basis
    ``{u, u-perp}`` everything is diagonal: the masked covariance has eigenvalues ``a + b``
    and ``a`` (see :func:`spiked_fixed_point`), the best masked predictor is

    ``b*_u = alpha r (1 + theta)(1 - p) / (a + b)`` and ``b*_perp = (1 - p) / a * beta_perp``

    (masking *inflates* the coefficient along ``u``, undoing the shrinkage that the missing
    covariates would cause), and with ``kappa`` from the fixed point, ``m = p n``,
    ``T = tr(Sigma Sigma_z (Sigma_z + kappa)^-2) / m`` and
    ``T_z = tr(Sigma_z^2 (Sigma_z + kappa)^-2) / m``:

    * variance ``= sigma_eff^2 T / (1 - T_z)``;
    * bias ``= ||delta||_Sigma^2 - 2 kappa delta^T Sigma (Sigma_z + kappa)^-1 b*
      + kappa^2 ||(Sigma_z + kappa)^-1 b*||_Sigma^2
      + kappa^2 T / (1 - T_z) ||(Sigma_z + kappa)^-1 b*||_{Sigma_z}^2`` with
      ``delta = b* - beta``.

    When ``theta = 0`` this reduces to :func:`isotropic_risk`. The formula treats
    ``diag(u u^T)`` as ``I / d`` (exact for ``u`` with equal-magnitude entries, such as the
    normalised all-ones vector, and asymptotically exact for delocalised ``u``).

    Parameters
    ----------
    ratios, n_features, n_samples, spike
        As in :func:`spiked_fixed_point`.
    strength
        Feature strength ``alpha = u^T beta / ||beta||`` in ``[-1, 1]``.
    noise_var, signal_norm2
        As in :func:`isotropic_risk`.

    Returns
    -------
    :class:`RiskCurve`; its :attr:`~RiskCurve.null_risk` is ``beta^T Sigma beta``.
    """
    p, d, n, theta = _check_spiked(ratios, n_features, n_samples, spike)
    sigma2 = check_nonnegative("noise_var", noise_var)
    r2 = check_nonnegative("signal_norm2", signal_norm2)
    try:
        alpha = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"`strength` must be a number in [-1, 1], got {strength!r}.") from None
    if not -1.0 <= alpha <= 1.0:
        raise ValueError(f"`strength` must lie in [-1, 1], got {strength!r}.")

    m = p * n
    a, b = _spiked_masked_spectrum(p, d, theta)
    s_u, s_perp = a + b, a
    g_u, g_perp = 1.0 + theta, 1.0  # eigenvalues of Sigma (the test metric)
    c2 = alpha**2 * r2  # squared coefficient along u
    w = r2 - c2  # squared norm of the orthogonal part
    f_u = (1.0 + theta) * (1.0 - p) / s_u  # b*_u = f_u * c
    f_perp = (1.0 - p) / s_perp  # b*_perp = f_perp * beta_perp

    kappa = _spiked_kappa(m, d, a, b)
    q_u = 1.0 / (s_u + kappa)
    q_perp = 1.0 / (s_perp + kappa)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((d - 1) * g_perp * s_perp * q_perp**2 + g_u * s_u * q_u**2) / m
        t_z = ((d - 1) * s_perp**2 * q_perp**2 + s_u**2 * q_u**2) / m
        amplification = np.where(t_z < 1.0, t / (1.0 - t_z), np.inf)

    # bias, term by term, each a sum over the two eigenspaces (c^2 and w carry the signal)
    misfit = g_u * (f_u - 1.0) ** 2 * c2 + g_perp * (f_perp - 1.0) ** 2 * w
    cross = g_u * (f_u - 1.0) * f_u * q_u * c2 + g_perp * (f_perp - 1.0) * f_perp * q_perp * w
    shrink = g_u * f_u**2 * q_u**2 * c2 + g_perp * f_perp**2 * q_perp**2 * w
    shrink_z = s_u * f_u**2 * q_u**2 * c2 + s_perp * f_perp**2 * q_perp**2 * w
    bias = misfit - 2.0 * kappa * cross + kappa**2 * (shrink + amplification * shrink_z)
    # kappa = 0 (under-parametrised): only the misfit of b* remains
    bias = np.where(kappa > 0.0, bias, misfit)

    null = g_u * c2 + g_perp * w
    explained = s_u * f_u**2 * c2 + s_perp * f_perp**2 * w
    noise = sigma2 + null - explained
    variance = noise * amplification
    return RiskCurve(p, bias, variance, null, kappa, noise)
