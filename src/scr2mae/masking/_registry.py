"""One registry of masking strategy names: schedules and curricula, one normaliser, one resolver."""

from __future__ import annotations

import inspect
import re
from typing import Any

from ._curriculum import CURRICULUM_STRATEGIES, Curriculum, get_curriculum
from ._schedules import (
    DiscreteRatios,
    FixedRatio,
    LinearDecayRatio,
    MDLMRatio,
    RatioSchedule,
    UniformDecayRatio,
    UniformRatio,
)

__all__ = ["CURRICULUM_STRATEGIES", "MASKING_STRATEGIES", "get_masking", "resolve_masking"]

#: canonical strategy name -> schedule class
MASKING_STRATEGIES: dict[str, type[RatioSchedule]] = {
    "fixed": FixedRatio,
    "dynamic": LinearDecayRatio,
    "mdlm": MDLMRatio,
    "r2mae": UniformRatio,
    "r2mae_dynamic": UniformDecayRatio,
    "discrete": DiscreteRatios,
}

#: other spellings of the canonical names of both schedules and curricula
_ALIASES = {
    "mae": "fixed",
    "mlm": "fixed",
    "dynamic_mr": "dynamic",
    "linear_decay": "dynamic",
    "uniform": "r2mae",
    "r2mae_dynamic_mr": "r2mae_dynamic",
    "cl_mae": "cl",
}


def normalise_strategy_name(name: str) -> str:
    """Canonical spelling of a masking strategy name (schedule or curriculum).

    Case is ignored and every run of characters other than letters and digits becomes ``_``,
    so ``"R2MAE+dynamic"``, ``"r2mae-dynamic"`` and ``"R2MAE + CL (k=0)"`` work; aliases such as
    ``"mae"`` (``"fixed"``) or ``"uniform"`` (``"r2mae"``) map to their canonical name. The
    result need not be a known strategy.

    Parameters
    ----------
    name
        A strategy name.

    Returns
    -------
    The canonical name.

    Examples
    --------
    >>> from scr2mae.masking import normalise_strategy_name
    >>> normalise_strategy_name("R2MAE + CL (k=0)")
    'r2mae_cl_k0'
    """
    if not isinstance(name, str):
        raise TypeError(f"a strategy name must be a string, got {type(name).__name__}.")
    key = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    key = re.sub(r"(^|_)k_0($|_)", r"\1k0\2", key)
    return _ALIASES.get(key, key)


def resolve_masking(
    strategy: str | RatioSchedule | Curriculum = "r2mae",
    *,
    n_features: int | None = None,
    **params: Any,
) -> RatioSchedule | Curriculum:
    """Map a strategy name to a masking-ratio schedule or a curriculum.

    The single entry point for every name in :data:`MASKING_STRATEGIES` and
    :data:`CURRICULUM_STRATEGIES`: schedule names go to :func:`get_masking`, curriculum
    names to :func:`get_curriculum`.

    Parameters
    ----------
    strategy
        A strategy name (see :func:`normalise_strategy_name` for accepted spellings), or a ready
        :class:`~scr2mae.masking.RatioSchedule` or :class:`~scr2mae.masking.Curriculum`,
        returned unchanged.
    n_features
        Number of features (genes) a curriculum's weight generator has rows for; used by
        curricula only.
    **params
        Parameters of the schedule (see :func:`get_masking`) or of the curriculum (see
        :func:`get_curriculum`).

    Returns
    -------
    A :class:`~scr2mae.masking.RatioSchedule` or a :class:`~scr2mae.masking.Curriculum`.

    Raises
    ------
    ValueError
        For an unknown name or a parameter that does not apply to the strategy.

    Examples
    --------
    >>> from scr2mae.masking import resolve_masking
    >>> resolve_masking("R2MAE", mask_range=(0.1, 0.5))
    UniformRatio(p_min=0.1, p_max=0.5)
    >>> type(resolve_masking("r2mae_cl", n_features=100)).__name__
    'Curriculum'
    """
    if isinstance(strategy, RatioSchedule | Curriculum):
        if params:
            raise ValueError(
                f"parameters {sorted(params)} were given with a ready-made {strategy!r}; "
                "set them on it instead."
            )
        return strategy
    if not isinstance(strategy, str):
        raise TypeError(
            "`strategy` must be a name, a RatioSchedule or a Curriculum, "
            f"got {type(strategy).__name__}."
        )
    key = normalise_strategy_name(strategy)
    if key in CURRICULUM_STRATEGIES:
        if n_features is not None:
            params["n_features"] = n_features
        return get_curriculum(key, **params)
    if key not in MASKING_STRATEGIES:
        raise ValueError(
            f"unknown masking strategy {strategy!r}; choose one of "
            f"{sorted(MASKING_STRATEGIES) + list(CURRICULUM_STRATEGIES)}."
        )
    return get_masking(key, **params)


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
    key = normalise_strategy_name(strategy)
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
