"""The result type shared by closed forms, deterministic equivalents and summaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RiskCurve"]


@dataclass(frozen=True)
class RiskCurve:
    """Predicted test risk of masked min-norm regression as a function of the masking ratio.

    The test risk is ``E[(x^T beta_hat - x^T beta)^2]`` on a fresh, unmasked sample ``x``; it
    excludes the irreducible noise, so the null predictor ``beta_hat = 0`` has risk
    ``beta^T Sigma beta`` (:attr:`null_risk`).

    Attributes
    ----------
    ratios
        Masking ratios ``p``, shape ``(n_ratios,)``.
    bias
        Bias term, shape ``(n_ratios,)`` or ``(n_ratios, n_signals)``.
    variance
        Variance term, same shape as :attr:`bias`.
    null_risk
        ``beta^T Sigma beta``: scalar, or shape ``(n_signals,)``.
    kappa
        Solution of the ridgeless fixed-point equation at each ratio (0 where the effective
        sample size ``p n`` exceeds the dimension), shape ``(n_ratios,)``.
    effective_noise
        Noise variance of the masked regression: the label noise plus the part of ``y`` the
        masked covariates cannot explain linearly, same shape as :attr:`bias`.
    """

    ratios: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    null_risk: np.ndarray | float
    kappa: np.ndarray
    effective_noise: np.ndarray

    @property
    def risk(self) -> np.ndarray:
        """Total test risk, ``bias + variance``."""
        return self.bias + self.variance

    @property
    def normalized_risk(self) -> np.ndarray:
        """Risk divided by the null risk ``beta^T Sigma beta`` (1 = no better than zero)."""
        return self.risk / np.asarray(self.null_risk)

    @property
    def optimal_ratio(self) -> np.ndarray | float:
        """Ratio of :attr:`ratios` with the smallest risk (per signal for several signals)."""
        best = self.ratios[np.nanargmin(self.risk, axis=0)]
        return float(best) if np.ndim(best) == 0 else best
