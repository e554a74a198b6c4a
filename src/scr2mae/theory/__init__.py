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

# ruff: noqa: F403
# every module lists its public names once, in its own ``__all__``
from . import _closed_form, _covariances, _deterministic, _risk, _simulate, _suggest
from ._closed_form import *
from ._covariances import *
from ._deterministic import *
from ._risk import *
from ._simulate import *
from ._suggest import *

__all__ = sorted(
    [
        *_closed_form.__all__,
        *_covariances.__all__,
        *_deterministic.__all__,
        *_risk.__all__,
        *_simulate.__all__,
        *_suggest.__all__,
    ]
)
