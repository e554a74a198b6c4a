"""Fig. 2B: U-Net masked-pixel reconstruction and probing across masking ratios (appendix C.4).

    python benchmarks/general/vision/unet_masked.py --mode quick                 # digits, CPU
    python benchmarks/general/vision/unet_masked.py --mode full --celeba DIR     # CelebA, GPU

A U-Net (four down-sampling blocks, a bottleneck, four up-sampling blocks with skip
connections; every block two 3x3 convolutions with batch norm and ReLU) with base channels
8, 16 or 32 is trained to reconstruct masked pixels (MSE on masked pixels only). Evaluation as in
the paper: the reconstruction MSE of *uncorrupted* test images, and probing of the frozen encoder
+ bottleneck (global average pooling, a shared 512-unit layer with dropout, one linear output
per attribute, binary cross-entropy for CelebA's 40 attributes; a 10-way softmax for digits).

Quick mode uses scikit-learn's digits upsampled to 16x16 (four poolings take 16x16 to 1x1); full
mode reads CelebA in its official layout (``img_align_celeba/``, ``list_attr_celeba.txt``,
``list_eval_partition.txt``) at 64x64 with the official train/test partition. Writes
``unet_masked.csv/.md`` and ``fig2b_unet.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail
import _vision_common as vision  # the vision benchmarks' data, masks and training

MODES = {
    # base channels, ratios, pretraining epochs, probe epochs, batch size, learning rate
    "smoke": ((4,), (0.3, 0.7), 1, 2, 64, 1e-3),
    "quick": ((8, 16, 32), (0.1, 0.3, 0.5, 0.7, 0.9), 4, 10, 64, 2e-3),
    "full": ((8, 16, 32), tuple(round(0.1 * i, 1) for i in range(1, 10)), 10, 10, 256, 1e-3),
}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MaskedUNet(nn.Module):
    """U-Net for masked-pixel reconstruction (appendix C.4).

    Parameters
    ----------
    channels
        Image channels (1 for digits/MNIST, 3 for CelebA).
    base
        Channels of the first block; block ``i`` has ``base * 2**i``, the bottleneck
        ``base * 16``.
    depth
        Number of down-sampling blocks (4 in the paper); image sides must be divisible by
        ``2**depth``.
    """

    def __init__(self, channels: int = 1, base: int = 16, depth: int = 4):
        super().__init__()
        widths = [base * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        c = channels
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.bottleneck = _block(c, base * 2**depth)
        c = base * 2**depth
        self.up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.up_blocks.append(_block(2 * w, w))
            c = w
        self.head = nn.Conv2d(c, channels, 1)
        self.depth = depth
        self.feature_dim = base * 2**depth

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder + bottleneck: bottleneck map and the skip tensors."""
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"image sides must be divisible by {2**self.depth}, got {x.shape}.")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.bottleneck(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images (sigmoid output in ``[0, 1]``)."""
        x, skips = self.encode(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], 1))
        return torch.sigmoid(self.head(x))

    def loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE on masked pixels; ``mask`` is ``(n, 1, h, w)``, masked pixels are zeroed."""
        return vision.masked_mse(self(x.masked_fill(mask, 0.0)), x, mask)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Globally average-pooled bottleneck features of uncorrupted images."""
        out = [
            self.encode(x[i : i + batch_size])[0].mean((2, 3)) for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out)


def probe_head(in_dim: int, n_out: int) -> nn.Module:
    """Probe of appendix C.4: shared 512-unit layer with dropout, one linear output per target."""
    return nn.Sequential(nn.Linear(in_dim, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, n_out))


def pretrain(model, x, ratio, epochs, batch_size, lr, seed, device):
    """Masked-pixel pretraining at a fixed ratio."""
    g = torch.Generator().manual_seed(seed)

    def mask_fn(xb):
        return vision.pixel_mask(xb, ratio, generator=g).to(device)

    return vision.pretrain_masked(model, x, mask_fn, epochs, batch_size, lr, g, device)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the sweep, write table and figure, return the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--celeba", default=None, help="CelebA root in the official layout")
    parser.add_argument("--image-size", type=int, default=64, help="CelebA side length")
    parser.add_argument("--max-images", type=int, default=None, help="CelebA images per split")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/vision/unet")
    args = parser.parse_args(argv)
    bases, ratios, epochs, probe_epochs, batch_size, lr = MODES[args.mode]
    if args.mode == "full" and args.celeba is None:
        parser.error("--mode full needs --celeba DIR")
    device = vision.training_device(args.device)

    if args.celeba is not None:
        x_tr, y_tr = vision.load_celeba(args.celeba, "train", args.image_size, args.max_images)
        x_te, y_te = vision.load_celeba(args.celeba, "test", args.image_size, args.max_images)
        multilabel, data, metric = True, "CelebA", "mean attribute accuracy"
    else:
        x, y = vision.load_digits_images(size=16)
        x_tr, y_tr, x_te, y_te = vision.train_test_split(x, y, n_test=500, seed=0)
        multilabel, data, metric = False, "digits 16x16", "accuracy"
    n_out = y_tr.shape[1] if multilabel else int(y_tr.max()) + 1
    print(f"{data}: {len(x_tr)} train / {len(x_te)} test images {tuple(x_tr.shape[1:])}")

    rows, start = [], time.perf_counter()
    for base in bases:
        for ratio in ratios:
            torch.manual_seed(args.seed)
            model = MaskedUNet(x_tr.shape[1], base).to(device)
            pretrain(model, x_tr, ratio, epochs, batch_size, lr, args.seed, device)
            with torch.no_grad():
                recon = torch.cat(
                    [model(x_te[i : i + 256].to(device)) for i in range(0, len(x_te), 256)]
                )
                recon_mse = float(F.mse_loss(recon, x_te.to(device)))
                mask = vision.pixel_mask(
                    x_te, ratio, generator=torch.Generator().manual_seed(99)
                ).to(device)
                masked = float(model.loss(x_te[:500].to(device), mask[:500]))
            f_tr, f_te = model.features(x_tr.to(device)), model.features(x_te.to(device))
            # standardise with training-set statistics (a fixed affine map) so that the probe's
            # optimiser sees comparable scales for every model size and ratio
            mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
            f_tr, f_te = (f_tr - mu) / sd, (f_te - mu) / sd
            head = vision.train_head(
                f_tr,
                y_tr.to(device),
                probe_head(model.feature_dim, n_out).to(device),
                multilabel=multilabel,
                epochs=probe_epochs,
                lr=1e-3,
                seed=args.seed,
            )
            with torch.no_grad():
                logits = head(f_te)
                if multilabel:
                    acc = float(((logits > 0).float() == y_te.to(device)).float().mean())
                else:
                    acc = float((logits.argmax(1) == y_te.to(device)).float().mean())
            rows.append(
                {
                    "base_channels": base,
                    "mask_ratio": ratio,
                    "recon_mse": recon_mse,
                    "masked_mse": masked,
                    "probe_accuracy": acc,
                }
            )
            print(
                f"[{time.perf_counter() - start:6.1f}s] base {base} ratio {ratio}: "
                f"recon MSE {recon_mse:.4f}, probe {metric} {acc:.3f}"
            )
    table, out = vision.save_runs(rows, args.out, "unet_masked.csv")
    recon = table.pivot(index="base_channels", columns="mask_ratio", values="recon_mse")
    probe = table.pivot(index="base_channels", columns="mask_ratio", values="probe_accuracy")
    best = pd.DataFrame(
        {
            "best ratio (reconstruction)": recon.idxmin(axis=1),
            "best ratio (probing)": probe.idxmax(axis=1),
        }
    )
    md = vision.write_report(
        out / "unet_masked.md",
        f"U-Net masked-pixel pretraining on {data} ({args.mode} mode, {epochs} epochs)",
        [
            (
                "Reconstruction MSE of uncorrupted test images (Fig. 2B)",
                recon.to_markdown(floatfmt=".5f"),
            ),
            (f"Probing {metric} (frozen encoder + bottleneck)", probe.to_markdown(floatfmt=".3f")),
            ("Best masking ratio per model size", best.to_markdown()),
        ],
    )
    _plot(out / "fig2b_unet.png", table, data, metric)
    print(md)
    return table


def _plot(path, table, data, metric) -> None:
    plt = tail.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for base, sub in table.groupby("base_channels"):
        axes[0].plot(sub.mask_ratio, sub.recon_mse, marker="o", label=f"base {base}")
        axes[1].plot(sub.mask_ratio, sub.probe_accuracy, marker="o", label=f"base {base}")
    axes[0].set_ylabel("reconstruction MSE (clean input)")
    axes[1].set_ylabel(f"probe {metric}")
    for ax in axes:
        ax.set_xlabel("masking ratio")
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 2B ({data}): U-Net")
    tail.save_figure(fig, path)


if __name__ == "__main__":
    main()
