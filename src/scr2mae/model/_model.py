"""``R2MAEModel``: an scvi-tools model for masked autoencoding of single-cell counts."""

from __future__ import annotations

import logging
import math
import os
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
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import TrainingPlan

from ..masking import (
    CURRICULUM_STRATEGIES,
    RatioSchedule,
    exact_count_mask,
    get_curriculum,
    get_masking,
)
from ..masking._curriculum import _normalise_strategy
from ._module import R2MAEModule
from ._validation import check_count_matrix, check_obs_keys

logger = logging.getLogger(__name__)

__all__ = ["R2MAEModel"]

DEFAULT_RECONSTRUCTION_RATIOS = (0.1, 0.2, 0.3, 0.5, 0.7)


def _pearson_rows(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row restricted to masked entries (NaN if undefined)."""
    m = mask.to(pred.dtype)
    n = m.sum(dim=1)
    mean_p = (pred * m).sum(1) / n.clamp_min(1)
    mean_t = (true * m).sum(1) / n.clamp_min(1)
    dp = (pred - mean_p[:, None]) * m
    dt = (true - mean_t[:, None]) * m
    cov = (dp * dt).sum(1)
    denom = torch.sqrt((dp * dp).sum(1) * (dt * dt).sum(1))
    r = cov / denom
    return torch.where((denom > 0) & (n >= 2), r, torch.full_like(r, float("nan")))


def _curriculum_name(strategy) -> str | None:
    """Canonical curriculum strategy name, or ``None`` for plain masking schedules."""
    if not isinstance(strategy, str):
        return None
    key = _normalise_strategy(strategy)
    return key if key in CURRICULUM_STRATEGIES else None


class R2MAETrainingPlan(TrainingPlan):
    """scvi-tools training plan that keeps the curriculum generator out of weight decay.

    The curriculum's warm-up sets the generator's gradient coefficient to zero; with no weight
    decay on its parameter group, Adam then leaves the generator exactly unchanged, without any
    host-side check of the step.
    """

    def _optimizer_creator_fn(self, optimizer_cls):
        def create(params):
            params = list(params)
            curriculum = getattr(self.module, "curriculum", None)
            kwargs = {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}
            if curriculum is None:
                return optimizer_cls(params, **kwargs)
            generator_ids = {id(p) for p in curriculum.generator_parameters()}
            rest = [p for p in params if id(p) not in generator_ids]
            return optimizer_cls([{"params": rest}, curriculum.generator_param_group()], **kwargs)

        return create


class R2MAEModel(UnsupervisedTrainingMixin, BaseModelClass):
    """Masked autoencoder for single-cell counts trained with randomly random masking (R2MAE).

    The architecture follows appendix C.8 of the R2MAE paper: an MLP encoder reads ``log1p`` of
    the masked counts and the batch covariate, an MLP decoder returns negative-binomial
    parameters (softmax over genes × observed library size, one dispersion per gene), and the
    loss is the NB negative log-likelihood of the masked genes only. By default the masking
    ratio of every mini-batch is drawn uniformly from ``mask_range=(0.1, 0.5)``.

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
        Hidden layers of the encoder (the encoder has ``n_layers + 1`` linear layers; 2 gives
        the paper's 3-layer encoder).
    n_layers_decoder
        Hidden layers of the decoder (1 gives the paper's 2-layer decoder).
    dropout_rate
        Dropout after each hidden layer.
    mask_strategy
        Masking-ratio schedule: a name understood by :func:`scr2mae.masking.get_masking`
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
        **masking_params: Any,
    ):
        for name, value in (
            ("n_hidden", n_hidden),
            ("n_latent", n_latent),
            ("n_layers", n_layers),
            ("n_layers_decoder", n_layers_decoder),
        ):
            minimum = 0 if name.startswith("n_layers") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"`dropout_rate` must lie in [0, 1), got {dropout_rate!r}.")
        if input_transform not in ("log1p", "log1p_cp10k"):
            raise ValueError(
                f"`input_transform` must be 'log1p' or 'log1p_cp10k', got {input_transform!r}."
            )
        if mask_mode not in ("columns", "exact", "bernoulli"):
            raise ValueError(
                f"`mask_mode` must be 'columns', 'exact' or 'bernoulli', got {mask_mode!r}."
            )
        curriculum_name = _curriculum_name(mask_strategy)
        curriculum = None
        if curriculum_name is not None:
            curriculum = (curriculum_name, dict(masking_params))
            schedule = get_curriculum(curriculum_name, n_features=2, **masking_params).ratios
        else:
            schedule = get_masking(mask_strategy, **masking_params)
        super().__init__(adata, registry)

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
        }
        self._model_summary_string = (
            f"R2MAEModel with n_hidden: {n_hidden}, n_latent: {n_latent}, n_layers: {n_layers}, "
            f"n_layers_decoder: {n_layers_decoder}, dropout_rate: {dropout_rate}, "
            f"masking: {curriculum_name or schedule!r} ({mask_mode})."
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
            cells or genes, or an empty matrix.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
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
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Check a new AnnData (genes, counts) before scvi-tools registers it."""
        if adata is not None and adata is not self.adata:
            if not isinstance(adata, AnnData):
                raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
            self._check_var_names(adata.var_names)
            if self.get_anndata_manager(adata) is None:
                layer = self.registry_["setup_args"].get("layer")
                check_count_matrix(adata, layer, where="R2MAEModel")
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _check_var_names(self, var_names: Sequence[str]) -> None:
        reference = self._reference_var_names()
        if reference is None:
            return
        _compare_var_names(np.asarray(reference), np.asarray(var_names))

    def _reference_var_names(self):
        if self.adata is not None:
            return self.adata.var_names
        return None

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        train_size: float | None = 0.9,
        early_stopping: bool = False,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train the model.

        Parameters
        ----------
        max_epochs
            Number of passes over the data; defaults to scvi-tools' heuristic
            (``min(400, 8e6 / n_cells)``).
        batch_size
            Mini-batch size (the paper used 400 on atlases of millions of cells).
        lr
            Adam learning rate (paper: 1e-3).
        weight_decay
            Adam weight decay (paper: 1e-4).
        train_size
            Fraction of cells used for training; the rest is the validation set.
        early_stopping
            Stop when the validation loss stops improving.
        plan_kwargs
            Extra arguments of :class:`scvi.train.TrainingPlan` (override ``lr`` etc.).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and the Lightning
            trainer (e.g. ``accelerator``, ``datamodule``, ``enable_progress_bar``).
        """
        if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
            raise ValueError(f"`max_epochs` must be a positive integer, got {max_epochs!r}.")
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(f"`batch_size` must be an integer >= 2, got {batch_size!r}.")
        plan = {"lr": lr, "weight_decay": weight_decay, "eps": 1e-8, "optimizer": "Adam"}
        plan.update(plan_kwargs or {})
        datamodule = kwargs.get("datamodule")
        n_obs = (
            datamodule.n_obs
            if datamodule is not None and hasattr(datamodule, "n_obs")
            else (self.adata.n_obs if self.adata is not None else None)
        )
        if max_epochs is None:
            if n_obs is None:
                raise ValueError("`max_epochs` must be given when training from a data module.")
            max_epochs = int(min(400, max(1, round(20000 / n_obs * 400))))
        self._resolve_schedule_length(max_epochs, batch_size, train_size, n_obs)
        return super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_size=train_size,
            early_stopping=early_stopping,
            plan_kwargs=plan,
            **kwargs,
        )

    def _resolve_schedule_length(self, max_epochs, batch_size, train_size, n_obs) -> None:
        schedule = self._module_kwargs["mask_strategy"]
        if not schedule.needs_total_steps:
            return
        if n_obs is None:
            raise ValueError(
                f"{schedule!r} needs `total_steps` when training from a data module without "
                "`n_obs`; build the schedule with total_steps=..."
            )
        n_train = math.ceil((train_size or 0.9) * n_obs)
        total = max_epochs * max(1, math.ceil(n_train / batch_size))
        resolved = schedule.with_total_steps(total)
        self._module_kwargs["mask_strategy"] = resolved
        if self.module is not None:
            self.module.masker.schedule = resolved

    # ------------------------------------------------------------------ outputs
    def _loader(self, adata, indices, batch_size):
        adata = self._validate_anndata(adata)
        return self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        dataloader=None,
    ) -> np.ndarray:
        """Embed cells with the encoder applied to their full (unmasked) counts.

        Parameters
        ----------
        adata
            AnnData with the same genes as the training data; defaults to it.
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

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        library_size: float | Literal["observed"] = 1.0,
        return_numpy: bool = False,
        batch_size: int | None = None,
    ) -> pd.DataFrame | np.ndarray:
        """Expression reconstructed from the full counts, on a common scale.

        Parameters
        ----------
        adata
            AnnData with the same genes as the training data; defaults to it.
        indices
            Cells to use; defaults to all.
        library_size
            Scale of each cell's output: a number (1 gives proportions, 1e4 counts per 10k)
            or ``"observed"`` for the cell's own library size.
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
            or (isinstance(library_size, int | float) and library_size > 0)
        ):
            raise ValueError(
                f"`library_size` must be a positive number or 'observed', got {library_size!r}."
            )
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        self.module.eval()
        out = []
        for tensors in self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size):
            inf, gen = self.module(tensors, inference_kwargs={"masking": False}, compute_loss=False)
            scale = gen["px_scale"]
            scale = scale * (inf["library"] if library_size == "observed" else library_size)
            out.append(scale.cpu())
        values = torch.cat(out).numpy()
        if return_numpy:
            return values
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(values, index=obs_names, columns=adata.var_names)

    @torch.inference_mode()
    def get_reconstruction_score(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        mask_ratio: float | Sequence[float] = DEFAULT_RECONSTRUCTION_RATIOS,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> float | pd.Series:
        """Masked-gene reconstruction score (the metric of the paper's Tables 7–8).

        For each cell, ``round(mask_ratio × n_genes)`` genes are hidden at random (a seeded,
        per-cell draw that depends only on ``seed`` and the data order, so different models see
        the same masks), the model predicts them from the rest, and the Pearson correlation
        between predicted and observed log-normalised expression (``log1p(counts / library ×
        1e4)``) over the hidden genes is computed. The score is the mean over cells; cells
        whose hidden genes are all equal (correlation undefined) are left out.

        Parameters
        ----------
        adata
            AnnData with the same genes; defaults to the training data (pass the held-out
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
        """
        ratios = [mask_ratio] if np.isscalar(mask_ratio) else list(mask_ratio)
        if not ratios:
            raise ValueError("`mask_ratio` must contain at least one ratio.")
        for r in ratios:
            get_masking("fixed", mask_ratio=r)  # validates the ratio
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        self.module.eval()
        scores = {}
        for r in ratios:
            gen = torch.Generator().manual_seed(seed)
            per_cell = []
            for tensors in self._make_data_loader(
                adata=adata, indices=indices, batch_size=batch_size
            ):
                x = tensors[REGISTRY_KEYS.X_KEY].to(torch.float32)
                mask = exact_count_mask(x.shape[0], x.shape[1], float(r), generator=gen)
                _, out = self.module(
                    tensors, inference_kwargs={"mask": mask.to(self.device)}, compute_loss=False
                )
                pred = torch.log1p(out["px_scale"].cpu() * 1e4)
                true = torch.log1p(x / x.sum(1, keepdim=True).clamp_min(1.0) * 1e4)
                per_cell.append(_pearson_rows(pred, true, mask))
            values = torch.cat(per_cell)
            scores[float(r)] = float(torch.nanmean(values))
        if np.isscalar(mask_ratio):
            return scores[float(mask_ratio)]
        return pd.Series(scores, name="reconstruction_pearson").rename_axis("mask_ratio")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a saved model; genes of a given ``adata`` must match the saved ones exactly.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach; it must have the training genes in the same order.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.

        Raises
        ------
        ValueError
            If the genes of ``adata`` differ from the saved model's.
        """
        if adata is not None:
            prefix = kwargs.get("prefix") or ""
            path = os.path.join(dir_path, f"{prefix}model.pt")
            if not os.path.exists(path):
                raise ValueError(f"no saved model at {path!r}.")
            saved = torch.load(path, map_location="cpu", weights_only=False)
            _compare_var_names(np.asarray(saved["var_names"]), np.asarray(adata.var_names))
        return super().load(dir_path, adata=adata, **kwargs)


def _compare_var_names(reference: np.ndarray, given: np.ndarray) -> None:
    if reference.shape == given.shape and np.array_equal(reference, given):
        return
    ref_set, given_set = set(reference.tolist()), set(given.tolist())
    missing = [g for g in reference.tolist() if g not in given_set]
    extra = [g for g in given.tolist() if g not in ref_set]
    if not missing and not extra:
        raise ValueError(
            "the AnnData has the model's genes in a different order; reorder it with "
            "`adata[:, model_var_names]` first."
        )
    raise ValueError(
        f"the AnnData's genes do not match the model's: {len(missing)} missing "
        f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); the model was "
        f"trained on {len(reference)} genes, the AnnData has {len(given)}."
    )
