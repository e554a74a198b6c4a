"""Transfer to a query measured on fewer genes: label transfer, imputation, library estimate.

    python benchmarks/genomics/singlecell/transfer.py --quick   # 2-core CPU, minutes
    python benchmarks/genomics/singlecell/transfer.py --smoke   # seconds (what the test runs)
    python benchmarks/genomics/singlecell/transfer.py           # full sizes (--accelerator gpu)

For each dataset, the cells of some donors are held out as the query and every model is
trained on the other donors (the reference). The query is then given with 0, 10, 30, 50 and
70 % of the model's genes removed at random (nested: the genes removed at 30 % include those
removed at 10 %), and

(a) **label transfer**: a logistic-regression probe (standardised features, ``C`` chosen by
    3-fold cross-validation on the reference cells) fitted on the reference cells' embeddings
    predicts the query cells' labels (balanced accuracy over the labels present in the query).
    The aims use this probe. A second probe, fitted on the reference cells embedded with the
    query's genes only (removed genes hidden for R2MAE, zero-filled for scVI), is also
    reported: it separates the information lost with the genes from the shift between the
    embeddings of complete and incomplete cells;
(b) **imputation** of the removed genes: per-cell Pearson r between the predicted and the
    held-out log-normalised expression (``log1p(counts / full library × 1e4)``) over the
    removed genes, averaged over cells;
(c) **library estimate**: R2MAE's imputation with ``estimate_unmeasured_library`` on and off,
    and how far each library is from the cell's true total.

Methods:

* ``R2MAE zero-shot``: :meth:`R2MAEModel.prepare_query_anndata` (removed genes are
  *unmeasured*: hidden from the encoder as masked genes are in training), then
  ``get_latent_representation`` with no training on the query. The query donors are unseen
  batches, so the query borrows the batch covariate of one reference donor (the first); this is
  the alternative the model's error message for unseen batches documents.
* ``R2MAE scArches``: ``R2MAEModel.load_query_data`` (new batch columns only learn), trained on
  the query.
* ``MAE 0.25 zero-shot`` / ``MAE 0.25 scArches``: the same with a fixed masking ratio of 0.25.
* ``scVI scArches (zero-filled)``: ``scvi.model.SCVI`` set up as in scvi-tools' scArches
  tutorial (covariates encoded, layer norm), then ``SCVI.prepare_query_anndata``, which fills
  the genes the query lacks **with zeros** (scVI reads them as measured, not expressed), then
  ``SCVI.load_query_data`` and training on the query.
* ``PCA (shared genes)``: log-normalised expression of the genes the query measured (library
  over those genes), PCA fitted on the reference; for (a) only.
* ``kNN (15 reference cells)``: for (b), the mean log-normalised expression of the 15 reference
  cells nearest to the query cell in the shared-gene log-normalised space.

Datasets: ``pbmc68k`` (:func:`scr2mae.data.pbmc68k_counts`, 700 PBMCs × 765 genes, labels
``bulk_labels``; the data come from one donor, so cells are dealt at random to pseudo-donors)
and ``synthetic`` (:func:`scr2mae.data.synthetic_donor_counts`: cell types with marker
programs and a per-donor batch shift; labels ``cell_type``). scvi-tools' ``synthetic_iid``
draws its labels independently of the counts, so it cannot measure label transfer or
imputation, and is not used.

Each seed (``--n-seeds``, 3 in quick mode) draws the pseudo-donors or synthetic data, the
held-out donors, the genes removed and the models' initialisation; the printed tables give the
mean ± sd over seeds, and the issue's aims (label transfer at 30 % removed within 0.02 of 0 %,
ahead of zero-filled scVI at 30 % and 50 %; imputation ahead of scVI and kNN at every fraction)
are judged on the means and printed as met or missed.

Writes under ``--out`` (default ``results/transfer/<mode>``): ``label_transfer.csv`` (both
probes),
``imputation.csv``, ``library.csv``, ``aims.csv`` (long format), ``tables.md`` (what is
printed) and ``transfer.png``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

FRACTIONS = (0.0, 0.1, 0.3, 0.5, 0.7)

#: models trained on the reference; "mask" is R2MAEModel's masking, None for scVI
REFERENCE_MODELS = {
    "R2MAE": {"mask_strategy": "r2mae", "mask_range": (0.1, 0.5)},
    "MAE 0.25": {"mask_strategy": "fixed", "mask_ratio": 0.25},
    "scVI": None,
}
LABEL_METHODS = [
    "R2MAE zero-shot",
    "R2MAE scArches",
    "MAE 0.25 zero-shot",
    "MAE 0.25 scArches",
    "scVI scArches (zero-filled)",
    "PCA (shared genes)",
]
IMPUTATION_METHODS = [
    "R2MAE zero-shot",
    "R2MAE scArches",
    "MAE 0.25 zero-shot",
    "MAE 0.25 scArches",
    "scVI scArches (zero-filled)",
    "kNN (15 reference cells)",
]

CONFIGS = {
    "smoke": {
        "datasets": {
            "pbmc68k": {"n_cells": 240, "pseudo_donors": 4, "query_donors": 1, "epochs": 2},
            "synthetic": {
                "params": {"n_donors": 4, "cells_per_donor": 40, "n_genes": 80, "n_cell_types": 3},
                "query_donors": 1,
                "epochs": 2,
            },
        },
        "model": {"n_hidden": 16, "n_latent": 4, "n_layers": 1},
        "batch_size": 64,
        "query_epochs": 2,
        "pca_components": 4,
        "n_seeds": 1,
    },
    "quick": {
        "datasets": {
            "pbmc68k": {"n_cells": None, "pseudo_donors": 8, "query_donors": 2, "epochs": 60},
            "synthetic": {
                "params": {"n_donors": 12, "cells_per_donor": 60, "n_genes": 400},
                "query_donors": 2,
                "epochs": 60,
            },
        },
        "model": {"n_hidden": 128, "n_latent": 32, "n_layers": 2},
        "batch_size": 128,
        "query_epochs": 40,
        "pca_components": 32,
        "n_seeds": 3,
    },
    "full": {
        "datasets": {
            "pbmc68k": {"n_cells": None, "pseudo_donors": 8, "query_donors": 2, "epochs": 200},
            "synthetic": {
                "params": {"n_donors": 24, "cells_per_donor": 200, "n_genes": 1000},
                "query_donors": 4,
                "epochs": 100,
            },
        },
        "model": {"n_hidden": 512, "n_latent": 128, "n_layers": 2},
        "batch_size": 128,
        "query_epochs": 100,
        "pca_components": 50,
        "n_seeds": 3,
    },
}
N_NEIGHBORS = 15
#: the probe of the aims: fitted on the reference cells' embeddings with every gene measured
MAIN_PROBE = "reference, all genes"


def log(message: str) -> None:
    """Progress line with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------- data
def load_dataset(name: str, spec: dict, seed: int):
    """Counts (``layers["counts"]``), ``obs["donor_id"]`` and ``obs["label"]`` of a dataset."""
    from scr2mae.data import pbmc68k_counts, synthetic_donor_counts

    if name == "pbmc68k":
        adata = pbmc68k_counts()
        if spec.get("n_cells"):
            adata = adata[: spec["n_cells"]].copy()
        # pbmc68k_reduced comes from one donor: its cells are dealt to pseudo-donors at random
        rng = np.random.default_rng(seed)
        donors = rng.integers(0, spec["pseudo_donors"], adata.n_obs)
        adata.obs["donor_id"] = [f"pseudo_{d}" for d in donors]
        adata.obs["label"] = adata.obs["bulk_labels"].astype(str)
    elif name == "synthetic":
        adata = synthetic_donor_counts(**spec["params"], seed=seed)
        adata.obs["donor_id"] = adata.obs["donor_id"].astype(str)
        adata.obs["label"] = adata.obs["cell_type"].astype(str)
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    adata.X = adata.layers["counts"].copy()
    return adata


def split_reference_query(adata, n_query_donors: int, seed: int):
    """The cells of ``n_query_donors`` donors drawn at random are the query."""
    donors = np.array(sorted(adata.obs["donor_id"].unique()))
    rng = np.random.default_rng(seed)
    query_donors = set(rng.choice(donors, size=n_query_donors, replace=False).tolist())
    is_query = adata.obs["donor_id"].isin(query_donors).to_numpy()
    return adata[~is_query].copy(), adata[is_query].copy(), sorted(query_donors)


def lognorm(counts) -> np.ndarray:
    """Dense ``log1p(counts / library × 1e4)`` (library over the given genes)."""
    from scr2mae.data import log_normalize

    out = log_normalize(counts)
    return out.toarray() if hasattr(out, "toarray") else np.asarray(out)


def rowwise_pearson(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r of each row; NaN where either row is constant."""
    p = pred - pred.mean(1, keepdims=True)
    t = true - true.mean(1, keepdims=True)
    denom = np.sqrt((p * p).sum(1) * (t * t).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (p * t).sum(1) / denom, np.nan)


# ---------------------------------------------------------------------------- models
def train_reference(kind: str, reference, config: dict, args, seed: int):
    """One reference model trained on the reference cells."""
    import scvi

    from scr2mae import R2MAEModel

    spec = REFERENCE_MODELS[kind]
    sizes = config["model"]
    fit = {
        "max_epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "enable_progress_bar": args.progress_bar,
        "accelerator": args.accelerator,
    }
    scvi.settings.seed = seed
    if spec is None:
        adata = reference.copy()
        scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="donor_id")
        # scvi-tools' scArches settings: covariates in the encoder, layer norm, no batch norm
        model = scvi.model.SCVI(
            adata,
            n_hidden=sizes["n_hidden"],
            n_latent=sizes["n_latent"],
            n_layers=sizes["n_layers"],
            encode_covariates=True,
            use_layer_norm="both",
            use_batch_norm="none",
        )
        model.train(**fit)
        return model
    adata = reference.copy()
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="donor_id")
    model = R2MAEModel(adata, **sizes, **spec)
    model.train(**fit)
    return model


def fit_probe(embedding: np.ndarray, labels: np.ndarray, seed: int):
    """Standardised logistic regression, C chosen by 3-fold CV on the reference cells."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(3, counts.min())) if counts.min() >= 2 else None
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if folds is None:
        return pipe.fit(embedding, labels)
    search = GridSearchCV(
        pipe,
        {"logisticregression__C": np.logspace(-2, 1, 4)},
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring="balanced_accuracy",
    )
    return search.fit(embedding, labels).best_estimator_


def balanced_accuracy(probe, embedding, labels) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # a class the probe predicts may be absent from the query: that is an error, counted
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(labels, probe.predict(embedding)))


def log_scale(scale: np.ndarray) -> np.ndarray:
    """Log-normalised values from expression proportions over all model genes."""
    return np.log1p(np.asarray(scale, dtype=np.float64) * 1e4)


# ---------------------------------------------------------------------------- one dataset
def run_dataset(name: str, spec: dict, config: dict, args, seed: int) -> dict[str, list[dict]]:
    """Every method at every fraction removed, on one dataset, for one seed.

    The seed draws the pseudo-donors (pbmc68k) or the data (synthetic), the held-out donors,
    the genes removed and the models' initialisation.
    """
    import scvi

    from scr2mae import R2MAEModel

    config = {**config, "epochs": spec["epochs"]}
    adata = load_dataset(name, spec, seed)
    reference, query_full, query_donors = split_reference_query(adata, spec["query_donors"], seed)
    genes = np.asarray(adata.var_names)
    n_genes = len(genes)
    log(
        f"{name}: {reference.n_obs} reference cells, {query_full.n_obs} query cells "
        f"(held-out donors {query_donors}), {n_genes} genes, "
        f"{reference.obs['label'].nunique()} labels"
    )

    models = {}
    for kind in REFERENCE_MODELS:
        start = time.perf_counter()
        models[kind] = train_reference(kind, reference, config, args, seed)
        log(f"  {kind} reference trained ({time.perf_counter() - start:.1f} s)")
    ref_labels = reference.obs["label"].to_numpy()
    probes = {
        kind: fit_probe(model.get_latent_representation(), ref_labels, seed)
        for kind, model in models.items()
    }
    # the zero-shot query borrows the batch covariate of a reference donor
    borrowed_donor = str(sorted(reference.obs["donor_id"].unique())[0])

    ref_counts = reference.layers["counts"]
    ref_lognorm_full = lognorm(ref_counts)
    q_counts_full = query_full.layers["counts"]
    q_lognorm_full = lognorm(q_counts_full)
    q_library = np.asarray(q_counts_full.sum(1)).ravel().astype(np.float64)

    order = np.random.default_rng(seed + 1).permutation(n_genes)
    rows: dict[str, list[dict]] = {"label_transfer": [], "imputation": [], "library": []}
    for fraction in args.fractions:
        n_removed = round(fraction * n_genes)
        removed = np.sort(order[:n_removed])
        kept = np.sort(order[n_removed:])
        # a cell with no counts left in the kept genes has nothing to transfer from
        has_counts = np.asarray(q_counts_full[:, kept].sum(1)).ravel() > 0
        query = query_full[has_counts][:, kept].copy()
        cells = np.flatnonzero(has_counts)
        q_labels = query.obs["label"].to_numpy()

        prepared = R2MAEModel.prepare_query_anndata(query, models["R2MAE"])
        n_unmeasured = int(prepared.uns["scr2mae_query"]["n_unmeasured_genes"])
        n_measured = float(prepared.obs["scr2mae_n_measured_genes"].mean())
        log(
            f"  {fraction:.0%} removed: {n_unmeasured} of {n_genes} model genes unmeasured "
            f"(R2MAE: hidden; scVI: zero-filled), {n_measured:.0f} measured per cell, "
            f"{int((~has_counts).sum())} query cell(s) dropped for having no counts left"
        )
        zero_shot = prepared.copy()
        zero_shot.obs["donor_id"] = borrowed_donor
        common = {
            "dataset": name,
            "seed": seed,
            "fraction_removed": fraction,
            "n_unmeasured_genes": n_unmeasured,
            "n_query_cells": int(query.n_obs),
        }

        embeddings: dict[str, np.ndarray] = {}
        imputed: dict[str, np.ndarray] = {}
        removed_genes = list(genes[removed])
        for kind in ("R2MAE", "MAE 0.25"):
            model = models[kind]
            embeddings[f"{kind} zero-shot"] = model.get_latent_representation(zero_shot)
            scvi.settings.seed = seed
            query_model = R2MAEModel.load_query_data(prepared.copy(), model)
            query_model.train(
                max_epochs=config["query_epochs"],
                batch_size=config["batch_size"],
                enable_progress_bar=args.progress_bar,
                accelerator=args.accelerator,
            )
            embeddings[f"{kind} scArches"] = query_model.get_latent_representation()
            if n_removed:
                for label, m, data in (
                    (f"{kind} zero-shot", model, zero_shot),
                    (f"{kind} scArches", query_model, None),
                ):
                    imputed[label] = log_scale(
                        m.get_normalized_expression(
                            data, gene_list=removed_genes, return_numpy=True
                        )
                    )

        # scVI: its own query path, the missing genes zero-filled
        scvi_query = query.copy()
        scvi.model.SCVI.prepare_query_anndata(scvi_query, models["scVI"])
        scvi.settings.seed = seed
        scvi_model = scvi.model.SCVI.load_query_data(scvi_query, models["scVI"])
        scvi_model.train(
            max_epochs=config["query_epochs"],
            batch_size=config["batch_size"],
            plan_kwargs={"weight_decay": 0.0},
            enable_progress_bar=args.progress_bar,
            accelerator=args.accelerator,
        )
        embeddings["scVI scArches (zero-filled)"] = scvi_model.get_latent_representation()
        if n_removed:
            imputed["scVI scArches (zero-filled)"] = log_scale(
                scvi_model.get_normalized_expression(
                    gene_list=removed_genes, library_size=1.0, return_numpy=True
                )
            )

        # log-normalised expression of the shared genes (library over those genes)
        from sklearn.decomposition import PCA

        ref_shared = lognorm(ref_counts[:, kept])
        q_shared = lognorm(query.layers["counts"])
        n_comps = min(config["pca_components"], len(kept) - 1, reference.n_obs - 1)
        pca = PCA(n_components=n_comps, random_state=seed).fit(ref_shared)
        pcs_ref = pca.transform(ref_shared)
        pca_probe = fit_probe(pcs_ref, ref_labels, seed)

        # a second probe, fitted on the reference cells embedded with the query's genes only
        # (the removed genes hidden for R2MAE, zero-filled for scVI), shows how much of a loss
        # comes from the shift between complete and incomplete cells' embeddings
        matched_probes = probes
        if n_removed:
            ref_kept = np.asarray(ref_counts[:, kept].sum(1)).ravel() > 0
            reference_kept = reference[ref_kept][:, kept].copy()
            matched_probes = {}
            for kind in ("R2MAE", "MAE 0.25"):
                ref_prepared = R2MAEModel.prepare_query_anndata(reference_kept, models[kind])
                matched_probes[kind] = fit_probe(
                    models[kind].get_latent_representation(ref_prepared),
                    ref_labels[ref_kept],
                    seed,
                )
            ref_zero_filled = reference[ref_kept].copy()
            is_kept = np.isin(np.arange(n_genes), kept).astype(np.float32)
            zeroed = ref_zero_filled.layers["counts"] @ sparse.diags(is_kept)
            ref_zero_filled.layers["counts"] = sparse.csr_matrix(zeroed, dtype=np.float32)
            ref_zero_filled.layers["counts"].eliminate_zeros()
            matched_probes["scVI"] = fit_probe(
                models["scVI"].get_latent_representation(ref_zero_filled),
                ref_labels[ref_kept],
                seed,
            )

        for probe_name, probe_set in (
            ("reference, all genes", probes),
            ("reference, query's genes", matched_probes),
        ):
            for method in LABEL_METHODS:
                if method == "PCA (shared genes)":
                    value = balanced_accuracy(pca_probe, pca.transform(q_shared), q_labels)
                else:
                    kind = method.split(" zero-shot")[0].split(" scArches")[0]
                    value = balanced_accuracy(probe_set[kind], embeddings[method], q_labels)
                rows["label_transfer"].append(
                    {**common, "probe": probe_name, "method": method, "balanced_accuracy": value}
                )

        if not n_removed:
            continue
        from sklearn.neighbors import NearestNeighbors

        neighbours = NearestNeighbors(n_neighbors=min(N_NEIGHBORS, reference.n_obs))
        _, index = neighbours.fit(ref_shared).kneighbors(q_shared)
        imputed["kNN (15 reference cells)"] = ref_lognorm_full[:, removed][index].mean(1)
        truth = q_lognorm_full[cells][:, removed]
        for method in IMPUTATION_METHODS:
            r = rowwise_pearson(imputed[method], truth)
            rows["imputation"].append(
                {
                    **common,
                    "method": method,
                    "pearson_r": float(np.nanmean(r)),
                    "n_cells_scored": int(np.isfinite(r).sum()),
                }
            )

        # (c) the library of cells with unmeasured genes: R2MAE's estimate of the full library,
        # or the sum of the measured counts; the library the decoder used is the sum of its
        # output at library_size="latent" (the proportions sum to 1 over the model's genes)
        model = models["R2MAE"]
        true_library = q_library[cells]
        for estimate, label in ((True, "estimated (default)"), (False, "observed sum")):
            model.module.estimate_unmeasured_library = estimate
            try:
                scale = model.get_normalized_expression(
                    zero_shot, gene_list=removed_genes, return_numpy=True
                )
                used = model.get_normalized_expression(
                    zero_shot, library_size="latent", return_numpy=True
                ).sum(1)
            finally:
                model.module.estimate_unmeasured_library = True
            r = rowwise_pearson(log_scale(scale), truth)
            rows["library"].append(
                {
                    **common,
                    "library": label,
                    "imputation_pearson_r": float(np.nanmean(r)),
                    "median_abs_error_vs_true_library": float(
                        np.median(np.abs(used / true_library - 1))
                    ),
                }
            )
    return rows


# ---------------------------------------------------------------------------- report
def wide(table: pd.DataFrame, index: str, value: str, dataset: str) -> pd.DataFrame:
    """Methods × fractions removed, for one dataset: the mean over seeds."""
    sub = table[table["dataset"] == dataset]
    out = sub.pivot_table(index=index, columns="fraction_removed", values=value, sort=False)
    out.columns = [f"{c:.0%}" for c in out.columns]
    return out


def summary(table: pd.DataFrame, index: str, value: str, dataset: str) -> pd.DataFrame:
    """:func:`wide` as text, ``mean ± sd`` over seeds when there are several."""
    mean = wide(table, index, value, dataset)
    if table["seed"].nunique() < 2:
        return mean.map(lambda v: f"{v:.3f}")
    sub = table[table["dataset"] == dataset]
    sd = sub.pivot_table(
        index=index, columns="fraction_removed", values=value, aggfunc="std", sort=False
    )
    sd = sd.reindex(index=mean.index)
    sd.columns = mean.columns
    return mean.map(lambda v: f"{v:.3f}") + " ± " + sd.map(lambda v: f"{v:.3f}")


def evaluate_aims(label: pd.DataFrame, imputation: pd.DataFrame) -> pd.DataFrame:
    """The aims of the issue, each met or missed, from the measured tables."""
    rows = []
    label = label[label["probe"] == MAIN_PROBE]
    for dataset in label["dataset"].unique():
        bacc = wide(label, "method", "balanced_accuracy", dataset)
        for model in ("R2MAE zero-shot", "R2MAE scArches"):
            if {"0%", "30%"} <= set(bacc.columns):
                drop = bacc.loc[model, "0%"] - bacc.loc[model, "30%"]
                rows.append(
                    {
                        "dataset": dataset,
                        "aim": f"{model}: label transfer at 30% removed within 0.02 of 0%",
                        "measured": f"{bacc.loc[model, '30%']:.3f} vs {bacc.loc[model, '0%']:.3f}",
                        "met": bool(drop <= 0.02),
                    }
                )
            for col in ("30%", "50%"):
                if col not in bacc.columns:
                    continue
                ours, theirs = bacc.loc[model, col], bacc.loc["scVI scArches (zero-filled)", col]
                rows.append(
                    {
                        "dataset": dataset,
                        "aim": f"{model}: label transfer ahead of zero-filled scVI at {col}",
                        "measured": f"{ours:.3f} vs {theirs:.3f}",
                        "met": bool(ours > theirs),
                    }
                )
        if imputation.empty:
            continue
        r = wide(imputation, "method", "pearson_r", dataset)
        for model in ("R2MAE zero-shot", "R2MAE scArches"):
            for other in ("scVI scArches (zero-filled)", "kNN (15 reference cells)"):
                ahead = r.loc[model] > r.loc[other]
                rows.append(
                    {
                        "dataset": dataset,
                        "aim": f"{model}: imputation r ahead of {other} at every fraction",
                        "measured": ", ".join(
                            f"{c} {r.loc[model, c]:.3f} vs {r.loc[other, c]:.3f}" for c in r.columns
                        ),
                        "met": bool(ahead.all()),
                    }
                )
    return pd.DataFrame(rows, columns=["dataset", "aim", "measured", "met"])


def plot(label: pd.DataFrame, imputation: pd.DataFrame, library: pd.DataFrame, path: Path):
    """One row per dataset: each metric against the fraction removed (mean, sd over seeds)."""
    plt = tail.pyplot()
    colours = {"R2MAE": "C0", "MAE 0.25": "C1", "scVI": "C2", "PCA": "C3", "kNN": "C4"}

    def style(name: str) -> dict:
        colour = next((c for key, c in colours.items() if name.startswith(key)), "C5")
        if name.startswith(("estimated", "observed")):
            colour = "C0" if name.startswith("estimated") else "C7"
        dashed = "zero-shot" in name or "observed" in name
        return {"color": colour, "linestyle": "--" if dashed else "-"}

    label = label[label["probe"] == MAIN_PROBE]
    datasets = list(label["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), 4, figsize=(19, 4 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets, strict=True):
        panels = (
            (label, "method", "balanced_accuracy", "label transfer: balanced accuracy"),
            (imputation, "method", "pearson_r", "imputation of removed genes: Pearson r"),
            (library, "library", "imputation_pearson_r", "R2MAE zero-shot imputation r"),
            (
                library,
                "library",
                "median_abs_error_vs_true_library",
                "median |library / true library - 1|",
            ),
        )
        for ax, (table, key, value, title) in zip(row, panels, strict=True):
            sub = table[table["dataset"] == dataset]
            for name, group in sub.groupby(key, sort=False):
                stats = group.groupby("fraction_removed")[value].agg(["mean", "std"])
                ax.errorbar(
                    100 * stats.index.to_numpy(),
                    stats["mean"],
                    yerr=stats["std"].fillna(0.0) if len(group) > len(stats) else None,
                    marker="o",
                    capsize=3,
                    label=name,
                    **style(str(name)),
                )
            ax.set_title(f"{dataset}: {title}", fontsize=10)
            ax.set_xlabel("query genes removed (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    tail.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the benchmark; print and write its tables; return them."""
    parser = tail.mode_parser(__doc__, quick="2-core CPU configuration (minutes)")
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "synthetic"])
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--n-seeds", type=int, default=None, help="seeds seed, seed+1, ... (default: mode's)"
    )
    parser.add_argument("--out", default=None, help="default results/transfer/<mode>")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (quick: 1)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    name = tail.mode_name(args)
    config = CONFIGS[name]
    if any(not 0.0 <= f < 1.0 for f in args.fractions):
        parser.error("--fractions must lie in [0, 1)")
    args.fractions = sorted(set(args.fractions))
    unknown = set(args.datasets) - set(config["datasets"])
    if unknown:
        parser.error(f"unknown dataset(s) {sorted(unknown)}; known: {list(config['datasets'])}")
    out = tail.output_dir(args.out or f"results/transfer/{name}")
    tail.quiet(scvi=True)
    tail.set_threads(args.threads or (1 if name != "full" else None))

    start = time.perf_counter()
    seeds = [args.seed + i for i in range(args.n_seeds or config["n_seeds"])]
    rows: dict[str, list[dict]] = {"label_transfer": [], "imputation": [], "library": []}
    for seed in seeds:
        for dataset in args.datasets:
            spec = config["datasets"][dataset]
            log(f"seed {seed}")
            for key, values in run_dataset(dataset, spec, config, args, seed).items():
                rows[key].extend(values)
    tables = {key: pd.DataFrame(values) for key, values in rows.items()}
    tables["aims"] = evaluate_aims(tables["label_transfer"], tables["imputation"])
    elapsed = time.perf_counter() - start

    lines = [
        f"mode {name}: sizes {config['model']}, batch size {config['batch_size']}, query "
        f"training {config['query_epochs']} epochs; seeds {seeds} (tables: mean ± sd over seeds); "
        f"{elapsed:.0f} s in all",
    ]
    for dataset in args.datasets:
        spec = config["datasets"][dataset]
        label = tables["label_transfer"]
        counts = label[label["dataset"] == dataset].drop_duplicates("fraction_removed")
        unmeasured = zip(counts["fraction_removed"], counts["n_unmeasured_genes"], strict=True)
        lines += [
            "",
            f"## {dataset} ({spec['epochs']} reference epochs)",
            "",
            "unmeasured model genes by fraction removed: "
            + ", ".join(f"{f:.0%}: {n}" for f, n in unmeasured),
            "",
            "(a) label transfer, balanced accuracy (probe fitted on the reference cells "
            "embedded with all genes)",
            "",
            summary(
                label[label["probe"] == MAIN_PROBE], "method", "balanced_accuracy", dataset
            ).to_markdown(),
            "",
            "(a') the same with the probe fitted on the reference cells embedded with the query's "
            "genes only",
            "",
            summary(
                label[label["probe"] != MAIN_PROBE], "method", "balanced_accuracy", dataset
            ).to_markdown(),
        ]
        if not tables["imputation"].empty:
            lines += [
                "",
                "(b) imputation of the removed genes, mean per-cell Pearson r",
                "",
                summary(tables["imputation"], "method", "pearson_r", dataset).to_markdown(),
                "",
                "(c) R2MAE zero-shot: library of cells with unmeasured genes",
                "",
                summary(tables["library"], "library", "imputation_pearson_r", dataset)
                .rename(index=lambda s: f"imputation r, {s}")
                .to_markdown(),
                "",
                summary(tables["library"], "library", "median_abs_error_vs_true_library", dataset)
                .rename(index=lambda s: f"median |library / true - 1|, {s}")
                .to_markdown(),
            ]
    lines += ["", f"## aims (means over {len(seeds)} seed(s))", ""]
    for aim in tables["aims"].itertuples():
        mark = "met" if aim.met else "missed"
        lines.append(f"[{mark}] {aim.dataset}: {aim.aim} ({aim.measured})")
    label, imputation, library = (tables[k] for k in ("label_transfer", "imputation", "library"))
    figure = ("transfer.png", lambda path: plot(label, imputation, library, path))
    tail.write_results(out, tables, "\n".join(lines), figure=figure)
    return tables


if __name__ == "__main__":
    main()
