"""Gene panels: which of the model's genes each cell's assay measured.

A query measured on another panel lacks some of the model's genes. Rather than storing each
missing gene of each cell (which grows with cells × unmeasured genes), a prepared query names
each cell's *panel* in the categorical ``.obs`` column :data:`PANEL_KEY`, and the name of a
panel encodes its gene mask: ``"<measured>/<genes>:<genes' digest>:<base64 of the packed
mask>"``, where the digest of the gene names catches a mask read against genes in another
order. The masks therefore travel with ``.obs`` wherever the cells go: subsets,
``anndata.concat`` of queries prepared on different panels (pandas unites the categories),
``.h5ad`` files. The counts hold only measured entries; an unmeasured gene is an implicit zero
that the mask marks as unknown.

Mini-batches carry the dense mask of their cells, ``panel_masks[panel[cells]]``, under
:data:`MEASURED_KEY`, and only when some cell lacks a gene: complete data carry none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import rich.table
from anndata import AnnData
from scvi.data.fields import BaseAnnDataField

__all__ = [
    "MEASURED_KEY",
    "PANEL_KEY",
    "PanelField",
    "PanelLayout",
    "measured_genes",
    "panel_layout",
    "panel_name",
]

#: ``.obs`` column naming each cell's gene panel (see the module notes)
PANEL_KEY = "scr2mae_panel"
#: mini-batch key of the boolean ``(cells, genes)`` mask of measured genes
MEASURED_KEY = "measured"
#: registry key of :class:`PanelField`
PANEL_REGISTRY_KEY = "scr2mae_panel"


def _digest(genes: Sequence[str]) -> str:
    """A short digest of gene names, in order."""
    text = "\x1f".join(pd.Index(genes).astype(str).tolist()).encode("utf-8")
    return hashlib.blake2b(text, digest_size=4).hexdigest()


def panel_name(measured: np.ndarray, genes: Sequence[str]) -> str:
    """The panel name that encodes a boolean mask (``True`` = measured) of ``genes``."""
    measured = np.asarray(measured, dtype=bool).ravel()
    if len(genes) != measured.size:
        raise ValueError(f"a mask of {measured.size} genes for {len(genes)} gene names.")
    packed = base64.urlsafe_b64encode(np.packbits(measured).tobytes()).decode("ascii")
    return f"{int(measured.sum())}/{measured.size}:{_digest(genes)}:{packed}"


def _decode(name, genes: Sequence[str], digest: str) -> np.ndarray:
    """The gene mask of a panel name; ``ValueError`` for a name this module did not write, or
    one written for other genes (``digest`` is that of ``genes``)."""
    try:
        head, name_digest, packed = str(name).split(":", 2)
        n_measured, size = (int(v) for v in head.split("/"))
        raw = np.frombuffer(base64.urlsafe_b64decode(packed.encode("ascii")), dtype=np.uint8)
        mask = np.unpackbits(raw, count=size).astype(bool) if size else np.zeros(0, bool)
    except (ValueError, binascii.Error) as err:
        raise ValueError(
            f"`.obs[{PANEL_KEY!r}]` holds {str(name)[:40]!r}, which is not a panel name written "
            "by `R2MAEModel.prepare_query_anndata`; prepare the query with it (or drop the "
            "column if every gene was measured)."
        ) from err
    if int(mask.sum()) != n_measured:
        raise ValueError(f"`.obs[{PANEL_KEY!r}]` holds a damaged panel name {str(name)[:40]!r}.")
    if size != len(genes) or name_digest != digest:
        raise ValueError(
            f"`.obs[{PANEL_KEY!r}]` names a panel of {size} genes made for other genes or "
            f"another gene order than the AnnData's {len(genes)}: its genes were subset or "
            "reordered after `prepare_query_anndata`, which loses the unmeasured genes. "
            "Prepare the query from its original counts."
        )
    return mask


class PanelLayout:
    """Each cell's panel and the gene mask of every panel.

    Attributes
    ----------
    codes
        ``(cells,)`` integer panel of each cell.
    masks
        ``(panels, genes)`` boolean masks, ``True`` = measured.
    names
        The panel names, in the order of ``masks``.
    """

    def __init__(self, codes: np.ndarray, masks: np.ndarray, names: list[str]):
        self.codes = codes
        self.masks = masks
        self.names = names

    @property
    def complete(self) -> bool:
        """Whether every cell measured every gene."""
        return bool(self.masks.all())

    @property
    def measured_anywhere(self) -> np.ndarray:
        """``(genes,)``: genes measured by at least one panel."""
        return self.masks.any(axis=0)

    def measured(self, rows) -> np.ndarray:
        """The dense ``(len(rows), genes)`` mask of cells ``rows``."""
        return self.masks[self.codes[np.asarray(rows)]]


def _read_layout(adata: AnnData) -> PanelLayout | None:
    """The panels of ``adata`` (``None`` when it has no panel column), checked."""
    if PANEL_KEY not in adata.obs.columns:
        return None
    column = adata.obs[PANEL_KEY]
    cat = column.array if isinstance(column.dtype, pd.CategoricalDtype) else pd.Categorical(column)
    codes = np.asarray(cat.codes)
    missing = codes < 0
    if missing.any():
        examples = list(adata.obs_names[np.flatnonzero(missing)[:3]])
        raise ValueError(
            f"{int(missing.sum())} cell(s) have no panel in `.obs[{PANEL_KEY!r}]` (e.g. "
            f"{examples}): part of this AnnData was not made by "
            "`R2MAEModel.prepare_query_anndata`. Prepare each part (also one with every gene "
            "measured) before concatenating them."
        )
    names = [str(n) for n in cat.categories]
    genes = adata.var_names
    digest = _digest(genes)
    masks = [_decode(n, genes, digest) for n in names]
    masks = np.stack(masks) if masks else np.ones((0, len(genes)))
    return PanelLayout(codes, masks.astype(bool), names)


def panel_layout(adata_or_manager) -> PanelLayout | None:
    """The gene panels of an AnnData or of the AnnData of an ``AnnDataManager``.

    Returns ``None`` when every cell measured every gene (no panel column, or only complete
    panels), so that complete data never carry a mask. A manager's panels are decoded once and
    kept on the manager (an AnnData is registered again when its panels change).

    Raises
    ------
    ValueError
        For a panel column with missing values or names that do not encode a mask of the
        AnnData's genes.
    """
    if isinstance(adata_or_manager, AnnData):
        layout = _read_layout(adata_or_manager)
        return None if layout is None or layout.complete else layout
    manager = adata_or_manager
    if "panel_layout" not in vars(manager):
        manager.panel_layout = panel_layout(manager.adata)
    return manager.panel_layout


def measured_genes(adata: AnnData) -> pd.DataFrame:
    """Which genes each panel of a prepared query measured.

    Parameters
    ----------
    adata
        An AnnData made by :meth:`~scr2mae.R2MAEModel.prepare_query_anndata` (or several
        concatenated).

    Returns
    -------
    A boolean DataFrame with one row per panel (indexed ``panel0``, ``panel1``, … in the order
    of the categories of ``.obs["scr2mae_panel"]``), one column per gene, and the column
    ``n_cells``. An AnnData without panels has one complete panel.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    layout = _read_layout(adata)
    if layout is None:
        layout = PanelLayout(
            np.zeros(adata.n_obs, dtype=np.int64), np.ones((1, adata.n_vars), bool), ["all"]
        )
    out = pd.DataFrame(
        layout.masks,
        index=[f"panel{i}" for i in range(len(layout.names))],
        columns=adata.var_names,
    )
    out["n_cells"] = np.bincount(layout.codes, minlength=len(layout.names))
    return out


class PanelField(BaseAnnDataField):
    """The gene panels of an AnnData, registered with its ``AnnDataManager``.

    The field checks the panel column when an AnnData is registered (set up, or transferred
    from a model) and records the panel names in the state registry. It adds nothing to the
    data registry: the panels reach mini-batches as dense masks built by the data loaders of
    :mod:`scr2mae.data`, never as a per-cell tensor of scvi-tools' loader. A model's panels
    never carry over to another AnnData: each registers its own.
    """

    registry_key = PANEL_REGISTRY_KEY
    attr_name = "obs"
    attr_key = PANEL_KEY
    is_empty = False

    def get_data_registry(self) -> dict:
        return {}

    def validate_field(self, adata: AnnData) -> None:
        """Nothing: :meth:`register_field` decodes, and so checks, the panels once."""

    def register_field(self, adata: AnnData) -> dict:
        layout = panel_layout(adata)
        return {"panels": [] if layout is None else list(layout.names)}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {}

    def view_state_registry(self, state_registry: dict) -> rich.table.Table | None:
        panels = state_registry.get("panels") or []
        if not panels:
            return None
        table = rich.table.Table(title="Gene panels (genes measured / model genes)")
        table.add_column("Panel")
        table.add_column("Measured")
        for i, name in enumerate(panels):
            table.add_row(f"panel{i}", str(name).split(":", 1)[0])
        return table
