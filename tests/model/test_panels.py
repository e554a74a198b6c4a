"""Queries on several gene panels: unmeasured genes are panel masks, read by every path."""

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

from scr2mae import R2MAEModel, R2MAEModule
from scr2mae.data import measured_genes, read_backed
from scr2mae.data._panels import PANEL_KEY, panel_layout, panel_name
from scr2mae.evaluation import masked_reconstruction_score

from .conftest import program_counts

SMALL = {"n_hidden": 32, "n_latent": 8}
N_GENES = 40


def _cells(n_cells, seed, n_batches=2):
    return program_counts(n_cells, seed, N_GENES, library=(600, 1500), n_batches=n_batches)[0]


@pytest.fixture(scope="module")
def reference():
    scvi.settings.seed = 0
    ad = _cells(240, seed=0)
    R2MAEModel.setup_anndata(ad, batch_key="batch")
    model = R2MAEModel(ad, **SMALL)
    model.train(max_epochs=30, batch_size=40, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def cells():
    return _cells(90, seed=5)


@pytest.fixture(scope="module")
def two_panels(reference, cells):
    """60 cells measured on genes 0–29 and 30 on genes 10–39, prepared and concatenated."""
    a = R2MAEModel.prepare_query_anndata(cells[:60, :30].copy(), reference)
    b = R2MAEModel.prepare_query_anndata(cells[60:, 10:].copy(), reference)
    return anndata.concat([a, b])


def _hidden(n_cells):
    """The unmeasured genes of the cells of `two_panels`."""
    hidden = np.zeros((n_cells, N_GENES), dtype=bool)
    hidden[:60, 30:] = True
    hidden[60:, :10] = True
    return hidden


# ------------------------------------------------------------------ representation
def test_panel_names_encode_their_masks_and_bad_names_are_errors():
    mask = np.random.default_rng(0).random(37) < 0.6
    ad = anndata.AnnData(X=sparse.csr_matrix((3, 37), dtype=np.float32))
    name = panel_name(mask, ad.var_names)
    assert name.startswith(f"{mask.sum()}/37:")
    ad.obs[PANEL_KEY] = pd.Categorical([name] * 3)
    np.testing.assert_array_equal(panel_layout(ad).masks, mask[None])
    np.testing.assert_array_equal(measured_genes(ad).drop(columns="n_cells").iloc[0], mask)
    # a complete panel is no panel: complete data carry no mask
    ad.obs[PANEL_KEY] = pd.Categorical([panel_name(np.ones(37, bool), ad.var_names)] * 3)
    assert panel_layout(ad) is None
    # a mask read against other genes, or the same genes in another order, is refused
    ad.obs[PANEL_KEY] = pd.Categorical([panel_name(mask[:30], ad.var_names[:30])] * 3)
    with pytest.raises(ValueError, match="panel of 30 genes made for other genes"):
        panel_layout(ad)
    ad.obs[PANEL_KEY] = pd.Categorical([name] * 3)
    with pytest.raises(ValueError, match=r"another gene order.*original counts"):
        panel_layout(ad[:, ::-1])
    ad.obs[PANEL_KEY] = "my panel"
    with pytest.raises(ValueError, match="not a panel name written by"):
        panel_layout(ad)


def test_memory_grows_with_measured_entries_only(reference, cells, monkeypatch):
    from scr2mae.data import _alignment as _query

    part = cells[:, ::-1][:, :25].copy()  # genes 39..15, in reverse
    monkeypatch.setattr(_query, "_RENUMBER_SLICE", 7)  # renumbered 7 entries at a time
    prepared = R2MAEModel.prepare_query_anndata(part, reference)
    full = cells.X.toarray()
    np.testing.assert_array_equal(prepared.X.toarray()[:, 15:], full[:, 15:])
    assert prepared.X.has_sorted_indices
    # as many stored entries as the query's own counts: none for the 15 unmeasured genes
    assert prepared.X.nnz == part.X.nnz
    assert not np.isnan(prepared.X.data).any()
    # one category for all cells; its name holds the mask
    assert len(prepared.obs[PANEL_KEY].cat.categories) == 1
    layout = panel_layout(prepared)
    np.testing.assert_array_equal(layout.masks[0], np.arange(N_GENES) >= 15)
    assert layout.codes.dtype.itemsize == 1  # a byte per cell


def test_concatenated_panels_embed_as_each_panel_alone(reference, cells, two_panels):
    assert two_panels.obs[PANEL_KEY].cat.categories.size == 2
    np.testing.assert_array_equal(panel_layout(two_panels).measured(np.arange(90)), ~_hidden(90))
    z = reference.get_latent_representation(two_panels)
    alone = R2MAEModel.prepare_query_anndata(cells[60:, 10:].copy(), reference)
    np.testing.assert_allclose(
        z[60:], reference.get_latent_representation(alone), rtol=1e-5, atol=1e-6
    )
    # the same cells with the unmeasured genes hidden by a mask, as in training
    x = torch.as_tensor(cells.X.toarray())
    batch = torch.as_tensor(cells.obs["batch"].cat.codes.to_numpy().copy()[:, None])
    reference.module.eval()
    with torch.inference_mode():
        out = reference.module.inference(x, batch_index=batch, mask=torch.as_tensor(_hidden(90)))
    np.testing.assert_allclose(z, out["z"].numpy(), rtol=1e-5, atol=1e-6)


def test_hand_made_nan_become_panels(reference, cells, two_panels):
    dense = cells.X.toarray()
    dense[_hidden(90)] = np.nan
    raw = anndata.AnnData(X=sparse.csr_matrix(dense), obs=cells.obs.copy(), var=cells.var.copy())
    with pytest.raises(ValueError, match="nan_as_unmeasured=True"):
        R2MAEModel.prepare_query_anndata(raw, reference)
    prepared = R2MAEModel.prepare_query_anndata(raw, reference, nan_as_unmeasured=True)
    assert not np.isnan(prepared.X.data).any()
    assert measured_genes(prepared)["n_cells"].tolist() == [60, 30]
    np.testing.assert_array_equal(prepared.X.toarray(), two_panels.X.toarray())
    np.testing.assert_allclose(
        reference.get_latent_representation(prepared),
        reference.get_latent_representation(two_panels),
        rtol=1e-6,
    )
    # NaN handed to a model directly: refused, with what to do
    direct = anndata.AnnData(X=sparse.csr_matrix(dense), obs=cells.obs.copy())
    direct.var_names = cells.var_names
    with pytest.raises(ValueError, match=r"NaN.*prepare_query_anndata.*nan_as_unmeasured"):
        reference.get_latent_representation(direct)


def test_preparing_a_prepared_query_keeps_its_unmeasured_genes(reference, two_panels):
    again = R2MAEModel.prepare_query_anndata(two_panels, reference)
    np.testing.assert_array_equal(panel_layout(again).measured(np.arange(90)), ~_hidden(90))
    np.testing.assert_array_equal(again.X.toarray(), two_panels.X.toarray())
    # its genes reordered, it no longer knows which genes each cell lacks
    with pytest.raises(ValueError, match="reordered after `prepare_query_anndata`"):
        R2MAEModel.prepare_query_anndata(two_panels[:, ::-1].copy(), reference)


def test_preparing_again_ignores_panels_no_cell_uses(reference, two_panels):
    # a new AnnData built from `.obs.iloc` keeps every category of the panel column, also
    # those of cells left out: here the panel with code 0, so the used panel's code is 1
    codes = two_panels.obs[PANEL_KEY].cat.codes.to_numpy()
    rows = np.flatnonzero(codes != 0)
    kept = anndata.AnnData(X=two_panels.X[rows], obs=two_panels.obs.iloc[rows], var=two_panels.var)
    assert len(kept.obs[PANEL_KEY].cat.categories) == 2
    again = R2MAEModel.prepare_query_anndata(kept, reference)
    layout = panel_layout(again)
    assert layout is not None and layout.masks.shape[0] == 1
    np.testing.assert_array_equal(layout.measured(np.arange(rows.size)), ~_hidden(90)[rows])
    np.testing.assert_array_equal(again.X.toarray(), kept.X.toarray())


def test_concatenating_with_an_unprepared_anndata_says_what_to_do(reference, cells, two_panels):
    # (an outer join keeps the panel column, empty for the unprepared cells)
    mixed = anndata.concat([two_panels, cells[:5]], join="outer")
    with pytest.raises(ValueError, match=r"5 cell\(s\) have no panel.*Prepare each part"):
        reference.get_latent_representation(mixed)
    # prepared with every gene measured, the same cells join fine
    full = R2MAEModel.prepare_query_anndata(cells[:5].copy(), reference)
    joined = anndata.concat([two_panels, full])
    z = reference.get_latent_representation(joined)
    np.testing.assert_allclose(
        z[90:], reference.get_latent_representation(cells[:5].copy()), rtol=1e-5, atol=1e-6
    )


def test_genes_no_panel_measured_are_not_genes_without_counts(reference, cells):
    prepared = R2MAEModel.prepare_query_anndata(cells[:, 5:].copy(), reference)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        R2MAEModel.setup_anndata(prepared, batch_key="batch")
    assert not any("without any counts" in str(w.message) for w in caught)
    # a gene that was measured and has no counts is still reported
    prepared.X[:, 7] = 0
    prepared.X.eliminate_zeros()
    with pytest.warns(UserWarning, match=r"1 gene\(s\) without any counts \(e.g. \['G7'\]"):
        R2MAEModel.setup_anndata(prepared, batch_key="batch")


# ------------------------------------------------------------------ every path reads them
def test_differential_expression_raw_columns_count_measuring_cells_only(reference, two_panels):
    from scr2mae.model._de import raw_counts_properties

    reference.get_latent_representation(two_panels)  # registers it
    manager = reference.get_anndata_manager(two_panels)
    idx1, idx2 = np.arange(0, 90, 2), np.arange(1, 90, 2)
    out = raw_counts_properties(manager, idx1, idx2)
    x = two_panels.X.toarray()
    hidden = _hidden(90)
    for group, rows in (("1", idx1), ("2", idx2)):
        block = np.where(hidden[rows], np.nan, x[rows])
        np.testing.assert_allclose(out[f"raw_mean{group}"], np.nanmean(block, axis=0))
        np.testing.assert_allclose(
            out[f"non_zeros_proportion{group}"],
            ((block != 0) & ~hidden[rows]).sum(0) / (~hidden[rows]).sum(0),
        )


def test_reconstruction_scores_skip_unmeasured_genes(reference, cells, two_panels):
    dense = two_panels.X.toarray()
    layout = panel_layout(two_panels)

    def predict(x_masked, mask, rows):
        return torch.ones_like(x_masked) + torch.arange(x_masked.shape[1])

    with_nan = np.where(_hidden(90), np.nan, dense)
    by_nan = masked_reconstruction_score(with_nan, predict, 0.3, batch_size=16)
    by_panel = masked_reconstruction_score(
        dense, predict, 0.3, batch_size=16, panels=(layout.codes, layout.masks)
    )
    ignored = masked_reconstruction_score(dense, predict, 0.3, batch_size=16)
    assert by_panel == pytest.approx(by_nan, abs=1e-12)
    assert abs(ignored - by_panel) > 1e-3
    # the model scores the query's measured genes about as well as the complete cells'
    score = reference.get_reconstruction_score(two_panels, mask_ratio=0.3)
    complete = reference.get_reconstruction_score(cells.copy(), mask_ratio=0.3)
    assert 0.2 < score <= 1.0 and abs(score - complete) < 0.1, (score, complete)
    errors = reference.get_reconstruction_error(two_panels)
    assert np.isfinite(errors["reconstruction_loss"])


def test_loaders_carry_masks_only_for_data_that_lack_genes(reference, cells, two_panels):
    seen = []
    original = R2MAEModule.inference

    def spy(self, *args, **kwargs):
        seen.append((args[0] if args else kwargs["x"], kwargs.get("measured")))
        return original(self, *args, **kwargs)

    R2MAEModule.inference = spy
    try:
        reference.get_normalized_expression(two_panels, library_size="latent")
        assert seen and all(m is not None for _, m in seen)
        rows = torch.cat([m for _, m in seen]).numpy()
        np.testing.assert_array_equal(rows, ~_hidden(90))
        seen.clear()
        complete = R2MAEModel.prepare_query_anndata(cells.copy(), reference)
        reference.get_latent_representation(complete)
        reference.get_latent_representation(cells.copy())
        assert seen and all(m is None for _, m in seen)
    finally:
        R2MAEModule.inference = original


def test_scarches_training_reads_the_panels(reference, two_panels):
    query = two_panels.copy()
    query.obs["batch"] = pd.Categorical(["new"] * 90)
    model = R2MAEModel.load_query_data(query, reference)
    seen = []
    original = R2MAEModule.inference

    def spy(self, *args, **kwargs):
        if self.training:
            x = args[0] if args else kwargs["x"]
            seen.append((x.detach().clone(), kwargs.get("measured")))
        return original(self, *args, **kwargs)

    R2MAEModule.inference = spy
    try:
        model.train(max_epochs=2, batch_size=30, enable_progress_bar=False)
    finally:
        R2MAEModule.inference = original
    assert seen and all(m is not None for _, m in seen)
    for x, measured in seen:
        # every cell's mask is one of the two panels, and nothing is stored where it is False
        hidden = ~measured.numpy()
        assert {tuple(r) for r in hidden} <= {tuple(_hidden(90)[0]), tuple(_hidden(90)[-1])}
        assert (x.numpy()[hidden] == 0).all()
    with pytest.raises(ValueError, match="data_loader='scvi' cannot carry"):
        model.train(max_epochs=1, data_loader="scvi")
    with pytest.raises(ValueError, match="scvi-tools' data loader cannot carry"):
        model._make_data_loader(query, shuffle=True)


def test_backed_query_embeds_out_of_core_like_in_memory(reference, two_panels, tmp_path):
    from scr2mae.data._inference import _DiskRows

    two_panels.write_h5ad(tmp_path / "query.h5ad")
    backed = read_backed(tmp_path / "query.h5ad")
    reads = []
    original = _DiskRows.__call__

    def spy(self, rows):
        reads.append(rows.copy())
        return original(self, rows)

    _DiskRows.__call__ = spy
    try:
        z = reference.get_latent_representation(backed, batch_size=32)
        z_some = reference.get_latent_representation(backed, indices=[70, 3, 40], batch_size=32)
    finally:
        _DiskRows.__call__ = original
    # in file order, contiguous mini-batches, with the cells' own panels
    np.testing.assert_array_equal(np.concatenate(reads[:3]), np.arange(90))
    np.testing.assert_allclose(
        z, reference.get_latent_representation(two_panels), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(z_some, z[[70, 3, 40]], rtol=1e-5, atol=1e-6)
    assert list(backed.obs_names) == list(two_panels.obs_names)


def test_on_disk_training_batches_carry_the_panels(reference, two_panels, tmp_path):
    from scvi import REGISTRY_KEYS

    from scr2mae.data import OnDiskDataModule

    two_panels.write_h5ad(tmp_path / "query.h5ad")
    backed = read_backed(tmp_path / "query.h5ad")
    R2MAEModel.setup_anndata(backed, batch_key="batch")
    model = R2MAEModel(backed, **SMALL)
    module = OnDiskDataModule(model.adata_manager, batch_size=16, chunk_size=8, buffer_chunks=2)
    hidden = _hidden(90)
    seen = []
    for batch in module.train_dataloader():
        rows = batch[REGISTRY_KEYS.INDICES_KEY].numpy()
        np.testing.assert_array_equal(batch["measured"].numpy(), ~hidden[rows])
        seen.append(rows)
    assert np.concatenate(seen).size == module.n_train


def test_inference_reports_measured_only_when_some_gene_is_unmeasured(monkeypatch):
    module = R2MAEModule(n_input=12, n_hidden=16, n_latent=4).eval()
    x = torch.poisson(torch.full((5, 12), 3.0))
    # complete counts: nothing to carry, so that the decoder skips its library estimate
    assert module.inference(x)["measured"] is None
    measured = torch.ones(5, 12, dtype=torch.bool)
    measured[:2, 3:6] = False
    out = module.inference(x, measured=measured)
    assert torch.equal(out["measured"], measured) and (out["x"][~measured] == 0).all()
    # NaN entries: read on the CPU, where reading is free
    nan = x.masked_fill(~measured, float("nan"))
    assert torch.equal(module.inference(nan)["measured"], measured)
    torch.testing.assert_close(module.inference(nan)["z"], out["z"], rtol=0, atol=0)
    # on an accelerator nothing is read: `measured=None` means every gene was measured
    monkeypatch.setattr(R2MAEModule, "_reads_are_free", staticmethod(lambda device: False))
    assert module.inference(x)["measured"] is None
    assert torch.equal(module.inference(nan, measured=measured)["measured"], measured)
