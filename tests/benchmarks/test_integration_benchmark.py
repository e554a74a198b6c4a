import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "integration.py"


def test_integration_benchmark_smoke(tmp_path, capsys):
    module = runpy.run_path(str(SCRIPT), run_name="integration_benchmark")
    methods = ["R2MAE", "R2MAE mmd", "R2MAE + Harmony", "PCA"]
    args = ["--quick", "--datasets", "synthetic", "--epochs", "2", "--n-top-genes", "60"]
    args += ["--n-hidden", "16", "--n-latent", "4", "--probe-splits", "1", "--seeds", "0", "1"]
    args += ["--methods", *methods, "--variants", "variational:0.5", "--out", str(tmp_path)]
    args += ["--skip-kbet"]  # kBET compiles once per cell-type size: most of the test's time
    tables = module["main"](args)
    out = capsys.readouterr().out
    table = tables["synthetic"]
    assert "KBET" not in table.columns and "iLISI" in table.columns
    rows = [*methods, "R2MAE variational 0.5"]
    assert list(table.index) == rows
    scores = ["Bio conservation", "Batch correction", "Total", "probe_bacc"]
    assert table[scores].notna().all().all() and table[scores].stack().between(0, 1).all()
    # the total is scIB's weighted mean of the two groups
    np.testing.assert_allclose(
        table["Total"], 0.6 * table["Bio conservation"] + 0.4 * table["Batch correction"]
    )
    # two seeds: per-seed tables, their mean and the seed spread
    folder = tmp_path / "quick" / "synthetic"
    seeds = [pd.read_csv(folder / f"scib_seed{s}.csv", index_col=0) for s in (0, 1)]
    np.testing.assert_allclose(table["Total"], (seeds[0]["Total"] + seeds[1]["Total"]) / 2)
    assert (table["Total_sd"] >= 0).all() and table.loc["R2MAE", "Total_sd"] > 0
    # PCA is not retrained, so its scores do not move between seeds
    assert table.loc["PCA", "Total_sd"] == pytest.approx(0.0, abs=1e-9)
    assert (table.loc[["R2MAE", "R2MAE mmd"], "train_s"] > 0).all()
    assert (folder / "scib.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(folder / "embeddings_seed1.npz") as saved:
        assert set(saved.files) == set(rows) and saved["R2MAE"].shape[1] == 4
    assert "mean over seeds [0, 1]" in out


def test_integration_benchmark_rejects_bad_variants():
    module = runpy.run_path(str(SCRIPT), run_name="integration_benchmark")
    for bad in ("none:0.1", "mmd", "adversarial:"):
        with pytest.raises(SystemExit):
            module["main"](["--variants", bad])
