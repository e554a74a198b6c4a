"""Shared pieces of the vision reproductions: data loaders, masking, probes, effective rank.

Loaders return float images in ``[0, 1]`` with shape ``(n, channels, height, width)``:

* :func:`load_digits_images` - scikit-learn's handwritten digits (8x8, ships with sklearn);
* :func:`load_mnist` - MNIST from the four official IDX files (optionally gzipped);
* :func:`load_celeba` / :class:`CelebADataset` - CelebA in its official layout
  (``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``);
* :class:`ImageFolderDataset` - an ImageNet-style ``root/<class>/<image>`` folder, read with PIL.
"""

from __future__ import annotations

import gzip
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from scr2mae.masking import RatioSchedule, exact_count_mask, get_masking

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common as tail  # the benchmarks' shared command-line, table and figure tail

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------------- data
def load_digits_images(size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits as ``(n, 1, 8, 8)`` images in ``[0, 1]``.

    Parameters
    ----------
    size
        Resize (bilinear) to ``size x size``; ``None`` keeps 8x8.

    Returns
    -------
    Images (float32) and labels (long).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size is not None and size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1), torch.tensor(d.target, dtype=torch.long)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The array with the shape and dtype stored in the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}.")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values.")
    return data.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"no {stem}[.gz] under {root}.")


def load_mnist(root: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from the official IDX files (``train-images-idx3-ubyte[.gz]`` and friends).

    Parameters
    ----------
    root
        Folder holding the files.
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000, files prefixed ``t10k``).

    Returns
    -------
    Images ``(n, 1, 28, 28)`` in ``[0, 1]`` and labels.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST folder {root} does not exist.")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST {split} files disagree: {images.shape} images, {labels.shape}.")
    x = torch.tensor(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.tensor(labels.astype(np.int64))


def _pil_to_tensor(path: Path, size: int, grayscale: bool = False) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


_CELEBA_SPLITS = {"train": 0, "valid": 1, "val": 1, "test": 2}


def read_celeba_metadata(root: str | Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` and ``list_eval_partition.txt`` of the official layout.

    Returns
    -------
    File names, attributes ``(n, 40)`` in ``{0, 1}``, attribute names, partition ``(n,)``.
    """
    root = Path(root)
    attr_lines = (root / "list_attr_celeba.txt").read_text().split("\n")
    n = int(attr_lines[0].strip())
    names = attr_lines[1].split()
    files, attrs = [], []
    for line in attr_lines[2 : 2 + n]:
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(f"bad line in list_attr_celeba.txt: {line!r}")
        files.append(parts[0])
        attrs.append([int(v) > 0 for v in parts[1:]])
    part = {}
    for line in (root / "list_eval_partition.txt").read_text().split("\n"):
        if line.strip():
            f, p = line.split()
            part[f] = int(p)
    missing = [f for f in files if f not in part]
    if missing:
        raise ValueError(f"{len(missing)} images have no partition, e.g. {missing[0]}.")
    return files, np.array(attrs, dtype=np.float32), names, np.array([part[f] for f in files])


class CelebADataset(torch.utils.data.Dataset):
    """CelebA in the official layout, read lazily with PIL.

    Parameters
    ----------
    root
        Folder with ``img_align_celeba/``, ``list_attr_celeba.txt`` and
        ``list_eval_partition.txt``.
    split
        ``"train"``, ``"valid"`` or ``"test"`` (partition 0, 1, 2).
    size
        Images are resized to ``size x size`` RGB.
    max_images
        Keep only the first ``max_images`` of the split.
    """

    def __init__(self, root, split: str = "train", size: int = 64, max_images: int | None = None):
        if split not in _CELEBA_SPLITS:
            raise ValueError(f"`split` must be one of {sorted(_CELEBA_SPLITS)}, got {split!r}.")
        self.root = Path(root)
        if not (self.root / "img_align_celeba").is_dir():
            raise FileNotFoundError(f"{self.root} has no img_align_celeba/ folder.")
        files, attrs, names, part = read_celeba_metadata(self.root)
        keep = np.flatnonzero(part == _CELEBA_SPLITS[split])[:max_images]
        self.files = [files[i] for i in keep]
        self.attributes = torch.tensor(attrs[keep])
        self.attribute_names = names
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = _pil_to_tensor(self.root / "img_align_celeba" / self.files[i], self.size)
        return img, self.attributes[i]


def load_celeba(root, split="train", size=64, max_images=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a CelebA split into memory: images ``(n, 3, size, size)`` and attributes ``(n, 40)``."""
    ds = CelebADataset(root, split, size, max_images)
    if len(ds) == 0:
        raise ValueError(f"CelebA split {split!r} under {root} is empty.")
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


class ImageFolderDataset(torch.utils.data.Dataset):
    """An ImageNet-style folder ``root/<class>/<image>``, read lazily with PIL.

    Parameters
    ----------
    root
        The split folder (e.g. ``imagenet/train``); class names are its sorted subfolders.
    size
        Images are resized to ``size x size``.
    grayscale
        Read one channel instead of RGB.
    max_per_class
        Keep at most this many images per class (sorted by name).
    """

    def __init__(self, root, size: int = 224, grayscale: bool = False, max_per_class=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist.")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class subfolders.")
        self.samples = []
        for label, cls in enumerate(self.classes):
            files = sorted(
                p for p in (self.root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            self.samples += [(p, label) for p in files[:max_per_class]]
        self.size, self.grayscale = size, grayscale

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return _pil_to_tensor(path, self.size, self.grayscale), label


def train_test_split(x, y, n_test: int, seed: int = 0):
    """Random split of tensors into train and test parts."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


# ------------------------------------------------------------------------------ masking
def pixel_mask(images: torch.Tensor, ratio, generator=None) -> torch.Tensor:
    """Per-image pixel mask (``True`` = hidden), shared by the channels of a pixel.

    Exactly ``round(ratio * H * W)`` pixels are hidden in every image.
    """
    n, _, h, w = images.shape
    m = exact_count_mask(n, h * w, ratio, generator=generator, device=images.device)
    return m.reshape(n, 1, h, w)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked entries only (visible entries carry no loss).

    ``mask`` broadcasts against ``prediction`` (e.g. ``(n, 1, h, w)`` for ``(n, c, h, w)``).
    """
    m = mask.expand_as(prediction).to(prediction.dtype)
    return ((prediction - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def pretrain_masked(model, x, mask_fn, epochs, batch_size, lr, generator, device):
    """Masked pretraining of ``model`` on the images ``x``; returns it in eval mode.

    Adam at ``lr``; every epoch a fresh permutation from ``generator``; each mini-batch is
    moved to ``device`` and scored by ``model.loss(batch, mask_fn(batch))`` (a batch of one
    image is skipped: batch norm needs two).
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            xb = x[perm[i : i + batch_size]].to(device)
            if len(xb) < 2:
                continue
            loss = model.loss(xb, mask_fn(xb))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def make_schedule(name: str, total_steps: int) -> RatioSchedule:
    """The vision schemes of appendix C.5 by name (``"fixed_0.75"``, ``"mdlm"``, ...)."""
    if name.startswith("fixed_"):
        return get_masking("fixed", mask_ratio=float(name.split("_", 1)[1]))
    if name == "mdlm":
        return get_masking("mdlm")
    if name == "dynamic":  # appendix C.5: linear decay 0.9 -> 0.6 over training
        return get_masking("dynamic", start=0.9, end=0.6, total_steps=total_steps)
    if name == "r2mae":  # range not legible in the text extraction: centred on the 0.75 default
        return get_masking("r2mae", p_min=0.6, p_max=0.9)
    raise ValueError(f"unknown scheme {name!r}.")


# ------------------------------------------------------------------------------- probes
def effective_rank(embeddings: torch.Tensor | np.ndarray, exponentiate: bool = False) -> float:
    """Effective rank: entropy of the sum-normalised singular values (section 3.5, Fig. 2D).

    Parameters
    ----------
    embeddings
        Matrix ``(n_samples, dim)``.
    exponentiate
        Return ``exp(entropy)`` (Roy and Vetterli's effective rank, in units of dimensions)
        instead of the entropy in nats.

    Returns
    -------
    ``-sum_i p_i log p_i`` with ``p_i = s_i / sum_j s_j`` (zero singular values contribute 0).
    """
    z = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if z.dim() != 2:
        raise ValueError(f"`embeddings` must be a 2-d matrix, got shape {tuple(z.shape)}.")
    s = torch.linalg.svdvals(z)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    h = float(-(p * p.log()).sum())
    return math.exp(h) if exponentiate else h


def train_head(
    features_train: torch.Tensor,
    y_train: torch.Tensor,
    head: nn.Module,
    *,
    multilabel: bool = False,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Module:
    """Train ``head`` on frozen features with Adam (cross-entropy, or BCE for multi-label)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    n = len(features_train)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            out = head(features_train[idx])
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(out, y_train[idx].float())
            else:
                loss = F.cross_entropy(out, y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    return head


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == y.unsqueeze(1)).any(1).float().mean())


def pick_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def training_device(name: str) -> torch.device:
    """:func:`pick_device`, with torch held to one thread when that is the CPU."""
    device = pick_device(name)
    if device.type == "cpu":
        torch.set_num_threads(1)
    return device


def save_runs(rows: list[dict], out: str | Path, filename: str) -> tuple[pd.DataFrame, Path]:
    """The table of the runs ``rows``, written as ``filename`` (CSV, no index) in the output
    folder ``out`` (created if missing); returns the table and the folder."""
    runs = pd.DataFrame(rows)
    folder = tail.output_dir(out)
    runs.to_csv(folder / filename, index=False)
    return runs, folder


def write_report(path: Path, title: str, sections) -> str:
    """Write ``# title`` and each ``(heading, text)`` of ``sections`` as Markdown to ``path``
    (a ``None`` heading: the text alone) and return the report."""
    parts = [f"# {title}"]
    for heading, text in sections:
        parts += [text] if heading is None else [f"## {heading}", text]
    report = "\n\n".join(parts) + "\n"
    Path(path).write_text(report)
    return report


def save_line_plot(path, frame, x, y, hue, title, ylabel, xlabel="masking ratio") -> None:
    """One line per ``hue`` value of ``y`` against ``x``; saved as PNG."""
    plt = tail.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, sub in frame.groupby(hue, sort=False):
        sub = sub.sort_values(x)
        ax.plot(sub[x], sub[y], marker="o", label=str(key))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    tail.save_figure(fig, path)
