import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse
from scvi.distributions import NegativeBinomial

import scr2mae
from scr2mae import R2MAEModel
from scr2mae.masking import FixedRatio, LinearDecayRatio, UniformRatio

SMALL = {"n_hidden": 32, "n_latent": 8}


@pytest.fixture
def adata():
    scvi.settings.seed = 0
    ad = scvi.data.synthetic_iid(batch_size=100, n_genes=60, n_batches=2, n_labels=3)
    ad.layers["counts"] = ad.X.copy()
    return ad


@pytest.fixture
def trained(adata):
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="labels")
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=3, batch_size=50, enable_progress_bar=False)
    return model


def test_public_entry_point():
    assert scr2mae.R2MAEModel is R2MAEModel
    assert isinstance(scr2mae.__version__, str)


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_public_methods_on_csr_csc_and_dense(trained, adata, fmt):
    """Every public method gives the same numbers whatever the storage of the counts."""
    convert = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "dense": np.asarray}[fmt]
    counts = adata.layers["counts"]
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    other = adata.copy()
    other.layers["counts"] = convert(counts)
    for key in [k for k in other.uns if k.startswith("_scvi")]:
        del other.uns[key]
    z = trained.get_latent_representation()
    np.testing.assert_allclose(trained.get_latent_representation(other), z, rtol=1e-5, atol=1e-6)
    expr = trained.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(
        trained.get_normalized_expression(other, return_numpy=True), expr, rtol=1e-5, atol=1e-8
    )
    score = trained.get_reconstruction_score(mask_ratio=0.3)
    assert trained.get_reconstruction_score(other, mask_ratio=0.3) == pytest.approx(score)
    query = R2MAEModel.prepare_query_anndata(other[:, ::-1].copy(), trained)
    np.testing.assert_allclose(trained.get_latent_representation(query), z, rtol=1e-5, atol=1e-6)
    # and a model set up and trained on this storage
    fresh = other.copy()
    for key in [k for k in fresh.uns if k.startswith("_scvi")]:
        del fresh.uns[key]
    R2MAEModel.setup_anndata(fresh, layer="counts", batch_key="batch")
    model = R2MAEModel(fresh, **SMALL)
    model.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.get_latent_representation()).all()


def test_default_masking_is_r2mae(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    model = R2MAEModel(adata)
    assert model.module.masker.schedule == UniformRatio(0.1, 0.5)
    assert model.module.masker.mode == "columns"
    assert "UniformRatio(p_min=0.1, p_max=0.5)" in model._model_summary_string


def test_training_shapes_and_outputs(trained, adata):
    assert trained.is_trained
    assert not np.isnan(trained.history["train_loss"].to_numpy(dtype=float)).any()
    z = trained.get_latent_representation()
    assert z.shape == (adata.n_obs, SMALL["n_latent"])
    # encoding uses the unmasked input: deterministic across calls
    np.testing.assert_array_equal(z, trained.get_latent_representation())
    sub = trained.get_latent_representation(indices=np.arange(10))
    np.testing.assert_allclose(sub, z[:10], rtol=1e-5, atol=1e-6)
    expr = trained.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame) and expr.shape == (adata.n_obs, adata.n_vars)
    np.testing.assert_allclose(expr.sum(1).to_numpy(), 1.0, rtol=1e-4)
    observed = trained.get_normalized_expression(library_size="latent", return_numpy=True)
    lib = np.asarray(adata.layers["counts"].sum(1)).ravel()
    np.testing.assert_allclose(observed.sum(1), lib, rtol=1e-4)


def test_mask_step_advances_once_per_training_step(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    model = R2MAEModel(adata, mask_strategy="fixed", mask_ratio=0.25, **SMALL)
    model.train(max_epochs=2, batch_size=45, train_size=0.9, enable_progress_bar=False)
    # 180 training cells / 45 per batch = 4 steps per epoch
    assert int(model.module.mask_step) == 8
    # with a fixed ratio the masked fraction is exactly round(0.25 * 60) / 60
    frac = model.history["masked_fraction_train"].to_numpy(dtype=float)
    np.testing.assert_allclose(frac, 15 / 60, rtol=1e-6)


def test_dynamic_schedule_gets_training_length(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    model = R2MAEModel(adata, mask_strategy="dynamic", start=0.5, end=0.1, **SMALL)
    model.train(max_epochs=2, batch_size=45, enable_progress_bar=False)
    schedule = model.module.masker.schedule
    assert isinstance(schedule, LinearDecayRatio) and schedule.total_steps == 8
    assert schedule.expected_ratio(8) == pytest.approx(0.1)


def test_schedule_object_and_every_named_strategy_train(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    for strategy, params in [
        (FixedRatio(0.1), {}),
        ("mdlm", {}),
        ("r2mae_dynamic", {}),
        ("dynamic", {}),
        ("r2mae", {"mask_range": (0.2, 0.6)}),
    ]:
        model = R2MAEModel(adata, mask_strategy=strategy, **params, **SMALL)
        model.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
        assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()


def test_loss_gradient_only_through_masked_genes():
    torch.manual_seed(0)
    module = scr2mae.R2MAEModule(n_input=12, n_hidden=16, n_latent=4)
    x = torch.poisson(torch.full((6, 12), 3.0))
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[:, [1, 4, 7]] = True
    tensors = {"X": x}
    inf = module.inference(x, mask=mask)
    gen = module.generative(**module._get_generative_input(tensors, inf))
    rate = gen["px_rate"].detach().requires_grad_(True)
    out = module.loss(tensors, inf, {**gen, "px_rate": rate})
    out.loss.backward()
    assert torch.all(rate.grad[:, ~mask[0]] == 0)
    assert torch.all(rate.grad[:, mask[0]] != 0)
    # the encoder never sees the masked entries
    xg = x.clone().requires_grad_(True)
    module.inference(xg, mask=mask)["z"].sum().backward()
    assert torch.all(xg.grad[mask] == 0) and torch.any(xg.grad[~mask] != 0)
    # the loss is the mean NB negative log-likelihood (scvi-tools' distribution) over the
    # masked entries
    nll = -NegativeBinomial(mu=gen["px_rate"], theta=gen["px_r"]).log_prob(x)
    assert out.loss.item() == pytest.approx(nll[mask].mean().item(), rel=1e-5)


def _structured(n_cells=300, n_genes=60, seed=0):
    """Counts from three cell types with distinct gene programs (learnable co-expression)."""
    import anndata

    rng = np.random.default_rng(seed)
    programs = rng.gamma(0.5, 1.0, size=(3, n_genes))
    kind = rng.integers(0, 3, size=n_cells)
    profile = programs[kind] / programs[kind].sum(1, keepdims=True)
    library = rng.integers(500, 1500, size=(n_cells, 1))
    counts = rng.poisson(profile * library).astype(np.float32)
    counts[:, counts.sum(0) == 0] = 1.0
    ad = anndata.AnnData(X=counts)
    ad.obs["kind"] = pd.Categorical(kind.astype(str))
    return ad


def test_reconstruction_score_improves_with_training():
    adata = _structured()
    R2MAEModel.setup_anndata(adata)
    untrained = R2MAEModel(adata, **SMALL)
    untrained.module.eval()
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=40, batch_size=50, enable_progress_bar=False)
    # the training loss goes down, not only stays finite
    loss = model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert loss.size == 40 and np.isfinite(loss).all()
    assert loss[-5:].mean() < 0.9 * loss[:5].mean()
    scores = model.get_reconstruction_score()
    assert list(scores.index) == [0.1, 0.2, 0.3, 0.5, 0.7]
    assert np.isfinite(scores.to_numpy()).all()
    single = model.get_reconstruction_score(mask_ratio=0.3)
    assert single == pytest.approx(scores[0.3])
    # same seed, same masks: deterministic
    assert model.get_reconstruction_score(mask_ratio=0.3) == single
    untrained.is_trained_ = True
    assert single > untrained.get_reconstruction_score(mask_ratio=0.3) + 0.05
    with pytest.raises(ValueError, match="mask_ratio"):
        model.get_reconstruction_score(mask_ratio=1.2)


def test_save_load_round_trip(trained, adata, tmp_path):
    z = trained.get_latent_representation()
    trained.save(tmp_path / "m", overwrite=True)
    loaded = R2MAEModel.load(tmp_path / "m", adata=adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, rtol=1e-6, atol=1e-6)
    assert loaded.module.masker.schedule == trained.module.masker.schedule
    assert int(loaded.module.mask_step) == int(trained.module.mask_step)


def test_visible_weight_is_kept_through_save_and_load(trained, adata, tmp_path):
    assert trained.module.visible_weight == 1.0  # the default
    assert trained.module.batch_correction_weight == 0.1  # "auto" -> "mmd" at its weight
    assert "visible_weight: 1." in trained._model_summary_string
    paper = R2MAEModel(adata, visible_weight=0, **SMALL)
    assert paper.module.visible_weight == 0.0
    assert paper.module.batch_correction_weight == 0.03
    paper.save(tmp_path / "paper")
    assert R2MAEModel.load(tmp_path / "paper", adata=adata).module.visible_weight == 0.0
    # a model saved before the option existed keeps training with the masked genes alone
    trained.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / "model.pt", weights_only=False)
    del state["attr_dict"]["init_params_"]["non_kwargs"]["visible_weight"]
    torch.save(state, tmp_path / "old" / "model.pt")
    old = R2MAEModel.load(tmp_path / "old", adata=adata)
    assert old.module.visible_weight == 0.0
    assert old.init_params_["non_kwargs"]["visible_weight"] == 0.0
    for bad, error in [(-0.5, ValueError), (float("nan"), ValueError), ("1", TypeError)]:
        with pytest.raises(error, match="visible_weight"):
            R2MAEModel(adata, visible_weight=bad, **SMALL)


def test_load_with_mismatched_genes_fails(trained, adata, tmp_path):
    trained.save(tmp_path / "m", overwrite=True)
    other = adata[:, :-1].copy()
    with pytest.raises(ValueError, match="genes do not match"):
        R2MAEModel.load(tmp_path / "m", adata=other)
    shuffled = adata[:, ::-1].copy()
    with pytest.raises(ValueError, match="different order"):
        R2MAEModel.load(tmp_path / "m", adata=shuffled)


def test_load_reads_the_file_once_and_uses_backup_url(trained, adata, tmp_path, monkeypatch):
    """Genes are compared on what the base class read: one read, and backup_url still works."""
    trained.save(tmp_path / "m", overwrite=True)
    z = trained.get_latent_representation()
    reads = []
    real_load = torch.load

    def counting_load(path, *args, **kwargs):
        reads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    # the folder is empty: scvi-tools fetches model.pt from backup_url before reading it
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "m"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fresh = tmp_path / "fresh"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.pt"
        loaded = R2MAEModel.load(str(fresh), adata=adata, backup_url=url)
    finally:
        server.shutdown()
    assert [p for p in reads if p.endswith("model.pt")] == [str(fresh / "model.pt")]
    np.testing.assert_allclose(loaded.get_latent_representation(), z, rtol=1e-6, atol=1e-6)
    reads.clear()
    with pytest.raises(ValueError, match="genes do not match"):
        R2MAEModel.load(str(fresh), adata=adata[:, :-1].copy())
    assert len([p for p in reads if p.endswith("model.pt")]) == 1


def test_new_adata_with_other_genes_is_rejected(trained, adata):
    renamed = adata.copy()
    renamed.var_names = [f"other_{i}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match="genes do not match"):
        trained.get_latent_representation(renamed)


def test_latent_of_new_adata_with_same_genes(trained, adata):
    new = adata[:20].copy()
    z = trained.get_latent_representation(new)
    np.testing.assert_allclose(z, trained.get_latent_representation()[:20], rtol=1e-5, atol=1e-6)


def _snapshot(ad):
    return (
        list(ad.obs.columns),
        sorted(ad.uns.keys()),
        sorted(ad.layers.keys()),
        ad.layers["counts"].copy() if "counts" in ad.layers else None,
    )


def _corrupt(kind, ad):
    counts = ad.layers["counts"]
    counts = counts.toarray() if sparse.issparse(counts) else np.array(counts, dtype=np.float64)
    if kind == "log-normalised":
        counts = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    elif kind == "scaled":
        counts = counts / counts.sum(1, keepdims=True) * 1e4
    elif kind == "negative":
        counts[0, 0] = -1
    elif kind == "nan":
        counts = counts.astype(np.float64)
        counts[1, 2] = np.nan
    elif kind == "inf":
        counts = counts.astype(np.float64)
        counts[1, 2] = np.inf
    elif kind == "empty cell":
        counts[3] = 0
    elif kind == "empty gene":
        counts[:, 5] = 0
    ad.layers["counts"] = counts
    return ad


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("log-normalised", r"adata.layers\['counts'\] looks log-normalised"),
        ("scaled", r"adata.layers\['counts'\] looks normalised: every cell sums to 10000"),
        ("negative", "negative"),
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("empty cell", "cell"),
    ],
)
def test_bad_counts_rejected_before_anything_is_written(adata, kind, match):
    ad = _corrupt(kind, adata)
    before = _snapshot(ad)
    with pytest.raises(ValueError, match=match):
        R2MAEModel.setup_anndata(ad, layer="counts", batch_key="batch")
    after = _snapshot(ad)
    assert before[:3] == after[:3]
    np.testing.assert_array_equal(before[3], after[3])


def test_ambient_corrected_counts_train_unchanged(adata):
    """Non-integer counts (ambient RNA removed) are accepted with a warning and reach the model
    as they are, in float32."""
    from scr2mae.data._inmemory import CellTensors

    m = sparse.csr_matrix(adata.layers["counts"]).astype(np.float32)
    rng = np.random.default_rng(0)
    m.data = (m.data * rng.uniform(0.7, 1.0, m.data.size)).astype(np.float32)
    adata.layers["counts"] = m
    with pytest.warns(UserWarning, match=r"adata.layers\['counts'\] holds non-integer counts: "):
        R2MAEModel.setup_anndata(adata, layer="counts", batch_key="batch")
    model = R2MAEModel(adata, **SMALL)
    tensors = CellTensors(model.adata_manager)
    assert tensors.val.dtype == torch.float32
    np.testing.assert_array_equal(tensors.val.numpy(), m.data)  # not rounded or truncated
    model.train(max_epochs=2, batch_size=50, enable_progress_bar=False)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.get_latent_representation()).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "missing"}, "layer 'missing'"),
        ({"batch_key": "donor"}, "batch_key"),
        ({"labels_key": "celltype"}, "labels_key"),
        ({"categorical_covariate_keys": ["nope"]}, "categorical_covariate_keys"),
        ({"continuous_covariate_keys": ["nope"]}, "continuous_covariate_keys"),
        ({"continuous_covariate_keys": ["batch"]}, "numeric"),
    ],
)
def test_unknown_keys_rejected(adata, kwargs, match):
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=match):
        R2MAEModel.setup_anndata(adata, **kwargs)
    assert _snapshot(adata)[:3] == before[:3]


def test_zero_genes_and_zero_cells_rejected(adata):
    with pytest.raises(ValueError, match="zero genes"):
        R2MAEModel.setup_anndata(adata[:, []].copy())
    with pytest.raises(ValueError, match="zero cells"):
        R2MAEModel.setup_anndata(adata[[]].copy())


def test_bad_model_arguments_rejected_before_training(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match="unknown masking strategy"):
        R2MAEModel(adata, mask_strategy="blocky")
    with pytest.raises(ValueError, match="p_min"):
        R2MAEModel(adata, mask_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="n_hidden"):
        R2MAEModel(adata, n_hidden=0)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        R2MAEModel(adata, mask_mode="rows")
    model = R2MAEModel(adata, **SMALL)
    with pytest.raises(ValueError, match="max_epochs"):
        model.train(max_epochs=0)


def test_genes_without_counts_are_accepted_with_a_warning(adata):
    ad = _corrupt("empty gene", adata)
    with pytest.warns(UserWarning, match="1 gene"):
        R2MAEModel.setup_anndata(ad, layer="counts", batch_key="batch")
    model = R2MAEModel(ad, **SMALL)
    model.train(max_epochs=2, batch_size=50, enable_progress_bar=False)
    assert np.isfinite(model.get_latent_representation()).all()
    expr = model.get_normalized_expression(return_numpy=True)
    assert np.isfinite(expr).all() and expr.shape == (ad.n_obs, ad.n_vars)


def test_covariates_are_used(adata):
    rng = np.random.default_rng(0)
    adata.obs["age"] = rng.normal(size=adata.n_obs)
    adata.obs["site"] = rng.choice(["a", "b", "c"], size=adata.n_obs)
    R2MAEModel.setup_anndata(
        adata,
        layer="counts",
        batch_key="batch",
        categorical_covariate_keys=["site"],
        continuous_covariate_keys=["age"],
    )
    # the paper's model: the encoder reads the batch too (the default with two batches does not)
    model = R2MAEModel(adata, **SMALL, batch_correction="none")
    # genes + one continuous + two batches + three sites enter the first encoder layer
    assert model.module.encoder.fc_layers[0][0].in_features == adata.n_vars + 1 + 2 + 3
    model.train(max_epochs=2, batch_size=50, enable_progress_bar=False)
    z = model.get_latent_representation()
    expr = model.get_normalized_expression(return_numpy=True)
    assert z.shape == (adata.n_obs, SMALL["n_latent"])
    # changing each covariate changes the embedding and the decoded expression
    for column, value in [("batch", None), ("site", None), ("age", 5.0)]:
        changed = adata.copy()
        if value is None:
            old = changed.obs[column].astype(str)
            cats = sorted(old.unique())
            changed.obs[column] = [cats[(cats.index(v) + 1) % len(cats)] for v in old]
        else:
            changed.obs[column] = changed.obs[column] + value
        for key in [k for k in changed.uns if k.startswith("_scvi")]:
            del changed.uns[key]
        z2 = model.get_latent_representation(changed)
        expr2 = model.get_normalized_expression(changed, return_numpy=True)
        assert np.abs(z2 - z).max() > 1e-3, column
        assert np.abs(expr2 - expr).max() > 1e-6, column


@pytest.mark.parametrize("strategy", ["cl", "cl_k0", "r2mae_cl", "R2MAE+CL (k=0)"])
def test_curriculum_strategies_train_without_nan(adata, strategy):
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="batch")
    ramp = {"multiplier_start_step": 2, "multiplier_end_step": 8}
    model = R2MAEModel(
        adata,
        mask_strategy=strategy,
        warmup_steps=2,
        **({} if "k" in strategy.lower() else ramp),
        **SMALL,
    )
    cur = model.module.curriculum
    assert cur is not None
    before = [p.detach().clone() for p in cur.generator_parameters()]
    model.train(max_epochs=3, batch_size=45, enable_progress_bar=False)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    # the generator trained with the model's optimiser after its warm-up
    after = list(cur.generator_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    # loss weights keep mean one over genes
    x = torch.as_tensor(adata.layers["counts"][:45], dtype=torch.float32)
    cur.eval()
    w = cur.weight_generator(x)
    np.testing.assert_allclose(w.mean(0).detach().numpy(), 1.0, rtol=1e-4)
    # the weights never touch the embedding path
    z = model.get_latent_representation()
    model.module.curriculum = None
    np.testing.assert_array_equal(z, model.get_latent_representation())


def test_curriculum_warmup_freezes_generator_under_weight_decay(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    model = R2MAEModel(adata, mask_strategy="r2mae_cl", warmup_steps=1000, **SMALL)
    before = [p.detach().clone() for p in model.module.curriculum.generator_parameters()]
    model.train(
        max_epochs=2,
        batch_size=45,
        plan_kwargs={"weight_decay": 1e-2},
        enable_progress_bar=False,
    )
    for a, b in zip(model.module.curriculum.generator_parameters(), before, strict=True):
        assert torch.equal(a.detach(), b)
    # while the rest of the model did train
    assert int(model.module.mask_step) == 8


def test_curriculum_uses_discrete_ratio_set(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    model = R2MAEModel(adata, mask_strategy="r2mae_cl", mask_range=(0.2, 0.6), n_ratios=5, **SMALL)
    ratios = model.module.masker.schedule.ratios
    assert ratios == pytest.approx((0.2, 0.3, 0.4, 0.5, 0.6))
    single = R2MAEModel(adata, mask_strategy="cl", mask_ratio=0.15, **SMALL)
    assert single.module.masker.schedule.ratios == (0.15,)
    with pytest.raises(ValueError, match="mask_range"):
        R2MAEModel(adata, mask_strategy="cl", mask_range=(0.1, 0.5))


def test_input_transform_option(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match="input_transform"):
        R2MAEModel(adata, input_transform="sqrt")
    model = R2MAEModel(adata, input_transform="log1p_cp10k", **SMALL)
    x = torch.as_tensor(adata.layers["counts"][:8], dtype=torch.float32)
    model.module.eval()
    z = model.module.inference(x, masking=False)["z"]
    # scaling a cell's counts leaves its normalised input, hence its embedding, unchanged
    z2 = model.module.inference(3 * x, masking=False)["z"]
    torch.testing.assert_close(z, z2, rtol=1e-4, atol=1e-4)
