"""Fast in-memory mini-batches: CSR counts held as torch tensors, rows gathered per step.

scvi-tools' ``AnnDataLoader`` slices the AnnData and densifies every mini-batch in Python, then
copies it to the device. Here the counts and covariates become torch tensors once (on the
training device when they fit, else in pinned host memory), each step draws a slice of a
shuffled index and gathers the rows of the CSR matrix with a few vectorised operations (no
per-row Python), and the dense mini-batch is built where the model runs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.dataloaders._data_splitting import validate_data_split

from .._validation import check_int
from ._panels import MEASURED_KEY, PanelLayout, panel_layout

__all__ = ["CellTensors", "InMemoryDataModule"]

#: share of the free device memory the counts may take before they stay in host memory
DEVICE_MEMORY_SHARE = 0.5
_DENSIFY_ROWS = None  # the compiled loop, see `_densify_rows`


def _densify_loop(indptr, indices, data, rows, out):  # pragma: no cover - compiled by numba
    """Add the stored entries of CSR rows ``rows`` into the zeroed block ``out`` (duplicate
    entries add up, as in SciPy's ``toarray``)."""
    for r in range(rows.shape[0]):
        i = rows[r]
        for j in range(indptr[i], indptr[i + 1]):
            out[r, indices[j]] += data[j]


def _densify_rows():
    """:func:`_densify_loop` compiled on first use (cached on disk where numba can write): on
    the CPU one pass over the chosen entries beats about ten vectorised torch operations."""
    global _DENSIFY_ROWS
    if _DENSIFY_ROWS is None:
        import numba

        try:
            _DENSIFY_ROWS = numba.njit(cache=True, nogil=True)(_densify_loop)
        except RuntimeError:  # numba: no writable cache location
            _DENSIFY_ROWS = numba.njit(nogil=True)(_densify_loop)
    return _DENSIFY_ROWS


def registered_covariates(adata_manager) -> dict:
    """The registered arrays of an ``AnnDataManager`` other than the counts, by registry key."""
    keys = [key for key in adata_manager.data_registry if key != REGISTRY_KEYS.X_KEY]
    return {key: adata_manager.get_from_registry(key) for key in keys}


def _move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a mini-batch's tensor to ``device`` (the one place where gathered data moves)."""
    return tensor.to(device, non_blocking=True)


class CellTensors:
    """The registered counts and covariates of an AnnData as torch tensors.

    Counts are kept as CSR (``crow``, ``col``, ``val``) unless the AnnData holds a dense
    matrix; covariates as ``float32`` columns, exactly as scvi-tools' loader returns them.
    When some cells lack genes (the panels of a prepared query, :mod:`scr2mae.data._panels`),
    each cell's panel and the panels' gene masks are kept too, and every mini-batch carries
    the dense mask of its cells under ``"measured"``; complete data carry none.

    Parameters
    ----------
    adata_manager
        The :class:`scvi.data.AnnDataManager` of a registered AnnData.
    device
        Where to keep the tensors.
    """

    def __init__(self, adata_manager, device: torch.device | str = "cpu"):
        counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        self._set(counts, registered_covariates(adata_manager), panel_layout(adata_manager))
        self.to(device)

    @classmethod
    def from_arrays(
        cls, counts, covariates: dict, panels: PanelLayout | None = None
    ) -> CellTensors:
        """Tensors of a counts matrix (sparse or dense) and covariate arrays, on the CPU.

        ``panels`` gives the panel of each of these rows and the panels' gene masks.
        """
        out = cls.__new__(cls)
        out._set(counts, covariates, panels)
        return out

    def _set(self, counts, covariates: dict, panels: PanelLayout | None) -> None:
        self.n_obs, self.n_vars = counts.shape
        self.dense = self.crow = self.col = self.val = None
        if sparse.issparse(counts):
            counts = sparse.csr_matrix(counts)  # CSC or COO become CSR once (a copy)
            self.crow = torch.from_numpy(np.asarray(counts.indptr, dtype=np.int64))
            self.col = torch.from_numpy(np.asarray(counts.indices, dtype=np.int32))
            self.val = torch.from_numpy(np.asarray(counts.data, dtype=np.float32))
        else:
            self.dense = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
        self.covariates: dict[str, torch.Tensor] = {}
        for key, values in covariates.items():
            values = np.asarray(values, dtype=np.float32).reshape(self.n_obs, -1)
            self.covariates[key] = torch.from_numpy(values.copy())
        self.panel = self.panel_masks = None
        if panels is not None:
            self.panel = torch.from_numpy(np.asarray(panels.codes, dtype=np.int64))
            self.panel_masks = torch.from_numpy(np.ascontiguousarray(panels.masks, dtype=bool))
        self._masks_cache = None
        self.device = torch.device("cpu")
        self.pinned = False

    @property
    def nbytes(self) -> int:
        """Bytes held by the counts, covariates and panels."""
        tensors = [self.crow, self.col, self.val, self.dense, self.panel, self.panel_masks]
        tensors += list(self.covariates.values())
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def _apply(self, fn) -> None:
        for name in ("crow", "col", "val", "dense", "panel", "panel_masks"):
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))
        self.covariates = {k: fn(v) for k, v in self.covariates.items()}

    def to(self, device: torch.device | str) -> CellTensors:
        """Move every tensor to ``device`` (in place); returns ``self``."""
        device = torch.device(device)
        if device != self.device:
            self._apply(lambda t: t.to(device))
            self.device = device
            self.pinned = False
        return self

    def pin(self) -> CellTensors:
        """Page-lock the host tensors, so that copies to a GPU can run asynchronously."""
        if self.device.type == "cpu" and not self.pinned:
            self._apply(lambda t: t.pin_memory())
            self.pinned = True
        return self

    def place_for(self, device: torch.device | str) -> CellTensors:
        """Put the tensors on ``device`` when they fit there, else pin them in host memory."""
        device = torch.device(device)
        if device.type != "cuda":
            return self.to(device)
        free, _ = torch.cuda.mem_get_info(device)
        if self.nbytes <= DEVICE_MEMORY_SHARE * free:
            return self.to(device)
        return self.to("cpu").pin()

    def gather(self, idx: torch.Tensor, device: torch.device | str | None = None) -> dict:
        """The mini-batch of rows ``idx`` as scvi-tools' tensor dictionary, on ``device``.

        Counts are densified on ``device`` (default: where the tensors are). From host memory
        only the gathered CSR entries travel (asynchronously from pinned memory). Data with
        unmeasured genes add the ``(cells, genes)`` mask ``"measured"``.
        """
        device = self.device if device is None else torch.device(device)
        idx = idx.to(self.device, torch.long)
        batch: dict[str, torch.Tensor] = {}
        if self.dense is not None:
            batch[REGISTRY_KEYS.X_KEY] = _move(self.dense.index_select(0, idx), device)
        elif self.device.type == "cpu" and device.type == "cpu":
            batch[REGISTRY_KEYS.X_KEY] = self._densify_on_cpu(idx)
        else:
            batch[REGISTRY_KEYS.X_KEY] = self._densify_vectorised(idx, device)
        for key, values in self.covariates.items():
            batch[key] = _move(values.index_select(0, idx), device)
        if self.panel is not None:
            # the small per-panel masks go to the device once; each cell takes its panel's row
            codes = _move(self.panel.index_select(0, idx), device)
            batch[MEASURED_KEY] = self._masks_on(device).index_select(0, codes)
        batch[REGISTRY_KEYS.INDICES_KEY] = _move(idx, device)
        return batch

    def _densify_on_cpu(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense rows ``idx`` of CPU-held CSR counts, by one compiled pass over their entries."""
        self._check_rows(idx)  # the compiled loop does not check bounds
        x = torch.zeros(idx.numel(), self.n_vars, dtype=torch.float32)
        _densify_rows()(
            self.crow.numpy(), self.col.numpy(), self.val.numpy(), idx.numpy(), x.numpy()
        )
        return x

    def _check_rows(self, idx: torch.Tensor) -> None:
        """Refuse indices of rows that do not exist (host-held indices only: reading them is
        free there, while on an accelerator torch's own indexing asserts)."""
        if idx.device.type == "cpu" and idx.numel():
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= self.n_obs:
                raise IndexError(f"cell indices must lie in [0, {self.n_obs}), got {low}..{high}")

    def _densify_vectorised(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Dense rows ``idx`` built on ``device`` with torch operations only (no host loop):
        from host memory only the gathered entries travel, asynchronously when pinned."""
        self._check_rows(idx)
        starts = self.crow[idx]
        lengths = self.crow[idx + 1] - starts
        total = int(lengths.sum())  # one host read per step: the size of the gather
        ends = torch.cumsum(lengths, 0)
        # entry j of output row r sits at starts[r] + (j - (ends[r] - lengths[r]))
        shift = torch.repeat_interleave(starts - (ends - lengths), lengths, output_size=total)
        positions = torch.arange(total, device=idx.device) + shift
        rows = torch.repeat_interleave(
            torch.arange(idx.numel(), device=idx.device), lengths, output_size=total
        )
        col = self.col.index_select(0, positions)
        val = self.val.index_select(0, positions)
        if self.pinned and device.type == "cuda":
            col, val, rows = (t.pin_memory() for t in (col, val, rows))
        col, val, rows = (_move(t, device) for t in (col, val, rows))
        flat = rows * self.n_vars + col.long()
        x = torch.zeros(idx.numel() * self.n_vars, dtype=torch.float32, device=device)
        x.scatter_add_(0, flat, val)  # duplicate entries add up, as in SciPy
        return x.view(idx.numel(), self.n_vars)

    def _masks_on(self, device: torch.device) -> torch.Tensor:
        if self._masks_cache is None or self._masks_cache.device != device:
            self._masks_cache = self.panel_masks.to(device)
        return self._masks_cache


def split_cells(
    n_obs: int,
    batch_size: int,
    train_size: float | None = None,
    validation_size: float | None = None,
    shuffle_set_split: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training, validation and test cells exactly as scvi-tools' ``DataSplitter`` draws them."""
    train = 0.9 if train_size is None else train_size
    n_train, n_val = validate_data_split(
        n_obs, train, validation_size, batch_size, False, train_size is None
    )
    indices = np.arange(n_obs)
    if shuffle_set_split:
        indices = np.random.RandomState(seed=settings.seed).permutation(indices)
    return indices[n_val : n_val + n_train], indices[:n_val], indices[n_val + n_train :]


class _SplitDataModule(LightningDataModule):
    """What both data modules set up: the registered AnnData's cells split as scvi-tools'
    ``DataSplitter`` splits them, the mini-batch size and the shuffling seed (``None`` uses
    ``scvi.settings.seed``, and 0 where that is unset too)."""

    def __init__(
        self,
        adata_manager,
        batch_size: int,
        train_size: float | None,
        validation_size: float | None,
        shuffle_set_split: bool,
        seed: int | None,
    ):
        super().__init__()
        self.adata_manager = adata_manager
        self.batch_size = batch_size
        seed = settings.seed if seed is None else seed
        self.seed = 0 if seed is None else int(seed)
        self.n_obs = adata_manager.adata.n_obs
        self.train_idx, self.val_idx, self.test_idx = split_cells(
            self.n_obs, batch_size, train_size, validation_size, shuffle_set_split
        )
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)


def _steps(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> list:
    """This rank's mini-batches of an epoch's order: each step deals the next ``batch_size ×
    world_size`` cells to the ranks (``[rank::world_size]``), so all run the same number of
    steps and together see every cell once; a last chunk too small to give each rank two cells
    (batch norm needs two) joins the step before it."""
    chunk = batch_size * world_size
    bounds = [*list(range(0, order.numel(), chunk)), order.numel()]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2 * world_size:
        del bounds[-2]
    return [order[a:b][rank::world_size] for a, b in itertools.pairwise(bounds)]


@dataclasses.dataclass(eq=False)
class _EpochBatches:
    """Iterable of one epoch's mini-batches (Lightning takes any sized iterable)."""

    tensors: CellTensors
    indices: np.ndarray
    batch_size: int
    shuffle: bool
    seed: int
    device: torch.device
    rank: int = 0
    world_size: int = 1
    epoch: int = dataclasses.field(default=0, init=False)

    def __post_init__(self):
        self.indices = torch.as_tensor(np.asarray(self.indices, dtype=np.int64))

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return self.indices
        # the same permutation on every rank: seeded by the seed and the epoch only
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return self.indices[torch.randperm(self.indices.numel(), generator=generator)]

    def __len__(self) -> int:
        return len(_steps(self.indices, self.batch_size, self.rank, self.world_size))

    def __iter__(self) -> Iterator[dict]:
        steps = _steps(self._order(), self.batch_size, self.rank, self.world_size)
        self.epoch += 1
        for idx in steps:
            yield self.tensors.gather(idx, self.device)


class InMemoryDataModule(_SplitDataModule):
    """Training and validation mini-batches of an in-memory AnnData, gathered as tensors.

    The default data path of :meth:`scr2mae.R2MAEModel.train`. The split into training and
    validation cells is scvi-tools' :class:`~scvi.dataloaders.DataSplitter`'s (same sizes, same
    permutation from ``scvi.settings.seed``), so a model trained through this module and one
    trained through scvi-tools' loader hold out the same cells. The training order is a fresh
    permutation every epoch, seeded by ``seed`` and the epoch number. Under DDP each process
    takes its share of every step (see :func:`_steps`), so an epoch covers each training cell
    once across the processes.

    Parameters
    ----------
    adata_manager
        The :class:`scvi.data.AnnDataManager` of the registered AnnData.
    batch_size
        Cells per mini-batch (per process under DDP).
    train_size, validation_size, shuffle_set_split
        As in :class:`~scvi.dataloaders.DataSplitter`; ``train_size=None`` is scvi-tools'
        default (0.9, with a tiny last batch moved to validation).
    seed
        Seed of the per-epoch shuffling; ``None`` uses ``scvi.settings.seed``.
    device
        Where the tensors live: ``"auto"`` uses the trainer's device when they fit there
        (pinned host memory otherwise).
    """

    def __init__(
        self,
        adata_manager,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        seed: int | None = None,
        device: torch.device | str = "auto",
    ):
        check_int("batch_size", batch_size, minimum=2)
        super().__init__(
            adata_manager, batch_size, train_size, validation_size, shuffle_set_split, seed
        )
        self.device = device
        self.tensors: CellTensors | None = None

    def _target(self) -> tuple[torch.device, int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return torch.device("cpu"), 0, 1
        return trainer.strategy.root_device, trainer.global_rank, trainer.world_size

    def setup(self, stage: str | None = None) -> None:
        """Turn the counts and covariates into tensors (once), where training runs."""
        target, _, _ = self._target()
        if self.tensors is None:
            self.tensors = CellTensors(self.adata_manager)
        if self.device == "auto":
            self.tensors.place_for(target)
        else:
            self.tensors.to(self.device)

    def _batches(self, indices, shuffle: bool) -> _EpochBatches:
        if self.tensors is None:
            self.setup()
        target, rank, world_size = self._target()
        return _EpochBatches(
            self.tensors, indices, self.batch_size, shuffle, self.seed, target, rank, world_size
        )

    def train_dataloader(self) -> _EpochBatches:
        """Shuffled mini-batches of the training cells."""
        return self._batches(self.train_idx, shuffle=True)

    def val_dataloader(self) -> _EpochBatches | list:
        """Mini-batches of the validation cells, in a fixed order."""
        if len(self.val_idx) == 0:
            return []
        return self._batches(self.val_idx, shuffle=False)
