"""The command-line, table and figure tail that the benchmark scripts share.

Every script lies two folders below ``benchmarks/`` and is run as
``python benchmarks/<area>/<topic>/<script>.py`` or loaded by its test with
``runpy.run_path``; neither puts this folder on ``sys.path``, so a script imports the module
by path::

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from _common import mode_parser, ...

Nothing here computes a number of a benchmark: it parses options, quietens libraries, makes
the output folder, and writes and prints tables and figures.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

#: The loggers that scvi-tools, Lightning and scr2mae write their start-up messages to.
LIBRARY_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "lightning_fabric",
    "scvi",
    "scr2mae",
)


def mode_parser(
    description: str, *, quick: str, smoke: str = "tiny configuration for tests"
) -> argparse.ArgumentParser:
    """A parser with the mutually exclusive ``--quick`` and ``--smoke`` flags.

    The first line of ``description`` (a script passes its ``__doc__``) describes the script;
    ``quick`` and ``smoke`` are the flags' help texts; without either flag the run is "full".
    """
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=quick)
    mode.add_argument("--smoke", action="store_true", help=smoke)
    return parser


def mode_name(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"quick"`` or ``"full"``, from the flags of :func:`mode_parser`."""
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def output_dir(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, created with its parents if missing."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def quiet(loggers: tuple[str, ...] = LIBRARY_LOGGERS, *, scvi: bool = False) -> None:
    """Ignore warnings and set ``loggers`` to ERROR.

    Lightning sets its loggers to INFO when it is imported: call this after the import, or
    with ``scvi=True``, which imports scvi-tools (and so Lightning) here, once warnings are
    ignored, and sets its verbosity to ERROR.
    """
    warnings.filterwarnings("ignore")
    if scvi:
        import scvi as scvi_tools

        scvi_tools.settings.verbosity = logging.ERROR
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is None (torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Lay out ``fig``, write it to ``path`` (PNG by its suffix) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def write_results(
    out: Path,
    tables: Mapping[str, object],
    text: str,
    figure: tuple[str, Callable[[Path], object]] | None = None,
) -> list[str]:
    """Print ``text`` and write the results of a run under ``out``.

    Every table ``name -> DataFrame`` goes to ``out/<name>.csv`` (without the index), ``text``
    to ``out/tables.md``, and ``figure = (file name, plot)`` is drawn by ``plot(out / file
    name)``. A last line names the files written; they are also returned.
    """
    print("\n" + text, flush=True)
    written = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        written.append(f"{name}.csv")
    (out / "tables.md").write_text(text.rstrip("\n") + "\n")
    written.append("tables.md")
    if figure is not None:
        filename, plot = figure
        plot(out / filename)
        written.append(filename)
    print(f"wrote {out}/: {', '.join(written)}", flush=True)
    return written
