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
    args += ["--transforms", "std", "--resolutions", "0.5"]
    tables = module["main"](args)
    out = capsys.readouterr().out
    table = tables["synthetic"]
    assert "KBET" not in table.columns and "iLISI" in table.columns
    rows = [*methods, "R2MAE variational 0.5"]
    # every learned embedding is also scored standardised; PCA is not transformed
    learned = [r for r in rows if r != "PCA"]
    assert list(table.index) == rows + [f"{r} [std]" for r in learned]
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
    # Leiden clusters at resolution 1.0 (and 0.5), scored against the cell types
    for col in ("leiden_ari", "leiden_nmi", "leiden_ari_r0.5", "leiden_nmi_r0.5", "leiden_ari_sd"):
        assert table[col].notna().all()
    assert table[["leiden_nmi", "leiden_nmi_r0.5"]].stack().between(0, 1).all()
    assert table[["leiden_ari", "leiden_ari_r0.5"]].stack().between(-0.5, 1).all()
    assert (table["leiden_n"] >= 1).all() and "leiden_ari_r1.5" not in table.columns
    assert table.loc["PCA", "leiden_ari_sd"] == pytest.approx(0.0, abs=1e-9)
    # PCA is not retrained, so its scores do not move between seeds
    assert table.loc["PCA", "Total_sd"] == pytest.approx(0.0, abs=1e-9)
    assert (table.loc[["R2MAE", "R2MAE mmd"], "train_s"] > 0).all()
    assert (folder / "scib.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(folder / "embeddings_seed1.npz") as saved:
        assert set(saved.files) == set(rows) and saved["R2MAE"].shape[1] == 4
        r2mae = saved["R2MAE"]
    # the standardised latent has unit-variance dimensions; its probe and scores are its own
    std = module["LATENT_TRANSFORMS"]["std"](r2mae)
    np.testing.assert_allclose(std.std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(std.mean(0), 0.0, atol=1e-5)
    assert "mean over seeds [0, 1]" in out


def test_leiden_scores_a_perfect_and_a_random_embedding():
    module = runpy.run_path(str(SCRIPT), run_name="integration_benchmark")
    adata = module["load_synthetic"](0)
    rng = np.random.default_rng(0)
    onehot = pd.get_dummies(adata.obs["cell_type"]).to_numpy(float)
    adata.obsm["labels"] = onehot + 0.01 * rng.standard_normal(onehot.shape)
    adata.obsm["noise"] = rng.standard_normal((adata.n_obs, 5))
    table = module["leiden_table"](adata, ["labels", "noise"], resolutions=[1.0])
    assert list(table.columns) == ["leiden_ari", "leiden_nmi", "leiden_n"]
    # the labels' own (jittered) one-hot code gives back the five cell types exactly
    assert table.loc["labels", "leiden_ari"] == pytest.approx(1.0)
    assert table.loc["labels", "leiden_nmi"] == pytest.approx(1.0)
    assert table.loc["labels", "leiden_n"] == 5
    assert abs(table.loc["noise", "leiden_ari"]) < 0.02 and table.loc["noise", "leiden_nmi"] < 0.05
    for name, transform in module["LATENT_TRANSFORMS"].items():
        out = transform(adata.obsm["noise"] * [1, 10, 100, 1, 1])
        assert out.shape == (adata.n_obs, 5), name
    adata.obsm["bad"] = np.full((adata.n_obs, 2), np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        module["leiden_table"](adata, ["bad"])


def test_integration_benchmark_rejects_bad_variants():
    module = runpy.run_path(str(SCRIPT), run_name="integration_benchmark")
    for bad in ("none:0.1", "mmd", "adversarial:"):
        with pytest.raises(SystemExit):
            module["main"](["--variants", bad])
    with pytest.raises(SystemExit):
        module["main"](["--transforms", "zscore"])


SCREEN = SCRIPT.parent / "cluster_screen.py"


def test_cluster_screen_writes_resumable_rows(tmp_path, capsys):
    module = runpy.run_path(str(SCREEN), run_name="cluster_screen")
    args = ["--dataset", "synthetic", "--epochs", "2", "--n-top-genes", "60", "--seeds", "0"]
    args += ["--probe-splits", "1", "--out", str(tmp_path), "--candidates", "none", "mmd_latent10"]
    rows = module["main"](args)
    assert [r["candidate"] for r in rows] == ["none", "mmd_latent10"]
    for row in rows:
        assert 0 <= row["leiden_nmi"] <= 1 and 0 <= row["probe_bacc"] <= 1
        assert row["leiden_n"] >= 1 and "leiden_ari_r0.5" in row
    log = tmp_path / "synthetic" / "rows.jsonl"
    assert len(log.read_text().splitlines()) == 2
    # a rerun skips what is on record
    assert module["main"](args) == []
    with pytest.raises(SystemExit):
        module["main"]([*args[:-2], "nonsense"])
    assert "unknown candidates ['nonsense']" in capsys.readouterr().err
