"""``scripts/readme_demo_table.py`` copies the demo's results into the marked README section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
SCRIPT = REPO / "scripts" / "readme_demo_table.py"

FAKE_RESULTS = """\
| representation   | balanced accuracy   | seed0   |
|:-----------------|:--------------------|:--------|
| R2MAE            | 0.111 ± 0.001       | 0.110   |
| scVI, same widths| 0.222 ± 0.002       | 0.220   |

Paired differences of balanced accuracy over seeds (mean ± SE): R2MAE − scVI: -0.111 ± 0.001 \
(exceeds 2 SE)
"""

README = """\
# Title

Text before the table stays.

<!-- demo-table:start -->
| representation | balanced accuracy |
| --- | --- |
| R2MAE | 0.662 ± 0.006 |

R2MAE is behind scVI.
<!-- demo-table:end -->

Text after the table stays.
"""


def _load_script():
    spec = importlib.util.spec_from_file_location("readme_demo_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script():
    return _load_script()


@pytest.fixture
def files(tmp_path):
    results = tmp_path / "demo_results.md"
    results.write_text(FAKE_RESULTS, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    return results, readme


def _args(results, readme, *extra):
    return ["--results", str(results), "--files", str(readme), *extra]


def test_rewrite_replaces_the_marked_section_only(script, files):
    results, readme = files
    assert script.main(_args(results, readme)) == 0
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(script.START)
    block, tail = rest.split(script.END)
    assert head == README.split(script.START)[0]
    assert tail == README.split(script.END)[1]
    # the new table and verdict, nothing of the stale section
    assert "| R2MAE            | 0.111 ± 0.001       | 0.110   |" in block
    assert "| scVI, same widths| 0.222 ± 0.002       | 0.220   |" in block
    assert "R2MAE − scVI: -0.111 ± 0.001 (exceeds 2 SE)" in block
    assert "0.662" not in text and "R2MAE is behind scVI" not in text
    # a second run changes nothing, and the check passes
    assert script.main(_args(results, readme)) == 0
    assert readme.read_text(encoding="utf-8") == text
    assert script.main(_args(results, readme, "--check")) == 0


def test_check_fails_on_a_stale_readme_and_leaves_it(script, files, capsys):
    results, readme = files
    assert script.main(_args(results, readme, "--check")) == 1
    assert readme.read_text(encoding="utf-8") == README
    assert "out of date" in capsys.readouterr().err
    # up to date once rewritten; stale again when the results change
    script.main(_args(results, readme))
    assert script.main(_args(results, readme, "--check")) == 0
    results.write_text(FAKE_RESULTS.replace("0.111 ± 0.001", "0.333 ± 0.003"), encoding="utf-8")
    assert script.main(_args(results, readme, "--check")) == 1


def test_missing_results_and_markers_are_errors(script, files, tmp_path):
    results, readme = files
    assert script.main(_args(tmp_path / "absent.md", readme)) == 2
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="exactly one"):
        script.main(_args(results, readme))
    results.write_text("no table here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no markdown table"):
        script.read_results(results)


def test_readme_and_benchmark_page_hold_the_same_generated_section(script):
    """Both pages carry one marked section, with the same generated text."""
    blocks = []
    for path in script.DEFAULT_TARGETS:
        text = (REPO / path).read_text(encoding="utf-8")
        assert text.count(script.START) == 1 and text.count(script.END) == 1, path
        blocks.append(text.split(script.START)[1].split(script.END)[0])
    assert blocks[0] == blocks[1]
    assert "generated from results/demo/demo_results.md" in blocks[0]
