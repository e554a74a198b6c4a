import numpy as np
import pytest
import scvi
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.dataloaders import AnnDataLoader, DataSplitter

from scr2mae import R2MAEModel
from scr2mae.data import InMemoryDataModule, inference_batches
from scr2mae.data._inmemory import CellTensors, _steps

SMALL = {"n_hidden": 16, "n_latent": 4}


def _adata(layout: str = "csr", n: int = 203, g: int = 37) -> AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.4, (n, g)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    matrix = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "dense": np.asarray}[layout]
    adata = AnnData(X=matrix(counts))
    adata.obs["donor"] = [f"d{i % 3}" for i in range(n)]
    adata.obs["site"] = [f"s{i % 2}" for i in range(n)]
    adata.obs["age"] = rng.uniform(20, 80, n)
    R2MAEModel.setup_anndata(
        adata,
        batch_key="donor",
        categorical_covariate_keys=["site"],
        continuous_covariate_keys=["age"],
    )
    return adata


def _manager(adata):
    return R2MAEModel(adata, **SMALL).adata_manager


@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_gather_returns_exactly_the_rows_asked_for_with_aligned_covariates(layout):
    adata = _adata(layout)
    manager = _manager(adata)
    idx = torch.tensor([5, 0, 202, 17, 17, 99])
    batch = CellTensors(manager).gather(idx)
    dense = adata.X.toarray() if sparse.issparse(adata.X) else adata.X
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.X_KEY].numpy(), dense[idx.numpy()])
    codes = adata.obs["_scvi_batch"].to_numpy()
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.BATCH_KEY].numpy().ravel(), codes[idx])
    np.testing.assert_allclose(
        batch[REGISTRY_KEYS.CONT_COVS_KEY].numpy().ravel(),
        adata.obs["age"].to_numpy()[idx.numpy()],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.INDICES_KEY].numpy(), idx.numpy())
    # the very tensors scvi-tools' loader gives for the same cells
    reference = next(iter(AnnDataLoader(manager, indices=idx.numpy(), batch_size=len(idx))))
    for key in (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CAT_COVS_KEY):
        torch.testing.assert_close(batch[key], reference[key].to(torch.float32))


def test_both_csr_densifications_match_scipy_with_empty_rows_and_duplicate_entries():
    # the compiled CPU pass and the vectorised torch path (used where the model runs on an
    # accelerator) must give SciPy's dense rows; a non-canonical CSR repeats entries of a row
    rng = np.random.default_rng(3)
    counts = sparse.random(60, 40, density=0.2, format="csr", random_state=4, dtype=np.float32)
    counts.data[:] = rng.integers(1, 9, counts.nnz)
    counts[7] = 0  # an empty row
    counts.eliminate_zeros()
    indptr = counts.indptr.copy()
    indptr[-1] += 2  # the last row gets two extra entries of gene 3
    duplicated = sparse.csr_matrix(
        (np.r_[counts.data, [2.0, 5.0]], np.r_[counts.indices, [3, 3]], indptr),
        shape=counts.shape,
    )
    assert not duplicated.has_canonical_format
    tensors = CellTensors.from_arrays(duplicated, {})
    idx = torch.tensor([59, 7, 0, 59, 33])
    expected = duplicated.toarray()[idx.numpy()]
    np.testing.assert_array_equal(tensors._densify_on_cpu(idx).numpy(), expected)
    np.testing.assert_array_equal(
        tensors._densify_vectorised(idx, torch.device("cpu")).numpy(), expected
    )
    np.testing.assert_array_equal(tensors.gather(idx)[REGISTRY_KEYS.X_KEY].numpy(), expected)
    for bad in ([60], [-1], [3, 60]):  # rows that do not exist are an error, on both paths
        with pytest.raises(IndexError):
            tensors._densify_on_cpu(torch.tensor(bad))
        with pytest.raises(IndexError):
            tensors._densify_vectorised(torch.tensor(bad), torch.device("cpu"))


def test_cpu_gather_compiles_without_a_writable_cache(monkeypatch):
    import numba

    from scr2mae.data import _inmemory

    real_njit = numba.njit

    def no_cache_location(*args, cache=False, **kwargs):
        if cache:  # what numba raises when it finds no writable cache location
            raise RuntimeError("cannot cache function '_densify_loop': no locator available")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_cache_location)
    monkeypatch.setattr(_inmemory, "_DENSIFY_ROWS", None)
    counts = sparse.random(20, 15, density=0.3, format="csr", random_state=1, dtype=np.float32)
    idx = torch.tensor([3, 19, 0])
    dense = CellTensors.from_arrays(counts, {})._densify_on_cpu(idx)
    np.testing.assert_array_equal(dense.numpy(), counts.toarray()[idx.numpy()])
    monkeypatch.setattr(_inmemory, "_DENSIFY_ROWS", None)  # the next use compiles afresh


def test_epoch_visits_every_training_cell_once_and_reshuffles():
    scvi.settings.seed = 0
    dm = InMemoryDataModule(_manager(_adata()), batch_size=16)
    loader = dm.train_dataloader()
    epochs = [torch.cat([b[REGISTRY_KEYS.INDICES_KEY] for b in loader]) for _ in range(2)]
    for seen in epochs:
        assert len(seen) == dm.n_train
        np.testing.assert_array_equal(np.sort(seen.numpy()), np.sort(dm.train_idx))
    assert not torch.equal(epochs[0], epochs[1])
    assert len(loader) == len([b for b in dm.train_dataloader()])
    # every mini-batch has at least two cells (batch norm)
    assert min(len(b[REGISTRY_KEYS.INDICES_KEY]) for b in loader) >= 2


def test_split_is_scvi_tools_split_and_order_is_reproducible():
    adata = _adata()
    manager = _manager(adata)
    orders = []
    for _ in range(2):
        scvi.settings.seed = 7
        dm = InMemoryDataModule(manager, batch_size=16, train_size=0.8)
        splitter = DataSplitter(manager, train_size=0.8, batch_size=16)
        splitter.setup()
        np.testing.assert_array_equal(dm.train_idx, splitter.train_idx)
        np.testing.assert_array_equal(dm.val_idx, splitter.val_idx)
        orders.append(torch.cat([b[REGISTRY_KEYS.INDICES_KEY] for b in dm.train_dataloader()]))
        val = torch.cat([b[REGISTRY_KEYS.INDICES_KEY] for b in dm.val_dataloader()])
        np.testing.assert_array_equal(val.numpy(), dm.val_idx)  # fixed order
    torch.testing.assert_close(orders[0], orders[1])
    scvi.settings.seed = 8
    other = InMemoryDataModule(manager, batch_size=16, train_size=0.8)
    assert not np.array_equal(other.val_idx, dm.val_idx)


@pytest.mark.parametrize(("n", "batch_size", "world"), [(203, 16, 1), (203, 16, 2), (17, 4, 2)])
def test_steps_deal_every_cell_once_with_equal_step_counts(n, batch_size, world):
    order = torch.randperm(n)
    per_rank = [_steps(order, batch_size, r, world) for r in range(world)]
    assert len({len(steps) for steps in per_rank}) == 1
    seen = torch.cat([torch.cat(steps) for steps in per_rank])
    np.testing.assert_array_equal(np.sort(seen.numpy()), np.arange(n))
    assert min(len(s) for steps in per_rank for s in steps) >= 2


def test_fast_path_and_scvi_loader_give_the_same_loss_on_the_same_batch():
    adata = _adata()
    model = R2MAEModel(adata, **SMALL)
    module = model.module.eval()
    idx = np.arange(40, 72)
    fast = CellTensors(model.adata_manager).gather(torch.from_numpy(idx))
    slow = next(iter(AnnDataLoader(model.adata_manager, indices=idx, batch_size=len(idx))))
    mask = torch.rand(len(idx), adata.n_vars, generator=torch.Generator().manual_seed(0)) < 0.3
    losses = []
    for tensors in (fast, slow):
        inf = module.inference(**module._get_inference_input(tensors), mask=mask)
        gen = module.generative(**module._get_generative_input(tensors, inf))
        losses.append(module.loss(tensors, inf, gen).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_train_defaults_to_fast_path_and_keeps_scvi_switch():
    adata = _adata()
    scvi.settings.seed = 0
    fast = R2MAEModel(adata, **SMALL)
    fast.train(max_epochs=2, batch_size=32, enable_progress_bar=False)
    assert isinstance(fast.trainer.datamodule, InMemoryDataModule)
    scvi.settings.seed = 0
    slow = R2MAEModel(adata, **SMALL)
    slow.train(max_epochs=2, batch_size=32, enable_progress_bar=False, data_loader="scvi")
    assert isinstance(slow.trainer.datamodule, DataSplitter)
    # same held-out cells either way
    np.testing.assert_array_equal(fast.validation_indices, slow.validation_indices)
    assert int(fast.module.mask_step) == int(slow.module.mask_step) == 2 * 6
    with pytest.raises(ValueError, match="data_loader"):
        fast.train(max_epochs=1, data_loader="fast")


def test_get_methods_use_the_fast_iterator_with_scvi_loader_results():
    adata = _adata("csc")
    model = R2MAEModel(adata, **SMALL)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    idx = np.array([9, 3, 150, 4])
    loader = model._make_data_loader(adata, indices=idx, batch_size=3)
    assert not isinstance(loader, AnnDataLoader)
    z = model.get_latent_representation(indices=idx, batch_size=3)
    module = model.module
    with torch.inference_mode():
        ref = AnnDataLoader(model.adata_manager, indices=idx, batch_size=3)
        z_ref = torch.cat(
            [module.inference(**module._get_inference_input(t), masking=False)["z"] for t in ref]
        )
    np.testing.assert_allclose(z, z_ref.numpy(), rtol=1e-5, atol=1e-6)
    ordered = torch.cat(
        [
            b[REGISTRY_KEYS.INDICES_KEY]
            for b in inference_batches(model.adata_manager, idx, batch_size=3)
        ]
    )
    np.testing.assert_array_equal(ordered.numpy(), idx)
