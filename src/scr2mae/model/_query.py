"""Data on another gene panel, cells of unseen batches, and scArches transfer of a trained model."""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
from anndata import AnnData
from scvi.data._utils import _check_if_view

from .._validation import check_count_sample
from ..data._alignment import align_to_genes, compare_var_names
from ..data._fields import check_categories
from ..data._panels import panel_layout
from ._surgery import align_first_layers, n_cats_per_cov

__all__ = ["QueryMixin"]


class QueryMixin:
    """Data on another gene panel, cells of unseen batches, and scArches transfer."""

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Check a new AnnData's genes, categories and a sample of its counts before scvi-tools
        registers it (the cells a ``get_*`` call reads are checked as they are read)."""
        if adata is None or adata is self.adata:
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        compare_var_names(np.asarray(self.get_var_names()).astype(str), np.asarray(adata.var_names))
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
        unseen_batches = check_categories(self.registry_, adata, self.module.batch_correction)
        if self.adata_manager is None:
            # a model loaded without an AnnData adopts this one, as scvi-tools' does, registered
            # without the whole-matrix check that the sample above stands in for
            _check_if_view(adata, copy_if_view=copy_if_view)
            self._register_sampled(adata)
            self._adata = adata
            self._adata_manager = self._get_most_recent_anndata_manager(adata, required=True)
            self._register_manager_for_instance(self.adata_manager)
            return adata
        if not unseen_batches:
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
        if adata.is_view:
            adata = adata.copy() if copy_if_view else adata
        manager = self.adata_manager.transfer_fields(adata, extend_categories=True)
        self._register_manager_for_instance(manager)
        return adata

    def _register_sampled(self, adata: AnnData) -> None:
        """Register ``adata`` as the model was set up, with a sampled count check done."""
        args = self.registry_["setup_args"]
        method_args = self._get_setup_method_args(cls=type(self), adata=adata, **args)
        self._register_fields(adata, method_args, False, source_registry=self.registry_)

    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference: str | os.PathLike | QueryMixin,
        gene_key: str | None = None,
        min_gene_overlap: float | int | Literal["auto"] = "auto",
        layer: str | Literal["auto"] | None = "auto",
        nan_as_unmeasured: bool = False,
    ) -> AnnData:
        """A new AnnData with the model's genes in its order; genes the query lacks are unmeasured.

        Query genes the model does not know are dropped; model genes the query did not measure
        are *unmeasured*: hidden from the encoder as masked genes are in training, never in a
        loss or a score, and predicted by the decoder. The counts hold only measured entries;
        each cell's *panel* is named in the categorical ``.obs["scr2mae_panel"]``, whose names
        encode the gene masks (memory grows with cells × measured genes only;
        :func:`scr2mae.data.measured_genes` shows them). ``.obs``/``.obsm`` are copied,
        ``.obs["scr2mae_n_measured_genes"]`` counts each cell's measured model genes and
        ``.var["measured_in_query"]`` flags the genes some cell measured. Several panels:
        prepare each and join them with ``anndata.concat``, or join raw panels with NaN fill
        and pass ``nan_as_unmeasured=True`` (a panel per set of NaN genes).

        Parameters
        ----------
        adata, layer
            Query with counts (not modified; a query prepared before keeps its unmeasured
            genes) in ``layer``; ``"auto"`` takes the model's layer if the query has it.
        reference
            A trained model or its folder.
        gene_key
            ``.var`` column of the query to match on (e.g. Ensembl IDs), against the model's
            column of that name if its training data had one, else its gene names.
        min_gene_overlap
            Least overlap: a fraction of the model's genes (float), a number of genes (int), or
            ``"auto"``: a quarter of the model's genes, or half of the query's own and at least
            20, so that a targeted panel (e.g. 300 markers) whose genes match is accepted and
            identifiers of another kind (Ensembl IDs against symbols) are refused.
        nan_as_unmeasured
            Read NaN entries as "not measured in this cell" instead of refusing them.
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
        genes, identifiers = np.asarray(model.get_var_names()).astype(str), model.gene_identifiers_
        options = dict(gene_key=gene_key, min_gene_overlap=min_gene_overlap)
        options.update(layer=layer, out_layer=model_layer, nan_as_unmeasured=nan_as_unmeasured)
        return align_to_genes(adata, genes, model_identifiers=identifiers, **options)

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
        realigned so that every reference weight reads its own covariate column and, unless
        ``unfrozen``, only the columns of new categories trainable: a query of known categories
        embeds exactly as before and leaves every reference weight unchanged. Frozen batch
        norms keep their running statistics (the decoder's too, unless
        ``freeze_batchnorm_decoder=False``); a query model trains without weight decay unless
        ``plan_kwargs`` set it. ``adata`` is aligned with :meth:`prepare_query_anndata`,
        ``reference_model`` is the reference or its folder, ``unfrozen`` trains every weight,
        and ``**kwargs`` go to :meth:`scvi.model.base.ArchesMixin.load_query_data`.
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        reference = cls._as_model(reference_model)  # read a saved folder once
        reference_state = reference.module.state_dict()
        with warnings.catch_warnings():
            # the genes were compared exactly by setup_anndata (source_registry)
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            kwargs.update(unfrozen=unfrozen, freeze_batchnorm_decoder=freeze_batchnorm_decoder)
            model = super().load_query_data(adata=adata, reference_model=reference, **kwargs)
        counts = [reference.summary_stats.n_batch, *n_cats_per_cov(reference.registry_)]
        align_first_layers(model.module, reference_state, counts, unfrozen)
        model.is_query_model_ = not unfrozen
        return model
