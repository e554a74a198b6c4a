"""Differential expression on synthetic counts with planted genes: recall and false discoveries.

    python benchmarks/genomics/singlecell/de_planted.py --smoke   # seconds (what the test runs)
    python benchmarks/genomics/singlecell/de_planted.py --quick   # 2-core CPU, a few minutes
    python benchmarks/genomics/singlecell/de_planted.py           # 3 seeds, both designs

Each design simulates gamma-Poisson (negative-binomial) counts in which a known set of genes
differs between two groups of cells ("treated" and "control") and every other gene has the
same expected share of each cell's counts in both groups. Every method is asked which genes
differ between the groups, and its answer is scored against the planted set.

Designs:

* ``small``: 400 cells × 60 genes, one cell type, one batch; 6 planted genes changed 4-fold
  (3 up and 3 down in "treated").
* ``batched``: 1,200 cells × 500 genes, 4 cell types (40/30/20/10 %, the same in both
  groups), 2 batches (each group split evenly; batch 2 sequenced 1.5× deeper and with its
  own gene-wise shift, sd 0.3 on the log scale); 50 planted genes, 25 up and 25 down, by
  log2 fold changes drawn uniformly from [0.5, 1.5] (1.4- to 2.8-fold, 2-fold in the middle).

Counts: gene baselines are log-normal, cell-type programs add a small shift to every gene
and a larger one to each type's markers, library sizes are log-normal (sd 0.5 on the log
scale around the design's median), and a count is Poisson with a gamma-distributed rate
(inverse dispersion log-normal around 5 per gene). A gene that goes up takes a share of every
cell's counts from all other genes, so planting only up-regulated genes would move every
other gene in normalised expression (by ``log2(1 + 3 s)`` for 4-fold genes holding a share
``s``, 0.3–0.4 for 6 of 60 genes), and they would not be null: the planted genes are therefore
drawn in pairs of similar baseline, one up and one down, with the same fold change. The true
log2 fold change of every gene is computed from the expected normalised expression of the
simulated cells; the largest |true log2 fold change| of a null gene is reported.

Methods:

* ``R2MAE`` (:class:`scr2mae.R2MAEModel`, ratio ~ U(0.1, 0.5) in training), one model per
  design and seed, trained once and then asked for DE with ``module.sample_ratios`` set to the
  training range (``None``), ``(0.05, 0.05)``, ``(0.02, 0.02)`` and ``(0.0, 0.0)`` (the
  point mass: every latent sample of a cell is the same, so the variation is across cells).
  With ``n_samples > 1`` the deterministic encoder's samples of a cell differ by the random
  gene sets it hides, at a share drawn from ``sample_ratios``.
* ``scVI`` (:class:`scvi.model.SCVI`, the same widths, encoder depth, epochs and batch size).
* ``Wilcoxon (scanpy)``: ``sc.tl.rank_genes_groups(method="wilcoxon")`` on
  ``log1p(counts / library × 1e4)``; a gene is called at Benjamini–Hochberg adjusted p < 0.05.

The model-based methods run ``differential_expression(groupby="group", group1="treated",
group2="control")`` in both modes: ``mode="change"`` (a gene is called when
``is_de_fdr_0.05``, scvi-tools' posterior expected FDR control at |log2 fold change| > 0.25)
and ``mode="vanilla"`` (a gene is called when ``|bayes_factor| > 3``). In the ``batched``
design they use ``batch_correction=True``; the Wilcoxon test does not model the batch (the
design is balanced, so the batch does not bias it). The DE sampling is seeded per call.

Scores per method, mode, design and seed: recall of the planted genes, false discoveries
(called null genes) and the false discovery proportion FDP = false / called (0 when nothing is
called), the Spearman correlation of the estimated log2 fold change (``lfc_mean`` of change
mode, scanpy's ``logfoldchanges``) with the true one over the planted genes, and the AUROC of
the ranking (change mode: ``proba_de``, vanilla: ``|bayes_factor|``, Wilcoxon: ``|score|``)
for planted against null genes. Tables give the mean ± sd over seeds.

Writes under ``--out`` (default ``results/de_planted/<mode>``): ``de_planted.csv`` (long
format, one row per design, seed, method and mode), ``truth.csv`` (the planted genes and the
null residual per design and seed), ``tables.md`` (what is printed) and ``de_planted.png``
(recall against FDP).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

GROUP_KEY = "group"
GROUP1, GROUP2 = "treated", "control"
BAYES_FACTOR_THRESHOLD = 3.0
CHANGE_COLUMN = "is_de_fdr_0.05"
ADJUSTED_P = 0.05
#: the R2MAE rows: name -> value of ``module.sample_ratios`` at DE time
SAMPLE_RATIOS: dict[str, tuple[float, float] | None] = {
    "R2MAE, training range (0.1, 0.5)": None,
    "R2MAE, 0.05": (0.05, 0.05),
    "R2MAE, 0.02": (0.02, 0.02),
    "R2MAE, 0 (point mass)": (0.0, 0.0),
}
SCVI, WILCOXON = "scVI", "Wilcoxon (scanpy)"
METHODS = [*SAMPLE_RATIOS, SCVI, WILCOXON]
MODES = ("change", "vanilla")
WILCOXON_MODE = "adj. p < 0.05"


@dataclass(frozen=True)
class Design:
    """A simulated data set with planted differentially expressed genes.

    Parameters
    ----------
    name
        Label of the design in the tables.
    n_cells, n_genes
        Size of the count matrix.
    n_pairs
        Planted genes come in pairs of similar baseline, one up and one down in ``treated``
        (``2 * n_pairs`` planted genes).
    log2_fold_change
        One value, or a ``(low, high)`` range from which each pair's magnitude is drawn.
    n_cell_types, cell_type_shares
        Cell types (shares identical in both groups).
    n_batches
        Batches (each group split evenly); batch ``b`` is sequenced ``batch_depth ** b`` times
        deeper and has its own gene-wise log shift with sd ``batch_shift_sd``.
    library_median, library_sd
        Median library size of batch 0 and the sd of the log library size.
    n_hidden, n_latent
        Widths of R2MAE and scVI for this design.
    """

    name: str
    n_cells: int
    n_genes: int
    n_pairs: int
    log2_fold_change: float | tuple[float, float]
    n_cell_types: int = 1
    cell_type_shares: tuple[float, ...] = (1.0,)
    n_batches: int = 1
    batch_depth: float = 1.5
    batch_shift_sd: float = 0.3
    library_median: float = 500.0
    library_sd: float = 0.5
    n_hidden: int = 64
    n_latent: int = 8

    def __post_init__(self):
        if self.n_cells < 4 * self.n_batches * self.n_cell_types:
            raise ValueError(f"`n_cells` is too small for design {self.name!r}.")
        if not 0 < 2 * self.n_pairs < self.n_genes // 2:
            raise ValueError(
                f"`n_pairs` must leave most genes null; got {self.n_pairs} pairs of "
                f"{self.n_genes} genes in design {self.name!r}."
            )
        if len(self.cell_type_shares) != self.n_cell_types or not np.isclose(
            sum(self.cell_type_shares), 1.0
        ):
            raise ValueError(
                f"`cell_type_shares` must have {self.n_cell_types} entries summing to 1."
            )


DESIGNS = {
    "smoke": Design("smoke", n_cells=240, n_genes=40, n_pairs=2, log2_fold_change=2.0,
                    library_median=400.0, n_hidden=32, n_latent=8),
    "small": Design("small", n_cells=400, n_genes=60, n_pairs=3, log2_fold_change=2.0,
                    library_median=500.0, n_hidden=64, n_latent=8),
    "batched": Design("batched", n_cells=1200, n_genes=500, n_pairs=25,
                      log2_fold_change=(0.5, 1.5), n_cell_types=4,
                      cell_type_shares=(0.4, 0.3, 0.2, 0.1), n_batches=2,
                      library_median=1000.0, n_hidden=128, n_latent=16),
}  # fmt: skip

CONFIGS = {
    "smoke": {"designs": ["smoke"], "n_seeds": 1, "epochs": 60, "batch_size": 32},
    "quick": {"designs": ["small", "batched"], "n_seeds": 1, "epochs": 50, "batch_size": 128},
    "full": {"designs": ["small", "batched"], "n_seeds": 3, "epochs": 100, "batch_size": 128},
}


def log(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


# ----------------------------------------------------------------------------- simulation
def simulate_planted(design: Design, seed: int):
    """Simulate gamma-Poisson counts with planted genes (see the module notes).

    Parameters
    ----------
    design
        The design.
    seed
        Seed of the simulation.

    Returns
    -------
    AnnData with integer counts in ``X`` and the layer ``"counts"``; ``.obs`` columns
    ``group``, ``batch``, ``cell_type``; ``.var`` columns ``planted`` (bool),
    ``planted_log2fc`` (the factor planted, 0 for null genes) and ``true_log2fc`` (log2 ratio
    of the group means of the expected normalised expression).
    """
    import anndata

    rng = np.random.default_rng(seed)
    n_genes = design.n_genes
    log_base = rng.normal(0.0, 1.2, n_genes)
    # cell types: a small shift on every gene, markers (5 % of the genes per type) go up
    type_effect = rng.normal(0.0, 0.2, (design.n_cell_types, n_genes))
    if design.n_cell_types > 1:
        n_markers = max(1, n_genes // 20)
        for k in range(design.n_cell_types):
            markers = rng.choice(n_genes, n_markers, replace=False)
            type_effect[k, markers] += rng.uniform(1.0, 2.5, n_markers)
    batch_effect = rng.normal(0.0, design.batch_shift_sd, (design.n_batches, n_genes))
    batch_effect[0] = 0.0

    # cells: the same cell-type shares in every (group, batch) stratum
    per_stratum = design.n_cells // (2 * design.n_batches)
    counts_per_type = np.floor(per_stratum * np.asarray(design.cell_type_shares)).astype(int)
    counts_per_type[0] += per_stratum - counts_per_type.sum()
    group, batch, cell_type = [], [], []
    for g in (GROUP1, GROUP2):
        for b in range(design.n_batches):
            for k, n in enumerate(counts_per_type):
                group += [g] * n
                batch += [b] * n
                cell_type += [k] * n
    group, batch, cell_type = np.array(group), np.array(batch), np.array(cell_type)
    treated = group == GROUP1

    # planted genes among the expressed ones (above the 25th percentile of the baseline),
    # paired by baseline: one of each pair up in treated, the other up in control
    candidates = np.flatnonzero(log_base > np.quantile(log_base, 0.25))
    chosen = rng.choice(candidates, 2 * design.n_pairs, replace=False)
    chosen = chosen[np.argsort(log_base[chosen])]
    if np.isscalar(design.log2_fold_change):
        magnitude = np.full(design.n_pairs, float(design.log2_fold_change))
    else:
        magnitude = rng.uniform(*design.log2_fold_change, design.n_pairs)
    planted_log2fc = np.zeros(n_genes)
    for pair, (a, b) in enumerate(chosen.reshape(-1, 2)):
        up, down = (a, b) if rng.random() < 0.5 else (b, a)
        log_base[down] = log_base[up]  # the pair gains the same share in either group
        planted_log2fc[up], planted_log2fc[down] = magnitude[pair], -magnitude[pair]
    # a gene down in treated is up in control: each group gains about the same share
    gain = np.where(
        treated[:, None], np.clip(planted_log2fc, 0, None), np.clip(-planted_log2fc, 0, None)
    )
    log_mu = log_base + type_effect[cell_type] + batch_effect[batch] + np.log(2.0) * gain
    share = np.exp(log_mu - log_mu.max(axis=1, keepdims=True))
    share /= share.sum(axis=1, keepdims=True)

    library = (
        design.library_median
        * design.batch_depth**batch
        * np.exp(rng.normal(0.0, design.library_sd, design.n_cells))
    )
    theta = np.exp(rng.normal(np.log(5.0), 0.5, n_genes))
    rate = rng.gamma(theta, 1.0 / theta, (design.n_cells, n_genes)) * library[:, None] * share
    counts = rng.poisson(rate).astype(np.float32)

    true_log2fc = np.log2(share[treated].mean(0) / share[~treated].mean(0))
    obs = pd.DataFrame(
        {
            GROUP_KEY: pd.Categorical(group, categories=[GROUP1, GROUP2]),
            "batch": pd.Categorical([f"batch{b}" for b in batch]),
            "cell_type": pd.Categorical([f"type{k}" for k in cell_type]),
        },
        index=[f"cell{i}" for i in range(design.n_cells)],
    )
    var = pd.DataFrame(
        {
            "planted": planted_log2fc != 0,
            "planted_log2fc": planted_log2fc,
            "true_log2fc": true_log2fc,
        },
        index=[f"gene{j}" for j in range(n_genes)],
    )
    adata = anndata.AnnData(X=counts, obs=obs, var=var)
    adata.layers["counts"] = counts.copy()
    return adata


# ----------------------------------------------------------------------------- scoring
def score_calls(called, planted) -> dict[str, float]:
    """Score a set of called genes against the planted ones.

    Parameters
    ----------
    called, planted
        Boolean arrays over the same genes (or pandas Series aligned on the same index).

    Returns
    -------
    ``n_planted``, ``n_called``, ``n_true`` (planted and called), ``n_false`` (called, not
    planted), ``recall = n_true / n_planted`` and ``fdp = n_false / n_called`` (0 when nothing
    is called).

    Raises
    ------
    ValueError
        If the arrays differ in length, are not boolean, or nothing is planted.
    """
    if isinstance(called, pd.Series) and isinstance(planted, pd.Series):
        if not called.index.equals(planted.index):
            raise ValueError("`called` and `planted` must be indexed by the same genes.")
    called, planted = np.asarray(called), np.asarray(planted)
    if called.shape != planted.shape or called.ndim != 1:
        raise ValueError(
            f"`called` and `planted` must be 1-d and of one length, got {called.shape} and "
            f"{planted.shape}."
        )
    if called.dtype != bool or planted.dtype != bool:
        raise ValueError("`called` and `planted` must be boolean arrays.")
    if not planted.any():
        raise ValueError("`planted` marks no gene: recall is undefined.")
    n_called = int(called.sum())
    n_true = int((called & planted).sum())
    n_false = n_called - n_true
    return {
        "n_planted": int(planted.sum()),
        "n_called": n_called,
        "n_true": n_true,
        "n_false": n_false,
        "recall": n_true / int(planted.sum()),
        "fdp": n_false / n_called if n_called else 0.0,
    }


def ranking_auroc(score, planted) -> float:
    """AUROC of ``score`` for planted (positive) against null genes (ties count half)."""
    from scipy.stats import rankdata

    score, planted = np.asarray(score, dtype=float), np.asarray(planted, dtype=bool)
    ranks = rankdata(score)
    n_pos, n_neg = planted.sum(), (~planted).sum()
    return float((ranks[planted].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(frame: pd.DataFrame, var: pd.DataFrame, mode: str) -> dict[str, float]:
    """Calls, recall, FDP, Spearman and AUROC of one DE result.

    Parameters
    ----------
    frame
        Output of ``differential_expression`` (model methods, ``mode`` ``"change"`` or
        ``"vanilla"``) or of :func:`wilcoxon_de` (``mode`` :data:`WILCOXON_MODE`); indexed by
        gene.
    var
        The simulation's ``.var`` (``planted``, ``true_log2fc``).
    mode
        Which result ``frame`` is.
    """
    from scipy.stats import spearmanr

    frame = frame.reindex(var.index)
    if frame.isna().all(axis=1).any():
        raise ValueError("the DE result lacks some genes of the simulation.")
    if mode == "change":
        called, rank, lfc = frame[CHANGE_COLUMN].astype(bool), frame["proba_de"], "lfc_mean"
    elif mode == "vanilla":
        called = frame["bayes_factor"].abs() > BAYES_FACTOR_THRESHOLD
        rank, lfc = frame["bayes_factor"].abs(), None
    elif mode == WILCOXON_MODE:
        called = frame["pvals_adj"] < ADJUSTED_P
        rank, lfc = frame["scores"].abs(), "logfoldchanges"
    else:
        raise ValueError(f"unknown mode {mode!r}.")
    planted = var["planted"].to_numpy(bool)
    out = score_calls(called.to_numpy(bool), planted)
    out["auroc"] = ranking_auroc(rank.to_numpy(), planted)
    out["spearman_planted"] = (
        float(spearmanr(frame[lfc].to_numpy()[planted], var["true_log2fc"][planted]).statistic)
        if lfc
        else np.nan
    )
    return out


# ----------------------------------------------------------------------------- methods
def wilcoxon_de(adata) -> pd.DataFrame:
    """scanpy's Wilcoxon test of ``treated`` against ``control`` on log-normalised counts."""
    import scanpy as sc

    lognorm = adata.copy()
    lognorm.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    sc.tl.rank_genes_groups(
        lognorm, GROUP_KEY, groups=[GROUP1], reference=GROUP2, method="wilcoxon"
    )
    return sc.get.rank_genes_groups_df(lognorm, group=GROUP1).set_index("names")


def model_de(model, adata, mode: str, batch_correction: bool, seed: int) -> pd.DataFrame:
    """``model.differential_expression`` of ``treated`` against ``control``, seeded."""
    import scvi

    scvi.settings.seed = seed
    return model.differential_expression(
        adata,
        groupby=GROUP_KEY,
        group1=GROUP1,
        group2=GROUP2,
        mode=mode,
        batch_correction=batch_correction,
        silent=True,
    )


def train_models(adata, design: Design, config: dict, seed: int, progress: bool):
    """Train R2MAE and scVI with the same widths, depth, epochs and batch size."""
    import scvi

    from scr2mae import R2MAEModel

    batch_key = "batch" if design.n_batches > 1 else None
    fit = {
        "max_epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "enable_progress_bar": progress,
    }
    widths = {"n_hidden": design.n_hidden, "n_latent": design.n_latent, "n_layers": 2}
    models, seconds = {}, {}
    for name in ("R2MAE", SCVI):
        data = adata.copy()
        scvi.settings.seed = seed
        start = time.perf_counter()
        if name == SCVI:
            scvi.model.SCVI.setup_anndata(data, layer="counts", batch_key=batch_key)
            model = scvi.model.SCVI(data, **widths)
        else:
            R2MAEModel.setup_anndata(data, layer="counts", batch_key=batch_key)
            model = R2MAEModel(data, **widths)
        model.train(**fit)
        seconds[name] = time.perf_counter() - start
        models[name] = (model, data)
    return models, seconds


def run_design(design: Design, config: dict, seed: int, progress: bool):
    """Simulate, train, test: one row per method and mode; and the design's truth."""
    adata = simulate_planted(design, seed)
    var = adata.var
    null = ~var["planted"]
    truth = {
        "design": design.name,
        "seed": seed,
        "n_planted": int(var["planted"].sum()),
        "max_abs_true_log2fc_null": float(var.loc[null, "true_log2fc"].abs().max()),
        "min_abs_true_log2fc_planted": float(var.loc[~null, "true_log2fc"].abs().min()),
        "median_library": float(np.median(adata.layers["counts"].sum(1))),
        "zero_fraction": float((adata.layers["counts"] == 0).mean()),
    }
    models, seconds = train_models(adata, design, config, seed, progress)
    rows = []

    def add(method, mode, frame, de_seconds, train_seconds):
        rows.append(
            {
                "design": design.name,
                "seed": seed,
                "method": method,
                "mode": mode,
                **evaluate(frame, var, mode),
                "train_seconds": train_seconds,
                "de_seconds": de_seconds,
            }
        )

    batch_correction = design.n_batches > 1
    r2mae, r2mae_data = models["R2MAE"]
    for method, ratios in SAMPLE_RATIOS.items():
        r2mae.module.sample_ratios = ratios  # on the instance: the class default is untouched
        for mode in MODES:
            start = time.perf_counter()
            frame = model_de(r2mae, r2mae_data, mode, batch_correction, seed)
            add(method, mode, frame, time.perf_counter() - start, seconds["R2MAE"])
    del r2mae.module.sample_ratios
    model, data = models[SCVI]
    for mode in MODES:
        start = time.perf_counter()
        frame = model_de(model, data, mode, batch_correction, seed)
        add(SCVI, mode, frame, time.perf_counter() - start, seconds[SCVI])
    start = time.perf_counter()
    add(WILCOXON, WILCOXON_MODE, wilcoxon_de(adata), time.perf_counter() - start, 0.0)
    return rows, truth


# ----------------------------------------------------------------------------- reporting
def mean_sd(values: pd.Series, digits: int = 2) -> str:
    """``mean ± sd`` over seeds (the mean alone for one seed)."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def summary_table(results: pd.DataFrame, design: str) -> pd.DataFrame:
    """One row per method and mode: recall, false discoveries, FDP, Spearman, AUROC."""
    sub = results[results["design"] == design]
    rows = []
    for (method, mode), group in sub.groupby(["method", "mode"], sort=False):
        rows.append(
            {
                "method": method,
                "mode": mode,
                "recall": mean_sd(group["recall"]),
                "false": mean_sd(group["n_false"], 1),
                "FDP": mean_sd(group["fdp"]),
                "Spearman lfc (planted)": mean_sd(group["spearman_planted"]),
                "AUROC": mean_sd(group["auroc"], 3),
            }
        )
    table = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(METHODS)}
    mode_order = {m: i for i, m in enumerate((*MODES, WILCOXON_MODE))}
    table = table.sort_values(
        ["mode", "method"],
        key=lambda s: s.map(mode_order) if s.name == "mode" else s.map(order),
    )
    return table[["mode", "method", *table.columns.drop(["mode", "method"])]]


def plot(results: pd.DataFrame, path: Path) -> None:
    """Recall against FDP per design and mode (mean over seeds, bars: sd)."""
    plt = tail.pyplot()
    designs = list(dict.fromkeys(results["design"]))
    fig, axes = plt.subplots(len(designs), 2, figsize=(10, 4 * len(designs)), squeeze=False)
    markers = dict(zip(METHODS, "os^vDPX", strict=False))
    for row, design in enumerate(designs):
        for col, mode in enumerate(MODES):
            ax = axes[row, col]
            sub = results[
                (results["design"] == design) & (results["mode"].isin([mode, WILCOXON_MODE]))
            ]
            for method, group in sub.groupby("method", sort=False):
                ax.errorbar(
                    group["fdp"].mean(),
                    group["recall"].mean(),
                    xerr=group["fdp"].std(ddof=1) if len(group) > 1 else None,
                    yerr=group["recall"].std(ddof=1) if len(group) > 1 else None,
                    marker=markers.get(method, "o"),
                    capsize=3,
                    linestyle="none",
                    label=method,
                )
            ax.set_xlabel("false discovery proportion")
            ax.set_ylabel("recall of planted genes")
            ax.set_xlim(-0.02, 1.0)
            ax.set_ylim(-0.02, 1.05)
            ax.set_title(f"{design}: {mode} mode (Wilcoxon: adj. p)", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    tail.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the benchmark; print and write its tables; return the results and the truth."""
    parser = tail.mode_parser(__doc__, quick="1 seed, 50 epochs (minutes)")
    parser.add_argument("--designs", nargs="+", default=None, help="default: the mode's")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--n-seeds", type=int, default=None, help="default: the mode's")
    parser.add_argument("--epochs", type=int, default=None, help="default: the mode's")
    parser.add_argument("--out", default=None, help="default results/de_planted/<mode>")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    name = tail.mode_name(args)
    config = dict(CONFIGS[name])
    designs = args.designs or config["designs"]
    unknown = set(designs) - set(DESIGNS)
    if unknown:
        parser.error(f"unknown design(s) {sorted(unknown)}; known: {list(DESIGNS)}")
    if args.n_seeds is not None and args.n_seeds < 1:
        parser.error("--n-seeds must be at least 1")
    if args.epochs is not None:
        if args.epochs < 1:
            parser.error("--epochs must be at least 1")
        config["epochs"] = args.epochs
    out = tail.output_dir(args.out or f"results/de_planted/{name}")

    tail.quiet(scvi=True)
    tail.set_threads(args.threads)

    start = time.perf_counter()
    seeds = [args.seed + i for i in range(args.n_seeds or config["n_seeds"])]
    rows, truths = [], []
    for seed in seeds:
        for design in designs:
            log(f"seed {seed}, design {design}")
            design_rows, truth = run_design(DESIGNS[design], config, seed, args.progress_bar)
            rows += design_rows
            truths.append(truth)
    results, truth = pd.DataFrame(rows), pd.DataFrame(truths)
    elapsed = time.perf_counter() - start

    lines = [
        f"mode {name}: {config['epochs']} epochs, batch size {config['batch_size']}, seeds "
        f"{seeds} (mean ± sd over seeds); {elapsed:.0f} s in all",
    ]
    for design in designs:
        spec = DESIGNS[design]
        own = truth[truth["design"] == design]
        train = results[results["design"] == design].drop_duplicates(["seed", "train_seconds"])
        lines += [
            "",
            f"## {design}: {spec.n_cells} cells × {spec.n_genes} genes, "
            f"{2 * spec.n_pairs} planted (log2 fold change {spec.log2_fold_change}), "
            f"{spec.n_cell_types} cell type(s), {spec.n_batches} batch(es); widths "
            f"{spec.n_hidden}/{spec.n_latent}",
            "",
            f"largest |true log2 fold change| of a null gene: "
            f"{own['max_abs_true_log2fc_null'].max():.3f}; smallest of a planted gene: "
            f"{own['min_abs_true_log2fc_planted'].min():.3f}; median library "
            f"{own['median_library'].mean():.0f}, zeros {own['zero_fraction'].mean():.0%}; "
            "training s (R2MAE / scVI): "
            + " / ".join(
                f"{train.loc[train['method'] == m, 'train_seconds'].mean():.0f}"
                for m in (next(iter(SAMPLE_RATIOS)), SCVI)
            ),
            "",
            summary_table(results, design).to_markdown(index=False),
        ]
    tail.write_results(
        out,
        {"de_planted": results, "truth": truth},
        "\n".join(lines),
        figure=("de_planted.png", lambda path: plot(results, path)),
    )
    return {"results": results, "truth": truth}


if __name__ == "__main__":
    main()
