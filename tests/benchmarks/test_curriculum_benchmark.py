import runpy
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "curriculum.py"


def test_curriculum_benchmark_smoke(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT), run_name="curriculum_benchmark")["main"]
    table = main(
        [
            "--epochs", "3", "--n-hidden", "32", "--n-latent", "8",
            "--n-cells", "250", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert list(table.index) == ["R2MAE", "R2MAE + CL", "CL", "CL (k=0)"]
    for col in ["balanced_accuracy", "recon@0.1", "recon@0.3", "recon@0.5", "recon@0.7"]:
        values = table[col].to_numpy(dtype=float)
        assert np.isfinite(values).all() and (values <= 1).all()
    assert table.loc["R2MAE", "epoch_time_vs_r2mae"] == 1.0
    ratio = table["epoch_seconds"] / table.loc["R2MAE", "epoch_seconds"]
    np.testing.assert_allclose(table["epoch_time_vs_r2mae"], ratio)
    # every variant learned something: probe balanced accuracy above the 0.1 of chance over
    # the ten FACS-sorted populations
    assert (table["balanced_accuracy"] > 0.15).all()
    assert (tmp_path / "curriculum.csv").exists()
    assert "curriculum overhead" in capsys.readouterr().out
