"""Memory and latency of a query on another gene panel: prepare_query_anndata, then get_*.

    python benchmarks/genomics/singlecell/query_memory.py --quick  # 20,000 cells, minutes
    python benchmarks/genomics/singlecell/query_memory.py          # 200,000 and 1,000,000 cells

A small ``R2MAEModel`` (2 hidden layers of ``--hidden``, latent ``--latent``) is trained for a
few epochs on a small synthetic reference of ``--genes`` genes; training quality does not
matter here. Queries are synthetic sparse counts over the model's genes (each entry non-zero
with probability ``--density``, values 1 + Poisson(1)), in two versions of the same cells: one
*lacking* a random ``--missing`` share of the model's genes (its other genes as the complete
one's), one with every gene measured.

* **Memory.** For each ``--sizes`` and version, one subprocess loads the model and the query's
  counts (raw ``.npy`` arrays, read straight into their final arrays), then runs
  ``prepare_query_anndata`` and ``get_latent_representation`` on the result. Its peak resident
  memory above the moment the counts were loaded is the process's ``ru_maxrss`` at the end
  minus the resident size then (``ru_maxrss`` had not passed that point before; otherwise the
  peak of a 5 ms sampler is used). Printed: that peak for both versions, their ratio (target: at
  most 2), the counts' size and the times of both steps.
* **Latency.** One subprocess prepares the lacking query of ``--latency-size`` cells (untimed)
  and times ``get_latent_representation`` of ``--n-asked`` random cells of it against the same
  cells in an AnnData of their own, on the first call (a new AnnData object sharing the counts:
  checks and registration; median of 5 objects) and warm (median of 15 later calls), the two
  cases interleaved; the ratios are of process CPU time (other work on a shared machine
  stretches the wall clock, also reported); targets: at most 3× on both. It also times one
  whole-matrix count check (:func:`scr2mae._validation.check_count_matrix`, what
  ``setup_anndata`` and ``prepare_query_anndata`` run once), per million cells.

Writes ``query_memory.csv``, ``query_latency.csv`` and ``query_memory.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

FULL_SIZES = (200_000, 1_000_000)
#: first calls (new AnnData objects) and warm calls timed per case, medians reported
N_FIRST, N_WARM = 5, 15
QUICK_SIZES = (20_000,)
_RESULT = "RESULT "


# ------------------------------------------------------------------ data
def query_counts(n_cells: int, n_genes: int, keep: np.ndarray | None, density: float, seed: int):
    """Sparse CSR counts of ``n_cells`` × ``n_genes``, restricted to the columns ``keep``.

    The same ``seed`` gives the same cells whatever ``keep``: the lacking query is the complete
    one without some genes. Gene 0 is non-zero in every cell (keep it: no empty cell).
    """
    from scipy import sparse

    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, n_cells, 20_000):
        rows = min(20_000, n_cells - start)
        hit = rng.random((rows, n_genes), dtype=np.float32) < density
        hit[:, 0] = True
        block = sparse.csr_matrix(hit, dtype=np.float32)
        block.data = 1.0 + rng.poisson(1.0, block.nnz).astype(np.float32)
        blocks.append(block if keep is None else block[:, keep])
        del hit
    return sparse.vstack(blocks, format="csr")


def _save_counts(path: Path, counts) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("data", "indices", "indptr"):
        np.save(path / f"{name}.npy", getattr(counts, name))
    (path / "shape.json").write_text(json.dumps(list(counts.shape)))


def _load_counts(path: Path):
    from scipy import sparse

    arrays = [np.load(path / f"{name}.npy") for name in ("data", "indices", "indptr")]
    shape = tuple(json.loads((path / "shape.json").read_text()))
    return sparse.csr_matrix(tuple(arrays), shape=shape, copy=False)


def _query_anndata(path: Path, genes: list[str]):
    from anndata import AnnData

    counts = _load_counts(path)
    adata = AnnData(X=counts)
    adata.obs_names = [f"q{i}" for i in range(counts.shape[0])]
    adata.var_names = genes
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(counts.shape[0]) % 2, "b1", "b0"))
    return adata


def train_model(workdir: Path, n_genes: int, hidden: int, latent: int, seed: int) -> Path:
    """A small model trained for 3 epochs on 2,000 synthetic reference cells; its folder."""
    import scvi
    from anndata import AnnData

    from scr2mae import R2MAEModel

    scvi.settings.seed = seed
    counts = query_counts(2_000, n_genes, None, 0.05, seed + 1)
    reference = AnnData(X=counts)
    reference.var_names = [f"G{i}" for i in range(n_genes)]
    reference.obs["batch"] = pd.Categorical(np.where(np.arange(2_000) % 2, "b1", "b0"))
    R2MAEModel.setup_anndata(reference, batch_key="batch")
    model = R2MAEModel(reference, n_hidden=hidden, n_latent=latent)
    model.train(max_epochs=3, batch_size=128, enable_progress_bar=False)
    folder = workdir / "model"
    model.save(str(folder), overwrite=True, save_anndata=True)
    return folder


# ------------------------------------------------------------------ measurement (subprocess)
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


class _Sampler:
    """Highest resident size of this process, sampled every 5 ms while active."""

    def __init__(self):
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _quiet(threads: int) -> None:
    tail.quiet()
    import torch

    torch.set_num_threads(threads)


def _load_model(folder: str, device: str):
    from scr2mae import R2MAEModel

    model = R2MAEModel.load(folder)
    if device != "cpu":
        model.to_device(device)
    return model


def measure_memory(args: dict) -> dict:
    """Peak memory above the loaded counts of prepare_query_anndata + get_latent_representation."""
    import gc

    import torch

    from scr2mae import R2MAEModel

    _quiet(args["threads"])
    model = _load_model(args["model"], args["device"])
    adata = _query_anndata(Path(args["counts"]), args["genes"])
    counts_bytes = sum(a.nbytes for a in (adata.X.data, adata.X.indices, adata.X.indptr))
    gc.collect()
    baseline, max_before = _rss(), _max_rss()
    if args["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with _Sampler() as sampler:
        start = time.perf_counter()
        prepared = R2MAEModel.prepare_query_anndata(adata, model)
        prepared_s = time.perf_counter() - start
        start = time.perf_counter()
        z = model.get_latent_representation(prepared)
        latent_s = time.perf_counter() - start
    max_after = _max_rss()
    peak = max_after if max_after > max_before else sampler.peak
    stored = prepared.X
    return {
        "peak_above_counts_gb": (peak - baseline) / 1e9,
        "sampled_peak_above_counts_gb": (sampler.peak - baseline) / 1e9,
        "peak_from": "ru_maxrss" if max_after > max_before else "sampler",
        "counts_gb": counts_bytes / 1e9,
        "prepared_gb": sum(a.nbytes for a in (stored.data, stored.indices, stored.indptr)) / 1e9,
        "prepare_s": prepared_s,
        "latent_s": latent_s,
        "finite": bool(np.isfinite(z).all()),
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9
        if args["device"] == "cuda"
        else float("nan"),
    }


def _timed(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_latency(args: dict) -> dict:
    """get_latent_representation of a few cells of a large query against those cells alone."""
    from anndata import AnnData

    from scr2mae import R2MAEModel
    from scr2mae._validation import check_count_matrix

    _quiet(args["threads"])
    model = _load_model(args["model"], args["device"])
    adata = _query_anndata(Path(args["counts"]), args["genes"])
    prepared = R2MAEModel.prepare_query_anndata(adata, model)
    del adata
    n_obs = prepared.n_obs
    rng = np.random.default_rng(args["seed"])
    asked = np.sort(rng.choice(n_obs, args["n_asked"], replace=False))
    alone = prepared[asked].copy()
    # one-off costs of a process's first forward pass, outside the clocks
    model.get_latent_representation(model.adata, indices=np.arange(10))
    out = {"n_cells": n_obs, "n_asked": len(asked)}
    cases = {"large": (prepared, asked), "alone": (alone, None)}
    z, times = {}, {f"{name}_{when}": [] for name in cases for when in ("first", "warm")}
    # the two cases interleaved, so that other work on the machine slows both alike
    for _ in range(N_FIRST):
        for name, (adata, indices) in cases.items():
            # a new AnnData object sharing the counts: checks and registration again
            fresh = AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var)
            times[f"{name}_first"].append(
                _timed(lambda f=fresh, i=indices: model.get_latent_representation(f, i))
            )
    for _ in range(N_WARM):
        for name, (adata, indices) in cases.items():

            def call(adata=adata, indices=indices, name=name):
                z[name] = model.get_latent_representation(adata, indices=indices)

            times[f"{name}_warm"].append(_timed(call))
    for key, values in times.items():
        out[f"{key}_s"] = float(np.median([wall for wall, _ in values]))
        out[f"{key}_cpu_s"] = float(np.median([cpu for _, cpu in values]))
    out["same_latent"] = bool(np.allclose(z["large"], z["alone"], rtol=1e-4, atol=1e-5))
    check_s, _ = _timed(lambda: check_count_matrix(prepared, None, allow_empty=True))
    out["full_check_s_per_million"] = check_s / n_obs * 1e6
    return out


def _run_worker(kind: str, args: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {kind} measurement failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(_RESULT) :])


# ------------------------------------------------------------------ report
def figure(memory: pd.DataFrame, latency: pd.DataFrame, path: Path) -> None:
    plt = tail.pyplot()
    fig, (ax_mem, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    wide = memory.pivot_table(index="n_cells", columns="query", values="peak_above_counts_gb")
    wide.plot.bar(ax=ax_mem, rot=0)
    ax_mem.set_ylabel("peak memory above the counts (GB)")
    ax_mem.set_title("prepare_query_anndata + get_latent_representation")
    row = latency.iloc[0]
    labels = ["first call", "warm"]
    x = np.arange(2)
    for shift, name, label in ((-0.2, "large", "among all cells"), (0.2, "alone", "alone")):
        values = [row[f"{name}_first_cpu_s"] * 1e3, row[f"{name}_warm_cpu_s"] * 1e3]
        ax_lat.bar(x + shift, values, 0.4, label=label)
    ax_lat.set_xticks(x, labels)
    ax_lat.set_ylabel("CPU milliseconds (median)")
    ax_lat.set_title(f"{int(row['n_asked'])} cells of {int(row['n_cells']):,}")
    ax_lat.legend()
    tail.save_figure(fig, path)


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the benchmark; returns the memory table (one row per size and query) and the
    latency table (one row)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 cells, minutes on a CPU")
    parser.add_argument("--sizes", nargs="+", type=int, help="query cells, e.g. 200000 1000000")
    parser.add_argument("--latency-size", type=int, help="cells of the large query (largest)")
    parser.add_argument("--n-asked", type=int, default=100, help="cells embedded in the latency")
    parser.add_argument("--genes", type=int, default=2000, help="the model's genes")
    parser.add_argument("--missing", type=float, default=0.3, help="share the query lacks")
    parser.add_argument("--density", type=float, default=0.05, help="non-zero share")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/genomics/singlecell/results/query_memory")
    args = parser.parse_args(argv)
    if not 0.0 < args.missing < 1.0:
        raise ValueError(f"`--missing` must lie in (0, 1), got {args.missing}.")
    if not 0.0 < args.density <= 1.0:
        raise ValueError(f"`--density` must lie in (0, 1], got {args.density}.")
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    latency_size = args.latency_size or max(sizes)
    if args.n_asked < 2 or args.n_asked > latency_size:
        raise ValueError(f"`--n-asked` must lie in [2, {latency_size}], got {args.n_asked}.")
    _quiet(args.threads)
    out = tail.output_dir(args.out)
    genes = [f"G{i}" for i in range(args.genes)]
    rng = np.random.default_rng(args.seed)
    dropped = rng.choice(np.arange(1, args.genes), round(args.missing * args.genes), replace=False)
    keep = np.setdiff1d(np.arange(args.genes), dropped)
    print(
        f"model: {args.genes} genes, widths {args.hidden}/{args.latent}; queries: "
        f"{args.density:.0%} non-zero, the lacking one without {dropped.size} genes",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="query_memory_"))
    rows, latency = [], None
    try:
        model = train_model(workdir, args.genes, args.hidden, args.latent, args.seed)
        common = {"model": str(model), "threads": args.threads, "device": args.device}
        for n_cells in sorted(set(sizes) | {latency_size}):
            for query, columns in (("lacking", keep), ("complete", None)):
                path = workdir / f"{query}_{n_cells}"
                counts = query_counts(n_cells, args.genes, columns, args.density, args.seed + 2)
                _save_counts(path, counts)
                del counts
                names = genes if columns is None else [genes[i] for i in columns]
                job = {**common, "counts": str(path), "genes": names, "seed": args.seed}
                if n_cells in sizes:
                    result = _run_worker("memory", job, args.threads)
                    rows.append({"n_cells": n_cells, "query": query, **result})
                    print(
                        f"  {n_cells:,} cells, {query}: peak {result['peak_above_counts_gb']:.3f}"
                        f" GB above the counts ({result['counts_gb']:.3f} GB); prepare "
                        f"{result['prepare_s']:.1f} s, latent {result['latent_s']:.1f} s",
                        flush=True,
                    )
                if query == "lacking" and n_cells == latency_size:
                    latency = _run_worker("latency", {**job, "n_asked": args.n_asked}, args.threads)
                shutil.rmtree(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    memory = pd.DataFrame(rows)
    wide = memory.pivot_table(index="n_cells", columns="query", values="peak_above_counts_gb")
    wide["lacking/complete"] = wide["lacking"] / wide["complete"]
    latency = pd.DataFrame([latency])
    for when in ("first", "warm"):
        latency[f"{when}_ratio"] = latency[f"large_{when}_cpu_s"] / latency[f"alone_{when}_cpu_s"]
        latency[f"{when}_wall_ratio"] = latency[f"large_{when}_s"] / latency[f"alone_{when}_s"]
    memory.to_csv(out / "query_memory.csv", index=False)
    latency.to_csv(out / "query_latency.csv", index=False)
    figure(memory, latency, out / "query_memory.png")
    print("\npeak memory above the counts (GB), prepare_query_anndata + get_latent_representation")
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    row = latency.iloc[0]
    print(
        f"\nget_latent_representation of {int(row['n_asked'])} cells of {int(row['n_cells']):,} "
        "against those cells alone (process CPU time, median):"
    )
    for when in ("first", "warm"):
        print(
            f"  {when} call: {row[f'large_{when}_cpu_s'] * 1e3:.1f} ms vs "
            f"{row[f'alone_{when}_cpu_s'] * 1e3:.1f} ms (ratio {row[f'{when}_ratio']:.2f}; "
            f"wall clock {row[f'large_{when}_s'] * 1e3:.1f} vs {row[f'alone_{when}_s'] * 1e3:.1f} "
            f"ms, ratio {row[f'{when}_wall_ratio']:.2f})"
        )
    print(f"  same latent codes: {bool(row['same_latent'])}")
    print(f"whole-matrix count check: {row['full_check_s_per_million']:.2f} s per million cells")
    return memory, latency


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker = {"memory": measure_memory, "latency": measure_latency}[sys.argv[2]]
        print(_RESULT + json.dumps(worker(json.loads(sys.argv[3]))), flush=True)
    else:
        main()
