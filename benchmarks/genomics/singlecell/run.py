"""Single-cell benchmark of masking schemes: donor-level linear probing and reconstruction.

    python benchmarks/genomics/singlecell/run.py --quick            # local data, 2-core CPU
    python benchmarks/genomics/singlecell/run.py --config hlca      # Census + GPU (Tables 4, 7)
    python benchmarks/genomics/singlecell/run.py --config seaad --donor-metadata adnc.csv

Section 4.2 and appendix C.8 of the R2MAE paper. Every method goes through the same code path
with the same seed: log-normalised expression, PCA, scVI and R2MAEModel with each masking
scheme (fixed 25% / 10% / 50%, MDLM, dynamic MR, CL-MAE, R2MAE, R2MAE + dynamic MR,
R2MAE + CL). Representations are probed across donors (:func:`scr2mae.evaluation.linear_probe`)
and the generative models are scored on masked-gene reconstruction of the held-out 10% of cells
(:func:`scr2mae.evaluation.masked_reconstruction_score`, same masks for every model).

Writes under ``--out`` (default ``results/singlecell/<config>``): ``metrics.csv`` (every metric,
long format), ``probing.csv``/``probing.md`` (layout of Tables 4/6: Score = mean of the metrics,
Rank = mean rank across metrics), ``reconstruction_<dataset>.csv/.md`` (Tables 7/8) and
``singlecell.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"

#: the paper's method rows (Tables 4/6), in order; "kind" picks the code path
METHODS: dict[str, dict] = {
    "Normalized exp.": {"kind": "lognorm"},
    "PCA": {"kind": "pca"},
    "scVI": {"kind": "scvi"},
    "MAE (MR 25%)": {"kind": "mae", "mask_strategy": "fixed", "mask_ratio": 0.25},
    "– MR 10%": {"kind": "mae", "mask_strategy": "fixed", "mask_ratio": 0.10},
    "– MR 50%": {"kind": "mae", "mask_strategy": "fixed", "mask_ratio": 0.50},
    "MDLM": {"kind": "mae", "mask_strategy": "mdlm"},
    "Dynamic MR": {"kind": "mae", "mask_strategy": "dynamic"},
    "CL-MAE": {"kind": "mae", "mask_strategy": "cl"},
    "R2MAE (Ours)": {"kind": "mae", "mask_strategy": "r2mae", "mask_range": (0.1, 0.5)},
    "+ Dynamic MR": {"kind": "mae", "mask_strategy": "r2mae_dynamic"},
    "+ CL": {"kind": "mae", "mask_strategy": "r2mae_cl"},
}
MASKING_METHODS = [m for m, spec in METHODS.items() if spec["kind"] == "mae"]
METRIC_LABELS = {
    "balanced_accuracy": "BAcc.",
    "macro_f1": "F1",
    "auroc_cell": "AUROC cell",
    "auroc_donor": "AUROC donor",
    "spearman_cell": "Spearman cell",
    "spearman_donor": "Spearman donor",
}

SMOKE_OVERRIDES = {
    "pbmc68k": {"n_cells": 240, "max_epochs": 2},
    "synthetic": {
        "params": {"n_donors": 8, "cells_per_donor": 25, "n_genes": 80, "n_cell_types": 3},
        "preprocess": {"n_top_genes": 60, "min_genes": 5},
        "max_epochs": 2,
    },
}


def log(message: str) -> None:
    """Progress line with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------- configuration
def load_config(name_or_path: str) -> dict:
    """Read a named configuration (``configs/<name>.json``) or a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS / f"{name_or_path}.json"
    if not path.exists():
        known = sorted(p.stem for p in CONFIGS.glob("*.json"))
        raise SystemExit(f"unknown configuration {name_or_path!r}; known: {known}")
    return json.loads(path.read_text())


def apply_smoke(config: dict) -> dict:
    """Shrink the quick configuration to a few seconds per model (for tests)."""
    config = json.loads(json.dumps(config))
    for name, override in SMOKE_OVERRIDES.items():
        if name in config["datasets"]:
            ds = config["datasets"][name]
            for key, value in override.items():
                if isinstance(value, dict):
                    ds.setdefault(key, {}).update(value)
                else:
                    ds[key] = value
    config["model"].update({"n_hidden": 16, "n_latent": 4})
    config["train"]["batch_size"] = 64
    config["pca_components"] = 5
    for task in config["tasks"]:
        if task.get("max_cells_per_donor"):
            task["max_cells_per_donor"] = 20
    return config


# ---------------------------------------------------------------------------- data
def _census_dataset_ids(spec: dict, census_uri, timeout) -> list[str] | None:
    if spec.get("dataset_ids"):
        return list(spec["dataset_ids"])
    if not spec.get("collection_id"):
        return None
    from scr2mae.data import open_census

    census = open_census(census_uri, timeout=timeout)
    try:
        table = census["census_info"]["datasets"].read().concat().to_pandas()
    finally:
        census.close()
    table = table[table["collection_id"] == spec["collection_id"]]
    if spec.get("dataset_title_contains"):
        table = table[table["dataset_title"].str.contains(spec["dataset_title_contains"])]
    if table.empty:
        raise SystemExit(f"no Census dataset matches {spec!r}")
    log(f"  Census datasets: {table[['dataset_id', 'dataset_title']].to_dict('records')}")
    return table["dataset_id"].tolist()


def load_dataset(name: str, spec: dict, args) -> AnnData:  # noqa: F821
    """Load and preprocess one dataset of the configuration."""
    from scr2mae.data import (
        load_census,
        pbmc68k_counts,
        preprocess_counts,
        read_cellxgene_h5ad,
        synthetic_donor_counts,
    )

    source = spec["source"]
    if source == "pbmc68k":
        adata = pbmc68k_counts()
        if spec.get("n_cells"):
            adata = adata[: spec["n_cells"]].copy()
        # pbmc68k_reduced comes from one donor: cells are dealt to pseudo-donors at random,
        # so the donor split of the probe is a random cell split here
        rng = np.random.default_rng(args.seed)
        n = int(spec.get("pseudo_donors", 8))
        adata.obs["donor_id"] = pd.Categorical(
            [f"pseudo_{d}" for d in rng.integers(0, n, adata.n_obs)]
        )
    elif source == "synthetic":
        adata = synthetic_donor_counts(**spec.get("params", {}))
    elif source == "census":
        # seconds to wait for the Census to open (an unreachable Census fails fast)
        timeout = None if args.census_timeout is None else args.census_timeout * 60
        try:
            ids = _census_dataset_ids(spec, args.census_uri, timeout)
            adata = load_census(
                dataset_ids=ids,
                obs_value_filter=spec.get("obs_value_filter"),
                census_uri=args.census_uri,
                timeout=timeout,
            )
        except ConnectionError as err:
            raise SystemExit(
                f"cannot reach the CELLxGENE Census for dataset {name!r}: {err}\n"
                "Run this configuration on a machine with network access, or pass "
                "--census-uri with a local copy."
            ) from None
    elif source == "h5ad":
        adata = read_cellxgene_h5ad(spec["path"])
    else:
        raise SystemExit(f"dataset {name!r}: unknown source {source!r}")

    required = spec.get("donor_metadata_required")
    if args.donor_metadata is not None:
        meta = pd.read_csv(args.donor_metadata, dtype={"donor_id": str}).set_index("donor_id")
        for col in meta.columns:
            adata.obs[col] = adata.obs["donor_id"].astype(str).map(meta[col]).to_numpy()
        if "age_years" in meta.columns:
            adata.obs["age_years"] = pd.to_numeric(adata.obs["age_years"], errors="coerce")
    if required and not all(c in adata.obs for c in required):
        raise SystemExit(
            f"dataset {name!r} needs donor columns {required} that the Census does not carry; "
            "pass --donor-metadata CSV with a donor_id column and these columns (from the "
            "SEA-AD donor metadata)."
        )
    if spec.get("exclude_donors_matching"):
        pattern = spec["exclude_donors_matching"]
        drop = np.zeros(adata.n_obs, dtype=bool)
        for col in ("donor_id", *(required or [])):
            if col in adata.obs:
                drop |= adata.obs[col].astype(str).str.contains(pattern).to_numpy()
        adata = adata[~drop].copy()

    pre = spec.get("preprocess", {})
    adata = preprocess_counts(
        adata,
        counts_layer="counts",
        n_top_genes=pre.get("n_top_genes", 5000),
        min_genes=pre.get("min_genes", 20),
    )
    for col in list(adata.obs.columns):
        if isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            adata.obs[col] = adata.obs[col].cat.remove_unused_categories()
    return adata


# ---------------------------------------------------------------------------- methods
def _total_steps(n_obs: int, max_epochs: int, train: dict) -> int:
    n_train = math.ceil(train["train_size"] * n_obs)
    return max_epochs * max(1, math.ceil(n_train / train["batch_size"]))


def fit_method(name: str, adata, spec: dict, config: dict, args) -> dict:
    """Train (if needed) one method; return its embedding and its reconstruction predictor."""
    import scanpy as sc
    import scvi

    from scr2mae import R2MAEModel
    from scr2mae.evaluation import r2mae_predictor, scvi_predictor

    method = METHODS[name]
    kind = method["kind"]
    if kind == "lognorm":
        X = adata.X
        return {"embedding": X.toarray() if hasattr(X, "toarray") else np.asarray(X)}
    if kind == "pca":
        n_comps = min(config["pca_components"], adata.n_vars - 1, adata.n_obs - 1)
        pcs = sc.pp.pca(np.asarray(adata.X.toarray()), n_comps=n_comps, random_state=args.seed)
        return {"embedding": pcs}

    train = config["train"]
    max_epochs = int(spec["max_epochs"])
    scvi.settings.seed = args.seed
    fit_kwargs = {
        "max_epochs": max_epochs,
        "batch_size": train["batch_size"],
        "train_size": train["train_size"],
        "enable_progress_bar": args.progress_bar,
        "accelerator": args.accelerator,
    }
    if kind == "scvi":
        model = scvi.model.SCVI(
            adata,
            n_hidden=config["model"]["n_hidden"],
            n_latent=config["model"]["n_latent"],
            n_layers=config["model"]["n_layers"],
            dropout_rate=config["model"]["dropout_rate"],
        )
        model.train(
            plan_kwargs={"lr": train["lr"], "weight_decay": train["weight_decay"]}, **fit_kwargs
        )
        predictor = scvi_predictor
    else:
        params = {k: v for k, v in method.items() if k not in ("kind", "mask_strategy")}
        strategy = method["mask_strategy"]
        if strategy in ("cl", "r2mae_cl", "cl_k0", "r2mae_cl_k0"):
            # paper: warm-up 5000 steps, multiplier ramp 30000 -> 120000 steps; scaled to this
            # run's length by the configuration's fractions
            total = _total_steps(adata.n_obs, max_epochs, train)
            frac = config["curriculum_fractions"]
            start = round(frac["ramp"][0] * total)
            params.update(
                warmup_steps=max(1, round(frac["warmup"] * total)),
                multiplier_start_step=start,
                multiplier_end_step=max(start + 1, round(frac["ramp"][1] * total)),
            )
        model = R2MAEModel(adata, mask_strategy=strategy, **config["model"], **params)
        model.train(
            plan_kwargs={"lr": train["lr"], "weight_decay": train["weight_decay"]}, **fit_kwargs
        )
        predictor = r2mae_predictor
    held_out = np.sort(np.asarray(model.validation_indices))
    return {
        "embedding": model.get_latent_representation(),
        "held_out": held_out,
        "predict": predictor(model, adata, held_out),
    }


# ---------------------------------------------------------------------------- probing
def probe_task(task: dict, adata, embedding, args, config) -> dict[str, float]:
    """Run one probing task on an embedding; return the configured metrics."""
    from scr2mae.evaluation import cap_cells_per_donor, linear_probe

    column = task["column"]
    if column not in adata.obs:
        raise SystemExit(f"task {task['name']!r}: column {column!r} is not in the data.")
    values = adata.obs[column]
    donors = adata.obs["donor_id"].astype(str).to_numpy()
    rows = np.arange(adata.n_obs)
    cap = task.get("max_cells_per_donor")
    if task["task"] == "classification":
        target = values.astype(object).where(values.notna(), None).to_numpy()
        excluded = set(task.get("exclude", []))
        if task.get("exclude_after_cap"):
            # appendix C.8 (HLCA cell states): cap cells per donor first, then drop Unknown
            rows = cap_cells_per_donor(donors, cap, seed=args.seed)
            cap = None
        target = np.array(
            [None if (v is None or str(v) in excluded) else str(v) for v in target], dtype=object
        )
    else:
        target = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    result = linear_probe(
        embedding[rows],
        target[rows],
        donors[rows],
        task=task["task"],
        train_fraction=config["probe"]["train_fraction"],
        n_folds=config["probe"]["n_folds"],
        max_cells_per_donor=cap,
        seed=args.seed,
    )
    return {m: result.metrics[m] for m in task["metrics"]}


# ---------------------------------------------------------------------------- tables
def probing_table(long: pd.DataFrame, tasks: list[dict], methods: list[str]) -> pd.DataFrame:
    """Wide table (methods × (task, metric)) with Score = mean and Rank = mean rank."""
    columns = [(t["name"], METRIC_LABELS[m]) for t in tasks for m in t["metrics"]]
    wide = long.pivot_table(
        index="method", columns=["task", "metric_label"], values="value", sort=False
    )
    wide = wide.reindex(index=methods, columns=pd.MultiIndex.from_tuples(columns))
    ranks = wide.rank(ascending=False, method="average")
    wide[("Avg performance", "Score")] = wide[columns].mean(axis=1)
    wide[("Avg performance", "Rank")] = ranks.mean(axis=1)
    return wide


def masking_rank(table: pd.DataFrame) -> pd.Series:
    """Mean rank across metrics among the masking schemes only."""
    metrics = table.drop(columns="Avg performance", level=0)
    sub = metrics.loc[[m for m in MASKING_METHODS if m in metrics.index]]
    return sub.rank(ascending=False, method="average").mean(axis=1).sort_values()


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """Markdown with a two-line header (task / metric), numbers rounded."""
    flat = table.copy()
    flat.columns = [f"{a}: {b}" for a, b in table.columns]
    return flat.round(digits).to_markdown(floatfmt=f".{digits}f")


def make_figure(table: pd.DataFrame, recon: dict[str, pd.DataFrame], path: Path) -> None:
    """Bar chart of Score and Rank, and reconstruction curves per dataset."""
    plt = tail.pyplot()
    n = 2 + len(recon)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.5))
    score = table[("Avg performance", "Score")]
    colors = [
        "tab:red" if m.startswith("R2MAE") else "tab:gray" if m in MASKING_METHODS else "tab:blue"
        for m in score.index
    ]
    axes[0].barh(score.index[::-1], score.to_numpy()[::-1], color=colors[::-1])
    axes[0].set_xlim(max(0.0, float(np.nanmin(score)) - 0.05), float(np.nanmax(score)) + 0.02)
    axes[0].set_title("Score (mean of probing metrics)")
    rank = table[("Avg performance", "Rank")]
    axes[1].barh(rank.index[::-1], rank.to_numpy()[::-1], color=colors[::-1])
    axes[1].set_title("Rank (mean rank across metrics; lower is better)")
    axes[1].set_yticklabels([])
    for ax, (dataset, frame) in zip(axes[2:], recon.items(), strict=True):
        for method, row in frame.iterrows():
            style = "-" if method.startswith("R2MAE") else "--" if method == "scVI" else ":"
            ax.plot(
                frame.columns.astype(float),
                row.to_numpy(),
                style,
                marker="o",
                ms=3,
                label=method,
                lw=2 if method.startswith("R2MAE") else 1,
                color="tab:red" if method.startswith("R2MAE") else None,
            )
        ax.set_xlabel("masking ratio at evaluation")
        ax.set_ylabel("mean per-cell Pearson (masked genes)")
        ax.set_title(f"Reconstruction: {dataset}")
    if recon:
        axes[-1].legend(fontsize=7, loc="lower left")
    tail.save_figure(fig, path)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run a configuration, write its tables and figure, and return the probing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="quick, hlca, seaad or a JSON path")
    parser.add_argument("--quick", action="store_true", help="same as --config quick")
    parser.add_argument("--smoke", action="store_true", help="tiny subset of --quick (tests)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of method names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--census-uri", default=None, help="local copy of the Census")
    parser.add_argument(
        "--census-timeout",
        type=float,
        default=2.0,
        help="minutes to wait for the Census before giving up",
    )
    parser.add_argument(
        "--donor-metadata",
        default=None,
        help="CSV with donor_id and extra donor columns (SEA-AD: ADNC)",
    )
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS/OpenMP/torch threads (default: 1 for quick/smoke)",
    )
    parser.add_argument("--progress-bar", action="store_true", help="Lightning progress bars")
    args = parser.parse_args(argv)
    name = "quick" if (args.quick or args.smoke) and args.config is None else args.config
    if name is None:
        parser.error("give --config NAME or --quick")
    config = load_config(name)
    if args.smoke:
        config = apply_smoke(config)
    methods = list(METHODS) if args.methods is None else args.methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if args.census_timeout is not None and args.census_timeout <= 0:
        args.census_timeout = None
    out = tail.output_dir(
        args.out or f"results/singlecell/{config['name']}{'_smoke' if args.smoke else ''}"
    )

    tail.quiet()
    import torch
    from threadpoolctl import threadpool_limits

    from scr2mae.evaluation import masked_reconstruction_score

    threads = args.threads or (1 if config["name"] == "quick" else None)
    if threads:
        torch.set_num_threads(threads)
    limiter = threadpool_limits(limits=threads) if threads else None

    start = time.perf_counter()
    log(
        f"configuration {config['name']!r}{' (smoke)' if args.smoke else ''}: "
        f"{len(methods)} methods, {len(config['tasks'])} tasks -> {out}"
    )
    rows, recon = [], {}
    for ds_name, spec in config["datasets"].items():
        tasks = [t for t in config["tasks"] if t["dataset"] == ds_name]
        log(f"loading {ds_name} ({spec['source']})")
        adata = load_dataset(ds_name, spec, args)
        log(
            f"  {adata.n_obs} cells x {adata.n_vars} genes, "
            f"{adata.obs['donor_id'].nunique()} donors"
        )
        from scr2mae import R2MAEModel

        R2MAEModel.setup_anndata(adata, layer="counts", batch_key=spec.get("batch_key"))
        import scvi

        scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key=spec.get("batch_key"))
        held_out_ref, recon_rows = None, {}
        for i, method in enumerate(methods, 1):
            t0 = time.perf_counter()
            fitted = fit_method(method, adata, spec, config, args)
            scores = {}
            for task in tasks:
                metrics = probe_task(task, adata, fitted["embedding"], args, config)
                for metric, value in metrics.items():
                    rows.append(
                        {
                            "dataset": ds_name,
                            "task": task["name"],
                            "method": method,
                            "metric": metric,
                            "metric_label": METRIC_LABELS[metric],
                            "value": value,
                        }
                    )
                    scores[f"{task['name']} {METRIC_LABELS[metric]}"] = value
            if "predict" in fitted:
                if held_out_ref is None:
                    held_out_ref = fitted["held_out"]
                elif not np.array_equal(held_out_ref, fitted["held_out"]):
                    raise RuntimeError("validation cells differ between methods; seeds broken")
                counts = adata.layers["counts"][fitted["held_out"]]
                recon_rows[method] = masked_reconstruction_score(
                    counts, fitted["predict"], config["reconstruction_ratios"], seed=args.seed
                )
                for r, v in recon_rows[method].items():
                    rows.append(
                        {
                            "dataset": ds_name,
                            "task": "Reconstruction",
                            "method": method,
                            "metric": f"pearson@{r:g}",
                            "metric_label": f"MR {r:.0%}",
                            "value": v,
                        }
                    )
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
            log(
                f"  [{i}/{len(methods)}] {method} on {ds_name}: {shown} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        if recon_rows:
            frame = pd.DataFrame(recon_rows).T
            frame.columns = [f"MR {float(r):.0%}" for r in frame.columns]
            frame.index.name = "method"
            recon[ds_name] = frame

    long = pd.DataFrame(rows)
    long.to_csv(out / "metrics.csv", index=False)
    probing = long[long["task"] != "Reconstruction"]
    table = probing_table(probing, config["tasks"], methods)
    table.to_csv(out / "probing.csv")
    md = [f"## Linear probing ({config['name']}, seed {args.seed})", "", to_markdown(table), ""]
    if any(m in table.index for m in MASKING_METHODS):
        ranks = masking_rank(table)
        md += [
            "Mean rank among the masking schemes only:",
            "",
            ranks.round(2).to_frame("rank").to_markdown(),
            "",
        ]
    (out / "probing.md").write_text("\n".join(md))
    print("\n".join(md))
    for ds_name, frame in recon.items():
        frame.to_csv(out / f"reconstruction_{ds_name}.csv")
        text = (
            f"## Masked-gene reconstruction, {ds_name} (held-out cells; mean per-cell "
            f"Pearson of log-normalised expression)\n\n{frame.round(3).to_markdown()}\n"
        )
        (out / f"reconstruction_{ds_name}.md").write_text(text)
        print(text)
    make_figure(
        table,
        {
            k: v.set_axis([float(c[3:-1]) / 100 for c in v.columns], axis=1)
            for k, v in recon.items()
        },
        out / "singlecell.png",
    )
    if limiter is not None:
        limiter.unregister() if hasattr(
            limiter, "unregister"
        ) else limiter.restore_original_limits()
    log(f"done in {time.perf_counter() - start:.0f} s; wrote {out}")
    return table


if __name__ == "__main__":
    sys.exit(main() is None)
