"""Out-of-core mini-batches from an AnnData on disk: contiguous chunks, shuffled in a buffer.

Reading random single rows of a backed ``.h5ad`` or ``.zarr`` costs one disk access each.
Here each epoch cuts the file into small contiguous chunks of rows, puts the chunks in a random
order, reads them many at a time into a buffer, shuffles the cells within it, and cuts
mini-batches from the shuffled buffer (the block shuffling of scDataset and annbatch). Because
a buffer holds many small chunks drawn from the whole file, a file stored sorted by donor still
gives mini-batches that mix donors, which the batch-correction terms need (they compare the
batches inside a mini-batch). anndata opens the file: a backed AnnData's ``X``
(``anndata.read_h5ad(path, backed="r")``) or :func:`anndata.io.sparse_dataset` for a ``.zarr``
store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from anndata import AnnData, read_h5ad
from anndata.abc import CSCDataset, CSRDataset
from scipy import sparse
from scvi import REGISTRY_KEYS

from .._validation import check_int
from ._inmemory import CellTensors, _SplitDataModule, registered_covariates
from ._panels import PanelLayout, panel_layout

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
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`path` does not exist: {path!r}.")
    if path.endswith(".h5ad"):
        if layer is not None:
            raise ValueError("`layer` applies to .zarr stores; a backed .h5ad reads `X`.")
        return read_h5ad(path, backed="r")
    if path.rstrip("/").endswith(".zarr"):
        import zarr
        from anndata.io import read_elem, sparse_dataset

        root = zarr.open(path, mode="r")
        group = root["X"] if layer is None else root["layers"][layer]
        if getattr(group, "attrs", {}).get("encoding-type") not in ("csr_matrix", "csc_matrix"):
            raise ValueError(f"{path!r}: the counts must be stored sparse (CSR) to stay on disk.")
        return AnnData(
            X=sparse_dataset(group), obs=read_elem(root["obs"]), var=read_elem(root["var"])
        )
    raise ValueError(f"`path` must end in .h5ad or .zarr, got {path!r}.")


def is_on_disk(adata: AnnData) -> bool:
    """Whether the counts of ``adata`` are read from disk (backed mode or a sparse dataset)."""
    return bool(adata.isbacked) or isinstance(adata.X, CSRDataset | CSCDataset)


class _RowReader:
    """Row ranges of on-disk counts, read as one matrix: one slice per range and stored array.

    Slicing a backed sparse dataset through anndata costs a few milliseconds per call whatever
    the number of rows (measured: about 4 ms on a 100,000-row ``.h5ad``), which would make small
    chunks slow. For a CSR dataset the row pointers are therefore read once (8 bytes per cell)
    and a row range becomes one slice of ``data`` and one of ``indices`` (about 0.1 ms). Other
    layouts (dense, CSC, a dataset without its storage group) are sliced through anndata.
    """

    def __init__(self, counts):
        self.counts = counts
        self.n_vars = int(counts.shape[1])
        group = getattr(counts, "group", None)
        self.indptr = None
        if isinstance(counts, CSRDataset) and group is not None:
            self.indptr = np.asarray(group["indptr"][...], dtype=np.int64)
            self.data, self.indices = group["data"], group["indices"]

    def __call__(self, ranges: list[tuple[int, int]]):
        """Rows of the ranges ``[a, b)``, in order, as one SciPy CSR matrix or array."""
        if self.indptr is None:
            parts = [self.counts[a:b] for a, b in ranges]
            if sparse.issparse(parts[0]):
                return sparse.vstack(parts, format="csr")
            return np.vstack(parts)
        spans = [slice(int(self.indptr[a]), int(self.indptr[b])) for a, b in ranges]
        lengths = np.concatenate([np.diff(self.indptr[a : b + 1]) for a, b in ranges])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        data = np.concatenate([self.data[s] for s in spans])
        indices = np.concatenate([self.indices[s] for s in spans])
        return sparse.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, self.n_vars))


def _merge_ranges(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Sorted, disjoint row ranges ``[starts, ends)``, those that touch merged into one read."""
    cut = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    return list(zip(starts[np.r_[0, cut]].tolist(), ends[np.r_[cut - 1, -1]].tolist(), strict=True))


class _ChunkBatches:
    """One epoch of mini-batches read in contiguous chunks and shuffled within a buffer.

    ``per_epoch=True`` draws a new chunk order and shuffle every epoch (seeded by the seed and
    the epoch); ``per_epoch=False`` repeats one seeded order every epoch (validation).
    """

    def __init__(self, module: OnDiskDataModule, indices: np.ndarray, per_epoch: bool):
        self.module = module
        self.keep = np.zeros(module.n_obs, dtype=bool)
        self.keep[np.asarray(indices, dtype=np.int64)] = True
        self.n_cells = int(self.keep.sum())
        self.per_epoch = per_epoch
        self.epoch = 0

    def __len__(self) -> int:
        steps = -(-self.n_cells // self.module.batch_size)
        last = self.n_cells - (steps - 1) * self.module.batch_size
        return steps - 1 if steps > 1 and last < 2 else steps

    def _buffers(self, rng: np.random.Generator) -> Iterator[tuple]:
        """Buffers of chunks drawn at random from the whole file: the tensors of the rows read,
        the positions of the kept cells among them and those cells' row numbers (both in a random
        order)."""
        m = self.module
        # each buffer takes `buffer_chunks` chunks scattered over the file (mixing the donors of
        # a sorted file); each cell sits in one chunk, hence is read once per epoch
        starts = rng.permutation(np.arange(0, m.n_obs, m.chunk_size))
        for i in range(0, len(starts), m.buffer_chunks):
            first = np.sort(starts[i : i + m.buffer_chunks])
            ranges = _merge_ranges(first, np.minimum(first + m.chunk_size, m.n_obs))
            ranges = [(a, b) for a, b in ranges if self.keep[a:b].any()]
            if not ranges:
                continue
            rows = np.concatenate([np.arange(a, b) for a, b in ranges])
            local = np.flatnonzero(self.keep[rows])
            local = local[rng.permutation(local.size)]
            yield m.buffer_tensors(m.read_rows(ranges), rows), local, rows[local]

    def __iter__(self) -> Iterator[dict]:
        m = self.module
        key = [m.seed, 1, self.epoch] if self.per_epoch else [m.seed, 0]
        rng = np.random.default_rng(key)
        self.epoch += 1
        n_steps, step = len(self), 0
        pending: list[tuple[CellTensors, np.ndarray, np.ndarray]] = []
        n_pending = 0
        for buffer in self._buffers(rng):
            pending.append(buffer)
            n_pending += buffer[1].size
            # cut whole mini-batches; the last step takes everything left (see __len__)
            while n_pending >= m.batch_size and step < n_steps - 1:
                yield self._cut(pending, m.batch_size)
                n_pending -= m.batch_size
                step += 1
        if n_pending:
            yield self._cut(pending, n_pending)

    def _cut(self, pending: list, n: int) -> dict:
        """The next ``n`` cells of the pending buffers as one mini-batch."""
        batches = []
        while n:
            tensors, local, cells = pending[0]
            take = min(n, local.size)
            batch = tensors.gather(torch.from_numpy(local[:take]), self.module.target)
            batch[REGISTRY_KEYS.INDICES_KEY] = torch.from_numpy(cells[:take]).to(self.module.target)
            batches.append(batch)
            if take == local.size:
                pending.pop(0)
            else:
                pending[0] = (tensors, local[take:], cells[take:])
            n -= take
        if len(batches) == 1:
            return batches[0]
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


class OnDiskDataModule(_SplitDataModule):
    """Training and validation mini-batches of an AnnData whose counts stay on disk.

    Every epoch cuts the file into contiguous chunks of ``chunk_size`` rows and puts them in a
    random order (seeded by ``seed`` and the epoch); each buffer reads the next
    ``buffer_chunks`` chunks of that order (sorted by position, adjacent ones in one read), and
    its cells are shuffled and cut into mini-batches. Each training cell is seen once per
    epoch. The defaults (256 chunks of 64 rows per buffer) mix the donors of a file stored
    sorted by donor almost as well as a full shuffle: on 20 donors × 5,000 cells in donor order,
    mini-batches of 128 hold 99 % as many distinct donors as the in-memory path's (16 chunks of
    1,024 rows, the same buffer size, gave 64 %; 200 donors × 500 cells: 86 % against 41 %;
    ``benchmarks/genomics/singlecell/ondisk_mixing.py``). Memory holds one buffer
    (``chunk_size × buffer_chunks`` cells), the covariates of all cells and, for sparse CSR
    counts, the row pointers (8 bytes per cell). The training/validation split is scvi-tools'
    (as in :class:`~scr2mae.data.InMemoryDataModule`); validation reads its cells the same way
    but in one fixed order, the same every epoch. Single process only.

    Parameters
    ----------
    adata_manager, batch_size, train_size, validation_size, shuffle_set_split
        As in :class:`~scr2mae.data.InMemoryDataModule`, for an AnnData registered on disk
        (:func:`read_backed`).
    chunk_size
        Rows per contiguous read. Smaller chunks mix a sorted file better and cost more reads
        (measured: about 0.1 ms per read of a CSR dataset in the page cache).
    buffer_chunks
        Chunks shuffled together (the buffer holds ``chunk_size × buffer_chunks`` cells).
    seed
        Seed of the chunk order and the shuffling; ``None`` uses ``scvi.settings.seed``. The
        same seed and epoch give the same mini-batches.
    """

    def __init__(
        self,
        adata_manager,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        chunk_size: int = 64,
        buffer_chunks: int = 256,
        seed: int | None = None,
    ):
        check_int("batch_size", batch_size, 2)
        check_int("chunk_size", chunk_size)
        check_int("buffer_chunks", buffer_chunks)
        super().__init__(
            adata_manager, batch_size, train_size, validation_size, shuffle_set_split, seed
        )
        self.read_rows = _RowReader(adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        self.chunk_size = chunk_size
        self.buffer_chunks = buffer_chunks
        self.covariates = {
            key: np.asarray(values, dtype=np.float32).reshape(self.n_obs, -1)
            for key, values in registered_covariates(adata_manager).items()
        }
        self.panels = panel_layout(adata_manager)
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

    def buffer_tensors(self, counts, rows: np.ndarray) -> CellTensors:
        """Tensors of the counts read into a buffer and the covariates (and panels) of those
        ``rows``."""
        covariates = {key: values[rows] for key, values in self.covariates.items()}
        panels = self.panels
        if panels is not None:
            panels = PanelLayout(panels.codes[rows], panels.masks, panels.names)
        return CellTensors.from_arrays(counts, covariates, panels)

    def train_dataloader(self) -> _ChunkBatches:
        """Shuffled mini-batches of the training cells."""
        return _ChunkBatches(self, self.train_idx, per_epoch=True)

    def val_dataloader(self) -> _ChunkBatches | list:
        """Mini-batches of the validation cells, mixed as in training, in one fixed order."""
        if len(self.val_idx) == 0:
            return []
        return _ChunkBatches(self, self.val_idx, per_epoch=False)
