"""The loss terms that free the latent code of the batch (``batch_correction``).

The paper's model gives the batch to encoder and decoder. Every other option blinds the encoder
to it (``"decoder_only"``, as in scVI) and may add a term: a batch classifier behind gradient
reversal (``"adversarial"``), a kernel MMD between batches (``"mmd"``), or the KL divergence of
a Gaussian posterior (``"variational"``: with weight 1, the ELBO of the masked genes).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from ..masking import multiply_gradient

__all__ = ["MMD_BANDWIDTHS", "BatchClassifier", "batch_correction_loss", "batch_mmd"]

#: kernel widths of the MMD, as multiples of the mini-batch's mean squared distance
MMD_BANDWIDTHS = (0.25, 1.0, 4.0)


class BatchClassifier(nn.Module):
    """Small MLP (``n_latent`` → ``n_hidden`` → ``n_batch``) predicting the batch from the latent
    code: the adversary. Its own rather than :class:`scvi.module.Classifier`, which adds batch
    norm and dropout, so that saved adversarial models keep loading. The output layer is a
    ``(n_hidden, n_batch)`` matrix, which scArches' surgery extends along its last dimension."""

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
        """The classifier's cross-entropy; the gradient that reaches the latent code (and the
        encoder) is multiplied by ``-weight``, so the encoder learns to hide the batch."""
        logits = self(multiply_gradient(z, -weight))
        return F.cross_entropy(logits, batch_index.reshape(-1).long())


def batch_mmd(
    z: torch.Tensor, batch_index: torch.Tensor, n_batch: int, bandwidths=MMD_BANDWIDTHS
) -> torch.Tensor:
    """Mean squared MMD (0-d) between each batch and the other cells of a mini-batch.

    ``z`` is ``(cells, n_latent)``, ``batch_index`` ``(cells,)`` or ``(cells, 1)``. Gaussian
    kernels ``exp(-|z_i - z_j|² / (2 s m))`` are summed over ``s`` in ``bandwidths``, with ``m``
    the mini-batch's mean squared distance (detached: shrinking the latent space does not lower
    the penalty). Batches absent from the mini-batch, or all of it, are left out (0 when none
    qualifies). Vectorised: no host round trip.
    """
    n, d2 = z.shape[0], torch.cdist(z, z).pow(2)
    scale = (d2.detach().sum() / max(n * (n - 1), 1)).clamp_min(1e-8)
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


def batch_correction_loss(module, inference_outputs: dict, batch_index) -> torch.Tensor | None:
    """The weighted batch term of ``module``'s loss (``None``: none): the MMD, the adversary's
    cross-entropy (its gradient reversed), or the mean KL from N(0, I) divided by the expected
    masked genes per cell (a fixed scale, whatever ratio was drawn)."""
    option, weight, z = (
        module.batch_correction,
        module.batch_correction_weight,
        inference_outputs["z"],
    )
    if option == "variational":
        qz = inference_outputs["qz"]
        prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
        low, high = module.masker.schedule.bounds()
        kl = weight * kl_divergence(qz, prior).sum(dim=-1)
        return kl.mean() / (module.n_input * 0.5 * (low + high))
    if batch_index is None or option not in ("adversarial", "mmd"):
        return None
    if option == "mmd":
        return weight * batch_mmd(z, batch_index, module.n_batch)
    return module.batch_classifier.adversarial_loss(z, batch_index, weight)
