"""The curriculum's weight generator: an MLP + Sinkhorn giving the ``(G, K)`` matrix ``W``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int
from ._sinkhorn import DEFAULT_SINKHORN_ITERS, _normalise_columns_log, sinkhorn

__all__ = ["CurriculumWeightGenerator", "feature_statistics"]

InputKind = Literal["counts", "features"]
CountTransform = Literal["log1p_cp10k", "log1p", "none"]
_INPUT_KINDS = ("counts", "features")
_COUNT_TRANSFORMS = ("log1p_cp10k", "log1p", "none")


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
        self.n_columns = check_int("n_columns", n_columns)
        if input_kind not in _INPUT_KINDS:
            raise ValueError(f"`input_kind` must be one of {_INPUT_KINDS}, got {input_kind!r}.")
        self.input_kind = input_kind
        n_features = check_int("n_features", n_features, allow_none=True)
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
            base_inputs = check_int("n_inputs", n_inputs)
        if count_transform not in _COUNT_TRANSFORMS:
            raise ValueError(
                f"`count_transform` must be one of {_COUNT_TRANSFORMS}, got {count_transform!r}."
            )
        self.n_features = n_features
        self.n_inputs = base_inputs
        self.count_transform = count_transform
        self.detach_inputs = bool(detach_inputs)
        self.n_sinkhorn_iters = check_int("n_sinkhorn_iters", n_sinkhorn_iters)
        positive_offset = float(positive_offset)
        if not (math.isfinite(positive_offset) and positive_offset > 0.0):
            raise ValueError(f"`positive_offset` must be a positive number, got {positive_offset}.")
        self.positive_offset = positive_offset
        feature_embedding_dim = check_int("feature_embedding_dim", feature_embedding_dim, minimum=0)
        if n_features is not None and feature_embedding_dim > 0:
            self.feature_embedding = nn.Parameter(torch.randn(n_features, feature_embedding_dim))
        else:
            self.register_parameter("feature_embedding", None)
        n_embedded = feature_embedding_dim if self.feature_embedding is not None else 0
        widths = [base_inputs + n_embedded, *(check_int("hidden_dims", h) for h in hidden_dims)]
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
