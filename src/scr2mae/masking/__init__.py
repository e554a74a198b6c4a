"""The masking core shared by every front of scr2mae.

Ratio schedules decide *how much* to mask at each step (fixed, linearly decaying, MDLM,
R2MAE, R2MAE + dynamic, a discrete set); mask generators decide *which* entries (one set of
columns per mini-batch, per-row Bernoulli, per-row exact count). Pure torch and
device-agnostic; this package imports nothing from the rest of scr2mae.
"""

from ._masks import (
    Masker,
    MaskDraw,
    bernoulli_mask,
    column_mask,
    exact_count_mask,
    ratio_to_count,
)
from ._registry import MASKING_STRATEGIES, get_masking
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

__all__ = [
    "MASKING_STRATEGIES",
    "DiscreteRatios",
    "FixedRatio",
    "LinearDecayRatio",
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
    "get_masking",
    "ratio_to_count",
]
