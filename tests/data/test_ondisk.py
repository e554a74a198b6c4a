import inspect

import numpy as np
import pytest
import scvi
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scr2mae import R2MAEModel
from scr2mae.data import InMemoryDataModule, OnDiskDataModule, read_backed
from scr2mae.data._ondisk import _RowReader


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
    val_loader = dm.val_dataloader()
    vals = [
        np.concatenate([b[REGISTRY_KEYS.INDICES_KEY].numpy() for b in val_loader]) for _ in range(2)
    ]
    np.testing.assert_array_equal(np.sort(vals[0]), np.sort(dm.val_idx))
    np.testing.assert_array_equal(vals[0], vals[1])  # one fixed validation order
    assert not np.array_equal(vals[0], np.sort(dm.val_idx))  # mixed, not in file order
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


def _donor_sorted(tmp_path, n_donors=20, per_donor=200):
    """A backed .h5ad whose rows are sorted by donor, and the same cells in memory."""
    rng = np.random.default_rng(1)
    n = n_donors * per_donor
    counts = rng.poisson(0.5, (n, 12)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    counts = sparse.csr_matrix(counts)
    adata = AnnData(X=counts)
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.obs["donor"] = np.repeat([f"d{d:02d}" for d in range(n_donors)], per_donor)
    adata.write_h5ad(tmp_path / "sorted.h5ad")
    backed = read_backed(tmp_path / "sorted.h5ad")
    R2MAEModel.setup_anndata(backed, batch_key="donor")
    R2MAEModel.setup_anndata(adata, batch_key="donor")
    return backed, adata


def _donors_per_batch(loader, epochs=2):
    counts = []
    for _ in range(epochs):
        for batch in loader:
            counts.append(torch.unique(batch[REGISTRY_KEYS.BATCH_KEY]).numel())
    return float(np.mean(counts))


def test_small_scattered_chunks_mix_the_donors_of_a_donor_sorted_file(tmp_path):
    scvi.settings.seed = 0
    backed, memory = _donor_sorted(tmp_path)
    full = _donors_per_batch(InMemoryDataModule(_manager(memory), batch_size=64).train_dataloader())
    # a buffer of 40 chunks of 10 rows (400 cells, a tenth of the file) drawn across the file
    small = OnDiskDataModule(_manager(backed), batch_size=64, chunk_size=10, buffer_chunks=40)
    # the same buffer size in 2 chunks of 200 rows: one donor per chunk, two per buffer
    large = OnDiskDataModule(_manager(backed), batch_size=64, chunk_size=200, buffer_chunks=2)
    mixed = _donors_per_batch(small.train_dataloader())
    sorted_ = _donors_per_batch(large.train_dataloader())
    assert full > 19  # 64 cells out of 20 equal donors: 19.3 expected
    assert mixed >= 0.8 * full
    assert sorted_ <= 2.5
    # every chunk of the donor-sorted file is read once per epoch: all training cells, once
    idx = np.concatenate([b[REGISTRY_KEYS.INDICES_KEY].numpy() for b in small.train_dataloader()])
    np.testing.assert_array_equal(np.sort(idx), np.sort(small.train_idx))


def test_defaults_block_shuffle_with_the_old_buffer_size():
    params = inspect.signature(OnDiskDataModule).parameters
    chunk, buffer = params["chunk_size"].default, params["buffer_chunks"].default
    assert chunk * buffer == 16384  # the memory budget of 16 chunks of 1,024 rows
    assert chunk <= 64 and buffer >= 256


def test_mini_batches_are_deterministic_per_seed_and_epoch(tmp_path):
    scvi.settings.seed = 0
    backed, _ = _donor_sorted(tmp_path, n_donors=4, per_donor=150)
    manager = _manager(backed)

    def epochs(seed, n=2):
        loader = OnDiskDataModule(
            manager, batch_size=32, chunk_size=8, buffer_chunks=10, seed=seed
        ).train_dataloader()
        return [
            np.concatenate([b[REGISTRY_KEYS.INDICES_KEY].numpy() for b in loader]) for _ in range(n)
        ]

    first, again, other = epochs(3), epochs(3), epochs(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new order each epoch
    assert not np.array_equal(first[0], other[0])  # and for another seed


def test_fast_csr_reader_matches_anndata_slicing(on_disk, counts_adata):
    reader = _RowReader(on_disk.X)
    assert reader.indptr is not None  # h5ad and zarr CSR both take the direct path
    ranges = [(0, 7), (40, 41), (100, 164), (300, 310)]
    expected = sparse.vstack([counts_adata.X[a:b] for a, b in ranges]).toarray()
    np.testing.assert_array_equal(reader(ranges).toarray(), expected)
    dense = _RowReader(counts_adata.X.toarray())  # another layout: sliced as it is
    assert dense.indptr is None
    np.testing.assert_array_equal(dense(ranges), expected)
