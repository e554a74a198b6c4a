"""Copy the demo's table and verdict line into the README and the benchmark page.

The numbers of ``make demo`` are never typed by hand: this script reads the demo's own output,
``results/demo/demo_results.md`` (written by ``python -m scr2mae.demo --out results/demo``),
and rewrites the lines between the markers ``<!-- demo-table:start -->`` and
``<!-- demo-table:end -->`` of every target file with the table and the verdict line.

python scripts/readme_demo_table.py          # rewrite README.md and docs/benchmarks.md
python scripts/readme_demo_table.py --check  # exit 1 if either differs from the results file
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "<!-- demo-table:start -->"
END = "<!-- demo-table:end -->"
#: how the demo's results file introduces its verdict line (see ``scr2mae.demo._run``)
VERDICT_PREFIX = "Paired differences of balanced accuracy over seeds (mean ± SE): "
DEFAULT_RESULTS = Path("results/demo/demo_results.md")
DEFAULT_TARGETS = (Path("README.md"), Path("docs/benchmarks.md"))


def read_results(path: Path) -> tuple[list[str], str]:
    """The table's lines and the verdict (without its prefix) of a ``demo_results.md``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    table = [line.rstrip() for line in lines if line.startswith("|")]
    verdicts = [line for line in lines if line.startswith(VERDICT_PREFIX)]
    if len(table) < 3:
        raise ValueError(f"{path}: no markdown table (header, rule and rows) found.")
    if len(verdicts) != 1:
        raise ValueError(f"{path}: expected one line starting {VERDICT_PREFIX!r}.")
    return table, verdicts[0][len(VERDICT_PREFIX) :].strip()


def render_block(table: Sequence[str], verdict: str, source: str) -> str:
    """The text that goes between the markers (markers excluded, ending with a newline)."""
    return "\n".join(
        [
            f"<!-- generated from {source} by scripts/readme_demo_table.py "
            "(make readme-demo); do not edit by hand -->",
            "",
            *table,
            "",
            f"Paired differences of balanced accuracy over seeds (mean ± standard error), as "
            f"the demo prints them: {verdict}",
            "",
        ]
    )


def replace_block(text: str, block: str, name: str = "text") -> str:
    """``text`` with the lines between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{name} must hold exactly one {START!r} and one {END!r} line.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / DEFAULT_RESULTS,
        help=f"the demo's markdown output (default {DEFAULT_RESULTS})",
    )
    parser.add_argument(
        "--files",
        type=Path,
        nargs="+",
        default=[REPO / p for p in DEFAULT_TARGETS],
        help="files whose demo-table section is rewritten (default README.md docs/benchmarks.md)",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(
            f"{args.results} does not exist: run `make demo` (python -m scr2mae.demo "
            "--out results/demo) first.",
            file=sys.stderr,
        )
        return 2
    table, verdict = read_results(args.results)
    try:
        source = args.results.resolve().relative_to(REPO).as_posix()
    except ValueError:
        source = args.results.name
    block = render_block(table, verdict, source)
    stale = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        new = replace_block(text, block, str(path))
        if new == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote the demo table of {path}")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(
            f"demo table out of date in {names}: run `make readme-demo` "
            f"(python scripts/readme_demo_table.py) after `make demo`.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
