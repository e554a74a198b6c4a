import numpy as np
import pytest
import scvi
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from scr2mae import R2MAEModel
from scr2mae.data import synthetic_donor_counts
from scr2mae.model._batch_correction import BatchClassifier, batch_mmd
from scr2mae.model._config import AUTO_BATCH_CORRECTION

SMALL = {"n_hidden": 32, "n_latent": 8}
FIT = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False}


@pytest.fixture
def adata():
    scvi.settings.seed = 0
    ad = scvi.data.synthetic_iid(batch_size=60, n_genes=40, n_batches=2, n_labels=3)
    ad.layers["counts"] = ad.X.copy()
    R2MAEModel.setup_anndata(ad, layer="counts", batch_key="batch")
    return ad


def batch_score(z, batches) -> float:
    """Cross-validated balanced accuracy of a logistic regression predicting the batch."""
    clf = LogisticRegression(max_iter=1000)
    return cross_val_score(clf, z, batches, cv=3, scoring="balanced_accuracy").mean()


# ------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_correction": "harmony"}, ValueError, "`batch_correction` must be 'auto' or"),
        ({"batch_correction": None}, ValueError, "`batch_correction` must be 'auto' or"),
        (
            {"batch_correction": "auto", "batch_correction_weight": 0.1},
            ValueError,
            "name the option",
        ),
        (
            {"batch_correction": "mmd", "batch_correction_weight": -1.0},
            ValueError,
            "finite number >= 0",
        ),
        (
            {"batch_correction": "mmd", "batch_correction_weight": float("nan")},
            ValueError,
            "finite number >= 0",
        ),
        (
            {"batch_correction": "adversarial", "batch_correction_weight": "1"},
            TypeError,
            "must be a number",
        ),
        (
            {"batch_correction": "none", "batch_correction_weight": 0.5},
            ValueError,
            "no extra loss term",
        ),
    ],
)
def test_bad_values_raise(adata, kwargs, error, match):
    with pytest.raises(error, match=match):
        R2MAEModel(adata, **SMALL, **kwargs)


def test_correction_needs_batches(adata):
    R2MAEModel.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match=r"needs at least 2 batches.*batch_key"):
        R2MAEModel(adata, **SMALL, batch_correction="decoder_only")
    # the paper's setting stays reachable without batches
    assert R2MAEModel(adata, **SMALL).module.batch_correction == "none"


def test_default_corrects_batches_when_there_are_some(adata):
    # two batches: "auto" resolves to the integrating option, saved as such (not "auto")
    model = R2MAEModel(adata, **SMALL)
    assert model.module.batch_correction == AUTO_BATCH_CORRECTION == "mmd"
    assert model.init_params_["non_kwargs"]["batch_correction"] == "mmd"
    assert "batch_correction: mmd" in model._model_summary_string
    # one batch (no batch key): the paper's model
    R2MAEModel.setup_anndata(adata, layer="counts")
    single = R2MAEModel(adata, **SMALL)
    assert single.module.batch_correction == "none"
    assert single.init_params_["non_kwargs"]["batch_correction"] == "none"
    # a batch key whose column holds one batch: also the paper's model
    adata.obs["one"] = "a"
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="one")
    assert R2MAEModel(adata, **SMALL).module.batch_correction == "none"


def test_auto_resolved_option_survives_reload_and_query(adata, tmp_path):
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=1, batch_size=40, **FIT)
    model.save(tmp_path / "m")
    loaded = R2MAEModel.load(tmp_path / "m", adata=adata)
    assert loaded.module.batch_correction == "mmd"
    # a query of one new batch: it would resolve to "none" on its own, but keeps the
    # reference's option (whose batch-blind encoder also embeds it zero-shot)
    query = adata[:40].copy()
    query.obs["batch"] = "batch_new"
    query.obs = query.obs[["batch", "labels"]]
    query = R2MAEModel.prepare_query_anndata(query, model)
    q = R2MAEModel.load_query_data(query, loaded)
    assert q.module.batch_correction == "mmd"
    q.train(max_epochs=1, batch_size=20, **FIT)
    assert np.isfinite(q.get_latent_representation()).all()
    zero_shot = adata[:40].copy()
    zero_shot.obs["batch"] = "unseen"
    z = model.get_latent_representation(
        R2MAEModel.prepare_query_anndata(zero_shot[:, ::-1].copy(), model)
    )
    np.testing.assert_allclose(z, model.get_latent_representation(adata[:40]), atol=1e-5)


def test_weights_default(adata):
    defaults = {"decoder_only": 0.0, "adversarial": 0.1, "mmd": 0.1, "variational": 1.0}
    for option, weight in defaults.items():
        module = R2MAEModel(adata, **SMALL, batch_correction=option).module
        assert module.batch_correction_weight == weight
    # with the paper's loss (masked genes only) the MMD keeps its smaller weight
    paper = R2MAEModel(adata, **SMALL, batch_correction="mmd", visible_weight=0).module
    assert paper.batch_correction_weight == 0.03
    assert (
        R2MAEModel(
            adata, **SMALL, batch_correction="mmd", batch_correction_weight=0.2
        ).module.batch_correction_weight
        == 0.2
    )


# ------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("option", ["decoder_only", "adversarial", "mmd", "variational"])
def test_encoder_blind_to_batch_decoder_conditioned(adata, option):
    module = R2MAEModel(adata, **SMALL, batch_correction=option).module.eval()
    x = torch.as_tensor(adata.layers["counts"][:6], dtype=torch.float32)
    zeros, ones = torch.zeros(6, 1), torch.ones(6, 1)
    # the encoder's first layer reads the genes only
    assert module.encoder.fc_layers[0][0].in_features == adata.n_vars
    z0 = module.inference(x, batch_index=zeros, masking=False)["z"]
    z1 = module.inference(x, batch_index=ones, masking=False)["z"]
    torch.testing.assert_close(z0, z1)
    lib = x.sum(1, keepdim=True)
    p0 = module.generative(z0, lib, batch_index=zeros)["px_scale"]
    p1 = module.generative(z0, lib, batch_index=ones)["px_scale"]
    assert not torch.allclose(p0, p1)
    # the plain model's encoder reads the batch
    plain = R2MAEModel(adata, **SMALL, batch_correction="none").module.eval()
    assert plain.encoder.fc_layers[0][0].in_features == adata.n_vars + 2
    assert (plain.batch_classifier is None) and (option == "adversarial") == (
        module.batch_classifier is not None
    )


# ------------------------------------------------------------------------- loss
@pytest.mark.parametrize("option", ["none", "decoder_only", "adversarial", "mmd", "variational"])
def test_masked_reconstruction_loss_path_intact(adata, option):
    torch.manual_seed(0)
    module = R2MAEModel(adata, **SMALL, batch_correction=option).module.train()
    rows = np.r_[0:20, 60:80]  # both batches
    x = torch.as_tensor(adata.layers["counts"][rows], dtype=torch.float32)
    batch = torch.as_tensor(adata.obs["_scvi_batch"].to_numpy()[rows, None])
    assert batch.unique().numel() == 2
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, ::3] = True
    tensors = {"X": x, "batch": batch}
    inf = module.inference(x, batch_index=batch, mask=mask)
    gen = module.generative(**module._get_generative_input(tensors, inf))
    out = module.loss(tensors, inf, gen)
    # reconstruction: NB NLL of the masked genes, per masked entry of each cell
    nll = -gen["px"].log_prob(x)
    expected = torch.where(mask, nll, torch.zeros_like(nll))
    per_cell = expected.sum(1) / mask.sum(1)
    torch.testing.assert_close(out.reconstruction_loss["reconstruction_loss"], per_cell)
    # plus the visible genes' mean NLL, at the default weight 1
    assert module.visible_weight == 1.0
    nb_mean = expected.sum() / mask.sum() + torch.where(mask, 0.0, nll).sum() / (~mask).sum()
    extra = out.extra_metrics
    if option in ("adversarial", "mmd", "variational"):
        term = extra["batch_correction_loss"]
        assert term > 0
        torch.testing.assert_close(out.loss, nb_mean + term)
    else:
        assert "batch_correction_loss" not in extra
        torch.testing.assert_close(out.loss, nb_mean)
    if option == "variational":
        # the KL of N(mu, s²) from N(0, 1), summed over latent dimensions, averaged over
        # cells, over the expected masked genes per cell: 0.3 of 60 for U(0.1, 0.5), whatever
        # the mask's own ratio (here 1/3)
        mu, var = inf["qz"].loc, inf["qz"].scale.pow(2)
        kl = 0.5 * (mu.pow(2) + var - 1.0 - var.log()).sum(1).mean()
        torch.testing.assert_close(extra["batch_correction_loss"], kl / (0.3 * x.shape[1]))


def test_batch_mmd_zero_for_same_distribution_and_grows_with_shift():
    torch.manual_seed(0)
    z = torch.randn(200, 4)
    batch = torch.arange(200) % 2
    same = batch_mmd(torch.cat([z[:100], z[:100]]), torch.repeat_interleave(batch[:2], 100), 2)
    assert abs(float(same)) < 1e-5
    mixed = batch_mmd(z, batch, 2)
    shifted = batch_mmd(z + 2.0 * batch[:, None], batch, 2)
    assert float(mixed) < 0.1 * float(shifted)
    # scale-free: shrinking the latent space does not lower the penalty
    torch.testing.assert_close(batch_mmd(0.01 * (z + 2.0 * batch[:, None]), batch, 2), shifted)
    # one batch only, or a batch absent from the mini-batch: no penalty
    assert float(batch_mmd(z, torch.zeros(200, dtype=torch.long), 3)) == 0.0


def test_adversary_reverses_the_gradient_reaching_the_latent():
    torch.manual_seed(0)
    clf = BatchClassifier(n_latent=4, n_batch=3)
    z = torch.randn(30, 4, requires_grad=True)
    batch = torch.arange(30) % 3
    clf.adversarial_loss(z, batch, weight=0.5).backward()
    reversed_grad = z.grad.clone()
    z.grad = None
    torch.nn.functional.cross_entropy(clf(z), batch).backward()
    torch.testing.assert_close(reversed_grad, -0.5 * z.grad)


def test_variational_samples_in_training_and_embeds_the_mean(adata):
    torch.manual_seed(0)
    model = R2MAEModel(adata, **SMALL, dropout_rate=0.0, batch_correction="variational")
    module = model.module
    x = torch.as_tensor(adata.layers["counts"][:10], dtype=torch.float32)
    batch = torch.zeros(10, 1)
    module.train()
    mask = torch.zeros_like(x, dtype=torch.bool)
    a = module.inference(x, batch_index=batch, mask=mask)
    b = module.inference(x, batch_index=batch, mask=mask)
    assert not torch.allclose(a["z"], b["z"])  # a fresh sample each step
    torch.testing.assert_close(a["qz"].loc, b["qz"].loc)
    module.eval()
    c = module.inference(x, batch_index=batch, masking=False)
    torch.testing.assert_close(c["z"], c["qz"].loc)  # embeddings are the posterior mean
    # the deterministic options carry no posterior
    plain = R2MAEModel(adata, **SMALL, batch_correction="mmd").module.eval()
    point = plain.inference(x, batch_index=batch, masking=False)
    # the deterministic encoder's posterior is a point mass at its code
    torch.testing.assert_close(point["qz"].loc, point["z"], rtol=0, atol=0)
    assert float(point["qz"].scale.abs().max()) == 0.0


# ------------------------------------------------------------------------- behaviour
@pytest.fixture(scope="module")
def donor_scores():
    """Donor and cell-type predictability of the latent of each option, on shifted donors."""
    ad = synthetic_donor_counts(n_donors=4, cells_per_donor=100, n_genes=200, donor_effect=0.3)
    R2MAEModel.setup_anndata(ad, layer="counts", batch_key="donor_id")
    donors = ad.obs["donor_id"].to_numpy()
    types = ad.obs["cell_type"].to_numpy()
    scores = {}
    for option in ("none", "adversarial", "mmd", "variational"):
        scvi.settings.seed = 0
        model = R2MAEModel(ad, n_hidden=64, n_latent=16, batch_correction=option)
        # the default logger records the history (with the separate batch term)
        model.train(max_epochs=60, batch_size=64, enable_progress_bar=False)
        z = model.get_latent_representation()
        history = model.history.get("batch_correction_loss_train")
        finite = history is None or np.isfinite(history.to_numpy(dtype=float)).all()
        scores[option] = (batch_score(z, donors), batch_score(z, types), finite)
    return scores


def test_plain_latent_keeps_the_donor(donor_scores):
    donor, cell_type, _ = donor_scores["none"]
    assert donor > 0.85  # the plain latent carries the donor (chance: 0.25); measured 0.95
    assert cell_type > 0.6  # and the cell types (chance: 0.2); measured 0.72


# measured at the default weights (balanced accuracy, none: donor 0.95, cell type 0.72):
# adversarial 0.87 / 0.72, mmd 0.63 / 0.73, variational 0.80 / 0.42 -- the variational
# bottleneck at weight 1 costs cell-type separability on these data
EXPECTED = {"adversarial": (0.04, 0.6), "mmd": (0.2, 0.6), "variational": (0.08, 0.3)}


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_correction_removes_the_donor_and_keeps_cell_types(donor_scores, option):
    donor, cell_type, finite = donor_scores[option]
    least_drop, least_cell_type = EXPECTED[option]
    assert finite
    assert donor < donor_scores["none"][0] - least_drop
    # cell types stay separable above chance (0.2): a correction that collapsed the latent
    # would pass the donor check and fail this one
    assert cell_type > least_cell_type


# ------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("option", ["adversarial", "mmd", "variational"])
def test_save_load_keeps_option(adata, option, tmp_path):
    model = R2MAEModel(adata, **SMALL, batch_correction=option, batch_correction_weight=0.3)
    model.train(max_epochs=1, batch_size=40, **FIT)
    model.save(tmp_path / "m")
    loaded = R2MAEModel.load(tmp_path / "m", adata=adata)
    assert loaded.init_params_["non_kwargs"]["batch_correction"] == option
    assert loaded.module.batch_correction == option
    assert loaded.module.batch_correction_weight == 0.3
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )


@pytest.mark.parametrize("option", ["decoder_only", "adversarial", "variational"])
def test_load_query_data_with_correction(adata, option):
    model = R2MAEModel(adata, **SMALL, batch_correction=option)
    model.train(max_epochs=1, batch_size=40, **FIT)
    query = adata[:50].copy()
    query.obs["batch"] = "batch_new"
    query.obs = query.obs[["batch", "labels"]]
    query = R2MAEModel.prepare_query_anndata(query, model)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    q = R2MAEModel.load_query_data(query, model)
    assert q.module.batch_correction == option
    q.train(max_epochs=1, batch_size=25, **FIT)
    z = q.get_latent_representation()
    assert z.shape == (50, SMALL["n_latent"]) and np.isfinite(z).all()
    after = q.module.state_dict()
    for key, value in before.items():
        if value.dim() == 0:
            continue
        n = value.shape[-1]
        torch.testing.assert_close(after[key][..., :n].cpu(), value.cpu(), msg=key)
