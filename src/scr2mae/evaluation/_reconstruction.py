"""Masked-gene reconstruction scores for any model that predicts hidden genes (Tables 7–8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from .._validation import check_int
from ..masking import exact_count_mask, get_masking

__all__ = [
    "RECONSTRUCTION_RATIOS",
    "masked_reconstruction_score",
    "r2mae_predictor",
    "scvi_predictor",
]

#: appendix C.8: "The masking ratios evaluated are [0.1, 0.2, 0.3, 0.5, 0.7]"
RECONSTRUCTION_RATIOS = (0.1, 0.2, 0.3, 0.5, 0.7)

Predictor = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]


def _rows_pearson(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row Pearson correlation over the masked entries (NaN where undefined)."""
    m = mask.to(torch.float64)
    pred = pred.to(torch.float64)
    true = true.to(torch.float64)
    n = m.sum(1)
    mp = (pred * m).sum(1) / n.clamp_min(1)
    mt = (true * m).sum(1) / n.clamp_min(1)
    dp = (pred - mp[:, None]) * m
    dt = (true - mt[:, None]) * m
    denom = torch.sqrt((dp * dp).sum(1) * (dt * dt).sum(1))
    r = (dp * dt).sum(1) / denom
    return torch.where((denom > 0) & (n >= 2), r, torch.full_like(r, float("nan")))


def _dense_rows(matrix, rows) -> torch.Tensor:
    block = matrix[rows]
    block = block.toarray() if sparse.issparse(block) else block
    return torch.as_tensor(np.asarray(block, dtype=np.float32))


def masked_reconstruction_score(
    counts,
    predict: Predictor,
    mask_ratios: float | Sequence[float] = RECONSTRUCTION_RATIOS,
    seed: int = 0,
    batch_size: int = 128,
    target_sum: float = 1e4,
    return_per_cell: bool = False,
    panels: tuple[np.ndarray, np.ndarray] | None = None,
) -> float | pd.Series | pd.DataFrame:
    """Mean per-cell Pearson correlation of predicted and observed expression on masked genes.

    For every ratio ``r`` a fresh ``torch.Generator`` seeded with ``seed`` draws, batch after
    batch of ``batch_size`` cells, a mask hiding exactly ``round(r × n_genes)`` genes of each
    cell (:func:`scr2mae.masking.exact_count_mask`). The masked genes are set to zero in the
    counts handed to ``predict``, which returns each cell's expected expression; the score is
    the Pearson correlation, over the hidden genes, between ``log1p(prediction normalised to
    target_sum)`` and ``log1p(counts / library × target_sum)`` of the full counts, averaged over
    cells (cells where it is undefined are left out). The masks depend only on ``seed``,
    ``batch_size`` and the data, so every model is scored on the same masks.
    :meth:`scr2mae.R2MAEModel.get_reconstruction_score` is this function with
    :func:`r2mae_predictor`.

    Genes a cell's assay did not measure (NaN counts, or genes its panel lacks, see
    ``panels``) are handed to ``predict`` as zeros, are never scored, and both prediction and
    observation are normalised over each cell's measured genes only.

    Parameters
    ----------
    counts
        ``(cells, genes)`` raw counts, dense or sparse; NaN = not measured.
    predict
        ``predict(masked_counts, mask, rows)`` → ``(len(rows), genes)`` non-negative expected
        expression at any per-cell scale (it is normalised to proportions); ``masked_counts``
        is a float32 tensor with hidden genes set to zero, ``mask`` the boolean mask (``True``
        = hidden), ``rows`` the positions of the cells in ``counts`` (to look up covariates).
        See :func:`r2mae_predictor` and :func:`scvi_predictor`.
    mask_ratios
        One ratio or several (default ``0.1, 0.2, 0.3, 0.5, 0.7``).
    seed
        Seed of the masks.
    batch_size
        Cells per call of ``predict`` (part of the mask definition).
    target_sum
        Normalisation total of both prediction and observation.
    return_per_cell
        Also return the per-cell correlations.
    panels
        ``(panel, masks)``: the panel index of each cell of ``counts`` and a boolean
        ``(panels, genes)`` array, ``True`` where the panel measured the gene (a prepared
        query's, :func:`scr2mae.data.measured_genes`); ``None``: every non-NaN entry is
        measured.

    Returns
    -------
    The mean correlation (a float) for one ratio, else a Series indexed by ratio; with
    ``return_per_cell`` a DataFrame with one column per ratio and one row per cell.
    """
    single = np.isscalar(mask_ratios)
    ratios = [float(mask_ratios)] if single else [float(r) for r in mask_ratios]
    if not ratios:
        raise ValueError("`mask_ratios` must contain at least one ratio.")
    for r in ratios:
        get_masking("fixed", mask_ratio=r)  # validates the ratio
    if not callable(predict):
        raise TypeError(f"`predict` must be callable, got {type(predict).__name__}.")
    check_int("batch_size", batch_size)
    if not target_sum > 0:
        raise ValueError(f"`target_sum` must be positive, got {target_sum!r}.")
    counts = sparse.csr_matrix(counts) if sparse.issparse(counts) else np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] < 2:
        raise ValueError(f"`counts` must be (cells, genes) with >= 2 genes, got {counts.shape}.")
    n_cells, n_genes = counts.shape
    if panels is not None:
        panel, masks = np.asarray(panels[0]), np.asarray(panels[1], dtype=bool)
        if panel.shape != (n_cells,) or masks.ndim != 2 or masks.shape[1] != n_genes:
            raise ValueError(
                f"`panels` must be one panel per cell ({n_cells}) and masks of {n_genes} genes, "
                f"got shapes {panel.shape} and {masks.shape}."
            )
    per_ratio = {}
    for r in ratios:
        gen = torch.Generator().manual_seed(seed)
        values = []
        for start in range(0, n_cells, batch_size):
            rows = np.arange(start, min(start + batch_size, n_cells))
            x = _dense_rows(counts, rows)
            measured = ~torch.isnan(x)
            if panels is not None:
                measured &= torch.from_numpy(masks[panel[rows]])
            x = torch.where(measured, x, 0.0)
            mask = exact_count_mask(x.shape[0], n_genes, r, generator=gen)
            with torch.inference_mode():
                out = predict(x.masked_fill(mask, 0.0), mask, rows)
            out = torch.as_tensor(out).detach().to("cpu", torch.float64)
            if out.shape != x.shape:
                raise ValueError(
                    f"`predict` returned shape {tuple(out.shape)}, expected {tuple(x.shape)}."
                )
            out = out * measured  # proportions over the measured genes
            pred = torch.log1p(out / out.sum(1, keepdim=True).clamp_min(1e-30) * target_sum)
            xd = x.to(torch.float64)
            true = torch.log1p(xd / xd.sum(1, keepdim=True).clamp_min(1.0) * target_sum)
            values.append(_rows_pearson(pred, true, mask & measured))
        per_ratio[r] = torch.cat(values).numpy()
    if return_per_cell:
        return pd.DataFrame(per_ratio).rename_axis(columns="mask_ratio")
    means = {
        r: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        for r, v in per_ratio.items()
    }
    if single:
        return means[ratios[0]]
    return pd.Series(means, name="reconstruction_pearson").rename_axis("mask_ratio")


def _registered(model, adata, key):
    # public scvi-tools API: the AnnData must have been set up for this model
    manager = model.get_anndata_manager(adata if adata is not None else model.adata, required=True)
    if key not in manager.data_registry:
        return None
    value = manager.get_from_registry(key)
    if sparse.issparse(value):
        return sparse.csr_matrix(value)
    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)


def _check_trained(model) -> None:
    if not model.is_trained:
        raise RuntimeError(f"the {type(model).__name__} is not trained; call `train()` first.")


def _covariate_tensors(model, adata, indices):
    from scvi import REGISTRY_KEYS

    idx = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    out = {}
    for key in (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CONT_COVS_KEY, REGISTRY_KEYS.CAT_COVS_KEY):
        value = _registered(model, adata, key)
        if value is not None:
            value = value[idx]
            value = value.reshape(-1, 1) if value.ndim == 1 else value
            dtype = torch.float32 if key == REGISTRY_KEYS.CONT_COVS_KEY else torch.long
            out[key] = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(dtype)
    return out


def r2mae_predictor(model, adata=None, indices=None) -> Predictor:
    """Predictor of a trained :class:`~scr2mae.R2MAEModel` for :func:`masked_reconstruction_score`.

    The model encodes the masked counts (with the given mask) and its decoder's softmax output
    is the prediction — the same forward pass as ``get_reconstruction_score``. As in training,
    the decoder receives each cell's observed library size (of all its genes), read from the
    counts registered in ``adata``.

    Parameters
    ----------
    model
        Trained ``R2MAEModel``.
    adata
        AnnData the counts come from, set up for ``model`` (defaults to the model's); its
        registered covariates are used. Genes a cell did not measure (the panels of a
        :meth:`~scr2mae.R2MAEModel.prepare_query_anndata` result) stay hidden.
    indices
        Cells of ``adata`` that the scored ``counts`` rows are (in order); defaults to all.
    """
    from scvi import REGISTRY_KEYS

    from ..data._panels import MEASURED_KEY, panel_layout

    _check_trained(model)
    covs = _covariate_tensors(model, adata, indices)
    full = _registered(model, adata, REGISTRY_KEYS.X_KEY)
    cells = np.arange(full.shape[0]) if indices is None else np.asarray(indices)
    full = full[cells]
    manager = model.get_anndata_manager(model.adata if adata is None else adata, required=True)
    layout = panel_layout(manager)
    module = model.module

    def predict(x_masked, mask, rows):
        module.eval()
        x_full = _dense_rows(full, rows)  # NaN = not measured
        measured = None
        if layout is not None:
            measured = torch.from_numpy(layout.measured(cells[rows]))
            x_full = torch.where(measured, x_full, 0.0)
        seen = torch.nan_to_num(x_full, nan=0.0).masked_fill(mask, 0)
        if x_full.shape != x_masked.shape or bool((seen != x_masked).any()):
            raise ValueError(
                "the scored counts are not the counts registered for `adata`/`indices`."
            )
        tensors = {REGISTRY_KEYS.X_KEY: x_full}
        if measured is not None:
            tensors[MEASURED_KEY] = measured
        tensors.update({k: v[rows] for k, v in covs.items()})
        _, out = module(
            tensors, inference_kwargs={"mask": mask.to(model.device)}, compute_loss=False
        )
        return out["px_scale"]

    return predict


def scvi_predictor(model, adata=None, indices=None) -> Predictor:
    """Predictor of a trained scVI model for :func:`masked_reconstruction_score`.

    scVI sees the masked counts (hidden genes set to zero, library size of the masked input);
    its prediction is the decoder's normalised expression ``px.scale`` at the posterior mean
    of the latent code (deterministic).

    Parameters
    ----------
    model
        Trained :class:`scvi.model.SCVI`.
    adata, indices
        As in :func:`r2mae_predictor` (``adata`` defaults to the model's).
    """
    from scvi import REGISTRY_KEYS

    _check_trained(model)
    covs = _covariate_tensors(model, adata, indices)
    module = model.module
    device = model.device

    def predict(x_masked, mask, rows):
        module.eval()
        given = {k: v[rows].to(device) for k, v in covs.items()}
        batch_index = given.get(REGISTRY_KEYS.BATCH_KEY)
        if batch_index is None:
            batch_index = torch.zeros(len(rows), 1, dtype=torch.long, device=device)
        cont = given.get(REGISTRY_KEYS.CONT_COVS_KEY)
        cat = given.get(REGISTRY_KEYS.CAT_COVS_KEY)
        inf = module.inference(x_masked.to(device), batch_index, cont_covs=cont, cat_covs=cat)
        gen = module.generative(
            z=inf["qz"].loc,
            library=inf["library"],
            batch_index=batch_index,
            cont_covs=cont,
            cat_covs=cat,
        )
        return gen["px"].scale

    return predict
