"""scArches transfer that keeps the reference exact, with covariates and unseen batches."""

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

from scr2mae import R2MAEModel

SMALL = {"n_hidden": 32, "n_latent": 8}
N_GENES = 40


def _cells(n_cells, seed, batches=("b0", "b1"), sites=("s0", "s1", "s2")):
    """Counts of three cell types with batch, site and a continuous covariate."""
    rng = np.random.default_rng(seed)
    programs = np.random.default_rng(1).gamma(0.5, 1.0, size=(3, N_GENES))
    kind = rng.integers(0, 3, size=n_cells)
    profile = programs[kind] / programs[kind].sum(1, keepdims=True)
    counts = rng.poisson(profile * rng.integers(500, 1500, size=(n_cells, 1))).astype(np.float32)
    ad = anndata.AnnData(X=sparse.csr_matrix(counts))
    ad.obs_names = [f"c{seed}_{i}" for i in range(n_cells)]
    ad.var_names = [f"GENE{i}" for i in range(N_GENES)]
    ad.obs["kind"] = pd.Categorical(kind.astype(str))
    ad.obs["batch"] = pd.Categorical([batches[i % len(batches)] for i in range(n_cells)])
    ad.obs["site"] = pd.Categorical([sites[i % len(sites)] for i in range(n_cells)])
    ad.obs["depth"] = rng.normal(size=n_cells).astype(np.float32)
    return ad


def _reference(batch_correction="none", covariates=True, epochs=4):
    scvi.settings.seed = 0
    ad = _cells(180, seed=0)
    R2MAEModel.setup_anndata(
        ad,
        batch_key="batch",
        categorical_covariate_keys=["site"] if covariates else None,
        continuous_covariate_keys=["depth"] if covariates else None,
    )
    model = R2MAEModel(ad, batch_correction=batch_correction, **SMALL)
    model.train(max_epochs=epochs, batch_size=60, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def reference():
    return _reference()


def test_known_batches_leave_every_reference_weight_bit_identical(reference):
    query = _cells(90, seed=3)  # only batches and sites the reference has
    before = {k: v.clone() for k, v in reference.module.state_dict().items()}
    model = R2MAEModel.load_query_data(query, reference)
    model.train(max_epochs=3, batch_size=30, enable_progress_bar=False)
    after = model.module.state_dict()
    assert after.keys() == before.keys()
    moved = [
        key
        for key in before
        if key != "mask_step" and not torch.equal(after[key].cpu(), before[key].cpu())
    ]
    assert moved == []
    assert int(after["mask_step"]) > int(before["mask_step"])  # it did train


def test_surgery_keeps_covariate_weights_on_their_columns(reference):
    # a new batch *and* a new site: scvi-tools appends both blocks' new columns at the end
    query = _cells(90, seed=4, batches=("b0", "b1", "b_new"), sites=("s0", "s1", "s2", "s_new"))
    known = (query.obs["batch"] != "b_new") & (query.obs["site"] != "s_new")
    cells = query[known.to_numpy()].copy()
    z_before = reference.get_latent_representation(cells)
    expr_before = reference.get_normalized_expression(cells, return_numpy=True)
    model = R2MAEModel.load_query_data(query, reference)
    model.is_trained_ = True  # read the untrained query model as it comes out of the surgery
    z_after = model.get_latent_representation(cells)
    expr_after = model.get_normalized_expression(cells, return_numpy=True)
    np.testing.assert_allclose(z_after, z_before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(expr_after, expr_before, rtol=1e-5, atol=1e-9)
    # the layout FCLayers reads: genes, depth, 3 batches, 4 sites; the new columns start at 0
    weight = model.module.encoder.fc_layers[0][0].weight.detach().clone()
    ref_weight = reference.module.encoder.fc_layers[0][0].weight.detach()
    n = N_GENES + 1
    torch.testing.assert_close(weight[:, : n + 2], ref_weight[:, : n + 2], rtol=0, atol=0)
    torch.testing.assert_close(weight[:, n + 3 : n + 6], ref_weight[:, n + 2 :], rtol=0, atol=0)
    assert float(weight[:, n + 2].abs().max()) == 0.0 and float(weight[:, n + 6].abs().max()) == 0.0
    # training moves the new columns only
    model.train(max_epochs=3, batch_size=30, enable_progress_bar=False)
    trained = model.module.encoder.fc_layers[0][0].weight.detach()
    changed = (trained != weight).any(dim=0).nonzero().ravel().tolist()
    assert changed == [n + 2, n + 6]
    np.testing.assert_allclose(model.get_latent_representation(cells), z_before, atol=1e-6)


def test_batch_blind_encoder_embeds_unseen_batches_zero_shot():
    reference = _reference("mmd", covariates=False, epochs=3)
    query = _cells(60, seed=5, batches=("lab_x",))
    same = query.copy()
    same.obs["batch"] = pd.Categorical(["b0"] * same.n_obs)
    z = reference.get_latent_representation(query)
    # the encoder is blind to the batch: the code is the one of any known batch
    np.testing.assert_allclose(z, reference.get_latent_representation(same), atol=1e-6)
    with pytest.raises(ValueError, match="transform_batch"):
        reference.get_normalized_expression(query)
    imputed = reference.get_normalized_expression(query, transform_batch="b1", return_numpy=True)
    expected = reference.get_normalized_expression(same, transform_batch="b1", return_numpy=True)
    np.testing.assert_allclose(imputed, expected, rtol=1e-5)
    # an encoder that reads the batch still refuses it, naming the ways out
    plain = _reference("none", covariates=False, epochs=1)
    with pytest.raises(ValueError, match="load_query_data"):
        plain.get_latent_representation(query)
