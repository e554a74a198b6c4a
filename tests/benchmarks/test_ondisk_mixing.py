import math
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "ondisk_mixing.py"


def test_ondisk_mini_batches_mix_donors_of_a_donor_sorted_file(capsys, tmp_path):
    main = runpy.run_path(str(SCRIPT), run_name="ondisk_mixing")["main"]
    table = main(["--smoke", "--out", str(tmp_path)])
    assert list(table.index) == ["old", "new", "in_memory"]
    # a full shuffle of 20 equal donors: 128 cells hold 19.97 distinct donors on average
    assert table.loc["in_memory", "donors_per_batch"] > 19.5
    # the defaults reach the target: at least 80 % of the in-memory path's mixing
    assert table.loc["new", "donors_vs_in_memory"] >= 0.8
    # the old chunking on the same file falls short (the file is hard enough to tell)
    assert table.loc["old", "donors_vs_in_memory"] < 0.75
    assert (table["n_batches"] > 0).all()
    assert all(r > 0 and math.isfinite(r) for r in table["cells_per_s"])
    assert table.loc["new", "speed_vs_old"] > 0
    assert (tmp_path / "ondisk_mixing.csv").exists()
    assert (tmp_path / "ondisk_mixing.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "new / in-memory distinct donors per mini-batch" in out


def test_ondisk_mixing_rejects_bad_sizes(tmp_path):
    main = runpy.run_path(str(SCRIPT), run_name="ondisk_mixing")["main"]
    with pytest.raises(ValueError, match="n_donors"):
        main(["--smoke", "--donors", "0", "--out", str(tmp_path)])
