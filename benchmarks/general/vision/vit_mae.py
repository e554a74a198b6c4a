"""Table 1: ViT masked autoencoders under six masking schemes (section 4.1, appendix C.5).

    python benchmarks/general/vision/vit_mae.py --mode quick                       # digits, CPU
    python benchmarks/general/vision/vit_mae.py --mode full --imagenet DIR         # GPU

An MAE (the encoder sees only the visible patches; a light decoder fills in mask tokens and
predicts the pixels of every patch; MSE on the masked patches only) is pretrained with each
scheme: fixed ratio 0.75 (MAE default), 0.9 and 0.5, MDLM (ratio ~ U(0, 1)), dynamic (linear
decay 0.9 -> 0.6 over training) and R2MAE (ratio ~ U(0.6, 0.9) per mini-batch). The pretrained
encoder is then evaluated by fine-tuning (encoder + linear head, end to end) and by linear
probing (frozen encoder, mean-pooled patch tokens), giving top-1 and top-5 accuracy in the
layout of Table 1.

Quick mode: scikit-learn's digits upsampled to 16x16, 4x4 patches (16 tokens), a 3-block
64-wide encoder and a 1-block decoder, several seeds. Full mode: an ImageNet-style folder
(``DIR/train/<class>/*``, ``DIR/val/<class>/*``) read lazily with PIL at 224x224, ViT-Base/16
encoder and the MAE decoder (8 blocks, width 512); it needs a GPU. Writes ``vit_mae.csv/.md``
and ``table1_vit_mae.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail
import _vision_common as vision  # the vision benchmarks' data, masks and training

from scr2mae.masking import ratio_to_count

SCHEMES = {
    "fixed_0.75": "MR 0.75 (default)",
    "fixed_0.9": "MR 0.9",
    "fixed_0.5": "MR 0.5",
    "mdlm": "MDLM",
    "dynamic": "Dynamic MR",
    "r2mae": "R2MAE",
}
MODES = {
    "smoke": dict(
        size=16,
        patch=4,
        dim=32,
        depth=1,
        heads=2,
        ddim=16,
        ddepth=1,
        epochs=2,
        ft_epochs=1,
        batch=128,
        lr=2e-3,
        ft_lr=1e-3,
        seeds=(0,),
    ),
    "quick": dict(
        size=16,
        patch=4,
        dim=64,
        depth=3,
        heads=4,
        ddim=32,
        ddepth=1,
        epochs=40,
        ft_epochs=10,
        batch=128,
        ft_batch=64,
        lr=2e-3,
        ft_lr=5e-4,
        seeds=(0, 1),
    ),
    "full": dict(
        size=224,
        patch=16,
        dim=768,
        depth=12,
        heads=12,
        ddim=512,
        ddepth=8,
        epochs=150,
        ft_epochs=100,
        batch=256,
        lr=1.5e-4,
        ft_lr=5e-4,
        seeds=(0,),
    ),
}


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(n, c, h, w)`` -> ``(n, h/p * w/p, p*p*c)`` in row-major patch order."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def _blocks(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class MaskedViT(nn.Module):
    """A small MAE: ViT encoder on visible patches, light transformer decoder.

    Parameters
    ----------
    image_size, patch, channels
        Image side, patch side and channels; ``image_size`` must be divisible by ``patch``.
    dim, depth, heads
        Encoder width, blocks and attention heads.
    decoder_dim, decoder_depth
        Decoder width and blocks (heads: ``max(1, decoder_dim // 32)``).
    """

    def __init__(
        self,
        image_size=16,
        patch=4,
        channels=1,
        dim=64,
        depth=3,
        heads=4,
        decoder_dim=32,
        decoder_depth=1,
    ):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"`image_size` {image_size} is not divisible by `patch` {patch}.")
        self.patch, self.n_patches = patch, (image_size // patch) ** 2
        p_dim = patch * patch * channels
        self.embed = nn.Linear(p_dim, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, self.n_patches + 1, dim) * 0.02)
        self.encoder, self.norm = _blocks(dim, depth, heads), nn.LayerNorm(dim)
        self.to_decoder = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.dec_pos = nn.Parameter(torch.randn(1, self.n_patches + 1, decoder_dim) * 0.02)
        self.decoder = _blocks(decoder_dim, decoder_depth, max(1, decoder_dim // 32))
        self.dec_norm, self.to_pixels = nn.LayerNorm(decoder_dim), nn.Linear(decoder_dim, p_dim)
        self.dim = dim

    def encode(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder tokens ``(n, 1 + n_visible, dim)``; ``keep`` holds visible patch indices."""
        x = self.embed(patchify(images, self.patch)) + self.pos[:, 1:]
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls = (self.cls + self.pos[:, :1]).expand(len(x), -1, -1)
        return self.norm(self.encoder(torch.cat([cls, x], 1)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the patch tokens of unmasked images (global pooling, as in MAE fine-tuning)."""
        return self.encode(images)[:, 1:].mean(1)

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixel predictions ``(n, n_patches, p*p*c)``; ``mask`` ``(n, n_patches)``, True = hidden.

        Every row must hide the same number of patches (one ratio per mini-batch).
        """
        order = torch.argsort(mask.int(), dim=1, stable=True)  # visible patches first
        n_visible = int((~mask[0]).sum())
        latent = self.to_decoder(self.encode(images, order[:, :n_visible]))
        n, L = mask.shape
        tokens = self.mask_token.expand(n, L, -1).clone()
        tokens.scatter_(
            1, order[:, :n_visible].unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), latent[:, 1:]
        )
        x = torch.cat([latent[:, :1], tokens], 1) + self.dec_pos
        return self.to_pixels(self.dec_norm(self.decoder(x)))[:, 1:]

    def loss(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the pixels of masked patches only."""
        err = ((self.predict(images, mask) - patchify(images, self.patch)) ** 2).mean(-1)
        m = mask.to(err.dtype)
        return (err * m).sum() / m.sum().clamp_min(1.0)


def patch_mask(n: int, n_patches: int, ratio: torch.Tensor, generator=None) -> torch.Tensor:
    """Same number of hidden patches in every row, clipped to ``[1, n_patches - 1]``.

    A ratio of 0 would leave nothing to reconstruct and 1 nothing to encode (both can be drawn
    by MDLM), hence the clipping.
    """
    k = ratio_to_count(ratio.reshape(1), n_patches).clamp(1, n_patches - 1)
    return vision.exact_count_mask(n, n_patches, k.float() / n_patches, generator=generator)


def _lr_at(step, total, base, warmup_frac=10 / 150):
    warm = max(1, int(warmup_frac * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _batches(data, batch, generator, shuffle=True):
    """Yield (images, labels) mini-batches from tensors or a Dataset."""
    if isinstance(data, tuple):
        x, y = data
        idx = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), batch):
            yield x[idx[i : i + batch]], y[idx[i : i + batch]]
    else:
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=batch,
            shuffle=shuffle,
            num_workers=8,
            generator=generator,
            drop_last=shuffle,
        )
        yield from loader


def _n_batches(data, batch):
    return math.ceil(len(data[0]) / batch) if isinstance(data, tuple) else len(data) // batch


def pretrain(model, data, scheme, cfg, seed, device):
    """MAE pretraining with the ratio of every mini-batch drawn from ``scheme``'s schedule."""
    g = torch.Generator().manual_seed(seed)
    total = cfg["epochs"] * _n_batches(data, cfg["batch"])
    schedule = vision.make_schedule(scheme, total)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.05)
    model.train()
    step, ratios = 0, []
    for _ in range(cfg["epochs"]):
        for xb, _ in _batches(data, cfg["batch"], g):
            ratio = schedule.sample(step, 1, generator=g)
            mask = patch_mask(len(xb), model.n_patches, ratio, generator=g)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg["lr"])
            loss = model.loss(xb.to(device), mask.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ratios.append(float(ratio))
            step += 1
    return model.eval(), float(np.mean(ratios))


@torch.no_grad()
def _features(model, data, device, batch=256):
    feats, labels = [], []
    for xb, yb in _batches(data, batch, None, shuffle=False):
        feats.append(model.features(xb.to(device)))
        labels.append(torch.as_tensor(yb))
    return torch.cat(feats), torch.cat(labels).to(device)


def linear_probe(model, train, test, n_classes, device, seed):
    """Frozen encoder, standardised mean-pooled features, a new linear layer (Adam, 30 epochs)."""
    f_tr, y_tr = _features(model, train, device)
    f_te, y_te = _features(model, test, device)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    head = vision.train_head(
        (f_tr - mu) / sd,
        y_tr,
        nn.Linear(model.dim, n_classes).to(device),
        epochs=30,
        lr=3e-3,
        seed=seed,
    )
    with torch.no_grad():
        logits = head((f_te - mu) / sd)
    return vision.topk_accuracy(logits, y_te, 1), vision.topk_accuracy(logits, y_te, 5)


def fine_tune(model, train, test, n_classes, cfg, device, seed):
    """End-to-end fine-tuning of encoder + batch-norm + linear head (AdamW, warm-up + cosine)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # mean-pooled MAE tokens vary little between images next to their common offset (the
    # position embeddings), so the head standardises them with batch norm (MAE's linear probe
    # does the same); its statistics are re-estimated on the training set after training
    head = nn.Sequential(nn.BatchNorm1d(model.dim, affine=False), nn.Linear(model.dim, n_classes))
    head = head.to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["ft_lr"], weight_decay=0.05)
    batch = cfg.get("ft_batch", cfg["batch"])
    total, step = cfg["ft_epochs"] * _n_batches(train, batch), 0
    model.train()
    head.train()
    for _ in range(cfg["ft_epochs"]):
        for xb, yb in _batches(train, batch, g):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg["ft_lr"], warmup_frac=0.05)
            logits = head(model.features(xb.to(device)))
            loss = F.cross_entropy(logits, torch.as_tensor(yb).to(device), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
    model.eval()
    bn = head[0]
    bn.reset_running_stats()
    bn.momentum = None  # cumulative average over one pass of the training set
    with torch.no_grad():
        for xb, _ in _batches(train, 256, None, shuffle=False):
            bn(model.features(xb.to(device)))
    head.eval()
    with torch.no_grad():
        logits, labels = [], []
        for xb, yb in _batches(test, 256, None, shuffle=False):
            logits.append(head(model.features(xb.to(device))))
            labels.append(torch.as_tensor(yb))
        logits, labels = torch.cat(logits), torch.cat(labels).to(device)
    return vision.topk_accuracy(logits, labels, 1), vision.topk_accuracy(logits, labels, 5)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Pretrain and evaluate every scheme; write and return the Table-1-style table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument(
        "--imagenet", default=None, help="folder with train/ and val/ class folders"
    )
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--epochs", type=int, default=None, help="override pretraining epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/vision/vit_mae")
    args = parser.parse_args(argv)
    cfg = dict(MODES[args.mode])
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.mode == "full" and args.imagenet is None:
        parser.error("--mode full needs --imagenet DIR")
    device = vision.training_device(args.device)

    if args.imagenet is not None:
        root = Path(args.imagenet)
        train = vision.ImageFolderDataset(
            root / "train", cfg["size"], max_per_class=args.max_per_class
        )
        test = vision.ImageFolderDataset(
            root / "val", cfg["size"], max_per_class=args.max_per_class
        )
        channels, n_classes, data = 3, len(train.classes), f"image folder {root.name}"
    else:
        x, y = vision.load_digits_images(size=cfg["size"])
        x_tr, y_tr, x_te, y_te = vision.train_test_split(x, y, n_test=500, seed=0)
        train, test = (x_tr, y_tr), (x_te, y_te)
        channels, n_classes, data = 1, 10, f"digits {cfg['size']}x{cfg['size']}"
    print(f"{data}: {len(train[0]) if isinstance(train, tuple) else len(train)} training images")

    rows, start = [], time.perf_counter()
    for scheme in args.schemes:
        for seed in cfg["seeds"]:
            torch.manual_seed(seed)
            model = MaskedViT(
                cfg["size"],
                cfg["patch"],
                channels,
                cfg["dim"],
                cfg["depth"],
                cfg["heads"],
                cfg["ddim"],
                cfg["ddepth"],
            ).to(device)
            model, mean_ratio = pretrain(model, train, scheme, cfg, seed, device)
            lp1, lp5 = linear_probe(model, train, test, n_classes, device, seed)
            ft1, ft5 = fine_tune(model, train, test, n_classes, cfg, device, seed)
            rows.append(
                {
                    "scheme": SCHEMES[scheme],
                    "seed": seed,
                    "mean_ratio": mean_ratio,
                    "finetune_top1": 100 * ft1,
                    "finetune_top5": 100 * ft5,
                    "linprobe_top1": 100 * lp1,
                    "linprobe_top5": 100 * lp5,
                }
            )
            print(
                f"[{time.perf_counter() - start:6.1f}s] {SCHEMES[scheme]} seed {seed}: "
                f"fine-tune top-1 {100 * ft1:.2f}, linear probe top-1 {100 * lp1:.2f}"
            )
    raw, out = vision.save_runs(rows, args.out, "vit_mae_runs.csv")
    metrics = {
        "finetune_top1": "Fine-tune Top1 Acc.",
        "finetune_top5": "Fine-tune Top5 Acc.",
        "linprobe_top1": "Linear-probe Top1 Acc.",
        "linprobe_top5": "Linear-probe Top5 Acc.",
    }
    mean = raw.groupby("scheme", sort=False)[list(metrics)].mean()
    table = mean.T.rename(index=metrics)
    table.index.name = "Metric"
    table.to_csv(out / "vit_mae.csv")
    sd = raw.groupby("scheme", sort=False)[list(metrics)].std().T.rename(index=metrics)
    md = vision.write_report(
        out / "vit_mae.md",
        f"Table 1 layout: ViT MAE on {data} ({args.mode} mode, {cfg['epochs']} pretraining "
        f"epochs, {len(cfg['seeds'])} seed(s); mean over seeds)",
        [
            (None, table.to_markdown(floatfmt=".2f")),
            ("Standard deviation over seeds", sd.to_markdown(floatfmt=".2f")),
        ],
    )
    _plot(out / "table1_vit_mae.png", raw, data)
    print(md)
    return table


def _plot(path, raw, data) -> None:
    plt = tail.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, title in (
        (axes[0], "finetune_top1", "fine-tuning"),
        (axes[1], "linprobe_top1", "linear probing"),
    ):
        g = raw.groupby("scheme", sort=False)[col]
        m, s = g.mean(), g.std().fillna(0)
        ax.bar(range(len(m)), m.values, yerr=s.values, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(m)), m.index, rotation=30, ha="right", fontsize=8)
        lo = max(0.0, float((m - s).min()) - 2)
        ax.set_ylim(lo, min(100.0, float((m + s).max()) + 1))
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
    fig.suptitle(f"Table 1 ({data}): ViT MAE masking schemes")
    tail.save_figure(fig, path)


if __name__ == "__main__":
    main()
