"""Every tutorial is stored without outputs and runs top to bottom in its small configuration."""

import subprocess
import sys

import nbformat
import pytest

from .conftest import NOTEBOOKS, TUTORIALS

REPO = TUTORIALS.parent

#: a line each tutorial must print or show, proof that its key step ran to the end
MUST_SHOW = {
    "01_quickstart.ipynb": [
        "reloaded model gives the same embedding: True",
        "Leiden clusters against the FACS labels",
        "balanced accuracy",
        "of the top 15 genes are shared",
    ],
    "02_masking_range.ipynb": ["suggested mask_range", "probe balanced accuracy"],
    "03_census.ipynb": ["test donors:", "disease: AUROC (donors)", "R2MAE (out of core)"],
    "04_masking_core.ipynb": ["ratio drawn for this mini-batch", "missense AUROC"],
    "05_pretrained_query.ipynb": [
        "label transfer balanced accuracy",
        "accuracy of the 50% most certain cells",
        "(not in the reference) marked unknown",
        "reference weights unchanged after training the query: True",
        "imputed genes; per-cell Pearson r",
        "zero-shot embedding of the query: (200,",
        "ValueError:",
    ],
    "06_batch_integration.ipynb": [
        "batch_correction: mmd",
        "Leiden clusters against the FACS labels",
        "Batch correction",
        "R2MAE none + Harmony",
        "probe balanced accuracy",
    ],
}


def test_every_listed_tutorial_exists():
    assert set(MUST_SHOW) <= set(NOTEBOOKS), f"tutorials found: {NOTEBOOKS}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_stripped_and_has_a_parameter_cell(name):
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        f"{name} has outputs; run `python scripts/strip_notebooks.py tutorials/*.ipynb`"
    )
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_strip_script_check_mode_flags_outputs(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=3)])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"})]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    script = [sys.executable, str(REPO / "scripts" / "strip_notebooks.py")]
    assert subprocess.run([*script, "--check", str(path)], capture_output=True).returncode == 1
    assert subprocess.run([*script, str(path)], capture_output=True).returncode == 0
    assert subprocess.run([*script, "--check", str(path)], capture_output=True).returncode == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None and cell.source == "1 + 1"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
            parts.append(out.get("data", {}).get("text/html", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_top_to_bottom(run_notebook, name):
    path, seconds = run_notebook(name)
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a code cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{name} shows {len(images)} figures"
    text = "\n".join(_text(c) for c in code)
    for needle in MUST_SHOW.get(name, []):
        assert needle in text, f"{name} never shows {needle!r}"
    print(f"{name}: executed in {seconds:.0f} s")
