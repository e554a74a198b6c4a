import math
import runpy
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "speed_vs_scvi.py"


def test_speed_benchmark_times_both_models(capsys):
    main = runpy.run_path(str(SCRIPT), run_name="speed_vs_scvi")["main"]
    table = main(["--epochs", "2", "--n-hidden", "16", "--n-latent", "4", "--no-probe"])
    assert set(table.index) == {"R2MAEModel", "scVI"}
    assert all(t > 0 and math.isfinite(t) for t in table["epoch_seconds"])
    out = capsys.readouterr().out
    assert "epoch time ratio R2MAEModel / scVI" in out
