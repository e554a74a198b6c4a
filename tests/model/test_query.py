"""A trained model applied to data on another gene panel (issue: pretrain once, apply anywhere)."""

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

from scr2mae import R2MAEModel, R2MAEModule
from scr2mae.data import measured_genes

from .conftest import program_counts

SMALL = {"n_hidden": 32, "n_latent": 8}
N_GENES = 60


def _programs(n_cells, seed, n_batches=2):
    """Counts of three cell types with distinct gene programs, in two batches."""
    ad, kind = program_counts(
        n_cells, seed, N_GENES, library=(800, 2000), n_batches=n_batches, gene_prefix="GENE"
    )
    ad.var["gene_ids"] = [f"ENSG{i:05d}" for i in range(N_GENES)]
    ad.layers["counts"] = ad.X.copy()
    ad.obs.insert(0, "kind", pd.Categorical(kind.astype(str)))
    return ad


@pytest.fixture(scope="module")
def reference():
    scvi.settings.seed = 0
    ad = _programs(300, seed=0)
    R2MAEModel.setup_anndata(ad, layer="counts", batch_key="batch", labels_key="kind")
    # the paper's model, whose encoder reads the batch (the default with two batches, "mmd",
    # has a batch-blind encoder; its queries are tested in test_batch_correction.py)
    model = R2MAEModel(ad, batch_correction="none", **SMALL)
    model.train(max_epochs=30, batch_size=50, enable_progress_bar=False)
    return model


@pytest.fixture
def query():
    return _programs(60, seed=7)


def _state(ad):
    return (
        list(ad.var_names),
        list(ad.obs.columns),
        sorted(ad.uns.keys()),
        sorted(ad.layers.keys()),
        ad.layers["counts"].toarray().copy(),
        ad.X.toarray().copy(),
    )


def _assert_same_state(a, b):
    assert a[:4] == b[:4]
    np.testing.assert_array_equal(a[4], b[4])
    np.testing.assert_array_equal(a[5], b[5])


# ------------------------------------------------------------------ alignment
def test_reordered_subset_and_superset_are_aligned(reference, query):
    rng = np.random.default_rng(0)
    keep = rng.permutation(N_GENES)[:45]  # a subset, in another order
    extra = anndata.AnnData(
        X=sparse.csr_matrix(rng.poisson(1.0, size=(query.n_obs, 5)).astype(np.float32)),
        obs=pd.DataFrame(index=query.obs_names),
        var=pd.DataFrame(index=[f"NEW{i}" for i in range(5)]),
    )
    extra.layers["counts"] = extra.X.copy()
    panel = anndata.concat([query[:, keep], extra], axis=1, merge="first")
    panel.obs = query.obs.copy()
    before = _state(panel)
    prepared = R2MAEModel.prepare_query_anndata(panel, reference)
    _assert_same_state(before, _state(panel))  # the user's AnnData is untouched
    assert list(prepared.var_names) == list(reference.adata.var_names)
    x = prepared.layers["counts"].toarray()
    full = query.layers["counts"].toarray()
    measured = np.isin(np.arange(N_GENES), keep)
    np.testing.assert_array_equal(x[:, measured], full[:, measured])
    # unmeasured genes are not stored: one panel records them, no entry per cell and gene
    counts = prepared.layers["counts"]
    assert not np.isnan(counts.data).any() and counts.nnz == np.count_nonzero(x)
    panels = measured_genes(prepared)
    assert len(panels) == 1 and panels["n_cells"].tolist() == [query.n_obs]
    assert panels.drop(columns="n_cells").to_numpy()[0].tolist() == measured.tolist()
    assert prepared.obs["scr2mae_panel"].cat.categories.str.startswith("45/60:").all()
    assert (prepared.obs["scr2mae_n_measured_genes"] == 45).all()
    assert prepared.var["measured_in_query"].to_numpy().tolist() == measured.tolist()
    summary = prepared.uns["scr2mae_query"]
    assert (
        summary["n_matched"],
        summary["n_dropped"],
        summary["n_unmeasured_genes"],
        summary["n_panels"],
    ) == (45, 5, 15, 1)
    # obs travel along; the unknown genes are gone
    assert list(prepared.obs["kind"]) == list(query.obs["kind"])
    assert not any(g.startswith("NEW") for g in prepared.var_names)


def test_match_on_a_gene_id_column(reference, query):
    ids = query.copy()
    # a query that has only Ensembl IDs, in a column, and other gene names
    ids.var = pd.DataFrame(
        {"ensembl": query.var["gene_ids"].to_numpy()},
        index=[f"probe{i}" for i in range(N_GENES)],
    )
    with pytest.raises(ValueError, match=r"too little gene overlap.*gene_ids"):
        R2MAEModel.prepare_query_anndata(ids, reference)
    ids.var = ids.var.rename(columns={"ensembl": "gene_ids"})
    prepared = R2MAEModel.prepare_query_anndata(ids[:, ::-1].copy(), reference, gene_key="gene_ids")
    np.testing.assert_array_equal(
        prepared.layers["counts"].toarray(), query.layers["counts"].toarray()
    )
    assert prepared.uns["scr2mae_query"]["matched_on"] == "gene_ids"
    with pytest.raises(ValueError, match="`gene_key`: column 'nope'"):
        R2MAEModel.prepare_query_anndata(ids, reference, gene_key="nope")


def test_duplicates_and_too_little_overlap_are_errors(reference, query):
    dup = query.copy()
    dup.var_names = [*list(query.var_names[:-1]), query.var_names[0]]
    before = _state(dup)
    with pytest.raises(ValueError, match=r"duplicate.*GENE0"):
        R2MAEModel.prepare_query_anndata(dup, reference)
    _assert_same_state(before, _state(dup))
    small = query[:, :10].copy()
    with pytest.raises(ValueError, match=r"10 of the query's 10 genes .*fewer than the 15"):
        R2MAEModel.prepare_query_anndata(small, reference)
    # the threshold is the user's to set, as a fraction or a number of genes
    assert R2MAEModel.prepare_query_anndata(small, reference, min_gene_overlap=10).n_vars == 60
    with pytest.raises(ValueError, match="min_gene_overlap"):
        R2MAEModel.prepare_query_anndata(query, reference, min_gene_overlap=1.5)


def test_bad_query_counts_are_errors(reference, query):
    bad = query.copy()
    dense = bad.layers["counts"].toarray()
    dense[0, 0] = -1.0
    bad.layers["counts"] = dense
    # the message names the layer that was read, not the internal copy
    with pytest.raises(
        ValueError,
        match=r"^prepare_query_anndata: adata\.layers\['counts'\] contains negative values",
    ):
        R2MAEModel.prepare_query_anndata(bad, reference, layer="counts")
    lognorm = query.copy()
    lognorm.layers["counts"] = np.log1p(query.layers["counts"].toarray())
    with pytest.raises(ValueError, match=r"adata\.layers\['counts'\] looks log-normalised"):
        R2MAEModel.prepare_query_anndata(lognorm, reference)
    dense[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*nan_as_unmeasured"):
        R2MAEModel.prepare_query_anndata(bad, reference)
    with pytest.raises(ValueError, match="layer 'raw'"):
        R2MAEModel.prepare_query_anndata(query, reference, layer="raw")


def test_ambient_corrected_query_is_prepared_with_a_warning(reference, query):
    corrected = query[:, 5:].copy()  # a panel without the first five genes
    counts = corrected.layers["counts"].copy()
    rng = np.random.default_rng(0)  # each entry shrunk by its own amount
    counts.data = (counts.data * rng.uniform(0.7, 1.0, counts.nnz)).astype(np.float32)
    corrected.layers["counts"] = counts
    n_fractional = int(np.count_nonzero(counts.data != np.round(counts.data)))
    with pytest.warns(
        UserWarning,
        match=rf"prepare_query_anndata: adata\.layers\['counts'\] holds non-integer counts: "
        rf"{n_fractional:,} of {counts.nnz:,} non-zero values",
    ):
        prepared = R2MAEModel.prepare_query_anndata(corrected, reference)
    kept = prepared.layers["counts"][:, 5:].toarray()
    np.testing.assert_array_equal(kept, counts.toarray())
    z = reference.get_latent_representation(prepared)
    assert z.shape == (query.n_obs, SMALL["n_latent"]) and np.isfinite(z).all()


def test_two_panels_concatenated(reference, query):
    a, b = query[:30, :40].copy(), query[30:, 20:].copy()
    # prepare each panel, then concatenate the prepared AnnDatas
    joined = anndata.concat(
        [R2MAEModel.prepare_query_anndata(p, reference) for p in (a, b)], merge="same"
    )
    # or concatenate the raw panels with NaN where a panel lacks a gene
    raw = anndata.concat([a, b], join="outer", fill_value=np.nan)
    with pytest.raises(ValueError, match="NaN"):
        R2MAEModel.prepare_query_anndata(raw, reference)
    from_raw = R2MAEModel.prepare_query_anndata(raw, reference, nan_as_unmeasured=True)
    for prepared in (joined, from_raw):
        # two panels, whatever the way the cells were joined; no NaN is stored
        assert not np.isnan(prepared.layers["counts"].data).any()
        panels = measured_genes(prepared)
        assert panels["n_cells"].tolist() == [30, 30]
        codes = prepared.obs["scr2mae_panel"].cat.codes.to_numpy()
        per_cell = panels.drop(columns="n_cells").to_numpy()[codes]
        np.testing.assert_array_equal(per_cell[:30], np.tile(np.arange(N_GENES) < 40, (30, 1)))
        np.testing.assert_array_equal(per_cell[30:], np.tile(np.arange(N_GENES) >= 20, (30, 1)))
        np.testing.assert_array_equal(
            prepared.obs["scr2mae_n_measured_genes"].to_numpy(), [40] * 30 + [40] * 30
        )
    np.testing.assert_array_equal(
        joined.layers["counts"].toarray(), from_raw.layers["counts"].toarray()
    )
    z = reference.get_latent_representation(joined)
    assert z.shape == (60, SMALL["n_latent"]) and np.isfinite(z).all()
    # each cell is embedded from its own panel's genes: same as preparing it alone
    z_a = reference.get_latent_representation(R2MAEModel.prepare_query_anndata(a, reference))
    np.testing.assert_allclose(z[:30], z_a, rtol=1e-5, atol=1e-6)


def test_reference_from_a_saved_folder(reference, query, tmp_path):
    reference.save(tmp_path / "ref", overwrite=True)
    prepared = R2MAEModel.prepare_query_anndata(query[:, :50], str(tmp_path / "ref"))
    assert list(prepared.var_names) == list(reference.adata.var_names)
    with pytest.raises(TypeError, match="reference"):
        R2MAEModel.prepare_query_anndata(query, reference=42)


# ------------------------------------------------------------------ unmeasured = hidden
def test_unmeasured_values_never_reach_the_encoder():
    torch.manual_seed(0)
    module = R2MAEModule(n_input=12, n_hidden=16, n_latent=4)
    module.eval()
    x = torch.poisson(torch.full((6, 12), 3.0))
    measured = torch.ones(6, 12, dtype=torch.bool)
    measured[:, [2, 5]] = False
    measured[0, 9] = False
    other = x.clone()
    other[~measured] = torch.tensor(
        [100.0, 0.0, 7.0, 3.0, 50.0, 1.0, 2.0, 9.0, 4.0, 0.0, 8.0, 6.0, 5.0]
    )
    z1 = module.inference(x, measured=measured, masking=False)["z"]
    z2 = module.inference(other, measured=measured, masking=False)["z"]
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    # NaN marks exactly the same thing as `measured=False`
    nan = x.masked_fill(~measured, float("nan"))
    torch.testing.assert_close(module.inference(nan, masking=False)["z"], z1, rtol=0, atol=0)
    # and reaches the encoder exactly as a training mask does
    z_mask = module.inference(x, mask=~measured)["z"]
    torch.testing.assert_close(z_mask, z1, rtol=0, atol=0)


def test_unmeasured_entries_never_enter_the_loss():
    torch.manual_seed(0)
    module = R2MAEModule(n_input=12, n_hidden=16, n_latent=4, mask_strategy="fixed")
    module.eval()
    x = torch.poisson(torch.full((5, 12), 4.0))
    nan = x.clone()
    nan[:, [0, 3]] = float("nan")
    mask = torch.zeros(5, 12, dtype=torch.bool)
    mask[:, [0, 1, 3, 4]] = True  # two of the masked genes are unmeasured
    tensors = {"X": nan}
    inf = module.inference(nan, mask=mask)
    gen = module.generative(**module._get_generative_input(tensors, inf))
    out = module.loss(tensors, inf, gen)
    assert torch.isfinite(out.loss)
    # only the masked *measured* entries (genes 1 and 4) are scored
    from scvi.distributions import NegativeBinomial

    nll = -NegativeBinomial(mu=gen["px_rate"], theta=gen["px_r"]).log_prob(x)
    assert out.loss.item() == pytest.approx(nll[:, [1, 4]].mean().item(), rel=1e-5)
    assert out.extra_metrics["masked_fraction"].item() == pytest.approx(2 / 12)


def test_latent_of_query_equals_masked_reference_encoding(reference, query):
    drop = np.arange(0, N_GENES, 4)
    keep = np.setdiff1d(np.arange(N_GENES), drop)
    prepared = R2MAEModel.prepare_query_anndata(query[:, keep], reference)
    z = reference.get_latent_representation(prepared)
    x = torch.as_tensor(query.layers["counts"].toarray())
    hidden = torch.zeros_like(x, dtype=torch.bool)
    hidden[:, drop] = True
    batch = torch.as_tensor(query.obs["batch"].cat.codes.to_numpy()[:, None])
    reference.module.eval()
    with torch.inference_mode():
        expected = reference.module.inference(x, batch_index=batch, mask=hidden)["z"].numpy()
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)


def test_library_of_cells_with_unmeasured_genes_is_estimated(reference, query):
    keep = np.arange(0, N_GENES, 2)
    prepared = R2MAEModel.prepare_query_anndata(query[:, keep], reference)
    true_library = np.asarray(query.layers["counts"].sum(1)).ravel()
    observed = np.asarray(query.layers["counts"][:, keep].sum(1)).ravel()
    estimated = reference.get_normalized_expression(
        prepared, library_size="latent", return_numpy=True
    ).sum(1)
    # the observed sum misses about half the counts; the estimate recovers most of the full
    # library, better than scaling by the fraction of genes measured
    error = np.median(np.abs(estimated / true_library - 1))
    naive = np.median(np.abs(observed * N_GENES / len(keep) / true_library - 1))
    assert np.median(observed / true_library) < 0.6
    assert error < 0.25 and error < 0.75 * naive
    reference.module.estimate_unmeasured_library = False
    try:
        plain = reference.get_normalized_expression(
            prepared, library_size="latent", return_numpy=True
        ).sum(1)
    finally:
        reference.module.estimate_unmeasured_library = True
    np.testing.assert_allclose(plain, observed, rtol=1e-4)
    # with every gene measured the estimate is the observed library itself
    full = R2MAEModel.prepare_query_anndata(query, reference)
    lib = reference.get_normalized_expression(full, library_size="latent", return_numpy=True)
    np.testing.assert_allclose(lib.sum(1), true_library, rtol=1e-4)


# ------------------------------------------------------------------ imputation
def test_imputation_returns_every_model_gene(reference, query):
    keep = np.arange(0, 40)
    prepared = R2MAEModel.prepare_query_anndata(query[:, keep], reference)
    expr = reference.get_normalized_expression(prepared)
    assert list(expr.columns) == list(reference.adata.var_names)
    assert list(expr.index) == list(prepared.obs_names)
    assert np.isfinite(expr.to_numpy()).all()
    np.testing.assert_allclose(expr.sum(1).to_numpy(), 1.0, rtol=1e-4)
    # the imputed genes follow the cell types (the programs differ by type)
    missing = reference.adata.var_names[40:]
    imputed = np.log1p(expr[missing].to_numpy() * 1e4)
    truth = query.layers["counts"][:, 40:].toarray()
    truth = np.log1p(truth / query.layers["counts"].sum(1).A * 1e4)
    r = [np.corrcoef(imputed[i], truth[i])[0, 1] for i in range(len(truth))]
    assert np.nanmean(r) > 0.5
    # gene_list and transform_batch as in scvi-tools
    sub = reference.get_normalized_expression(prepared, gene_list=list(missing[:3]))
    np.testing.assert_allclose(sub.to_numpy(), expr[missing[:3]].to_numpy(), rtol=1e-5)
    b0 = reference.get_normalized_expression(prepared, transform_batch="b0", return_numpy=True)
    b1 = reference.get_normalized_expression(prepared, transform_batch="b1", return_numpy=True)
    both = reference.get_normalized_expression(
        prepared, transform_batch=["b0", "b1"], return_numpy=True
    )
    np.testing.assert_allclose(both, (b0 + b1) / 2, rtol=1e-5, atol=1e-8)
    assert np.abs(b0 - b1).max() > 0
    with pytest.raises(ValueError, match="not a valid batch category"):
        reference.get_normalized_expression(prepared, transform_batch="b9")
    with pytest.raises(ValueError, match=r"gene_list.*NOPE"):
        reference.get_normalized_expression(prepared, gene_list=["NOPE"])


def test_reconstruction_score_skips_unmeasured_genes(reference, query):
    full = R2MAEModel.prepare_query_anndata(query, reference)
    part = R2MAEModel.prepare_query_anndata(query[:, 10:], reference)
    s_full = reference.get_reconstruction_score(full, mask_ratio=0.3)
    s_part = reference.get_reconstruction_score(part, mask_ratio=0.3)
    assert np.isfinite(s_part) and 0.3 < s_part <= 1.0
    assert abs(s_part - s_full) < 0.1


# ------------------------------------------------------------------ zero-shot and transfer
def test_unseen_batch_points_to_load_query_data(reference, query):
    new = query.copy()
    new.obs["batch"] = "donor_x"
    prepared = R2MAEModel.prepare_query_anndata(new, reference)
    with pytest.raises(ValueError, match=r"donor_x.*load_query_data"):
        reference.get_latent_representation(prepared)


def test_load_query_data_trains_new_batch_with_reference_frozen(reference, query):
    new = query[:, 5:].copy()
    new.obs["batch"] = pd.Categorical(["b0"] * 20 + ["donor_x"] * 40)
    prepared = R2MAEModel.prepare_query_anndata(new, reference)
    ref_state = {k: v.clone() for k, v in reference.module.state_dict().items()}
    model = R2MAEModel.load_query_data(prepared, reference)
    assert model.module.n_batch == 3
    loaded = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.train(max_epochs=5, batch_size=20, enable_progress_bar=False)
    assert model.is_trained
    losses = model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert np.isfinite(losses).all()
    state = model.module.state_dict()
    changed_new_columns = False
    for key, before in ref_state.items():
        after = state[key]
        if key.endswith(("mask_step", "num_batches_tracked")):
            continue
        if after.shape != before.shape:
            # first layers: the reference columns are bit-identical, the new batch column moved
            n = before.shape[1]
            assert torch.equal(after[:, :n], before), key
            changed_new_columns |= not torch.equal(after[:, n:], loaded[key][:, n:])
        else:
            assert torch.equal(after, before), key
    assert changed_new_columns
    z = model.get_latent_representation(prepared)
    assert z.shape == (60, SMALL["n_latent"]) and np.isfinite(z).all()
    # the reference model itself was not changed
    for key, value in reference.module.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_load_query_data_unfrozen_fine_tunes_everything(reference, query):
    new = query.copy()
    new.obs["batch"] = "donor_y"
    prepared = R2MAEModel.prepare_query_anndata(new, reference)
    model = R2MAEModel.load_query_data(prepared, reference, unfrozen=True)
    weight = model.module.encoder_out.weight.detach().clone()
    model.train(max_epochs=2, batch_size=20, enable_progress_bar=False)
    assert not torch.equal(model.module.encoder_out.weight.detach(), weight)


def test_load_query_data_needs_an_aligned_query(reference, query):
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        R2MAEModel.load_query_data(query[:, ::-1].copy(), reference)


# ------------------------------------------------------------------ sharing
def test_hub_model_round_trip_offline(reference, query, tmp_path):
    from scvi.hub import HubModel

    folder = tmp_path / "hub"
    reference.save(str(folder), training_data="synthetic programs", metrics={"probe": 0.9})
    card = (folder / "README.md").read_text()
    assert "synthetic programs" in card and "UniformRatio(p_min=0.1, p_max=0.5)" in card
    assert "60 genes" in card and "| probe | 0.9 |" in card
    assert "gene_ids" in card
    hub = HubModel(str(folder))
    assert hub.metadata.model_parent_module == "scr2mae"
    loaded = hub.model
    assert isinstance(loaded, R2MAEModel)
    # the reference sample carries the labels for transfer
    assert loaded.adata.n_obs == 300 and "kind" in loaded.adata.obs
    prepared = R2MAEModel.prepare_query_anndata(query[:, 7:], loaded)
    np.testing.assert_allclose(
        loaded.get_latent_representation(prepared),
        reference.get_latent_representation(prepared),
        rtol=1e-6,
        atol=1e-6,
    )
    assert loaded.gene_identifiers_.keys() == reference.gene_identifiers_.keys()


def test_a_matched_targeted_panel_is_accepted_and_other_identifiers_are_refused():
    """A panel of 15 % of the model's genes, all matching (as a 300-gene panel against a
    2,000-gene model), passes the default overlap rule; the same panel under Ensembl IDs does
    not, and the error points to `gene_key`."""
    ad, _ = program_counts(200, 0, 400, library=(800, 2000), gene_prefix="GENE")
    ad.var["gene_ids"] = [f"ENSG{i:05d}" for i in range(400)]
    R2MAEModel.setup_anndata(ad)
    model = R2MAEModel(ad, **SMALL)
    model.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
    panel = program_counts(40, 3, 400, library=(800, 2000), gene_prefix="GENE")[0]
    panel = panel[:, 100:160].copy()
    prepared = R2MAEModel.prepare_query_anndata(panel, model)
    assert int(prepared.var["measured_in_query"].sum()) == 60
    assert np.isfinite(model.get_latent_representation(prepared)).all()
    # half of a small panel is not enough when it is below 20 genes and a quarter of the model
    with pytest.raises(ValueError, match=r"too little gene overlap: 19 of the query's 19"):
        R2MAEModel.prepare_query_anndata(panel[:, :19].copy(), model)
    renamed = panel.copy()
    renamed.var_names = [f"ENSMUSG{i}" for i in range(60)]  # another species' identifiers
    with pytest.raises(ValueError, match=r"too little gene overlap: 0 of the query's 60.*gene_key"):
        R2MAEModel.prepare_query_anndata(renamed, model)
    ids = panel.copy()
    ids.var_names = [f"ENSG{int(g[4:]):05d}" for g in panel.var_names]
    with pytest.raises(ValueError, match=r"0 of the query's 60 genes.*gene_key"):
        R2MAEModel.prepare_query_anndata(ids, model)
    # matched on the identifier column, the same panel passes
    ids.var["gene_ids"] = list(ids.var_names)
    ids.var_names = [f"probe{i}" for i in range(60)]
    assert R2MAEModel.prepare_query_anndata(ids, model, gene_key="gene_ids").n_vars == 400
