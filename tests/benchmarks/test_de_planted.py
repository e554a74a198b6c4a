import numpy as np
import pandas as pd
import pytest

SCRIPT = "genomics/singlecell/de_planted.py"  # run by conftest.py's `script` fixture


def test_score_calls_counts_recall_and_false_discovery_proportion(script):
    score = script["score_calls"]
    planted = np.array([True, True, True, True, False, False, False, False, False, False])
    # 3 of 4 planted genes called, plus 2 null genes: recall 3/4, FDP 2/5
    called = np.array([True, True, True, False, True, True, False, False, False, False])
    assert score(called, planted) == {
        "n_planted": 4, "n_called": 5, "n_true": 3, "n_false": 2, "recall": 0.75, "fdp": 0.4,
    }  # fmt: skip
    # nothing called: no false discoveries, FDP 0 by convention
    none = score(np.zeros(10, bool), planted)
    assert (none["recall"], none["n_false"], none["fdp"]) == (0.0, 0, 0.0)
    # only null genes called
    assert score(~planted, planted)["fdp"] == 1.0
    with pytest.raises(ValueError, match="one length"):
        score(called[:5], planted)
    with pytest.raises(ValueError, match="boolean"):
        score(called.astype(int), planted)
    with pytest.raises(ValueError, match="marks no gene"):
        score(called, np.zeros(10, bool))
    index = [f"g{i}" for i in range(10)]
    with pytest.raises(ValueError, match="same genes"):
        score(pd.Series(called, index=index), pd.Series(planted, index=index[::-1]))


def test_ranking_auroc_and_evaluate_read_the_right_columns(script):
    auroc, evaluate = script["ranking_auroc"], script["evaluate"]
    planted = np.array([True, True, False, False, False])
    assert auroc([5.0, 4.0, 3.0, 2.0, 1.0], planted) == 1.0
    assert auroc([1.0, 2.0, 3.0, 4.0, 5.0], planted) == 0.0
    assert auroc([1.0, 3.0, 2.0, 4.0, 0.0], planted) == pytest.approx(3 / 6)

    genes = [f"g{i}" for i in range(5)]
    var = pd.DataFrame({"planted": planted, "true_log2fc": [2.0, -1.0, 0.0, 0.0, 0.0]}, index=genes)
    # a DE frame in another gene order: evaluate aligns it on the gene names
    change = pd.DataFrame(
        {
            "is_de_fdr_0.05": [True, False, True, False, False],
            "proba_de": [0.99, 0.2, 0.97, 0.1, 0.3],
            "lfc_mean": [1.8, 0.1, 0.3, 0.0, -0.1],
            "bayes_factor": [4.0, 0.0, -3.5, 2.9, -1.0],
        },
        index=["g0", "g2", "g1", "g3", "g4"],
    )
    out = evaluate(change, var, "change")
    assert (out["recall"], out["n_false"], out["fdp"]) == (1.0, 0, 0.0)
    assert out["auroc"] == 1.0
    assert out["spearman_planted"] == pytest.approx(1.0)  # 1.8 > 0.3 as 2 > -1
    vanilla = evaluate(change, var, "vanilla")  # |bayes factor| > 3 calls g0 and g1
    assert (vanilla["recall"], vanilla["n_false"]) == (1.0, 0)
    assert np.isnan(vanilla["spearman_planted"])
    wilcoxon = pd.DataFrame(
        {
            "pvals_adj": [0.001, 0.04, 0.2, 0.01, 0.9],
            "scores": [5.0, -4.0, 1.0, 3.0, 0.1],
            "logfoldchanges": [2.1, -0.8, 0.1, 0.4, 0.0],
        },
        index=genes,
    )
    out = evaluate(wilcoxon, var, script["WILCOXON_MODE"])
    assert (out["n_called"], out["recall"], out["n_false"]) == (3, 1.0, 1)
    assert out["fdp"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="lacks some genes"):
        evaluate(change.iloc[:4], var, "change")
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(change, var, "bayes")


def test_simulation_plants_the_fold_changes_and_keeps_the_rest_null(script):
    design = script["DESIGNS"]["batched"]
    adata = script["simulate_planted"](design, 0)
    var = adata.var
    assert adata.shape == (design.n_cells, design.n_genes)
    assert var["planted"].sum() == 2 * design.n_pairs
    up, down = var["planted_log2fc"] > 0, var["planted_log2fc"] < 0
    assert up.sum() == down.sum() == design.n_pairs
    assert var.loc[var["planted"], "planted_log2fc"].abs().between(0.5, 1.5).all()
    # the truth from the expected shares: planted genes keep their factor, null genes stay
    # far below the change-mode threshold of 0.25
    planted = var["planted"]
    np.testing.assert_allclose(
        var.loc[planted, "true_log2fc"], var.loc[planted, "planted_log2fc"], atol=0.1
    )
    assert var.loc[~planted, "true_log2fc"].abs().max() < 0.1
    # balanced strata: the same cell-type and batch counts in both groups
    table = pd.crosstab([adata.obs["batch"], adata.obs["cell_type"]], adata.obs["group"])
    assert (table["treated"] == table["control"]).all() and len(table) == 8
    # counts: integers, overdispersed, libraries vary, the deeper batch is deeper
    counts = adata.layers["counts"]
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    library = counts.sum(1)
    assert np.std(np.log(library)) > 0.3
    by_batch = pd.Series(library).groupby(adata.obs["batch"].to_numpy()).median()
    assert 1.2 < by_batch["batch1"] / by_batch["batch0"] < 1.8
    mean, variance = counts.mean(0), counts.var(0)
    assert np.median(variance / mean) > 1.5
    # the observed log fold change of the planted genes follows the planted one
    lognorm = np.log2(counts / library[:, None] * 1e4 + 1)
    treated = (adata.obs["group"] == "treated").to_numpy()
    observed = lognorm[treated].mean(0) - lognorm[~treated].mean(0)
    assert np.corrcoef(observed[planted], var.loc[planted, "planted_log2fc"])[0, 1] > 0.9
    # with few genes the balance matters: 6 of 60 genes changed 4-fold
    for seed in range(3):
        small = script["simulate_planted"](script["DESIGNS"]["small"], seed).var
        assert small["planted"].sum() == 6
        assert small.loc[~small["planted"], "true_log2fc"].abs().max() < 0.1
        assert small.loc[small["planted"], "true_log2fc"].abs().min() > 1.9
    # seeded
    again = script["simulate_planted"](design, 0)
    np.testing.assert_array_equal(again.layers["counts"], counts)


def test_de_planted_smoke(script, tmp_path, capsys):
    tables = script["main"](["--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results, truth = tables["results"], tables["truth"]
    model_methods = [m for m in script["METHODS"] if m != script["WILCOXON"]]
    # every model method in both modes, the Wilcoxon test once
    pairs = set(zip(results["method"], results["mode"], strict=True))
    assert pairs == {(m, mode) for m in model_methods for mode in script["MODES"]} | {
        (script["WILCOXON"], script["WILCOXON_MODE"])
    }
    assert len(results) == len(pairs)
    assert (results["n_planted"] == 4).all()
    assert results["recall"].between(0, 1).all() and results["fdp"].between(0, 1).all()
    assert (results["n_true"] + results["n_false"] == results["n_called"]).all()
    assert truth["max_abs_true_log2fc_null"].iloc[0] < 0.1

    # the planted 4-fold genes rank above every null gene with the point-mass samples, in
    # both modes, and the fold changes they estimate point the planted way
    point_mass = results[results["method"] == "R2MAE, 0 (point mass)"].set_index("mode")
    assert (point_mass["auroc"] == 1.0).all()
    assert point_mass.loc["change", "spearman_planted"] > 0.5
    wilcoxon = results[results["method"] == script["WILCOXON"]].iloc[0]
    assert wilcoxon["auroc"] == 1.0 and wilcoxon["recall"] == 1.0

    written = pd.read_csv(tmp_path / "de_planted.csv")
    pd.testing.assert_frame_equal(written, results, check_dtype=False)
    assert len(pd.read_csv(tmp_path / "truth.csv")) == 1
    assert (tmp_path / "tables.md").read_text().strip() in out
    assert "R2MAE, 0 (point mass)" in out
    figure = tmp_path / "de_planted.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
