import numpy as np
import pytest
import scvi
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scr2mae import R2MAEModel
from scr2mae.data import InMemoryDataModule, OnDiskDataModule, read_backed


@pytest.fixture(scope="module")
def counts_adata():
    rng = np.random.default_rng(0)
    n, g = 310, 25
    counts = rng.poisson(0.5, (n, g)).astype(np.float32)
    counts[:, 0] += 1
    adata = AnnData(X=sparse.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.obs["donor"] = [f"d{i % 4}" for i in range(n)]
    return adata


@pytest.fixture(params=["h5ad", "zarr"])
def on_disk(request, counts_adata, tmp_path):
    path = tmp_path / f"cells.{request.param}"
    getattr(counts_adata, f"write_{request.param}")(path)
    adata = read_backed(path)
    R2MAEModel.setup_anndata(adata, batch_key="donor")
    return adata


def _manager(adata):
    return R2MAEModel(adata, n_hidden=16, n_latent=4).adata_manager


def test_reader_covers_every_training_cell_once_with_the_right_rows(on_disk, counts_adata):
    scvi.settings.seed = 0
    dm = OnDiskDataModule(_manager(on_disk), batch_size=32, chunk_size=40, buffer_chunks=2)
    dense = counts_adata.X.toarray()
    codes = on_disk.obs["_scvi_batch"].to_numpy()
    orders = []
    loader = dm.train_dataloader()
    for _ in range(2):
        seen = []
        for batch in loader:
            idx = batch[REGISTRY_KEYS.INDICES_KEY].numpy()
            np.testing.assert_array_equal(batch[REGISTRY_KEYS.X_KEY].numpy(), dense[idx])
            np.testing.assert_array_equal(
                batch[REGISTRY_KEYS.BATCH_KEY].numpy().ravel(), codes[idx]
            )
            assert len(idx) >= 2
            seen.append(idx)
        seen = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(seen), np.sort(dm.train_idx))
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # a new chunk order and shuffle each epoch
    assert len(dm.train_dataloader()) == len(list(dm.train_dataloader()))
    val = np.concatenate([b[REGISTRY_KEYS.INDICES_KEY].numpy() for b in dm.val_dataloader()])
    np.testing.assert_array_equal(val, np.sort(dm.val_idx))
    # the same split as the in-memory path
    memory = InMemoryDataModule(_manager(counts_adata_registered(counts_adata)), batch_size=32)
    np.testing.assert_array_equal(np.sort(memory.train_idx), np.sort(dm.train_idx))


def counts_adata_registered(adata):
    adata = adata.copy()
    R2MAEModel.setup_anndata(adata, batch_key="donor")
    return adata


def test_train_reads_a_backed_anndata_from_disk(on_disk):
    model = R2MAEModel(on_disk, n_hidden=16, n_latent=4)
    model.train(max_epochs=3, batch_size=32, enable_progress_bar=False)
    assert isinstance(model.trainer.datamodule, OnDiskDataModule)
    losses = model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert np.isfinite(losses).all() and len(losses) == 3
    # 279 training cells in mini-batches of 32: 9 steps per epoch
    assert int(model.module.mask_step) == model.trainer.global_step == 3 * 9
    assert model.get_latent_representation().shape == (on_disk.n_obs, 4)
    with pytest.raises(ValueError, match="backed"):
        model.train(max_epochs=1, data_loader="in_memory")


def test_bad_arguments(on_disk, tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        OnDiskDataModule(_manager(on_disk), chunk_size=0)
    with pytest.raises(ValueError, match="must end in"):
        read_backed(tmp_path)
    assert torch.get_default_dtype() == torch.float32
