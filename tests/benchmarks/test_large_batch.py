import runpy
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "large_batch.py"


def test_large_batch_sweep_measures_the_probe_at_each_size_and_rule(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT), run_name="large_batch")["main"]
    table = main(
        [
            "--quick",
            "--cells-per-donor", "40",
            "--batch-sizes", "128", "256",
            "--rules", "linear",
            "--epochs", "1",
            "--n-hidden", "16",
            "--n-latent", "4",
            "--probe-cells", "160",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    # batch 128 always runs the paper's lr (every rule gives it), once
    assert list(zip(table["batch_size"], table["rule"], strict=True)) == [
        (128, "constant"),
        (256, "linear"),
    ]
    assert table["lr"].tolist() == [1e-3, 2e-3]  # linear: 1e-3 x 256 / 128
    assert table[["probe_cell_type", "probe_disease"]].stack().between(0, 1).all()
    assert (table["steps"] > 0).all()
    assert (tmp_path / "large_batch.png").stat().st_size > 0
    assert "probe_cell_type" in capsys.readouterr().out
