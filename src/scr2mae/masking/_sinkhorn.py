"""Non-square Sinkhorn operator of the curriculum weights (appendix A.3, eq. 9)."""

from __future__ import annotations

import math

import torch

from ._checks import check_int

__all__ = ["DEFAULT_SINKHORN_ITERS", "sinkhorn"]


#: default number of Sinkhorn iterations: on random positive inputs of shapes up to (5000, 10)
#: (log-normal entries spanning ~five orders of magnitude, or saturated sigmoids + 1e-9) 20
#: iterations bring every row and column mean to one within 1e-6 (float32 round-off level).
DEFAULT_SINKHORN_ITERS = 20


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
    n_iters = check_int("n_iters", n_iters)
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
