import numpy as np
import pandas as pd
import pytest

from scr2mae.data import pbmc68k_counts
from scr2mae.demo import (
    FIXED,
    LOGNORM,
    PCA,
    R2MAE,
    SCVI,
    main,
    paired_difference,
    run_demo,
    verdict_line,
)


def test_pbmc68k_counts_recovers_integer_counts():
    adata = pbmc68k_counts()
    assert adata.shape == (700, 765)
    counts = adata.layers["counts"]
    assert np.issubdtype(counts.dtype, np.integer)
    assert counts.min() >= 0
    # log-normalising the recovered counts with the original totals gives back .X, which
    # scanpy stores rounded to three decimals
    n_counts = adata.obs["n_counts"].to_numpy()[:, None]
    relog = np.log1p(counts.toarray() / n_counts * 1e4)
    np.testing.assert_allclose(relog, adata.X.toarray(), atol=5.1e-4)
    assert "bulk_labels" in adata.obs


def test_paired_difference_on_hand_made_numbers():
    # differences 0.05, 0.02, 0.02: mean 0.03, sd sqrt(0.0003), SE sqrt(0.0003 / 3) = 0.01
    mean, se = paired_difference([0.70, 0.72, 0.68], [0.65, 0.70, 0.66])
    assert mean == pytest.approx(0.03)
    assert se == pytest.approx(0.01)
    # pairing matters: the same scores in another seed order give another SE
    _, se_shuffled = paired_difference([0.70, 0.72, 0.68], [0.70, 0.65, 0.66])
    assert se_shuffled == pytest.approx(np.std([0.0, 0.07, 0.02], ddof=1) / np.sqrt(3))
    mean, se = paired_difference([0.5], [0.4])
    assert mean == pytest.approx(0.1) and np.isnan(se)
    with pytest.raises(ValueError, match="one score per seed"):
        paired_difference([0.1, 0.2], [0.1, 0.2, 0.3])


def test_verdict_line_on_hand_made_table():
    table = pd.DataFrame(
        {
            "balanced_accuracy_seed0": [0.70, 0.65, 0.69],
            "balanced_accuracy_seed1": [0.72, 0.70, 0.75],
            "balanced_accuracy_seed2": [0.68, 0.66, 0.65],
        },
        index=[R2MAE, SCVI, FIXED],
    )
    # R2MAE − scVI: differences 0.05, 0.02, 0.02 -> +0.030 ± 0.010, beyond 2 SE;
    # R2MAE − fixed: 0.01, -0.03, 0.03 -> +0.0033 ± 0.0176, within 2 SE
    assert verdict_line(table) == (
        "R2MAE − scVI: +0.030 ± 0.010 (exceeds 2 SE); "
        "R2MAE − fixed 0.25: +0.003 ± 0.018 (within 2 SE)"
    )
    with pytest.raises(ValueError, match="per-seed columns"):
        verdict_line(table, metric="macro_f1")
    with pytest.raises(ValueError, match="not a row"):
        verdict_line(table.drop(index=R2MAE))


def test_demo_reduced_run_writes_table_and_umap(tmp_path):
    seeds = (0, 1, 2)
    table = run_demo(
        tmp_path, max_epochs=2, n_hidden=16, n_latent=4, n_cells=250, seeds=seeds, progress=False
    )
    assert list(table.index) == [R2MAE, SCVI, FIXED, LOGNORM, PCA]
    per_seed = [f"balanced_accuracy_seed{s}" for s in seeds]
    assert set(per_seed) <= set(table.columns)
    assert {f"macro_f1_seed{s}" for s in seeds} <= set(table.columns)
    scores = table[per_seed].to_numpy()
    assert ((scores > 0) & (scores <= 1)).all()
    # the mean and sd columns summarise the per-seed columns
    np.testing.assert_allclose(table["balanced_accuracy"], scores.mean(1))
    np.testing.assert_allclose(table["balanced_accuracy_sd"], scores.std(1, ddof=1))
    # every trained model ran three times; the baselines are not trained
    assert (table.loc[[R2MAE, SCVI, FIXED], "train_seconds"] > 0).all()
    assert (table.loc[[LOGNORM, PCA], "train_seconds"] == 0).all()
    # the seeds retrain the models: their scores differ between seeds
    assert table.loc[R2MAE, "balanced_accuracy_sd"] > 0
    # the verdict line reads the paired differences off the per-seed columns
    line = verdict_line(table)
    diff = table.loc[R2MAE, per_seed].to_numpy() - table.loc[SCVI, per_seed].to_numpy()
    se = diff.std(ddof=1) / np.sqrt(3)
    verdict = "exceeds 2 SE" if abs(diff.mean()) > 2 * se else "within 2 SE"
    assert line.startswith(f"R2MAE − scVI: {diff.mean():+.3f} ± {se:.3f} ({verdict}); ")
    assert line.count("R2MAE − ") == 4
    md = (tmp_path / "demo_results.md").read_text()
    assert line in md and md.count("|") > 30 and "± " in md
    saved = pd.read_csv(tmp_path / "demo_results.csv", index_col=0)
    np.testing.assert_allclose(saved[per_seed].to_numpy(), scores)
    png = tmp_path / "umap_r2mae.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seeds": ()}, "seeds"),
        ({"seeds": (0, 0)}, "repeat"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"n_cells": 10}, "n_cells"),
    ],
)
def test_demo_rejects_bad_arguments_before_training(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad", [["--max-epochs", "x"], ["--seeds", "a"]])
def test_demo_cli_rejects_bad_arguments(bad):
    with pytest.raises(SystemExit):
        main(bad)
