"""The torch module behind :class:`~scr2mae.R2MAEModel` (appendix C.8 of the paper)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal

from .._validation import check_int
from ..data._panels import MEASURED_KEY
from ..masking import Masker, RatioSchedule, resolve_masking
from ._batch_correction import BatchClassifier, batch_correction_loss
from ._config import resolve_options
from ._likelihood import MaskedNLL, masked_columns, masked_nll, scored_mean

__all__ = ["MaskedNLL", "R2MAEModule"]


class R2MAEModule(BaseModuleClass):
    """Masked autoencoder for counts with a negative-binomial decoder.

    The encoder (:class:`scvi.nn.FCLayers`, ``n_layers`` hidden blocks, a linear map to the
    latent) reads ``log1p`` of the visible counts and the covariates; the decoder
    (``n_layers_decoder`` blocks, a softmax over genes) reads the code, the log library and the
    covariates, and gives NB means (softmax × library) with one inverse dispersion per gene.

    **Unmeasured genes**: ``False`` in the mini-batch's ``"measured"`` mask (a prepared query's
    panels) or NaN in the counts. They reach the encoder as masked genes do in training and
    never enter a loss or a score.

    **Library size of cells with unmeasured genes.** The decoder is trained on each cell's
    total over *all* genes, so for a cell that lacks genes :meth:`generative` estimates it as
    ``observed sum / coverage``, the share of the cell's expression the decoder places on the
    measured genes (exactly 1 with every gene measured; :attr:`estimate_unmeasured_library`).

    Parameters
    ----------
    n_input, n_batch, n_continuous_cov, n_cats_per_cov
        Genes, batches (0 or 1: no batch covariate), continuous covariates, and the categories
        of each extra categorical covariate.
    mask_strategy, curriculum, batch_correction, batch_correction_weight, visible_weight
        Resolved by :func:`~scr2mae.model.resolve_options` (``curriculum``: ``(name, params)``
        of a curriculum strategy). ``visible_weight`` is 0 here, the paper's objective;
        :class:`~scr2mae.R2MAEModel` passes its own default.
    n_hidden, n_latent, n_layers, n_layers_decoder, dropout_rate, mask_mode, input_transform
        As in :class:`~scr2mae.R2MAEModel`.
    """

    #: estimate the full library of cells with unmeasured genes (see the class notes)
    estimate_unmeasured_library: bool = True
    #: share of genes hidden per cell for ``n_samples > 1`` latent samples (``None``: the
    #: schedule's range); chosen on planted DE genes (the differential-expression benchmark)
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
        options = resolve_options(
            n_input,
            n_batch,
            mask_strategy=mask_strategy,
            curriculum=curriculum,
            batch_correction=batch_correction,
            batch_correction_weight=batch_correction_weight,
            visible_weight=visible_weight,
        )
        for name in ("batch_correction", "batch_correction_weight", "visible_weight"):
            setattr(self, name, getattr(options, name))
        if input_transform not in ("log1p", "log1p_cp10k"):
            raise ValueError(
                f"`input_transform` must be 'log1p' or 'log1p_cp10k', got {input_transform!r}."
            )
        sizes = dict(n_input=n_input, n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers)
        for name, value in {**sizes, "n_layers_decoder": n_layers_decoder}.items():
            check_int(name, value)
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"`dropout_rate` must lie in [0, 1), got {dropout_rate!r}.")
        self.input_transform = input_transform
        self.n_input, self.n_batch, self.n_latent = n_input, n_batch, n_latent
        self.n_continuous_cov = n_continuous_cov
        # the batch first, then the extra categorical covariates: scArches' weight surgery in
        # `load_query_data` appends new batch columns at the end of the first layer's weight
        self.n_cat_list = [n_batch, *(n_cats_per_cov or [])]
        self.curriculum, schedule = None, options.mask_strategy
        if options.curriculum is not None:
            name, params = options.curriculum
            self.curriculum = resolve_masking(name, n_features=n_input, **params)
            schedule = self.curriculum.ratios
        self.masker = Masker(schedule, mode=mask_mode, ratio_per="batch")

        # appendix C.8: covariates enter the first layer only
        common = dict(n_cont=n_continuous_cov, n_hidden=n_hidden, dropout_rate=dropout_rate)
        common.update(n_cat_list=self.n_cat_list, inject_covariates=False)
        # every correction keeps the encoder blind to the batch (a category count of 0 makes
        # FCLayers ignore that covariate); the decoder always reads it
        blind = self.batch_correction != "none"
        encoder_cats = [0, *self.n_cat_list[1:]] if blind else self.n_cat_list
        encoder = {**common, "n_cat_list": encoder_cats}
        self.encoder = FCLayers(n_in=n_input, n_out=n_hidden, n_layers=n_layers, **encoder)
        self.encoder_out = nn.Linear(n_hidden, n_latent)
        # "variational": a second head gives the log-variance of a Gaussian posterior
        variational = self.batch_correction == "variational"
        self.encoder_log_var = nn.Linear(n_hidden, n_latent) if variational else None
        # the decoder reads [z, log library] plus the covariates
        self.px_decoder = FCLayers(n_latent + 1, n_hidden, n_layers=n_layers_decoder, **common)
        self.px_scale_decoder = nn.Linear(n_hidden, n_input)
        # gene-wise inverse dispersion, stored on the log scale
        self.px_r = nn.Parameter(torch.zeros(n_input))
        # optimisation steps seen by the masking schedule; a device-resident counter so that
        # step-dependent schedules never synchronise with the host
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))
        adversarial = self.batch_correction == "adversarial"
        self.batch_classifier = BatchClassifier(n_latent, n_batch) if adversarial else None

    def train(self, mode: bool = True):
        """Set the mode; batch norms frozen by scArches (momentum 0) stay in evaluation mode."""
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm1d) and layer.momentum == 0:
                layer.eval()
        return self

    def _categorical(self, batch_index, cat_covs) -> list[torch.Tensor | None]:
        cats = [batch_index]
        if len(self.n_cat_list) > 1:
            cats += list(torch.split(cat_covs, 1, dim=1)) if cat_covs is not None else [None]
        return [c.long() if c is not None else None for c in cats]

    @staticmethod
    def _covariates(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs):
        # only mini-batches of cells that lack genes carry `measured` (None: all measured)
        x, measured = tensors[REGISTRY_KEYS.X_KEY], tensors.get(MEASURED_KEY)
        return {"x": x, **self._covariates(tensors), "measured": measured}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        keys = ("z", "library", "measured")
        return {**{key: inference_outputs[key] for key in keys}, **self._covariates(tensors)}

    @staticmethod
    def _reads_are_free(device: torch.device) -> bool:
        """Whether reading a tensor's values on ``device`` costs no host synchronisation."""
        return device.type == "cpu"

    def _unless_complete(self, measured: torch.Tensor | None) -> torch.Tensor | None:
        """``None`` where ``measured`` is known complete (read on the CPU only), else it."""
        if measured is None or not self._reads_are_free(measured.device):
            return measured
        flat = measured.contiguous()
        return None if flat.numel() == 0 or int(flat.view(torch.uint8).min()) == 1 else measured

    def draw_mask(self, n_rows: int, device: torch.device):
        """The :class:`~scr2mae.masking.MaskDraw` of a training mask at the current step, and
        that step (which advances while training)."""
        step = self.mask_step.clone()
        draw = self.masker(n_rows, self.n_input, step=step, device=device)
        if self.training:
            self.mask_step.add_(1)
        return draw, step

    def validation_ratios(self) -> torch.Tensor:
        """The fixed ratios of the validation masks: five spanning the schedule's range."""
        return self.masker.validation_ratios()

    def encode(self, x, hidden, batch_index=None, cont_covs=None, cat_covs=None):
        """Latent code of counts ``x`` (no NaN) with the ``hidden`` entries zeroed (the
        posterior's mean and log-variance with ``batch_correction="variational"``)."""
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
        """Encode counts ``x`` ``(cells, genes)``: ``z``, the posterior ``qz`` (a point mass for
        the deterministic encoder), ``x`` with unmeasured entries zeroed, the observed
        ``library``, the ``mask``, the ``measured`` entries (``None``: all) and the mask's ratio,
        index and step.

        ``mask`` (``True`` = hidden) is used as given; else ``masking`` is ``"train"``
        (:meth:`draw_mask`), ``"validation"`` (:meth:`scr2mae.masking.Masker.validation`),
        ``"none"``, or ``None`` (``"train"`` while training). ``n_samples > 1`` adds a sample
        axis (:meth:`scr2mae.masking.Masker.sample` at :attr:`sample_ratios`, or the variational
        posterior). ``measured`` is ``False`` for genes a cell did not measure; NaN entries of
        ``x`` are unmeasured too (on an accelerator, pass ``measured``).
        """
        if masking is None:
            masking = "train" if self.training else "none"
        masking = {True: "train", False: "none"}.get(masking, masking)
        if masking not in ("train", "validation", "none"):
            raise ValueError(f"`masking` must be 'train', 'validation' or 'none', got {masking!r}.")
        x = x.to(torch.float32)
        if measured is not None:
            measured = measured.to(torch.bool) & ~torch.isnan(x)
        elif self._reads_are_free(x.device) and bool(torch.isnan(x).any()):
            measured = ~torch.isnan(x)
        measured = self._unless_complete(measured)
        if measured is not None:
            x = torch.where(measured, x, torch.zeros_like(x))
        library = x.sum(dim=1, keepdim=True)
        sampled = n_samples > 1 and self.encoder_log_var is None and mask is None
        ratio = index = step = None
        if sampled:
            # a deterministic encoder's source of variation: each cell hides its own genes
            mask = self.masker.sample(n_samples, *x.shape, self.sample_ratios, device=x.device)
        elif mask is None and masking == "train":
            (mask, ratio, index), step = self.draw_mask(x.shape[0], x.device)
        elif mask is None and masking == "validation":
            mask, ratio = self.masker.validation(x)
        hidden = mask if measured is None else ~measured if mask is None else mask | ~measured
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
        outputs = dict(z=z, qz=qz, x=x, library=library, measured=measured, mask=mask)
        return {**outputs, "mask_ratio": ratio, "mask_index": index, "mask_step": step}

    def _decode_scale(self, z, library, batch_index, cont_covs, cat_covs) -> torch.Tensor:
        h = torch.cat([z, torch.log(library.clamp_min(1.0))], dim=-1)
        cont = cont_covs.to(z.dtype) if self.n_continuous_cov and cont_covs is not None else None
        h = self.px_decoder(h, *self._categorical(batch_index, cat_covs), cont=cont)
        return torch.softmax(self.px_scale_decoder(h), dim=-1)

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
        """NB parameters of latent codes: ``px_scale`` (proportions over all genes), ``px_rate``
        (means), ``px_r`` (inverse dispersions), the ``library`` used (the observed sum over the
        ``measured`` genes, scaled to the full library for cells that lack genes) and ``px``.
        ``transform_batch`` decodes every cell as if from that batch code."""
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
        measured = self._unless_complete(measured)
        if self.estimate_unmeasured_library and measured is not None:
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
        px = NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale)
        return dict(px_scale=px_scale, px_rate=px_rate, px_r=px_r, library=library, px=px)

    @torch.inference_mode()
    def sample(self, tensors, n_samples: int = 1, generative_kwargs=None) -> torch.Tensor:
        """Counts drawn from each cell's NB on the CPU, ``(cells, genes)``, or ``(cells, genes,
        n_samples)`` from ``n_samples`` latent samples (see :meth:`inference`)."""
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        samples = generative_outputs["px"].sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()

    def _scores_visible(self, mask: torch.Tensor | None) -> bool:
        """Whether the loss scores the visible entries too (then on every column)."""
        return self.training and self.visible_weight > 0 and mask is not None

    def masked_nll(self, inference_outputs: dict, generative_outputs: dict) -> MaskedNLL:
        """The element-wise NB loss of the entries :meth:`loss` scores (only the masked columns
        for a column mask with the masked genes alone in the loss, on the CPU), and while
        training a curriculum the Sinkhorn weights of the drawn ratio's column (appendix A.3)."""
        x, mask = inference_outputs["x"], inference_outputs["mask"]
        host = self._reads_are_free(x.device)
        columns = None if self._scores_visible(mask) or not host else masked_columns(mask)
        rate, theta = generative_outputs["px_rate"], generative_outputs["px_r"]
        out = masked_nll(x, rate, theta, mask, inference_outputs["measured"], columns, host)
        index = inference_outputs.get("mask_index")
        if self.curriculum is None or not self.training or index is None:
            return out
        # the step is a device tensor, so the warm-up is a zero gradient coefficient (the
        # generator's optimiser group has no weight decay, see R2MAETrainingPlan)
        step = inference_outputs["mask_step"]
        weights = self.curriculum.loss_weights(x, index[:1], step, x.shape[0])
        return out._replace(
            weights=weights if columns is None else weights.index_select(-1, columns)
        )

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        """Mean NB NLL of the masked, measured entries (appendix C.8), plus ``visible_weight`` ×
        that of the visible, measured ones while training, plus the batch-correction term.
        ``reconstruction_loss`` is each cell's mean over its scored entries; ``extra_metrics``
        carry the masked NLL's sum and entries (logged per entry), ``visible_nll`` and
        ``batch_correction_loss``."""
        mask, measured = inference_outputs["mask"], inference_outputs["measured"]
        nll, scored, weights = self.masked_nll(inference_outputs, generative_outputs)
        masked = scored_mean(nll, scored, weights)
        loss = masked.mean
        extra = {"masked_fraction": masked.count / inference_outputs["x"].numel()}
        extra |= {"scored_nll_sum": masked.total, "scored_entries": masked.count}
        if self._scores_visible(mask):  # the NLL covers every column here
            visible = ~mask.expand(nll.shape) if measured is None else ~mask & measured
            extra["visible_nll"] = scored_mean(nll, visible).mean
            loss = loss + self.visible_weight * extra["visible_nll"]
        batch_term = batch_correction_loss(
            self, inference_outputs, tensors.get(REGISTRY_KEYS.BATCH_KEY)
        )
        if batch_term is not None:
            extra["batch_correction_loss"] = batch_term
            loss = loss + batch_term
        return LossOutput(
            loss=loss,
            reconstruction_loss=masked.per_cell,
            n_obs_minibatch=nll.shape[-2],
            extra_metrics={name: value.detach() for name, value in extra.items()},
        )
