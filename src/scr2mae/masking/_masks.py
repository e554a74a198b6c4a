"""Mask generators.

All generators return boolean tensors where ``True`` marks a *masked* (hidden) entry. They
draw their randomness on the requested device, accept a seeded :class:`torch.Generator`, and
use only tensor operations (no ``.item()``, no data-dependent shapes), so they never force a
host synchronisation on an accelerator.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from ._checks import _resolve_device
from ._schedules import RatioSchedule

__all__ = [
    "MaskDraw",
    "Masker",
    "bernoulli_mask",
    "column_mask",
    "exact_count_mask",
    "hashed_mask",
    "ratio_to_count",
]

MaskMode = Literal["columns", "bernoulli", "exact"]
_MODES = ("columns", "bernoulli", "exact")


def ratio_to_count(ratio: torch.Tensor, n: int) -> torch.Tensor:
    """Number of entries out of ``n`` masked at ``ratio`` (round half up, clipped to ``[0, n]``).

    Parameters
    ----------
    ratio
        Float tensor of any shape.
    n
        Number of candidate entries (genes, tokens, pixels).

    Returns
    -------
    Long tensor with the shape of ``ratio``.
    """
    return torch.clamp(torch.floor(ratio * n + 0.5), 0, n).long()


def _check_shape(n_rows: int, n_cols: int) -> None:
    if n_rows < 0 or n_cols < 1:
        raise ValueError(f"mask shape needs n_rows >= 0 and n_cols >= 1, got ({n_rows}, {n_cols}).")


def _as_ratio_tensor(ratio, n: int, device) -> torch.Tensor:
    r = torch.as_tensor(ratio, dtype=torch.float32, device=device).reshape(-1)
    if r.numel() == 1:
        return r.expand(n)
    if r.numel() != n:
        raise ValueError(f"expected 1 or {n} ratios, got {r.numel()}.")
    return r


def _per_row_ratios(n_rows: int, n_cols: int, ratio, generator, device):
    """One ratio per row and the mask's device, after checking the shape."""
    _check_shape(n_rows, n_cols)
    device = _resolve_device(ratio, generator, device)
    return _as_ratio_tensor(ratio, n_rows, device), device


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every entry along the last dimension (0 = smallest), ties broken by position."""
    order = torch.argsort(scores, dim=-1, stable=True)
    arange = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, arange)


def column_mask(
    n_rows: int,
    n_cols: int,
    ratio: float | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """One random set of columns, shared by every row of the mini-batch.

    This is the single-cell scheme of appendix C.8: a fraction of gene columns, drawn once per
    mini-batch, is hidden in every cell. Exactly ``round(ratio * n_cols)`` columns are masked.

    Parameters
    ----------
    ratio
        Scalar ratio (float or one-element tensor).
    n_rows, n_cols, generator, device
        As in :func:`bernoulli_mask`.

    Returns
    -------
    Boolean tensor of shape ``(n_rows, n_cols)`` (an expanded view: every row is the same).
    """
    _check_shape(n_rows, n_cols)
    device = _resolve_device(ratio, generator, device)
    r = torch.as_tensor(ratio, dtype=torch.float32, device=device).reshape(-1)
    if r.numel() != 1:
        raise ValueError(f"column_mask takes one ratio per mini-batch, got {r.numel()}.")
    k = ratio_to_count(r, n_cols)
    scores = torch.rand(n_cols, generator=generator, device=device)
    cols = _ranks(scores) < k
    return cols.unsqueeze(0).expand(n_rows, n_cols)


def bernoulli_mask(
    n_rows: int,
    n_cols: int,
    ratio: float | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Independent Bernoulli masking with a per-row rate.

    Every entry of row ``i`` is masked with probability ``ratio[i]``; the number of masked
    entries is random (binomial).

    Parameters
    ----------
    n_rows, n_cols
        Shape of the mini-batch.
    ratio
        One ratio for all rows, or a tensor of ``n_rows`` ratios.
    generator
        Optional seeded generator on ``device``.
    device
        Device of the mask; defaults to the ratio's device if it is a tensor, else CPU.

    Returns
    -------
    Boolean tensor of shape ``(n_rows, n_cols)``.
    """
    r, device = _per_row_ratios(n_rows, n_cols, ratio, generator, device)
    u = torch.rand(n_rows, n_cols, generator=generator, device=device)
    return u < r.unsqueeze(1)


def exact_count_mask(
    n_rows: int,
    n_cols: int,
    ratio: float | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Per-row masks with exactly ``round(ratio[i] * n_cols)`` masked entries in row ``i``.

    Parameters and return value as in :func:`bernoulli_mask`.
    """
    r, device = _per_row_ratios(n_rows, n_cols, ratio, generator, device)
    k = ratio_to_count(r, n_cols)
    scores = torch.rand(n_rows, n_cols, generator=generator, device=device)
    return _ranks(scores) < k.unsqueeze(1)


# splitmix64 constants as signed 64-bit integers (torch has no unsigned int64 arithmetic)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _mix(h: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrap-around products, logical right shifts)."""
    h = h ^ ((h >> 30) & ((1 << 34) - 1))
    h = h * _MIX1
    h = h ^ ((h >> 27) & ((1 << 37) - 1))
    h = h * _MIX2
    return h ^ ((h >> 31) & ((1 << 33) - 1))


def hashed_mask(
    x: torch.Tensor, ratios: float | torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible per-row mask that depends only on each row's values and ``seed``.

    Every row gets one of ``ratios`` and exactly ``round(ratio * n_cols)`` masked entries,
    both chosen by hashing the row's values. The same row therefore gets the same mask in any
    mini-batch, in any order, on any device, at any batch size: a validation loss computed at
    these masks measures the model, not the draw of the masks. No random generator is used and
    nothing synchronises with the host.

    Parameters
    ----------
    x
        ``(n_rows, n_cols)`` values (counts); NaN entries must be replaced beforehand.
    ratios
        One ratio, or a 1-D tensor of ratios that rows are spread over.
    seed
        Changes every mask.

    Returns
    -------
    The boolean mask ``(n_rows, n_cols)`` (``True`` = masked) and each row's ratio.
    """
    if x.dim() != 2:
        raise ValueError(f"`x` must be 2-D (rows, columns), got shape {tuple(x.shape)}.")
    n_rows, n_cols = x.shape
    _check_shape(n_rows, n_cols)
    table = torch.as_tensor(ratios, dtype=torch.float32).reshape(-1)
    if table.device.type == "cpu" and (
        table.numel() == 0 or bool(((table < 0) | (table > 1)).any())
    ):
        raise ValueError(f"`ratios` must be one or more values in [0, 1], got {table.tolist()}.")
    table = table.to(x.device)
    columns = torch.arange(n_cols, device=x.device, dtype=torch.int64)
    column_keys = _mix(columns * _GOLDEN + int(seed))
    bits = x.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    row_keys = _mix((bits * column_keys).sum(dim=1))
    which = ((_mix(row_keys ^ _GOLDEN) >> 16) & 0xFFFF) % table.numel()
    row_ratio = table[which]
    entry = _mix(row_keys.unsqueeze(1) ^ column_keys.unsqueeze(0))
    scores = ((entry >> 20) & 0xFFFFFF).to(torch.float32)
    k = ratio_to_count(row_ratio, n_cols)
    return _ranks(scores) < k.unsqueeze(1), row_ratio


_GENERATORS = {"columns": column_mask, "bernoulli": bernoulli_mask, "exact": exact_count_mask}


class MaskDraw(NamedTuple):
    """A mask together with the ratios that produced it.

    Attributes
    ----------
    mask
        Boolean tensor ``(n_rows, n_cols)``, ``True`` = masked.
    ratio
        Ratio per row, shape ``(n_rows,)``.
    index
        Index of each row's ratio in a discrete schedule, shape ``(n_rows,)``, else ``None``.
    """

    mask: torch.Tensor
    ratio: torch.Tensor
    index: torch.Tensor | None


class Masker:
    """A ratio schedule paired with a mask generator.

    Parameters
    ----------
    schedule
        A :class:`~scr2mae.masking.RatioSchedule` or a name understood by
        :func:`~scr2mae.masking.get_masking`.
    mode
        ``"columns"`` (one set of columns per mini-batch, the single-cell scheme),
        ``"bernoulli"`` (independent entries) or ``"exact"`` (exact count per row).
    ratio_per
        ``"batch"`` draws one ratio per mini-batch (as in the paper's neural experiments);
        ``"row"`` draws one ratio per row (as in the linear-model simulations). ``"columns"``
        masks require ``"batch"``.
    """

    def __init__(
        self,
        schedule: RatioSchedule | str = "r2mae",
        mode: MaskMode = "columns",
        ratio_per: Literal["batch", "row"] = "batch",
    ):
        from ._registry import get_masking

        self.schedule = get_masking(schedule)
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
        if ratio_per not in ("batch", "row"):
            raise ValueError(f"`ratio_per` must be 'batch' or 'row', got {ratio_per!r}.")
        if mode == "columns" and ratio_per == "row":
            raise ValueError(
                "`mode='columns'` shares one ratio across the batch; use ratio_per='batch'."
            )
        self.mode = mode
        self.ratio_per = ratio_per

    def __call__(
        self,
        n_rows: int,
        n_cols: int,
        *,
        step: int | torch.Tensor = 0,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> MaskDraw:
        """Draw ratios from the schedule and a mask for a ``(n_rows, n_cols)`` mini-batch."""
        n = 1 if self.ratio_per == "batch" else n_rows
        ratio, index = self.schedule.draw(step, n, generator=generator, device=device)
        mask = _GENERATORS[self.mode](
            n_rows, n_cols, ratio, generator=generator, device=ratio.device
        )
        if n == 1:
            ratio = ratio.expand(n_rows)
            index = None if index is None else index.expand(n_rows)
        return MaskDraw(mask, ratio, index)

    def validation_ratios(self, n: int = 5) -> torch.Tensor:
        """``n`` fixed ratios spanning the schedule's range, kept within [0.05, 0.95]."""
        low, high = self.schedule.bounds()
        return torch.linspace(max(low, 0.05), min(high, 0.95), n)

    def validation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation mask of each row of ``x`` and its ratio: :func:`hashed_mask` at
        :meth:`validation_ratios`, so a row hides the same entries in every mini-batch."""
        return hashed_mask(x, self.validation_ratios())

    def sample(
        self,
        n_samples: int,
        n_rows: int,
        n_cols: int,
        ratios: tuple[float, float] | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """``(n_samples, n_rows, n_cols)`` masks, one per row and sample, each hiding an exact
        count at a ratio drawn uniformly from ``ratios`` (default: the schedule's range)."""
        low, high = ratios or self.schedule.bounds()
        rows = n_samples * n_rows
        ratio = low + (high - low) * torch.rand(rows, device=device)
        return exact_count_mask(rows, n_cols, ratio).view(n_samples, n_rows, n_cols)

    def __repr__(self) -> str:
        return f"Masker({self.schedule!r}, mode={self.mode!r}, ratio_per={self.ratio_per!r})"
