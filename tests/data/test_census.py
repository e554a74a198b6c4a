import numpy as np
import pandas as pd
import pytest
import torch

from scr2mae.data import (
    census_datamodule,
    datamodule_batches,
    load_census,
    open_census,
    parse_age_years,
)


def test_load_by_dataset_id_keeps_counts_and_metadata(local_census, census_adata):
    adata = load_census(dataset_ids="ds_lung", census_uri=local_census, timeout=60)
    assert adata.n_obs == 80 and adata.n_vars == 30
    assert list(adata.var_names[:2]) == ["GENE0", "GENE1"]
    for col in ("donor_id", "cell_type", "disease", "development_stage", "age_years"):
        assert col in adata.obs
    counts = adata.layers["counts"]
    assert np.issubdtype(counts.dtype, np.integer)
    # same cells, same counts as written
    order = np.argsort(adata.obs["soma_joinid"].to_numpy())
    expected = census_adata.X[:80].toarray()
    np.testing.assert_array_equal(counts.toarray()[order], expected)
    ages = adata.obs["age_years"].to_numpy()
    assert set(np.unique(ages[np.isfinite(ages)])) == {45.0}
    assert np.isnan(ages).sum() == (adata.obs["development_stage"].str.contains("over")).sum()


def test_load_by_obs_filter_combines_with_dataset(local_census):
    adata = load_census(
        dataset_ids=["ds_lung", "ds_other"],
        obs_value_filter="disease == 'COPD' and donor_id in ['d3', 'd4']",
        census_uri=local_census,
    )
    assert set(adata.obs["donor_id"]) == {"d3", "d4"}
    assert set(adata.obs["disease"]) == {"COPD"}
    assert adata.n_obs == 40


def test_load_census_rejects_bad_input(local_census):
    with pytest.raises(ValueError, match="dataset_ids"):
        load_census(census_uri=local_census)
    with pytest.raises(ValueError, match="organism"):
        load_census(dataset_ids="x", organism="Danio rerio", census_uri=local_census)
    with pytest.raises(ValueError, match="no cells match"):
        load_census(dataset_ids="nope", census_uri=local_census)


def test_unreachable_census_raises_connection_error(tmp_path):
    with pytest.raises(ConnectionError, match=r"could not open|did not answer"):
        load_census(dataset_ids="x", census_uri=str(tmp_path / "missing"), timeout=30)


def test_census_timeout_is_the_clients_and_other_errors_pass_through(monkeypatch, tmp_path):
    import threading

    import cellxgene_census

    calls = []

    def fake_open_soma(**kwargs):
        calls.append(kwargs)
        raise KeyError("a bug, not the network")

    monkeypatch.setattr(cellxgene_census, "open_soma", fake_open_soma)
    threads = threading.active_count()
    with pytest.raises(KeyError, match="a bug"):
        open_census(str(tmp_path), timeout=2.5)
    assert threading.active_count() == threads  # no helper thread left behind
    config = calls[0]["tiledb_config"]
    assert config["vfs.s3.connect_timeout_ms"] == "2500"
    assert config["vfs.s3.request_timeout_ms"] == "2500"
    with pytest.raises(KeyError):
        open_census(None, census_version="2025-01-30", timeout=None)
    assert calls[1]["census_version"] == "2025-01-30" and calls[1]["tiledb_config"] == {}

    def unreachable(**kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cellxgene_census, "open_soma", unreachable)
    with pytest.raises(ConnectionError, match=r"could not open.*unreachable"):
        open_census(None, timeout=1)


def test_parse_age_years():
    ages = parse_age_years(
        [
            "63-year-old stage",
            "80 year-old and over stage",
            "18-month-old stage",
            "sixth decade stage",
            "unknown",
        ]
    )
    np.testing.assert_allclose(ages[[0, 2]], [63.0, 1.5])
    assert np.isnan(ages[[1, 3, 4]]).all()
    with pytest.raises(TypeError):
        parse_age_years("63-year-old stage")


def test_out_of_core_training_from_soma(local_census):
    # scvi-tools' TileDBDataModule streams through tiledbsoma-ml (a dependency of this feature)
    pytest.importorskip("tiledbsoma_ml")
    import scvi

    from scr2mae import R2MAEModel

    torch.set_num_threads(1)
    dm = census_datamodule(
        dataset_ids="ds_lung",
        census_uri=local_census,
        batch_column_names=["donor_id"],
        batch_size=16,
        train_size=0.8,
        seed=0,
    )
    try:
        assert (dm.n_obs, dm.n_vars, dm.n_batch) == (80, 30, 6)
        scvi.settings.seed = 0
        model = R2MAEModel(registry=dm.registry, n_hidden=16, n_latent=4)
        # the module is built from the data module's registry: 6 donors make the default
        # "auto" resolve to "mmd", whose batch-blind encoder reads the 30 genes only
        assert model.module.batch_correction == "mmd"
        assert model.module.encoder.fc_layers[0][0].in_features == 30
        paper = R2MAEModel(registry=dm.registry, n_hidden=16, n_latent=4, batch_correction="none")
        assert paper.module.encoder.fc_layers[0][0].in_features == 36  # 30 genes + 6 donors
        model.train(max_epochs=2, datamodule=dm, enable_progress_bar=False)
        assert model.module.n_batch == 6 and model.module.n_input == 30
        losses = model.history["train_loss"].to_numpy(dtype=float).ravel()
        assert losses.size == 2 and np.isfinite(losses).all()
        z = model.get_latent_representation(dataloader=datamodule_batches(dm, "val"))
        assert z.shape == (16, 4) and np.isfinite(z).all()
        # the inference pass: every cell once, in a fixed order, labelled with its soma_joinid
        from scr2mae.data import anndata_batches, census_batches, embed_census

        batches = list(census_batches(dm, batch_size=32))
        assert [len(b["soma_joinid"]) for b in batches] == [32, 32, 16]
        ids = torch.cat([b["soma_joinid"] for b in batches]).numpy()
        cells = load_census(dataset_ids="ds_lung", census_uri=local_census)
        cells = cells[np.argsort(cells.obs["soma_joinid"].to_numpy())]
        np.testing.assert_array_equal(ids, cells.obs["soma_joinid"].to_numpy())
        x = torch.cat([b["X"] for b in batches]).numpy()
        np.testing.assert_array_equal(x, cells.layers["counts"].toarray())
        emb = embed_census(model, dm, batch_size=32)
        assert emb.shape == (80, 4) and emb.index.name == "soma_joinid"
        np.testing.assert_array_equal(emb.index.to_numpy(), ids)
        # each row is its cell's embedding: the same as embedding the cells from memory
        in_memory = model.get_latent_representation(dataloader=anndata_batches(cells, dm))
        np.testing.assert_allclose(emb.to_numpy(), in_memory, rtol=1e-5, atol=1e-6)
        shuffled = cells[np.random.default_rng(0).permutation(cells.n_obs)]
        again = model.get_latent_representation(dataloader=anndata_batches(shuffled, dm))
        joined = emb.loc[shuffled.obs["soma_joinid"].to_numpy()].to_numpy()
        np.testing.assert_allclose(joined, again, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="Only one of `adata` or `dataloader`"):
            model.get_latent_representation(adata=cells, dataloader=[])
    finally:
        dm.census.close()


def test_read_cellxgene_h5ad_restores_raw_counts(tmp_path, census_adata):
    from anndata import AnnData

    from scr2mae.data import log_normalize, read_cellxgene_h5ad

    portal = AnnData(
        X=log_normalize(census_adata.X), obs=census_adata.obs.copy(), var=census_adata.var.copy()
    )
    portal.raw = AnnData(X=census_adata.X.copy(), var=census_adata.var.copy())
    portal.obs["ADNC"] = "Low"
    portal.write_h5ad(tmp_path / "portal.h5ad")
    adata = read_cellxgene_h5ad(tmp_path / "portal.h5ad")
    assert (adata.layers["counts"] != census_adata.X).nnz == 0
    assert list(adata.var_names[:1]) == ["GENE0"] and "ADNC" in adata.obs
    assert adata.obs["age_years"].notna().sum() == 100


def test_write_census_standin_round_trips_through_load_census(tmp_path, census_adata):
    from scr2mae.data import write_census_standin

    adata = census_adata.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.obs["disease"] = adata.obs["disease"].astype("category")
    before = adata.obs.copy()
    uri = write_census_standin(adata, tmp_path / "standin")
    assert uri == str(tmp_path / "standin")
    pd.testing.assert_frame_equal(adata.obs, before)  # the user's object is untouched
    back = load_census(dataset_ids="ds_lung", census_uri=uri, var_index=None)
    order = np.argsort(back.obs["soma_joinid"].to_numpy())
    np.testing.assert_array_equal(back.layers["counts"].toarray()[order], adata.X.toarray()[:80])
    assert back.obs["disease"].iloc[order].tolist() == adata.obs["disease"][:80].tolist()
    assert list(back.var_names) == list(adata.var_names)
    with pytest.raises(FileExistsError):
        write_census_standin(adata, uri)
    with pytest.raises(ValueError, match="layer 'missing' is not in"):
        write_census_standin(adata, tmp_path / "other", counts_layer="missing")
    bad = adata.copy()
    bad.layers["counts"] = bad.X.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        write_census_standin(bad, tmp_path / "bad")
    # ambient-corrected counts are counts, but the Census holds integers
    corrected = bad.X.astype(np.float32)
    shrink = np.random.default_rng(0).uniform(0.6, 1.0, corrected.nnz).astype(np.float32)
    corrected.data = corrected.data * shrink
    bad.layers["counts"] = corrected
    with pytest.raises(ValueError, match=r"non-integer values: .* integer counts are required"):
        write_census_standin(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_anndata_batches_encode_in_memory_cells_like_the_datamodule(local_census):
    pytest.importorskip("tiledbsoma_ml")
    from scr2mae import R2MAEModel
    from scr2mae.data import anndata_batches

    torch.set_num_threads(1)
    dm = census_datamodule(
        dataset_ids="ds_lung", census_uri=local_census, batch_column_names=["donor_id"]
    )
    try:
        adata = load_census(dataset_ids="ds_lung", census_uri=local_census)
        batches = list(anndata_batches(adata, dm, batch_size=32))
        assert [b["X"].shape[0] for b in batches] == [32, 32, 16]
        x = torch.cat([b["X"] for b in batches]).numpy()
        np.testing.assert_array_equal(x, adata.layers["counts"].toarray())
        codes = torch.cat([b["batch"] for b in batches]).numpy().ravel()
        donors = dm.batch_encoder.classes_[codes]
        assert donors.tolist() == adata.obs["donor_id"].astype(str).tolist()
        model = R2MAEModel(registry=dm.registry, n_hidden=8, n_latent=3)
        model.train(max_epochs=1, datamodule=dm, enable_progress_bar=False)
        z = model.get_latent_representation(dataloader=anndata_batches(adata, dm))
        assert z.shape == (80, 3) and np.isfinite(z).all()
        # checked when called, before any reading
        with pytest.raises(ValueError, match="same order"):
            anndata_batches(adata[:, ::-1], dm)
        no_donor = adata.copy()
        del no_donor.obs["donor_id"]
        with pytest.raises(ValueError, match="batch columns missing"):
            anndata_batches(no_donor, dm)
        other = adata.copy()
        other.obs["donor_id"] = "a new donor"
        with pytest.raises(ValueError, match="not seen"):
            anndata_batches(other, dm)
        with pytest.raises(ValueError, match="layer 'nope'"):
            anndata_batches(adata, dm, layer="nope")
    finally:
        dm.census.close()


def test_write_census_standin_keeps_genes_without_counts(tmp_path, census_adata):
    from scr2mae.data import write_census_standin

    adata = census_adata.copy()
    x = adata.X.toarray()
    x[:, 0] = 0  # a gene never detected in these cells is valid Census content
    adata.X = x
    uri = write_census_standin(adata, tmp_path / "standin", counts_layer=None)
    back = load_census(census_uri=uri, obs_value_filter="tissue == 'lung'", var_index=None)
    assert back.n_vars == adata.n_vars
    assert back.layers["counts"][:, 0].sum() == 0
    negative = census_adata.copy()
    negative.X = -census_adata.X
    with pytest.raises(ValueError, match=r"write_census_standin: .*negative"):
        write_census_standin(negative, tmp_path / "neg", counts_layer=None)
