"""Fig. 1A: isotropic covariance, Theorem 1 against Monte-Carlo.

Three regimes with sigma^2 = 0.5 and ||beta|| = 1: over-parametrised for every ratio
(d / n > 1), crossing the interpolation threshold at p = d / n, and under-parametrised for
every ratio. Writes ``fig1a_isotropic.png`` and ``fig1a_isotropic.md``.

    python benchmarks/general/linear_theory/fig1a_isotropic.py [--quick] [--out DIR]
"""

from __future__ import annotations

import numpy as np
from _linear_theory_common import Progress, md_table, parse_args, simulate_on_grid, write_report
from matplotlib.figure import Figure

from scr2mae.theory import isotropic_covariance, isotropic_risk, random_signal

NOISE_VAR = 0.5


def settings(mode: str):
    if mode == "smoke":
        return [("over", 60, 40), ("under", 20, 200)], np.array([0.2, 0.5, 0.8]), 4
    if mode == "quick":
        grid = np.round(np.arange(0.1, 0.91, 0.1), 2)
        return [("over", 200, 130), ("crossing", 200, 270), ("under", 40, 800)], grid, 20
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    return [("over", 300, 200), ("crossing", 300, 400), ("under", 100, 4000)], grid, 50


def main(argv=None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv)
    regimes, grid, repeats = settings(args.mode)
    fig = Figure(figsize=(4.2 * len(regimes), 3.6), layout="constrained")
    axes = fig.subplots(1, len(regimes))
    progress = Progress(len(regimes), "fig1a")
    rows, summary, summary_all = [], {}, {}
    for ax, (name, d, n) in zip(axes, regimes, strict=True):
        beta = random_signal(d, seed=0)
        fine = np.linspace(0.02, 0.98, 193)
        theory_fine = isotropic_risk(fine, n_features=d, n_samples=n, noise_var=NOISE_VAR)
        theory = isotropic_risk(grid, n_features=d, n_samples=n, noise_var=NOISE_VAR)
        sim = simulate_on_grid(isotropic_covariance(d), beta, n, grid, NOISE_VAR, repeats, seed=1)
        ratio = sim.mean / theory.risk
        # the asymptotics are accurate away from the interpolation threshold (p n ~ d) and
        # from extreme masking (very sparse rows); the summary reports both zones
        rows_per_feature = grid * n / d
        away = (grid <= 0.7) & ((rows_per_feature <= 0.6) | (rows_per_feature >= 1.5))
        finite = np.isfinite(ratio) & np.isfinite(theory.risk)
        summary[name] = float(np.max(np.abs(ratio[away] - 1.0))) if away.any() else np.nan
        summary_all[name] = float(np.max(np.abs(ratio[finite] - 1.0)))
        for p, t, m, s, r in zip(grid, theory.risk, sim.mean, sim.std, ratio, strict=True):
            rows.append([name, d, n, float(p), float(t), float(m), float(s), float(r)])
        ax.plot(fine, theory_fine.risk, "k-", lw=1.2, label="Theorem 1")
        ax.errorbar(grid, sim.mean, yerr=sim.std, fmt="o", ms=4, capsize=2, label="simulation")
        ax.axhline(1.0, color="0.5", ls=":", lw=0.8, label="null risk")
        finite = theory_fine.risk[np.isfinite(theory_fine.risk)]
        ax.set_ylim(0.0, min(3.0, float(np.max(finite))) * 1.05)
        ax.set_title(f"{name}: d={d}, n={n}")
        ax.set_xlabel("masking ratio p")
        ax.set_ylabel("test risk")
        ax.legend(fontsize="small")
        progress.step(f"{name}: max abs(sim/theory - 1) off the threshold {summary[name]:.3f}")
    fig.savefig(args.out / "fig1a_isotropic.png", dpi=120)
    table = md_table(
        ["regime", "d", "n", "p", "theory", "sim mean", "sim std", "sim / theory"], rows
    )
    agreement = md_table(
        [
            "regime",
            "max abs(sim/theory - 1), p <= 0.7 and p n <= 0.6 d or >= 1.5 d",
            "max over all ratios (threshold and p -> 1 included)",
        ],
        [[k, summary[k], summary_all[k]] for k in summary],
    )
    write_report(
        args.out / "fig1a_isotropic.md",
        "Fig. 1A: isotropic model, theory vs simulation",
        {"mode": args.mode, "noise_var": NOISE_VAR, "||beta||^2": 1.0, "repeats": repeats},
        [("Agreement", agreement), ("Risk per ratio", table)],
    )
    print(agreement)
    return {"max_rel_error": summary, "max_rel_error_all": summary_all, "rows": rows}


if __name__ == "__main__":
    main()
