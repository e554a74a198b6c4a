import runpy
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "transfer.py"
FRACTIONS = [0.0, 0.1, 0.3, 0.5, 0.7]


def test_transfer_benchmark_smoke(tmp_path, capsys):
    module = runpy.run_path(str(SCRIPT), run_name="transfer_benchmark")
    tables = module["main"](["--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    label, imputation, library, aims = (
        tables[k] for k in ("label_transfer", "imputation", "library", "aims")
    )
    n_genes = {"pbmc68k": 765, "synthetic": 80}

    # (a) every label-transfer method at every fraction, on both datasets
    assert set(label.columns) >= {
        "dataset", "fraction_removed", "probe", "method", "balanced_accuracy",
        "n_unmeasured_genes",
    }  # fmt: skip
    for dataset, n in n_genes.items():
        sub = label[label["dataset"] == dataset]
        for probe in ("reference, all genes", "reference, query's genes"):
            per_probe = sub[sub["probe"] == probe]
            assert set(per_probe["method"]) == set(module["LABEL_METHODS"])
            assert sorted(per_probe["fraction_removed"].unique()) == FRACTIONS
            assert len(per_probe) == len(FRACTIONS) * len(module["LABEL_METHODS"])
        # the genes removed are reported as unmeasured, as many as were removed
        per_fraction = sub.groupby("fraction_removed")["n_unmeasured_genes"].unique()
        for fraction, values in per_fraction.items():
            assert list(values) == [round(fraction * n)]
        assert f"{dataset}" in out and f"70%: {round(0.7 * n)}" in out
    assert label["balanced_accuracy"].between(0, 1).all()
    # with every gene measured, both probes are the same probe
    full = label[label["fraction_removed"] == 0].pivot_table(
        index=["dataset", "method"], columns="probe", values="balanced_accuracy"
    )
    np.testing.assert_array_equal(full.iloc[:, 0], full.iloc[:, 1])
    # probes are better than chance somewhere: log-normalised PCA on all genes
    pca_full = label[(label["method"] == "PCA (shared genes)") & (label["fraction_removed"] == 0)]
    assert (pca_full["balanced_accuracy"] > 0.4).all()

    # (b) imputation only where genes were removed; r is a correlation
    assert set(imputation["method"]) == set(module["IMPUTATION_METHODS"])
    assert sorted(imputation["fraction_removed"].unique()) == FRACTIONS[1:]
    assert imputation["pearson_r"].between(-1, 1).all()
    assert (imputation["n_cells_scored"] > 0).all()
    knn = imputation[imputation["method"] == "kNN (15 reference cells)"]
    assert (knn["pearson_r"] > 0.3).all()  # the held-out truth is what is scored

    # (c) the library estimate is closer to the true library than the observed sum, and the
    # error of the observed sum grows with the genes removed
    wide = library.pivot_table(
        index=["dataset", "fraction_removed"], columns="library",
        values="median_abs_error_vs_true_library",
    )  # fmt: skip
    assert (wide["estimated (default)"] < wide["observed sum"]).all()
    for dataset in n_genes:
        observed = wide.loc[dataset, "observed sum"].to_numpy()
        assert np.all(np.diff(observed) > 0)
    assert library["imputation_pearson_r"].between(-1, 1).all()

    # aims: evaluated from the tables, each printed as met or missed
    assert len(aims) == 2 * (2 * 3 + 2 * 2)
    assert aims["met"].map(type).eq(bool).all()
    for aim in aims.itertuples():
        assert f"[{'met' if aim.met else 'missed'}] {aim.dataset}: {aim.aim}" in out

    for name in ("label_transfer", "imputation", "library", "aims"):
        written = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(written) == len(tables[name])
    assert (tmp_path / "tables.md").read_text().strip() in out
    figure = tmp_path / "transfer.png"
    assert figure.stat().st_size > 10_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
