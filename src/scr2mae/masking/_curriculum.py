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

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ._schedules import DiscreteRatios, RatioDraw, _check_ratio, _ParameterObject

__all__ = [
    "CURRICULUM_STRATEGIES",
    "ConstantMultiplier",
    "Curriculum",
    "CurriculumLoss",
    "CurriculumWeightGenerator",
    "GradientMultiplier",
    "GradientMultiplierSchedule",
    "LinearMultiplier",
    "feature_statistics",
    "get_curriculum",
    "multiply_gradient",
    "sinkhorn",
]

#: default number of Sinkhorn iterations: on random positive inputs of shapes up to (5000, 10)
#: (log-normal entries spanning ~five orders of magnitude, or saturated sigmoids + 1e-9) 20
#: iterations bring every row and column mean to one within 1e-6 (float32 round-off level).
DEFAULT_SINKHORN_ITERS = 20

InputKind = Literal["counts", "features"]
CountTransform = Literal["log1p_cp10k", "log1p", "none"]
_INPUT_KINDS = ("counts", "features")
_COUNT_TRANSFORMS = ("log1p_cp10k", "log1p", "none")


# --------------------------------------------------------------------------------------------
# Sinkhorn
# --------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    return int(value)


def sinkhorn(
    matrix: torch.Tensor,
    n_iters: int = DEFAULT_SINKHORN_ITERS,
    *,
    log_input: bool = False,
) -> torch.Tensor:
    """Scale a positive ``(..., G, K)`` matrix so that rows sum to ``K`` and columns to ``G``.

    This is the non-square Sinkhorn operator of appendix A.3 (eq. 9, mass conservation): the
    result ``W`` satisfies ``W.sum(-1) == K`` and ``W.sum(-2) == G``, so each column has mean
    one over the ``G`` features and each row has mean one over the ``K`` columns. Row and column
    normalisations alternate in the log domain (``logsumexp``), which stays finite for entries
    spanning many orders of magnitude, and the operator is differentiable (the iterations are
    unrolled and autograd flows through them).

    The iterations end with a column normalisation, so the column constraint (the one that
    keeps the loss weights at mean one) holds to round-off for any number of iterations; the
    row constraint holds to the convergence of the iterations.

    Parameters
    ----------
    matrix
        Floating tensor of shape ``(..., G, K)``: strictly positive entries, or their
        logarithms when ``log_input=True``. Leading dimensions are batch dimensions; each
        ``(G, K)`` slice is scaled independently. Entries are not checked (that would need a
        host synchronisation): zeros or negatives give ``-inf``/NaN.
    n_iters
        Number of (row, column) normalisation rounds. The default,
        ``DEFAULT_SINKHORN_ITERS = 20``, brings both margins to within 1e-6 of their targets
        (relative) for typical inputs; fewer iterations are cheaper but leave the row sums
        looser. The paper uses "a few".
    log_input
        Whether ``matrix`` already holds logarithms of the positive entries (avoids a
        ``log`` of values that would underflow, e.g. ``logsigmoid`` outputs).

    Returns
    -------
    Positive tensor with the shape and dtype of ``matrix``.

    Notes
    -----
    With ``K = 1`` the row constraint forces every entry to one; with ``G = 1`` likewise.
    :class:`CurriculumWeightGenerator` therefore only imposes the column (mean-one) constraint
    when it has a single column.

    Examples
    --------
    >>> import torch
    >>> from scr2mae.masking import sinkhorn
    >>> w = sinkhorn(torch.rand(100, 4) + 0.1)
    >>> torch.allclose(w.sum(-1), torch.full((100,), 4.0), atol=1e-4)
    True
    >>> torch.allclose(w.sum(-2), torch.full((4,), 100.0), atol=1e-3)
    True
    """
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"`matrix` must be a torch.Tensor, got {type(matrix).__name__}.")
    if not matrix.is_floating_point():
        raise TypeError(f"`matrix` must be a floating-point tensor, got dtype {matrix.dtype}.")
    if matrix.dim() < 2:
        raise ValueError(
            f"`matrix` must have shape (..., G, K) with at least 2 dimensions, "
            f"got shape {tuple(matrix.shape)}."
        )
    n_iters = _check_positive_int("n_iters", n_iters)
    n_rows, n_cols = matrix.shape[-2], matrix.shape[-1]
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"`matrix` must have G >= 1 and K >= 1, got shape {tuple(matrix.shape)}.")
    log_w = matrix if log_input else torch.log(matrix)
    log_row_target = math.log(n_cols)  # every row sums to K
    log_col_target = math.log(n_rows)  # every column sums to G
    for _ in range(n_iters):
        log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True) + log_row_target
        log_w = log_w - torch.logsumexp(log_w, dim=-2, keepdim=True) + log_col_target
    return torch.exp(log_w)


def _normalise_columns_log(log_w: torch.Tensor) -> torch.Tensor:
    """Scale each column of ``exp(log_w)`` to mean one over the rows (the ``K = 1`` case)."""
    return torch.exp(
        log_w - torch.logsumexp(log_w, dim=-2, keepdim=True) + math.log(log_w.shape[-2])
    )


# --------------------------------------------------------------------------------------------
# Gradient multiplier
# --------------------------------------------------------------------------------------------


class _MultiplyGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by a tensor coefficient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coefficient)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (coefficient,) = ctx.saved_tensors
        return grad_output * coefficient.to(dtype=grad_output.dtype), None


def multiply_gradient(x: torch.Tensor, coefficient: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``coefficient`` in the backward.

    A coefficient of ``-1`` is a gradient-reversal layer (what receives the gradient maximises
    the loss), ``+1`` leaves it unchanged and ``0`` blocks it.

    Parameters
    ----------
    x
        Any tensor.
    coefficient
        A number or a 0-d tensor (possibly on an accelerator, possibly computed from a
        device-resident step counter). It is treated as a constant: no gradient flows into it.

    Returns
    -------
    A tensor equal to ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if isinstance(coefficient, torch.Tensor):
        c = coefficient.detach().to(device=x.device)
    else:  # a fill kernel, not a host-to-device copy (which could synchronise)
        c = torch.full((), float(coefficient), device=x.device)
    if c.dim() != 0:
        raise ValueError(
            f"`coefficient` must be a scalar (0-d tensor), got shape {tuple(c.shape)}."
        )
    if not c.is_floating_point():
        c = c.to(torch.float32)
    return _MultiplyGradient.apply(x, c)


class GradientMultiplier(nn.Module):
    """Layer form of :func:`multiply_gradient`: ``forward(x, coefficient)`` returns ``x``."""

    def forward(self, x: torch.Tensor, coefficient: float | torch.Tensor) -> torch.Tensor:
        """Return ``x``; its gradient is multiplied by ``coefficient`` on the way back."""
        return multiply_gradient(x, coefficient)


def _step_tensor(step: int | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    if isinstance(step, torch.Tensor):
        if step.dim() != 0:
            raise ValueError(
                f"`step` must be a scalar (0-d tensor), got shape {tuple(step.shape)}."
            )
        return step.to(device=device if device is not None else step.device, dtype=torch.float32)
    if isinstance(step, bool) or not isinstance(step, int | float):
        raise TypeError(f"`step` must be an int or a 0-d tensor, got {type(step).__name__}.")
    # a fill kernel, not a host-to-device copy (which could synchronise on an accelerator)
    return torch.full((), float(step), device=device, dtype=torch.float32)


class GradientMultiplierSchedule(_ParameterObject):
    """Base class: the gradient coefficient the weight generator receives at each step.

    During the first ``warmup_steps`` steps the coefficient is ``0`` (the generator is frozen,
    appendices C.7/C.8: "fixed for 5000 initial training steps"); afterwards it is
    :meth:`value`. Subclasses implement :meth:`value`.

    Parameters
    ----------
    warmup_steps
        Number of initial steps during which the generator is frozen.
    """

    def __init__(self, warmup_steps: int = 5000):
        self.warmup_steps = _check_positive_int("warmup_steps", warmup_steps, minimum=0)

    def value(self, step: torch.Tensor) -> torch.Tensor:
        """Coefficient after warm-up at ``step`` (a float32 0-d tensor); see subclasses."""
        raise NotImplementedError

    def __call__(
        self, step: int | torch.Tensor, *, device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Coefficient at ``step``: ``0`` during warm-up, else :meth:`value`.

        Parameters
        ----------
        step
            Optimisation step, a Python ``int`` or a 0-d tensor (e.g. a device-resident
            counter); no host synchronisation happens.
        device
            Device of the result; defaults to ``step``'s device (CPU for an ``int``).

        Returns
        -------
        Float32 0-d tensor.
        """
        t = _step_tensor(step, device)
        return torch.where(t < self.warmup_steps, torch.zeros_like(t), self.value(t))

    def is_frozen(self, step: int) -> bool:
        """Whether the generator is frozen (in warm-up) at host-side step ``step``."""
        if isinstance(step, torch.Tensor) or isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(
                "`step` must be a Python int here (deciding on the host whether to freeze "
                f"parameters); got {type(step).__name__}. Pass e.g. Lightning's "
                "`self.global_step`."
            )
        return step < self.warmup_steps


class ConstantMultiplier(GradientMultiplierSchedule):
    """A constant gradient coefficient after warm-up.

    The default ``+1`` is the paper's "k = 0" setting: the generator follows the gradient of the
    loss, i.e. *minimises* it, and learns an easy mask (appendix A.3).

    Parameters
    ----------
    value
        The coefficient.
    warmup_steps
        Number of initial steps with coefficient ``0`` (generator frozen).
    """

    def __init__(self, value: float = 1.0, warmup_steps: int = 5000):
        super().__init__(warmup_steps)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"`value` must be a finite number, got {value}.")
        self.constant = value

    def value(self, step: torch.Tensor) -> torch.Tensor:
        return torch.full_like(step, self.constant)


class LinearMultiplier(GradientMultiplierSchedule):
    """A coefficient moving linearly from ``start`` to ``end`` between two steps.

    Before ``start_step`` it is ``start``, after ``end_step`` it is ``end``. The defaults
    (``+1 → -1`` from step 30000 to 120000) are the single-cell R2MAE + CL setting of appendix
    C.8: easy-to-hard, adversarial at the end. (C.7, DNA, decays over the whole training:
    ``start_step=0, end_step=total_steps``.)

    Parameters
    ----------
    start, end
        Coefficients at the two ends.
    start_step, end_step
        Steps where the linear ramp begins and ends (``end_step > start_step >= 0``).
    warmup_steps
        Number of initial steps with coefficient ``0`` (generator frozen); this overrides the
        ramp while it lasts.
    """

    def __init__(
        self,
        start: float = 1.0,
        end: float = -1.0,
        start_step: int = 30000,
        end_step: int = 120000,
        warmup_steps: int = 5000,
    ):
        super().__init__(warmup_steps)
        self.start = float(start)
        self.end = float(end)
        for name, v in (("start", self.start), ("end", self.end)):
            if not math.isfinite(v):
                raise ValueError(f"`{name}` must be a finite number, got {v}.")
        self.start_step = _check_positive_int("start_step", start_step, minimum=0)
        self.end_step = _check_positive_int("end_step", end_step, minimum=0)
        if self.end_step <= self.start_step:
            raise ValueError(
                f"`end_step` ({self.end_step}) must be larger than `start_step` "
                f"({self.start_step})."
            )

    def value(self, step: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp((step - self.start_step) / (self.end_step - self.start_step), 0.0, 1.0)
        return self.start + (self.end - self.start) * frac


# --------------------------------------------------------------------------------------------
# Weight generator
# --------------------------------------------------------------------------------------------


def feature_statistics(
    x: torch.Tensor,
    *,
    transform: CountTransform = "log1p_cp10k",
    standardise: bool = True,
) -> torch.Tensor:
    """Per-feature statistics of a mini-batch: the generator's view of uncorrupted counts.

    For every column (gene) of ``x`` it returns three numbers computed across the rows (cells):
    the mean and the standard deviation of the transformed values, and the fraction of rows
    where the raw value is non-zero.

    Parameters
    ----------
    x
        Tensor of shape ``(B, G)`` (non-negative counts for the count transforms).
    transform
        ``"log1p_cp10k"`` (scale each row to a total of 1e4, then ``log1p``; rows summing to
        zero stay zero), ``"log1p"`` or ``"none"``.
    standardise
        Whether to z-score each statistic across the ``G`` features, so the generator's input
        does not depend on the data set's depth.

    Returns
    -------
    Float tensor of shape ``(G, 3)``, detached from ``x``'s graph.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() != 2:
        raise ValueError(f"`x` must have shape (B, G), got shape {tuple(x.shape)}.")
    if transform not in _COUNT_TRANSFORMS:
        raise ValueError(f"`transform` must be one of {_COUNT_TRANSFORMS}, got {transform!r}.")
    x = x.detach()
    xf = x.float() if not x.is_floating_point() else x
    if transform == "log1p_cp10k":
        libsize = xf.sum(dim=1, keepdim=True).clamp_min(torch.finfo(xf.dtype).tiny)
        values = torch.log1p(xf * (1e4 / libsize))
    elif transform == "log1p":
        values = torch.log1p(xf)
    else:
        values = xf
    mean = values.mean(dim=0)
    std = values.std(dim=0, unbiased=False)
    expressed = (x != 0).to(values.dtype).mean(dim=0)
    stats = torch.stack((mean, std, expressed), dim=-1)
    if standardise:
        centre = stats.mean(dim=0, keepdim=True)
        scale = stats.std(dim=0, unbiased=False, keepdim=True)
        stats = (stats - centre) / (scale + 1e-6)
    return stats


class CurriculumWeightGenerator(nn.Module):
    """MLP + Sinkhorn producing the curriculum weight matrix ``W`` (appendix A.3).

    Each feature (gene, token) is one row: a shared MLP (ReLU hidden layers, then a "row-wise
    projection" to ``K`` outputs) maps its input vector to ``K`` scores, made strictly positive
    by ``sigmoid + positive_offset``; the Sinkhorn operator then imposes eq. 9 (rows sum to
    ``K``, columns to ``G``). With ``K = 1`` only the column constraint (mean one) is applied,
    because eq. 9 would force ``W = 1``: the standalone CL-MAE weights of A.3 are "constrained to
    have a mean of one".

    **How the ``G × K`` matrix is formed from a ``(B, G)`` count mini-batch** (``input_kind=
    "counts"``, the single-cell front, C.8). The paper feeds a transformed version of the
    uncorrupted counts to an MLP with hidden dims [128, 256] whose output is reshaped to
    ``G × K``; taken literally the last layer has ``256 · G · K`` weights (12.8 M at G = 5000,
    K = 10) and ties the generator to one cell at a time. Here the MLP is applied *row-wise per
    gene* instead: gene ``g``'s input is the statistics of its transformed expression across the
    mini-batch's cells (:func:`feature_statistics`: mean and standard deviation of
    log1p-normalised expression, fraction of cells expressing it, z-scored across genes)
    concatenated with a learned per-gene embedding (``feature_embedding_dim``, default 16). The
    statistics let ``W`` follow the data of the current mini-batch; the embedding gives each gene
    free parameters, as the paper's gene-specific output layer does. Parameters grow as
    ``16 · G`` plus a shared ~38 k, compute as ``G × MLP``: about 0.1 M parameters at G = 5000.

    **Token-wise mode** (``input_kind="features"``, the DNA front, C.7: hidden [128, 128],
    ``positive_offset=0.5``). The input is ``(..., L, H)`` token representations; the MLP maps
    each token to ``K`` scores and Sinkhorn runs over each ``(L, K)`` slice, giving ``W`` of
    shape ``(..., L, K)`` (one matrix per sequence). Generic per-feature inputs ``(G, F)`` work
    the same way.

    Parameters
    ----------
    n_columns
        ``K``, the number of masking ratios (columns of ``W``).
    input_kind
        ``"counts"``: ``forward`` takes a ``(B, G)`` mini-batch and summarises it with
        :func:`feature_statistics`; ``"features"``: ``forward`` takes ``(..., G, n_inputs)``.
    n_features
        ``G``. Required for ``"counts"``; optional for ``"features"`` (then inputs must have
        exactly ``G`` rows and a per-row embedding is learned, if ``feature_embedding_dim``).
    n_inputs
        Input width per feature for ``"features"`` (e.g. the transformer's hidden size).
        Must be left ``None`` for ``"counts"`` (three statistics).
    hidden_dims
        Hidden layer widths of the MLP (ReLU). C.8 (single-cell): ``(128, 256)``; C.7 (DNA):
        ``(128, 128)``.
    positive_offset
        Constant added to the sigmoid: ``1e-9`` in C.8, ``0.5`` in C.7 (more stable).
    n_sinkhorn_iters
        Sinkhorn iterations (see :func:`sinkhorn`).
    feature_embedding_dim
        Width of the learned per-feature embedding concatenated to the inputs when
        ``n_features`` is known; ``0`` disables it.
    count_transform
        Transform used by :func:`feature_statistics` for ``"counts"``.
    detach_inputs
        Whether the generator's inputs are detached, so that the curriculum's (possibly
        reversed) gradient reaches only the generator and never the representation model
        feeding it (relevant in the token-wise mode).
    """

    def __init__(
        self,
        n_columns: int,
        *,
        input_kind: InputKind = "counts",
        n_features: int | None = None,
        n_inputs: int | None = None,
        hidden_dims: Sequence[int] = (128, 256),
        positive_offset: float = 1e-9,
        n_sinkhorn_iters: int = DEFAULT_SINKHORN_ITERS,
        feature_embedding_dim: int = 16,
        count_transform: CountTransform = "log1p_cp10k",
        detach_inputs: bool = True,
    ):
        super().__init__()
        self.n_columns = _check_positive_int("n_columns", n_columns)
        if input_kind not in _INPUT_KINDS:
            raise ValueError(f"`input_kind` must be one of {_INPUT_KINDS}, got {input_kind!r}.")
        self.input_kind = input_kind
        if n_features is not None:
            n_features = _check_positive_int("n_features", n_features)
        if input_kind == "counts":
            if n_features is None:
                raise ValueError("`input_kind='counts'` needs `n_features` (the number of genes).")
            if n_inputs is not None:
                raise ValueError(
                    "`n_inputs` is fixed by `input_kind='counts'` (three statistics per gene); "
                    "leave it None."
                )
            base_inputs = 3
        else:
            if n_inputs is None:
                raise ValueError(
                    "`input_kind='features'` needs `n_inputs` (the input width per feature)."
                )
            base_inputs = _check_positive_int("n_inputs", n_inputs)
        if count_transform not in _COUNT_TRANSFORMS:
            raise ValueError(
                f"`count_transform` must be one of {_COUNT_TRANSFORMS}, got {count_transform!r}."
            )
        self.n_features = n_features
        self.n_inputs = base_inputs
        self.count_transform = count_transform
        self.detach_inputs = bool(detach_inputs)
        self.n_sinkhorn_iters = _check_positive_int("n_sinkhorn_iters", n_sinkhorn_iters)
        positive_offset = float(positive_offset)
        if not (math.isfinite(positive_offset) and positive_offset > 0.0):
            raise ValueError(f"`positive_offset` must be a positive number, got {positive_offset}.")
        self.positive_offset = positive_offset
        feature_embedding_dim = _check_positive_int(
            "feature_embedding_dim", feature_embedding_dim, minimum=0
        )
        if n_features is not None and feature_embedding_dim > 0:
            self.feature_embedding = nn.Parameter(torch.randn(n_features, feature_embedding_dim))
        else:
            self.register_parameter("feature_embedding", None)
        widths = [
            base_inputs + (feature_embedding_dim if self.feature_embedding is not None else 0)
        ]
        widths += [_check_positive_int("hidden_dims", h) for h in hidden_dims]
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], self.n_columns))  # row-wise projection to K scores
        self.mlp = nn.Sequential(*layers)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"generator input must be a torch.Tensor, got {type(x).__name__}.")
        if self.input_kind == "counts":
            if x.dim() != 2 or x.shape[-1] != self.n_features:
                raise ValueError(
                    f"`input_kind='counts'` expects counts of shape (B, {self.n_features}), "
                    f"got {tuple(x.shape)}."
                )
            feats = feature_statistics(x, transform=self.count_transform)
        else:
            if x.dim() < 2 or x.shape[-1] != self.n_inputs:
                raise ValueError(
                    f"`input_kind='features'` expects inputs of shape (..., G, {self.n_inputs}), "
                    f"got {tuple(x.shape)}."
                )
            if self.n_features is not None and x.shape[-2] != self.n_features:
                raise ValueError(
                    f"expected {self.n_features} features (rows) in the generator input, "
                    f"got shape {tuple(x.shape)}."
                )
            feats = x.detach() if self.detach_inputs else x
        dtype = self.mlp[0].weight.dtype
        feats = feats.to(dtype)
        if self.feature_embedding is not None:
            emb = self.feature_embedding.expand(*feats.shape[:-1], self.feature_embedding.shape[-1])
            feats = torch.cat((feats, emb), dim=-1)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the weight matrix ``W``.

        Parameters
        ----------
        x
            ``(B, G)`` uncorrupted counts (``input_kind="counts"``) or ``(..., G, n_inputs)``
            per-feature inputs (``input_kind="features"``, e.g. ``(B, L, H)`` tokens).

        Returns
        -------
        Positive tensor ``(G, K)`` for counts, ``(..., G, K)`` for features, with every
        column summing to ``G`` (mean one) and, for ``K > 1``, every row to ``K``.
        """
        scores = self.mlp(self._features(x))
        # log(sigmoid(s) + offset) computed in the log domain (no underflow for very negative s)
        log_positive = torch.logaddexp(
            F.logsigmoid(scores), torch.full_like(scores, math.log(self.positive_offset))
        )
        if self.n_columns == 1:
            return _normalise_columns_log(log_positive)
        return sinkhorn(log_positive, self.n_sinkhorn_iters, log_input=True)


# --------------------------------------------------------------------------------------------
# Curriculum
# --------------------------------------------------------------------------------------------


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

    # ---- host-side configuration -----------------------------------------------------------

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

    def generator_frozen(self, step: int) -> bool:
        """Whether the generator is frozen (warm-up) at host-side step ``step`` (an ``int``)."""
        return self.multiplier.is_frozen(step)

    def update_freeze(self, step: int) -> bool:
        """Freeze or unfreeze the generator's parameters for step ``step``; return ``frozen``.

        During warm-up the parameters get ``requires_grad=False``, so their ``.grad`` stays
        ``None`` (with ``optimizer.zero_grad(set_to_none=True)``, the PyTorch and Lightning
        default) and every torch optimiser skips them: no update at all, not even decoupled
        weight decay or Adam's L2 term. Call it once per training step, *after* the optimiser
        has been built (optimisers built from ``filter(lambda p: p.requires_grad, ...)``, as
        scvi-tools' ``TrainingPlan`` does, would otherwise miss the generator for good).
        :meth:`weighted_loss` calls it itself whenever it receives a Python ``int`` step.

        Parameters
        ----------
        step
            The current optimisation step as a Python ``int`` (e.g. ``self.global_step``).

        Returns
        -------
        ``True`` while the generator is frozen.
        """
        frozen = self.generator_frozen(step)
        for p in self.weight_generator.parameters():
            p.requires_grad_(not frozen)
        return frozen

    def generator_param_group(self, **options: Any) -> dict[str, Any]:
        """An optimiser parameter group for the generator, with ``weight_decay=0`` by default.

        Needed only when the step is kept as a device tensor (so :meth:`update_freeze` cannot
        be used): the warm-up coefficient ``0`` then makes the generator's gradients exactly
        zero, and Adam/AdamW leave a parameter with zero gradient, zero moment estimates and no
        weight decay bit-identical. Put the *other* parameters in their own group, e.g.
        ``Adam([{"params": rest, "weight_decay": 1e-4}, curriculum.generator_param_group()])``.

        Parameters
        ----------
        **options
            Extra group options (``lr``, ...); ``weight_decay`` may be overridden.

        Returns
        -------
        ``{"params": [...], "weight_decay": 0.0, **options}``.
        """
        group: dict[str, Any] = {
            "params": list(self.weight_generator.parameters()),
            "weight_decay": 0.0,
        }
        group.update(options)
        return group

    # ---- per-step path (no host synchronisation) -------------------------------------------

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
            Python ``int`` (also toggles the warm-up freeze, see :meth:`update_freeze`) or a 0-d
            tensor.

        Returns
        -------
        ``(G, K)`` or ``(..., G, K)`` positive tensor; forward values are the generator's,
        gradients flowing back into the generator are multiplied by the step's coefficient.
        """
        if not isinstance(step, torch.Tensor):
            self.update_freeze(step)
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
        generator_input
            ``(B, G)`` uncorrupted counts or ``(B, G, H)`` token inputs (see
            :class:`CurriculumWeightGenerator`).
        step
            Optimisation step: a Python ``int`` (preferred: it also applies the warm-up
            freeze through :meth:`update_freeze`) or a 0-d tensor (coefficient-only freeze; use
            :meth:`generator_param_group`).

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


# --------------------------------------------------------------------------------------------
# Strategy presets
# --------------------------------------------------------------------------------------------

#: the paper's curriculum strategies understood by :func:`get_curriculum`
CURRICULUM_STRATEGIES: tuple[str, ...] = ("cl", "cl_k0", "r2mae_cl", "r2mae_cl_k0")

_RATIO_KEYS = {"cl": ("mask_ratio",), "r2mae": ("mask_range", "n_ratios")}
_MULTIPLIER_KEYS = (
    "multiplier_start",
    "multiplier_end",
    "multiplier_start_step",
    "multiplier_end_step",
)


def _normalise_strategy(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    key = key.replace("k_0", "k0")
    return {"cl_mae": "cl", "r2mae_cl_k_0": "r2mae_cl_k0"}.get(key, key)


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
    key = _normalise_strategy(strategy)
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
        multiplier = LinearMultiplier(
            start=1.0 if multiplier_start is None else multiplier_start,
            end=-1.0 if multiplier_end is None else multiplier_end,
            start_step=30000 if multiplier_start_step is None else multiplier_start_step,
            end_step=120000 if multiplier_end_step is None else multiplier_end_step,
            warmup_steps=warmup_steps,
        )
    return Curriculum(ratios, multiplier=multiplier, **generator_options)
