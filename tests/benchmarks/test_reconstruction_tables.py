import numpy as np
import pandas as pd
import pytest

SCRIPT = "genomics/singlecell/reconstruction_tables.py"  # run by conftest.py's `script` fixture


def test_reconstruction_tables_smoke(script, tmp_path):
    out = script["main"](["--smoke", "--out", str(tmp_path)])
    scores, probes = out["scores"], out["probes"]
    ref, fixed = script["REFERENCE"], "fixed 0.25"
    # 1 seed x 2 models x 5 ratios, every score a correlation
    assert len(scores) == 10 and set(scores["model"]) == {ref, fixed}
    assert sorted(set(scores["ratio"])) == [0.1, 0.2, 0.3, 0.5, 0.7]
    assert ((scores["score"] > -1) & (scores["score"] <= 1)).all()
    assert probes["probe_bacc"].between(0, 1).all() and (probes["train_s"] > 0).all()
    # held-out cells: ~20% of the 250 cells, never trained on
    assert (probes["n_train"] + probes["n_test"] == 250).all()
    assert (probes["n_test"] / 250).between(0.15, 0.25).all()
    # with one fixed model the gap is the difference of the two columns at each ratio
    wide = scores.pivot_table(index="ratio", columns="model", values="score")
    gaps = script["gap_table"](scores, ref, [fixed])
    np.testing.assert_allclose(gaps["gap"], wide[ref] - wide[fixed])
    assert (gaps["best_fixed"] == fixed).all() and gaps["gap_se"].isna().all()
    saved = pd.read_csv(tmp_path / "scores.csv")
    np.testing.assert_allclose(saved["score"], scores["score"])
    md = (tmp_path / "tables.md").read_text()
    assert "within 0.008" in md and "Table 8 (SEA-AD): fixed 0.5 | 0.744" in md
    assert f"{wide.loc[0.7, ref]:.3f}" in md
    png = tmp_path / "reconstruction_tables.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gap_table_picks_best_fixed_and_pairs_seeds(script):
    # two fixed ratios; at 0.1 "fixed 0.1" has the higher mean, at 0.7 "fixed 0.5"
    rows = []
    values = {
        (0.1, "R2MAE U(0.1, 0.5)"): [0.80, 0.82, 0.78],
        (0.1, "fixed 0.1"): [0.81, 0.80, 0.79],
        (0.1, "fixed 0.5"): [0.70, 0.71, 0.69],
        (0.7, "R2MAE U(0.1, 0.5)"): [0.60, 0.63, 0.61],
        (0.7, "fixed 0.1"): [0.50, 0.52, 0.51],
        (0.7, "fixed 0.5"): [0.62, 0.64, 0.63],
    }
    for (ratio, model), per_seed in values.items():
        for seed, score in enumerate(per_seed):
            rows.append({"dataset": "d", "seed": seed, "model": model, "ratio": ratio})
            rows[-1]["score"] = score
    gaps = script["gap_table"](pd.DataFrame(rows), "R2MAE U(0.1, 0.5)", ["fixed 0.1", "fixed 0.5"])
    assert list(gaps["best_fixed"]) == ["fixed 0.1", "fixed 0.5"]
    # 0.1: differences -0.01, 0.02, -0.01 -> mean 0, SE sd/sqrt(3)
    assert gaps.loc[0.1, "gap"] == pytest.approx(0.0, abs=1e-12)
    assert gaps.loc[0.1, "gap_se"] == pytest.approx(np.std([-0.01, 0.02, -0.01], ddof=1) / 3**0.5)
    # 0.7: differences -0.02, -0.01, -0.02
    assert gaps.loc[0.7, "gap"] == pytest.approx(-0.05 / 3)
    assert gaps.loc[0.7, "gap_se"] == pytest.approx(np.std([-0.02, -0.01, -0.02], ddof=1) / 3**0.5)
    with pytest.raises(ValueError, match="fixed-ratio"):
        script["gap_table"](pd.DataFrame(rows), "R2MAE U(0.1, 0.5)", ["fixed 0.7"])


def test_paper_gaps_and_split(script):
    gaps = script["paper_gaps"]()
    # Table 8 at 70%: R2MAE 0.752 against fixed 0.5's 0.760; Table 7: 0.826 against 0.830
    assert gaps.loc[0.7, "Table 8 (SEA-AD)"] == pytest.approx(-0.008)
    assert gaps.loc[0.7, "Table 7 (HLCA)"] == pytest.approx(-0.004)
    assert gaps.loc[0.1, "Table 7 (HLCA)"] == pytest.approx(0.003)
    types = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20 + ["d"])
    train, test = script["split_cells"](types, 0, 0.2)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(types)
    assert len(test) == 20 and (types[test] == "a").sum() == 10  # stratified
    assert 100 in train  # a type with one cell stays in training
    again, _ = script["split_cells"](types, 0, 0.2)
    other, _ = script["split_cells"](types, 1, 0.2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


@pytest.mark.parametrize(
    "bad",
    [
        ["--smoke", "--test-fraction", "1.5"],
        ["--smoke", "--models", "fixed 0.25"],
        ["--smoke", "--epochs", "0"],
        ["--smoke", "--seeds", "0", "0"],
        ["--smoke", "--ratios", "0"],
    ],
)
def test_reconstruction_tables_rejects_bad_options(script, bad, tmp_path):
    with pytest.raises(SystemExit):
        script["main"]([*bad, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
