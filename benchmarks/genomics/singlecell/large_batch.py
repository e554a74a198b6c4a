"""Large mini-batches (1024–8192): learning-rate rules measured by the probe, not only by speed.

    python benchmarks/genomics/singlecell/large_batch.py --quick
    python benchmarks/genomics/singlecell/large_batch.py   # 12k cells, batches 128 … 8192

The same synthetic multi-donor data (:func:`scr2mae.data.synthetic_donor_counts`) is used to
train ``R2MAEModel`` for the same number of epochs (the same number of cells seen) at each batch
size, with three learning-rate rules relative to the paper's ``lr = 1e-3`` at batch 128:

* ``constant``: ``1e-3`` at every batch size;
* ``sqrt``: ``1e-3 × sqrt(batch / 128)``;
* ``linear``: ``1e-3 × batch / 128`` (capped at ``1e-2``).

For each run the script reports cells/s of training (process CPU time, one torch thread), the
final training loss, the masked reconstruction score of the held-out cells and the 5-fold probe
balanced accuracy of the cell type and of the disease label on the latent space (a subsample of
the cells), and writes ``large_batch.csv`` and ``large_batch.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

RULES = {
    "constant": lambda b: 1e-3,
    "sqrt": lambda b: 1e-3 * math.sqrt(b / 128),
    "linear": lambda b: min(1e-2, 1e-3 * b / 128),
}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the sweep and return its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--donors", type=int)
    parser.add_argument("--cells-per-donor", type=int, default=500)
    parser.add_argument("--n-hidden", type=int, default=128)
    parser.add_argument("--n-latent", type=int, default=32)
    parser.add_argument("--probe-cells", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/genomics/singlecell/results/large_batch")
    args = parser.parse_args(argv)
    tail.quiet()
    import scvi
    import torch

    from scr2mae import R2MAEModel
    from scr2mae.data import synthetic_donor_counts
    from scr2mae.evaluation import cross_validated_probe

    torch.set_num_threads(1)
    batch_sizes = args.batch_sizes or ([128, 1024] if args.quick else [128, 1024, 2048, 4096, 8192])
    epochs = args.epochs or (3 if args.quick else 20)
    donors = args.donors or (4 if args.quick else 24)
    adata = synthetic_donor_counts(
        n_donors=donors, cells_per_donor=args.cells_per_donor, n_genes=400, seed=args.seed
    )
    R2MAEModel.setup_anndata(adata, layer="counts", batch_key="donor_id")
    rng = np.random.default_rng(args.seed)
    probe_cells = np.sort(rng.choice(adata.n_obs, min(args.probe_cells, adata.n_obs), False))
    rows = []
    for batch_size in batch_sizes:
        # every rule gives the paper's lr at batch 128: one run there
        for rule in ["constant"] if batch_size == 128 else args.rules:
            lr = RULES[rule](batch_size)
            scvi.settings.seed = args.seed
            model = R2MAEModel(adata, n_hidden=args.n_hidden, n_latent=args.n_latent)
            start = time.process_time()
            model.train(
                max_epochs=epochs,
                batch_size=batch_size,
                plan_kwargs={"lr": lr},
                enable_progress_bar=False,
            )
            seconds = time.process_time() - start
            z = model.get_latent_representation(indices=probe_cells)
            row = {
                "batch_size": batch_size,
                "rule": rule,
                "lr": lr,
                "steps": int(model.trainer.global_step),
                "cells_per_cpu_s": epochs * len(model.train_indices) / seconds,
                "final_train_loss": float(model.history["train_loss"].iloc[-1, 0]),
                "reconstruction_r": float(
                    model.get_reconstruction_score(
                        indices=np.sort(model.validation_indices), mask_ratio=0.3
                    )
                ),
            }
            for label in ("cell_type", "disease"):
                y = adata.obs[label].to_numpy()[probe_cells]
                row[f"probe_{label}"] = cross_validated_probe(
                    z, y, seed=args.seed
                ).balanced_accuracy
            rows.append(row)
            print(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True
            )
    table = pd.DataFrame(rows)
    out = tail.output_dir(args.out)
    table.to_csv(out / "large_batch.csv", index=False)
    _figure(table, out / "large_batch.png")
    print(
        f"\n{adata.n_obs} cells x {adata.n_vars} genes, widths {args.n_hidden}/{args.n_latent}, "
        f"{epochs} epochs at every batch size (cells/s: process CPU time, one torch thread)"
    )
    print(table.round(4).to_markdown(index=False))
    return table


def _figure(table: pd.DataFrame, path: Path) -> None:
    plt = tail.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for rule, part in table.groupby("rule"):
        base = table[table["batch_size"] == 128]
        part = pd.concat([base, part]).drop_duplicates("batch_size").sort_values("batch_size")
        for ax, column in zip(
            axes, ("final_train_loss", "probe_cell_type", "probe_disease"), strict=True
        ):
            ax.plot(part["batch_size"], part[column], marker="o", label=rule)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel(column.replace("_", " "))
    axes[0].legend(title="lr rule")
    fig.suptitle("R2MAEModel: large batches at equal epochs")
    tail.save_figure(fig, path)


if __name__ == "__main__":
    main()
