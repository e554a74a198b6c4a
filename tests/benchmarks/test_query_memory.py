import math
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "query_memory.py"


def test_query_memory_benchmark_measures_both_queries_and_the_latency(capsys, tmp_path):
    main = runpy.run_path(str(SCRIPT), run_name="query_memory")["main"]
    memory, latency = main(
        [
            "--quick",
            "--sizes",
            "4000",
            "--genes",
            "300",
            "--hidden",
            "16",
            "--latent",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    assert sorted(memory["query"]) == ["complete", "lacking"]
    rows = memory.set_index("query")
    # the lacking query holds 70 % of the complete one's genes, hence of its stored counts
    share = rows.loc["lacking", "counts_gb"] / rows.loc["complete", "counts_gb"]
    assert 0.6 < share < 0.8
    assert rows["finite"].all() and (rows["peak_above_counts_gb"] > 0).all()
    # memory follows the measured counts: no more for the query that lacks genes
    ratio = (
        rows.loc["lacking", "peak_above_counts_gb"] / rows.loc["complete", "peak_above_counts_gb"]
    )
    assert ratio < 2
    row = latency.iloc[0]
    assert (row["n_cells"], row["n_asked"]) == (4000, 100) and row["same_latent"]
    for key in ("first_ratio", "warm_ratio", "full_check_s_per_million"):
        assert row[key] > 0 and math.isfinite(row[key])
    assert (tmp_path / "query_memory.png").stat().st_size > 0
    assert (tmp_path / "query_memory.csv").exists() and (tmp_path / "query_latency.csv").exists()
    out = capsys.readouterr().out
    assert "lacking/complete" in out and "first call" in out and "per million cells" in out


def test_query_memory_rejects_bad_arguments(tmp_path):
    main = runpy.run_path(str(SCRIPT), run_name="query_memory")["main"]
    with pytest.raises(ValueError, match="--missing"):
        main(["--quick", "--missing", "1.5", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--n-asked"):
        main(["--sizes", "50", "--n-asked", "100", "--out", str(tmp_path)])
