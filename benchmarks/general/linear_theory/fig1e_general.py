"""Fig. 1E: general covariances (uniform, Beta and latent-space spectra).

For each covariance model the signal is the unit eigenvector at several eigenvalue quantiles;
the deterministic-equivalent risk (a generalisation of Theorem 3) is drawn as lines and
Monte-Carlo as points. Stronger signals descend further and have higher optimal ratios.
Writes ``fig1e_general.png`` and ``fig1e_general.md``.

    python benchmarks/general/linear_theory/fig1e_general.py [--quick] [--out DIR]
"""

from __future__ import annotations

import _linear_theory_common as common
import numpy as np
from matplotlib.figure import Figure

from scr2mae.theory import (
    beta_spectrum_covariance,
    deterministic_risk,
    eigenvector_signal,
    latent_space_covariance,
    uniform_spectrum_covariance,
)

NOISE_VAR = 0.5
QUANTILES = (0.1, 0.5, 0.9, 0.99)
MODELS = {
    "uniform": uniform_spectrum_covariance,
    "beta": beta_spectrum_covariance,
    "latent": latent_space_covariance,
}


def settings(mode: str):
    if mode == "smoke":
        return 60, 30, np.array([0.2, 0.4, 0.6]), (0.5, 0.99), 4
    if mode == "quick":
        return 200, 100, np.round(np.arange(0.1, 0.81, 0.1), 2), QUANTILES, 15
    return 300, 150, np.round(np.arange(0.05, 0.851, 0.05), 2), QUANTILES, 50


def main(argv=None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    d, n, grid, quantiles, repeats = settings(args.mode)
    # theory curve resolution (one eigendecomposition per ratio); coarse in smoke mode
    fine = np.round(np.arange(0.02, 0.9, 0.1 if args.smoke else 0.01), 2)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, len(MODELS))
    progress = common.Progress(len(MODELS), "fig1e")
    rows, optima = [], []
    for ax, (name, make) in zip(axes, MODELS.items(), strict=True):
        cov = make(d, seed=0)
        signals = np.stack([eigenvector_signal(cov, q) for q in quantiles], axis=1)
        theory = deterministic_risk(fine, cov, signals, n_samples=n, noise_var=NOISE_VAR)
        at_grid = deterministic_risk(grid, cov, signals, n_samples=n, noise_var=NOISE_VAR)
        for j, q in enumerate(quantiles):
            sim = common.simulate_on_grid(cov, signals[:, j], n, grid, NOISE_VAR, repeats, seed=1)
            (line,) = ax.plot(fine, theory.normalized_risk[:, j], lw=1.2, label=f"q={q:g}")
            ax.plot(grid, sim.normalized_mean, "o", ms=3, color=line.get_color())
            for p, t, m in zip(
                grid, at_grid.normalized_risk[:, j], sim.normalized_mean, strict=True
            ):
                rows.append([name, float(q), float(p), float(t), float(m), float(m / t)])
            optima.append(
                [
                    name,
                    float(q),
                    float(theory.null_risk[j]),
                    float(theory.optimal_ratio[j]),
                    float(np.min(theory.normalized_risk[:, j])),
                    float(grid[np.argmin(sim.mean)]),
                    float(np.min(sim.normalized_mean)),
                ]
            )
        common.risk_axes(ax, f"{name} spectrum, d={d}, n={n}", 1.6, title="eigenvalue quantile")
        progress.step(name)
    fig.savefig(args.out / "fig1e_general.png", dpi=120)
    common.write_report(
        args.out / "fig1e_general.md",
        "Fig. 1E: general covariance models",
        {
            "mode": args.mode,
            "d": d,
            "n": n,
            "noise_var": NOISE_VAR,
            "||beta||": 1.0,
            "spectra": "in [1, 10]; Beta(2, 5); latent I + W W^T with k = d/2",
            "repeats": repeats,
        },
        [
            (
                "Optimal ratios",
                common.md_table(
                    [
                        "model",
                        "quantile",
                        "eigenvalue",
                        "theory argmin",
                        "theory min",
                        "sim argmin",
                        "sim min",
                    ],
                    optima,
                ),
            ),
            (
                "Normalised risk per ratio",
                common.md_table(
                    ["model", "quantile", "p", "theory", "simulation", "sim / theory"], rows
                ),
            ),
        ],
    )
    return {"rows": rows, "optima": optima}


if __name__ == "__main__":
    main()
