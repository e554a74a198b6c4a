"""GPN-MSA pretraining with every masking scheme, then zero-shot variant scoring (Table 3).

    python benchmarks/genomics/dna/train.py --quick [--out results/dna]        # CPU, minutes
    python benchmarks/genomics/dna/train.py --full --dataset songlab/gpn-msa-sapiens-dataset \
        --msa-path 89.zarr --variants variants.parquet --devices 4              # GPUs, paper

For every scheme (fixed 15% = GPN-MSA, 5%, 30%, MDLM, dynamic MR, CL-MAE, R2MAE, R2MAE +
dynamic MR, R2MAE + CL, R2MAE + CL (k=0); all from ``scr2mae.masking``) the script trains a
GPN-MSA model (``gpn``'s GPNRoFormerForMaskedLM) from the same initialisation on the same
windows, scores the evaluation variants by the LLR of alternate vs reference allele at the
masked position, and writes ``table3.csv``, ``table3.md`` and ``table3.png`` under ``--out``.
Without ``--dataset`` the data are the synthetic MSA of ``_dna_data.simulate_genome_msa``
(written in the real GPN-MSA formats under ``--out/data``). Training runs through Lightning
Fabric (CPU, one or several GPUs with DDP, bf16 with ``--precision bf16-mixed``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _dna_data import (  # noqa: E402
    GenomeMSA,
    SyntheticMSAConfig,
    collate_windows,
    load_gpn_msa_windows,
    prepare_synthetic_data,
)
from _dna_metrics import table3_metrics  # noqa: E402
from _dna_model import (  # noqa: E402
    SCHEMES,
    TABLE3_SCHEMES,
    MaskedLMTask,
    build_gpn_msa_model,
    build_scheme,
    score_variants,
)

#: mode -> settings; "full" is C.7 / GPN-MSA: 12 layers x 12 heads x 768, AdamW lr 1e-4,
#: 30000 steps, effective batch 2048, 1000 warm-up steps, cosine decay, weight decay 0.01
MODES = {
    "smoke": dict(
        n_species=6, chrom_length=16000, hidden=48, layers=1, heads=4, steps=12, batch=8,
        accum=1, lr=2e-3, lr_warmup=2, val_batches=2, dropout=0.0, n_missense=40,
        n_reg=4, benign_per=8,
    ),
    "quick": dict(
        n_species=10, chrom_length=60000, hidden=64, layers=2, heads=4, steps=250, batch=16,
        accum=1, lr=2e-3, lr_warmup=25, val_batches=8, dropout=0.0, n_missense=300,
        n_reg=30, benign_per=10,
    ),
    "full": dict(
        n_species=89, chrom_length=2_000_000, hidden=768, layers=12, heads=12, steps=30000,
        batch=128, accum=16, lr=1e-4, lr_warmup=1000, val_batches=50, dropout=0.1,
        n_missense=2000, n_reg=200, benign_per=500,
    ),
}  # fmt: skip
#: effective batch of the full mode (C.7); gradient accumulation adapts to the device count
EFFECTIVE_BATCH_FULL = 2048
#: curriculum warm-up as a fraction of training (C.7: 5000 of 30000 steps)
CL_WARMUP_FRACTION = 5000 / 30000


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke")
    parser.set_defaults(mode="quick")
    parser.add_argument("--schemes", nargs="+", default=None, help=f"subset of {list(SCHEMES)}")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="per device")
    parser.add_argument("--grad-accum", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--window-size", type=int, default=128)
    parser.add_argument("--mask-mode", choices=("exact", "bernoulli"), default="exact")
    parser.add_argument("--n-species", type=int, default=None, help="synthetic data only")
    parser.add_argument("--dataset", default=None, help="HF windows dataset (name or folder)")
    parser.add_argument("--msa-path", default=None, help="genome MSA zarr (with --dataset)")
    parser.add_argument("--variants", default=None, help="parquet/csv/tsv evaluation variants")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/dna")
    args = parser.parse_args(argv)
    if args.schemes is not None:
        unknown = [s for s in args.schemes if s not in SCHEMES]
        if unknown:
            parser.error(f"unknown scheme(s) {unknown}; choose from {list(SCHEMES)}")
    if (args.dataset is None) != (args.msa_path is None) or (
        args.dataset is not None and args.variants is None
    ):
        parser.error("real data need all of --dataset, --msa-path and --variants")
    for name in ("steps", "batch_size", "grad_accum", "hidden_size", "layers", "heads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:  # linear warm-up, then cosine decay to zero (GPN-MSA)
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    return f


def _read_variants(path) -> pd.DataFrame:
    path = str(path)
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, sep="\t" if path.endswith((".tsv", ".tsv.gz")) else ",")
    missing = {"chrom", "pos", "ref", "alt", "label", "class", "set"} - set(df.columns)
    if missing:
        raise ValueError(f"variants file {path} lacks column(s) {sorted(missing)}.")
    df["chrom"] = df["chrom"].astype(str)
    return df


def _loop(loader):
    while True:
        yield from loader


def train_one(name, cfg, args, fabric, train_ds, valid_ds, genome_msa, variants) -> dict:
    """Train one scheme from the common initialisation; return its row of the table."""
    from torch.utils.data import DataLoader

    fabric.seed_everything(args.seed)
    model = build_gpn_msa_model(
        train_ds.genome_msa.n_species,
        hidden_size=cfg["hidden"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        intermediate_size=2 * cfg["hidden"] if args.mode != "full" else None,
        dropout=cfg["dropout"],
        max_length=max(512, args.window_size),
    )
    total = cfg["steps"]
    scheme = build_scheme(
        name,
        total_steps=total,
        hidden_size=cfg["hidden"],
        warmup_steps=max(1, round(CL_WARMUP_FRACTION * total)),
    )
    task = MaskedLMTask(model, scheme, mask_mode=args.mask_mode)
    optimizer = torch.optim.AdamW(task.param_groups(args.weight_decay), lr=cfg["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg["lr_warmup"], total))
    task, optimizer = fabric.setup(task, optimizer)
    loader_rng = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        train_ds,
        batch_size=cfg["batch"],
        shuffle=True,
        drop_last=True,
        collate_fn=collate_windows,
        generator=loader_rng,
        num_workers=args.num_workers,
    )
    batches = _loop(fabric.setup_dataloaders(loader))
    mask_rng = torch.Generator(device=fabric.device).manual_seed(args.seed + fabric.global_rank)
    accum = cfg["accum"]
    start, losses, ratios = time.perf_counter(), [], []
    progress = None
    if fabric.is_global_zero:
        from tqdm.auto import tqdm

        progress = tqdm(total=total, desc=name, leave=False, mininterval=2.0)
    task.train()
    for step in range(total):
        step_t = torch.full((), float(step), device=fabric.device)
        for micro in range(accum):
            batch = next(batches)
            with fabric.no_backward_sync(task, enabled=micro < accum - 1):
                out = task(batch, step_t, mask_rng)
                fabric.backward(out["loss"] / accum)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(out["loss"].detach())
        ratios.append(out["ratio"].detach())
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    train_seconds = time.perf_counter() - start
    row = {
        "train_loss_last10pct": float(torch.stack(losses[-max(1, total // 10) :]).mean()),
        "mean_mask_ratio": float(torch.stack(ratios).mean()),
        "train_seconds": train_seconds,
    }
    # validation loss at the common GPN-MSA ratio 15% on held-out windows
    task.eval()
    val_rng = torch.Generator(device=fabric.device).manual_seed(10_000 + args.seed)
    val_loader = DataLoader(
        valid_ds, batch_size=cfg["batch"], shuffle=False, collate_fn=collate_windows
    )
    val = []
    with torch.no_grad():
        for i, batch in enumerate(val_loader):
            if i >= cfg["val_batches"]:
                break
            batch = {k: v.to(fabric.device) for k, v in batch.items()}
            val.append(float(task(batch, 0, val_rng, fixed_ratio=0.15)["loss"]))
    row["val_loss@15%"] = float(np.mean(val)) if val else float("nan")
    if fabric.is_global_zero:
        llr = score_variants(
            task.module.model if hasattr(task, "module") else task.model,
            genome_msa,
            variants,
            window_size=args.window_size,
            device=fabric.device,
        )
        row.update(table3_metrics(variants, llr))
    return row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the comparison, print and write its table, and return it."""
    args = _parse(argv)
    from lightning.fabric import Fabric

    torch.set_num_threads(args.threads)
    cfg = dict(MODES[args.mode])
    overrides = {
        "steps": args.steps,
        "batch": args.batch_size,
        "accum": args.grad_accum,
        "lr": args.lr,
        "hidden": args.hidden_size,
        "layers": args.layers,
        "heads": args.heads,
        "n_species": args.n_species,
    }
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    schemes = args.schemes or list(TABLE3_SCHEMES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    fabric = Fabric(accelerator=args.accelerator, devices=devices, precision=args.precision)
    fabric.launch()
    cache = out / "hf_cache"
    if args.dataset is None:
        data_dir = out / "data"
        if fabric.is_global_zero:
            config = SyntheticMSAConfig(
                n_species=cfg["n_species"], chrom_length=cfg["chrom_length"], seed=args.seed
            )
            prepare_synthetic_data(
                data_dir,
                config,
                window_size=args.window_size,
                window_step=args.window_size // 2,
                n_missense=cfg["n_missense"],
                n_regulatory_pathogenic=cfg["n_reg"],
                benign_per_pathogenic=cfg["benign_per"],
                seed=args.seed,
            )
        fabric.barrier()
        dataset, msa_path = data_dir / "windows", data_dir / "msa.zarr"
        variants_path, in_memory = data_dir / "variants.parquet", True
    else:
        dataset, msa_path, variants_path, in_memory = (
            args.dataset,
            args.msa_path,
            args.variants,
            False,
        )
    train_ds = load_gpn_msa_windows(
        dataset, msa_path, "train", cache_dir=cache, in_memory=in_memory
    )
    valid_ds = load_gpn_msa_windows(
        dataset, msa_path, "validation", cache_dir=cache, in_memory=in_memory
    )
    variants = _read_variants(variants_path)
    genome_msa = GenomeMSA(
        msa_path, subset_chroms=sorted(variants["chrom"].unique()), in_memory=in_memory
    )
    n_dev = fabric.world_size
    if args.mode == "full" and args.grad_accum is None:  # C.7: effective batch 2048
        cfg["accum"] = max(1, EFFECTIVE_BATCH_FULL // (cfg["batch"] * n_dev))
    print(
        f"[{args.mode}] {len(train_ds)} training windows, {train_ds.genome_msa.n_species} "
        f"species + human; model {cfg['layers']}x{cfg['heads']}x{cfg['hidden']}; "
        f"{cfg['steps']} steps x effective batch {cfg['batch'] * cfg['accum'] * n_dev}; "
        f"{len(variants)} variants"
    )
    rows = {}
    for name in schemes:
        rows[name] = train_one(name, cfg, args, fabric, train_ds, valid_ds, genome_msa, variants)
        if fabric.is_global_zero:
            r = rows[name]
            print(
                f"  {name:<20s} val_loss@15% {r['val_loss@15%']:.4f}  missense AUROC "
                f"{r.get('missense AUROC', float('nan')):.3f}  regulatory AUPRC "
                f"{r.get('regulatory AUPRC', float('nan')):.3f}  ({r['train_seconds']:.0f}s)"
            )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "scheme"
    if fabric.is_global_zero:
        _write(table, out, args.mode)
    return table


TABLE3_COLUMNS = [
    "missense AUROC",
    "missense AUPRC",
    "regulatory pAUROC",
    "regulatory AUPRC",
    "5'UTR AUPRC",
    "3'UTR AUPRC",
    "ncRNA AUPRC",
]


def _write(table: pd.DataFrame, out: Path, mode: str) -> None:
    from matplotlib.figure import Figure

    table.to_csv(out / "table3.csv")
    cols = [c for c in TABLE3_COLUMNS if c in table.columns] + ["val_loss@15%"]
    text = table[cols].to_markdown(floatfmt=".3f")
    (out / "table3.md").write_text(
        f"Table 3 layout ({mode} mode, synthetic or given data); pAUROC = McClish-standardised "
        f"partial AUROC at max FPR 0.001.\n\n{text}\n"
    )
    print(text)
    fig = Figure(figsize=(2.2 * len(cols), 0.35 * len(table) + 1.8), layout="constrained")
    axes = fig.subplots(1, len(cols), sharey=True)
    y = np.arange(len(table))
    for ax, col in zip(np.atleast_1d(axes), cols, strict=True):
        ax.barh(y, table[col].to_numpy(dtype=float), color="tab:blue")
        ax.set_title(col, fontsize=8)
        lo, hi = np.nanmin(table[col]), np.nanmax(table[col])
        pad = 0.1 * (hi - lo) + 1e-3
        ax.set_xlim(lo - pad, hi + pad)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[0].set_yticks(y, table.index, fontsize=7)
    np.atleast_1d(axes)[0].invert_yaxis()
    fig.savefig(out / "table3.png", dpi=120)


if __name__ == "__main__":
    main()
