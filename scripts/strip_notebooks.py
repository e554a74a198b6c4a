"""Remove outputs and execution counts from Jupyter notebooks (tutorials are stored stripped).

python scripts/strip_notebooks.py tutorials/*.ipynb          # strip in place
python scripts/strip_notebooks.py --check tutorials/*.ipynb  # exit 1 if any has outputs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

#: cell metadata worth keeping (papermill's "parameters" tag lives in "tags")
KEEP_CELL_METADATA = ("tags",)


def strip(nb) -> bool:
    """Strip ``nb`` in place; return whether anything changed."""
    changed = False
    for cell in nb.cells:
        extra = [k for k in cell.metadata if k not in KEEP_CELL_METADATA]
        for key in extra:
            del cell.metadata[key]
            changed = True
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count is not None:
                cell.outputs = []
                cell.execution_count = None
                changed = True
    for key in [k for k in nb.metadata if k not in ("kernelspec", "language_info")]:
        del nb.metadata[key]
        changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="report, do not write")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'has outputs' if args.check else 'stripped'}: {path}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
