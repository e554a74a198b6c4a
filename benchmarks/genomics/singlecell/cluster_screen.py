"""Screen R2MAEModel settings for the scanpy clustering workflow: Leiden ARI/NMI and the probe.

    python benchmarks/genomics/singlecell/cluster_screen.py --dataset baron_mouse --seeds 0
    python benchmarks/genomics/singlecell/cluster_screen.py --candidates mmd var mmd_latent10

A cheaper companion of ``integration.py`` (whose data loaders and scores it reuses): each
candidate is one ``R2MAEModel`` configuration (:data:`CANDIDATES`), trained for the model's own
default length (``default_max_epochs``) unless the candidate says otherwise, batch size 128,
batch key = the dataset's batch; ``scvi`` is scVI at its defaults. Each embedding is scored by
``leiden_table`` (scanpy's neighbours at their defaults, Leiden at resolutions 1.0 and 0.5) and
``probe_table`` (cross-batch linear probe), without the scIB metrics. One JSON line per
(candidate, seed) is printed and appended to ``<out>/<dataset>/rows.jsonl``; a candidate and
seed already there is skipped, so an interrupted screen resumes.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

HERE = Path(__file__).parent
#: name -> (R2MAEModel arguments, train arguments); every candidate reads the batch key
CANDIDATES: dict[str, tuple[dict, dict]] = {
    "none": ({"batch_correction": "none"}, {}),
    "mmd": ({"batch_correction": "mmd"}, {}),
    "cp10k": ({"batch_correction": "none", "input_transform": "log1p_cp10k"}, {}),
    "mmd_cp10k": ({"batch_correction": "mmd", "input_transform": "log1p_cp10k"}, {}),
    "mmd_latent10": ({"batch_correction": "mmd", "n_latent": 10}, {}),
    "mmd_latent32": ({"batch_correction": "mmd", "n_latent": 32}, {}),
    "var": ({"batch_correction": "variational"}, {}),
    "mmd_dropout0.3": ({"batch_correction": "mmd", "dropout_rate": 0.3}, {}),
    "mmd_range0.3-0.7": ({"batch_correction": "mmd", "mask_range": (0.3, 0.7)}, {}),
    "mmd_exact": ({"batch_correction": "mmd", "mask_mode": "exact"}, {}),
    "mmd_epochs30": ({"batch_correction": "mmd"}, {"max_epochs": 30}),
}


def train_one(adata, name: str, seed: int, epochs: int | None) -> np.ndarray:
    """Train candidate ``name`` (or scVI for ``"scvi"``) and return its latent."""
    import scvi

    from scr2mae import R2MAEModel

    fit = {
        "batch_size": 128,
        "enable_progress_bar": False,
        "logger": False,
        "enable_checkpointing": False,
    }
    if epochs is not None:
        fit["max_epochs"] = epochs
    scvi.settings.seed = seed
    if name == "scvi":
        scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
        model = scvi.model.SCVI(adata)
    else:
        kwargs, train_kwargs = CANDIDATES[name]
        fit.update(train_kwargs)
        R2MAEModel.setup_anndata(adata, layer="counts", batch_key="batch")
        model = R2MAEModel(adata, **kwargs)
    model.train(**fit)
    return model.get_latent_representation()


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the screen; return the rows written by this call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default="baron_mouse", choices=("baron_mouse", "pbmc68k", "synthetic")
    )
    parser.add_argument("--candidates", nargs="+", default=["scvi", *CANDIDATES])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="every model's length")
    parser.add_argument("--n-top-genes", type=int, default=2000)
    parser.add_argument("--probe-splits", type=int, default=3)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "scr2mae"))
    parser.add_argument("--out", default="results/cluster_screen")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.candidates) - set(CANDIDATES) - {"scvi"})
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: scvi, {', '.join(CANDIDATES)}")
    tail.quiet((*tail.LIBRARY_LOGGERS, "jax"))
    bench = runpy.run_path(str(HERE / "integration.py"), run_name="integration_benchmark")
    loaders = {
        "baron_mouse": lambda: bench["load_baron_mouse"](Path(args.cache)),
        "synthetic": lambda: bench["load_synthetic"](0),
        "pbmc68k": lambda: bench["load_pbmc68k"](seed=0),
    }
    adata = bench["prepare"](loaders[args.dataset](), args.n_top_genes)
    out = Path(args.out) / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    log = out / "rows.jsonl"
    done = set()
    if log.exists():
        done = {(r["candidate"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())}
    rows = []
    for seed in args.seeds:
        for name in args.candidates:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            adata.obsm["latent"] = train_one(adata, name, seed, args.epochs)
            seconds = time.perf_counter() - start
            leiden = bench["leiden_table"](adata, ["latent"], resolutions=(0.5, 1.0))
            probe = bench["probe_table"](adata, ["latent"], args.probe_splits)
            row = {"candidate": name, "seed": seed, "train_s": round(seconds, 1)}
            row.update({k: float(v) for k, v in leiden.loc["latent"].items()})
            row.update({k: float(v) for k, v in probe.loc["latent"].items()})
            print(json.dumps(row), flush=True)
            with log.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
