"""Smoke tests of the linear-theory reproduction scripts (their --smoke mode)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "general" / "linear_theory"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"linear_theory_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(name, tmp_path):
    result = _load(name).main(["--smoke", "--out", str(tmp_path)])
    png, md = tmp_path / f"{name}.png", tmp_path / f"{name}.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "`mode` = smoke" in text
    return result, text


def test_fig1a_smoke(tmp_path):
    result, text = _run("fig1a_isotropic", tmp_path)
    assert set(result["max_rel_error"]) == {"over", "under"}
    ratios = np.array([row[-1] for row in result["rows"]])  # simulation / theory
    assert np.all(np.abs(ratios - 1) < 0.5)
    assert "sim / theory" in text


def test_fig1bcd_smoke(tmp_path):
    result, text = _run("fig1bcd_spiked", tmp_path)
    assert set(result["sim_optimum"]) == {0.2, 1.0}
    assert np.all(result["disparity"] > 1)  # the aligned signal is predicted more strongly
    assert "optimal ratio" in text


def test_fig1e_smoke(tmp_path):
    result, _ = _run("fig1e_general", tmp_path)
    optima = {(row[0], row[1]): row[3] for row in result["optima"]}
    for model in ("uniform", "beta", "latent"):
        assert optima[(model, 0.99)] >= optima[(model, 0.5)]


def test_fig1g_smoke(tmp_path):
    result, _ = _run("fig1g_two_plateaus", tmp_path)
    for _, best, risk, start, end in result["summary"]:
        assert start <= best <= end and risk < 1


def test_tables_smoke(tmp_path):
    result, text = _run("tables_5_9_r2mae", tmp_path)
    # the paper's headers: Table 5 compares with "MR 55%", Table 9 with "MR 45%"
    assert result["ranges"] == {"Table 5": (0.5, 0.6), "Table 9": (0.4, 0.5)}
    assert "| MR 55% |" in text and "| MR 45% |" in text
    # wins in the paper's printed numbers: 4, 4, 3 and 4 of 5 seeds
    assert result["paper_wins"] == {
        ("Table 5", "beta"): 4,
        ("Table 5", "latent"): 4,
        ("Table 9", "beta"): 3,
        ("Table 9", "latent"): 4,
    }
    assert "| 2 | 0.55 | 0.52 | 0.52 | 0.504 | yes |" in text  # Table 5, Beta, seed 2
    assert set(result["wins"]) == set(result["paper_wins"])
    assert all(0 <= w <= 2 for w in result["wins"].values())
    assert len(result["cells"]) == 4  # one setting x 2 tables x 2 models
    assert (tmp_path / "tables_5_9_r2mae_map.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "tables_5_9_r2mae_search.csv").read_text().splitlines()
    assert rows[0].startswith("table,model,quantile,n_over_d,noise_ratio,wins") and len(rows) == 5


def test_tables_paired_difference_on_an_easy_setting():
    # a weak signal (median eigenvalue) is best learnt with little masking: the best fixed
    # ratio is the grid's lowest, R2MAE U(0.5, 0.6) is clearly worse, U(0.4, 0.5) less so
    mod = _load("tables_5_9_r2mae")
    res = mod.compare("latent", 0.5, 0.5, 0.1, 12, 40, 8, mod.fixed_grid(0.1))
    np.testing.assert_allclose(res["grid"], [0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7])
    t5, t9 = (mod.table_stats(res, t) for t in ("Table 5", "Table 9"))
    assert t5["best_ratio"] == t9["best_ratio"] == 0.3 and t5["edge"]
    assert t5["middle_risk"] == res["risk"][4].mean()  # MR 55%
    assert t9["middle_risk"] == res["risk"][2].mean()  # MR 45%
    assert t5["diff"].mean() > t9["diff"].mean() > 0
    s5 = mod.summarise([t5])
    assert s5["wins"] == 0 and s5["z"] > 2
    # pairing: R2MAE U(0.4, 0.5) and MR 45% share data and uniforms, so the paired standard
    # error of their difference is well below the unpaired one
    r2, mid = res["risk"][-1], res["risk"][2]
    unpaired = np.sqrt((r2.var(ddof=1) + mid.var(ddof=1)) / r2.size)
    assert t9["diff_middle"].std(ddof=1) / np.sqrt(r2.size) < 0.7 * unpaired


def test_tables_summary_arithmetic():
    mod = _load("tables_5_9_r2mae")
    seeds = [
        {"diff": np.array([-1.0, 1.0, -2.0]), "diff_middle": np.array([-1.0]), "min_risk": 0.5,
         "edge": False},
        {"diff": np.array([1.0, 2.0, 3.0]), "diff_middle": np.array([1.0]), "min_risk": 0.7,
         "edge": True},
    ]  # fmt: skip
    s = mod.summarise(seeds)
    assert s["wins"] == 1 and s["beats_middle"] == 1 and s["edge"] == 1
    np.testing.assert_allclose(s["diff"], [-2 / 3, 2.0])
    se = np.array([np.std([-1, 1, -2], ddof=1), 1.0]) / np.sqrt(3)
    assert s["mean_diff_se"] == pytest.approx(np.sqrt(np.sum(se**2)) / 2)
    assert s["z"] == pytest.approx((2 / 3) / s["mean_diff_se"])
    assert s["min_risk"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "name",
    [
        "fig1a_isotropic",
        "fig1bcd_spiked",
        "fig1e_general",
        "fig1g_two_plateaus",
        "tables_5_9_r2mae",
    ],
)
def test_scripts_document_their_command(name):
    doc = _load(name).__doc__
    assert f"linear_theory/{name}.py [--quick] [--out DIR]" in doc
