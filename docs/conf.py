"""Sphinx configuration of the scr2mae documentation (myst-nb, scverse style).

Build with ``make docs``, i.e. ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Nothing is fetched from the network at build time (no intersphinx).

Where things come from
----------------------
* **The tutorials** are the ``*.ipynb`` files of the folder named by ``$SCR2MAE_DOCS_NOTEBOOKS``
  (default: ``<repo>/tutorials``). At configuration time they are copied into ``tutorials/``
  next to this file (a generated, git-ignored folder, emptied first so that no stale copy
  survives) and listed by the glob toctree of ``tutorials.md``, so a new notebook appears
  without editing any page. Without any notebook that toctree is replaced by a sentence.
* **Execution**: ``nb_execution_mode = "auto"``. Notebooks stored without outputs are executed
  by the build (in a temporary working directory, 900 s per cell, a failing cell fails the
  build with its traceback). Notebooks that were already executed are rendered as they are:
  myst-nb's "auto" alone would re-run a notebook in which any code cell has no output (any
  silent cell), so notebooks whose code cells all carry an execution count are also listed in
  ``nb_execution_excludepatterns``. CI therefore passes executed copies and nothing runs twice.
* **The repository root** (needed only for the default notebook folder) is ``$SCR2MAE_REPO``
  when set; otherwise the parent of this folder when it holds ``src/scr2mae`` (``docs/`` inside
  the checkout); otherwise the checkout that the imported ``scr2mae`` lives in (an editable
  install). The last rule is what lets a copy of ``docs/`` built elsewhere (the docs test copies
  it to a temporary folder) still find the tutorials. A root or folder that cannot be found is
  an error, not an empty tutorials page.
* **The API pages** under ``generated/`` are written by autosummary from the numpydoc
  docstrings (templates in ``_templates/autosummary``; git-ignored output). Module constants
  are documented by their ``#:`` comment in the private module that defines them.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _is_repo(path: Path) -> bool:
    return (path / "src" / "scr2mae" / "__init__.py").is_file()


def _find_repo() -> Path:
    """The scr2mae checkout these docs describe (see the module docstring for the rules)."""
    if env := os.environ.get("SCR2MAE_REPO"):
        repo = Path(env).expanduser().resolve()
        if not _is_repo(repo):
            raise RuntimeError(f"SCR2MAE_REPO={env!r} is not an scr2mae checkout (no src/scr2mae).")
        return repo
    if _is_repo(HERE.parent):
        return HERE.parent
    import scr2mae

    candidate = Path(scr2mae.__file__).resolve().parents[2]
    if _is_repo(candidate):
        return candidate
    raise RuntimeError(
        "cannot find the scr2mae repository (needed for the tutorials): set SCR2MAE_REPO to "
        "the checkout, or SCR2MAE_DOCS_NOTEBOOKS to a folder of notebooks."
    )


def _copy_notebooks(source: Path, dest: Path) -> list[str]:
    """Replace ``dest`` by fresh copies of the notebooks in ``source``; return their names."""
    if not source.is_dir():
        raise RuntimeError(f"tutorial folder {str(source)!r} does not exist.")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    names = sorted(p.name for p in source.glob("*.ipynb"))
    for name in names:
        shutil.copy2(source / name, dest / name)
    return names


def _was_executed(path: Path) -> bool:
    """Whether every code cell of a notebook has been run and the run left some output.

    myst-nb's ``auto`` mode re-executes a notebook as soon as one code cell has no output, which
    a silent cell (``import scr2mae``) of an executed notebook never has; the execution counts
    tell executed notebooks apart from ones stored without outputs.
    """
    import json

    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    code = [cell for cell in cells if cell.get("cell_type") == "code"]
    ran = all(cell.get("execution_count") is not None for cell in code)
    return ran and (not code or any(cell.get("outputs") for cell in code))


if _is_repo(HERE.parent) and str(HERE.parent / "src") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "src"))  # document the source tree beside these docs
if env_notebooks := os.environ.get("SCR2MAE_DOCS_NOTEBOOKS"):
    NOTEBOOK_SOURCE = Path(env_notebooks).expanduser().resolve()
else:
    NOTEBOOK_SOURCE = _find_repo() / "tutorials"
TUTORIALS = _copy_notebooks(NOTEBOOK_SOURCE, HERE / "tutorials")

import scr2mae  # noqa: E402  (after the path set-up above)

# -- Project -----------------------------------------------------------------------------------

project = "scr2mae"
author = "scr2mae developers"
copyright = f"{date.today().year}, {author}"
release = scr2mae.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
# ".rst" first: autosummary writes its stub pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
pygments_style = "default"
nitpicky = False

# -- MyST and notebooks (a contract with the tutorials; see the module docstring) -------------

myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = "auto"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = True  # notebooks write their scratch files outside the source tree
# executed notebooks are shown as they are, even with silent cells (see _was_executed)
nb_execution_excludepatterns = [
    f"tutorials/{name}" for name in TUTORIALS if _was_executed(HERE / "tutorials" / name)
]
nb_merge_streams = True

# -- API reference -----------------------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
autoclass_content = "class"
autodoc_mock_imports: list[str] = []

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True

# -- HTML --------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = f"scr2mae {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_theme_options = {
    "repository_url": "https://github.com/scverse/scr2mae",
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


def _drop_empty_tutorial_toctree(app, docname: str, source: list[str]) -> None:
    """Without notebooks the glob toctree would warn (and ``-W`` fail): say so in words."""
    if docname != "tutorials" or TUTORIALS:
        return
    note = f"No tutorial notebooks were found in `{NOTEBOOK_SOURCE}` when these pages were built."
    source[0] = re.sub(r"```\{toctree\}.*?```", note, source[0], flags=re.DOTALL)


def _attribute_comment(modname: str, attr: str) -> list[str] | None:
    """The ``#:`` comment of a module constant, looked up in the package's private modules.

    autodoc reads ``#:`` comments only from the module a name is documented under; the public
    constants are defined in private submodules (``scr2mae.masking._registry``) and re-exported.
    """
    import importlib
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    module = importlib.import_module(modname)
    names = [modname]
    names += [f"{modname}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]
    for name in names:
        docs = ModuleAnalyzer.for_module(name).find_attr_docs()
        if ("", attr) in docs:
            return list(docs[("", attr)])
    return None


def _constant_docstrings(app, what, name, obj, options, lines) -> None:
    """Document re-exported constants by their ``#:`` comment, never by ``tuple``'s docstring."""
    if what != "data":
        return
    modname, _, attr = name.rpartition(".")
    comment = _attribute_comment(modname, attr)
    if comment is None:
        raise RuntimeError(f"public constant {name} has no `#:` documentation comment.")
    lines[:] = comment


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields are described by the class's "Attributes" section; skip the aliases."""
    if what == "class" and (getattr(obj, "__doc__", "") or "").startswith("Alias for field"):
        return True
    return None


_UNDERLINE = re.compile(r"^-{3,}$")


def _is_section_header(lines: list[str], i: int) -> bool:
    return (
        i + 1 < len(lines)
        and bool(lines[i].strip())
        and bool(_UNDERLINE.match(lines[i + 1].strip()))
    )


def _prose_returns(app, what, name, obj, options, lines) -> None:
    """Render a prose "Returns"/"Yields" section as a description, not as a return *type*.

    The docstrings of this package follow the scverse habit of describing the returned value in
    words, without numpydoc's ``type`` line (``Returns`` / ``-------`` / ``The schedule.``).
    Napoleon would read the first line as the type; this turns such a section into a
    ``:returns:`` field before napoleon runs (sections whose body has an indented description,
    i.e. proper ``type`` + description entries, are left to napoleon).
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = lines[i].strip()
        if header in ("Returns", "Yields") and not lines[i][:1].isspace():
            if _is_section_header(lines, i):
                j = i + 2
                while j < len(lines) and not _is_section_header(lines, j):
                    j += 1
                body = lines[i + 2 : j]
                while body and not body[-1].strip():
                    body.pop()
                while body and not body[0].strip():
                    body.pop(0)
                if body and not any(line[:1].isspace() for line in body if line.strip()):
                    field = ":returns:" if header == "Returns" else ":Yields:"
                    # two blank lines end the previous napoleon section
                    out += ["", "", f"{field} {body[0]}"]
                    out += [f"   {line}" if line.strip() else "" for line in body[1:]]
                    out.append("")
                    i = j
                    continue
        out.append(lines[i])
        i += 1
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _prose_returns, priority=400)  # before napoleon
    app.connect("source-read", _drop_empty_tutorial_toctree)
    app.connect("autodoc-process-docstring", _constant_docstrings)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
