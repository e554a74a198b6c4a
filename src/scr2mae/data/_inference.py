"""Mini-batches for the ``get_*`` methods: the rows asked for, read one mini-batch at a time.

Embedding, imputation or scoring a few cells of a large AnnData must not cost what the whole
AnnData costs. Each mini-batch therefore gathers its rows on the CPU straight from the
registered matrix (in memory: SciPy row indexing; on disk: the row ranges of the out-of-core
reader), checks them (:func:`~scr2mae._validation.check_count_rows`), and only those rows'
entries travel to the device, where the batch is densified. No tensor of the whole matrix is
built, nothing of it is copied to the device, and no value of it is checked.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS, settings

from .._validation import check_count_rows, check_int
from ._inmemory import CellTensors, _move, registered_covariates
from ._ondisk import _merge_ranges, _RowReader, is_on_disk
from ._panels import MEASURED_KEY, panel_layout

__all__ = ["inference_batches"]

#: mini-batches between two returns of freed host memory to the system (see `_release`)
RELEASE_EVERY = 128


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def _release() -> None:
    """Return the freed pages of the C heap to the system: the small outputs that ``get_*``
    keep land between the freed pages of large temporaries, which glibc then keeps (measured:
    0.27 GB for 200,000 cells at 2,000 genes); trimming every :data:`RELEASE_EVERY` batches
    keeps the resident size flat."""
    if _TRIM is not None:
        _TRIM(0)


class _DiskRows:
    """Rows of an on-disk count matrix: contiguous ranges read in file order, then reordered."""

    def __init__(self, counts):
        self.read = _RowReader(counts)

    def __call__(self, rows: np.ndarray):
        unique = np.unique(rows)
        block = self.read(_merge_ranges(unique, unique + 1))  # one read per run of rows
        if unique.size == rows.size and np.array_equal(unique, rows):
            return block
        return block[np.searchsorted(unique, rows)]


class InferenceBatches:
    """Unshuffled mini-batches of registered cells, in the order of ``indices``.

    Iterable as often as needed; each pass reads the rows again. See
    :func:`inference_batches`.
    """

    def __init__(self, adata_manager, indices: np.ndarray, batch_size: int, device):
        counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        if is_on_disk(adata_manager.adata):
            self.read_rows = _DiskRows(counts)
        else:  # in memory; row reads of CSC or COO scan every column: converted once
            is_csr = not sparse.issparse(counts) or counts.format == "csr"
            self.read_rows = (counts if is_csr else sparse.csr_matrix(counts)).__getitem__
        self.n_obs = adata_manager.adata.n_obs
        self.obs_names = adata_manager.adata.obs_names
        self.layer = adata_manager.registry["setup_args"].get("layer")
        self.covariates = {
            k: np.asarray(v) for k, v in registered_covariates(adata_manager).items()
        }
        self.panels = panel_layout(adata_manager)
        self.indices = indices
        self.batch_size = batch_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return -(-self.indices.size // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        masks = None if self.panels is None else torch.from_numpy(self.panels.masks).to(self.device)
        for step, start in enumerate(range(0, self.indices.size, self.batch_size)):
            if step and step % RELEASE_EVERY == 0:
                _release()
            rows = self.indices[start : start + self.batch_size]
            covariates = {
                key: np.asarray(values[rows], dtype=np.float32).reshape(rows.size, -1)
                for key, values in self.covariates.items()
            }
            counts = self.read_rows(rows)
            check_count_rows(counts, self.obs_names[rows], self.layer, where="R2MAEModel")
            tensors = CellTensors.from_arrays(counts, covariates)
            batch = tensors.gather(torch.arange(rows.size), self.device)
            batch[REGISTRY_KEYS.INDICES_KEY] = _move(torch.from_numpy(rows), self.device)
            if masks is not None:
                codes = torch.from_numpy(np.asarray(self.panels.codes[rows], dtype=np.int64))
                batch[MEASURED_KEY] = masks.index_select(0, _move(codes, self.device))
            yield batch


def inference_batches(
    adata_manager,
    indices: Sequence[int] | Sequence[bool] | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> InferenceBatches:
    """Unshuffled mini-batches of registered cells, in the order of ``indices``.

    The iterator behind the ``get_*`` methods of :class:`~scr2mae.R2MAEModel`. Each
    mini-batch reads its rows from the registered counts on the CPU (from disk for a backed
    AnnData or a ``.zarr`` store of :func:`~scr2mae.data.read_backed`, in file order when the
    indices are sorted) and moves only them to ``device``. Batches hold scvi-tools' tensors,
    the cells' positions (``"ind_x"``) and, when some cells lack genes (a prepared query's
    panels), the mask ``"measured"``.

    Parameters
    ----------
    adata_manager
        The :class:`scvi.data.AnnDataManager` of a registered AnnData.
    indices
        Cells to return, in order (positions or a boolean mask); ``None`` is all.
    batch_size
        Cells per mini-batch; ``None`` uses ``scvi.settings.batch_size``.
    device
        Device of the returned tensors.
    """
    batch_size = settings.batch_size if batch_size is None else batch_size
    check_int("batch_size", batch_size)
    n_obs = adata_manager.adata.n_obs
    indices = np.arange(n_obs) if indices is None else np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (n_obs,):
            raise ValueError(
                f"`indices` as a boolean mask must have one entry per cell ({n_obs}), "
                f"got shape {indices.shape}."
            )
        indices = np.flatnonzero(indices)
    indices = np.ascontiguousarray(indices.ravel(), dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n_obs):
        bad = indices[(indices < 0) | (indices >= n_obs)][0]
        raise ValueError(f"`indices` must lie in [0, {n_obs}), got {bad}.")
    return InferenceBatches(adata_manager, indices, batch_size, device)
