"""Donor mixing and read speed of the on-disk mini-batches on a file stored sorted by donor.

    python benchmarks/genomics/singlecell/ondisk_mixing.py --smoke  # seconds: 20 genes, 1 epoch
    python benchmarks/genomics/singlecell/ondisk_mixing.py --quick  # 200 genes, 2 epochs
    python benchmarks/genomics/singlecell/ondisk_mixing.py          # 2,000 genes, 3 epochs + sweep

The batch-correction terms of R2MAEModel compare the batches (donors) inside a mini-batch, so a
mini-batch that holds one or two donors gives them nothing to correct. Atlases are often stored
sorted by donor. This script writes ``--donors`` × ``--cells-per-donor`` cells of sparse
synthetic counts (``--density`` non-zero, values 1 + Poisson(1)), sorted by donor, to a backed
``.h5ad`` and draws training mini-batches of ``--batch-size`` cells from it with:

* ``old``: :class:`scr2mae.data.OnDiskDataModule` with the chunking it had before (16 chunks of
  1,024 rows per buffer);
* ``chunk N`` (full mode, ``--sweep``): chunks of N rows, as many as fit in the same buffer;
* ``new``: :class:`~scr2mae.data.OnDiskDataModule` with its defaults (the same buffer size);
* ``in_memory``: :class:`scr2mae.data.InMemoryDataModule` (a full shuffle: the reference).

It prints, per scheme, the mean number of distinct donors per mini-batch, its ratio to the
in-memory path, the share of mini-batches with at most two donors, and the read throughput:
cells per second of iterating one epoch of mini-batches (read, shuffle, densify; no model), with
the file in the page cache and, with ``--cold``, with the file evicted from the page cache
before the epoch (``posix_fadvise``). Schemes run interleaved, epoch by epoch, in one process;
throughput is the median over epochs. Writes ``ondisk_mixing.csv`` and ``ondisk_mixing.png``
(distribution of donors per mini-batch) to ``--out``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

#: the on-disk chunking before block shuffling with small chunks (rows per chunk, chunks per buffer)
OLD_CHUNKING = (1024, 16)
SWEEP_CHUNKS = (256, 128, 32)


def donor_sorted_counts(
    n_donors: int, cells_per_donor: int, n_genes: int, density: float = 0.05, seed: int = 0
):
    """Sparse CSR counts, rows sorted by donor: each entry non-zero with probability ``density``.

    Values are 1 + Poisson(1); every cell has gene 0 non-zero (no empty cell). ``obs["donor"]``
    is a categorical, constant over each run of ``cells_per_donor`` rows.
    """
    from anndata import AnnData
    from scipy import sparse

    for name, value in (
        ("n_donors", n_donors),
        ("cells_per_donor", cells_per_donor),
        ("n_genes", n_genes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not 0 < density <= 1:
        raise ValueError(f"`density` must be in (0, 1], got {density!r}.")
    rng = np.random.default_rng(seed)
    n_cells = n_donors * cells_per_donor
    blocks = []
    for start in range(0, n_cells, 10000):
        hit = rng.random((min(10000, n_cells - start), n_genes), dtype=np.float32) < density
        hit[:, 0] = True
        block = sparse.csr_matrix(hit, dtype=np.float32)
        block.data = 1.0 + rng.poisson(1.0, block.nnz).astype(np.float32)
        blocks.append(block)
    adata = AnnData(X=sparse.vstack(blocks, format="csr"))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    donors = [f"donor{d:02d}" for d in range(n_donors)]
    adata.obs["donor"] = pd.Categorical(np.repeat(donors, cells_per_donor), categories=donors)
    return adata


def evict_from_page_cache(path: Path) -> None:
    """Ask the kernel to drop the cached pages of ``path`` (the next reads go to the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def one_epoch(loader) -> tuple[list[int], int, float, float]:
    """Distinct donors of each mini-batch, cells, wall and CPU seconds of one epoch."""
    import torch
    from scvi import REGISTRY_KEYS

    donors, cells = [], 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in loader:
        codes = batch[REGISTRY_KEYS.BATCH_KEY]
        donors.append(int(torch.unique(codes).numel()))
        cells += codes.shape[0]
    return donors, cells, time.perf_counter() - wall, time.process_time() - cpu


def default_chunking() -> tuple[int, int]:
    """``chunk_size`` and ``buffer_chunks`` defaults of :class:`~scr2mae.data.OnDiskDataModule`."""
    from scr2mae.data import OnDiskDataModule

    params = inspect.signature(OnDiskDataModule).parameters
    return params["chunk_size"].default, params["buffer_chunks"].default


def run(args) -> pd.DataFrame:
    import scvi

    from scr2mae import R2MAEModel
    from scr2mae.data import InMemoryDataModule, OnDiskDataModule, read_backed

    scvi.settings.seed = args.seed
    adata = donor_sorted_counts(
        args.donors, args.cells_per_donor, args.genes, args.density, args.seed
    )
    new = default_chunking()
    budget = new[0] * new[1]
    schemes = [("old", *OLD_CHUNKING)]
    for chunk in args.sweep or ():
        if (chunk, budget // chunk) not in (OLD_CHUNKING, new):
            schemes.append((f"chunk {chunk}", chunk, budget // chunk))
    schemes += [("new", *new), ("in_memory", None, None)]
    records = {name: {"donors": [], "warm": [], "cold": []} for name, _, _ in schemes}
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "donor_sorted.h5ad"
        adata.write_h5ad(path)
        size_mb = path.stat().st_size / 1e6
        backed = read_backed(path)
        R2MAEModel.setup_anndata(backed, batch_key="donor")
        R2MAEModel.setup_anndata(adata, batch_key="donor")
        manager_disk = R2MAEModel(backed, n_hidden=8, n_latent=2).adata_manager
        manager_memory = R2MAEModel(adata, n_hidden=8, n_latent=2).adata_manager
        loaders = {}
        for name, chunk, buffer in schemes:
            if chunk is None:
                dm = InMemoryDataModule(manager_memory, batch_size=args.batch_size, device="cpu")
                dm.setup()
            else:
                dm = OnDiskDataModule(
                    manager_disk, batch_size=args.batch_size, chunk_size=chunk, buffer_chunks=buffer
                )
            loaders[name] = dm.train_dataloader()
        for epoch in range(args.epochs):
            for name, chunk, _ in schemes:
                passes = ["warm"] + (["cold"] if args.cold and chunk is not None else [])
                for cache in passes:
                    if cache == "cold":
                        evict_from_page_cache(path)
                    donors, cells, wall, cpu = one_epoch(loaders[name])
                    records[name]["donors"] += donors
                    records[name][cache].append((cells / wall, cells / cpu))
            print(f"epoch {epoch + 1}/{args.epochs} done", flush=True)
        backed.file.close()
    rows = []
    for name, chunk, buffer in schemes:
        donors = np.asarray(records[name]["donors"])
        warm = np.asarray(records[name]["warm"])
        cold = np.asarray(records[name]["cold"]) if records[name]["cold"] else None
        rows.append(
            {
                "scheme": name,
                "chunk_size": chunk,
                "buffer_chunks": buffer,
                "buffer_cells": None if chunk is None else chunk * buffer,
                "donors_per_batch": donors.mean(),
                "donors_per_batch_min": donors.min(),
                "share_at_most_2_donors": float(np.mean(donors <= 2)),
                "cells_per_s": float(np.median(warm[:, 0])),
                "cells_per_cpu_s": float(np.median(warm[:, 1])),
                "cells_per_s_cold": None if cold is None else float(np.median(cold[:, 0])),
                "n_batches": donors.size,
            }
        )
    table = pd.DataFrame(rows).set_index("scheme")
    table["donors_vs_in_memory"] = (
        table["donors_per_batch"] / table.loc["in_memory"]["donors_per_batch"]
    )
    table["speed_vs_old"] = table["cells_per_s"] / table.loc["old"]["cells_per_s"]
    table["cpu_speed_vs_old"] = table["cells_per_cpu_s"] / table.loc["old"]["cells_per_cpu_s"]
    if args.cold:
        table["cold_speed_vs_old"] = (
            table["cells_per_s_cold"] / table.loc["old"]["cells_per_s_cold"]
        )
    table.attrs["file_mb"] = size_mb
    table.attrs["donors"] = {name: records[name]["donors"] for name, _, _ in schemes}
    return table


def figure(table: pd.DataFrame, path: Path, n_donors: int) -> None:
    plt = tail.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0.5, n_donors + 1.5)
    for name, donors in table.attrs["donors"].items():
        ax.hist(donors, bins=bins, histtype="step", density=True, linewidth=1.5, label=name)
    ax.set_xlabel("distinct donors in a mini-batch")
    ax.set_ylabel("share of mini-batches")
    ax.set_title("Mini-batches drawn from a file sorted by donor")
    ax.legend(fontsize=7)
    tail.save_figure(fig, path)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark and return the table (one row per scheme)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="20 genes, 1 epoch (seconds)")
    mode.add_argument("--quick", action="store_true", help="200 genes, 2 epochs")
    parser.add_argument("--donors", type=int, default=20)
    parser.add_argument("--cells-per-donor", type=int, default=5000)
    parser.add_argument("--genes", type=int, default=None, help="default 2000 (full mode)")
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (full mode)")
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=None, help="extra chunk sizes, same buffer"
    )
    parser.add_argument(
        "--cold", action="store_true", help="also time epochs with the file out of page cache"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/genomics/singlecell/results/ondisk_mixing")
    args = parser.parse_args(argv)
    full = not (args.smoke or args.quick)
    if args.genes is None:
        args.genes = 20 if args.smoke else 200 if args.quick else 2000
    if args.epochs is None:
        args.epochs = 1 if args.smoke else 2 if args.quick else 3
    if args.sweep is None:
        args.sweep = list(SWEEP_CHUNKS) if full else []
    if args.batch_size < 2 or args.epochs < 1:
        raise ValueError("`--batch-size` must be >= 2 and `--epochs` >= 1.")
    tail.quiet()
    out = tail.output_dir(args.out)
    print(
        f"{args.donors} donors x {args.cells_per_donor} cells, sorted by donor, {args.genes} genes "
        f"({args.density:.0%} non-zero), mini-batches of {args.batch_size}, {args.epochs} epoch(s)",
        flush=True,
    )
    table = run(args)
    table.to_csv(out / "ondisk_mixing.csv")
    figure(table, out / "ondisk_mixing.png", args.donors)
    print(f"\nbacked .h5ad: {table.attrs['file_mb']:.0f} MB")
    columns = [
        "chunk_size",
        "buffer_chunks",
        "donors_per_batch",
        "donors_vs_in_memory",
        "share_at_most_2_donors",
        "cells_per_s",
        "speed_vs_old",
        "cells_per_cpu_s",
        "cpu_speed_vs_old",
    ]
    if args.cold:
        columns += ["cells_per_s_cold", "cold_speed_vs_old"]
    print(table[columns].round(3).to_markdown())
    new = table.loc["new"]
    print(
        f"\nnew / in-memory distinct donors per mini-batch: {new['donors_vs_in_memory']:.3f} "
        f"(target >= 0.8); new / old cells/s: {new['speed_vs_old']:.2f}"
    )
    print(f"figure: {out / 'ondisk_mixing.png'}")
    return table


if __name__ == "__main__":
    main()
