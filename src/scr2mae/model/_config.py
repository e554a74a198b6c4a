"""The one place where the options of :class:`~scr2mae.R2MAEModel` are checked and resolved.

:class:`~scr2mae.R2MAEModel` and :class:`~scr2mae.R2MAEModule` both call :func:`resolve_options`;
its result is final, so resolving it again gives it back unchanged.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..masking import CURRICULUM_STRATEGIES, RatioSchedule, normalise_strategy_name
from ..masking import resolve_masking as _resolve_masking

__all__ = [
    "AUTO_BATCH_CORRECTION",
    "BATCH_CORRECTIONS",
    "LEGACY_OPTIONS",
    "VISIBLE_WEIGHT",
    "Options",
    "resolve_options",
]

#: accepted values of ``batch_correction``
BATCH_CORRECTIONS = ("none", "decoder_only", "adversarial", "mmd", "variational")
#: what ``batch_correction="auto"`` (the default) resolves to with two or more batches; with
#: one batch it resolves to ``"none"``. Chosen on the scIB total of the integration benchmark
#: (Baron mouse pancreas, pbmc68k with simulated batches, synthetic donors; docs/benchmarks.md)
AUTO_BATCH_CORRECTION = "mmd"
#: weight of the extra loss term when ``batch_correction_weight`` is not given
# measured on synthetic donors (4 donors x 100 cells, 200 genes, 60 epochs; plain model: donor
# probe 0.94, cell-type probe 0.73): MMD weights 0.03 / 0.1 / 0.3 gave donor 0.53 / 0.49 / 0.28
# and cell type 0.81 / 0.68 / 0.21 (0.3 collapses the code); adversarial weights 0.1 / 0.3 / 1
# gave donor 0.79 / 0.97 / 1.0 and cell type 0.76 / 0.63 / 0.29 (a strong adversary destabilises)
# variational: 1 makes the loss the ELBO of the masked genes; on the Baron pancreas 0.3 mixed the
# batches less (scIB batch 0.713 against 0.757) for the same bio conservation (0.736 against 0.730)
DEFAULT_WEIGHTS = {
    "none": 0.0,
    "decoder_only": 0.0,
    "adversarial": 0.1,
    "mmd": 0.03,
    "variational": 1.0,
}
#: the MMD's weight when ``batch_correction_weight`` is not given and the loss also scores the
#: visible genes (``visible_weight > 0``, the model's default): that loss is about twice the
#: masked genes' alone. On the Baron pancreas (3 seeds, visible_weight 1) 0.03 / 0.1 gave scIB
#: batch 0.768 / 0.834, total 0.719 / 0.748, the same Leiden ARI (0.506 / 0.507) and probe
MMD_WEIGHT_WITH_VISIBLE = 0.1
#: default weight of the visible genes' likelihood in the model's training loss; chosen on
#: Leiden clusters in the scanpy workflow (the clustering benchmark)
VISIBLE_WEIGHT = 1.0
#: what a model saved before an option existed was trained with (``load`` completes a saved
#: model's ``init_params_`` with these before the options are resolved)
LEGACY_OPTIONS = {"visible_weight": 0.0}


class Options(NamedTuple):
    """Resolved options: what the module is built from and what the model saves.

    Attributes
    ----------
    mask_strategy
        The :class:`~scr2mae.masking.RatioSchedule` of the masking ratios (``None`` with a
        curriculum, whose discrete ratios the module takes).
    curriculum
        ``(name, params)`` of a curriculum strategy of :func:`~scr2mae.masking.get_curriculum`,
        or ``None``.
    batch_correction, batch_correction_weight
        The option (never ``"auto"``) and the weight of its loss term.
    visible_weight
        Weight of the visible genes' likelihood in the training loss.
    """

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

    Parameters
    ----------
    n_input, n_batch
        Genes and batches of the data (``"auto"`` and the curriculum depend on them).
    mask_strategy, masking_params
        A strategy name of :func:`~scr2mae.masking.resolve_masking` with its parameters, or a
        :class:`~scr2mae.masking.RatioSchedule`. A curriculum name becomes ``curriculum``.
    curriculum
        ``(name, params)`` of a curriculum (instead of a curriculum name in ``mask_strategy``).
    batch_correction, batch_correction_weight
        ``"auto"`` (``"mmd"`` with two or more batches, else ``"none"``) or an option of
        :data:`BATCH_CORRECTIONS`; ``None`` for the option's default weight (for ``"mmd"``
        0.1 with ``visible_weight > 0``, else 0.03).
    visible_weight
        A finite number >= 0, or ``None`` for :data:`VISIBLE_WEIGHT`.

    Returns
    -------
    :class:`Options`.

    Raises
    ------
    ValueError, TypeError
        For an unknown strategy or option, a weight that is negative, not finite or not a
        number, a weight with an option that has no loss term, or a batch correction without
        two batches.
    """
    visible_weight = _weight(
        "visible_weight", VISIBLE_WEIGHT if visible_weight is None else visible_weight
    )
    params = dict(masking_params or {})
    is_name = isinstance(mask_strategy, str)
    if (
        curriculum is None
        and is_name
        and normalise_strategy_name(mask_strategy) in (CURRICULUM_STRATEGIES)
    ):
        # built once, by the module (its weight generator has parameters)
        curriculum, mask_strategy, params = (mask_strategy, params), None, {}
    if curriculum is not None:
        name, curriculum_params = curriculum
        if not (isinstance(name, str) and normalise_strategy_name(name) in CURRICULUM_STRATEGIES):
            raise ValueError(f"`curriculum` must name a curriculum strategy, got {name!r}.")
        curriculum, mask_strategy = (name, dict(curriculum_params or {})), None
    else:
        mask_strategy = _resolve_masking(mask_strategy, n_features=n_input, **params)
    option, weight = _batch_correction(
        batch_correction, batch_correction_weight, n_batch, visible_weight
    )
    return Options(mask_strategy, curriculum, option, weight, visible_weight)
