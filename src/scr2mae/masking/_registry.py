"""String front door to the masking schedules."""

from __future__ import annotations

import inspect
from typing import Any

from ._schedules import (
    DiscreteRatios,
    FixedRatio,
    LinearDecayRatio,
    MDLMRatio,
    RatioSchedule,
    UniformDecayRatio,
    UniformRatio,
)

__all__ = ["MASKING_STRATEGIES", "get_masking"]

#: canonical strategy name -> schedule class
MASKING_STRATEGIES: dict[str, type[RatioSchedule]] = {
    "fixed": FixedRatio,
    "dynamic": LinearDecayRatio,
    "mdlm": MDLMRatio,
    "r2mae": UniformRatio,
    "r2mae_dynamic": UniformDecayRatio,
    "discrete": DiscreteRatios,
}

_ALIASES = {
    "mae": "fixed",
    "mlm": "fixed",
    "dynamic_mr": "dynamic",
    "linear_decay": "dynamic",
    "uniform": "r2mae",
    "r2mae_dynamic_mr": "r2mae_dynamic",
}


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace("+", "_").replace(" ", "_")
    while "__" in key:
        key = key.replace("__", "_")
    return _ALIASES.get(key, key)


def get_masking(strategy: str | RatioSchedule = "r2mae", **params: Any) -> RatioSchedule:
    """Build a masking-ratio schedule from a name, or pass a schedule object through.

    Parameters
    ----------
    strategy
        One of ``"fixed"``, ``"dynamic"``, ``"mdlm"``, ``"r2mae"``, ``"r2mae_dynamic"``,
        ``"discrete"`` (case, ``-`` and ``+`` are ignored, so ``"R2MAE+dynamic"`` works), or a
        :class:`~scr2mae.masking.RatioSchedule`, which is returned unchanged.
    **params
        Parameters of the schedule. Besides each class's own arguments,
        ``mask_range=(p_min, p_max)`` is accepted for ``"r2mae"``.

    Returns
    -------
    The schedule.

    Raises
    ------
    ValueError
        For an unknown name, an unexpected parameter, or parameters out of range.

    Examples
    --------
    >>> from scr2mae.masking import get_masking
    >>> get_masking("r2mae", mask_range=(0.1, 0.5))
    UniformRatio(p_min=0.1, p_max=0.5)
    >>> get_masking("fixed", mask_ratio=0.25)
    FixedRatio(mask_ratio=0.25)
    """
    if isinstance(strategy, RatioSchedule):
        if params:
            raise ValueError(
                f"parameters {sorted(params)} were given with a ready-made schedule "
                f"{strategy!r}; set them on the schedule instead."
            )
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(
            f"`strategy` must be a name or a RatioSchedule, got {type(strategy).__name__}."
        )
    key = _normalise(strategy)
    if key not in MASKING_STRATEGIES:
        raise ValueError(
            f"unknown masking strategy {strategy!r}; choose one of {sorted(MASKING_STRATEGIES)}."
        )
    cls = MASKING_STRATEGIES[key]
    params = dict(params)
    if "mask_range" in params and key == "r2mae":
        mask_range = params.pop("mask_range")
        try:
            p_min, p_max = mask_range
        except (TypeError, ValueError):
            raise ValueError(
                f"`mask_range` must be a pair (p_min, p_max), got {mask_range!r}."
            ) from None
        params.update(p_min=p_min, p_max=p_max)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unexpected = sorted(set(params) - set(accepted))
    if unexpected:
        extra = " (and mask_range)" if key == "r2mae" else ""
        raise ValueError(
            f"unexpected parameter(s) {unexpected} for masking strategy {key!r}; "
            f"accepted: {accepted}{extra}."
        )
    return cls(**params)
