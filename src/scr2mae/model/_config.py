"""The one place where the options of the model and its module are checked and resolved."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..masking import CURRICULUM_STRATEGIES, RatioSchedule, normalise_strategy_name
from ..masking import resolve_masking as _resolve_masking

__all__ = ["AUTO_BATCH_CORRECTION", "BATCH_CORRECTIONS", "LEGACY_OPTIONS", "Options"]
__all__ += ["VISIBLE_WEIGHT", "resolve_options"]

#: accepted values of ``batch_correction``
BATCH_CORRECTIONS = ("none", "decoder_only", "adversarial", "mmd", "variational")
#: ``batch_correction="auto"`` with two or more batches (``"none"`` with one); chosen on the
#: scIB total of the integration benchmark (Baron, pbmc68k, synthetic donors)
AUTO_BATCH_CORRECTION = "mmd"
#: weight of the extra loss term when ``batch_correction_weight`` is not given. On synthetic
#: donors MMD 0.3 and adversarial 1 collapsed the cell types; variational 1 is the masked genes'
#: ELBO (0.3 mixed Baron's batches less for the same bio conservation). docs/benchmarks.md
DEFAULT_WEIGHTS = dict(none=0.0, decoder_only=0.0, adversarial=0.1, mmd=0.03, variational=1.0)
#: the MMD's weight with the visible genes in the loss (``visible_weight > 0``, the default),
#: which doubles it: on Baron (3 seeds) 0.03 / 0.1 gave scIB total 0.719 / 0.748, same Leiden ARI
MMD_WEIGHT_WITH_VISIBLE = 0.1
#: the model's default weight of the visible genes' likelihood (chosen on Leiden clusters)
VISIBLE_WEIGHT = 1.0
#: what a model saved before an option existed was trained with (``load`` completes it)
LEGACY_OPTIONS = {"visible_weight": 0.0}


class Options(NamedTuple):
    """Resolved options, named as the module's arguments: the ratio schedule (``None`` with a
    curriculum, whose discrete ratios the module takes), the curriculum's ``(name, params)``,
    the batch correction (never ``"auto"``) and its weight, and the visible genes' weight."""

    mask_strategy: RatioSchedule | None
    curriculum: tuple[str, dict] | None
    batch_correction: str
    batch_correction_weight: float
    visible_weight: float


def _weight(name: str, value, expected: str = "a number") -> float:
    """``value`` as a float, or a clear error: a number (not a bool), finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__}.")
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {weight!r}.")
    return weight


def _is_curriculum(name: str) -> bool:
    return normalise_strategy_name(name) in CURRICULUM_STRATEGIES


def _batch_correction(option, weight, n_batch: int, visible_weight: float) -> tuple[str, float]:
    if not isinstance(option, str) or option not in ("auto", *BATCH_CORRECTIONS):
        raise ValueError(
            "`batch_correction` must be 'auto' or one of "
            f"{', '.join(map(repr, BATCH_CORRECTIONS))}, got {option!r}."
        )
    if option == "auto":
        if weight is not None:
            raise ValueError(
                "`batch_correction='auto'` chooses the option and its weight from the data; "
                "name the option (e.g. `batch_correction='mmd'`) to set "
                "`batch_correction_weight`."
            )
        # saved as what it resolved to, so that a reloaded model or a query model built from
        # this one keeps the reference's option whatever its own batches
        option = AUTO_BATCH_CORRECTION if n_batch >= 2 else "none"
    if option != "none" and n_batch < 2:
        raise ValueError(
            f"`batch_correction={option!r}` needs at least 2 batches; the data have {n_batch}. "
            "Pass `batch_key` to `setup_anndata`, or use 'none'."
        )
    if weight is None:
        if option == "mmd" and visible_weight > 0:
            return option, MMD_WEIGHT_WITH_VISIBLE
        return option, DEFAULT_WEIGHTS[option]
    weight = _weight("batch_correction_weight", weight, "a number or None")
    if option in ("none", "decoder_only") and weight != 0:
        raise ValueError(
            f"`batch_correction={option!r}` has no extra loss term to weight; use "
            "'adversarial', 'mmd' or 'variational', or leave `batch_correction_weight` at None."
        )
    return option, weight


def resolve_options(
    n_input: int,
    n_batch: int,
    *,
    mask_strategy: str | RatioSchedule | None = "r2mae",
    masking_params: dict[str, Any] | None = None,
    curriculum: tuple[str, dict] | None = None,
    batch_correction: str = "auto",
    batch_correction_weight: float | None = None,
    visible_weight: float | None = None,
) -> Options:
    """Check the user's options and resolve them into their final values.

    ``n_input`` and ``n_batch`` are the data's genes and batches. ``mask_strategy`` is a name
    of :func:`~scr2mae.masking.resolve_masking` (with ``masking_params``) or a
    :class:`~scr2mae.masking.RatioSchedule`; a curriculum name becomes ``curriculum``
    (``(name, params)``). ``batch_correction`` is ``"auto"`` (``"mmd"`` with two or more
    batches, else ``"none"``) or one of :data:`BATCH_CORRECTIONS`, with ``None`` for the
    option's default weight; ``visible_weight`` is a finite number >= 0 or ``None``
    (:data:`VISIBLE_WEIGHT`). Returns :class:`Options`; raises ``ValueError`` or ``TypeError``
    naming the argument for anything else.
    """
    visible_weight = _weight(
        "visible_weight", VISIBLE_WEIGHT if visible_weight is None else visible_weight
    )
    named = isinstance(mask_strategy, str) and _is_curriculum(mask_strategy)
    if curriculum is None and named:
        # built once, by the module (its weight generator has parameters)
        curriculum = (mask_strategy, masking_params)
    if curriculum is None:
        schedule = _resolve_masking(mask_strategy, n_features=n_input, **(masking_params or {}))
    elif isinstance(curriculum[0], str) and _is_curriculum(curriculum[0]):
        schedule, curriculum = None, (curriculum[0], dict(curriculum[1] or {}))
    else:
        raise ValueError(f"`curriculum` must name a curriculum strategy, got {curriculum[0]!r}.")
    option, weight = _batch_correction(
        batch_correction, batch_correction_weight, n_batch, visible_weight
    )
    return Options(schedule, curriculum, option, weight, visible_weight)
