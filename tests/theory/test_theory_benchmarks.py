"""Smoke tests of the linear-theory reproduction scripts (their --smoke mode)."""

import importlib.util
import re
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
    assert len(result["wins"]) == 4
    assert all(0 <= w <= 2 for w in result["wins"].values())
    assert all(0 <= w <= 2 for w in result["beats_middle"].values())
    verdict = r"beats the best fixed ratio in \d of 2 seeds and the middle ratio in \d of 2"
    assert len(re.findall(verdict, text)) == 4


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
