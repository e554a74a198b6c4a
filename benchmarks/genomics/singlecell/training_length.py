"""How long should R2MAEModel train? Probe and held-out reconstruction against training length.

    python benchmarks/genomics/singlecell/training_length.py            # full run
    python benchmarks/genomics/singlecell/training_length.py --quick    # minutes
    python benchmarks/genomics/singlecell/training_length.py --smoke    # seconds (the test)

For every dataset and seed, about 15 % of the cells are held out (the model never trains on
them) and one :class:`scr2mae.R2MAEModel` at its default widths (batch size 128, the paper's
Adam settings) trains on the rest for the longest length asked. A callback copies the model's
weights at the end of each epoch in ``--lengths`` and records the wall time and optimisation
steps up to it, so one run gives every fixed length: nothing in training depends on
``max_epochs`` (no learning-rate schedule, a length-free masking schedule), so the weights
after epoch ``k`` of a long run are those of a ``k``-epoch run with the same seed (checked by
``--verify``). The same callback applies Lightning's early-stopping rule to
``masked_nll_validation`` after each epoch (``min_delta`` 0, mode ``min``, each patience in
``--patience``) and copies the weights where ``train(early_stopping=True,
early_stopping_patience=p)`` would stop; ``--verify`` also runs that for real and compares.

Settings: the current default (:func:`scr2mae.model.default_max_epochs` of the training-set
size; 400 epochs below 20,000 cells), each fixed length and early stopping. Measured for each:
wall time, epochs, optimisation steps, passes (epochs × training cells), the linear probe of
the embedding of all cells of the dataset, the masked reconstruction of the held-out cells
(:meth:`~scr2mae.R2MAEModel.get_reconstruction_score` at ratios 0.1, 0.3, 0.5, and their mean)
and the final ``masked_nll_validation``.

Datasets:

* ``pbmc68k``: :func:`scr2mae.data.pbmc68k_counts` (700 cells × 765 genes, one donor, no
  batch covariate); probe = stratified 5-fold :func:`scr2mae.evaluation.cross_validated_probe`
  of ``bulk_labels``;
* ``baron_mouse``: Baron et al. 2016 mouse pancreas (1,886 cells, 13 cell types), loaded by
  ``integration.py`` from the ``came==0.1.13`` wheel, its ``--n-top-genes`` highly variable
  genes; batch = library; probe = ``integration.py``'s cross-library probe
  (:func:`scr2mae.evaluation.linear_probe`, trained on two libraries, mean over 3 splits);
* ``synthetic_1000``, ``synthetic_4000``: :func:`scr2mae.data.synthetic_donor_counts` (20
  donors, 400 genes, 5 cell types, mean library 500 and dispersion 2 so that the cell-type
  probe is not saturated; log-normalised PCA probes at 0.94), at two sizes; batch = donor;
  probe = cross-donor probe of the cell type (half the donors, mean over 3 splits).

Outputs under ``--out``/<mode>: ``runs.csv`` (one row per dataset × seed × setting),
``curves.csv`` (per epoch: validation and training masked NLL, wall time), ``summary.csv``
(mean and sd over seeds), ``paired.csv`` (probe and reconstruction minus 50 epochs', per seed
paired, mean and standard error), ``tables.md`` (what is printed) and ``training_length.png``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

DATASETS = ("pbmc68k", "baron_mouse", "synthetic_1000", "synthetic_4000")
RATIOS = (0.1, 0.3, 0.5)
REFERENCE = 50  # the probe's reference length (epochs)
TARGET_CELLS = 2000  # the target: a ~2,000-cell dataset ...
TARGET_MAX_EPOCHS = 150  # ... trains for at most 150 epochs ...
TARGET_PROBE_TOLERANCE = 0.01  # ... and probes within 0.01 of 50 epochs
MODES = {
    "full": {
        "lengths": [30, 50, 100, 150, 200, 400],
        "patience": [45, 15],
        "seeds": [0, 1, 2],
        "datasets": list(DATASETS),
        "n_top_genes": 1000,
    },
    "quick": {
        "lengths": [10, 30, 50],
        "patience": [10],
        "seeds": [0],
        "datasets": ["pbmc68k", "synthetic_1000"],
        "n_top_genes": 500,
    },
    "smoke": {
        "lengths": [2, 4, 12],
        "patience": [1],
        "seeds": [0],
        "datasets": ["synthetic_tiny"],
        "n_top_genes": 60,
    },
}


# ---------------------------------------------------------------------------------- data
def load_dataset(name: str, args):
    """The counts (``layers["counts"]``), the batch key and the probe's labels and groups."""
    from scr2mae.data import pbmc68k_counts, synthetic_donor_counts

    if name == "pbmc68k":
        adata = pbmc68k_counts()
        adata.obs["cell_type"] = adata.obs["bulk_labels"].astype(str).astype("category")
        return adata, None, None
    if name == "baron_mouse":
        from integration import load_baron_mouse, prepare

        adata = prepare(load_baron_mouse(Path(args.cache)), args.n_top_genes)
        return adata, "batch", "probe_group"
    if name.startswith("synthetic_"):
        sizes = {"synthetic_1000": (20, 50), "synthetic_4000": (20, 200), "synthetic_tiny": (6, 30)}
        if name not in sizes:
            raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")
        donors, per_donor = sizes[name]
        adata = synthetic_donor_counts(
            n_donors=donors,
            cells_per_donor=per_donor,
            n_genes=args.n_top_genes if name == "synthetic_tiny" else 400,
            mean_library_size=500.0,
            dispersion=2.0,
            seed=0,
        )
        adata.obs["donor_id"] = adata.obs["donor_id"].astype(str).astype("category")
        adata.obs["probe_group"] = adata.obs["donor_id"].astype(str)
        return adata, "donor_id", "probe_group"
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")


def probe(adata, embedding: np.ndarray, groups: str | None, seed: int = 0) -> float:
    """Balanced accuracy of the cell-type probe (across groups when the data have them)."""
    if groups is None:
        from scr2mae.evaluation import cross_validated_probe

        labels = adata.obs["cell_type"].astype(str).to_numpy()
        return cross_validated_probe(embedding, labels, n_splits=5, seed=seed).balanced_accuracy
    from integration import probe_table

    view = adata.copy()
    view.obsm["z"] = embedding
    view.obs["probe_group"] = adata.obs[groups].astype(str)
    return float(probe_table(view, ["z"], 3).loc["z", "probe_bacc"])


# ---------------------------------------------------------------------------------- training
def early_stopping_epoch(values, patience: int, min_delta: float = 0.0) -> int | None:
    """Epoch (1-based) after which Lightning's ``EarlyStopping(mode="min")`` stops, or ``None``.

    The rule of ``lightning.pytorch.callbacks.EarlyStopping``: a value improves when it is
    below the best so far by more than ``min_delta``; after ``patience`` epochs in a row
    without improvement training stops (a non-finite value stops at once).
    """
    best, wait = math.inf, 0
    for epoch, value in enumerate(values, start=1):
        if not math.isfinite(value):
            return epoch
        if value - min_delta < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def make_snapshot_callback(lengths, patience):
    """A Lightning callback copying the weights at the given epochs and early-stopping points."""
    from lightning.pytorch.callbacks import Callback

    from scr2mae.model._training_plan import VALIDATION_METRIC

    class Snapshots(Callback):
        def __init__(self):
            self.states: dict = {}  # key ("epochs", k) or ("early_stopping", p) -> record
            self.curve: list[dict] = []
            self.paused = 0.0

        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch + 1
            # the validation loop of this epoch has run (the plan logs the training metrics
            # after the callbacks' hook, so they are read from the history afterwards)
            value = trainer.callback_metrics.get(VALIDATION_METRIC)
            seconds = time.perf_counter() - self.start - self.paused
            self.curve.append(
                {
                    "epoch": epoch,
                    "masked_nll_validation": float(value) if value is not None else np.nan,
                    "train_s": seconds,
                    "steps": trainer.global_step,
                }
            )
            values = [row["masked_nll_validation"] for row in self.curve]
            keys = [("epochs", epoch)] if epoch in lengths else []
            keys += [
                ("early_stopping", p)
                for p in patience
                if ("early_stopping", p) not in self.states
                and early_stopping_epoch(values, p) == epoch
            ]
            if keys:
                tic = time.perf_counter()
                state = copy.deepcopy(pl_module.module.state_dict())
                for key in keys:
                    self.states[key] = {**self.curve[-1], "state": state}
                self.paused += time.perf_counter() - tic
            if epoch % 50 == 0:
                print(f"   epoch {epoch}: {seconds:.0f} s", flush=True)

    return Snapshots()


def train_once(adata, batch_key, seed: int, max_epochs: int, args, callbacks=(), **train_kw):
    """One R2MAEModel at the default widths trained on ``adata``; returns the model."""
    import scvi

    from scr2mae import R2MAEModel

    scvi.settings.seed = seed
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key=batch_key)
    model = R2MAEModel(adata, **args.model_kwargs)
    model.train(
        max_epochs=max_epochs,
        batch_size=128,
        enable_progress_bar=False,
        callbacks=list(callbacks),
        plan_kwargs=dict(args.plan_kwargs),
        **train_kw,
    )
    return model


def evaluate(model, adata, fit, heldout, groups, seed: int) -> dict:
    """Probe of all cells' embedding and masked reconstruction of the held-out cells."""
    embedding = model.get_latent_representation(adata)
    scores = model.get_reconstruction_score(adata=heldout, mask_ratio=RATIOS, seed=seed)
    row = {"probe": probe(adata, embedding, groups)}
    row.update({f"recon_{r:g}": float(scores.loc[r]) for r in RATIOS})
    row["recon_mean"] = float(np.mean([row[f"recon_{r:g}"] for r in RATIOS]))
    return row


def run_seed(name: str, adata, batch_key, groups, seed: int, args) -> tuple[list, list, dict]:
    """All settings of one dataset and seed from one training run; rows, curve, checks."""
    from scr2mae.model._model import default_max_epochs

    rng = np.random.default_rng(seed)
    n_held = round(args.heldout * adata.n_obs)
    order = rng.permutation(adata.n_obs)
    heldout_idx, fit_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    fit = adata[fit_idx].copy()
    default = default_max_epochs(fit.n_obs)
    max_epochs = max([*args.lengths, default if args.run_default else 0])
    if seed not in args.long_seeds:
        max_epochs = min(max_epochs, args.short_max_epochs)
    lengths = sorted({k for k in [*args.lengths, default] if k <= max_epochs})
    snapshots = make_snapshot_callback(lengths, args.patience)
    tic = time.perf_counter()
    model = train_once(
        fit, batch_key, seed, max_epochs, args, [snapshots], check_val_every_n_epoch=1
    )
    total_s = time.perf_counter() - tic
    n_train = len(model.train_indices)
    heldout = adata[heldout_idx].copy()
    final = copy.deepcopy(model.module.state_dict())
    rows = []
    for (kind, value), record in sorted(snapshots.states.items(), key=lambda kv: kv[1]["epoch"]):
        model.module.load_state_dict(record["state"])
        model.module.eval()
        row = {
            "dataset": name,
            "seed": seed,
            "setting": f"{value} epochs"
            if kind == "epochs"
            else f"early stopping (patience {value})",
            "kind": kind,
            "patience": value if kind == "early_stopping" else np.nan,
            "epochs": record["epoch"],
            "steps": record["steps"],
            "n_cells": adata.n_obs,
            "n_fit": fit.n_obs,
            "n_train": n_train,
            "passes": record["epoch"] * n_train,
            "default_epochs": default,
            "default_passes": default * n_train,
            "is_default": kind == "epochs" and value == default,
            "train_s": record["train_s"],
            "masked_nll_validation": record["masked_nll_validation"],
        }
        row.update(evaluate(model, adata, fit, heldout, groups, seed))
        rows.append(row)
    for p in args.patience:
        if ("early_stopping", p) not in snapshots.states:
            print(f"   early stopping (patience {p}) did not stop within {max_epochs} epochs")
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "setting": f"early stopping (patience {p})",
                    "kind": "early_stopping",
                    "patience": p,
                    "censored_at": max_epochs,
                }
            )
    model.module.load_state_dict(final)
    curve = pd.DataFrame(snapshots.curve)
    history = model.history
    for key in ("masked_nll_train", "masked_nll_validation"):
        logged = history[key][key].to_numpy() if key in history else np.full(len(curve), np.nan)
        curve[f"{key}_history"] = logged[: len(curve)]
    curve = [{"dataset": name, "seed": seed, **row} for row in curve.to_dict("records")]
    checks = {"total_s": total_s, "max_epochs": max_epochs}
    if args.verify:
        checks.update(verify(fit, batch_key, seed, snapshots, args))
    return rows, curve, checks


def verify(fit, batch_key, seed, snapshots, args) -> dict:
    """Fresh runs: a fixed length and real early stopping against the copied weights."""
    out = {}
    k = min(key[1] for key in snapshots.states if key[0] == "epochs")
    fresh = train_once(fit, batch_key, seed, k, args)
    out["fixed_epochs"] = k
    out["fixed_max_abs_diff"] = max_state_diff(fresh, snapshots.states[("epochs", k)]["state"])
    p = min(args.patience)
    max_epochs = max(key[1] for key in snapshots.states if key[0] == "epochs")
    real = train_once(
        fit, batch_key, seed, max_epochs, args, early_stopping=True, early_stopping_patience=p
    )
    out["es_patience"] = p
    out["es_real_epochs"] = len(real.history["masked_nll_validation"])
    record = snapshots.states.get(("early_stopping", p))
    out["es_emulated_epochs"] = record["epoch"] if record else None
    out["es_max_abs_diff"] = max_state_diff(real, record["state"]) if record else np.nan
    return out


def max_state_diff(model, state) -> float:
    """Largest absolute difference between a model's weights and a copied state."""
    own = model.module.state_dict()
    return max(
        float((own[key].double() - value.double()).abs().max()) if value.numel() else 0.0
        for key, value in state.items()
    )


# ---------------------------------------------------------------------------------- tables
def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per dataset and setting."""
    done = runs[runs["epochs"].notna()]
    cols = ["epochs", "steps", "passes", "train_s", "probe", "recon_mean", "masked_nll_validation"]
    cols += [f"recon_{r:g}" for r in RATIOS]
    grouped = done.groupby(["dataset", "setting"], sort=False)
    table = grouped[cols].mean().join(grouped[cols].std(ddof=1).add_suffix("_sd"))
    table["n_seeds"] = grouped.size()
    table["n_cells"] = grouped["n_cells"].first()
    table["default_passes"] = grouped["default_passes"].mean()
    return table.reset_index()


def paired(runs: pd.DataFrame, reference: int = REFERENCE) -> pd.DataFrame:
    """Per-seed differences to the ``reference``-epoch setting: mean and standard error."""
    done = runs[runs["epochs"].notna()]
    ref = done[done["setting"] == f"{reference} epochs"].set_index(["dataset", "seed"])
    rows = []
    for (dataset, setting), group in done.groupby(["dataset", "setting"], sort=False):
        group = group.set_index(["dataset", "seed"])
        common = group.index.intersection(ref.index)
        if common.empty:
            continue
        row = {"dataset": dataset, "setting": setting, "n_pairs": len(common)}
        for col in ("probe", "recon_mean"):
            diff = group.loc[common, col] - ref.loc[common, col]
            row[f"d_{col}"] = float(diff.mean())
            row[f"d_{col}_se"] = (
                float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


def fmt(mean, sd, digits=3) -> str:
    """``mean ± sd`` (the sd left out when there is one seed)."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if pd.notna(sd) else "")


def markdown_tables(summary, pairs, runs, reference: int = REFERENCE) -> str:
    """One table per dataset and a combined one (markdown)."""
    lines = []
    for dataset, table in summary.groupby("dataset", sort=False):
        cells = int(table["n_cells"].iloc[0])
        lines += [
            f"\n**{dataset}** ({cells} cells; mean ± sd over seeds)\n",
            "| setting | seeds | epochs | steps | passes | train s | probe "
            f"| Δ probe vs {reference} (SE) | recon 0.1 / 0.3 / 0.5 | recon mean "
            "| masked NLL val |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _, row in table.iterrows():
            pair = pairs[(pairs["dataset"] == dataset) & (pairs["setting"] == row["setting"])]
            delta = "–"
            if not pair.empty:
                d, se = pair["d_probe"].iloc[0], pair["d_probe_se"].iloc[0]
                delta = f"{d:+.3f}" + (f" ({se:.3f})" if pd.notna(se) else "")
            recon = " / ".join(f"{row[f'recon_{r:g}']:.3f}" for r in RATIOS)
            lines.append(
                f"| {row['setting']} | {int(row['n_seeds'])} "
                f"| {fmt(row['epochs'], row['epochs_sd'], 0)} | {row['steps']:,.0f} "
                f"| {row['passes']:,.0f} | {fmt(row['train_s'], row['train_s_sd'], 0)} "
                f"| {fmt(row['probe'], row['probe_sd'])} | {delta} | {recon} "
                f"| {fmt(row['recon_mean'], row['recon_mean_sd'])} "
                f"| {fmt(row['masked_nll_validation'], row['masked_nll_validation_sd'])} |"
            )
        censored = runs[(runs["dataset"] == dataset) & runs["epochs"].isna()]
        for _, row in censored.iterrows():
            lines.append(
                f"\n{row['setting']}, seed {int(row['seed'])}: did not stop within "
                f"{int(row['censored_at'])} epochs."
            )
    # combined: per setting, the mean over datasets of the per-dataset means
    lines += [
        "\n**All datasets** (per setting: mean over datasets of the per-dataset means; "
        f"Δ = paired difference to {reference} epochs)\n",
        f"| setting | datasets | probe | Δ probe vs {reference} | recon mean "
        f"| Δ recon vs {reference} | passes / today's |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting, row in combined(summary, pairs).iterrows():
        lines.append(
            f"| {setting} | {int(row['datasets'])} | {row['probe']:.3f} | {row['d_probe']:+.3f} "
            f"| {row['recon_mean']:.3f} | {row['d_recon_mean']:+.3f} | {row['pass_ratio']:.2f} |"
        )
    return "\n".join(lines)


def combined(summary, pairs) -> pd.DataFrame:
    """Per setting, over the datasets where it was measured."""
    merged = summary.merge(pairs, on=["dataset", "setting"], how="left")
    merged["pass_ratio"] = merged["passes"] / merged["default_passes"]
    grouped = merged.groupby("setting", sort=False)
    table = grouped[["probe", "d_probe", "recon_mean", "d_recon_mean", "pass_ratio"]].mean()
    table["datasets"] = grouped.size()
    return table


def recommend(summary, pairs, reference: int = REFERENCE) -> list[str]:
    """The printed recommendation: best probe without more passes than today's formula."""
    lines = []
    n_datasets = summary["dataset"].nunique()
    table = combined(summary, pairs)
    eligible = table[(table["datasets"] == n_datasets) & (table["pass_ratio"] <= 1 + 1e-9)]
    if eligible.empty:
        return ["no setting was measured on every dataset; no recommendation."]
    best = eligible["d_probe"].idxmax()
    lines.append(
        f"best probe over all datasets (paired Δ vs {reference} epochs, mean over datasets): "
        f"{best} ({eligible.loc[best, 'd_probe']:+.3f}; recon Δ "
        f"{eligible.loc[best, 'd_recon_mean']:+.3f}; {eligible.loc[best, 'pass_ratio']:.2f} of "
        "today's passes)"
    )
    # per dataset: best probe length and best reconstruction length among fixed lengths
    fixed = summary[summary["setting"].str.endswith(" epochs")].copy()
    fixed["k"] = fixed["setting"].str.split().str[0].astype(int)
    for dataset, group in fixed.groupby("dataset", sort=False):
        top_probe = group.loc[group["probe"].idxmax()]
        top_recon = group.loc[group["recon_mean"].idxmax()]
        steps_per_epoch = top_probe["steps"] / top_probe["epochs"]
        lines.append(
            f"{dataset}: best probe at {int(top_probe['k'])} epochs "
            f"({top_probe['probe']:.3f}, {top_probe['steps']:,.0f} steps, "
            f"{steps_per_epoch:.0f} steps/epoch); best held-out reconstruction at "
            f"{int(top_recon['k'])} epochs ({top_recon['recon_mean']:.3f})"
            + ("  <- probe and reconstruction disagree" if top_probe["k"] != top_recon["k"] else "")
        )
    # the target, on the dataset closest to 2,000 cells
    sizes = summary.groupby("dataset")["n_cells"].first()
    target = (sizes - TARGET_CELLS).abs().idxmin()
    ref = pairs[(pairs["dataset"] == target)].set_index("setting")
    lines.append(
        f"target on {target} ({sizes[target]} cells): ≤ {TARGET_MAX_EPOCHS} epochs and probe "
        f"within {TARGET_PROBE_TOLERANCE} of {reference} epochs'"
    )
    for setting in ref.index:
        epochs = summary.set_index(["dataset", "setting"]).loc[(target, setting), "epochs"]
        ok = epochs <= TARGET_MAX_EPOCHS and ref.loc[setting, "d_probe"] >= -TARGET_PROBE_TOLERANCE
        lines.append(
            f"  {setting}: {epochs:.0f} epochs, Δ probe {ref.loc[setting, 'd_probe']:+.3f} -> "
            + ("met" if ok else "missed")
        )
    return lines


def plot(summary, path: Path) -> None:
    """Probe and held-out reconstruction against epochs, one panel pair per dataset."""
    plt = tail.pyplot()
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.2 * len(datasets), 5.5), squeeze=False)
    for j, dataset in enumerate(datasets):
        table = summary[summary["dataset"] == dataset]
        fixed = table[table["setting"].str.endswith(" epochs")].sort_values("epochs")
        stops = table[table["setting"].str.startswith("early")]
        for i, (col, label) in enumerate((("probe", "probe"), ("recon_mean", "held-out recon"))):
            ax = axes[i, j]
            ax.errorbar(fixed["epochs"], fixed[col], yerr=fixed[f"{col}_sd"], marker="o", ms=3)
            ax.errorbar(
                stops["epochs"],
                stops[col],
                xerr=stops["epochs_sd"],
                fmt="s",
                color="C3",
                ms=4,
                label="early stopping",
            )
            ax.set_xscale("log")
            ax.set_title(dataset if i == 0 else "", fontsize=9)
            ax.set_xlabel("epochs" if i == 1 else "")
            if j == 0:
                ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    tail.save_figure(fig, path, dpi=130)


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the benchmark; return ``runs``, ``summary``, ``paired`` and ``curves`` tables."""
    parser = tail.mode_parser(
        __doc__, quick="two small datasets, minutes", smoke="tiny synthetic data, seconds"
    )
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--lengths", nargs="+", type=int, default=None, help="fixed epochs")
    parser.add_argument("--patience", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument(
        "--long-seeds",
        nargs="*",
        type=int,
        default=None,
        help="seeds trained to the longest length (default: all); the others stop at "
        "--short-max-epochs",
    )
    parser.add_argument("--short-max-epochs", type=int, default=None)
    parser.add_argument(
        "--no-default",
        dest="run_default",
        action="store_false",
        help="do not train to default_max_epochs",
    )
    parser.add_argument("--heldout", type=float, default=0.15, help="share of cells held out")
    parser.add_argument("--n-top-genes", type=int, default=None)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="fresh runs check the copied weights (fixed length, early stopping)",
    )
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "scr2mae"))
    parser.add_argument("--out", default="results/training_length")
    parser.add_argument(
        "--from-runs",
        action="store_true",
        help="re-make the tables from runs.csv, curves.csv and checks.csv already in --out/<mode>",
    )
    args = parser.parse_args(argv)
    name = tail.mode_name(args)
    for key, value in MODES[name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("lengths", "patience"):
        if any(v < 1 for v in getattr(args, key)):
            raise ValueError(f"--{key} must be positive integers, got {getattr(args, key)}.")
    if not 0 < args.heldout < 0.5:
        raise ValueError(f"--heldout must be in (0, 0.5), got {args.heldout}.")
    known = (*DATASETS, "synthetic_tiny")
    if unknown := [d for d in args.datasets if d not in known]:
        raise ValueError(f"unknown datasets {unknown}; expected some of {DATASETS}.")
    if REFERENCE not in args.lengths and not args.smoke:
        raise ValueError(f"--lengths must contain {REFERENCE}, the reference of the paired deltas.")
    reference = REFERENCE if REFERENCE in args.lengths else args.lengths[0]
    if args.from_runs:
        out = Path(args.out) / name
        tables = [pd.read_csv(out / f"{t}.csv") for t in ("runs", "curves", "checks")]
        return tabulate(*tables, out, reference)
    args.long_seeds = args.seeds if args.long_seeds is None else args.long_seeds
    args.short_max_epochs = args.short_max_epochs or max(args.lengths)
    # smoke: tiny widths and a large learning rate so that early stopping triggers in seconds
    args.model_kwargs = {"n_hidden": 16, "n_latent": 4} if args.smoke else {}
    args.plan_kwargs = {"lr": 3e-2} if args.smoke else {}
    if args.smoke:
        args.run_default = False

    tail.quiet()
    out = tail.output_dir(Path(args.out) / name)
    all_rows, all_curves, all_checks = [], [], []
    for dataset in args.datasets:
        adata, batch_key, groups = load_dataset(dataset, args)
        print(f"== {dataset}: {adata.n_obs} cells x {adata.n_vars} genes", flush=True)
        for seed in args.seeds:
            rows, curve, checks = run_seed(dataset, adata, batch_key, groups, seed, args)
            all_rows += rows
            all_curves += curve
            all_checks.append({"dataset": dataset, "seed": seed, **checks})
            print(f"-- seed {seed}: {checks}", flush=True)
            for row in rows:
                if "probe" in row:
                    print(
                        f"   {row['setting']:<28} {row['epochs']:>4} ep {row['train_s']:7.1f} s "
                        f"probe {row['probe']:.3f} recon {row['recon_mean']:.3f} "
                        f"nll {row['masked_nll_validation']:.4f}",
                        flush=True,
                    )
            pd.DataFrame(all_rows).to_csv(out / "runs.csv", index=False)
            pd.DataFrame(all_curves).to_csv(out / "curves.csv", index=False)
            pd.DataFrame(all_checks).to_csv(out / "checks.csv", index=False)
    return tabulate(
        pd.DataFrame(all_rows), pd.DataFrame(all_curves), pd.DataFrame(all_checks), out, reference
    )


def tabulate(runs, curves, checks, out: Path, reference: int = REFERENCE) -> dict:
    """Write and print the tables, the recommendation and the figure from the per-run rows."""
    if "censored_at" not in runs:
        runs["censored_at"] = np.nan
    summary = summarise(runs)
    pairs = paired(runs, reference)
    tables = {"runs": runs, "curves": curves, "summary": summary, "paired": pairs, "checks": checks}
    text = markdown_tables(summary, pairs, runs, reference)
    text += "\n\n" + "\n".join(recommend(summary, pairs, reference))
    figure = ("training_length.png", lambda path: plot(summary, path))
    tail.write_results(out, tables, text, figure=figure)
    return tables


if __name__ == "__main__":
    main()
