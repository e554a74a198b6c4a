"""The benchmarks' shared command-line, table and figure tail (benchmarks/_common.py)."""

import logging
import runpy
from pathlib import Path

import pandas as pd
import pytest

tail = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "_common.py"))


def test_mode_parser_flags_are_exclusive_and_name_the_mode():
    parser = tail["mode_parser"]("demo", quick="q help", smoke="s help")
    parser.add_argument("--out", default=None)
    assert tail["mode_name"](parser.parse_args([])) == "full"
    assert tail["mode_name"](parser.parse_args(["--quick"])) == "quick"
    assert tail["mode_name"](parser.parse_args(["--smoke", "--out", "x"])) == "smoke"
    with pytest.raises(SystemExit):
        parser.parse_args(["--quick", "--smoke"])
    help_text = parser.format_help()
    assert "q help" in help_text and "s help" in help_text


def test_write_results_writes_tables_text_and_figure(tmp_path, capsys):
    out = tail["output_dir"](tmp_path / "a" / "b")
    assert out.is_dir()
    tables = {"runs": pd.DataFrame({"x": [1, 2]}), "truth": pd.DataFrame({"y": [0.5]})}
    drawn = []

    def plot(path):
        plt = tail["pyplot"]()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        tail["save_figure"](fig, path)
        drawn.append(path)

    written = tail["write_results"](out, tables, "## table\n", figure=("fig.png", plot))
    assert written == ["runs.csv", "truth.csv", "tables.md", "fig.png"]
    # CSVs without the index, the text once with one final newline, the PNG drawn at its path
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), tables["runs"])
    assert list(pd.read_csv(out / "truth.csv").columns) == ["y"]
    assert (out / "tables.md").read_text() == "## table\n"
    assert drawn == [out / "fig.png"]
    assert (out / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "## table" in printed and "runs.csv, truth.csv, tables.md, fig.png" in printed


def test_quiet_sets_the_library_loggers_to_error():
    logger = logging.getLogger("lightning.pytorch")
    before = logger.level
    try:
        logger.setLevel(logging.INFO)
        tail["quiet"]()
        assert logger.level == logging.ERROR
        tail["quiet"](("a_benchmark_logger",))
        assert logging.getLogger("a_benchmark_logger").level == logging.ERROR
    finally:
        logger.setLevel(before)
