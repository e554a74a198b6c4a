"""The high-dimensional linear theory of masked pretraining (section 3 and appendix B).

Each reconstruction target is modelled as a minimum-norm ("ridgeless") linear regression of
one feature on the others, where a masking ratio ``p`` both thins the training rows (a row
counts when its target is masked) and zeroes each covariate with probability ``p``. This
package provides

* closed-form asymptotic risks: :func:`isotropic_risk` (Theorem 1) and :func:`spiked_risk`
  with :func:`spiked_fixed_point` (Corollary 1);
* a numerical deterministic equivalent for any covariance and signal,
  :func:`deterministic_risk` (beyond Theorem 3), with its building blocks
  :func:`masked_covariance`, :func:`masked_target` and :func:`solve_fixed_point`;
* a seeded, vectorised Monte-Carlo referee, :func:`simulate_risk`, for fixed ratios and for
  R2MAE with row-wise ratios drawn from :mod:`scr2mae.masking` schedules;
* the covariance models of appendix C.1;
* :func:`suggest_mask_range`, which turns a data set's covariance spectrum into an R2MAE
  masking range.
"""

from ._closed_form import isotropic_risk, spiked_fixed_point, spiked_risk
from ._covariances import (
    beta_spectrum_covariance,
    eigenvector_signal,
    isotropic_covariance,
    latent_space_covariance,
    random_signal,
    spectrum_covariance,
    spiked_covariance,
    spiked_signal,
    two_plateau_model,
    uniform_spectrum_covariance,
)
from ._deterministic import (
    deterministic_prediction_norm,
    deterministic_risk,
    masked_covariance,
    masked_target,
    solve_fixed_point,
)
from ._risk import RiskCurve
from ._simulate import SimulationResult, simulate_risk
from ._suggest import MaskRangeSuggestion, suggest_mask_range

__all__ = [
    "MaskRangeSuggestion",
    "RiskCurve",
    "SimulationResult",
    "beta_spectrum_covariance",
    "deterministic_prediction_norm",
    "deterministic_risk",
    "eigenvector_signal",
    "isotropic_covariance",
    "isotropic_risk",
    "latent_space_covariance",
    "masked_covariance",
    "masked_target",
    "random_signal",
    "simulate_risk",
    "solve_fixed_point",
    "spectrum_covariance",
    "spiked_covariance",
    "spiked_fixed_point",
    "spiked_risk",
    "spiked_signal",
    "suggest_mask_range",
    "two_plateau_model",
    "uniform_spectrum_covariance",
]
