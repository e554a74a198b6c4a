"""The masking core shared by every front of scr2mae.

Ratio schedules decide *how much* to mask at each step (fixed, linearly decaying, MDLM,
R2MAE, R2MAE + dynamic, a discrete set); mask generators decide *which* entries (one set of
columns per mini-batch, per-row Bernoulli, per-row exact count); the curriculum (appendix A.3)
learns Sinkhorn-balanced loss weights per masking ratio. Pure torch and
device-agnostic; this package imports nothing from the rest of scr2mae.
"""

from ._curriculum import CURRICULUM_STRATEGIES, Curriculum, CurriculumLoss, get_curriculum
from ._masks import (
    MaskDraw,
    Masker,
    bernoulli_mask,
    column_mask,
    exact_count_mask,
    hashed_mask,
    ratio_to_count,
)
from ._multipliers import (
    ConstantMultiplier,
    GradientMultiplier,
    GradientMultiplierSchedule,
    LinearMultiplier,
    multiply_gradient,
)
from ._registry import (
    MASKING_STRATEGIES,
    get_masking,
    normalise_strategy_name,
    resolve_masking,
)
from ._schedules import (
    DiscreteRatios,
    FixedRatio,
    LinearDecayRatio,
    MDLMRatio,
    RatioDraw,
    RatioSchedule,
    UniformDecayRatio,
    UniformRatio,
)
from ._sinkhorn import sinkhorn
from ._weight_generator import CurriculumWeightGenerator, feature_statistics

__all__ = [
    "CURRICULUM_STRATEGIES",
    "MASKING_STRATEGIES",
    "ConstantMultiplier",
    "Curriculum",
    "CurriculumLoss",
    "CurriculumWeightGenerator",
    "DiscreteRatios",
    "FixedRatio",
    "GradientMultiplier",
    "GradientMultiplierSchedule",
    "LinearDecayRatio",
    "LinearMultiplier",
    "MDLMRatio",
    "MaskDraw",
    "Masker",
    "RatioDraw",
    "RatioSchedule",
    "UniformDecayRatio",
    "UniformRatio",
    "bernoulli_mask",
    "column_mask",
    "exact_count_mask",
    "feature_statistics",
    "get_curriculum",
    "get_masking",
    "hashed_mask",
    "multiply_gradient",
    "normalise_strategy_name",
    "ratio_to_count",
    "resolve_masking",
    "sinkhorn",
]
