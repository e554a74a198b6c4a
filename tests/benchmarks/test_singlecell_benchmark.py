import numpy as np
import pandas as pd
import pytest

SCRIPT = "genomics/singlecell/run.py"  # run by conftest.py's `script` fixture


def test_quick_smoke_writes_tables_and_figure(script, tmp_path, capsys):
    methods = ["Normalized exp.", "scVI", "MAE (MR 25%)", "R2MAE (Ours)"]
    table = script["main"](["--smoke", "--out", str(tmp_path), "--methods", *methods])
    assert list(table.index) == methods
    metric_cols = [c for c in table.columns if c[0] != "Avg performance"]
    assert metric_cols == [
        ("Cell type", "BAcc."), ("Cell type", "F1"), ("Disease", "AUROC cell"),
        ("Disease", "AUROC donor"), ("Age", "Spearman cell"), ("Age", "Spearman donor"),
    ]  # fmt: skip
    values = table[metric_cols].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
    # Score is the mean of the metrics, Rank the mean rank across metrics
    np.testing.assert_allclose(table[("Avg performance", "Score")], values.mean(1))
    ranks = pd.DataFrame(values).rank(ascending=False, method="average").mean(1)
    np.testing.assert_allclose(table[("Avg performance", "Rank")], ranks)
    long = pd.read_csv(tmp_path / "metrics.csv")
    recon = long[long["task"] == "Reconstruction"]
    # the generative models (not the expression baseline) get reconstruction scores at 5 ratios
    assert set(recon["method"]) == {"scVI", "MAE (MR 25%)", "R2MAE (Ours)"}
    assert len(recon) == 3 * 5 * 2  # methods x ratios x datasets
    for name in (
        "probing.md",
        "reconstruction_pbmc68k.md",
        "reconstruction_synthetic.md",
        "singlecell.png",
        "probing.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0
    out = capsys.readouterr().out
    assert "[4/4] R2MAE (Ours) on synthetic" in out
    assert "Mean rank among the masking schemes only" in out


def test_ranking_helpers(script):
    long = pd.DataFrame(
        {
            "method": ["A", "B", "A", "B"],
            "task": ["T", "T", "T", "T"],
            "metric_label": ["BAcc.", "BAcc.", "F1", "F1"],
            "value": [0.9, 0.5, 0.4, 0.6],
        }
    )
    table = script["probing_table"](
        long, [{"name": "T", "metrics": ["balanced_accuracy", "macro_f1"]}], ["A", "B"]
    )
    np.testing.assert_allclose(table[("Avg performance", "Score")], [0.65, 0.55])
    np.testing.assert_allclose(table[("Avg performance", "Rank")], [1.5, 1.5])


def test_census_config_fails_clearly_without_census(script, tmp_path):
    with pytest.raises(SystemExit, match="cannot reach the CELLxGENE Census"):
        script["main"](
            ["--config", "hlca", "--census-uri", str(tmp_path / "nowhere"),
             "--census-timeout", "0.5", "--out", str(tmp_path)]
        )  # fmt: skip


def test_unknown_method_or_config_is_rejected(script, tmp_path):
    with pytest.raises(SystemExit):
        script["main"](["--quick", "--methods", "BERT", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown configuration"):
        script["main"](["--config", "nope", "--out", str(tmp_path)])
