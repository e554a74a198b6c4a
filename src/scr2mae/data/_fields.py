"""The package's own categorical ``.obs`` field, and the check of a new AnnData's categories."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import CategoricalObsField

__all__ = ["CategoryField", "check_categories", "unknown_values"]


class CategoryField(CategoricalObsField):
    """scvi-tools' categorical ``.obs`` field, registering an AnnData in time linear in its cells.

    The same state registry, codes column, errors and warnings as
    :class:`scvi.data.fields.CategoricalObsField`, whose registration sorts the column's values
    (a few seconds per million cells for text categories): here pandas' hashing finds the
    categories and a bincount the cells per category, so that embedding a few cells of a large
    new AnnData does not wait for its ``.obs`` to be sorted.
    """

    def register_field(self, adata: AnnData) -> dict:
        if self.is_default:
            self._setup_default_attr(adata)
        self.validate_field(adata)
        mapping = _categorical_codes(adata.obs, self._original_attr_key, self.attr_key, None)
        return self._state(mapping)

    def _state(self, mapping: np.ndarray) -> dict:
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }

    def transfer_field(
        self, state_registry: dict, adata_target: AnnData, extend_categories: bool = False, **kw
    ) -> dict:
        mapping = state_registry[self.CATEGORICAL_MAPPING_KEY].copy()
        if self.is_default and mapping.size == 1:
            # no column named: one category, code 0 for every cell
            self._original_attr_key = self.attr_key
            adata_target.obs[self.attr_key] = np.zeros(adata_target.n_obs, dtype=np.int8)
            if adata_target.n_obs < 3:
                warnings.warn(
                    f"Category 0 in adata.obs['{self.attr_key}'] has fewer than 3 cells. "
                    "Models may not train properly.",
                    UserWarning,
                    stacklevel=3,
                )
            return self._state(mapping)
        if self.is_default:
            self._setup_default_attr(adata_target)
        self.validate_field(adata_target)
        missing = unknown_values(adata_target.obs[self._original_attr_key], mapping)
        missing = pd.Index(missing).sort_values().to_numpy()
        if missing.size and not extend_categories:
            raise ValueError(
                f"Category {missing[0]} not found in source registry. "
                "Cannot transfer setup without `extend_categories = True`."
            )
        dtype = pd.CategoricalDtype(categories=np.concatenate([mapping, missing]), ordered=True)
        new = _categorical_codes(adata_target.obs, self._original_attr_key, self.attr_key, dtype)
        return self._state(new)


def unknown_values(column: pd.Series, known) -> np.ndarray:
    """The values of a column that are not in ``known`` (for a categorical, only categories
    that occur; the cells are read only when the column declares an unknown category)."""
    known = pd.Index(known)
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        unknown = ~categories.isin(known)
        if not unknown.any():
            return np.asarray([], dtype=object)
        codes = column.cat.codes.to_numpy().astype(np.intp)
        used = np.bincount(codes + 1, minlength=1 + categories.size)[1:] > 0
        return categories[unknown & used].to_numpy()
    return pd.Index(pd.unique(column.to_numpy())).difference(known).to_numpy()


def _categorical_codes(obs: pd.DataFrame, key: str, codes_key: str, dtype) -> np.ndarray:
    """Write the codes of ``obs[key]`` as ``dtype`` (or its own categories) to ``obs[codes_key]``;
    return the categories (scvi-tools' ``_make_column_categorical``, without sorting)."""
    column = obs[key].astype("category" if dtype is None else dtype)
    codes = column.cat.codes
    mapping = column.cat.categories.to_numpy(copy=True)
    if (codes.to_numpy() < 0).any():
        received = obs[key].astype("category").cat.categories
        raise ValueError(
            f'Making .obs["{key}"] categorical failed. Expected categories: {mapping}. '
            f"Received categories: {received}. "
        )
    obs[codes_key] = codes
    counts = np.bincount(codes.to_numpy(), minlength=mapping.size)
    present = np.flatnonzero(counts)
    if present.size and counts[present].min() < 3:
        category = present[np.argmin(counts[present])]
        warnings.warn(
            f"Category {category} in adata.obs['{codes_key}'] has fewer than 3 cells. "
            "Models may not train properly.",
            UserWarning,
            stacklevel=3,
        )
    return mapping


def check_categories(registry: dict, adata: AnnData, batch_correction: str) -> bool:
    """Refuse values of ``adata``'s categorical columns that a model's ``registry`` lacks and
    its encoder reads; ``True`` when only unseen batches of a batch-blind encoder remain (they
    are embedded zero-shot, and decoding them needs a ``transform_batch`` of the reference)."""
    setup, fields = registry["setup_args"], registry["field_registries"]
    columns = {setup.get("batch_key"): fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"]}
    mappings = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    for key in setup.get("categorical_covariate_keys") or []:
        columns[key] = {"categorical_mapping": mappings["mappings"][key]}
    unseen_batches = False
    for key, state in columns.items():
        if key is None or key not in adata.obs.columns:
            continue
        known = {str(v) for v in state["categorical_mapping"]}
        candidates = unknown_values(adata.obs[key], state["categorical_mapping"])
        unseen = sorted({str(v) for v in candidates} - known)
        if unseen and batch_correction != "none" and key == setup.get("batch_key"):
            unseen_batches = True
        elif unseen:
            raise ValueError(
                f"`.obs[{key!r}]` has value(s) the model was not trained on: {unseen[:5]}. "
                "The model has no weights for them: add them with "
                "`R2MAEModel.load_query_data(adata, model)` and `train()` on the query, set "
                f"the column to a training value ({sorted(known)[:5]}), or train with a "
                "batch-blind encoder (`batch_correction` other than 'none')."
            )
    return unseen_batches
