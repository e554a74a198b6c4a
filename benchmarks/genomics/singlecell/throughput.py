"""Training throughput (cells/s) of R2MAEModel's data paths against scVI and the compute floor.

    python benchmarks/genomics/singlecell/throughput.py --quick
    python benchmarks/genomics/singlecell/throughput.py  # 10k, 100k, 1M x 2000; 100k x 5000
    python benchmarks/genomics/singlecell/throughput.py --sizes 100000x2000 --widths 128/32
    python benchmarks/genomics/singlecell/throughput.py --sizes 1000000x2000 --modes fast scVI \
        floor --precisions fp32 bf16 --device cuda --limit-steps 1000  # on a GPU

For each size of synthetic sparse counts (10 % non-zero, counts 1 + Poisson(1)) and each pair of
widths (hidden/latent; 2 hidden encoder layers), one training epoch is timed, in this process,
for:

* ``fast``: ``R2MAEModel.train(data_loader="in_memory")`` (counts as torch tensors, rows
  gathered per step; the default);
* ``paper_loss``: the fast path with the paper's loss, the masked genes alone
  (``visible_weight=0``; the default also scores the visible genes);
* ``scvi_loader``: ``R2MAEModel.train(data_loader="scvi")`` (scvi-tools' AnnDataLoader);
* ``scVI``: ``scvi.model.SCVI`` with its defaults at the same widths;
* ``floor``: the bare module step (mask draw, forward, masked NB loss, backward, and the step
  of the training plan's own optimiser) on mini-batches densified beforehand, with no
  Lightning and no data loading: the compute floor of the step the fast path runs;
* ``on_disk``: ``R2MAEModel.train(data_loader="on_disk")`` on the same cells written to a
  local ``.h5ad`` and opened backed.

Each mode runs in every ``--precisions``: ``fp32``, or ``bf16`` (Lightning's ``bf16-mixed``;
the floor under ``torch.autocast``). ``--device`` picks where models train (``auto``: CUDA when
available). Every model is warmed up first by an untimed fit on a few cells (the first Lightning
fit of a process pays one-off costs). Epoch time runs from the epoch's first step to its end
(the data module's and the epoch's one-off set-up are left out); on a GPU the clock stops after
the device has finished (``torch.cuda.synchronize``). Peak memory is
the highest resident set size of the process sampled while each mode runs, and on a GPU also the
highest memory allocated by torch on the device (``torch.cuda.max_memory_allocated``, reset
before each mode; ``n/a`` on the CPU). On a shared machine
other processes stretch the wall clock, so the script also reports cells per CPU-second of this
process (with ``--threads 1`` that is the single-core rate without the waiting). It prints
cells/s, the ratios to the floor and to scVI, and writes ``throughput.csv`` and
``throughput.png`` (cells per CPU-second and peak memory against the number of cells) to ``--out``.
``--repeats N`` times every mode N times, going round the modes in turn, and reports each
mode's fastest repeat (other processes only ever slow a run down, so the fastest repeat is the
least disturbed one) and, in one more table, the medians; the CSV keeps every repeat.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

MODES = ("fast", "paper_loss", "scvi_loader", "scVI", "floor", "on_disk")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
FULL_SIZES = ("10000x2000", "100000x2000", "1000000x2000", "100000x5000")
QUICK_SIZES = ("3000x500",)


class PeakRSS:
    """Highest resident set size of this process (bytes), sampled every 20 ms while active."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def __enter__(self):
        self.start = self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def synthetic_counts(n_cells: int, n_genes: int, density: float = 0.1, seed: int = 0):
    """Sparse CSR counts: each entry non-zero with probability ``density``, value 1 + Poisson(1)."""
    from anndata import AnnData
    from scipy import sparse

    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, n_cells, 20000):
        rows = min(20000, n_cells - start)
        hit = rng.random((rows, n_genes), dtype=np.float32) < density
        hit[:, 0] = True  # no empty cell
        block = sparse.csr_matrix(hit, dtype=np.float32)
        block.data = 1.0 + rng.poisson(1.0, block.nnz).astype(np.float32)
        blocks.append(block)
    counts = sparse.vstack(blocks, format="csr")
    adata = AnnData(X=counts)
    adata.obs["batch"] = pd.Categorical(rng.integers(0, 4, n_cells).astype(str))
    return adata


def _sync() -> None:
    """Wait for the GPU's queued work (a no-op without CUDA), so that clocks see all of it."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Clock:
    """Wall-clock and process CPU time between two points."""

    def start(self):
        _sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        _sync()
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class PeakGPU:
    """Highest memory allocated by torch on the current CUDA device while active (``None``: CPU)."""

    def __init__(self, device: str):
        self.on_gpu = device == "cuda"
        self.peak = None

    def __enter__(self):
        if self.on_gpu:
            import gc

            import torch

            gc.collect()  # the tensors of the mode before must not count here
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.on_gpu:
            import torch

            _sync()
            self.peak = torch.cuda.max_memory_allocated()


def _epoch_cells_per_second(model, n_train: int, **train_kwargs) -> tuple[float, float]:
    """Cells/s of one training epoch, by wall clock and by process CPU time.

    The clock runs from the start of the epoch's first step to the end of the epoch: the
    epoch's one-off set-up (the data loader's iterator, a shuffled order of the training cells
    and its split into steps) is left out. A full epoch spreads that set-up over all its steps
    (at 1M cells about 90 ms over 7,000 steps); under ``--limit-steps`` it would fall on the
    few timed steps alone.
    """
    import lightning.pytorch as pl

    clock = _Clock()

    class EpochClock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                clock.start()

        def on_train_epoch_end(self, trainer, pl_module):
            clock.seconds = clock.stop()

    model.train(max_epochs=1, callbacks=[EpochClock()], enable_progress_bar=False, **train_kwargs)
    wall, cpu = clock.seconds
    return n_train / wall, n_train / cpu


def _floor(
    model, batch_size: int, n_steps: int, device: str = "cpu", precision: str = "fp32"
) -> tuple[float, float]:
    """Cells/s of the bare module step on mini-batches densified beforehand, on ``device``."""
    import torch

    from scr2mae.data import inference_batches
    from scr2mae.model import R2MAETrainingPlan

    module = model.module.to(device).train()
    batches = []
    for batch in inference_batches(model.adata_manager, batch_size=batch_size, device=device):
        batches.append(batch)
        if len(batches) == min(n_steps, 20):
            break
    # the optimiser of the fast path's training plan (the paper's Adam, fused where torch can)
    optimizer = R2MAETrainingPlan(module).configure_optimizers()["optimizer"]
    bf16 = precision == "bf16"

    def step(tensors):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            _, _, loss = module(tensors)
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        optimizer.step()

    for tensors in batches[:3]:
        step(tensors)
    clock = _Clock()
    clock.start()
    for i in range(n_steps):
        step(batches[i % len(batches)])
    wall, cpu = clock.stop()
    return n_steps * batch_size / wall, n_steps * batch_size / cpu


def run_size(
    n_cells,
    n_genes,
    widths,
    modes,
    batch_size,
    floor_steps,
    workdir,
    seed,
    limit_steps=None,
    precisions=("fp32",),
    device="cpu",
    repeats=1,
):
    import scvi

    from scr2mae import R2MAEModel
    from scr2mae.data import read_backed

    adata = synthetic_counts(n_cells, n_genes, seed=seed)
    csr_bytes = adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes
    backed = None
    if "on_disk" in modes:
        path = Path(workdir) / f"cells_{n_cells}x{n_genes}.h5ad"
        adata.write_h5ad(path)
        backed = read_backed(path)
        R2MAEModel.setup_anndata(backed, batch_key="batch")
    R2MAEModel.setup_anndata(adata, batch_key="batch")
    if "scVI" in modes:
        scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    rows = []
    for n_hidden, n_latent in widths:
        sizes = {"n_hidden": n_hidden, "n_latent": n_latent, "n_layers": 2}
        n_train = int(np.ceil(0.9 * n_cells))
        # train() on the chosen device, one device, in the chosen precision
        trainer = {"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1}
        if limit_steps:
            # time the first `limit_steps` mini-batches of the epoch instead of all of them
            trainer.update(limit_train_batches=limit_steps, limit_val_batches=limit_steps)
            n_train = min(n_train, limit_steps * batch_size)
        # the repeats go round every mode in turn, so that a slow spell of a shared machine
        # falls on all modes rather than on one
        for repeat, precision, mode in itertools.product(range(repeats), precisions, modes):
            scvi.settings.seed = seed
            fit = {"batch_size": batch_size, "precision": PRECISIONS[precision], **trainer}
            with PeakRSS() as rss, PeakGPU(device) as gpu:
                if mode == "fast":
                    rate, cpu_rate = _epoch_cells_per_second(
                        R2MAEModel(adata, **sizes), n_train, **fit
                    )
                elif mode == "paper_loss":
                    # the same path with the paper's loss (masked genes only, visible_weight=0)
                    rate, cpu_rate = _epoch_cells_per_second(
                        R2MAEModel(adata, visible_weight=0, **sizes), n_train, **fit
                    )
                elif mode == "scvi_loader":
                    rate, cpu_rate = _epoch_cells_per_second(
                        R2MAEModel(adata, **sizes), n_train, data_loader="scvi", **fit
                    )
                elif mode == "scVI":
                    rate, cpu_rate = _epoch_cells_per_second(
                        scvi.model.SCVI(adata, **sizes), n_train, **fit
                    )
                elif mode == "floor":
                    rate, cpu_rate = _floor(
                        R2MAEModel(adata, **sizes), batch_size, floor_steps, device, precision
                    )
                else:
                    rate, cpu_rate = _epoch_cells_per_second(
                        R2MAEModel(backed, **sizes), n_train, **fit
                    )
            rows.append(
                {
                    "n_cells": n_cells,
                    "n_genes": n_genes,
                    "widths": f"{n_hidden}/{n_latent}",
                    "precision": precision,
                    "mode": mode,
                    "repeat": repeat,
                    "device": device,
                    "cells_per_s": rate,
                    "cells_per_cpu_s": cpu_rate,
                    "peak_rss_gb": rss.peak / 1e9,
                    "start_rss_gb": rss.start / 1e9,
                    "peak_gpu_gb": np.nan if gpu.peak is None else gpu.peak / 1e9,
                    "csr_gb": csr_bytes / 1e9,
                }
            )
            gpu_text = "n/a" if gpu.peak is None else f"{gpu.peak / 1e9:.2f} GB"
            print(
                f"  {n_cells} x {n_genes}, widths {n_hidden}/{n_latent}, {precision}, {mode}"
                + (f" (repeat {repeat + 1}/{repeats})" if repeats > 1 else "")
                + ": "
                f"{rate:,.0f} cells/s ({cpu_rate:,.0f} per CPU-second), "
                f"peak RSS {rss.peak / 1e9:.2f} GB (at start {rss.start / 1e9:.2f} GB), "
                f"peak GPU memory {gpu_text}",
                flush=True,
            )
    if backed is not None:
        backed.file.close()
    return rows


def ratio_table(
    table: pd.DataFrame, values: str = "cells_per_s", repeats: str = "max"
) -> pd.DataFrame:
    """Cells/s per mode, over repeats the fastest (``repeats="max"``) or the median, with the
    fast path's ratios to the floor, paper_loss, scvi_loader and scVI."""
    index = ["n_cells", "n_genes", "widths", "precision"]
    wide = table.pivot_table(index=index, columns="mode", values=values, aggfunc=repeats)
    wide = wide[[m for m in MODES if m in wide.columns]]
    if "fast" in wide:
        for base in ("floor", "paper_loss", "scvi_loader", "scVI"):
            if base in wide:
                wide[f"fast/{base}"] = wide["fast"] / wide[base]
    return wide


def figure(table: pd.DataFrame, path: Path) -> None:
    device = table["device"].iloc[0]
    plt = tail.pyplot()
    fig, (ax_rate, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    keys = ["mode", "widths", "n_genes", "precision", "n_cells"]
    table = table.groupby(keys, as_index=False).agg(
        cells_per_cpu_s=("cells_per_cpu_s", "max"),
        peak_rss_gb=("peak_rss_gb", "max"),
        csr_gb=("csr_gb", "first"),
    )
    groups = table.groupby(["mode", "widths", "n_genes", "precision"])
    colours = plt.get_cmap("tab20")
    for i, ((mode, widths, n_genes, precision), part) in enumerate(groups):
        part = part.sort_values("n_cells")
        label = f"{mode} {widths} G={n_genes} {precision}"
        style = {"marker": "o", "label": label, "color": colours(i % 20)}
        ax_rate.plot(part["n_cells"], part["cells_per_cpu_s"], **style)
        ax_mem.plot(part["n_cells"], part["peak_rss_gb"], **style)
    csr = table.drop_duplicates(["n_cells", "n_genes"]).sort_values("n_cells")
    for n_genes, part in csr.groupby("n_genes"):
        ax_mem.plot(part["n_cells"], part["csr_gb"], "k--", lw=1, label=f"CSR size G={n_genes}")
    for ax, ylabel in (
        (ax_rate, "training cells per CPU-second"),
        (ax_mem, "peak resident memory (GB)"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(ylabel)
    ax_rate.set_yscale("log")
    ax_mem.legend(fontsize=6)
    fig.suptitle(f"R2MAEModel training throughput ({device})")
    tail.save_figure(fig, path)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark and return the long table (one row per size, widths and mode)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, CI-sized")
    parser.add_argument("--sizes", nargs="+", help="CELLSxGENES, e.g. 100000x2000")
    parser.add_argument("--widths", nargs="+", default=["128/32", "512/128"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS), help="fp32, bf16"
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA if available"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--floor-steps", type=int, default=200)
    parser.add_argument(
        "--limit-steps",
        type=int,
        default=None,
        help="time only the first N mini-batches of the epoch (large sizes on a slow machine)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time every mode this many times, in turn; report the fastest and the median",
    )
    parser.add_argument(
        "--skip-warm-up", action="store_true", help="no untimed first fits (dry runs only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/genomics/singlecell/results/throughput")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}.")
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "scvi", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` needs a CUDA device; none is available.")
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    widths = [tuple(int(v) for v in w.split("/")) for w in args.widths]
    floor_steps = 20 if args.quick else args.floor_steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_warm_up:
        _warm_up(widths[0], args.batch_size, device)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in sizes:
            n_cells, n_genes = (int(v) for v in size.lower().split("x"))
            print(f"{n_cells} cells x {n_genes} genes", flush=True)
            rows += run_size(
                n_cells,
                n_genes,
                widths,
                args.modes,
                args.batch_size,
                floor_steps,
                workdir,
                args.seed,
                args.limit_steps,
                args.precisions,
                device,
                args.repeats,
            )
            # written after every size: a run stopped by a time limit keeps what it measured
            pd.DataFrame(rows).to_csv(out / "throughput.csv", index=False)
    table = pd.DataFrame(rows)
    table.to_csv(out / "throughput.csv", index=False)
    figure(table, out / "throughput.png")
    what = f"first {args.limit_steps} steps of an epoch" if args.limit_steps else "one epoch"
    if args.repeats > 1:
        what += f", fastest of {args.repeats} repeats"
    print(
        f"\ncells/s, {what}, batch {args.batch_size}, {torch.get_num_threads()} torch "
        f"thread(s), device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
    )
    print(ratio_table(table).round(2).to_markdown())
    print(
        "\ncells per CPU-second of the process (robust to other processes on a shared machine "
        "when torch runs one thread)"
    )
    print(ratio_table(table, "cells_per_cpu_s").round(2).to_markdown())
    if args.repeats > 1:
        print(f"\ncells per CPU-second, median of {args.repeats} repeats")
        print(ratio_table(table, "cells_per_cpu_s", "median").round(2).to_markdown())
    index = ["n_cells", "n_genes", "widths", "precision"]
    memory = table.pivot_table(index=index, columns="mode", values="peak_rss_gb", aggfunc="max")
    print("\npeak resident memory (GB)")
    print(memory.round(2).to_markdown())
    print("\npeak GPU memory allocated by torch (GB)")
    gpu = table.pivot_table(
        index=index, columns="mode", values="peak_gpu_gb", aggfunc="max", dropna=False
    )
    print(gpu.round(2).astype(object).where(gpu.notna(), "n/a").to_markdown())
    print(f"\nfigure: {out / 'throughput.png'}")
    return table


def _warm_up(widths, batch_size, device="cpu"):
    """An untimed fit of each model class: the first fit of a process pays one-off costs."""
    import scvi

    from scr2mae import R2MAEModel

    adata = synthetic_counts(600, 50, seed=1)
    R2MAEModel.setup_anndata(adata, batch_key="batch")
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    sizes = {"n_hidden": widths[0], "n_latent": widths[1]}
    accelerator = {"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1}
    for model, kwargs in (
        (R2MAEModel(adata, **sizes), {}),
        (R2MAEModel(adata, **sizes), {"data_loader": "scvi"}),
        (scvi.model.SCVI(adata, **sizes), {}),
    ):
        model.train(
            max_epochs=1, batch_size=batch_size, enable_progress_bar=False, **accelerator, **kwargs
        )


if __name__ == "__main__":
    main()
