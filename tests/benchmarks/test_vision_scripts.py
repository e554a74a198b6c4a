import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

VISION = Path(__file__).parents[2] / "benchmarks" / "general" / "vision"


def _main(name):
    return runpy.run_path(str(VISION / f"{name}.py"), run_name=name)["main"]


def _cpu_smoke(name, tmp_path, columns):
    """The table of ``name``'s smoke run on the CPU into ``tmp_path``, checked to have
    ``columns``."""
    table = _main(name)(["--mode", "smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert list(table.columns) == columns
    return table


def test_mlp_smoke(tmp_path):
    table = _main("mlp_masked_pixels")(["--mode", "smoke", "--out", str(tmp_path)])
    assert list(table.model.unique()) == ["insufficient 8-16", "sufficient 64-16"]
    assert sorted(table.mask_ratio.unique()) == [0.2, 0.8]
    assert ((table.probe_error > 0) & (table.probe_error < 0.9)).all()  # better than chance
    # entropy of 16 sum-normalised singular values lies in (0, log 16]
    assert ((table.effective_rank > 0) & (table.effective_rank <= np.log(16) + 1e-9)).all()
    best = table.groupby("regime").probe_error.min()
    assert best["sufficient"] < best["insufficient"]  # the wide encoder probes better
    for name in (
        "mlp_masked_pixels.csv",
        "mlp_masked_pixels.md",
        "fig2a_probe_error.png",
        "fig2d_effective_rank.png",
    ):
        assert (tmp_path / name).exists()
    assert "error_slope" in (tmp_path / "mlp_masked_pixels.md").read_text()


def test_mlp_full_mode_needs_mnist(tmp_path):
    with pytest.raises(SystemExit):
        _main("mlp_masked_pixels")(["--mode", "full", "--out", str(tmp_path)])


def test_unet_smoke(tmp_path):
    columns = ["base_channels", "mask_ratio", "recon_mse", "masked_mse", "probe_accuracy"]
    table = _cpu_smoke("unet_masked", tmp_path, columns)
    assert len(table) == 2
    assert ((table.recon_mse > 0) & (table.recon_mse < 0.25)).all()
    assert ((table.probe_accuracy >= 0) & (table.probe_accuracy <= 1)).all()
    assert (tmp_path / "fig2b_unet.png").exists() and (tmp_path / "unet_masked.md").exists()


def test_vit_mae_smoke_table1_layout(tmp_path):
    columns = ["MR 0.75 (default)", "MR 0.9", "MR 0.5", "MDLM", "Dynamic MR", "R2MAE"]
    table = _cpu_smoke("vit_mae", tmp_path, columns)
    assert list(table.index) == [
        "Fine-tune Top1 Acc.",
        "Fine-tune Top5 Acc.",
        "Linear-probe Top1 Acc.",
        "Linear-probe Top5 Acc.",
    ]
    assert ((table >= 0) & (table <= 100)).all().all()
    assert (table.loc["Fine-tune Top5 Acc."] >= table.loc["Fine-tune Top1 Acc."]).all()
    assert (table.loc["Linear-probe Top1 Acc."] > 20).all()  # 10 classes: chance is ~10%
    runs = pd.read_csv(tmp_path / "vit_mae_runs.csv").set_index("scheme")
    assert runs.loc["MR 0.75 (default)", "mean_ratio"] == pytest.approx(0.75)
    assert 0.6 < runs.loc["Dynamic MR", "mean_ratio"] < 0.9
    assert 0.6 <= runs.loc["R2MAE", "mean_ratio"] < 0.9
    assert (tmp_path / "table1_vit_mae.png").exists()
