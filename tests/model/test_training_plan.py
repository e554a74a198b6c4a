import numpy as np
import pytest
import scvi
import torch
from scvi.dataloaders import DataSplitter

from scr2mae import R2MAEModel, R2MAEModule
from scr2mae.data import InMemoryDataModule
from scr2mae.masking import hashed_mask
from scr2mae.model import PAPER_OPTIMIZER, R2MAETrainingPlan

SMALL = {"n_hidden": 16, "n_latent": 4}


@pytest.fixture
def adata():
    scvi.settings.seed = 0
    ad = scvi.data.synthetic_iid(batch_size=100, n_genes=40, n_batches=2, n_labels=2)
    R2MAEModel.setup_anndata(ad, batch_key="batch")
    return ad


def test_schedule_length_follows_a_data_module_with_another_batch_size(adata):
    # train(batch_size=50) would size the schedule for 4 steps per epoch; the data module
    # makes 9 (180 training cells / 20): the schedule must end exactly with training
    model = R2MAEModel(adata, mask_strategy="dynamic", start=0.5, end=0.1, **SMALL)
    dm = DataSplitter(model.adata_manager, batch_size=20, train_size=0.9)
    model.train(max_epochs=2, batch_size=50, datamodule=dm, enable_progress_bar=False)
    steps = int(model.module.mask_step)
    assert steps == model.trainer.global_step == 2 * 9
    assert model.module.masker.schedule.total_steps == steps
    # the same with the fast path's data module
    model = R2MAEModel(adata, mask_strategy="dynamic", start=0.5, end=0.1, **SMALL)
    dm = InMemoryDataModule(model.adata_manager, batch_size=20, train_size=0.9)
    model.train(max_epochs=2, batch_size=50, datamodule=dm, enable_progress_bar=False)
    assert model.module.masker.schedule.total_steps == int(model.module.mask_step) == 18


def test_optimiser_defaults_are_the_papers_and_plan_kwargs_override(adata):
    model = R2MAEModel(adata, **SMALL)
    plan = R2MAETrainingPlan(model.module)
    group = plan.configure_optimizers()["optimizer"].param_groups[0]
    assert {k: group[k] for k in ("lr", "weight_decay", "eps")} == {
        k: PAPER_OPTIMIZER[k] for k in ("lr", "weight_decay", "eps")
    }
    model.train(
        max_epochs=1,
        batch_size=50,
        plan_kwargs={"lr": 3e-3, "eps": 0.01},
        enable_progress_bar=False,
    )
    group = model.trainer.optimizers[0].param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"]) == (3e-3, 0.01, 1e-4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        model.train(max_epochs=1, lr=1e-3)


def test_query_models_train_without_weight_decay_unless_asked(adata):
    reference = R2MAEModel(adata, **SMALL)
    reference.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
    query = adata.copy()
    query.obs["batch"] = "batch_new"
    query = R2MAEModel.prepare_query_anndata(query, reference)
    model = R2MAEModel.load_query_data(query, reference)
    model.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
    assert model.trainer.optimizers[0].param_groups[0]["weight_decay"] == 0.0
    model.train(
        max_epochs=1, batch_size=50, plan_kwargs={"weight_decay": 1e-3}, enable_progress_bar=False
    )
    assert model.trainer.optimizers[0].param_groups[0]["weight_decay"] == 1e-3


def test_epoch_metrics_are_weighted_means_of_the_steps(adata):
    model = R2MAEModel(adata, mask_strategy="fixed", mask_ratio=0.25, **SMALL)
    model.train(
        max_epochs=2,
        batch_size=50,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
    )
    history = model.history
    for key in ("train_loss", "validation_loss", "masked_nll_validation", "masked_nll_train"):
        values = history[key].to_numpy(dtype=float).ravel()
        assert len(values) == 2 and np.isfinite(values).all()
    np.testing.assert_allclose(history["masked_fraction_train"].to_numpy(float), 10 / 40)
    assert "elbo_validation" not in history  # a per-cell sum that moved with the drawn ratio

    # the logged validation metric, by hand: the NB NLL of the held-out cells at their
    # fixed validation masks, summed over the masked entries and divided by their number
    module = model.module.eval()
    cells = model.validation_indices
    x = torch.as_tensor(adata.X[cells], dtype=torch.float32)
    batch = torch.as_tensor(adata.obs["_scvi_batch"].to_numpy()[cells, None])
    ratios = module.validation_ratios()
    np.testing.assert_allclose(ratios.numpy(), [0.25] * 5)  # a fixed ratio spans itself
    mask, _ = hashed_mask(x, ratios)
    with torch.no_grad():
        inf = module.inference(x, batch_index=batch, mask=mask)
        gen = module.generative(**module._get_generative_input({"batch": batch}, inf))
        nll = -gen["px"].log_prob(x)
    expected = float(nll[mask].sum() / mask.sum())
    np.testing.assert_allclose(history["masked_nll_validation"].iloc[-1, 0], expected, rtol=1e-5)
    # the same through scvi-tools' VAEMixin (per cell, then averaged over cells)
    error = model.get_reconstruction_error(indices=cells)["reconstruction_loss"]
    per_cell = (torch.where(mask, nll, 0).sum(1) / mask.sum(1)).mean()
    np.testing.assert_allclose(float(error), float(per_cell), rtol=1e-5)


def test_validation_masks_do_not_depend_on_the_batch_or_the_call(adata):
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=1, batch_size=50, enable_progress_bar=False)
    cells = model.validation_indices
    first = model.get_reconstruction_error(indices=cells, batch_size=7)
    again = model.get_reconstruction_error(indices=cells[::-1], batch_size=64)
    np.testing.assert_allclose(
        float(first["reconstruction_loss"]), float(again["reconstruction_loss"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        model.module.validation_ratios().numpy(), [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-6
    )


def test_step_logging_every_n_steps(adata, monkeypatch):
    logged = []
    original = R2MAETrainingPlan.log

    def spy(self, name, value, *args, **kwargs):
        if name == "train_loss_step":
            logged.append((int(self.global_step), float(value)))
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(R2MAETrainingPlan, "log", spy)
    model = R2MAEModel(adata, **SMALL)
    model.train(
        max_epochs=2,
        batch_size=20,
        plan_kwargs={"on_step": True},
        log_every_n_steps=3,
        enable_progress_bar=False,
    )
    assert [step for step, _ in logged] == list(range(0, 18, 3))
    assert np.isfinite([value for _, value in logged]).all()
    # without on_step nothing is logged per step
    logged.clear()
    R2MAEModel(adata, **SMALL).train(max_epochs=1, batch_size=20, enable_progress_bar=False)
    assert logged == []


def test_default_length_is_about_a_thousand_steps_and_never_longer_than_before():
    from scr2mae.model import default_max_epochs

    assert default_max_epochs(1886) == 74  # the Baron pancreas of the length benchmark
    assert default_max_epochs(2000) <= 150
    assert default_max_epochs(700) == 200 and default_max_epochs(10_000) == 30
    for n in (10, 100, 700, 2_000, 20_000, 100_000, 1_000_000, 5_000_000):
        before = min(400, max(1, round(20000 / n * 400)))
        assert 1 <= default_max_epochs(n) <= before  # never more passes over the data


def test_adam_is_fused_on_the_cpu_with_and_without_a_curriculum(adata):
    for strategy in ("r2mae", "r2mae_cl"):
        model = R2MAEModel(adata, mask_strategy=strategy, **SMALL)
        optimizer = R2MAETrainingPlan(model.module).configure_optimizers()["optimizer"]
        assert optimizer.defaults["fused"] is True
        assert sum(len(group["params"]) for group in optimizer.param_groups) == len(
            list(model.module.parameters())
        )
    plan = R2MAETrainingPlan(R2MAEModel(adata, **SMALL).module, optimizer="AdamW")
    assert plan.configure_optimizers()["optimizer"].defaults["fused"] is True


def test_epoch_train_loss_is_the_cell_weighted_mean_of_the_step_losses(adata):
    import lightning.pytorch as pl

    steps = []

    class Steps(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append((float(outputs["loss"]), batch["X"].shape[0]))

    model = R2MAEModel(adata, **SMALL)
    # 180 training cells in mini-batches of 70: 70, 70 and 40 cells
    model.train(max_epochs=1, batch_size=70, callbacks=[Steps()], enable_progress_bar=False)
    assert [n for _, n in steps] == [70, 70, 40]
    expected = sum(loss * n for loss, n in steps) / sum(n for _, n in steps)
    np.testing.assert_allclose(model.history["train_loss"].iloc[-1, 0], expected, rtol=1e-6)


def test_masked_nll_is_the_epochs_sum_over_its_entries(adata, monkeypatch):
    """Per masked entry over the whole epoch (not a mean of the steps' means): the steps
    draw different ratios, so they hold different numbers of entries."""
    steps = []
    loss = R2MAEModule.loss

    def recording(self, *args, **kwargs):
        out = loss(self, *args, **kwargs)
        if self.training:
            extra = out.extra_metrics
            steps.append((float(extra["scored_nll_sum"]), float(extra["scored_entries"])))
        return out

    monkeypatch.setattr(R2MAEModule, "loss", recording)
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=2, batch_size=40, enable_progress_bar=False)
    assert len(steps) == 10 and len({n for _, n in steps}) > 1
    for epoch, logged in enumerate(model.history["masked_nll_train"].to_numpy(float).ravel()):
        epoch_steps = steps[5 * epoch : 5 * (epoch + 1)]
        expected = sum(s for s, _ in epoch_steps) / sum(n for _, n in epoch_steps)
        np.testing.assert_allclose(logged, expected, rtol=1e-6)
