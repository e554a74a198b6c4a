"""Batch integration of R2MAEModel embeddings against scVI, Harmony and PCA, scored with scIB.

    python benchmarks/genomics/singlecell/integration.py --quick
    python benchmarks/genomics/singlecell/integration.py --datasets baron_mouse synthetic pbmc68k

Every embedding of a dataset is scored with scib-metrics' ``Benchmarker`` (bio conservation,
batch correction, total; raw scores, no min-max scaling) and with a cross-donor cell-type probe
(:func:`scr2mae.evaluation.linear_probe`: logistic regression trained on some donors, balanced
accuracy on the others, averaged over donor splits) and by the scanpy clustering workflow
(:func:`leiden_table`: ``sc.pp.neighbors(adata, use_rep=key)`` at scanpy's defaults, 15
neighbours, then ``sc.tl.leiden`` at resolution 1.0, scored by ARI and NMI against the cell
types; ``--resolutions`` adds other resolutions beside it). Embeddings:

* R2MAE with each ``batch_correction`` (``none``, ``decoder_only``, ``adversarial``,
  ``mmd``, ``variational``) at the model's default loss (masked and visible genes), the paper's
  objective (``"R2MAE paper"``: ``none``, masked genes only; ``"R2MAE mmd masked only"``),
  fixed-ratio MAE (mask ratio 0.25), R2MAE + Harmony on its latent; ``--variants
  adversarial:0.3 variational:0.5`` adds options at other weights;
* scVI at its defaults and at R2MAE's widths;
* Harmony on PCA (``scanpy.external.pp.harmony_integrate``) and log-normalised PCA;
* ``--transforms std l2 whiten`` adds each learned embedding after a post-hoc transform of the
  latent (:data:`LATENT_TRANSFORMS`), as ``"<name> [std]"`` and so on.

Datasets:

* ``baron_mouse``: Baron et al. 2016 mouse pancreas (1,886 cells, 2 donors, 3 libraries, 13
  cell types, raw UMI counts; batch = library, probe groups = library), read from the PyPI
  wheel ``came==0.1.13`` (``came/sample_data.zip`` → ``raw-Baron_mouse.h5ad``), fetched with
  ``pip download`` into ``--cache``;
* ``synthetic``: :func:`scr2mae.data.synthetic_donor_counts` with a donor shift;
* ``pbmc68k``: :func:`scr2mae.data.pbmc68k_batches`, the 700 PBMCs dealt to 4 simulated
  batches, each with its own gene-wise capture efficiency (binomial thinning of the counts).

Each seed in ``--seeds`` trains every model afresh (the data and the probe splits stay the
same). Writes ``scib_seed<k>.csv`` per seed, ``scib.csv`` (mean over seeds, with ``*_sd``
columns) and ``scib.png`` (bio vs batch scatter of the means) under
``results/integration/<quick|full>/<dataset>/`` and prints the tables.
"""

from __future__ import annotations

import argparse
import gc
import io
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

BARON_WHEEL = "came==0.1.13"
BARON_MEMBER = "raw-Baron_mouse.h5ad"
DATASETS = ("baron_mouse", "synthetic", "pbmc68k")
#: R2MAEModel ``batch_correction`` options with a weight (for ``--variants``)
WEIGHTED_OPTIONS = ("adversarial", "mmd", "variational")
METHODS = (
    "R2MAE",
    "R2MAE decoder_only",
    "R2MAE adversarial",
    "R2MAE mmd",
    "R2MAE variational",
    "R2MAE paper",
    "R2MAE mmd masked only",
    "MAE fixed 0.25",
    "R2MAE + Harmony",
    "scVI default",
    "scVI matched",
    "Harmony PCA",
    "PCA",
)
#: resolution whose Leiden clusters give the ``leiden_ari`` and ``leiden_nmi`` columns
LEIDEN_RESOLUTION = 1.0


def standardize(X: np.ndarray) -> np.ndarray:
    """Each latent dimension centred and scaled to unit variance (constant ones left at 0)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(X)


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Each cell's centred latent vector scaled to unit length (Euclidean = cosine distance)."""
    from sklearn.preprocessing import normalize

    return normalize(X - X.mean(0))


def pca_whiten(X: np.ndarray) -> np.ndarray:
    """Principal components of the latent, each scaled to unit variance (full rank kept)."""
    from sklearn.decomposition import PCA

    return PCA(whiten=True, random_state=0).fit_transform(X)


#: post-hoc transforms of a latent before it is scored (``--transforms``)
LATENT_TRANSFORMS = {"std": standardize, "l2": l2_normalize, "whiten": pca_whiten}


# ---------------------------------------------------------------------------------- data
def load_baron_mouse(cache: Path):
    """Baron 2016 mouse pancreas counts from the ``came`` wheel (downloaded once into ``cache``)."""
    import anndata as ad

    cache.mkdir(parents=True, exist_ok=True)
    target = cache / BARON_MEMBER
    if not target.exists():
        wheels = sorted(cache.glob("came-0.1.13-*.whl"))
        if not wheels:
            cmd = [sys.executable, "-m", "pip", "download", BARON_WHEEL, "--no-deps", "-d"]
            result = subprocess.run([*cmd, str(cache)], capture_output=True, text=True)
            wheels = sorted(cache.glob("came-0.1.13-*.whl"))
            if result.returncode != 0 or not wheels:
                raise RuntimeError(
                    f"Could not fetch the Baron mouse pancreas: `pip download {BARON_WHEEL} "
                    f"--no-deps -d {cache}` failed ({result.stderr.strip()[-300:]}). Download "
                    f"the wheel by hand into {cache}, or run with --datasets synthetic pbmc68k."
                )
        with zipfile.ZipFile(wheels[0]) as wheel:
            inner = zipfile.ZipFile(io.BytesIO(wheel.read("came/sample_data.zip")))
        member = next(n for n in inner.namelist() if n.endswith(BARON_MEMBER))
        target.write_bytes(inner.read(member))
    adata = ad.read_h5ad(target)
    adata.layers["counts"] = adata.X.copy()
    adata.obs["batch"] = adata.obs["library"].astype(str).astype("category")
    adata.obs["cell_type"] = adata.obs["cell_type1"].astype(str).astype("category")
    adata.obs["probe_group"] = adata.obs["library"].astype(str)
    return adata


def load_synthetic(seed: int = 0):
    """Six donors with a donor shift on every gene (batch = probe group = donor)."""
    from scr2mae.data import synthetic_donor_counts

    adata = synthetic_donor_counts(
        n_donors=6, cells_per_donor=150, n_genes=500, donor_effect=0.4, seed=seed
    )
    adata.obs["batch"] = adata.obs["donor_id"].astype(str).astype("category")
    adata.obs["probe_group"] = adata.obs["donor_id"].astype(str)
    return adata


def load_pbmc68k(n_donors: int = 4, seed: int = 0):
    """pbmc68k_reduced dealt to batches with batch-specific gene capture (binomial thinning)."""
    from scr2mae.data import pbmc68k_batches

    adata = pbmc68k_batches(n_batches=n_donors, seed=seed)
    adata.obs["cell_type"] = adata.obs["bulk_labels"].astype(str).astype("category")
    adata.obs["probe_group"] = adata.obs["batch"].astype(str)
    return adata


def prepare(adata, n_top_genes: int):
    """Highly variable genes (per batch, Seurat v3 on counts), log-normalised PCA."""
    import scanpy as sc

    adata = adata[adata.layers["counts"].sum(1).A1 > 0].copy()
    sc.pp.filter_genes(adata, min_cells=3)
    if adata.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(
            adata, n_top_genes=n_top_genes, flavor="seurat_v3", layer="counts", batch_key="batch"
        )
        adata = adata[:, adata.var["highly_variable"]].copy()
    adata.X = adata.layers["counts"].astype(np.float32)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=min(50, adata.n_vars - 1))
    return adata


# ---------------------------------------------------------------------------------- models
def harmony(adata, basis: str, key: str) -> None:
    """Harmony on ``obsm[basis]`` into ``obsm[key]`` (quietly)."""
    import scanpy.external as sce

    sce.pp.harmony_integrate(
        adata, "batch", basis=basis, adjusted_basis=key, verbose=False, random_state=0
    )


def embed(adata, args) -> dict[str, float]:
    """Fill ``adata.obsm`` with every embedding; return training seconds of each model."""
    import scvi

    from scr2mae import R2MAEModel

    fit = {
        "max_epochs": args.epochs,
        "batch_size": 128,
        "enable_progress_bar": False,
        "logger": False,
        "enable_checkpointing": False,
    }
    widths = {"n_hidden": args.n_hidden, "n_latent": args.n_latent}
    seconds = {}
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="batch")
    r2mae = {
        "R2MAE": {"batch_correction": "none"},
        "R2MAE decoder_only": {"batch_correction": "decoder_only"},
        "R2MAE adversarial": {"batch_correction": "adversarial"},
        "R2MAE mmd": {"batch_correction": "mmd"},
        "R2MAE variational": {"batch_correction": "variational"},
        # the paper's objective (masked genes only), without and with the batch term
        "R2MAE paper": {"batch_correction": "none", "visible_weight": 0.0},
        "R2MAE mmd masked only": {"batch_correction": "mmd", "visible_weight": 0.0},
        "MAE fixed 0.25": {"mask_strategy": "fixed", "mask_ratio": 0.25},
    }
    for option, weight in args.variants:
        r2mae[variant_name(option, weight)] = {
            "batch_correction": option,
            "batch_correction_weight": weight,
        }
    wanted = set(args.methods) | {variant_name(*v) for v in args.variants}
    for name, kwargs in r2mae.items():
        if name not in wanted and not (name == "R2MAE" and "R2MAE + Harmony" in wanted):
            continue
        scvi.settings.seed = args.seed
        start = time.perf_counter()
        model = R2MAEModel(adata, **widths, **kwargs)
        model.train(**fit)
        seconds[name] = time.perf_counter() - start
        adata.obsm[name] = model.get_latent_representation()
        print(f"  {name}: {seconds[name]:.0f} s", flush=True)
    if "R2MAE + Harmony" in wanted:
        harmony(adata, "R2MAE", "R2MAE + Harmony")

    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
    for name, kwargs in {
        "scVI default": {},
        "scVI matched": {**widths, "n_layers": 2},
    }.items():
        if name not in wanted:
            continue
        scvi.settings.seed = args.seed
        start = time.perf_counter()
        model = scvi.model.SCVI(adata, **kwargs)
        model.train(**fit)
        seconds[name] = time.perf_counter() - start
        adata.obsm[name] = model.get_latent_representation()
        print(f"  {name}: {seconds[name]:.0f} s", flush=True)
    adata.obsm["PCA"] = adata.obsm["X_pca"]
    if "Harmony PCA" in wanted:
        harmony(adata, "X_pca", "Harmony PCA")
    return seconds


# ---------------------------------------------------------------------------------- scores
def exact_neighbors(X: np.ndarray, k: int):
    """Exact k nearest neighbours (scikit-learn): no numba compilation, exact on small data."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)
    return NeighborsResults(indices=indices, distances=distances)


def scib_table(adata, keys: list[str], kbet: bool = True) -> pd.DataFrame:
    """scib-metrics ``Benchmarker`` scores (raw, not min-max scaled), one row per embedding.

    ``kbet=False`` leaves out kBET, whose compilation (once per cell-type size) is most of the
    metrics' time on small data; the batch score is then the mean of the other batch metrics.
    """
    from scib_metrics.benchmark import BatchCorrection, Benchmarker

    bm = Benchmarker(
        adata,
        batch_key="batch",
        label_key="cell_type",
        embedding_obsm_keys=keys,
        pre_integrated_embedding_obsm_key="X_pca",
        batch_correction_metrics=BatchCorrection(kbet_per_label=kbet),
        n_jobs=1,
        progress_bar=False,
    )
    bm.prepare(neighbor_computer=exact_neighbors)
    # scib-metrics runs a full garbage collection before every metric of every embedding; in a
    # process holding torch and scanpy each one takes about 0.5 s, longer than most metrics on
    # small data. Reference counting still frees each metric's arrays; one collection follows.
    with mock.patch.object(gc, "collect", lambda generation=2: 0):
        bm.benchmark()
    gc.collect()
    table = bm.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type", errors="ignore").astype(float)
    return table


def probe_table(adata, keys: list[str], n_splits: int) -> pd.DataFrame:
    """Cross-donor cell-type probe: mean ± sd balanced accuracy over donor splits."""
    from scr2mae.evaluation import linear_probe

    groups = adata.obs["probe_group"].to_numpy()
    n_groups = np.unique(groups).size
    fraction = (n_groups - 1) / n_groups if n_groups <= 3 else 0.5
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    rows = {}
    for key in keys:
        scores = [
            linear_probe(
                adata.obsm[key],
                labels,
                groups,
                train_fraction=fraction,
                seed=seed,
                n_folds=2,
                Cs=np.logspace(-4, 2, 4),
                max_iter=300,
            ).metrics["balanced_accuracy"]
            for seed in range(n_splits)
        ]
        rows[key] = {"probe_bacc": float(np.mean(scores)), "probe_sd": float(np.std(scores))}
    return pd.DataFrame(rows).T


def leiden_table(adata, keys: list[str], resolutions=(0.5, 1.0, 1.5)) -> pd.DataFrame:
    """Leiden clusters of each embedding in the scanpy workflow, scored against the cell types.

    Per embedding: ``sc.pp.neighbors(adata, use_rep=key)`` at scanpy's defaults (15 neighbours,
    UMAP connectivities, Euclidean distance), then ``sc.tl.leiden`` at each resolution (scanpy's
    defaults otherwise: in scanpy 1.11 the ``leidenalg`` flavour, ``random_state=0``). Columns
    ``leiden_ari`` and ``leiden_nmi`` (adjusted Rand index, normalised mutual information) and
    ``leiden_n`` (number of clusters) are at resolution :data:`LEIDEN_RESOLUTION`; the others
    carry the resolution in their name, e.g.
    ``leiden_ari_r0.5``.
    """
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    resolutions = sorted(set(resolutions) | {LEIDEN_RESOLUTION})
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    graph = sc.AnnData(obs=adata.obs[[]].copy())
    rows = {}
    for key in keys:
        X = np.asarray(adata.obsm[key], dtype=np.float32)
        if not np.isfinite(X).all():
            raise ValueError(f"embedding {key!r} has non-finite values")
        graph.obsm["rep"] = X
        sc.pp.neighbors(graph, use_rep="rep")
        row = {}
        for res in resolutions:
            with warnings.catch_warnings():
                # scanpy 1.11 warns that its defaults (leidenalg) will become igraph's
                warnings.simplefilter("ignore", FutureWarning)
                sc.tl.leiden(graph, resolution=res, key_added="leiden")
            clusters = graph.obs["leiden"].to_numpy()
            tag = "" if res == LEIDEN_RESOLUTION else f"_r{res:g}"
            row[f"leiden_ari{tag}"] = adjusted_rand_score(labels, clusters)
            row[f"leiden_nmi{tag}"] = normalized_mutual_info_score(labels, clusters)
            row[f"leiden_n{tag}"] = float(np.unique(clusters).size)
        rows[key] = row
    return pd.DataFrame(rows).T


def plot(table: pd.DataFrame, title: str, path: Path) -> None:
    """Bio conservation against batch correction, one point per embedding."""
    plt = tail.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, row in table.iterrows():
        marker = "o" if name.startswith(("R2MAE", "MAE")) else "s"
        ax.scatter(row["Batch correction"], row["Bio conservation"], marker=marker, s=50)
        ax.annotate(
            name,
            (row["Batch correction"], row["Bio conservation"]),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("scIB batch correction")
    ax.set_ylabel("scIB bio conservation")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    tail.save_figure(fig, path, dpi=150)


def variant_name(option: str, weight: float) -> str:
    """Method name of an R2MAE ``batch_correction`` option at a given weight."""
    return f"R2MAE {option} {weight:g}"


def parse_variant(text: str) -> tuple[str, float]:
    """``"adversarial:0.3"`` -> ``("adversarial", 0.3)`` (argparse type)."""
    option, _, weight = text.partition(":")
    if option not in WEIGHTED_OPTIONS or not weight:
        raise argparse.ArgumentTypeError(
            f"expected OPTION:WEIGHT with OPTION in {WEIGHTED_OPTIONS}, got {text!r}"
        )
    return option, float(weight)


def run_dataset(name: str, args) -> pd.DataFrame:
    """Embed and score one dataset for every seed, write the tables, return the mean table."""
    loaders = {
        "baron_mouse": lambda: load_baron_mouse(Path(args.cache)),
        "synthetic": lambda: load_synthetic(0),
        "pbmc68k": lambda: load_pbmc68k(seed=0),
    }
    adata = prepare(loaders[name](), args.n_top_genes)
    print(
        f"\n== {name}: {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{adata.obs['batch'].nunique()} batches, {adata.obs['cell_type'].nunique()} cell types",
        flush=True,
    )
    out = Path(args.out) / ("quick" if args.quick else "full") / name
    out.mkdir(parents=True, exist_ok=True)
    cols = ["Bio conservation", "Batch correction", "Total", "probe_bacc", "leiden_ari"]
    cols += ["leiden_nmi", "probe_sd"]
    tables = []
    for seed in args.seeds:
        args.seed = seed
        print(f"-- seed {seed}", flush=True)
        seconds = embed(adata, args)
        keys = [m for m in METHODS if m in args.methods]
        keys += [variant_name(*v) for v in args.variants]
        np.savez_compressed(out / f"embeddings_seed{seed}.npz", **{k: adata.obsm[k] for k in keys})
        learned = [k for k in keys if k not in ("PCA", "Harmony PCA")]
        for transform in args.transforms:
            for key in learned:
                adata.obsm[f"{key} [{transform}]"] = LATENT_TRANSFORMS[transform](adata.obsm[key])
                keys.append(f"{key} [{transform}]")
        table = scib_table(adata, keys, kbet=not args.skip_kbet)
        table = table.join(probe_table(adata, keys, args.probe_splits))
        table = table.join(leiden_table(adata, keys, args.resolutions))
        table["train_s"] = pd.Series(seconds)
        table.to_csv(out / f"scib_seed{seed}.csv")
        print(table[cols].round(3).to_string(), flush=True)
        tables.append(table)
    stacked = pd.concat(tables)
    mean = stacked.groupby(level=0, sort=False).mean()
    if len(tables) > 1:
        spread = stacked.groupby(level=0, sort=False).std(ddof=1)
        mean = mean.join(spread[cols[:6]].add_suffix("_sd"))
    mean.to_csv(out / "scib.csv")
    plot(
        mean,
        f"{name} ({'quick' if args.quick else 'full'}, {args.epochs} epochs, "
        f"{len(tables)} seed{'s' if len(tables) > 1 else ''})",
        out / "scib.png",
    )
    shown = cols[:6] + ([f"{c}_sd" for c in cols[:6]] if len(tables) > 1 else ["probe_sd"])
    print(f"== {name}: mean over seeds {list(args.seeds)}", flush=True)
    print(mean[shown].round(3).to_string(), flush=True)
    print(f"written to {out}", flush=True)
    return mean


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the benchmark; return one table (mean over seeds) per dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, fewer genes (CPU)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-top-genes", type=int, default=None)
    parser.add_argument("--n-hidden", type=int, default=None)
    parser.add_argument("--n-latent", type=int, default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--variants",
        nargs="*",
        type=parse_variant,
        default=[],
        metavar="OPTION:WEIGHT",
        help="extra R2MAE batch_correction options at other weights, e.g. adversarial:0.3",
    )
    parser.add_argument("--probe-splits", type=int, default=3)
    parser.add_argument(
        "--transforms",
        nargs="*",
        choices=sorted(LATENT_TRANSFORMS),
        default=[],
        help="also score each learned embedding after these post-hoc transforms of the latent",
    )
    parser.add_argument(
        "--resolutions",
        nargs="+",
        type=float,
        default=[0.5, 1.0, 1.5],
        help=f"Leiden resolutions reported beside {LEIDEN_RESOLUTION:g} (which is always run)",
    )
    parser.add_argument(
        "--skip-kbet",
        action="store_true",
        help="leave kBET out of the batch score (it takes most of the scoring time on small data)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "scr2mae"))
    parser.add_argument("--out", default="results/integration")
    args = parser.parse_args(argv)
    # quick: CPU-sized; full: the model's default widths and 150 epochs
    defaults = {"epochs": 150, "n_top_genes": 2000, "n_hidden": 512, "n_latent": 128}
    if args.quick:
        defaults = {"epochs": 30, "n_top_genes": 1000, "n_hidden": 128, "n_latent": 32}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    datasets = args.datasets or (["baron_mouse", "synthetic"] if args.quick else list(DATASETS))
    tail.quiet((*tail.LIBRARY_LOGGERS, "jax", "harmonypy"))
    return {name: run_dataset(name, args) for name in datasets}


if __name__ == "__main__":
    main()
