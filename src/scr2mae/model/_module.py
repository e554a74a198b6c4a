"""The torch module behind :class:`~scr2mae.R2MAEModel` (appendix C.8 of the paper)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal, kl_divergence

from .._validation import check_int
from ..data._panels import MEASURED_KEY
from ..masking import (
    Curriculum,
    Masker,
    RatioSchedule,
    exact_count_mask,
    hashed_mask,
    resolve_masking,
)
from ._batch_correction import (
    BatchClassifier,
    batch_mmd,
    check_batch_correction,
    check_visible_weight,
)

__all__ = ["VALIDATION_RATIOS", "MaskedNLL", "R2MAEModule"]

#: number of fixed ratios the validation masks spread cells over
VALIDATION_RATIOS = 5


class MaskedNLL(NamedTuple):
    """What :meth:`R2MAEModule.masked_nll` returns.

    Attributes
    ----------
    nll
        Negative-binomial NLL, ``(cells, columns)``: every gene, or only the masked gene
        columns when the mask is one set of genes for the mini-batch.
    scored
        Boolean ``(cells, columns)``, ``True`` for the entries that count (masked and
        measured); ``None`` when all of them count.
    weights
        Per-entry loss weights ``(cells, columns)`` (the curriculum's), or ``None`` for ones.
    """

    nll: torch.Tensor
    scored: torch.Tensor | None
    weights: torch.Tensor | None


def _nb_nll(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, sparse_counts: bool = False
) -> torch.Tensor:
    """Negative log-likelihood of counts ``x`` under NB(mean ``mu``, inverse dispersion ``theta``).

    The formula of :func:`scvi.distributions._negative_binomial.log_nb_positive` (the same
    ``eps``), with the terms of ``theta`` alone evaluated once per gene when ``theta`` has shape
    ``(genes,)``. With ``sparse_counts`` the terms that vanish at a zero count
    (``x log(mu)``, ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` and their gradients)
    are evaluated at the non-zero counts only: the same values, for a data-dependent number
    of entries (use it where reading ``x`` costs no host synchronisation).
    """
    eps = 1e-8
    log_theta_mu = torch.log(theta + mu + eps)
    log_prob = theta * (torch.log(theta + eps) - log_theta_mu)
    if not (sparse_counts and x.dim() == 2 and mu.shape == x.shape):
        log_prob = (
            log_prob
            + x * (torch.log(mu + eps) - log_theta_mu)
            + torch.lgamma(x + theta)
            - torch.lgamma(theta)
            - torch.lgamma(x + 1)
        )
        return -log_prob
    rows, cols = x.nonzero(as_tuple=True)
    x_nz = x[rows, cols]
    theta_nz = theta.expand_as(x)[rows, cols]
    counts = (
        x_nz * (torch.log(mu[rows, cols] + eps) - log_theta_mu[rows, cols])
        + torch.lgamma(x_nz + theta_nz)
        - torch.lgamma(theta_nz)
        - torch.lgamma(x_nz + 1)
    )
    return -log_prob.index_put((rows, cols), counts, accumulate=True)


class R2MAEModule(BaseModuleClass):
    """Masked autoencoder for counts with a negative-binomial decoder.

    The encoder (:class:`scvi.nn.FCLayers` with ``n_layers`` hidden blocks, then a linear map to
    the latent space) reads ``log1p`` of the visible counts with the covariates; the decoder
    (``n_layers_decoder`` hidden blocks, then a linear map and a softmax over genes) reads the
    latent code, the log library size and the covariates, and gives negative-binomial means
    (softmax × library size) with one inverse dispersion per gene. The loss is the mean NB
    negative log-likelihood (:class:`scvi.distributions.NegativeBinomial`) over the masked,
    measured entries, plus ``visible_weight`` × the mean over the visible, measured entries
    (0 here: the paper's loss).

    **Unmeasured genes.** An entry that is ``False`` in the mini-batch's ``"measured"`` mask (a
    prepared query's gene panels; absent when every gene was measured), or NaN in the counts, is
    a gene the cell's assay did not measure (see
    :meth:`~scr2mae.R2MAEModel.prepare_query_anndata`). It reaches the encoder
    exactly as a masked gene does in training (a zero in the masked input) and never enters a
    loss or a score.

    **Library size of cells with unmeasured genes.** In training, the library the decoder reads
    is the cell's total over *all* genes, the masked ones included (the masked genes are hidden
    from the encoder, not from the library). For a cell that lacks some genes, the observed sum
    covers only part of that total. The module therefore estimates the total as ``observed sum /
    coverage``, where ``coverage`` is the share of the cell's expression the decoder itself
    places on the measured genes (one decoder pass from the observed sum, then the decoder is run
    again with the corrected library). This keeps the decoder's input and the NB means on the
    scale the model was trained on; with every gene measured the correction is exactly 1. Set
    :attr:`estimate_unmeasured_library` to ``False`` to use the observed sum instead.

    Parameters
    ----------
    n_input, n_batch, n_continuous_cov, n_cats_per_cov
        Genes, batches (0 or 1: no batch covariate), continuous covariates, and the categories
        of each extra categorical covariate.
    mask_strategy
        A :class:`~scr2mae.masking.RatioSchedule` (built by the model).
    curriculum
        ``None``, or ``(strategy, params)`` naming a curriculum of
        :func:`~scr2mae.masking.get_curriculum`; its discrete ratios replace ``mask_strategy``
        and its Sinkhorn weights weight the training loss.
    n_hidden, n_latent, n_layers, n_layers_decoder, dropout_rate
        As in :class:`~scr2mae.R2MAEModel`.
    mask_mode, input_transform, batch_correction, batch_correction_weight
        As in :class:`~scr2mae.R2MAEModel`.
    visible_weight
        Weight of the visible entries' NB likelihood in the training loss (see :meth:`loss`);
        0 here, the paper's objective. :class:`~scr2mae.R2MAEModel` passes its own default.
    """

    #: estimate the full library of cells with unmeasured genes (see the class notes)
    estimate_unmeasured_library: bool = True
    #: range of the per-cell share of genes hidden to draw ``n_samples > 1`` latent samples
    #: (``None``: the training schedule's range); chosen on planted DE genes, see the
    #: differential-expression benchmark
    sample_ratios: tuple[float, float] | None = (0.05, 0.05)
    #: the likelihood, as scvi-tools' mixins read it
    gene_likelihood: str = "nb"

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
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
        batch_correction: str = "none",
        batch_correction_weight: float | None = None,
        visible_weight: float = 0.0,
    ):
        super().__init__()
        batch_correction, batch_correction_weight = check_batch_correction(
            batch_correction, batch_correction_weight
        )
        if batch_correction != "none" and n_batch < 2:
            raise ValueError(
                f"`batch_correction={batch_correction!r}` needs at least 2 batches; the data "
                f"have {n_batch}. Pass `batch_key` to `setup_anndata`, or use 'none'."
            )
        self.batch_correction = batch_correction
        self.batch_correction_weight = batch_correction_weight
        self.visible_weight = check_visible_weight(visible_weight)
        if input_transform not in ("log1p", "log1p_cp10k"):
            raise ValueError(
                f"`input_transform` must be 'log1p' or 'log1p_cp10k', got {input_transform!r}."
            )
        sizes = dict(n_input=n_input, n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers)
        sizes["n_layers_decoder"] = n_layers_decoder
        for name, value in sizes.items():
            check_int(name, value)
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"`dropout_rate` must lie in [0, 1), got {dropout_rate!r}.")
        self.input_transform = input_transform
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.n_continuous_cov = n_continuous_cov
        # the batch first, then the extra categorical covariates: scArches' weight surgery in
        # `load_query_data` appends new batch columns at the end of the first layer's weight
        self.n_cat_list = [n_batch, *(n_cats_per_cov or [])]
        self.curriculum = None
        if curriculum is not None:
            strategy, params = curriculum
            self.curriculum = resolve_masking(strategy, n_features=n_input, **params)
            if not isinstance(self.curriculum, Curriculum):
                raise ValueError(f"`curriculum` must name a curriculum strategy, got {strategy!r}.")
            mask_strategy = self.curriculum.ratios
        self.masker = Masker(mask_strategy, mode=mask_mode, ratio_per="batch")

        common = {
            "n_cat_list": self.n_cat_list,
            "n_cont": n_continuous_cov,
            "n_hidden": n_hidden,
            "dropout_rate": dropout_rate,
            "inject_covariates": False,  # appendix C.8: covariates enter the first layer only
        }
        # every correction keeps the encoder blind to the batch (a category count of 0 makes
        # FCLayers ignore that covariate); the decoder always reads it
        encoder_cats = self.n_cat_list if batch_correction == "none" else [0, *self.n_cat_list[1:]]
        self.encoder = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_layers=n_layers,
            **{**common, "n_cat_list": encoder_cats},
        )
        self.encoder_out = nn.Linear(n_hidden, n_latent)
        # "variational": a second head gives the log-variance of a Gaussian posterior
        self.encoder_log_var = (
            nn.Linear(n_hidden, n_latent) if batch_correction == "variational" else None
        )
        # the decoder reads [z, log library] plus the covariates
        self.px_decoder = FCLayers(
            n_in=n_latent + 1, n_out=n_hidden, n_layers=n_layers_decoder, **common
        )
        self.px_scale_decoder = nn.Linear(n_hidden, n_input)
        # gene-wise inverse dispersion, stored on the log scale
        self.px_r = nn.Parameter(torch.zeros(n_input))
        # optimisation steps seen by the masking schedule; a device-resident counter so that
        # step-dependent schedules never synchronise with the host
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))
        self.batch_classifier = (
            BatchClassifier(n_latent, n_batch) if batch_correction == "adversarial" else None
        )

    def train(self, mode: bool = True):
        """Set the training mode; batch norms frozen by scArches (momentum 0) stay in
        evaluation mode, so they use and keep the reference's running statistics."""
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm1d) and layer.momentum == 0:
                layer.eval()
        return self

    # ------------------------------------------------------------------ covariates
    def _categorical(self, batch_index, cat_covs) -> list[torch.Tensor | None]:
        cats = [batch_index]
        n_extra = len(self.n_cat_list) - 1
        if n_extra:
            cats += list(torch.split(cat_covs, 1, dim=1)) if cat_covs is not None else [None]
        return [c.long() if c is not None else None for c in cats]

    # ------------------------------------------------------------------ scvi-tools API
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs):
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            # only mini-batches of cells that lack genes carry it (None: all measured)
            "measured": tensors.get(MEASURED_KEY),
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        keys = ("z", "library", "batch_index", "cont_covs", "cat_covs", "measured")
        return {key: inference_outputs[key] for key in keys}

    def draw_mask(self, n_rows: int, device: torch.device):
        """Draw a training mask at the current step (and advance the step while training).

        Returns the :class:`~scr2mae.masking.MaskDraw` and the step it was drawn at.
        """
        step = self.mask_step.clone()
        draw = self.masker(n_rows, self.n_input, step=step, device=device)
        if self.training:
            self.mask_step.add_(1)
        return draw, step

    def validation_ratios(self) -> torch.Tensor:
        """The fixed ratios of the validation masks: five spanning the schedule's range."""
        low, high = self.masker.schedule.bounds()
        return torch.linspace(max(low, 0.05), min(high, 0.95), VALIDATION_RATIOS)

    def encode(
        self,
        x: torch.Tensor,
        hidden: torch.Tensor | None,
        batch_index: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Latent code of counts ``x`` (no NaN) with the ``hidden`` entries (``True``) zeroed.

        With ``batch_correction="variational"`` the return value is the posterior's mean and
        log-variance.
        """
        x_in = x if hidden is None else torch.where(hidden, 0.0, x)
        if self.input_transform == "log1p_cp10k":
            # scale the visible counts of each cell to 10^4 before the log (optional; the
            # paper's encoder reads log1p of the raw masked counts)
            x_in = x_in / x_in.sum(dim=-1, keepdim=True).clamp_min(1.0) * 1e4
        cont = cont_covs.to(x.dtype) if self.n_continuous_cov and cont_covs is not None else None
        h = self.encoder(torch.log1p(x_in), *self._categorical(batch_index, cat_covs), cont=cont)
        if self.encoder_log_var is not None:
            return self.encoder_out(h), self.encoder_log_var(h).clamp(-10.0, 10.0)
        return self.encoder_out(h)

    def _hidden(self, x, mask, masking, n_samples):
        """The hidden entries and the mask's ratio, index and step for ``masking``."""
        ratio = index = step = None
        if mask is None and masking == "train":
            (mask, ratio, index), step = self.draw_mask(x.shape[0], x.device)
        elif mask is None and masking == "validation":
            mask, ratio = hashed_mask(x, self.validation_ratios())
        elif mask is None and masking == "sample":
            # a deterministic encoder's source of variation: each cell hides its own random
            # gene set, at a ratio drawn per cell from `sample_ratios` (the training range)
            low, high = self.sample_ratios or self.masker.schedule.bounds()
            rows = n_samples * x.shape[0]
            ratio = low + (high - low) * torch.rand(rows, device=x.device)
            mask = exact_count_mask(rows, self.n_input, ratio).view(n_samples, *x.shape)
            ratio = None
        return mask, ratio, index, step

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        n_samples: int = 1,
        mask: torch.Tensor | None = None,
        masking: bool | str | None = None,
        measured: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Encode (optionally masked) counts.

        Parameters
        ----------
        x
            Counts, ``(cells, genes)``.
        batch_index, cont_covs, cat_covs
            Covariates as registered.
        n_samples
            Latent samples per cell (a leading sample axis when above 1). A deterministic
            encoder draws them by hiding random gene sets at the training ratios; the
            ``"variational"`` encoder samples its posterior.
        mask
            Boolean mask (``True`` = hidden), used as given.
        masking
            Which mask to draw when ``mask`` is ``None``: ``"train"`` (from the schedule),
            ``"validation"`` (:func:`~scr2mae.masking.hashed_mask` at
            :meth:`validation_ratios`: the same mask for a cell every time), ``"none"``, or
            ``None`` for ``"train"`` in training mode and no mask otherwise. ``True`` and
            ``False`` mean ``"train"`` and ``"none"``.
        measured
            Boolean ``(cells, genes)``, ``False`` for genes a cell did not measure (what the
            data loaders pass for the panels of a prepared query), or ``None``: every gene is
            measured. NaN entries of ``x`` are unmeasured too when ``measured`` is given or
            ``x`` is on the CPU; on an accelerator, pass ``measured`` (reading ``x`` there to
            look for NaN would wait for the device).

        Returns
        -------
        Dictionary with the latent code ``z``, the posterior ``qz`` (a point mass at ``z`` for
        the deterministic encoder), the observed ``library`` (sum over measured genes), the
        ``mask`` (``None`` when not masking), the ``measured`` entries (``None`` when all are),
        the covariates, and the mask's ratio, ratio index and step.
        """
        if masking is None:
            masking = "train" if self.training else "none"
        masking = {True: "train", False: "none"}.get(masking, masking)
        if masking not in ("train", "validation", "none"):
            raise ValueError(f"`masking` must be 'train', 'validation' or 'none', got {masking!r}.")
        x = x.to(torch.float32)
        measured = self._measured_entries(x, measured)
        if measured is not None:
            x = torch.where(measured, x, torch.zeros_like(x))
        library = x.sum(dim=1, keepdim=True)
        sampled = n_samples > 1 and self.encoder_log_var is None and mask is None
        mask, ratio, index, step = self._hidden(
            x, mask, "sample" if sampled else masking, n_samples
        )
        if measured is None:
            hidden = mask
        else:
            hidden = ~measured if mask is None else (mask | ~measured)
        z = self.encode(x, hidden, batch_index, cont_covs, cat_covs)
        if isinstance(z, tuple):
            # variational bottleneck: decode a sample while training, embed the mean
            qz = Normal(z[0], torch.exp(0.5 * z[1]))
            if n_samples > 1:
                z = qz.rsample((n_samples,))
            else:
                z = qz.rsample() if self.training else qz.loc
        else:
            qz = Normal(z, torch.zeros_like(z), validate_args=False)  # a point mass
        if z.dim() == 3:
            library = library.expand(z.shape[0], -1, -1)
            mask = None if sampled else mask
        return {
            "z": z,
            "qz": qz,
            "x": x,
            "library": library,
            "measured": measured,
            "batch_index": batch_index,
            "cont_covs": cont_covs,
            "cat_covs": cat_covs,
            "mask": mask,
            "mask_ratio": ratio,
            "mask_index": index,
            "mask_step": step,
        }

    def _decode_scale(self, z, library, batch_index, cont_covs, cat_covs) -> torch.Tensor:
        h = torch.cat([z, torch.log(library.clamp_min(1.0))], dim=-1)
        cont = cont_covs.to(z.dtype) if self.n_continuous_cov and cont_covs is not None else None
        h = self.px_decoder(h, *self._categorical(batch_index, cat_covs), cont=cont)
        return torch.softmax(self.px_scale_decoder(h), dim=-1)

    def _measured_entries(
        self, x: torch.Tensor, measured: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The measured entries of ``x``, or ``None`` when all of them are (see
        :meth:`inference`); decided without waiting for an accelerator."""
        if measured is not None:
            return measured.to(torch.bool) & ~torch.isnan(x)
        if self._reads_are_free(x.device):
            nan = torch.isnan(x)
            if bool(nan.any()):
                return ~nan
        return None

    @staticmethod
    def _reads_are_free(device: torch.device) -> bool:
        """Whether reading a tensor's values on ``device`` costs no host synchronisation."""
        return device.type == "cpu"

    def _known_complete(self, measured: torch.Tensor | None) -> bool:
        """Whether every gene is known to be measured without waiting for an accelerator.

        ``measured=None`` means every gene is measured (what :meth:`inference` reports for a
        complete mini-batch). A ``measured`` tensor on the CPU is read, which costs nothing
        there (the smallest byte of the boolean tensor: a vectorised reduction, much cheaper
        than ``all()`` on booleans); on an accelerator it is taken as possibly incomplete.
        """
        if measured is None:
            return True
        if not self._reads_are_free(measured.device):
            return False
        measured = measured.contiguous()
        return measured.numel() == 0 or int(measured.view(torch.uint8).min()) == 1

    def _may_lack_genes(self, measured: torch.Tensor | None) -> bool:
        """Whether :meth:`generative` estimates full libraries (see :meth:`_known_complete`).

        On an accelerator the estimate runs whenever a ``measured`` tensor is given; complete
        cells keep their first decoding, so the result is the same as skipping it.
        """
        return self.estimate_unmeasured_library and not self._known_complete(measured)

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        measured: torch.Tensor | None = None,
        transform_batch: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode latent codes into negative-binomial parameters.

        ``library`` is the observed sum over the ``measured`` genes (``None``: all genes); for
        cells with unmeasured genes it is first scaled to an estimate of the full library (see
        the class notes).
        ``transform_batch`` decodes every cell as if from that batch code. The outputs are
        ``px_scale`` (expression proportions over all genes), ``px_rate`` (NB means), ``px_r``
        (inverse dispersions), the ``library`` used, and ``px`` (the distribution).
        """
        if transform_batch is not None and batch_index is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        elif batch_index is not None and not self.training and self.n_batch > 1:
            # cells of batches the reference never saw (embedded zero-shot by a batch-blind
            # encoder) have no decoder weights; one host check, outside training only
            if bool((batch_index >= self.n_batch).any()):
                raise ValueError(
                    "some cells are of batches the model was not trained on, and the decoder "
                    "has no weights for them: pass `transform_batch` (a batch of the "
                    "reference) to decode them as that batch, or add their batch with "
                    "`R2MAEModel.load_query_data`."
                )
        px_scale = self._decode_scale(z, library, batch_index, cont_covs, cat_covs)
        if self._may_lack_genes(measured):
            # share of the predicted expression that falls on the measured genes (detached:
            # the library is data, not a prediction to optimise); cells with every gene
            # measured keep their observed library and their first decoding exactly
            complete = measured.all(dim=-1, keepdim=True)
            coverage = (px_scale.detach() * measured).sum(dim=-1, keepdim=True)
            library = torch.where(complete, library, library / coverage.clamp_min(1e-6))
            second = self._decode_scale(z, library, batch_index, cont_covs, cat_covs)
            px_scale = torch.where(complete, px_scale, second)
        px_r = torch.exp(self.px_r)
        px_rate = px_scale * library
        return {
            "px_scale": px_scale,
            "px_rate": px_rate,
            "px_r": px_r,
            "library": library,
            "px": NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale),
        }

    @torch.inference_mode()
    def sample(
        self, tensors: dict[str, torch.Tensor], n_samples: int = 1, generative_kwargs=None
    ) -> torch.Tensor:
        """Counts drawn from the NB predicted for each cell, on the CPU.

        Shape ``(cells, genes)``, or ``(cells, genes, n_samples)`` when ``n_samples > 1`` (each
        sample decodes another latent sample, see :meth:`inference`).
        """
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        samples = generative_outputs["px"].sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()

    def _scored_columns(
        self, inference_outputs: dict
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Columns that hold every masked entry, when the mask is one set of genes.

        A mask whose rows are one row expanded over the mini-batch (what
        :func:`~scr2mae.masking.column_mask` returns, the default training masks; appendix C.8:
        genes masked once per mini-batch) hides whole columns, so the likelihood is needed on
        those columns only. Returns the column indices and, when they are a fixed-size superset
        of the masked columns, which of them are masked (``None``: all are); ``None`` for any
        other mask, which is scored densely.

        On the CPU the masked columns are read back and gathered exactly (reading a host tensor
        costs nothing). Elsewhere that read would wait for the device, so a mask drawn by the
        module's :attr:`masker` is gathered at the largest column count its schedule can draw
        (known on the host), the masked columns first; a mask given by the caller is scored
        densely.
        """
        mask = inference_outputs.get("mask")
        if mask is None or mask.dim() != 2 or mask.shape[0] == 0:
            return None
        if self._scores_visible(mask):
            return None  # the visible columns are scored too: every column is needed
        if mask.shape[0] > 1 and mask.stride(0) != 0:
            return None
        columns = mask[0]
        if self._reads_are_free(columns.device):
            return columns.nonzero().squeeze(1), None
        if inference_outputs.get("mask_step") is None:
            return None
        n_genes = columns.shape[0]
        high = self.masker.schedule.bounds()[1]
        # one column of margin for the float32 rounding of the drawn ratio
        n_gathered = min(n_genes, math.floor(high * n_genes + 0.5) + 1)
        if n_gathered >= n_genes:
            return None
        order = torch.argsort(columns.to(torch.uint8), descending=True, stable=True)
        index = order[:n_gathered]
        return index, columns[index]

    def masked_nll(self, inference_outputs: dict, generative_outputs: dict) -> MaskedNLL:
        """Element-wise NB loss on the columns that hold the scored entries, with their weights.

        The scored entries are the masked *and* measured ones (all measured ones when nothing
        was masked). With a mask of gene columns (the default training masks) the likelihood is
        evaluated on the masked columns only, unless the training loss scores the visible
        entries too (``visible_weight > 0``); otherwise, on every entry. The weights
        are ``None`` (ones), except while training with a curriculum, where they are the column
        of the Sinkhorn weight matrix selected by the mini-batch's masking ratio. The
        likelihood is evaluated in float32 even under mixed precision (``lgamma``).

        Returns
        -------
        :class:`MaskedNLL` ``(nll, scored, weights)``: the NLL ``(cells, columns)``, the boolean
        scored entries among them (``None``: all), and the loss weights (``None``: ones).
        """
        x = inference_outputs["x"]
        measured = inference_outputs.get("measured")
        if self._known_complete(measured):
            measured = None
        mask = inference_outputs.get("mask")
        px_rate = generative_outputs["px_rate"]
        theta = generative_outputs["px_r"]
        columns = self._scored_columns(inference_outputs)
        if columns is None:
            scored = mask
            if measured is not None:
                scored = measured if scored is None else scored & measured
        else:
            index, in_mask = columns
            x = x.index_select(-1, index)
            px_rate = px_rate.index_select(-1, index)
            theta = theta.index_select(-1, index)
            scored = in_mask
            if measured is not None:
                measured = measured.index_select(-1, index)
                scored = measured if scored is None else scored & measured
        if scored is not None:
            scored = scored.expand(px_rate.shape)
        with torch.autocast(device_type=x.device.type, enabled=False):
            sparse = self._reads_are_free(x.device)
            nll = _nb_nll(x.float(), px_rate.float(), theta.float(), sparse_counts=sparse)
        weights = None
        index = inference_outputs.get("mask_index")
        if self.curriculum is not None and self.training and index is not None:
            # appendix A.3: the drawn ratio's index selects the column of W; the step is a
            # device tensor, so the warm-up is a zero gradient coefficient (the generator's
            # optimiser group has no weight decay, see R2MAETrainingPlan)
            full_x = inference_outputs["x"]
            weights = self.curriculum.loss_weights(
                full_x, index[:1], inference_outputs["mask_step"], full_x.shape[0]
            )
            if columns is not None:
                weights = weights.index_select(-1, columns[0])
        return MaskedNLL(nll, scored, weights)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        **kwargs,
    ) -> LossOutput:
        """Mean NB negative log-likelihood over the masked, measured entries (appendix C.8).

        ``reconstruction_loss`` is each cell's mean NLL over its scored entries (what
        :meth:`~scr2mae.R2MAEModel.get_reconstruction_error` reports); ``extra_metrics`` carry
        the sum of the unweighted NLL over the scored entries and their number, from which the
        training plan logs ``masked_nll_{train,validation}`` per masked entry. While training
        with ``visible_weight > 0``, ``visible_weight`` × the mean NLL of the visible (measured,
        not masked) entries is added, and reported as ``visible_nll``. With
        ``batch_correction`` ``"adversarial"``, ``"mmd"`` or ``"variational"``, the term
        (:meth:`batch_correction_loss`) is added to the optimised loss and reported as
        ``batch_correction_loss``.
        """
        nll, scored, weights = self.masked_nll(inference_outputs, generative_outputs)
        n_cells, n_columns = nll.shape[-2], nll.shape[-1]
        if scored is None:
            scored_nll = nll
            per_cell = torch.full((n_cells,), float(n_columns), device=nll.device)
            n_scored = torch.full((), float(nll.numel()), device=nll.device)
        else:
            scored_nll = torch.where(scored, nll, torch.zeros_like(nll))
            per_cell = scored.sum(dim=-1, dtype=nll.dtype)
            n_scored = per_cell.sum()
        weighted = scored_nll if weights is None else scored_nll * weights
        loss = weighted.sum() / n_scored.clamp_min(1.0)
        extra = {
            "masked_fraction": (n_scored / inference_outputs["x"].numel()).detach(),
            "scored_nll_sum": scored_nll.sum().detach(),
            "scored_entries": n_scored.detach(),
        }
        mask = inference_outputs.get("mask")
        if self._scores_visible(mask):
            # the NLL covers every column here (see `_scored_columns`); the visible entries
            # are the measured ones the mask left to the encoder
            visible = ~mask.expand(nll.shape)
            measured = inference_outputs.get("measured")
            if not self._known_complete(measured):
                visible = visible & measured
            visible_nll = torch.where(visible, nll, torch.zeros_like(nll)).sum()
            visible_nll = visible_nll / visible.sum(dtype=nll.dtype).clamp_min(1.0)
            loss = loss + self.visible_weight * visible_nll
            extra["visible_nll"] = visible_nll.detach()
        batch_term = self.batch_correction_loss(inference_outputs)
        if batch_term is not None:
            if self.batch_correction == "variational":
                # per-cell KL over the expected number of masked genes per cell: a fixed
                # scale, so that the KL weight does not move with the drawn ratio
                low, high = self.masker.schedule.bounds()
                batch_term = batch_term.mean() / (self.n_input * 0.5 * (low + high))
            loss = loss + batch_term
            extra["batch_correction_loss"] = batch_term.detach()
        return LossOutput(
            loss=loss,
            reconstruction_loss=scored_nll.sum(dim=-1) / per_cell.clamp_min(1.0),
            n_obs_minibatch=n_cells,
            extra_metrics=extra,
        )

    def _scores_visible(self, mask: torch.Tensor | None) -> bool:
        """Whether the training loss also scores the visible entries (``visible_weight > 0``,
        training, a mask drawn): the likelihood is then evaluated on every column once."""
        return self.training and self.visible_weight > 0 and mask is not None

    def batch_correction_loss(self, inference_outputs: dict) -> torch.Tensor | None:
        """The weighted batch term on the latent code, or ``None`` when there is none.

        ``"mmd"``: ``batch_correction_weight`` × the Gaussian-kernel MMD between each batch and
        the rest of the mini-batch in the latent space. ``"adversarial"``: the batch
        classifier's cross-entropy, whose gradient reaches the encoder reversed and multiplied
        by ``batch_correction_weight``. ``"variational"``: ``batch_correction_weight`` × the
        KL divergence of each cell's posterior from N(0, I), per cell (``(cells,)``; the loss
        divides its mean by the expected number of masked genes per cell, a constant).
        """
        if self.batch_correction == "variational":
            qz = inference_outputs.get("qz")
            if qz is None:
                return None
            prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
            return self.batch_correction_weight * kl_divergence(qz, prior).sum(dim=-1)
        batch_index = inference_outputs["batch_index"]
        if self.batch_correction not in ("adversarial", "mmd") or batch_index is None:
            return None
        z = inference_outputs["z"]
        if self.batch_correction == "mmd":
            return self.batch_correction_weight * batch_mmd(z, batch_index, self.n_batch)
        return self.batch_classifier.adversarial_loss(z, batch_index, self.batch_correction_weight)
