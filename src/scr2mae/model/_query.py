"""Aligning a query AnnData to a trained model's genes; unmeasured genes are panel masks."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data.fields import CategoricalObsField, LayerField

from .._validation import N_MEASURED_KEY, check_count_matrix, check_count_sample
from ..data._panels import PANEL_KEY, panel_layout, panel_name
from ._surgery import align_first_layers, category_counts

logger = logging.getLogger(__name__)

__all__ = [
    "CategoryField",
    "CountsField",
    "QueryMixin",
    "align_to_genes",
    "compare_var_names",
    "gene_identifier_columns",
    "raw_counts_properties",
    "registry_var_names",
]

#: ``.uns`` key of the alignment summary written into a prepared query
QUERY_UNS_KEY = "scr2mae_query"
#: stored entries renumbered at a time when a query's genes are put in the model's order
_RENUMBER_SLICE = 1 << 22


def gene_identifier_columns(var: pd.DataFrame, max_columns: int = 8) -> dict[str, list[str]]:
    """Columns of ``var`` that can identify genes: text values, unique, none missing.

    A model keeps them (e.g. Ensembl IDs beside symbols) so that a query can be matched on
    either identifier.
    """
    columns = {}
    for name in var.columns:
        col = var[name]
        if not (
            pd.api.types.is_object_dtype(col)
            or pd.api.types.is_string_dtype(col)
            or isinstance(col.dtype, pd.CategoricalDtype)
        ):
            continue
        values = col.astype(object)
        if values.isna().any() or not values.is_unique:
            continue
        if not all(isinstance(v, str) for v in values):
            continue
        columns[str(name)] = [str(v) for v in values]
        if len(columns) == max_columns:
            break
    return columns


def _query_ids(adata: AnnData, gene_key: str | None) -> pd.Index:
    if gene_key is None:
        return pd.Index(adata.var_names.astype(str))
    if not isinstance(gene_key, str):
        raise TypeError(f"`gene_key` must be a string or None, got {type(gene_key).__name__}.")
    if gene_key not in adata.var.columns:
        raise ValueError(
            f"`gene_key`: column {gene_key!r} is not in the query's `.var` "
            f"(columns: {list(adata.var.columns)[:20]})."
        )
    column = adata.var[gene_key].astype(object)
    return pd.Index(column.where(column.notna(), None).map(lambda v: v if v is None else str(v)))


def _min_overlap(min_gene_overlap: float | int, n_model: int) -> int:
    if isinstance(min_gene_overlap, bool) or not isinstance(min_gene_overlap, int | float):
        raise TypeError(
            f"`min_gene_overlap` must be a fraction or a number of genes, got {min_gene_overlap!r}."
        )
    if isinstance(min_gene_overlap, float):
        if not 0.0 < min_gene_overlap <= 1.0:
            raise ValueError(
                f"`min_gene_overlap` as a fraction must lie in (0, 1], got {min_gene_overlap!r}."
            )
        return max(1, int(np.ceil(min_gene_overlap * n_model - 1e-9)))
    if min_gene_overlap < 1:
        raise ValueError(f"`min_gene_overlap` must be at least 1 gene, got {min_gene_overlap!r}.")
    return int(min_gene_overlap)


def _unique_rows(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the distinct rows of a bit-packed boolean matrix (in order of first
    appearance) and the distinct row of every row."""
    packed = np.ascontiguousarray(packed)
    keys = packed.view(np.dtype((np.void, max(packed.shape[1], 1)))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.ravel()]


def _unique_panels(panels: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Identical panels merged and numbered in order of the cells' first appearance."""
    rows, inverse = _unique_rows(np.packbits(panels, axis=1))
    codes = inverse[codes]
    # only the panels some cell uses (a category column may name panels no cell has left)
    used, first = np.unique(codes, return_index=True)
    order = used[np.argsort(first, kind="stable")]
    rank = np.full(len(rows), -1, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return panels[rows][order], rank[codes]


def _nan_panels(x: sparse.csr_matrix, nan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's pattern of NaN genes as a panel: codes and masks (``True`` = measured).

    Panel 0 measures every gene (cells without NaN); the others are the distinct NaN sets.
    """
    n_obs, n_genes = x.shape
    positions = np.flatnonzero(nan)
    rows = np.searchsorted(x.indptr, positions, side="right") - 1
    affected = np.unique(rows)
    local = np.searchsorted(affected, rows)
    pattern = sparse.csr_matrix(
        (np.ones(positions.size, dtype=bool), (local, x.indices[positions])),
        shape=(affected.size, n_genes),
    )
    packed = np.concatenate(
        [
            np.packbits(pattern[a : a + 10_000].toarray(), axis=1)
            for a in range(0, affected.size, 10_000)
        ]
    )
    first, inverse = _unique_rows(packed)
    codes = np.zeros(n_obs, dtype=np.int64)
    codes[affected] = 1 + inverse
    measured = ~np.unpackbits(packed[first], axis=1, count=n_genes).astype(bool)
    return codes, np.vstack([np.ones((1, n_genes), dtype=bool), measured])


def align_to_genes(
    adata: AnnData,
    model_genes: Sequence[str],
    *,
    model_identifiers: Mapping[str, Sequence[str]] | None = None,
    layer: str | None = None,
    out_layer: str | None = None,
    gene_key: str | None = None,
    min_gene_overlap: float | int = 0.25,
    nan_as_unmeasured: bool = False,
) -> AnnData:
    """A new AnnData with the model's genes in the model's order; unmeasured genes are masks.

    See :meth:`scr2mae.R2MAEModel.prepare_query_anndata`, which calls this with the model's
    genes; the parameters are documented there.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    model_genes = pd.Index([str(g) for g in model_genes])
    identifiers = dict(model_identifiers or {})
    query_ids = _query_ids(adata, gene_key)
    if gene_key is not None and gene_key in identifiers:
        target, target_name = pd.Index(identifiers[gene_key]), f"the model's .var[{gene_key!r}]"
    else:
        target, target_name = model_genes, "the model's gene names"
    present = np.asarray(query_ids.notna())
    ids_present = query_ids[present]
    duplicated = ids_present[ids_present.duplicated()].unique()
    if len(duplicated):
        where = "`.var_names`" if gene_key is None else f"`.var[{gene_key!r}]`"
        raise ValueError(
            f"the query's gene identifiers ({where}) have {len(duplicated)} duplicate(s), e.g. "
            f"{list(duplicated[:3])}; make them unique (e.g. `adata.var_names_make_unique()`, or "
            "sum the duplicated genes) before aligning."
        )
    position = np.full(len(query_ids), -1, dtype=np.int64)
    position[present] = target.get_indexer(ids_present)
    matched = np.flatnonzero(position >= 0)
    n_model = len(model_genes)
    needed = _min_overlap(min_gene_overlap, n_model)
    if matched.size < needed:
        hint = ""
        other = [k for k in identifiers if k != gene_key]
        if other:
            hint = (
                f" The model also knows its genes by `.var` column(s) {other}; if the query "
                "holds such identifiers, pass `gene_key=` naming the query's column."
            )
        raise ValueError(
            f"too little gene overlap: {matched.size} of the query's {len(query_ids)} genes "
            f"match {target_name} ({n_model} genes), fewer than the {needed} required "
            f"(`min_gene_overlap={min_gene_overlap!r}`). Query genes, e.g. "
            f"{list(query_ids[:3])}; model genes, e.g. {list(target[:3])}.{hint}"
        )
    n_dropped = len(query_ids) - matched.size
    if n_dropped:
        logger.info("dropped %d query gene(s) the model does not know", n_dropped)

    counts = adata.X if layer is None else adata.layers[layer]
    # a query prepared before (e.g. for another model) keeps its own unmeasured genes
    source = panel_layout(adata)
    # the query's own counts are checked on the genes that are kept
    kept = counts[:, matched] if matched.size < counts.shape[1] else counts
    # the same layer name as the query's, so that messages name the matrix the user passed
    sub = AnnData(
        X=kept if layer is None else None,
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=pd.Index(target[position[matched]]).astype(str)),
        layers={} if layer is None else {layer: kept},
    )
    check_count_matrix(
        sub,
        layer,
        where="prepare_query_anndata",
        allow_empty=True,
        allow_unmeasured=nan_as_unmeasured,
        measured_genes=None if source is None else source.measured_anywhere[matched],
    )
    # a copy (never the user's arrays): its entries are renumbered in place below
    x = sparse.csr_matrix(kept, dtype=np.float32, copy=kept is counts)
    x.sum_duplicates()
    n_obs = x.shape[0]
    if source is None:
        codes, masks = np.zeros(n_obs, dtype=np.int64), np.ones((1, matched.size), dtype=bool)
    else:
        codes, masks = source.codes.astype(np.int64), source.masks[:, matched]
    nan = np.isnan(x.data)
    if nan.any():
        # cells that share their NaN genes form a panel; the NaN entries are not kept
        nan_codes, nan_masks = _nan_panels(x, nan)
        pairs, codes = np.unique(np.stack([codes, nan_codes], 1), axis=0, return_inverse=True)
        masks = masks[pairs[:, 0]] & nan_masks[pairs[:, 1]]
        codes = codes.ravel()
        x.data[nan] = 0.0
        x.eliminate_zeros()
    model_column = position[matched]
    panels = np.zeros((masks.shape[0], n_model), dtype=bool)
    panels[:, model_column] = masks
    panels, codes = _unique_panels(panels, codes)
    # the model's gene order: only measured entries are stored (no entry per unmeasured gene);
    # the column numbers of `x` (a copy) are renumbered in place, a slice at a time
    lookup = model_column.astype(x.indices.dtype)
    for start in range(0, x.nnz, _RENUMBER_SLICE):
        part = x.indices[start : start + _RENUMBER_SLICE]
        part[:] = lookup[part]
    aligned = sparse.csr_matrix((x.data, x.indices, x.indptr), shape=(n_obs, n_model))
    aligned.sort_indices()
    del x

    cell_totals = np.asarray(aligned.sum(axis=1)).ravel()
    empty = np.flatnonzero(cell_totals == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} query cell(s) have no counts in the genes shared with the model "
            f"(e.g. {list(adata.obs_names[empty[:3]])}); drop them first, e.g. "
            "`query = query[np.asarray(query[:, shared_genes].X.sum(1)).ravel() > 0]`."
        )

    var = pd.DataFrame(index=model_genes)
    for key, values in identifiers.items():
        if key not in var.columns:
            var[key] = list(values)
    var["measured_in_query"] = panels.any(axis=0)
    obs = adata.obs.copy()
    obs[N_MEASURED_KEY] = panels.sum(axis=1).astype(np.int64)[codes]
    obs[PANEL_KEY] = pd.Categorical.from_codes(codes, [panel_name(m, model_genes) for m in panels])
    out = AnnData(
        X=aligned if out_layer is None else None,
        obs=obs,
        var=var,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        layers={} if out_layer is None else {out_layer: aligned},
    )
    summary = {
        "n_model_genes": int(n_model),
        "n_query_genes": len(query_ids),
        "n_matched": int(matched.size),
        "n_dropped": int(n_dropped),
        "n_unmeasured_genes": int((~panels.any(axis=0)).sum()),
        "n_panels": len(panels),
        "matched_on": "var_names" if gene_key is None else str(gene_key),
    }
    out.uns[QUERY_UNS_KEY] = summary
    logger.info(
        "query aligned: %d of %d model genes measured, %d unmeasured in every cell (hidden "
        "from the encoder), %d panel(s)",
        int(panels.any(axis=0).sum()),
        n_model,
        summary["n_unmeasured_genes"],
        len(panels),
    )
    return out


# ids of the AnnData objects whose counts a get_* call is checking on a sample (see
# `QueryMixin._validate_anndata`); `setup_anndata` skips its whole-matrix check for them
_SAMPLE_CHECKED: set[int] = set()


@contextmanager
def _sample_checked(adata: AnnData):
    _SAMPLE_CHECKED.add(id(adata))
    try:
        yield
    finally:
        _SAMPLE_CHECKED.discard(id(adata))


def is_sample_checked(adata: AnnData) -> bool:
    """Whether a get_* call has checked a sample of ``adata`` and checks each cell it reads."""
    return id(adata) in _SAMPLE_CHECKED


class QueryMixin:
    """Data on another gene panel, cells of unseen batches, and scArches transfer."""

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Check a new AnnData (genes, counts, categories) before scvi-tools registers it.

        The counts of a sample of cells are checked here (:func:`check_count_sample`: counts,
        not normalised data); the cells a ``get_*`` call reads are checked as they are read,
        so a few cells of a large AnnData cost little more than those cells alone.

        A batch-blind encoder accepts batches the model never saw: their cells are embedded
        zero-shot, and decoding them needs a ``transform_batch`` of the reference.
        """
        if adata is None or adata is self.adata:
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        compare_var_names(registry_var_names(self.registry_), np.asarray(adata.var_names))
        if self.get_anndata_manager(adata) is not None:
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        layout = panel_layout(adata)
        # a sample of the cells here; the get_* iterator checks every cell it reads
        check_count_sample(
            adata,
            self.registry_["setup_args"].get("layer"),
            where="R2MAEModel",
            measured_genes=None if layout is None else layout.measured_anywhere,
        )
        if not self._check_categories(adata) or self.adata_manager is None:
            # a model loaded without an AnnData registers this one through `setup_anndata`,
            # whose whole-matrix check the sample above stands in for
            with _sample_checked(adata):
                return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        if adata.is_view:
            adata = adata.copy() if copy_if_view else adata
        manager = self.adata_manager.transfer_fields(adata, extend_categories=True)
        self._register_manager_for_instance(manager)
        return adata

    def _check_categories(self, adata: AnnData) -> bool:
        """Refuse unseen categories the encoder reads; ``True`` if only unseen batches remain."""
        setup = self.registry_["setup_args"]
        fields = self.registry_["field_registries"]
        columns = {setup.get("batch_key"): fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"]}
        mappings = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
        for key in setup.get("categorical_covariate_keys") or []:
            columns[key] = {"categorical_mapping": mappings["mappings"][key]}
        blind = self.module.batch_correction != "none"
        unseen_batches = False
        for key, state in columns.items():
            if key is None or key not in adata.obs.columns:
                continue
            known = {str(v) for v in state["categorical_mapping"]}
            candidates = _unknown_values(adata.obs[key], state["categorical_mapping"])
            unseen = sorted({str(v) for v in candidates} - known)
            if unseen and blind and key == setup.get("batch_key"):
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

    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference: str | os.PathLike | QueryMixin,
        gene_key: str | None = None,
        min_gene_overlap: float | int = 0.25,
        layer: str | Literal["auto"] | None = "auto",
        nan_as_unmeasured: bool = False,
    ) -> AnnData:
        """A new AnnData with the model's genes in its order; genes the query lacks are unmeasured.

        Query genes the model does not know are dropped; model genes the query did not measure
        are *unmeasured*: hidden from the encoder as masked genes are in training, never in a
        loss or a score, and predicted by the decoder. The counts hold only measured entries;
        which genes a cell measured is a property of its *panel*, named in the categorical
        ``.obs["scr2mae_panel"]`` (each name encodes its panel's gene mask, so the memory
        grows with cells × measured genes only; :func:`scr2mae.data.measured_genes` shows
        the masks). ``.obs``/``.obsm`` are copied, ``.obs["scr2mae_n_measured_genes"]`` counts
        each cell's measured model genes and ``.var["measured_in_query"]`` flags the genes
        some cell measured.

        Several panels: prepare each and concatenate the results with ``anndata.concat`` (the
        panel column travels with ``.obs``); or concatenate raw panels with NaN fill and pass
        ``nan_as_unmeasured=True``, which makes a panel of each set of NaN genes.

        Parameters
        ----------
        adata
            Query with counts; not modified. A query prepared before keeps its unmeasured
            genes.
        reference
            A trained model or its folder.
        gene_key
            ``.var`` column of the query to match on (e.g. Ensembl IDs), matched against the
            model's column of that name if its training data had one, else its gene names.
        min_gene_overlap
            Least overlap: a fraction of the model's genes (float) or a number of genes (int).
        layer
            Query layer with the counts; ``"auto"`` takes the model's layer if present.
        nan_as_unmeasured
            Read NaN entries as "not measured in this cell" instead of refusing them; cells
            with the same NaN genes share a panel.
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
            registry_var_names(model.registry_),
            model_identifiers=model.gene_identifiers_,
            layer=layer,
            out_layer=model_layer,
            gene_key=gene_key,
            min_gene_overlap=min_gene_overlap,
            nan_as_unmeasured=nan_as_unmeasured,
        )

    @classmethod
    def _as_model(cls, reference) -> QueryMixin:
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
        reference_model: str | os.PathLike | QueryMixin,
        unfrozen: bool = False,
        freeze_batchnorm_decoder: bool = True,
        **kwargs,
    ) -> QueryMixin:
        """A model for a query with new batches or categories, from a reference (scArches).

        :meth:`scvi.model.base.ArchesMixin.load_query_data`, with the first-layer weights
        realigned so that every reference weight reads its own covariate column (scvi-tools
        appends new columns at the end, where ``FCLayers`` reads other covariates) and, unless
        ``unfrozen``, only the columns of new categories trainable: a query of known categories
        embeds exactly as before and leaves every reference weight unchanged. Frozen batch-norm
        layers keep their running statistics (the decoder's too, by default). A query model
        trains without weight decay unless ``plan_kwargs`` set it.

        Parameters
        ----------
        adata
            Query aligned with :meth:`prepare_query_anndata`.
        reference_model
            The trained reference or its folder.
        unfrozen
            Train every weight (full fine-tuning).
        freeze_batchnorm_decoder
            Keep the decoder's batch norm frozen (scvi-tools' default trains it).
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data`.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        reference = cls._as_model(reference_model)  # read a saved folder once
        reference_state = reference.module.state_dict()
        with warnings.catch_warnings():
            # the genes were compared exactly by setup_anndata (source_registry)
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            model = super().load_query_data(
                adata=adata,
                reference_model=reference,
                unfrozen=unfrozen,
                freeze_batchnorm_decoder=freeze_batchnorm_decoder,
                **kwargs,
            )
        align_first_layers(
            model.module, reference_state, category_counts(reference.registry_), unfrozen
        )
        model.is_query_model_ = not unfrozen
        return model


class CountsField(LayerField):
    """Count layer whose values :func:`check_count_matrix` checks before registration.

    scvi-tools' sampled integer check would warn again about the ambient-corrected counts that
    the full check accepted (with its own warning).
    """

    def validate_field(self, adata: AnnData) -> None:
        super(LayerField, self).validate_field(adata)


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
            return {
                self.CATEGORICAL_MAPPING_KEY: mapping,
                self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            }
        if self.is_default:
            self._setup_default_attr(adata_target)
        self.validate_field(adata_target)
        missing = _unknown_values(adata_target.obs[self._original_attr_key], mapping)
        missing = pd.Index(missing).sort_values().to_numpy()
        if missing.size and not extend_categories:
            raise ValueError(
                f"Category {missing[0]} not found in source registry. "
                "Cannot transfer setup without `extend_categories = True`."
            )
        dtype = pd.CategoricalDtype(categories=np.concatenate([mapping, missing]), ordered=True)
        new = _categorical_codes(adata_target.obs, self._original_attr_key, self.attr_key, dtype)
        return {
            self.CATEGORICAL_MAPPING_KEY: new,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }


def _unknown_values(column: pd.Series, known) -> np.ndarray:
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


def registry_var_names(registry: dict) -> np.ndarray:
    """The model's genes, from the registry that scvi-tools saved with it."""
    state = registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return np.asarray(state["column_names"]).astype(str)


def compare_var_names(reference: np.ndarray, given: np.ndarray) -> None:
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


def raw_counts_properties(adata_manager, idx1, idx2, var_idx=None) -> dict[str, np.ndarray]:
    """Raw-count columns of differential expression that skip unmeasured genes.

    The means, non-zero fractions and means of counts per 10^4 of each group, per gene, over
    the cells that measured the gene (NaN where no cell of a group did; the panels of a
    prepared query say which did). Unlike scvi-tools' version, nothing is written to
    ``adata.obs``.
    """
    data = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    layout = panel_layout(adata_manager)
    out = {}
    for group, rows in (("1", idx1), ("2", idx2)):
        rows = np.asarray(rows)
        block = data[rows]
        block = np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=float)
        # counts per 10^4 of each cell's measured total (over all genes, before var_idx)
        scaling = 1e4 / np.clip(block.sum(axis=1), 1e-12, None)
        measured = np.ones(block.shape, dtype=bool) if layout is None else layout.measured(rows)
        if var_idx is not None:
            block, measured = block[:, var_idx], measured[:, var_idx]
        block = np.where(measured, block, 0.0)
        n = measured.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"raw_mean{group}"] = block.sum(axis=0) / n
            out[f"non_zeros_proportion{group}"] = (block != 0).sum(axis=0) / n
            out[f"raw_normalized_mean{group}"] = (block * scaling[:, None]).sum(axis=0) / n
    return out
