"""The get_* iterator: only the cells asked for are read and moved, from memory or disk."""

from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from scr2mae import R2MAEModel
from scr2mae.data import _inference, _inmemory, inference_batches, read_backed
from scr2mae.data._inmemory import CellTensors

SMALL = {"n_hidden": 16, "n_latent": 4}


def _adata(layout: str = "csr", n: int = 1500, g: int = 30) -> AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (n, g)).astype(np.float32)
    counts[:, 0] += 1
    matrix = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "dense": np.asarray}[layout]
    adata = AnnData(X=matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.obs["donor"] = [f"d{i % 3}" for i in range(n)]
    adata.obs["age"] = rng.uniform(20, 80, n)
    return adata


def _setup(adata):
    R2MAEModel.setup_anndata(adata, batch_key="donor", continuous_covariate_keys=["age"])
    model = R2MAEModel(adata, **SMALL)
    model.is_trained_ = True  # an untrained model embeds as well, in evaluation mode
    model.module.eval()
    return model


@pytest.fixture
def placed(monkeypatch):
    """Every tensor moved to the model's device, and no tensor built of the whole matrix."""
    moved = []

    def spy(tensor, device):
        moved.append(tuple(tensor.shape))
        return tensor.to(device)

    def whole_matrix(*args, **kwargs):
        raise AssertionError("tensors of the whole matrix were built")

    monkeypatch.setattr(_inmemory, "_move", spy)
    monkeypatch.setattr(_inference, "_move", spy)
    monkeypatch.setattr(CellTensors, "__init__", whole_matrix)
    monkeypatch.setattr(CellTensors, "place_for", whole_matrix)
    return moved


@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_get_moves_only_the_cells_asked_for(layout, placed):
    adata = _adata(layout)
    model = _setup(adata)
    rows = np.array([1203, 5, 5, 640])
    z = model.get_latent_representation(indices=rows, batch_size=3)
    assert z.shape == (4, SMALL["n_latent"])
    x = adata.X.toarray() if sparse.issparse(adata.X) else adata.X
    nnz = [np.count_nonzero(x[rows[:3]]), np.count_nonzero(x[rows[3:]])]
    # per mini-batch: the counts (CSR entries, or the dense rows), covariates, positions
    allowed = {(3,), (1,), (3, 1), (1, 1), (3, adata.n_vars), (1, adata.n_vars)}
    allowed |= {(n,) for n in nnz}
    assert placed and set(placed) <= allowed
    moved = sum(int(np.prod(s)) for s in placed)
    assert moved < 0.02 * x.size
    # the same latent codes as embedding every cell
    np.testing.assert_allclose(z, model.get_latent_representation()[rows], rtol=1e-5, atol=1e-6)


def test_batches_hold_the_rows_in_the_order_asked(placed):
    adata = _adata()
    model = _setup(adata)
    rows = np.array([7, 1499, 0, 7, 300])
    batches = list(inference_batches(model.adata_manager, rows, batch_size=2))
    assert len(batches) == 3
    x = torch.cat([b[REGISTRY_KEYS.X_KEY] for b in batches]).numpy()
    np.testing.assert_array_equal(x, adata.X[rows].toarray())
    ages = torch.cat([b[REGISTRY_KEYS.CONT_COVS_KEY] for b in batches]).numpy().ravel()
    np.testing.assert_allclose(ages, adata.obs["age"].to_numpy()[rows], rtol=1e-6)
    positions = torch.cat([b[REGISTRY_KEYS.INDICES_KEY] for b in batches]).numpy()
    np.testing.assert_array_equal(positions, rows)
    assert all("measured" not in b for b in batches)  # complete data carry no mask
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[[4, 2]] = True
    by_mask = list(inference_batches(model.adata_manager, mask, batch_size=8))
    np.testing.assert_array_equal(by_mask[0][REGISTRY_KEYS.INDICES_KEY].numpy(), [2, 4])
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 1500\), got 1500"):
        inference_batches(model.adata_manager, [1500])


@pytest.mark.parametrize("suffix", ["h5ad", "zarr"])
def test_backed_data_are_read_in_file_order(suffix, tmp_path, monkeypatch):
    adata = _adata()
    getattr(adata, f"write_{suffix}")(tmp_path / f"cells.{suffix}")
    backed = read_backed(tmp_path / f"cells.{suffix}")
    model = _setup(backed)
    ranges = []
    original = _inference._RowReader.__call__

    def spy(self, asked):
        ranges.append(list(asked))
        return original(self, asked)

    monkeypatch.setattr(_inference._RowReader, "__call__", spy)
    batches = list(inference_batches(model.adata_manager, batch_size=512))
    # each mini-batch is one contiguous read, in file order
    assert ranges == [[(0, 512)], [(512, 1024)], [(1024, 1500)]]
    x = torch.cat([b[REGISTRY_KEYS.X_KEY] for b in batches]).numpy()
    np.testing.assert_array_equal(x, adata.X.toarray())
    ranges.clear()
    rows = np.array([900, 3, 4, 5, 901])
    (batch,) = inference_batches(model.adata_manager, rows, batch_size=8)
    assert ranges == [[(3, 6), (900, 902)]]
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.X_KEY].numpy(), adata.X[rows].toarray())
    # get_* take that path too, with the cells named as in the file
    z = model.get_latent_representation(batch_size=512)
    assert len(ranges) == 1 + 3 and z.shape == (1500, SMALL["n_latent"])
    assert list(backed.obs_names[:2]) == ["cell0", "cell1"]


def test_new_anndata_is_checked_on_a_sample_and_on_the_cells_read(monkeypatch):
    from scr2mae import _validation

    model = _setup(_adata())
    new = _adata()
    x = new.X.toarray()
    x[1000, 3] = -2.0
    x[7, 4] = np.nan
    new.X = sparse.csr_matrix(x)
    monkeypatch.setattr(_validation, "SAMPLE_CELLS", 50)  # cells 0, 30, 61, ...
    z = model.get_latent_representation(new, indices=[0, 1, 2])
    assert np.isfinite(z).all()
    with pytest.raises(ValueError, match=r"^R2MAEModel: adata.X contains negative values"):
        model.get_latent_representation(new, indices=[999, 1000])
    with pytest.raises(ValueError, match=r"NaN.*nan_as_unmeasured=True"):
        model.get_latent_representation(new)
    # the sample catches data that are not counts before any cell is read
    lognorm = _adata()
    lognorm.X = sparse.csr_matrix(np.log1p(lognorm.X.toarray() * 3.7))
    with pytest.raises(ValueError, match="looks log-normalised"):
        model.get_latent_representation(lognorm, indices=[0])
    empty = _adata()
    empty.X = sparse.csr_matrix(np.vstack([np.zeros((1, 30)), empty.X.toarray()[1:]]))
    with pytest.raises(ValueError, match=r"cell\(s\) without any counts \(e.g. \['cell0'\]\)"):
        model.get_latent_representation(empty, indices=[5, 0])


def test_model_loaded_without_anndata_checks_the_same_way(tmp_path, monkeypatch):
    from scr2mae import _validation

    _setup(_adata()).save(tmp_path / "model", save_anndata=False)
    model = R2MAEModel.load(str(tmp_path / "model"), adata=False)
    new = _adata()
    x = new.X.toarray()
    x[1000, 3] = -2.0
    new.X = sparse.csr_matrix(x)
    monkeypatch.setattr(_validation, "SAMPLE_CELLS", 50)
    assert np.isfinite(model.get_latent_representation(new, indices=[0, 1])).all()
    with pytest.raises(ValueError, match="negative values"):
        model.get_latent_representation(new, indices=[1000])
    # a view of cells is adopted as scvi-tools adopts one (made an actual AnnData)
    fresh = R2MAEModel.load(str(tmp_path / "model"), adata=False)
    z = fresh.get_latent_representation(_adata()[:20])
    assert z.shape[0] == 20 and np.isfinite(z).all()


@pytest.mark.parametrize("kind", ["category", "str", "int", "default"])
def test_category_field_registers_as_scvi_tools_does(kind):
    from scvi.data import AnnDataManager
    from scvi.data.fields import CategoricalObsField

    from scr2mae.data._fields import CategoryField

    def make(values):
        ad = AnnData(X=sparse.csr_matrix(np.ones((len(values), 3), dtype=np.float32)))
        column = pd.Series(values, dtype="category" if kind == "category" else None)
        ad.obs["donor"] = column.astype(str).to_numpy() if kind == "str" else column.to_numpy()
        if kind == "category":
            ad.obs["donor"] = pd.Categorical(values, categories=sorted(set(values))[::-1])
        return ad

    key = None if kind == "default" else "donor"
    reference = [3, 1, 1, 2, 3, 3, 1, 2, 2, 2]
    query = [5, 1, 1, 3, 5, 4]
    out = {}
    for name, field in (("scvi", CategoricalObsField), ("ours", CategoryField)):
        manager = AnnDataManager(fields=[field("batch", key)])
        ref = make(reference)
        manager.register_fields(ref)
        new = make(query)
        moved = manager.transfer_fields(new, extend_categories=True)
        with (
            pytest.raises(ValueError, match="not found in source registry")
            if key
            else nullcontext()
        ):
            manager.transfer_fields(make(query))
        out[name] = (
            manager.get_state_registry("batch")["categorical_mapping"],
            ref.obs["_scvi_batch"].to_numpy(),
            moved.get_state_registry("batch")["categorical_mapping"],
            new.obs["_scvi_batch"].to_numpy(),
        )
    for a, b in zip(out["scvi"], out["ours"], strict=True):
        np.testing.assert_array_equal(a, b)
