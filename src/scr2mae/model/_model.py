"""``R2MAEModel``: an scvi-tools model for masked autoencoding of single-cell counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, LayerField, NumericalJointObsField
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)

from .._validation import check_count_matrix, check_int, check_obs_keys
from ..data._alignment import compare_var_names, gene_identifier_columns
from ..data._fields import CategoryField
from ..data._panels import PanelField, panel_layout
from ..data._training import training_datamodule
from ..evaluation import RECONSTRUCTION_RATIOS, masked_reconstruction_score, r2mae_predictor
from ..masking import RatioSchedule
from ._config import resolve_options
from ._de import DifferentialExpressionMixin
from ._hub import HubMixin
from ._module import R2MAEModule
from ._query import QueryMixin
from ._surgery import n_cats_per_cov
from ._training_plan import VALIDATION_METRIC, R2MAETrainingPlan

__all__ = ["R2MAEModel", "default_max_epochs"]


def default_max_epochs(n_obs: int) -> int:
    """Default epochs for ``n_obs`` cells: about 1,000 steps of 128 cells, 30 at least, never
    more than ``min(400, 20000 / n × 400)``. The training-length benchmark's probe is flat from
    about 600 steps on; 30 epochs of 1,886 cells were short."""
    return int(min(400, max(1, round(20000 / n_obs * 400)), max(30, round(140_000 / n_obs))))


class R2MAEModel(
    QueryMixin,
    HubMixin,
    DifferentialExpressionMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Masked autoencoder for single-cell counts trained with randomly random masking (R2MAE).

    Appendix C.8 of the R2MAE paper: an MLP encoder reads ``log1p`` of the masked counts (and
    the covariates), an MLP decoder gives negative-binomial parameters (softmax over genes ×
    library size, one dispersion per gene), and the paper's loss is the NB negative
    log-likelihood of the masked genes only; by default the visible genes' is added
    (``visible_weight``). Each mini-batch hides a random gene set at a ratio drawn from
    ``mask_range=(0.1, 0.5)``. scvi-tools' mixins give the rest: differential expression,
    posterior predictive samples, likelihood parameters, normalised expression, scArches.

    A gene a query did not measure is a *hidden* gene (:meth:`prepare_query_anndata`). The
    encoder is deterministic: ``n_samples > 1`` hides a small random gene set per cell and
    sample (:attr:`R2MAEModule.sample_ratios`), the source of variation of differential
    expression. Options are checked and resolved by :func:`scr2mae.model.resolve_options`.

    Parameters
    ----------
    adata, registry
        AnnData registered with :meth:`setup_anndata`, or ``None`` with the ``registry`` of a
        custom data module (out-of-core training).
    n_hidden, n_latent, n_layers, n_layers_decoder, dropout_rate
        Widths, hidden layers of encoder (2: the paper's) and decoder (1), and dropout.
    mask_strategy, **masking_params
        A name of :func:`scr2mae.masking.resolve_masking` (``"r2mae"``, ``"fixed"``,
        ``"dynamic"``, ``"mdlm"``, ``"r2mae_dynamic"``, or the curricula ``"cl"``, ``"cl_k0"``,
        ``"r2mae_cl"``, ``"r2mae_cl_k0"`` of appendix A.3) with its parameters (e.g.
        ``mask_range=(0.1, 0.5)``, ``mask_ratio=0.25``), or a
        :class:`~scr2mae.masking.RatioSchedule`.
    mask_mode, input_transform
        ``"columns"`` (one gene set per mini-batch, the paper's), ``"exact"`` or
        ``"bernoulli"`` (per cell); encoder input ``"log1p"`` (the paper's) or ``"log1p_cp10k"``.
    batch_correction, batch_correction_weight
        ``"auto"`` (the default; saved as what it resolves to): ``"mmd"`` with two or more
        batches, else ``"none"`` (the paper: encoder and decoder read the batch). Or
        ``"decoder_only"`` (a batch-blind encoder), or a blind encoder plus a weighted term on
        the latent: ``"adversarial"`` (a reversed batch classifier; weight 0.1), ``"mmd"`` (a
        kernel MMD between batches; 0.1, or 0.03 with ``visible_weight=0``) or
        ``"variational"`` (a Gaussian posterior's KL per expected masked gene; 1). Every option
        but ``"none"`` needs two batches and embeds cells of unseen batches zero-shot.
    visible_weight
        Weight of the *visible* genes' NB likelihood beside the masked genes' (means per
        entry). ``None`` gives 1, whose Leiden clusters at scanpy's default resolution follow
        the cell types more closely (clustering benchmark); 0 is the paper's objective.

    Examples
    --------
    >>> scr2mae.R2MAEModel.setup_anndata(adata, layer="counts", batch_key="donor")
    >>> model = scr2mae.R2MAEModel(adata)
    >>> model.train()
    >>> adata.obsm["X_r2mae"] = model.get_latent_representation()
    """

    _module_cls = R2MAEModule
    _training_plan_cls = R2MAETrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_hidden: int = 512,
        n_latent: int = 128,
        n_layers: int = 2,
        n_layers_decoder: int = 1,
        dropout_rate: float = 0.1,
        mask_strategy: str | RatioSchedule = "r2mae",
        mask_mode: Literal["columns", "exact", "bernoulli"] = "columns",
        input_transform: Literal["log1p", "log1p_cp10k"] = "log1p",
        batch_correction: Literal[
            "auto", "none", "decoder_only", "adversarial", "mmd", "variational"
        ] = "auto",
        batch_correction_weight: float | None = None,
        visible_weight: float | None = None,
        **masking_params: Any,
    ):
        super().__init__(adata, registry)
        options = resolve_options(
            self.summary_stats.n_vars,
            self.summary_stats.get("n_batch", 1),
            mask_strategy=mask_strategy,
            masking_params=masking_params,
            batch_correction=batch_correction,
            batch_correction_weight=batch_correction_weight,
            visible_weight=visible_weight,
        )
        # the resolved values are what the model saves (`init_params_` reads these locals), so
        # that a reloaded model or a query model keeps the reference's options
        batch_correction, visible_weight = options.batch_correction, options.visible_weight
        widths = dict(n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers)
        widths.update(n_layers_decoder=n_layers_decoder, dropout_rate=dropout_rate)
        self._module_kwargs = {**widths, **options._asdict()}
        self._module_kwargs.update(mask_mode=mask_mode, input_transform=input_transform)
        weight = options.batch_correction_weight
        masking = mask_strategy if options.curriculum else repr(options.mask_strategy)
        self._model_summary_string = (
            f"R2MAEModel with {', '.join(f'{k}: {v}' for k, v in widths.items())}, masking: "
            f"{masking} ({mask_mode}), batch_correction: {batch_correction}"
            + (f" (weight {weight:g})" if weight else "")
            + f", visible_weight: {visible_weight:g}."
        )
        self.module = None
        if not self._module_init_on_train:
            self.module = self._module_cls(
                n_input=self.summary_stats.n_vars,
                n_batch=self.summary_stats.n_batch,
                n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
                n_cats_per_cov=n_cats_per_cov(self.registry_) or None,
                **self._module_kwargs,
            )
        # other identifiers of the genes (e.g. Ensembl IDs) that a query may be matched on
        self.gene_identifiers_ = gene_identifier_columns(adata.var) if adata is not None else {}
        self.is_query_model_ = False
        self.init_params_ = self._get_init_params(locals())

    def _complete_options(self, missing: dict[str, Any]) -> None:
        """Give a loaded model the options its file predates (loss weights; see :meth:`load`)."""
        self.init_params_["non_kwargs"].update(missing)
        saved = self.init_params_["non_kwargs"]
        names = ("mask_strategy", "batch_correction", "batch_correction_weight", "visible_weight")
        options = resolve_options(
            self.summary_stats.n_vars,
            self.summary_stats.get("n_batch", 1),
            masking_params=self.init_params_["kwargs"].get("masking_params"),
            **{name: saved[name] for name in names},
        )
        for name in ("visible_weight", "batch_correction_weight"):
            setattr(self.module, name, getattr(options, name))
            self._module_kwargs[name] = getattr(options, name)

    # ------------------------------------------------------------------ data
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData with counts; nothing is written to it if a check fails.

        Parameters
        ----------
        adata, layer
            AnnData with counts (raw, or non-negative and corrected, e.g. for ambient RNA) in
            ``layer`` (``None``: ``adata.X``).
        batch_key, labels_key
            ``.obs`` columns of the batch (donor, dataset) and of labels (not used in training).
        categorical_covariate_keys, continuous_covariate_keys
            Extra ``.obs`` columns fed to encoder and decoder.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        ValueError
            For a missing layer or column, NaN (see :meth:`prepare_query_anndata`), inf, negative
            or log-normalised values, or empty cells. Genes without counts are accepted.
        """
        cls._register_fields(adata, cls._get_setup_method_args(**locals()), **kwargs)

    @classmethod
    def _register_fields(
        cls, adata: AnnData, setup_method_args: dict, check_counts: bool = True, **kwargs
    ) -> None:
        """:meth:`setup_anndata` given its recorded arguments; ``check_counts=False`` where a
        sample of the counts was checked instead (a model loaded without an AnnData)."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        kwargs.pop("layout", None)  # saved as a setup argument by earlier versions
        args = setup_method_args["setup_args"]
        args.pop("layout", None)
        if kwargs.get("source_registry") is not None:
            # a saved model or a query: the genes must be the model's, in its order
            genes = kwargs["source_registry"]["field_registries"][REGISTRY_KEYS.X_KEY]
            genes = np.asarray(genes["state_registry"]["column_names"]).astype(str)
            compare_var_names(genes, np.asarray(adata.var_names))
        check_obs_keys(adata, **{k: v for k, v in args.items() if k != "layer"})
        layout, cats = panel_layout(adata), args["categorical_covariate_keys"]
        if check_counts:
            measured = None if layout is None else layout.measured_anywhere
            check_count_matrix(adata, args["layer"], where="setup_anndata", measured_genes=measured)
        anndata_fields = [
            # `check_count_matrix` accepts ambient-corrected counts with one warning; the
            # sampled integer check of scvi-tools' count field would warn again
            LayerField(REGISTRY_KEYS.X_KEY, args["layer"], is_count_data=False),
            CategoryField(REGISTRY_KEYS.BATCH_KEY, args["batch_key"]),
            CategoryField(REGISTRY_KEYS.LABELS_KEY, args["labels_key"]),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, cats),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, args["continuous_covariate_keys"]),
            PanelField(),  # the gene panels of a prepared query
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        adata_manager.panel_layout = layout  # decoded once per manager (see `panel_layout`)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        train_size: float | None = 0.9,
        early_stopping: bool = False,
        data_loader: Literal["auto", "in_memory", "on_disk", "scvi"] = "auto",
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train the model.

        Parameters
        ----------
        max_epochs
            Passes over the data; :func:`default_max_epochs` (about 1,000 steps: 74 epochs for
            2,000 cells) is chosen for the embedding; for imputation use ``early_stopping``.
        batch_size, train_size
            Mini-batch size (the paper used 400 on atlases; see the large-batch guidance) and
            the fraction of cells trained on (the rest is the validation set).
        early_stopping
            Stop when ``masked_nll_validation`` (NB loss per masked entry at fixed validation
            masks) stops improving.
        data_loader
            ``"in_memory"`` (:class:`scr2mae.data.InMemoryDataModule`), ``"on_disk"``
            (:class:`scr2mae.data.OnDiskDataModule`, for a backed AnnData), ``"scvi"``
            (scvi-tools' loaders) or ``"auto"``.
        plan_kwargs
            Arguments of :class:`~scr2mae.model.R2MAETrainingPlan` (defaults: the paper's Adam,
            :data:`scr2mae.model.PAPER_OPTIMIZER`).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and Lightning
            (``accelerator``, ``devices``, ``precision``, ``datamodule``, …).
        """
        check_int("max_epochs", max_epochs, allow_none=True)
        check_int("batch_size", batch_size, minimum=2)
        if plan_kwargs is not None and not isinstance(plan_kwargs, dict):
            raise TypeError(f"`plan_kwargs` must be a dict, got {type(plan_kwargs).__name__}.")
        plan = dict(plan_kwargs or {})
        if self.is_query_model_:
            plan.setdefault("weight_decay", 0.0)  # decay would move frozen reference weights
        datamodule = kwargs.pop("datamodule", None)
        if datamodule is not None and data_loader != "auto":
            raise ValueError("give either `datamodule` or `data_loader`, not both.")
        made_here = datamodule is None
        if made_here:
            manager = None if self.adata is None else self.adata_manager
            datamodule = training_datamodule(manager, data_loader, batch_size, train_size, kwargs)
        n_obs = getattr(datamodule, "n_obs", None) or getattr(self.adata, "n_obs", None)
        if max_epochs is None and n_obs is None:
            raise ValueError("`max_epochs` must be given when training from a data module.")
        max_epochs = default_max_epochs(n_obs) if max_epochs is None else max_epochs
        kwargs.update(
            {"train_size": train_size} if datamodule is None else {"datamodule": datamodule}
        )
        kwargs.setdefault("early_stopping_monitor", VALIDATION_METRIC)
        out = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan,
            **kwargs,
        )
        if made_here and hasattr(datamodule, "tensors"):
            datamodule.tensors = None  # the trainer keeps the data module; free its tensors
        return out

    def _make_data_loader(
        self, adata, indices=None, batch_size=None, shuffle=False, data_loader_class=None, **kw
    ):
        """The fast unshuffled iterator (:func:`scr2mae.data.inference_batches`), for data in
        memory or on disk; scvi-tools' loader for anything else."""
        from ..data import inference_batches

        manager = self.get_anndata_manager(adata)
        if shuffle or data_loader_class is not None or kw or manager is None:
            if manager is not None and panel_layout(manager) is not None:
                raise ValueError(
                    "this AnnData has genes some cells did not measure (panels of a prepared "
                    "query), which scvi-tools' data loader cannot carry; call without "
                    "`shuffle`, `data_loader_class` or data-loader arguments."
                )
            return super()._make_data_loader(
                adata, indices, batch_size, shuffle, data_loader_class, **kw
            )
        return inference_batches(manager, indices, batch_size, device=self.device)

    # ------------------------------------------------------------------ outputs
    def get_normalized_expression(
        self, adata=None, indices=None, transform_batch=None, gene_list=None, *args, **kwargs
    ):
        """:meth:`scvi.model.base.RNASeqMixin.get_normalized_expression` with scVI's arguments;
        genes a query did not measure are imputed, ``library_size="latent"`` uses each cell's
        full (estimated) library, and a ``gene_list`` name the model lacks is an error."""
        if gene_list is not None:
            genes = set(np.asarray(self.get_var_names()).astype(str))
            unknown = [g for g in np.atleast_1d(gene_list) if g not in genes]
            if unknown:
                raise ValueError(f"`gene_list`: {unknown[:3]} are not genes of the model.")
        return super().get_normalized_expression(
            adata, indices, transform_batch, gene_list, *args, **kwargs
        )

    def get_reconstruction_error(self, *args, **kwargs) -> dict[str, float]:
        """:meth:`scvi.model.base.VAEMixin.get_reconstruction_error` at the validation masks
        (:meth:`scr2mae.masking.Masker.validation`): ``reconstruction_loss`` is the NB NLL per
        masked, measured entry, averaged over cells (lower is better)."""
        return super().get_reconstruction_error(
            *args, inference_kwargs={"masking": "validation"}, **kwargs
        )

    def get_elbo(self, *args, **kwargs) -> float:
        """:meth:`scvi.model.base.VAEMixin.get_elbo` at the validation masks (see above)."""
        return super().get_elbo(*args, inference_kwargs={"masking": "validation"}, **kwargs)

    @torch.inference_mode()
    def get_reconstruction_score(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        mask_ratio: float | Sequence[float] = RECONSTRUCTION_RATIOS,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> float | pd.Series:
        """Masked-gene reconstruction score of the paper's Tables 7–8
        (:func:`scr2mae.evaluation.masked_reconstruction_score`): the mean over cells of the
        Pearson correlation of predicted and observed log-normalised expression over
        ``round(mask_ratio × n_genes)`` seeded hidden genes (never unmeasured ones). A float for
        one ratio, else a Series indexed by ratio."""
        from scvi import settings

        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        counts, layout = manager.get_from_registry(REGISTRY_KEYS.X_KEY), panel_layout(manager)
        codes = None if layout is None else layout.codes
        if indices is not None:
            rows = np.asarray(indices)
            counts, codes = counts[rows], None if codes is None else codes[rows]
        panels = None if layout is None else (codes, layout.masks)
        return masked_reconstruction_score(
            counts,
            r2mae_predictor(self, adata, indices),
            mask_ratio,
            seed=seed,
            batch_size=settings.batch_size if batch_size is None else batch_size,
            panels=panels,
        )
