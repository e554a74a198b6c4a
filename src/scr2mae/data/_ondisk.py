"""Out-of-core mini-batches from an AnnData on disk: contiguous chunks, shuffled in a buffer.

Reading random single rows of a backed ``.h5ad`` or ``.zarr`` costs one disk access each.
Here each epoch visits the file in contiguous chunks of rows (in a random chunk order), holds a
few chunks at a time in a buffer, shuffles the cells within it, and cuts mini-batches from
the shuffled buffer (the block sampling of scDataset and annbatch). anndata itself provides the
reading: a backed AnnData's ``X`` (``anndata.read_h5ad(path, backed="r")``) and
:func:`anndata.io.sparse_dataset` for a ``.zarr`` store return a contiguous row range as a
SciPy CSR matrix without reading the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from anndata import AnnData
from lightning.pytorch import LightningDataModule
from scvi import REGISTRY_KEYS, settings

from ._inmemory import CellTensors, split_cells

__all__ = ["OnDiskDataModule", "is_on_disk", "read_backed"]


def read_backed(path: str | os.PathLike, layer: str | None = None) -> AnnData:
    """Open an AnnData with its counts left on disk (``.obs`` and ``.var`` in memory).

    Parameters
    ----------
    path
        A ``.h5ad`` file (opened with ``backed="r"``) or a ``.zarr`` store (its sparse
        ``X``, or ``layers/<layer>``, opened with :func:`anndata.io.sparse_dataset`).
    layer
        For a ``.zarr`` store: read this layer as ``X`` instead of ``X``.

    Returns
    -------
    An AnnData to register with :meth:`~scr2mae.R2MAEModel.setup_anndata` (``layer=None``);
    ``train()`` then reads it with :class:`OnDiskDataModule`.
    """
    import anndata

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`path` does not exist: {path!r}.")
    if path.endswith(".h5ad"):
        if layer is not None:
            raise ValueError("`layer` applies to .zarr stores; a backed .h5ad reads `X`.")
        return anndata.read_h5ad(path, backed="r")
    if path.rstrip("/").endswith(".zarr"):
        import zarr
        from anndata.io import read_elem, sparse_dataset

        root = zarr.open(path, mode="r")
        group = root["X"] if layer is None else root["layers"][layer]
        if not hasattr(group, "attrs") or group.attrs.get("encoding-type") not in (
            "csr_matrix",
            "csc_matrix",
        ):
            raise ValueError(f"{path!r}: the counts must be stored sparse (CSR) to stay on disk.")
        return AnnData(
            X=sparse_dataset(group), obs=read_elem(root["obs"]), var=read_elem(root["var"])
        )
    raise ValueError(f"`path` must end in .h5ad or .zarr, got {path!r}.")


def is_on_disk(adata: AnnData) -> bool:
    """Whether the counts of ``adata`` are read from disk (backed mode or a sparse dataset)."""
    from anndata.abc import CSCDataset, CSRDataset

    return bool(adata.isbacked) or isinstance(adata.X, CSRDataset | CSCDataset)


class _ChunkBatches:
    """One epoch of mini-batches read in contiguous chunks and shuffled within a buffer."""

    def __init__(self, module: OnDiskDataModule, indices: np.ndarray, shuffle: bool):
        self.module = module
        self.keep = np.zeros(module.n_obs, dtype=bool)
        self.keep[np.asarray(indices, dtype=np.int64)] = True
        self.n_cells = int(self.keep.sum())
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        steps = -(-self.n_cells // self.module.batch_size)
        last = self.n_cells - (steps - 1) * self.module.batch_size
        return steps - 1 if steps > 1 and last < 2 else steps

    def _buffers(self, rng: np.random.Generator) -> Iterator[tuple[CellTensors, np.ndarray]]:
        """Buffers of consecutive chunks (in random order) with the cells they hold."""
        m = self.module
        starts = np.arange(0, m.n_obs, m.chunk_size)
        if self.shuffle:
            starts = rng.permutation(starts)
        for i in range(0, len(starts), m.buffer_chunks):
            parts, cells = [], []
            for a in np.sort(starts[i : i + m.buffer_chunks]):
                b = min(a + m.chunk_size, m.n_obs)
                rows = np.flatnonzero(self.keep[a:b])
                if rows.size:
                    block = m.counts[int(a) : int(b)]  # one contiguous read
                    parts.append(block[rows] if rows.size < b - a else block)
                    cells.append(a + rows)
            if parts:
                cells = np.concatenate(cells)
                yield m.buffer_tensors(parts, cells), cells

    def __iter__(self) -> Iterator[dict]:
        m = self.module
        rng = np.random.default_rng(m.seed + self.epoch)
        self.epoch += 1
        n_steps, step = len(self), 0
        pending: list[tuple[CellTensors, np.ndarray, np.ndarray]] = []
        n_pending = 0
        for tensors, cells in self._buffers(rng):
            order = rng.permutation(cells.size) if self.shuffle else np.arange(cells.size)
            pending.append((tensors, cells, order))
            n_pending += cells.size
            # cut whole mini-batches; the last step takes everything left (see __len__)
            while n_pending >= m.batch_size and step < n_steps - 1:
                yield self._cut(pending, m.batch_size)
                n_pending -= m.batch_size
                step += 1
        if n_pending:
            yield self._cut(pending, n_pending)

    def _cut(self, pending: list, n: int) -> dict:
        """The next ``n`` cells of the pending buffers as one mini-batch."""
        pieces = []
        while n:
            tensors, cells, order = pending[0]
            take = order[:n]
            pieces.append((tensors, cells, take))
            if take.size == order.size:
                pending.pop(0)
            else:
                pending[0] = (tensors, cells, order[take.size :])
            n -= take.size
        batches = []
        for tensors, cells, take in pieces:
            batch = tensors.gather(torch.from_numpy(take), self.module.target)
            batch[REGISTRY_KEYS.INDICES_KEY] = torch.from_numpy(cells[take]).to(self.module.target)
            batches.append(batch)
        if len(batches) == 1:
            return batches[0]
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


class OnDiskDataModule(LightningDataModule):
    """Training and validation mini-batches of an AnnData whose counts stay on disk.

    Every epoch reads the file in contiguous chunks of ``chunk_size`` rows, in a random chunk
    order, ``buffer_chunks`` chunks at a time; the cells of a buffer are shuffled and cut into
    mini-batches. Each training cell is seen once per epoch; memory holds one buffer (plus the
    covariates of all cells). The training/validation split is scvi-tools' (as in
    :class:`~scr2mae.data.InMemoryDataModule`). Single process only.

    Parameters
    ----------
    adata_manager
        The :class:`scvi.data.AnnDataManager` of an AnnData registered on disk
        (:func:`read_backed`).
    batch_size
        Cells per mini-batch.
    train_size, validation_size, shuffle_set_split
        As in :class:`~scvi.dataloaders.DataSplitter`.
    chunk_size
        Rows per contiguous read.
    buffer_chunks
        Chunks shuffled together (the buffer holds ``chunk_size × buffer_chunks`` cells).
    seed
        Seed of the chunk order and the shuffling; ``None`` uses ``scvi.settings.seed``.
    """

    def __init__(
        self,
        adata_manager,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        chunk_size: int = 1024,
        buffer_chunks: int = 16,
        seed: int | None = None,
    ):
        super().__init__()
        for name, value, minimum in (
            ("batch_size", batch_size, 2),
            ("chunk_size", chunk_size, 1),
            ("buffer_chunks", buffer_chunks, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        self.adata_manager = adata_manager
        self.counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        self.n_obs = adata_manager.adata.n_obs
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.buffer_chunks = buffer_chunks
        seed = settings.seed if seed is None else seed
        self.seed = 0 if seed is None else int(seed)
        self.train_idx, self.val_idx, self.test_idx = split_cells(
            self.n_obs, batch_size, train_size, validation_size, shuffle_set_split
        )
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self.covariates = {
            key: np.asarray(adata_manager.get_from_registry(key), dtype=np.float32).reshape(
                self.n_obs, -1
            )
            for key in adata_manager.data_registry
            if key != REGISTRY_KEYS.X_KEY
        }
        self.target = torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        """Note the training device (mini-batches are densified there)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            if trainer.world_size > 1:
                raise ValueError(
                    "the on-disk data path runs in one process; use data_loader='in_memory' "
                    "for several devices."
                )
            self.target = trainer.strategy.root_device

    def buffer_tensors(self, parts: list, cells: np.ndarray) -> CellTensors:
        """Counts of a buffer (the chunks read) with the covariates of its cells."""
        from scipy import sparse

        counts = (
            sparse.vstack(parts, format="csr") if sparse.issparse(parts[0]) else np.vstack(parts)
        )
        covariates = {key: values[cells] for key, values in self.covariates.items()}
        return CellTensors.from_arrays(counts, covariates)

    def train_dataloader(self) -> _ChunkBatches:
        """Shuffled mini-batches of the training cells."""
        return _ChunkBatches(self, self.train_idx, shuffle=True)

    def val_dataloader(self) -> _ChunkBatches | list:
        """Mini-batches of the validation cells, in file order."""
        if len(self.val_idx) == 0:
            return []
        return _ChunkBatches(self, self.val_idx, shuffle=False)
