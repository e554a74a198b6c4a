"""Shared command line, markdown and figure helpers of the linear-theory reproductions."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

DEFAULT_OUT = Path("results/linear_theory")


def parse_args(description: str, argv=None, extra=None) -> argparse.Namespace:
    """``--quick`` (a few minutes on 2 cores), ``--smoke`` (seconds, for tests), ``--out``.

    ``extra`` may add script-specific options to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--quick", action="store_true", help="smaller d and fewer repeats")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny setting for the test suite (implies --quick)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    args.mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def md_table(headers, rows) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path: Path, title: str, params: dict, sections: list[tuple[str, str]]) -> None:
    """Write a markdown report: title, the parameters used, then titled sections."""
    lines = [f"# {title}", "", "Parameters:", ""]
    lines += [f"- `{k}` = {v}" for k, v in params.items()]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    path.write_text("\n".join(lines) + "\n")


class Progress:
    """Prints one line per finished unit of work with the elapsed time."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.start = total, label, 0, time.perf_counter()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(f"[{self.label} {self.done}/{self.total}] {what} ({elapsed:.1f}s)", flush=True)
