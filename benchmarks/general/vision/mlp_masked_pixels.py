"""Fig. 2A / 2D: MLP masked-pixel autoencoders across masking ratios (appendix C.3).

    python benchmarks/general/vision/mlp_masked_pixels.py --mode quick   # sklearn digits, CPU
    python benchmarks/general/vision/mlp_masked_pixels.py --mode full --mnist DIR  # MNIST IDX

A three-layer MLP (input -> hidden1 -> hidden2 -> input; batch norm + ReLU on the hidden
layers, sigmoid output) is trained to reconstruct the masked pixels (MSE on masked pixels
only) at masking ratios 0.1 ... 0.9. Its encoder (the first two layers) is then frozen and a new
linear layer from hidden2 to the 10 classes is trained (linear probing, Fig. 2A); the effective
rank of the hidden2 embeddings of the test images is Fig. 2D.

"Parameter-insufficient" models have a narrow first layer (16 units on MNIST's 784 pixels in
the paper; 8 units on the 64 pixels of the digits in quick mode), "parameter-sufficient" ones a
wide first layer (512 on MNIST, 256 on digits). Writes ``mlp_masked_pixels.csv/.md`` and
``fig2a_probe_error.png`` / ``fig2d_effective_rank.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _vision_common as vision  # the vision benchmarks' data, masks and training

RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
MODES = {
    # (first hidden widths by regime, second hidden widths, ratios, epochs, seeds)
    "smoke": ({"insufficient": 8, "sufficient": 64}, (16,), (0.2, 0.8), 2, (0,)),
    "quick": ({"insufficient": 8, "sufficient": 256}, (16, 64, 256), RATIOS, 30, (0, 1, 2)),
    "full": ({"insufficient": 16, "sufficient": 512}, (16, 32, 64, 256, 1024), RATIOS, 15, (0,)),
}


class MaskedPixelMLP(nn.Module):
    """Encoder-decoder MLP of appendix C.3.

    Parameters
    ----------
    n_pixels
        Input and output size (flattened image).
    hidden1, hidden2
        Widths of the two hidden layers; ``hidden2`` is the embedding.
    """

    def __init__(self, n_pixels: int, hidden1: int, hidden2: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_pixels, hidden1),
            nn.BatchNorm1d(hidden1),
            nn.ReLU(),
            nn.Linear(hidden1, hidden2),
            nn.BatchNorm1d(hidden2),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(nn.Linear(hidden2, n_pixels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct flattened images ``(n, n_pixels)``."""
        return self.decoder(self.encoder(x))

    def loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE on the masked pixels of ``x`` (masked pixels are zeroed at the input)."""
        return vision.masked_mse(self(x.masked_fill(mask, 0.0)), x, mask)


def pretrain(x, ratio, hidden1, hidden2, epochs, seed, batch_size=128, lr=3e-3, device="cpu"):
    """Train one :class:`MaskedPixelMLP` at a fixed masking ratio; returns the model."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = MaskedPixelMLP(x.shape[1], hidden1, hidden2).to(device)

    def mask_fn(xb):
        return vision.pixel_mask(xb.view(len(xb), 1, 1, -1), ratio, generator=g).view_as(xb)

    return vision.pretrain_masked(model, x, mask_fn, epochs, batch_size, lr, g, device)


@torch.no_grad()
def embed(model: MaskedPixelMLP, x: torch.Tensor) -> torch.Tensor:
    """Hidden2 embeddings of unmasked images (eval-mode batch norm)."""
    return model.encoder(x)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the sweep, write table and figures, return the per-setting table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--mnist", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=None, help="override the mode's epochs")
    parser.add_argument(
        "--hidden1",
        type=int,
        nargs=2,
        default=None,
        metavar=("INSUFFICIENT", "SUFFICIENT"),
        help="override first-layer widths",
    )
    parser.add_argument("--hidden2", type=int, nargs="+", default=None, help="override hidden2")
    parser.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    parser.add_argument(
        "--digits-size",
        type=int,
        default=8,
        help="quick mode: resize the 8x8 digits (28 gives MNIST's 784 pixels)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/vision/mlp")
    args = parser.parse_args(argv)
    widths1, widths2, ratios, epochs, seeds = MODES[args.mode]
    if args.epochs is not None:
        epochs = args.epochs
    if args.hidden1 is not None:
        widths1 = dict(zip(("insufficient", "sufficient"), args.hidden1, strict=True))
    if args.hidden2 is not None:
        widths2 = tuple(args.hidden2)
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        seeds = tuple(range(args.seeds))
    if min(widths1.values()) < 1 or min(widths2) < 1 or args.digits_size < 2:
        parser.error("widths and --digits-size must be positive")
    if args.mode == "full" and args.mnist is None:
        parser.error("--mode full needs --mnist DIR (the official IDX files)")
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())

    if args.mnist is not None:
        x_tr, y_tr = vision.load_mnist(args.mnist, "train")
        x_te, y_te = vision.load_mnist(args.mnist, "test")
        data = "MNIST"
    else:
        x, y = vision.load_digits_images(size=args.digits_size)
        x_tr, y_tr, x_te, y_te = vision.train_test_split(x, y, n_test=500, seed=0)
        data = (
            "digits" if args.digits_size == 8 else f"digits {args.digits_size}x{args.digits_size}"
        )
    x_tr, x_te = x_tr.flatten(1), x_te.flatten(1)
    print(f"{data}: {len(x_tr)} train / {len(x_te)} test images of {x_tr.shape[1]} pixels")

    rows = []
    start = time.perf_counter()
    for regime, h1 in widths1.items():
        for h2 in widths2:
            for ratio in ratios:
                for seed in seeds:
                    model = pretrain(x_tr, ratio, h1, h2, epochs, seed, device=args.device)
                    z_tr, z_te = (
                        embed(model, x_tr.to(args.device)),
                        embed(model, x_te.to(args.device)),
                    )
                    head = vision.train_head(
                        z_tr,
                        y_tr.to(args.device),
                        nn.Linear(h2, 10).to(args.device),
                        epochs=15,
                        lr=3e-3,
                        seed=seed,
                    )
                    with torch.no_grad():
                        acc = vision.topk_accuracy(head(z_te), y_te.to(args.device))
                        mask = vision.pixel_mask(
                            x_te.view(len(x_te), 1, 1, -1),
                            ratio,
                            generator=torch.Generator().manual_seed(99),
                        )
                        mse = float(
                            model.loss(x_te.to(args.device), mask.view_as(x_te).to(args.device))
                        )
                    rows.append(
                        {
                            "regime": regime,
                            "hidden1": h1,
                            "hidden2": h2,
                            "mask_ratio": ratio,
                            "seed": seed,
                            "probe_error": 1.0 - acc,
                            "effective_rank": vision.effective_rank(z_te.cpu()),
                            "masked_mse": mse,
                        }
                    )
            done = pd.DataFrame(rows)
            sub = done[(done.hidden1 == h1) & (done.hidden2 == h2)]
            print(
                f"[{time.perf_counter() - start:6.1f}s] {regime} {h1}-{h2}: probe error by ratio "
                + " ".join(
                    f"{r:.1f}:{e:.3f}"
                    for r, e in sub.groupby("mask_ratio").probe_error.mean().items()
                )
            )
    raw, out = vision.save_runs(rows, args.out, "mlp_masked_pixels_runs.csv")
    table = (
        raw.groupby(["regime", "hidden1", "hidden2", "mask_ratio"], sort=False)[
            ["probe_error", "effective_rank", "masked_mse"]
        ]
        .mean()
        .reset_index()
    )
    table["model"] = table.apply(lambda r: f"{r.regime} {r.hidden1}-{r.hidden2}", axis=1)
    table.to_csv(out / "mlp_masked_pixels.csv", index=False)
    summary = summarise(table)
    wide = table.pivot_table(index="model", columns="mask_ratio", values="probe_error", sort=False)
    wide_er = table.pivot_table(
        index="model", columns="mask_ratio", values="effective_rank", sort=False
    )
    md = vision.write_report(
        out / "mlp_masked_pixels.md",
        f"MLP masked-pixel autoencoders on {data} ({args.mode} mode, {epochs} epochs, "
        f"{len(seeds)} seed(s))",
        [
            ("Linear-probe error rate (Fig. 2A)", wide.to_markdown(floatfmt=".3f")),
            (
                "Effective rank of the embeddings, nats (Fig. 2D)",
                wide_er.to_markdown(floatfmt=".3f"),
            ),
            ("Trend per model", summary.to_markdown(index=False, floatfmt=".3f")),
        ],
    )
    vision.save_line_plot(
        out / "fig2a_probe_error.png",
        table,
        "mask_ratio",
        "probe_error",
        "model",
        f"Fig. 2A ({data}): linear probing",
        "probe error rate",
    )
    vision.save_line_plot(
        out / "fig2d_effective_rank.png",
        table[table.regime == "sufficient"],
        "mask_ratio",
        "effective_rank",
        "model",
        f"Fig. 2D ({data}): parameter-sufficient",
        "effective rank (nats)",
    )
    print(md)
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: best ratio, error at the extreme ratios, slopes of error and rank vs ratio."""
    rows = []
    for model, sub in table.groupby("model", sort=False):
        sub = sub.sort_values("mask_ratio")
        slope = np.polyfit(sub.mask_ratio, sub.probe_error, 1)[0] if len(sub) > 1 else np.nan
        er_slope = np.polyfit(sub.mask_ratio, sub.effective_rank, 1)[0] if len(sub) > 1 else np.nan
        best = sub.loc[sub.probe_error.idxmin()]
        rows.append(
            {
                "model": model,
                "best_ratio": best.mask_ratio,
                "best_error": best.probe_error,
                "error@min_ratio": sub.probe_error.iloc[0],
                "error@max_ratio": sub.probe_error.iloc[-1],
                "error_slope": slope,
                "rank_slope": er_slope,
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
