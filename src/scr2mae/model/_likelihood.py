"""The negative-binomial likelihood of the scored entries of a mini-batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from scvi.distributions._negative_binomial import log_nb_positive

__all__ = ["MaskedNLL", "ScoredMean", "masked_columns", "masked_nll", "nb_nll", "scored_mean"]

_EPS = 1e-8  # scvi.distributions' log_nb_positive


class MaskedNLL(NamedTuple):
    """The NLL ``(cells, columns)`` (every gene, or the masked columns of a column mask), the
    ``scored`` entries among them (``None``: all) and the loss ``weights`` (``None``: ones)."""

    nll: torch.Tensor
    scored: torch.Tensor | None
    weights: torch.Tensor | None


class ScoredMean(NamedTuple):
    """:func:`scored_mean`'s weighted mean, unweighted sum, count and per-cell means."""

    mean: torch.Tensor
    total: torch.Tensor
    count: torch.Tensor
    per_cell: torch.Tensor


def nb_nll(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, sparse_counts: bool = False
) -> torch.Tensor:
    """``-NegativeBinomial(mu, theta).log_prob(x)`` of :mod:`scvi.distributions`, element-wise.

    With ``sparse_counts`` (where reading ``x`` costs no host synchronisation) the terms that
    vanish at a zero count are evaluated at the non-zero counts only: one ``lgamma`` pass in
    ten on counts that are 90 % zeros, the same values (the throughput benchmark's step).
    """
    if not (sparse_counts and x.dim() == 2 and mu.shape == x.shape):
        return -log_nb_positive(x, mu, theta, eps=_EPS)
    log_theta_mu = torch.log(theta + mu + _EPS)
    log_prob = theta * (torch.log(theta + _EPS) - log_theta_mu)
    rows, cols = x.nonzero(as_tuple=True)
    x_nz, theta_nz = x[rows, cols], theta.expand_as(x)[rows, cols]
    counts = (
        x_nz * (torch.log(mu[rows, cols] + _EPS) - log_theta_mu[rows, cols])
        + torch.lgamma(x_nz + theta_nz)
        - torch.lgamma(theta_nz)
        - torch.lgamma(x_nz + 1)
    )
    return -log_prob.index_put((rows, cols), counts, accumulate=True)


def masked_columns(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The masked columns of a mask that hides whole columns (one row expanded, as
    :func:`~scr2mae.masking.column_mask` gives), else ``None``; it reads the mask."""
    expanded = mask is not None and mask.dim() == 2 and mask.shape[0] > 0
    if not expanded or (mask.shape[0] > 1 and mask.stride(0) != 0):
        return None
    return mask[0].nonzero().squeeze(1)


def masked_nll(
    x: torch.Tensor,
    px_rate: torch.Tensor,
    theta: torch.Tensor,
    mask: torch.Tensor | None,
    measured: torch.Tensor | None,
    columns: torch.Tensor | None = None,
    sparse_counts: bool = False,
) -> MaskedNLL:
    """The NLL on ``columns`` (``None``: all) with the scored entries among them: masked and
    measured (all measured ones without a mask). Float32, also under mixed precision."""
    scored = mask
    if columns is not None:
        x, px_rate, theta = (t.index_select(-1, columns) for t in (x, px_rate, theta))
        measured = None if measured is None else measured.index_select(-1, columns)
        scored = None  # every gathered column is masked
    if measured is not None:
        scored = measured if scored is None else scored & measured
    if scored is not None:
        scored = scored.expand(px_rate.shape)
    with torch.autocast(device_type=x.device.type, enabled=False):
        nll = nb_nll(x.float(), px_rate.float(), theta.float(), sparse_counts=sparse_counts)
    return MaskedNLL(nll, scored, None)


def scored_mean(
    nll: torch.Tensor, scored: torch.Tensor | None, weights: torch.Tensor | None = None
) -> ScoredMean:
    """Mean of ``nll`` (× ``weights``) over the ``scored`` entries (``None``: all of them)."""
    n_cells, n_columns = nll.shape[-2], nll.shape[-1]
    if scored is None:
        values = nll
        per_cell = torch.full((n_cells,), float(n_columns), device=nll.device)
        count = torch.full((), float(nll.numel()), device=nll.device)
    else:
        values = torch.where(scored, nll, torch.zeros_like(nll))
        per_cell = scored.sum(dim=-1, dtype=nll.dtype)
        count = per_cell.sum()
    weighted = values if weights is None else values * weights
    mean = weighted.sum() / count.clamp_min(1.0)
    cell_mean = values.sum(dim=-1) / per_cell.clamp_min(1.0)
    return ScoredMean(mean, values.sum(), count, cell_mean)
