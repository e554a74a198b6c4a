"""Sinkhorn curriculum weights for CL-MAE and R2MAE + CL (appendix A.3).

The curriculum attaches a learnable, positive weight matrix ``W`` of shape ``(G, K)`` to a
discrete set of ``K`` masking ratios: when ratio ``k`` is drawn for a mini-batch, column ``k`` of
``W`` multiplies the element-wise reconstruction loss of the masked features. A small MLP (the
*weight generator*) produces a positive ``(G, K)`` matrix from the data, and a few Sinkhorn
iterations impose the mass-conservation constraints of eq. 9 (every row sums to ``K``, every
column sums to ``G``; so every column has mean one over the features). A gradient-multiplier layer
between ``W`` and the loss schedules whether the generator minimises the loss (coefficient ``+1``,
the "k = 0" setting, an *easy* mask) or maximises it (coefficient ``-1``, adversarial, *hard*).

Everything here is pure torch: no ``.item()`` and no Python branching on tensor values in the
per-step path, so it runs on an accelerator without host synchronisation. The training step may
be a Python ``int`` or a 0-d tensor living on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ._checks import _check_ratio
from ._multipliers import (
    ConstantMultiplier,
    GradientMultiplierSchedule,
    LinearMultiplier,
    multiply_gradient,
)
from ._schedules import DiscreteRatios, RatioDraw
from ._weight_generator import CurriculumWeightGenerator

__all__ = ["CURRICULUM_STRATEGIES", "Curriculum", "CurriculumLoss", "get_curriculum"]


class CurriculumLoss(NamedTuple):
    """Result of :meth:`Curriculum.weighted_loss`.

    Attributes
    ----------
    loss
        0-d tensor: the weighted loss averaged over the masked entries.
    weights
        ``(B, G)`` loss weights (the selected column of ``W`` for every row).
    weight_matrix
        ``W``: ``(G, K)``, or ``(B, G, K)`` in the token-wise mode.
    """

    loss: torch.Tensor
    weights: torch.Tensor
    weight_matrix: torch.Tensor


class Curriculum(nn.Module):
    """CL-MAE / R2MAE + CL: discrete masking ratios, learned loss weights, gradient schedule.

    Ties together a :class:`~scr2mae.masking.DiscreteRatios` (``K`` ratios; the drawn ratio's
    index selects a column of ``W``), a :class:`CurriculumWeightGenerator` (``W`` from the
    mini-batch) and a :class:`GradientMultiplierSchedule` (how the generator's gradient is
    scaled at each step, including the frozen warm-up). See :func:`get_curriculum` for the
    paper's four strategies.

    Parameters
    ----------
    ratios
        A :class:`~scr2mae.masking.DiscreteRatios`, or a sequence of ratios. Default: ten
        ratios spanning 0.1–0.5 (the single-cell R2MAE range).
    multiplier
        The gradient schedule. Default: :class:`LinearMultiplier` ``+1 → -1`` between steps
        30000 and 120000 after a 5000-step warm-up (appendix C.8).
    **generator_options
        Passed to :class:`CurriculumWeightGenerator` (``input_kind``, ``n_features``,
        ``n_inputs``, ``hidden_dims``, ``positive_offset``, ``n_sinkhorn_iters``, ...);
        ``n_columns`` is the number of ratios.

    Notes
    -----
    A training step (see :meth:`weighted_loss`)::

        draw = curriculum.draw(step, generator=rng, device=x.device)   # ratio + index
        mask = column_mask(B, G, draw.ratio, generator=rng)
        nll = ...  # element-wise loss (B, G) of the model fed the masked input
        out = curriculum.weighted_loss(nll, mask, draw.index, x, step)
        out.loss.backward()

    The generator's parameters belong to this module, so they are in ``model.parameters()``
    and train with the model's optimiser.
    """

    def __init__(
        self,
        ratios: DiscreteRatios | Sequence[float] | None = None,
        *,
        multiplier: GradientMultiplierSchedule | None = None,
        **generator_options: Any,
    ):
        super().__init__()
        if ratios is None:
            ratios = DiscreteRatios.spanning(0.1, 0.5, 10)
        elif not isinstance(ratios, DiscreteRatios):
            ratios = DiscreteRatios(ratios)
        self.ratios = ratios
        if multiplier is None:
            multiplier = LinearMultiplier()
        if not isinstance(multiplier, GradientMultiplierSchedule):
            raise TypeError(
                "`multiplier` must be a GradientMultiplierSchedule (ConstantMultiplier, "
                f"LinearMultiplier), got {type(multiplier).__name__}."
            )
        self.multiplier = multiplier
        if "n_columns" in generator_options:
            raise ValueError("`n_columns` is the number of ratios; do not pass it separately.")
        self.weight_generator = CurriculumWeightGenerator(ratios.n_ratios, **generator_options)

    @property
    def n_columns(self) -> int:
        """``K``, the number of ratios and of columns of ``W``."""
        return self.ratios.n_ratios

    @property
    def warmup_steps(self) -> int:
        """Number of initial steps during which the generator is frozen."""
        return self.multiplier.warmup_steps

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The weight generator's parameters."""
        return self.weight_generator.parameters()

    def generator_param_group(self, **options: Any) -> dict[str, Any]:
        """An optimiser parameter group for the generator, with ``weight_decay=0`` by default.

        During warm-up the coefficient ``0`` makes the generator's gradients exactly zero, and
        Adam/AdamW leave a parameter with zero gradient, zero moment estimates and no weight
        decay bit-identical: with this group the generator stays frozen without any host-side
        check of the step. Put the *other* parameters in their own group, e.g.
        ``Adam([{"params": rest, "weight_decay": 1e-4}, curriculum.generator_param_group()])``.

        Parameters
        ----------
        **options
            Extra group options (``lr``, ...); ``weight_decay`` may be overridden.

        Returns
        -------
        ``{"params": [...], "weight_decay": 0.0, **options}``.
        """
        return {"params": list(self.weight_generator.parameters()), "weight_decay": 0.0, **options}

    # the per-step path below never synchronises with the host

    def draw(
        self,
        step: int | torch.Tensor = 0,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> RatioDraw:
        """Draw ``n`` ratios (one per mini-batch by default) and their column indices.

        See :meth:`scr2mae.masking.DiscreteRatios.draw`.
        """
        return self.ratios.draw(step, n, generator=generator, device=device)

    def gradient_coefficient(
        self, step: int | torch.Tensor, *, device: str | torch.device | None = None
    ) -> torch.Tensor:
        """The generator's gradient coefficient at ``step`` (0-d float32 tensor)."""
        return self.multiplier(step, device=device)

    def weight_matrix(
        self, generator_input: torch.Tensor, step: int | torch.Tensor
    ) -> torch.Tensor:
        """``W`` for this mini-batch, with the gradient multiplier of ``step`` attached.

        Parameters
        ----------
        generator_input
            ``(B, G)`` uncorrupted counts (``input_kind="counts"``) or ``(..., G, H)``
            per-feature inputs (``"features"``).
        step
            Optimisation step, a Python ``int`` or a 0-d tensor (e.g. a device-resident counter).

        Returns
        -------
        ``(G, K)`` or ``(..., G, K)`` positive tensor; forward values are the generator's,
        gradients flowing back into the generator are multiplied by the step's coefficient.
        """
        w = self.weight_generator(generator_input)
        return multiply_gradient(w, self.gradient_coefficient(step, device=w.device))

    def select_weights(
        self, weight_matrix: torch.Tensor, index: torch.Tensor, n_rows: int
    ) -> torch.Tensor:
        """Pick, for every row, the column of ``W`` given by its ratio index.

        Parameters
        ----------
        weight_matrix
            ``(G, K)`` (shared by all rows) or ``(n_rows, G, K)`` (one per row).
        index
            Long tensor ``(1,)`` (one ratio for the mini-batch) or ``(n_rows,)``. Values must lie
            in ``[0, K)``; they are not checked on the host.
        n_rows
            ``B``, the number of rows of the element-wise loss.

        Returns
        -------
        ``(n_rows, G)`` weights.
        """
        if not isinstance(index, torch.Tensor) or index.dim() != 1:
            raise ValueError("`index` must be a 1-d long tensor of ratio indices.")
        if index.shape[0] not in (1, n_rows):
            raise ValueError(f"`index` must have 1 or {n_rows} entries, got {index.shape[0]}.")
        if index.dtype != torch.long:
            raise TypeError(f"`index` must be a long tensor, got dtype {index.dtype}.")
        k = self.n_columns
        if weight_matrix.shape[-1] != k:
            raise ValueError(
                f"`weight_matrix` must have K = {k} columns, got {weight_matrix.shape}."
            )
        if weight_matrix.dim() == 2:
            cols = weight_matrix.index_select(-1, index)  # (G, n)
            return cols.transpose(0, 1).expand(n_rows, weight_matrix.shape[0])
        if weight_matrix.dim() == 3:
            if weight_matrix.shape[0] != n_rows:
                raise ValueError(
                    f"a token-wise `weight_matrix` must have {n_rows} leading rows, "
                    f"got shape {tuple(weight_matrix.shape)}."
                )
            n_feat = weight_matrix.shape[1]
            gather_index = index.view(-1, 1, 1).expand(n_rows, n_feat, 1)
            return weight_matrix.gather(-1, gather_index).squeeze(-1)
        raise ValueError(
            f"`weight_matrix` must be (G, K) or (B, G, K), got shape {tuple(weight_matrix.shape)}."
        )

    def loss_weights(
        self,
        generator_input: torch.Tensor,
        index: torch.Tensor,
        step: int | torch.Tensor,
        n_rows: int,
    ) -> torch.Tensor:
        """``(n_rows, G)`` loss weights: :meth:`weight_matrix` then :meth:`select_weights`."""
        return self.select_weights(self.weight_matrix(generator_input, step), index, n_rows)

    def weighted_loss(
        self,
        elementwise_loss: torch.Tensor,
        mask: torch.Tensor,
        index: torch.Tensor,
        generator_input: torch.Tensor,
        step: int | torch.Tensor,
    ) -> CurriculumLoss:
        """Weighted reconstruction loss, averaged over the masked entries.

        ``loss = sum(mask * w * elementwise_loss) / max(sum(mask), 1)`` where ``w[b, g] =
        W[g, index[b]]`` (or ``W[b, g, index[b]]`` token-wise). Each column of ``W`` has mean
        one over the features, so the weights redistribute the loss across features without
        changing its overall scale.

        Parameters
        ----------
        elementwise_loss
            ``(B, G)`` per-entry loss (e.g. negative-binomial NLL of every gene).
        mask
            ``(B, G)`` boolean mask, ``True`` = masked (the entries that count).
        index
            ``(1,)`` or ``(B,)`` long ratio indices from :meth:`draw`.
        generator_input, step
            As in :meth:`weight_matrix`. During warm-up the generator's gradient is multiplied
            by zero; put it in :meth:`generator_param_group` so that weight decay does not move
            it either.

        Returns
        -------
        :class:`CurriculumLoss` ``(loss, weights, weight_matrix)``.
        """
        if elementwise_loss.dim() != 2:
            raise ValueError(
                f"`elementwise_loss` must have shape (B, G), got {tuple(elementwise_loss.shape)}."
            )
        if mask.shape != elementwise_loss.shape:
            raise ValueError(
                f"`mask` shape {tuple(mask.shape)} must match `elementwise_loss` shape "
                f"{tuple(elementwise_loss.shape)}."
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a boolean tensor, got dtype {mask.dtype}.")
        n_rows = elementwise_loss.shape[0]
        w_matrix = self.weight_matrix(generator_input, step)
        weights = self.select_weights(w_matrix, index, n_rows)
        if weights.shape != elementwise_loss.shape:
            raise ValueError(
                f"the generator produced weights of shape {tuple(weights.shape)} for a loss of "
                f"shape {tuple(elementwise_loss.shape)}."
            )
        weighted = torch.where(mask, weights.to(elementwise_loss.dtype) * elementwise_loss, 0.0)
        n_masked = mask.sum().clamp_min(1).to(elementwise_loss.dtype)
        return CurriculumLoss(weighted.sum() / n_masked, weights, w_matrix)


#: the paper's curriculum strategies understood by :func:`get_curriculum`
CURRICULUM_STRATEGIES: tuple[str, ...] = ("cl", "cl_k0", "r2mae_cl", "r2mae_cl_k0")

_RATIO_KEYS = {"cl": ("mask_ratio",), "r2mae": ("mask_range", "n_ratios")}
_MULTIPLIER_KEYS = (
    "multiplier_start",
    "multiplier_end",
    "multiplier_start_step",
    "multiplier_end_step",
)


def get_curriculum(
    strategy: str,
    *,
    mask_ratio: float | None = None,
    mask_range: tuple[float, float] | None = None,
    n_ratios: int | None = None,
    warmup_steps: int = 5000,
    multiplier_start: float | None = None,
    multiplier_end: float | None = None,
    multiplier_start_step: int | None = None,
    multiplier_end_step: int | None = None,
    **generator_options: Any,
) -> Curriculum:
    """Build one of the paper's curriculum strategies.

    ========================  ==========================================  ======================
    strategy                  ratios (``K`` columns of ``W``)             gradient multiplier
    ========================  ==========================================  ======================
    ``"cl"``                  one fixed ratio ``mask_ratio`` (K = 1)      linear ``+1 → -1``
    ``"cl_k0"``               one fixed ratio ``mask_ratio`` (K = 1)      constant ``+1``
    ``"r2mae_cl"``            ``n_ratios`` spanning ``mask_range``        linear ``+1 → -1``
    ``"r2mae_cl_k0"``         ``n_ratios`` spanning ``mask_range``        constant ``+1``
    ========================  ==========================================  ======================

    Defaults are the single-cell settings of appendix C.8: ``mask_ratio=0.25``,
    ``mask_range=(0.1, 0.5)``, ``n_ratios=10``, ``warmup_steps=5000``, multiplier ``+1 → -1``
    from step 30000 to 120000, generator hidden dims ``(128, 256)`` and ``positive_offset=1e-9``.
    For DNA (C.7) pass ``mask_ratio=0.15``, ``input_kind="features"``, ``n_inputs=H``,
    ``hidden_dims=(128, 128)``, ``positive_offset=0.5`` and
    ``multiplier_start_step=0, multiplier_end_step=total_steps``.

    With ``K = 1`` (CL-MAE) ``W`` is one weight per feature constrained to mean one (A.3).

    Parameters
    ----------
    strategy
        ``"cl"``, ``"cl_k0"``, ``"r2mae_cl"`` or ``"r2mae_cl_k0"`` (case and separators are
        ignored: ``"R2MAE+CL (k=0)"`` works).
    mask_ratio
        The fixed ratio of ``"cl"``/``"cl_k0"`` (default 0.25).
    mask_range
        ``(p_min, p_max)`` of ``"r2mae_cl"``/``"r2mae_cl_k0"`` (default ``(0.1, 0.5)``).
    n_ratios
        ``K`` for the R2MAE strategies (default 10), evenly spaced over ``mask_range``.
    warmup_steps
        Initial steps with the generator frozen.
    multiplier_start, multiplier_end, multiplier_start_step, multiplier_end_step
        The linear ramp of ``"cl"``/``"r2mae_cl"`` (defaults ``1.0, -1.0, 30000, 120000``).
    **generator_options
        Passed to :class:`CurriculumWeightGenerator` (``n_features`` is required for the
        default ``input_kind="counts"``).

    Returns
    -------
    A :class:`Curriculum`.

    Raises
    ------
    ValueError
        For an unknown strategy or a parameter that does not apply to it.

    Examples
    --------
    >>> from scr2mae.masking import get_curriculum
    >>> cur = get_curriculum("r2mae_cl", n_features=765)
    >>> cur.n_columns, cur.warmup_steps
    (10, 5000)
    """
    if not isinstance(strategy, str):
        raise TypeError(f"`strategy` must be a string, got {type(strategy).__name__}.")
    from ._registry import normalise_strategy_name  # the registry imports this module

    key = normalise_strategy_name(strategy)
    if key not in CURRICULUM_STRATEGIES:
        raise ValueError(
            f"unknown curriculum strategy {strategy!r}; expected one of {CURRICULUM_STRATEGIES}."
        )
    given = {
        "mask_ratio": mask_ratio,
        "mask_range": mask_range,
        "n_ratios": n_ratios,
        "multiplier_start": multiplier_start,
        "multiplier_end": multiplier_end,
        "multiplier_start_step": multiplier_start_step,
        "multiplier_end_step": multiplier_end_step,
    }
    family = "r2mae" if key.startswith("r2mae") else "cl"
    constant = key.endswith("k0")
    allowed = set(_RATIO_KEYS[family]) | (set() if constant else set(_MULTIPLIER_KEYS))
    wrong = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if wrong:
        raise ValueError(
            f"parameter(s) {wrong} do not apply to curriculum strategy {key!r} "
            f"(it accepts {sorted(allowed)} besides the generator options)."
        )
    if family == "cl":
        ratios = DiscreteRatios(
            (_check_ratio("mask_ratio", 0.25 if mask_ratio is None else mask_ratio),)
        )
    else:
        p_min, p_max = (0.1, 0.5) if mask_range is None else mask_range
        ratios = DiscreteRatios.spanning(p_min, p_max, 10 if n_ratios is None else n_ratios)
    if constant:
        multiplier: GradientMultiplierSchedule = ConstantMultiplier(1.0, warmup_steps=warmup_steps)
    else:
        # the ramp's defaults are LinearMultiplier's (+1 -> -1 from step 30000 to 120000)
        ramp = {k.removeprefix("multiplier_"): given[k] for k in _MULTIPLIER_KEYS}
        multiplier = LinearMultiplier(
            **{k: v for k, v in ramp.items() if v is not None}, warmup_steps=warmup_steps
        )
    return Curriculum(ratios, multiplier=multiplier, **generator_options)
