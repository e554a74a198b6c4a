"""Figs. 1B-D: spiked covariance I + theta u u^T, Corollary 1 against Monte-Carlo.

B: risk against the masking ratio for several feature strengths alpha = u^T beta;
C: the optimal ratio against the feature strength (theory, and the simulated minimiser);
D: prediction-magnitude disparity E[(x^T beta_hat)^2] of a spike-aligned signal (alpha = 1)
over an orthogonal one (alpha = 0), which grows with the masking ratio.
Writes ``fig1bcd_spiked.png`` and ``fig1bcd_spiked.md``.

    python benchmarks/general/linear_theory/fig1bcd_spiked.py [--quick] [--out DIR]
"""

from __future__ import annotations

import _linear_theory_common as common
import numpy as np
from matplotlib.figure import Figure

from scr2mae.theory import (
    deterministic_prediction_norm,
    spiked_covariance,
    spiked_risk,
    spiked_signal,
)

SPIKE = 10.0
NOISE_VAR = 0.1


def settings(mode: str):
    if mode == "smoke":
        return 60, 30, np.array([0.2, 0.4, 0.6]), (0.2, 1.0), 4
    if mode == "quick":
        return 200, 100, np.round(np.arange(0.1, 0.81, 0.1), 2), (0.2, 0.5, 0.8, 1.0), 20
    return 300, 150, np.round(np.arange(0.05, 0.851, 0.05), 2), (0.2, 0.5, 0.8, 1.0), 50


def main(argv=None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    d, n, grid, strengths, repeats = settings(args.mode)
    cov, u = spiked_covariance(d, SPIKE, direction="random", seed=0)
    fine = np.linspace(0.02, 0.9, 12 if args.smoke else 177)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_b, ax_c, ax_d = fig.subplots(1, 3)
    progress = common.Progress(len(strengths) + 1, "fig1bcd")
    rows, sim_opt = [], {}
    for alpha in strengths:
        beta = spiked_signal(u, alpha, seed=1)
        curve = spiked_risk(
            fine, n_features=d, n_samples=n, spike=SPIKE, strength=alpha, noise_var=NOISE_VAR
        )
        at_grid = spiked_risk(
            grid, n_features=d, n_samples=n, spike=SPIKE, strength=alpha, noise_var=NOISE_VAR
        )
        sim = common.simulate_on_grid(cov, beta, n, grid, NOISE_VAR, repeats, seed=2)
        sim_norm = sim.mean / sim.null_risk
        sim_opt[alpha] = float(grid[np.argmin(sim.mean)])
        (line,) = ax_b.plot(fine, curve.normalized_risk, lw=1.2, label=f"alpha={alpha:g}")
        ax_b.errorbar(
            grid,
            sim_norm,
            yerr=sim.std / sim.null_risk,
            fmt="o",
            ms=3,
            capsize=2,
            color=line.get_color(),
        )
        for p, t, m in zip(grid, at_grid.normalized_risk, sim_norm, strict=True):
            rows.append([float(alpha), float(p), float(t), float(m), float(m / t)])
        progress.step(f"alpha={alpha:g}: simulated optimum {sim_opt[alpha]:g}")
    common.risk_axes(ax_b, f"B: spiked, theta={SPIKE:g}, d={d}, n={n}", 1.6)

    alphas = np.linspace(0.0, 1.0, 41)
    optimum = {}
    for theta in (SPIKE / 2, SPIKE, 2 * SPIKE):
        optimum[theta] = [
            spiked_risk(
                fine, n_features=d, n_samples=n, spike=theta, strength=a, noise_var=NOISE_VAR
            ).optimal_ratio
            for a in alphas
        ]
        ax_c.plot(alphas, optimum[theta], label=f"theory, theta={theta:g}")
    ax_c.plot(list(sim_opt), list(sim_opt.values()), "ko", ms=4, label=f"sim, theta={SPIKE:g}")
    ax_c.set_xlabel("feature strength alpha")
    ax_c.set_ylabel("optimal masking ratio")
    ax_c.set_title("C: optimal ratio vs feature strength")
    ax_c.legend(fontsize="small")

    aligned, orthogonal = u, spiked_signal(u, 0.0, seed=1)
    both = np.stack([aligned, orthogonal], axis=1)
    theory_mag = deterministic_prediction_norm(fine, cov, both, n_samples=n, noise_var=NOISE_VAR)
    sims = [
        common.simulate_on_grid(cov, b, n, grid, NOISE_VAR, repeats, seed=3)
        for b in (aligned, orthogonal)
    ]
    sim_disparity = sims[0].prediction_norm2.mean(1) / sims[1].prediction_norm2.mean(1)
    rel = [s.prediction_norm2.mean(1) / s.null_risk for s in sims]
    ax_d.plot(fine, theory_mag[:, 0] / theory_mag[:, 1], "k-", lw=1.2, label="theory")
    ax_d.plot(grid, sim_disparity, "o", ms=4, label="simulation")
    ax_d.set_yscale("log")
    ax_d.set_xlabel("masking ratio p")
    ax_d.set_ylabel("E[(x'b_aligned)^2] / E[(x'b_orth)^2]")
    ax_d.set_title("D: prediction-magnitude disparity")
    ax_d.legend(fontsize="small")
    progress.step("magnitude disparity")
    fig.savefig(args.out / "fig1bcd_spiked.png", dpi=120)

    at_grid_mag = deterministic_prediction_norm(grid, cov, both, n_samples=n, noise_var=NOISE_VAR)
    theory_disp = at_grid_mag[:, 0] / at_grid_mag[:, 1]
    common.write_report(
        args.out / "fig1bcd_spiked.md",
        "Figs. 1B-D: spiked covariance",
        {
            "mode": args.mode,
            "d": d,
            "n": n,
            "spike": SPIKE,
            "noise_var": NOISE_VAR,
            "||beta||": 1.0,
            "u": "uniform [0,1) entries, normalised",
            "repeats": repeats,
        },
        [
            (
                "B: normalised risk",
                common.md_table(["alpha", "p", "Corollary 1", "simulation", "sim / theory"], rows),
            ),
            (
                "C: optimal ratio (theory)",
                common.md_table(
                    ["alpha"] + [f"theta={t:g}" for t in optimum],
                    [
                        [float(a)] + [float(optimum[t][i]) for t in optimum]
                        for i, a in enumerate(alphas)
                        if i % 5 == 0
                    ],
                ),
            ),
            (
                "C: simulated optimum",
                common.md_table(
                    ["alpha", "argmin over the simulated grid"],
                    [[float(a), v] for a, v in sim_opt.items()],
                ),
            ),
            (
                "D: magnitude disparity",
                common.md_table(
                    [
                        "p",
                        "aligned / orthogonal (theory)",
                        "(simulation)",
                        "E[(x'b_hat)^2] / E[(x'b)^2] aligned (sim)",
                        "orthogonal (sim)",
                    ],
                    [
                        [float(p), float(t), float(s), float(a), float(o)]
                        for p, t, s, a, o in zip(
                            grid, theory_disp, sim_disparity, rel[0], rel[1], strict=True
                        )
                    ],
                ),
            ),
        ],
    )
    return {"rows": rows, "disparity": sim_disparity, "sim_optimum": sim_opt}


if __name__ == "__main__":
    main()
