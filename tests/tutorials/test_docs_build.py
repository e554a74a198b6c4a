"""The documentation builds with warnings as errors and shows the API, tutorials and figures.

The build runs on a copy of ``docs/`` in a temporary folder (the repository's ``docs/`` is never
written to), with ``SCR2MAE_DOCS_NOTEBOOKS`` pointing at the tutorials executed once per session
by the ``run_notebook`` fixture, so the build renders them without running them again.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
DOCS = REPO / "docs"
TUTORIALS = REPO / "tutorials"
SUBPACKAGES = (
    "scr2mae.masking",
    "scr2mae.model",
    "scr2mae.data",
    "scr2mae.evaluation",
    "scr2mae.theory",
    "scr2mae.integrations.transformers",
)
FIGURES = (
    "fig1a_isotropic.png",
    "fig1bcd_spiked.png",
    "fig1e_general.png",
    "fig1g_two_plateaus.png",
    "fig2a_probe_error.png",
    "fig2d_effective_rank.png",
)


def public_names() -> list[str]:
    """Full name of the API page of every public name (from the ``__all__`` lists).

    Objects a subpackage re-exports at the top level (``scr2mae.model.R2MAEModel``) are
    documented once, under their top-level name; subpackages themselves get an API section.
    """
    import scr2mae

    pages = [
        f"scr2mae.{name}"
        for name in scr2mae.__all__
        if not inspect.ismodule(getattr(scr2mae, name))
    ]
    for modname in SUBPACKAGES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            top_level = name in scr2mae.__all__ and getattr(scr2mae, name) is obj
            pages.append(f"scr2mae.{name}" if top_level else f"{modname}.{name}")
    return sorted(set(pages))


def autosummary_entries(text: str) -> set[str]:
    """Full names listed in the ``autosummary`` blocks of a MyST page with ``eval-rst`` blocks."""
    entries, module, in_block = set(), None, False
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.match(r"\.\. currentmodule:: (\S+)", stripped):
            module = match.group(1)
        if stripped.startswith(".. autosummary::"):
            in_block = True
            continue
        if in_block:
            if not stripped or stripped.startswith(":"):
                continue
            if line.startswith("   ") and not stripped.startswith(".."):
                entries.add(f"{module}.{stripped.lstrip('~')}")
                continue
            in_block = False
    return entries


def test_every_public_name_is_listed_in_api_md():
    listed = autosummary_entries((DOCS / "api.md").read_text(encoding="utf-8"))
    missing = [name for name in public_names() if name not in listed]
    assert not missing, f"public names missing from docs/api.md: {missing}"
    assert len(public_names()) > 80  # the lists were really read


def test_every_subpackage_has_an_api_section():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for modname in SUBPACKAGES:
        assert f".. automodule:: {modname}" in text


def test_figures_are_small_and_referenced():
    method = (DOCS / "method.md").read_text(encoding="utf-8")
    for name in FIGURES:
        path = DOCS / "_static" / "figures" / name
        assert path.is_file(), f"{path} is missing: run `make docs-figures`"
        assert path.stat().st_size < 300_000
        assert f"_static/figures/{name}" in method


@pytest.fixture(scope="module")
def executed(run_notebook) -> Path:
    """Folder with every tutorial, executed (empty while there are no tutorials)."""
    return run_notebook.all_executed()


@pytest.fixture(scope="module")
def built_docs(executed, tmp_path_factory) -> Path:
    """Build a copy of ``docs/`` with the executed tutorials; return the HTML folder."""
    work = tmp_path_factory.mktemp("docs_build")
    source = work / "docs"
    generated = {"_build", "generated", "tutorials"}  # made by the build, never copied
    shutil.copytree(
        DOCS,
        source,
        ignore=lambda folder, names: [n for n in names if Path(folder) == DOCS and n in generated],
    )
    html = work / "out" / "html"
    env = dict(os.environ, SCR2MAE_DOCS_NOTEBOOKS=str(executed), OMP_NUM_THREADS="1")
    env.pop("SCR2MAE_REPO", None)
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    result = subprocess.run(
        [*command, str(source), str(html)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (
        f"sphinx failed ({result.returncode}):\n{result.stderr}\n{result.stdout[-3000:]}"
    )
    copied = sorted(p.name for p in (source / "tutorials").glob("*.ipynb"))
    assert copied == sorted(p.name for p in executed.glob("*.ipynb"))
    # the tutorials were executed once, by the fixture; the build only renders them
    reruns = [line for line in result.stdout.splitlines() if "Executing notebook" in line]
    assert not reruns, f"the docs build executed notebooks again: {reruns}"
    return html


def test_docs_build_has_the_pages(built_docs):
    index = (built_docs / "index.html").read_text(encoding="utf-8")
    assert "setup_anndata" in index and "X_r2mae" in index  # the four-line usage
    for page in ("installation", "method", "tutorials", "api", "benchmarks", "changelog"):
        assert (built_docs / f"{page}.html").is_file(), page
        assert f'href="{page}.html"' in index, f"{page} is not in the index's toctree"


def test_docs_build_documents_every_public_name(built_docs):
    missing = [
        name for name in public_names() if not (built_docs / "generated" / f"{name}.html").is_file()
    ]
    assert not missing, f"no API page for {missing}"
    model = (built_docs / "generated" / "scr2mae.R2MAEModel.html").read_text(encoding="utf-8")
    assert "get_latent_representation" in model and "mask_strategy" in model
    constant = (built_docs / "generated" / "scr2mae.masking.MASKING_STRATEGIES.html").read_text(
        encoding="utf-8"
    )
    assert "r2mae_dynamic" in constant and "dict() -&gt; new empty dictionary" not in constant
    api = (built_docs / "api.html").read_text(encoding="utf-8")
    for modname in SUBPACKAGES:
        assert f'id="module-{modname}"' in api, modname


def test_docs_build_shows_the_figures(built_docs):
    method = (built_docs / "method.html").read_text(encoding="utf-8")
    for name in FIGURES:
        assert re.search(rf'<img[^>]+src="_images/{re.escape(name)}"', method), name
        assert (built_docs / "_images" / name).is_file()
    assert "tables_5_9_r2mae.png" in (built_docs / "benchmarks.html").read_text(encoding="utf-8")


def _has_image_output(notebook: Path) -> bool:
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    outputs = [out for cell in cells if cell.cell_type == "code" for out in cell.outputs]
    return any("image/png" in out.get("data", {}) for out in outputs)


def test_docs_build_renders_every_tutorial_with_outputs(built_docs, executed):
    notebooks = sorted(TUTORIALS.glob("*.ipynb"))
    listing = (built_docs / "tutorials.html").read_text(encoding="utf-8")
    if not notebooks:
        assert "No tutorial notebooks were found" in listing
    for notebook in notebooks:
        page = built_docs / "tutorials" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        assert f'href="tutorials/{notebook.stem}.html"' in listing, notebook.name
        text = page.read_text(encoding="utf-8")
        assert 'class="cell_output' in text, f"{notebook.name} shows no outputs"
        if _has_image_output(executed / notebook.name):
            assert re.search(r'<img[^>]+src="\.\./_images/', text), f"{notebook.name}: no plot"
