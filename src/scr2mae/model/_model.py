"""``R2MAEModel``: an scvi-tools model for masked autoencoding of single-cell counts."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin

from .._validation import check_count_matrix, check_obs_keys
from ..evaluation import RECONSTRUCTION_RATIOS, masked_reconstruction_score, r2mae_predictor
from ..masking import (
    Curriculum,
    RatioSchedule,
    resolve_masking,
)
from . import _hub
from ._batch_correction import check_batch_correction
from ._module import R2MAEModule
from ._query import align_to_genes, gene_identifier_columns
from ._training_plan import R2MAETrainingPlan

logger = logging.getLogger(__name__)

__all__ = ["R2MAEModel"]


class R2MAEModel(ArchesMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Masked autoencoder for single-cell counts trained with randomly random masking (R2MAE).

    The architecture follows appendix C.8 of the R2MAE paper: an MLP encoder reads ``log1p`` of
    the masked counts and the batch covariate, an MLP decoder returns negative-binomial
    parameters (softmax over genes × observed library size, one dispersion per gene), and the
    loss is the NB negative log-likelihood of the masked genes only. By default the masking
    ratio of every mini-batch is drawn uniformly from ``mask_range=(0.1, 0.5)``.

    A trained model serves data measured on other gene panels: a gene that a query did not
    measure is a *hidden* gene, which is what the model was trained to work with
    (:meth:`prepare_query_anndata`, then :meth:`get_latent_representation`,
    :meth:`get_normalized_expression` for imputation, or :meth:`load_query_data` to add new
    batches and fine-tune).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`. ``None`` (with ``registry``) when
        training from a custom data module.
    registry
        Registry of a custom data module (out-of-core training); leave ``None`` otherwise.
    n_hidden
        Width of the hidden layers.
    n_latent
        Dimension of the latent representation.
    n_layers
        Hidden layers of the encoder, at least 1 (the encoder has ``n_layers + 1`` linear
        layers; 2 gives the paper's 3-layer encoder).
    n_layers_decoder
        Hidden layers of the decoder, at least 1 (1 gives the paper's 2-layer decoder).
    dropout_rate
        Dropout after each hidden layer.
    mask_strategy
        Masking-ratio schedule: a name understood by :func:`scr2mae.masking.resolve_masking`
        (``"r2mae"``, ``"fixed"``, ``"dynamic"``, ``"mdlm"``, ``"r2mae_dynamic"``) or a
        :class:`~scr2mae.masking.RatioSchedule`. Step-dependent schedules without
        ``total_steps`` decay over the whole training run. The curriculum strategies of
        appendix A.3 (``"cl"``, ``"cl_k0"``, ``"r2mae_cl"``, ``"r2mae_cl_k0"``) add learned
        Sinkhorn loss weights per masking ratio; their parameters are those of
        :func:`scr2mae.masking.get_curriculum` (paper defaults: warm-up 5000 steps, gradient
        multiplier +1 → -1 from step 30000 to 120000, ten ratios over ``mask_range=(0.1, 0.5)``,
        ``mask_ratio=0.25`` for CL). The weights only enter the training loss.
    mask_mode
        ``"columns"`` masks one random gene set per mini-batch (the paper's scheme);
        ``"exact"`` and ``"bernoulli"`` mask per cell.
    input_transform
        Encoder input: ``"log1p"`` of the masked counts (the paper's choice) or
        ``"log1p_cp10k"``, which first scales each cell's visible counts to 10^4.
    batch_correction
        How the latent code is freed of the batch (``batch_key`` of :meth:`setup_anndata`):

        * ``"none"`` (default, the paper's setting): encoder and decoder both read the batch;
          the code keeps what linear probes across donors use, batch information included;
        * ``"decoder_only"``: the encoder is blind to the batch, only the decoder reads it
          (scVI's arrangement);
        * ``"adversarial"``: blind encoder plus a batch classifier on the latent code trained
          through a gradient-reversal layer (:func:`scr2mae.masking.multiply_gradient`); the
          encoder learns to make the batch unpredictable;
        * ``"mmd"``: blind encoder plus a Gaussian-kernel maximum mean discrepancy between
          each batch and the rest of the mini-batch in the latent space;
        * ``"variational"``: blind encoder with a Gaussian posterior; training decodes a
          sample and adds its KL divergence from N(0, I) per cell (scVI's bottleneck, kept
          on the masked genes); embeddings are the posterior mean.

        The term is added to the masked NB loss, which stays the reconstruction loss
        (computed on masked, measured genes only); the term is logged as
        ``batch_correction_loss``. Every option but ``"none"`` needs at least two batches.
        See the integration benchmark in the documentation for measured scIB scores.
    batch_correction_weight
        Weight of the term of ``"adversarial"`` (the strength of the reversed gradient),
        ``"mmd"`` and ``"variational"`` (the KL weight); ``None`` gives 0.1 for
        ``"adversarial"``, 0.03 for ``"mmd"`` (larger weights, 0.3 and up, collapse the
        cell-type structure of the code) and 1 for ``"variational"`` (the ELBO).
    **masking_params
        Parameters of the named strategy, e.g. ``mask_range=(0.1, 0.5)`` for ``"r2mae"`` or
        ``mask_ratio=0.25`` for ``"fixed"``.

    Examples
    --------
    >>> import scr2mae
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
            "none", "decoder_only", "adversarial", "mmd", "variational"
        ] = "none",
        batch_correction_weight: float | None = None,
        **masking_params: Any,
    ):
        # the layer sizes, dropout, input transform and mask mode are checked by the module
        # (and the masker), where they are used
        batch_correction, resolved_weight = check_batch_correction(
            batch_correction, batch_correction_weight
        )
        super().__init__(adata, registry)
        n_batch = self.summary_stats.get("n_batch", 0)
        if batch_correction != "none" and n_batch < 2:
            raise ValueError(
                f"`batch_correction={batch_correction!r}` needs at least 2 batches; the data "
                f"have {n_batch}. Pass `batch_key` to `setup_anndata`, or use 'none'."
            )
        # one resolver for schedules and curricula; a curriculum is rebuilt by the module, so
        # the module keeps only its name and parameters
        masking = resolve_masking(
            mask_strategy, n_features=self.summary_stats.n_vars, **masking_params
        )
        curriculum = None
        schedule = masking
        if isinstance(masking, Curriculum):
            curriculum = (mask_strategy, dict(masking_params))
            schedule = masking.ratios

        self._module_kwargs = {
            "n_hidden": n_hidden,
            "n_latent": n_latent,
            "n_layers": n_layers,
            "n_layers_decoder": n_layers_decoder,
            "dropout_rate": dropout_rate,
            "mask_strategy": schedule,
            "mask_mode": mask_mode,
            "curriculum": curriculum,
            "input_transform": input_transform,
            "batch_correction": batch_correction,
            "batch_correction_weight": resolved_weight,
        }
        self._model_summary_string = (
            f"R2MAEModel with n_hidden: {n_hidden}, n_latent: {n_latent}, n_layers: {n_layers}, "
            f"n_layers_decoder: {n_layers_decoder}, dropout_rate: {dropout_rate}, "
            f"masking: {mask_strategy if curriculum else schedule!r} ({mask_mode}), "
            f"batch_correction: {batch_correction}"
            + (f" (weight {resolved_weight:g})." if resolved_weight else ".")
        )
        if self._module_init_on_train:
            self.module = None
        else:
            cat_registry = self.registry["field_registries"].get(REGISTRY_KEYS.CAT_COVS_KEY, {})
            n_cats_per_cov = cat_registry.get("state_registry", {}).get("n_cats_per_key")
            self.module = self._module_cls(
                n_input=self.summary_stats.n_vars,
                n_batch=self.summary_stats.n_batch,
                n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
                n_cats_per_cov=tuple(n_cats_per_cov) if n_cats_per_cov else None,
                **self._module_kwargs,
            )
        # other identifiers of the training genes (e.g. Ensembl IDs beside symbols), so that a
        # query can be matched on them (`prepare_query_anndata(gene_key=...)`)
        self.gene_identifiers_ = gene_identifier_columns(adata.var) if adata is not None else {}
        self.is_query_model_ = False
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
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
        """Register an AnnData with raw counts for :class:`R2MAEModel`.

        The counts and the named ``.obs`` columns are checked first; on failure nothing is
        written to ``adata``. On success scvi-tools' registry entries are added to ``adata``
        (as for every scvi-tools model); the data themselves are not changed.

        Parameters
        ----------
        adata
            AnnData with raw (integer, non-negative) counts.
        layer
            Layer holding the counts; ``None`` uses ``adata.X``.
        batch_key
            ``.obs`` column with the batch (e.g. donor or dataset), fed to encoder and decoder.
        labels_key
            ``.obs`` column with labels; registered for convenience, not used in training.
        categorical_covariate_keys
            Extra categorical ``.obs`` columns fed as one-hot covariates.
        continuous_covariate_keys
            Extra numeric ``.obs`` columns fed as covariates.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        ValueError
            For a missing layer or column, NaN/inf, negative or non-integer counts, empty
            cells, or an empty matrix. Genes without counts are accepted (they are measured
            zeros; a warning says how many). NaN entries are accepted only in an AnnData made by
            :meth:`prepare_query_anndata`, where they mark unmeasured genes.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        if kwargs.get("source_registry") is not None:
            # loading a saved model or a query: the genes must be the model's, in its order
            _compare_var_names(
                _registry_var_names(kwargs["source_registry"]), np.asarray(adata.var_names)
            )
        check_obs_keys(
            adata,
            batch_key=batch_key,
            labels_key=labels_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
        )
        check_count_matrix(adata, layer, where="setup_anndata")
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            _CountsField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Check a new AnnData (genes, counts, batches) before scvi-tools registers it."""
        if adata is not None and adata is not self.adata:
            if not isinstance(adata, AnnData):
                raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
            _compare_var_names(_registry_var_names(self.registry_), np.asarray(adata.var_names))
            if self.get_anndata_manager(adata) is None:
                layer = self.registry_["setup_args"].get("layer")
                check_count_matrix(adata, layer, where="R2MAEModel")
                self._check_categories(adata)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _check_categories(self, adata: AnnData) -> None:
        """Unseen values of the batch or a categorical covariate: a clear error, early."""
        fields = self.registry_["field_registries"]
        setup = self.registry_["setup_args"]
        columns = [(setup.get("batch_key"), fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"])]
        cat_state = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
        for key in setup.get("categorical_covariate_keys") or []:
            columns.append((key, {"categorical_mapping": cat_state["mappings"][key]}))
        for key, state in columns:
            if key is None or key not in adata.obs.columns:
                continue
            known = {str(v) for v in state["categorical_mapping"]}
            unseen = sorted({str(v) for v in adata.obs[key].unique()} - known)
            if unseen:
                raise ValueError(
                    f"`.obs[{key!r}]` has value(s) the model was not trained on: {unseen[:5]}. "
                    "The model has no weights for them. Add them with "
                    "`R2MAEModel.load_query_data(adata, model)` (new batch weights, reference "
                    "weights frozen), then `train()` on the query; or set the column to a "
                    f"training value ({sorted(known)[:5]}) to borrow that batch's encoding."
                )

    # ------------------------------------------------------------------ query data
    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference: str | os.PathLike | R2MAEModel,
        gene_key: str | None = None,
        min_gene_overlap: float | int = 0.25,
        layer: str | Literal["auto"] | None = "auto",
        nan_as_unmeasured: bool = False,
    ) -> AnnData:
        """Align a query to the model's genes; genes the query lacks become *unmeasured*.

        Returns a new AnnData whose genes are the model's, in the model's order:

        * query genes the model does not know are dropped (the number is logged);
        * model genes the query did not measure are stored as NaN in the counts, per cell, and
          the model treats them exactly as masked genes in training: hidden from the encoder,
          never in a loss or score, predicted by :meth:`get_normalized_expression`;
        * measured genes keep their counts; genes measured without any counts are ordinary
          zeros.

        ``.obs`` and ``.obsm`` are copied, ``.obs["scr2mae_n_measured_genes"]`` gives the number
        of model genes measured in each cell, ``.var["measured_in_query"]`` flags the genes the
        query has, and ``.uns["scr2mae_query"]`` summarises the alignment. The counts go to the
        layer the model was set up with (``.X`` if none). The query itself is not modified.

        A query made of several panels works: prepare each panel and concatenate the results
        (``anndata.concat``), or concatenate the raw panels with NaN for genes a panel lacks
        (``anndata.concat(..., join="outer", fill_value=np.nan)``) and pass
        ``nan_as_unmeasured=True``.

        Parameters
        ----------
        adata
            Query AnnData with raw counts.
        reference
            A trained :class:`R2MAEModel` or the folder it was saved to.
        gene_key
            ``.var`` column of the query to match on (e.g. Ensembl IDs); ``None`` matches
            ``var_names``. If the model's training data had a ``.var`` column of that name (the
            model keeps every unique text column of its training ``.var``), the values are
            matched against it, else against the model's gene names.
        min_gene_overlap
            Least overlap with the model's genes: a fraction of the model's genes (float) or a
            number of genes (int). The model was trained with up to ``p_max`` of its genes hidden
            (50 % by default); it still works beyond that, less well.
        layer
            Layer of the query with the counts: ``"auto"`` takes the layer the model was set up
            with if the query has it, else ``.X``; ``None`` is ``.X``.
        nan_as_unmeasured
            Read NaN entries of the query's counts as "not measured in this cell" instead of
            refusing them.

        Returns
        -------
        The aligned AnnData, ready for :meth:`get_latent_representation` and the other methods
        (or :meth:`load_query_data`).

        Raises
        ------
        ValueError
            For too little overlap (with the numbers and examples), duplicated gene identifiers,
            an unknown ``gene_key`` or layer, or counts that are not raw counts.
        """
        model = cls._as_model(reference)
        model_layer = model.registry_["setup_args"].get("layer")
        if layer == "auto":
            layer = model_layer if model_layer in adata.layers else None
        if layer is not None and layer not in adata.layers:
            raise ValueError(
                f"layer {layer!r} is not in the query's `.layers` "
                f"(layers: {sorted(adata.layers.keys())})."
            )
        return align_to_genes(
            adata,
            _registry_var_names(model.registry_),
            model_identifiers=model.gene_identifiers_,
            layer=layer,
            out_layer=model_layer,
            gene_key=gene_key,
            min_gene_overlap=min_gene_overlap,
            nan_as_unmeasured=nan_as_unmeasured,
        )

    @classmethod
    def _as_model(cls, reference) -> R2MAEModel:
        if isinstance(reference, cls):
            return reference
        if isinstance(reference, str | os.PathLike):
            return cls.load(os.fspath(reference), adata=False)
        raise TypeError(
            f"`reference` must be an {cls.__name__} or a saved-model folder, "
            f"got {type(reference).__name__}."
        )

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: str | os.PathLike | R2MAEModel,
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_batchnorm_encoder: bool = True,
        freeze_batchnorm_decoder: bool = True,
        accelerator: str = "auto",
        device: int | str = "auto",
        **kwargs,
    ) -> R2MAEModel:
        """A model for a query with new batches, initialised from a reference (scArches).

        Follows :meth:`scvi.model.base.ArchesMixin.load_query_data`: the query's batch values
        that the reference did not see get new covariate weights in the first layers of the
        encoder and decoder; every reference weight stays frozen unless ``unfrozen=True``, and
        :meth:`train` then fits the new weights on the query with the masked loss (unmeasured
        genes stay hidden and out of the loss). Training a query model uses no weight decay
        unless ``plan_kwargs`` set it, so frozen weights stay exactly as in the reference.

        Parameters
        ----------
        adata
            Query aligned with :meth:`prepare_query_anndata` (the model's genes, in order).
        reference_model
            The trained reference model, or the folder it was saved to.
        unfrozen
            Train every weight (full fine-tuning) instead of the new batch weights only.
        freeze_dropout
            Turn dropout off while training the query.
        freeze_expression
            Keep the first encoder layer's gene weights frozen (only its batch columns learn).
        freeze_batchnorm_encoder, freeze_batchnorm_decoder
            Keep the batch-norm weights and running statistics of the encoder / decoder frozen.
            (scvi-tools trains the decoder's by default; here the reference stays exact.)
        accelerator, device
            Where to put the model.
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        Returns
        -------
        A new, untrained :class:`R2MAEModel` for the query.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        if not isinstance(reference_model, cls | str | os.PathLike):
            raise TypeError(
                f"`reference_model` must be an {cls.__name__} or a saved-model folder, "
                f"got {type(reference_model).__name__}."
            )
        reference = cls._as_model(reference_model)  # read a saved folder once
        reference_state = reference.module.state_dict()
        with warnings.catch_warnings():
            # var names were compared exactly by setup_anndata (source_registry) already
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            model = super().load_query_data(
                adata=adata,
                reference_model=reference,
                accelerator=accelerator,
                device=device,
                unfrozen=unfrozen,
                freeze_dropout=freeze_dropout,
                freeze_expression=freeze_expression,
                freeze_batchnorm_encoder=freeze_batchnorm_encoder,
                freeze_batchnorm_decoder=freeze_batchnorm_decoder,
                **kwargs,
            )
        if not unfrozen:
            _freeze_reference_columns(model.module, reference_state)
        model.is_query_model_ = not unfrozen
        return model

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

        Optimiser settings go through ``plan_kwargs``, as in scvi-tools. The defaults are the
        paper's Adam values, :data:`scr2mae.model.PAPER_OPTIMIZER` (``lr=1e-3``,
        ``weight_decay=1e-4``, ``eps=1e-8``); e.g. ``plan_kwargs={"lr": 2e-3}``. A query model
        of :meth:`load_query_data` trains without weight decay unless ``plan_kwargs`` set it,
        so that frozen reference weights stay exactly as they were.

        Parameters
        ----------
        max_epochs
            Number of passes over the data; defaults to
            ``min(400, round(20000 / n_cells × 400))``.
        batch_size
            Mini-batch size (the paper used 400 on atlases of millions of cells; see the
            learning-rate guidance for large batches in the documentation's benchmarks).
        train_size
            Fraction of cells used for training; the rest is the validation set.
        early_stopping
            Stop when the validation loss stops improving.
        data_loader
            How mini-batches are made. ``"in_memory"``: the counts become torch tensors once
            and rows are gathered per step (:class:`scr2mae.data.InMemoryDataModule`, the
            default for an AnnData in memory). ``"on_disk"``: contiguous chunks of a backed
            AnnData are read and shuffled within a buffer
            (:class:`scr2mae.data.OnDiskDataModule`, the default for a backed AnnData).
            ``"scvi"``: scvi-tools' ``DataSplitter`` and ``AnnDataLoader``. ``"auto"`` picks
            by the AnnData, or uses ``datamodule`` when one is given.
        plan_kwargs
            Arguments of :class:`~scr2mae.model.R2MAETrainingPlan` (those of
            :class:`scvi.train.TrainingPlan`: ``lr``, ``weight_decay``, ``eps``,
            ``optimizer``, ``reduce_lr_on_plateau``, …).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and the Lightning
            trainer (e.g. ``accelerator``, ``devices``, ``strategy="ddp"``, ``precision``,
            ``datamodule``, ``log_every_n_steps``, ``enable_progress_bar``).
        """
        if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
            raise ValueError(f"`max_epochs` must be a positive integer, got {max_epochs!r}.")
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(f"`batch_size` must be an integer >= 2, got {batch_size!r}.")
        if data_loader not in ("auto", "in_memory", "on_disk", "scvi"):
            raise ValueError(
                "`data_loader` must be 'auto', 'in_memory', 'on_disk' or 'scvi', "
                f"got {data_loader!r}."
            )
        if plan_kwargs is not None and not isinstance(plan_kwargs, dict):
            raise TypeError(f"`plan_kwargs` must be a dict, got {type(plan_kwargs).__name__}.")
        plan = dict(plan_kwargs or {})
        if getattr(self, "is_query_model_", False):
            # weight decay would move the frozen reference weights (load_query_data)
            plan.setdefault("weight_decay", 0.0)
        datamodule = kwargs.pop("datamodule", None)
        if datamodule is not None and data_loader != "auto":
            raise ValueError("give either `datamodule` or `data_loader`, not both.")
        made_here = datamodule is None and data_loader != "scvi"
        if made_here:
            datamodule = self._make_datamodule(data_loader, batch_size, train_size, kwargs)
        n_obs = (
            datamodule.n_obs
            if datamodule is not None and hasattr(datamodule, "n_obs")
            else (self.adata.n_obs if self.adata is not None else None)
        )
        if max_epochs is None:
            if n_obs is None:
                raise ValueError("`max_epochs` must be given when training from a data module.")
            max_epochs = int(min(400, max(1, round(20000 / n_obs * 400))))
        if datamodule is not None:
            kwargs["datamodule"] = datamodule
        else:
            kwargs["train_size"] = train_size
        out = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan,
            **kwargs,
        )
        # the schedule resolved by the training plan (its length) is the model's from now on
        self._module_kwargs["mask_strategy"] = self.module.masker.schedule
        if made_here and hasattr(datamodule, "tensors"):
            datamodule.tensors = None  # the trainer keeps the data module; free its tensors
        return out

    def _make_datamodule(self, data_loader, batch_size, train_size, kwargs):
        """The in-memory or on-disk data module for ``train()`` (``None``: scvi-tools')."""
        if self.adata is None:
            raise ValueError(
                "a model without an AnnData trains from a `datamodule` (e.g. "
                "`scr2mae.data.census_datamodule`)."
            )
        from ..data._inmemory import InMemoryDataModule
        from ..data._ondisk import OnDiskDataModule, is_on_disk

        split = {
            "train_size": train_size,
            "validation_size": kwargs.pop("validation_size", None),
            "shuffle_set_split": kwargs.pop("shuffle_set_split", True),
        }
        for unused in ("load_sparse_tensor", "datasplitter_kwargs"):
            if kwargs.get(unused):
                raise ValueError(f"`{unused}` is an option of data_loader='scvi' only.")
            kwargs.pop(unused, None)
        backed = is_on_disk(self.adata)
        if data_loader == "auto":
            data_loader = "on_disk" if backed else "in_memory"
        if data_loader == "in_memory":
            if backed:
                raise ValueError(
                    "data_loader='in_memory' needs the AnnData in memory; this one is backed "
                    "(use 'on_disk', or `adata.to_memory()`)."
                )
            return InMemoryDataModule(self.adata_manager, batch_size=batch_size, **split)
        return OnDiskDataModule(self.adata_manager, batch_size=batch_size, **split)

    # ------------------------------------------------------------------ outputs
    def _loader(self, adata, indices, batch_size):
        """Unshuffled mini-batches of ``adata`` (validated) on the model's device."""
        adata = self._validate_anndata(adata)
        return self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)

    def _make_data_loader(
        self, adata, indices=None, batch_size=None, shuffle=False, data_loader_class=None, **kw
    ):
        """The fast unshuffled iterator for in-memory data; scvi-tools' loader otherwise."""
        from ..data._inmemory import inference_batches
        from ..data._ondisk import is_on_disk

        manager = self.get_anndata_manager(adata)
        if shuffle or data_loader_class is not None or kw or manager is None or is_on_disk(adata):
            return super()._make_data_loader(
                adata, indices, batch_size, shuffle, data_loader_class, **kw
            )
        return inference_batches(manager, indices, batch_size, device=self.device)

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        dataloader=None,
    ) -> np.ndarray:
        """Embed cells with the encoder applied to their full (unmasked) counts.

        Unmeasured genes of a query (see :meth:`prepare_query_anndata`) reach the encoder as
        masked genes do in training; nothing needs to be trained on the query.

        Parameters
        ----------
        adata
            AnnData with the model's genes: the training data (default), other cells of the
            same genes, or a query aligned with :meth:`prepare_query_anndata`.
        indices
            Cells to embed; defaults to all.
        batch_size
            Cells per forward pass.
        dataloader
            Iterable of tensor dictionaries (``"X"``, ``"batch"``, …) to embed instead of
            ``adata``, e.g. the batches of an out-of-core data module
            (:func:`scr2mae.data.datamodule_batches`); ``adata``/``indices`` must then be
            ``None``.

        Returns
        -------
        Array ``(n_cells, n_latent)``.

        Raises
        ------
        ValueError
            If the genes are not the model's (align them with :meth:`prepare_query_anndata`),
            or a batch value was not seen in training (see :meth:`load_query_data`).
        """
        if dataloader is not None and (adata is not None or indices is not None):
            raise ValueError("give either `dataloader` or `adata`/`indices`, not both.")
        self._check_if_trained(warn=False)
        self.module.eval()
        out = []
        batches = self._loader(adata, indices, batch_size) if dataloader is None else dataloader
        for tensors in batches:
            inputs = self.module._get_inference_input(tensors)
            out.append(self.module.inference(**inputs, masking=False)["z"].cpu())
        return torch.cat(out).numpy()

    def _batch_codes(self, transform_batch) -> list[int | None]:
        """Batch codes for ``transform_batch`` (a batch value or a list of them)."""
        if transform_batch is None:
            return [None]
        state = self.registry_["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]
        mapping = [str(v) for v in state["categorical_mapping"]]
        values = (
            [transform_batch]
            if isinstance(transform_batch, str) or np.isscalar(transform_batch)
            else list(transform_batch)
        )
        if not values:
            raise ValueError("`transform_batch` must name at least one batch.")
        unknown = [v for v in values if str(v) not in mapping]
        if unknown:
            raise ValueError(
                f"`transform_batch`: {unknown[:5]} are not batches of the model; "
                f"its batches are {mapping[:10]}."
            )
        return [mapping.index(str(v)) for v in values]

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | Sequence[str | int] | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | Literal["observed"] = 1.0,
        return_numpy: bool = False,
        batch_size: int | None = None,
    ) -> pd.DataFrame | np.ndarray:
        """Expression predicted from each cell's measured counts, for every model gene.

        The encoder reads the full counts (unmeasured genes of a query hidden, as masked genes
        in training) and the decoder predicts every gene, so for a query aligned with
        :meth:`prepare_query_anndata` the genes it did not measure are imputed.

        Parameters
        ----------
        adata
            AnnData with the model's genes; defaults to the training data.
        indices
            Cells to use; defaults to all.
        transform_batch
            Decode as if every cell came from this batch (a batch value of the training data);
            a list averages over those batches. ``None`` uses each cell's own batch.
        gene_list
            Genes to return (model gene names); defaults to all.
        library_size
            Scale of each cell's output: a number (1 gives proportions over all model genes,
            1e4 counts per 10k) or ``"observed"`` for the cell's library size. For a cell with
            unmeasured genes that is the estimated full library (see
            :class:`~scr2mae.R2MAEModule`).
        return_numpy
            Return an array instead of a DataFrame.
        batch_size
            Cells per forward pass.

        Returns
        -------
        ``(n_cells, n_genes)`` DataFrame indexed by cell and gene names, or an array.
        """
        if not (
            library_size == "observed"
            or (
                isinstance(library_size, int | float)
                and not isinstance(library_size, bool)
                and library_size > 0
            )
        ):
            raise ValueError(
                f"`library_size` must be a positive number or 'observed', got {library_size!r}."
            )
        genes = pd.Index(_registry_var_names(self.registry_))
        columns = slice(None)
        if gene_list is not None:
            if isinstance(gene_list, str):
                raise TypeError("`gene_list` must be a list of gene names, not a string.")
            columns = genes.get_indexer(list(gene_list))
            if (columns < 0).any():
                missing = [g for g, c in zip(gene_list, columns, strict=True) if c < 0]
                raise ValueError(
                    f"`gene_list`: {len(missing)} gene(s) are not model genes, e.g. {missing[:3]}."
                )
            genes = genes[columns]
        codes = self._batch_codes(transform_batch)
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        self.module.eval()
        out = []
        for tensors in self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size):
            inf = self.module.inference(**self.module._get_inference_input(tensors), masking=False)
            total = 0.0
            for code in codes:
                gen = self.module.generative(
                    **self.module._get_generative_input(tensors, inf, transform_batch=code)
                )
                scale = gen["px_scale"]
                total = total + scale * (gen["library"] if library_size == "observed" else 1.0)
            values = total / len(codes)
            if library_size != "observed":
                values = values * library_size
            out.append(values[:, columns].cpu())
        values = torch.cat(out).numpy()
        if return_numpy:
            return values
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(values, index=obs_names, columns=genes)

    @torch.inference_mode()
    def get_reconstruction_score(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        mask_ratio: float | Sequence[float] = RECONSTRUCTION_RATIOS,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> float | pd.Series:
        """Masked-gene reconstruction score (the metric of the paper's Tables 7–8).

        For each cell, ``round(mask_ratio × n_genes)`` genes are hidden at random (a seeded,
        per-cell draw that depends only on ``seed`` and the data order, so different models see
        the same masks), the model predicts them from the rest, and the Pearson correlation
        between predicted and observed log-normalised expression (``log1p(counts / library ×
        1e4)``) over the hidden genes is computed. The score is the mean over cells; cells
        whose hidden genes are all equal (correlation undefined) are left out. In a query with
        unmeasured genes, those stay hidden and are never scored; proportions are taken over
        each cell's measured genes.

        Parameters
        ----------
        adata
            AnnData with the model's genes; defaults to the training data (pass the held-out
            cells with ``indices`` to score the validation set).
        indices
            Cells to score.
        mask_ratio
            One ratio, or several (default ``0.1, 0.2, 0.3, 0.5, 0.7``).
        seed
            Seed of the masks.
        batch_size
            Cells per forward pass.

        Returns
        -------
        A float for one ratio, else a Series indexed by ratio.

        Notes
        -----
        This is :func:`scr2mae.evaluation.masked_reconstruction_score` with
        :func:`scr2mae.evaluation.r2mae_predictor`, so other models can be scored on the same
        masks.
        """
        from scvi import settings

        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        counts = self.get_anndata_manager(adata, required=True).get_from_registry(
            REGISTRY_KEYS.X_KEY
        )
        if indices is not None:
            counts = counts[np.asarray(indices)]
        return masked_reconstruction_score(
            counts,
            r2mae_predictor(self, adata, indices),
            mask_ratio,
            seed=seed,
            batch_size=settings.batch_size if batch_size is None else batch_size,
        )

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        reference_cells: int = 1000,
        training_data: str | None = None,
        metrics: dict[str, float] | None = None,
        save_kwargs: dict | None = None,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model, ready to share on the scvi-tools hub.

        Besides scvi-tools' ``model.pt``, the folder gets what :class:`scvi.hub.HubModel`
        reads: ``_scvi_required_metadata.json`` (with ``model_parent_module="scr2mae"``) and a
        model card ``README.md`` describing the training data, the genes, the masking and the
        measured scores; and, unless ``save_anndata``, an ``adata.h5ad`` with a random sample
        of ``reference_cells`` training cells (their counts and ``.obs``), which lets
        ``HubModel(folder).model`` load the model offline and serves as a labelled reference
        for label transfer and joint embeddings.

        Parameters
        ----------
        dir_path
            Folder to write.
        prefix
            Prefix of the file names (the hub files are written only without a prefix).
        overwrite
            Overwrite an existing folder.
        save_anndata
            Save the whole training AnnData instead of a sample.
        reference_cells
            Cells in the sample; 0 writes none (then pass ``adata`` to
            :meth:`scvi.hub.HubModel.load_model`).
        training_data
            Text or URL describing the training data, for the model card.
        metrics
            Extra measured scores for the model card (name → value).
        save_kwargs
            Passed to :func:`torch.save`.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.
        """
        if isinstance(reference_cells, bool) or not isinstance(reference_cells, int):
            raise TypeError(f"`reference_cells` must be an integer, got {reference_cells!r}.")
        if reference_cells < 0:
            raise ValueError(f"`reference_cells` must be >= 0, got {reference_cells}.")
        super().save(
            dir_path,
            prefix=prefix,
            overwrite=overwrite,
            save_anndata=save_anndata,
            save_kwargs=save_kwargs,
            **anndata_write_kwargs,
        )
        if prefix:
            return
        sample = None
        if not save_anndata and reference_cells and self.adata is not None:
            sample = _hub.reference_sample(self, reference_cells)
            sample.write_h5ad(os.path.join(dir_path, "adata.h5ad"), **anndata_write_kwargs)
        _hub.write_hub_files(
            self,
            dir_path,
            reference_cells=0 if sample is None else sample.n_obs,
            training_data=training_data,
            metrics=metrics,
        )

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> R2MAEModel:
        """Load a saved model; the genes of a given ``adata`` must be the model's, in order.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach (it must have the training genes in the same order; align a
            query with :meth:`prepare_query_anndata` first). ``None`` loads the AnnData saved
            in the folder (the whole training data or the reference sample); ``False`` loads
            the model without data.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ``backup_url``).

        Raises
        ------
        ValueError
            If the genes of ``adata`` differ from the saved model's (checked on what the base
            class read, before anything is registered).
        """
        with warnings.catch_warnings():
            # the genes are compared exactly, with a clear error, in setup_anndata
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            return super().load(dir_path, adata=adata, **kwargs)


def _freeze_reference_columns(module: torch.nn.Module, reference_state: dict) -> None:
    """Only the columns of *new* categories learn in the first layers (scArches surgery).

    scvi-tools' hooks leave every covariate column trainable, so a query cell of a batch the
    reference already had would move that batch's reference weights; here the reference
    columns are frozen too, and the reference model stays exactly as it was.
    """
    params = dict(module.named_parameters())
    for key, before in reference_state.items():
        param = params.get(key)
        if param is None or param.dim() != 2 or param.shape == before.shape:
            continue
        if not param.requires_grad:  # frozen whole (e.g. the batch_correction adversary)
            continue
        n_reference = before.shape[1]

        def keep_new_columns(grad, n=n_reference):
            grad = grad.clone()
            grad[:, :n] = 0
            return grad

        param.register_hook(keep_new_columns)


class _CountsField(LayerField):
    """Count layer whose values :func:`check_count_matrix` checks (NaN = unmeasured allowed).

    scvi-tools' sampled integer check would warn about the NaN that mark unmeasured genes; the
    full check runs before registration instead.
    """

    def validate_field(self, adata: AnnData) -> None:
        super(LayerField, self).validate_field(adata)


def _registry_var_names(registry: dict) -> np.ndarray:
    """The model's genes, from the registry that scvi-tools saved with it."""
    state = registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return np.asarray(state["column_names"]).astype(str)


def _compare_var_names(reference: np.ndarray, given: np.ndarray) -> None:
    if reference.shape == given.shape and np.array_equal(reference, given.astype(str)):
        return
    ref_set, given_set = set(reference.tolist()), set(given.astype(str).tolist())
    missing = [g for g in reference.tolist() if g not in given_set]
    extra = [g for g in given.astype(str).tolist() if g not in ref_set]
    if not missing and not extra:
        raise ValueError(
            "the AnnData has the model's genes in a different order; align it with "
            "`R2MAEModel.prepare_query_anndata(adata, model)`."
        )
    raise ValueError(
        f"the AnnData's genes do not match the model's: {len(missing)} missing "
        f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); the model was "
        f"trained on {len(reference)} genes, the AnnData has {len(given)}. Align it with "
        "`R2MAEModel.prepare_query_anndata(adata, model)`, which marks the missing genes as "
        "unmeasured."
    )
