"""The torch module behind :class:`~scr2mae.R2MAEModel` (appendix C.8 of the paper)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from ..masking import Masker, RatioSchedule, get_curriculum

__all__ = ["R2MAEModule", "negative_binomial_nll"]


def negative_binomial_nll(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Element-wise negative log-likelihood of counts under a negative binomial.

    Parameters
    ----------
    x
        Observed counts.
    mu
        Means, broadcastable to ``x``.
    theta
        Inverse dispersions, broadcastable to ``x``.
    eps
        Numerical floor inside the logarithms.

    Returns
    -------
    Tensor shaped like ``x``.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    log_prob = (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )
    return -log_prob


def _mlp(n_in: int, n_hidden: int, n_layers: int, dropout_rate: float) -> nn.Sequential:
    """``n_layers`` blocks of Linear → BatchNorm → ReLU → Dropout."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [
            nn.Linear(n_in if i == 0 else n_hidden, n_hidden),
            nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3),
            nn.ReLU(),
        ]
        if dropout_rate > 0:
            layers.append(nn.Dropout(dropout_rate))
    return nn.Sequential(*layers)


class R2MAEModule(BaseModuleClass):
    """Masked autoencoder for counts with a negative-binomial decoder.

    The encoder (``n_layers`` hidden blocks then a linear map to the latent space) reads
    ``log1p`` of the masked counts together with the covariates; the decoder (``n_layers_decoder``
    hidden blocks then a linear map and a softmax over genes) reads the latent code, the log of
    the observed library size and the covariates, and outputs negative-binomial means (softmax ×
    library size) with one inverse dispersion per gene. The loss is the mean NB negative
    log-likelihood over masked entries only.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches (0 or 1: no batch covariate).
    n_labels
        Unused; accepted for compatibility with scvi-tools' data modules.
    n_continuous_cov
        Number of continuous covariates.
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    n_hidden
        Width of hidden layers.
    n_latent
        Dimension of the latent representation.
    n_layers
        Hidden blocks in the encoder (the encoder has ``n_layers + 1`` linear layers).
    n_layers_decoder
        Hidden blocks in the decoder.
    dropout_rate
        Dropout after each hidden block.
    mask_strategy
        A :class:`~scr2mae.masking.RatioSchedule` (already built by the model).
    mask_mode
        ``"columns"`` (one gene set per mini-batch, as in the paper), ``"bernoulli"`` or
        ``"exact"`` (per cell).
    curriculum
        ``None``, or ``(strategy, params)`` naming one of the curriculum strategies of
        :func:`~scr2mae.masking.get_curriculum` (``"cl"``, ``"cl_k0"``, ``"r2mae_cl"``,
        ``"r2mae_cl_k0"``) with its keyword arguments. The curriculum's discrete ratios then
        replace ``mask_strategy``, and its Sinkhorn weights (from the uncorrupted counts of the
        mini-batch) weight the masked-gene loss during training only.
    input_transform
        Encoder input: ``"log1p"`` of the masked counts (the paper's choice) or
        ``"log1p_cp10k"``, which first scales each cell's visible counts to 10^4.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_continuous_cov: int = 0,
        n_cats_per_cov: Iterable[int] | None = None,
        n_hidden: int = 512,
        n_latent: int = 128,
        n_layers: int = 2,
        n_layers_decoder: int = 1,
        dropout_rate: float = 0.1,
        mask_strategy: RatioSchedule | str = "r2mae",
        mask_mode: str = "columns",
        curriculum: tuple[str, dict] | None = None,
        input_transform: str = "log1p",
    ):
        super().__init__()
        if input_transform not in ("log1p", "log1p_cp10k"):
            raise ValueError(
                f"`input_transform` must be 'log1p' or 'log1p_cp10k', got {input_transform!r}."
            )
        self.input_transform = input_transform
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.n_continuous_cov = n_continuous_cov
        self.n_cats_per_cov = [c for c in (n_cats_per_cov or []) if c > 1]
        self._cat_cov_sizes = list(n_cats_per_cov or [])
        self.curriculum = None
        if curriculum is not None:
            strategy, params = curriculum
            self.curriculum = get_curriculum(strategy, n_features=n_input, **params)
            mask_strategy = self.curriculum.ratios
        self.masker = Masker(mask_strategy, mode=mask_mode, ratio_per="batch")
        n_cov = (n_batch if n_batch > 1 else 0) + n_continuous_cov + sum(self.n_cats_per_cov)
        self.n_covariates = n_cov

        self.encoder_hidden = _mlp(n_input + n_cov, n_hidden, n_layers, dropout_rate)
        self.encoder_out = nn.Linear(n_hidden if n_layers > 0 else n_input + n_cov, n_latent)
        self.decoder_hidden = _mlp(n_latent + 1 + n_cov, n_hidden, n_layers_decoder, dropout_rate)
        self.decoder_out = nn.Linear(
            n_hidden if n_layers_decoder > 0 else n_latent + 1 + n_cov, n_input
        )
        # gene-wise inverse dispersion, stored on the log scale
        self.log_theta = nn.Parameter(torch.zeros(n_input))
        # optimisation steps seen by the masking schedule; a device-resident counter so that
        # step-dependent schedules never synchronise with the host
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ covariates
    def _covariates(
        self,
        batch_index: torch.Tensor | None,
        cont_covs: torch.Tensor | None,
        cat_covs: torch.Tensor | None,
        like: torch.Tensor,
    ) -> torch.Tensor:
        parts = []
        if self.n_batch > 1 and batch_index is not None:
            parts.append(F.one_hot(batch_index.reshape(-1).long(), self.n_batch).to(like.dtype))
        if self.n_continuous_cov > 0 and cont_covs is not None:
            parts.append(cont_covs.to(like.dtype))
        if cat_covs is not None and self._cat_cov_sizes:
            for j, n_cat in enumerate(self._cat_cov_sizes):
                if n_cat > 1:
                    parts.append(F.one_hot(cat_covs[:, j].long(), n_cat).to(like.dtype))
        if not parts:
            return like.new_zeros((like.shape[0], 0))
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------------ scvi-tools API
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs):
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "covariates": inference_outputs["covariates"],
        }

    def draw_mask(self, n_rows: int, device: torch.device):
        """Draw a training mask at the current step (and advance the step while training).

        Returns the :class:`~scr2mae.masking.MaskDraw` and the step it was drawn at.
        """
        step = self.mask_step.clone()
        draw = self.masker(n_rows, self.n_input, step=step, device=device)
        if self.training:
            self.mask_step.add_(1)
        return draw, step

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        masking: bool = True,
    ) -> dict[str, torch.Tensor | None]:
        """Encode (optionally masked) counts.

        Parameters
        ----------
        x
            Counts, ``(cells, genes)``.
        batch_index, cont_covs, cat_covs
            Covariates as registered.
        mask
            Boolean mask (``True`` = hidden). If ``None`` and ``masking`` is true, one is drawn
            from the masking schedule.
        masking
            Whether to mask at all; ``False`` encodes the full input (used for embeddings).
        """
        x = x.to(torch.float32)
        library = x.sum(dim=1, keepdim=True)
        ratio = index = step = None
        if mask is None and masking:
            (mask, ratio, index), step = self.draw_mask(x.shape[0], x.device)
        x_in = x if mask is None else x.masked_fill(mask, 0.0)
        covariates = self._covariates(batch_index, cont_covs, cat_covs, x)
        if self.input_transform == "log1p_cp10k":
            # scale the visible counts of each cell to 10^4 before the log (optional; the
            # paper's encoder reads log1p of the raw masked counts)
            x_in = x_in / x_in.sum(dim=1, keepdim=True).clamp_min(1.0) * 1e4
        h = torch.log1p(x_in)
        if covariates.shape[1]:
            h = torch.cat([h, covariates], dim=-1)
        z = self.encoder_out(self.encoder_hidden(h))
        return {
            "z": z,
            "library": library,
            "covariates": covariates,
            "mask": mask,
            "mask_ratio": ratio,
            "mask_index": index,
            "mask_step": step,
        }

    @auto_move_data
    def generative(
        self, z: torch.Tensor, library: torch.Tensor, covariates: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Decode latent codes into negative-binomial parameters."""
        parts = [z, torch.log(library.clamp_min(1.0))]
        if covariates.shape[1]:
            parts.append(covariates)
        h = self.decoder_hidden(torch.cat(parts, dim=-1))
        px_scale = torch.softmax(self.decoder_out(h), dim=-1)
        return {
            "px_scale": px_scale,
            "px_rate": px_scale * library,
            "px_theta": torch.exp(self.log_theta),
        }

    def masked_nll(
        self,
        x: torch.Tensor,
        inference_outputs: dict,
        generative_outputs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Element-wise NB loss, float mask, and per-entry loss weights.

        The weights are ones, except while training with a curriculum, where they are the
        column of the Sinkhorn weight matrix selected by the mini-batch's masking ratio.
        """
        x = x.to(torch.float32)
        nll = negative_binomial_nll(
            x, generative_outputs["px_rate"], generative_outputs["px_theta"]
        )
        mask = inference_outputs["mask"]
        if mask is None:
            mask_f = torch.ones_like(nll)
        else:
            mask_f = mask.to(nll.dtype)
        index = inference_outputs.get("mask_index")
        if self.curriculum is not None and self.training and index is not None:
            # appendix A.3: the drawn ratio's index selects the column of W; the step is a
            # device tensor, so the warm-up is a zero gradient coefficient (the generator's
            # optimiser group has no weight decay, see R2MAETrainingPlan)
            weights = self.curriculum.loss_weights(
                x, index[:1], inference_outputs["mask_step"], x.shape[0]
            )
            return nll, mask_f, weights
        return nll, mask_f, torch.ones_like(nll)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        **kwargs,
    ) -> LossOutput:
        """Mean NB negative log-likelihood over the masked entries (appendix C.8)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        nll, mask_f, weights = self.masked_nll(x, inference_outputs, generative_outputs)
        weighted = nll * mask_f * weights
        n_masked = mask_f.sum().clamp_min(1.0)
        loss = weighted.sum() / n_masked
        # per-cell sums feed scvi-tools' logged metrics; the optimised loss is the mean above
        return LossOutput(
            loss=loss,
            reconstruction_loss=weighted.sum(dim=1),
            n_obs_minibatch=x.shape[0],
            extra_metrics={"masked_fraction": mask_f.mean().detach()},
        )
