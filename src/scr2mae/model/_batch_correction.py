"""Batch correction of the latent code of :class:`~scr2mae.R2MAEModel`.

The paper's model gives the batch to the encoder and the decoder and has no reason to drop it
from its code. The options here remove it from the latent while the masked NB loss stays the
reconstruction objective:

* ``"none"``: the paper's setting (encoder and decoder both read the batch);
* ``"decoder_only"``: the encoder is blind to the batch, only the decoder reads it (as in
  scVI), so the code need not carry what the decoder is told;
* ``"adversarial"``: as ``"decoder_only"``, plus a batch classifier on the latent trained
  through a gradient-reversal layer (:func:`scr2mae.masking.multiply_gradient`);
* ``"mmd"``: as ``"decoder_only"``, plus a Gaussian-kernel maximum mean discrepancy between
  each batch and the other cells of the mini-batch;
* ``"variational"``: as ``"decoder_only"``, with a variational bottleneck: the encoder gives a
  Gaussian posterior, training decodes a sample of it, and its KL divergence from N(0, I) is
  added per cell to the masked NB loss (a weight of 1 is the evidence lower bound of the masked
  genes, scVI's objective restricted to what was hidden). Embeddings are the posterior mean.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..masking import multiply_gradient

__all__ = [
    "AUTO_BATCH_CORRECTION",
    "BATCH_CORRECTIONS",
    "BatchClassifier",
    "batch_mmd",
    "check_batch_correction",
    "resolve_batch_correction",
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
#: kernel widths of the MMD, as multiples of the mini-batch's mean squared distance
MMD_BANDWIDTHS = (0.25, 1.0, 4.0)


def check_batch_correction(batch_correction, batch_correction_weight) -> tuple[str, float]:
    """Validate the option and return it with its (default-filled) weight.

    Parameters
    ----------
    batch_correction
        ``"auto"`` or one of :data:`BATCH_CORRECTIONS`.
    batch_correction_weight
        Weight of the extra loss term, a finite number >= 0, or ``None`` for the option's
        default (0.1 for ``"adversarial"``, 0.03 for ``"mmd"``, 1 for ``"variational"``, 0
        otherwise). Must be ``None`` with ``"auto"``.

    Returns
    -------
    ``(batch_correction, weight)``; the weight is ``None`` for ``"auto"`` (resolve the option
    with :func:`resolve_batch_correction`, then check it again).

    Raises
    ------
    ValueError
        For an unknown option, a negative or non-finite weight, or a non-zero weight with an
        option that has no extra loss term.
    """
    if not isinstance(batch_correction, str) or batch_correction not in (
        "auto",
        *BATCH_CORRECTIONS,
    ):
        raise ValueError(
            "`batch_correction` must be 'auto' or one of "
            f"{', '.join(map(repr, BATCH_CORRECTIONS))}, got {batch_correction!r}."
        )
    if batch_correction == "auto":
        if batch_correction_weight is not None:
            raise ValueError(
                "`batch_correction='auto'` chooses the option and its weight from the data; "
                "name the option (e.g. `batch_correction='mmd'`) to set "
                "`batch_correction_weight`."
            )
        return batch_correction, None
    if batch_correction_weight is None:
        return batch_correction, DEFAULT_WEIGHTS[batch_correction]
    weight = _check_weight("batch_correction_weight", batch_correction_weight, "a number or None")
    if batch_correction in ("none", "decoder_only") and weight != 0:
        raise ValueError(
            f"`batch_correction={batch_correction!r}` has no extra loss term to weight; "
            "use 'adversarial', 'mmd' or 'variational', or leave `batch_correction_weight` at None."
        )
    return batch_correction, weight


def resolve_batch_correction(batch_correction: str, n_batch: int) -> str:
    """The option ``batch_correction="auto"`` stands for on data with ``n_batch`` batches.

    :data:`AUTO_BATCH_CORRECTION` with two or more batches, ``"none"`` with one; any other
    option is returned as it is.
    """
    if batch_correction != "auto":
        return batch_correction
    return AUTO_BATCH_CORRECTION if n_batch >= 2 else "none"


class BatchClassifier(nn.Module):
    """Small MLP predicting the batch from the latent code (the adversary).

    The output layer is stored as a ``(n_hidden, n_batch)`` matrix with a ``(n_batch,)`` bias,
    so that scArches' surgery in :meth:`~scr2mae.R2MAEModel.load_query_data`, which appends
    columns for new batches along the last dimension, extends it to the query's batches.

    Parameters
    ----------
    n_latent
        Dimension of the latent code.
    n_batch
        Number of batches.
    n_hidden
        Width of the hidden layer.
    """

    def __init__(self, n_latent: int, n_batch: int, n_hidden: int = 128):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.ReLU())
        self.out_weight = nn.Parameter(torch.empty(n_hidden, n_batch))
        self.out_bias = nn.Parameter(torch.zeros(n_batch))
        nn.init.kaiming_uniform_(self.out_weight.T, a=math.sqrt(5))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Batch logits, ``(cells, n_batch)``."""
        return self.hidden(z) @ self.out_weight + self.out_bias

    def adversarial_loss(
        self, z: torch.Tensor, batch_index: torch.Tensor, weight: float
    ) -> torch.Tensor:
        """Cross-entropy of the classifier, with the encoder's gradient reversed and scaled.

        The classifier minimises the cross-entropy at full strength; the gradient that reaches
        the latent code (and the encoder) is multiplied by ``-weight``, so the encoder learns
        to make the batch unpredictable.
        """
        logits = self(multiply_gradient(z, -weight))
        return F.cross_entropy(logits, batch_index.reshape(-1).long())


def batch_mmd(
    z: torch.Tensor, batch_index: torch.Tensor, n_batch: int, bandwidths=MMD_BANDWIDTHS
) -> torch.Tensor:
    """Mean squared MMD between each batch and the other cells of a mini-batch.

    Gaussian kernels ``exp(-|z_i - z_j|² / (2 s m))`` summed over ``s`` in ``bandwidths``, with
    ``m`` the mean squared distance of the mini-batch (detached), so that shrinking the latent
    space does not lower the penalty. Batches absent from the mini-batch, or making up all of
    it, are left out; the value is 0 when no batch qualifies. Vectorised: no host round trip.

    Parameters
    ----------
    z
        Latent codes, ``(cells, n_latent)``.
    batch_index
        Batch of each cell, ``(cells,)`` or ``(cells, 1)``.
    n_batch
        Number of batches.
    bandwidths
        Kernel widths relative to the mean squared distance.

    Returns
    -------
    A 0-d tensor.
    """
    n = z.shape[0]
    d2 = torch.cdist(z, z).pow(2)
    scale = d2.detach().sum() / max(n * (n - 1), 1)
    scale = scale.clamp_min(1e-8)
    kernel = sum(torch.exp(-d2 / (2.0 * s * scale)) for s in bandwidths)
    onehot = F.one_hot(batch_index.reshape(-1).long(), n_batch).to(z.dtype)
    count = onehot.sum(0)  # cells of each batch
    rest = n - count
    within = torch.diagonal(onehot.T @ kernel @ onehot)  # sum of K over pairs inside a batch
    row = onehot.T @ kernel.sum(1)  # sum of K over (batch cell, any cell)
    total = kernel.sum()
    k_aa = within / count.clamp_min(1) ** 2
    k_ab = (row - within) / (count * rest).clamp_min(1)
    k_bb = (total - 2 * row + within) / rest.clamp_min(1) ** 2
    valid = ((count > 0) & (rest > 0)).to(z.dtype)
    mmd = (k_aa + k_bb - 2 * k_ab) * valid
    return mmd.sum() / valid.sum().clamp_min(1)


def _check_weight(name: str, value, expected: str = "a number") -> float:
    """``value`` as a float, or a clear error: a number (not a bool), finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__}.")
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {weight!r}.")
    return weight


def check_visible_weight(visible_weight) -> float:
    """Validate the weight of the visible entries' likelihood: a finite number >= 0."""
    return _check_weight("visible_weight", visible_weight)
