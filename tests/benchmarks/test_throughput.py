import math
import runpy
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "throughput.py"


def test_throughput_benchmark_times_every_mode_and_writes_the_figure(capsys, tmp_path):
    main = runpy.run_path(str(SCRIPT), run_name="throughput")["main"]
    table = main(
        [
            "--quick",
            "--sizes",
            "700x40",
            "--widths",
            "16/4",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert set(table["mode"]) == {"fast", "paper_loss", "scvi_loader", "scVI", "floor", "on_disk"}
    assert all(r > 0 and math.isfinite(r) for r in table["cells_per_s"])
    assert (table["peak_rss_gb"] > table["csr_gb"]).all()
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "throughput.csv").exists()
    # the printed ratios are the fast path's rate over each baseline's, per configuration
    wide = runpy.run_path(str(SCRIPT), run_name="throughput")["ratio_table"](table)
    rates = table.set_index("mode")["cells_per_s"]
    assert wide["fast/floor"].iloc[0] == rates["fast"] / rates["floor"]
    assert wide["fast/scVI"].iloc[0] == rates["fast"] / rates["scVI"]
    assert wide["fast/paper_loss"].iloc[0] == rates["fast"] / rates["paper_loss"]
    out = capsys.readouterr().out
    assert "fast/floor" in out and "fast/scVI" in out and "peak resident memory" in out


def test_repeats_go_round_the_modes_and_the_ratios_use_the_fastest(tmp_path):
    namespace = runpy.run_path(str(SCRIPT), run_name="throughput")
    args = ["--quick", "--sizes", "500x30", "--widths", "16/4", "--threads", "1"]
    args += ["--modes", "fast", "floor", "--repeats", "3", "--skip-warm-up"]
    table = namespace["main"]([*args, "--out", str(tmp_path)])
    # each repeat times every mode once, in turn
    assert list(zip(table["repeat"], table["mode"], strict=True)) == [
        (r, m) for r in range(3) for m in ("fast", "floor")
    ]
    ratio_table = namespace["ratio_table"]
    for repeats, aggregate in (("max", "max"), ("median", "median")):
        wide = ratio_table(table, repeats=repeats)
        rates = table.groupby("mode")["cells_per_s"].agg(aggregate)
        assert wide["fast"].iloc[0] == rates["fast"]
        assert wide["fast/floor"].iloc[0] == rates["fast"] / rates["floor"]
