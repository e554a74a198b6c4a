"""The files :class:`scvi.hub.HubModel` reads beside a saved :class:`~scr2mae.R2MAEModel`."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from importlib.metadata import version

import numpy as np
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._validation import check_int
from ..data._datasets import cells_sample
from ._config import LEGACY_OPTIONS

__all__ = ["HubMixin", "write_hub_files"]

#: file names :class:`scvi.hub.HubModel` looks for in a model folder
METADATA_FILE = "_scvi_required_metadata.json"
MODEL_CARD_FILE = "README.md"


def _card_text(model, reference_cells: int, training_data: str | None, metrics) -> str:
    """The model card's text: training data, genes, model and masking, measured scores."""
    setup, kw, stats = model.registry_["setup_args"], model._module_kwargs, model.summary_stats
    batches = model.registry_["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]
    batches = [str(b) for b in batches["categorical_mapping"]][:20]
    genes = np.asarray(model.get_var_names()).astype(str)
    n_cells = model.adata.n_obs if model.adata is not None else "trained out of core"
    if kw.get("curriculum") is not None:
        masking = f"curriculum `{kw['curriculum'][0]}` {kw['curriculum'][1] or ''}"
    else:
        masking = f"`{model.module.masker.schedule!r}`"
    epochs = f", {len(next(iter(model.history_.values())))} epochs" if model.history_ else ""
    scores, history = {}, model.history_ or {}
    for key in ("train_loss", "validation_loss"):
        if key in history and len(history[key]):
            scores[f"final {key} (masked NB NLL per entry)"] = history[key].iloc[-1, 0]
    validation = model.validation_indices_
    if model.is_trained_ and model.adata is not None and validation is not None:
        if len(validation) >= 2:
            recon = model.get_reconstruction_score(indices=validation, mask_ratio=(0.1, 0.3, 0.5))
            for ratio, value in recon.items():
                scores[f"validation reconstruction Pearson r, {ratio:.0%} genes hidden"] = value
    scores.update(metrics or {})
    rows = "\n".join(f"| {name} | {float(value):.4g} |" for name, value in scores.items())
    return f"""# {type(model).__name__} (scr2mae)

A masked autoencoder for single-cell counts trained with R2MAE (randomly random mask \
autoencoding). Load it with `scvi.hub.HubModel(folder).model` (needs `pip install scr2mae`); \
align your data with `R2MAEModel.prepare_query_anndata(adata, model)`: genes your data did not \
measure are hidden genes for the model and are imputed.

## Training data

- {training_data or "not described"}
- cells: {n_cells}
- counts: `{setup.get("layer") or "adata.X"}`; batch key `{setup.get("batch_key")}` with \
{stats.n_batch} batch(es): {batches}
- reference sample shipped in `adata.h5ad`: {reference_cells} cells

## Genes

{len(genes)} genes; first ones: {", ".join(genes[:20])}. Other identifiers kept for matching: \
{sorted(model.gene_identifiers_) or "none"}. The full list is in `model.pt` \
(`R2MAEModel.prepare_query_anndata` reads it).

## Model and masking

- masking: {masking}, mask mode `{kw["mask_mode"]}`
- loss: masked genes' NB likelihood + {kw.get("visible_weight", 0.0):g} × the visible genes'; \
batch correction `{kw["batch_correction"]}`
- widths: n_hidden {kw["n_hidden"]}, n_latent {kw["n_latent"]}, encoder layers \
{kw["n_layers"]}, decoder layers {kw["n_layers_decoder"]}, dropout {kw["dropout_rate"]}, \
encoder input `{kw["input_transform"]}`
- trained: {bool(model.is_trained_)}{epochs}

## Measured scores

| score | value |
|---|---|
{rows or "| none measured | |"}
"""


def write_hub_files(
    model,
    dir_path: str,
    *,
    reference_cells: int,
    training_data: str | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Write the hub metadata and the model card of a saved model into ``dir_path``."""
    from huggingface_hub import ModelCard, ModelCardData
    from scvi.hub import HubMetadata

    scvi_version, name = model.registry_["scvi_version"], type(model).__name__
    anndata_version = version("anndata")
    metadata = HubMetadata(scvi_version, anndata_version, name, model_parent_module="scr2mae")
    metadata.save(os.path.join(dir_path, METADATA_FILE), overwrite=True)
    tags = ["biology", "genomics", "single-cell", f"model_cls_name:{name}"]
    tags += [f"scvi_version:{scvi_version}", f"anndata_version:{anndata_version}", "scr2mae"]
    card_data = ModelCardData(license="cc-by-4.0", library_name="scvi-tools", tags=tags)
    text = _card_text(model, reference_cells, training_data, metrics)
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{text}").save(
        os.path.join(dir_path, MODEL_CARD_FILE)
    )


class HubMixin:
    """Saving and loading with the files the scvi-tools hub reads."""

    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        reference_cells: int = 1000,
        training_data: str | None = None,
        metrics: dict[str, float] | None = None,
        **kwargs,
    ) -> None:
        """Save the model, ready for the scvi-tools hub: besides ``model.pt``, the hub metadata,
        a model card (with ``training_data`` and ``metrics``) and, unless ``save_anndata``,
        ``adata.h5ad`` with ``reference_cells`` random training cells, so that
        ``scvi.hub.HubModel(folder).model`` loads offline with a labelled reference."""
        check_int("reference_cells", reference_cells, minimum=0)
        super().save(dir_path, prefix, overwrite, save_anndata, **kwargs)
        if prefix:
            return
        n_sample = 0
        if not save_anndata and reference_cells and self.adata is not None:
            layer = self.registry_["setup_args"].get("layer")
            sample = cells_sample(self.adata, layer, reference_cells)
            saving = ("save_kwargs", "legacy_mudata_format", "datamodule")
            write_kwargs = {k: v for k, v in kwargs.items() if k not in saving}
            sample.write_h5ad(os.path.join(dir_path, "adata.h5ad"), **write_kwargs)
            n_sample = sample.n_obs
        write_hub_files(
            self, dir_path, reference_cells=n_sample, training_data=training_data, metrics=metrics
        )

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> HubMixin:
        """Load a saved model (:meth:`scvi.model.base.BaseModelClass.load`). ``adata`` must have
        the model's genes in its order (align it with :meth:`prepare_query_anndata`); ``None``
        loads the saved AnnData, ``False`` none. An option the file predates gets the value it
        was trained with (``LEGACY_OPTIONS`` of :mod:`scr2mae.model._config`)."""
        with warnings.catch_warnings():
            # the genes are compared exactly, with a clear error, in setup_anndata
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            model = super().load(dir_path, adata=adata, **kwargs)
        saved = _saved_init_params(dir_path, kwargs.get("prefix"))
        missing = {k: v for k, v in LEGACY_OPTIONS.items() if k not in saved}
        if missing:
            model._complete_options(missing)
        return model


class _ArgumentsOnly(pickle.Unpickler):
    """Unpickles a saved model's attributes without its tensors (torch objects become None)."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "torch":
            return lambda *args, **kwargs: None
        return super().find_class(module, name)

    def persistent_load(self, pid):
        return None


def _saved_init_params(dir_path: str, prefix: str | None) -> dict:
    """A saved model's arguments, from the pickle of its ``model.pt`` (not its weights)."""
    with zipfile.ZipFile(os.path.join(dir_path, f"{prefix or ''}model.pt")) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        with archive.open(name) as file:
            params = _ArgumentsOnly(file).load()["attr_dict"]["init_params_"]
    return {**params.get("non_kwargs", {}), **params.get("kwargs", {}).get("masking_params", {})}
