"""Shared command line, Monte-Carlo, markdown and figure helpers of the linear-theory figures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

from scr2mae.theory import simulate_risk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

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
    args.mode = tail.mode_name(args)
    tail.output_dir(args.out)
    return args


def risk_axes(ax, heading: str, top: float, **legend) -> None:
    """Frame a panel of normalised risk against the masking ratio: the null risk (1) dotted,
    y from 0 to ``top``, the axis labels, the title ``heading`` and a small legend (``legend``
    holds its options)."""
    ax.axhline(1.0, color="0.5", ls=":", lw=0.8)
    ax.set_ylim(0.0, top)
    ax.set_xlabel("masking ratio p")
    ax.set_ylabel("normalised test risk")
    ax.set_title(heading)
    ax.legend(fontsize="small", **legend)


def simulate_on_grid(cov, beta, n_samples: int, grid, noise_var: float, repeats: int, seed: int):
    """Monte-Carlo risk of ``beta`` under ``cov`` at every fixed masking ratio of ``grid``.

    The figures' check of the theory: :func:`scr2mae.theory.simulate_risk` with ``repeats``
    draws of the data and masks per ratio.
    """
    return simulate_risk(
        cov,
        beta,
        n_samples=n_samples,
        masking=list(grid),
        noise_var=noise_var,
        n_repeats=repeats,
        seed=seed,
    )


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
