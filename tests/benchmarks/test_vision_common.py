import gzip
import math
import runpy
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

VISION = Path(__file__).parents[2] / "benchmarks" / "general" / "vision"
sys.path.insert(0, str(VISION))
common = runpy.run_path(str(VISION / "_vision_common.py"))
mlp = runpy.run_path(str(VISION / "mlp_masked_pixels.py"), run_name="mlp_masked_pixels")
unet = runpy.run_path(str(VISION / "unet_masked.py"), run_name="unet_masked")
vit = runpy.run_path(str(VISION / "vit_mae.py"), run_name="vit_mae")


# ---------------------------------------------------------------------------- effective rank
def test_effective_rank_matches_hand_computation():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    z = u[:, :5] @ np.diag(s) @ v.T
    p = np.array([0.5, 0.25, 0.125, 0.125])
    hand = -(p * np.log(p)).sum()  # = 1.2130075659799042 nats
    assert hand == pytest.approx(1.2130075659799042)
    assert common["effective_rank"](z) == pytest.approx(hand, abs=1e-10)
    assert common["effective_rank"](z, exponentiate=True) == pytest.approx(math.exp(hand))
    # a multiple of an orthonormal basis has uniform singular values: entropy log(k)
    assert common["effective_rank"](3 * u[:, :7]) == pytest.approx(math.log(7))
    with pytest.raises(ValueError, match="embeddings"):
        common["effective_rank"](np.ones(4))


# --------------------------------------------------------------------------- masked losses
def _check_ignores_visible(loss_fn, prediction, target, mask, patch_prediction):
    """Changing the prediction where visible leaves the loss alone; where masked it does not."""
    base = loss_fn(prediction)
    visible = ~mask
    assert loss_fn(prediction + 5.0 * visible.expand_as(prediction)) == pytest.approx(float(base))
    assert float(loss_fn(prediction + 5.0 * mask.expand_as(prediction))) > float(base) + 1.0
    m = mask.expand_as(prediction)
    hand = ((patch_prediction - target)[m] ** 2).mean()
    assert float(base) == pytest.approx(float(hand), rel=1e-5)


def _check_model_loss_ignores_visible(model, prediction, target, mask):
    """:func:`_check_ignores_visible` on ``model.loss``, its forward pass replaced by a given
    prediction (pixel models: the prediction is the image)."""
    holder = {"pred": prediction}
    model.forward = lambda inp: holder["pred"]

    def loss_fn(p):
        holder["pred"] = p
        return model.loss(target, mask)

    _check_ignores_visible(loss_fn, prediction, target, mask, prediction)


def test_mlp_loss_uses_masked_pixels_only():
    torch.manual_seed(0)
    model = mlp["MaskedPixelMLP"](16, 8, 4).eval()
    x = torch.rand(6, 16)
    mask = torch.rand(6, 16) < 0.4
    pred = torch.rand(6, 16)
    _check_model_loss_ignores_visible(model, pred, x, mask)


def test_unet_loss_uses_masked_pixels_only_and_shapes():
    torch.manual_seed(0)
    model = unet["MaskedUNet"](channels=3, base=4, depth=2).eval()
    x = torch.rand(3, 3, 8, 8)
    assert model(x).shape == x.shape
    assert model.features(x).shape == (3, 16)
    mask = common["pixel_mask"](x, 0.5, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1, 8, 8) and (mask.sum((1, 2, 3)) == 32).all()
    pred = torch.rand_like(x)
    _check_model_loss_ignores_visible(model, pred, x, mask)
    with pytest.raises(ValueError, match="divisible"):
        unet["MaskedUNet"](1, 4, depth=2).encode(torch.rand(1, 1, 6, 6))


def test_vit_loss_uses_masked_patches_only():
    torch.manual_seed(0)
    model = vit["MaskedViT"](8, 4, 1, dim=16, depth=1, heads=2, decoder_dim=8).eval()
    x = torch.rand(5, 1, 8, 8)
    ratio = torch.tensor([0.5])
    mask = vit["patch_mask"](5, 4, ratio, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 2).all()
    real = model.predict(x, mask)
    assert real.shape == (5, 4, 16)
    target = vit["patchify"](x, 4)
    holder = {"pred": real.detach()}
    model.predict = lambda images, m: holder["pred"]

    def loss_fn(p):
        holder["pred"] = p
        return model.loss(x, mask)

    m3 = mask.unsqueeze(-1)
    _check_ignores_visible(loss_fn, real.detach(), target, m3, real.detach())


def test_vit_encoder_sees_only_visible_patches():
    torch.manual_seed(0)
    model = vit["MaskedViT"](8, 4, 1, dim=16, depth=1, heads=2, decoder_dim=8).eval()
    x = torch.rand(2, 1, 8, 8)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    out = model.predict(x, mask)
    x2 = x.clone()
    x2[0, :, :4, :4] = 0.0  # patch 0 of image 0 is hidden
    x2[1, :, 4:, :] = 0.0  # patches 2 and 3 of image 1 are hidden
    assert torch.allclose(model.predict(x2, mask), out, atol=1e-6)


def test_patch_mask_clips_extreme_ratios_and_patchify_layout():
    for r, expected in ((0.0, 1), (1.0, 15), (0.75, 12)):
        m = vit["patch_mask"](3, 16, torch.tensor([r]))
        assert (m.sum(1) == expected).all()
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = vit["patchify"](img, 2)
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]


def test_vision_schedules():
    make = common["make_schedule"]
    assert make("fixed_0.75", 10).sample(0).item() == pytest.approx(0.75)
    dyn = make("dynamic", 100)
    assert dyn.sample(0).item() == pytest.approx(0.9) and dyn.sample(100).item() == pytest.approx(
        0.6
    )
    assert make("r2mae", 10).bounds() == (0.6, 0.9)
    assert make("mdlm", 10).bounds() == (0.0, 1.0)
    with pytest.raises(ValueError, match="scheme"):
        make("bogus", 10)


# -------------------------------------------------------------------------------- loaders
def _write_idx(path, array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(raw)


def test_mnist_loader_on_tiny_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    tr_img = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    te_img = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_img, 0x08)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 9], np.uint8), 0x08)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", te_img, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7, 8, 9], np.uint8), 0x08)
    x, y = common["load_mnist"](tmp_path, "train")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0] * 255, torch.tensor(tr_img, dtype=torch.float32))
    assert y.tolist() == [0, 1, 2, 3, 9]
    x, y = common["load_mnist"](tmp_path, "test")
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [7, 8, 9]
    ints = np.array([[1, -2], [300, 4]], dtype=np.int32)
    _write_idx(tmp_path / "ints.idx", ints, 0x0C)
    assert common["read_idx"](tmp_path / "ints.idx").tolist() == ints.tolist()
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        common["read_idx"](tmp_path / "bad")
    with pytest.raises(ValueError, match="split"):
        common["load_mnist"](tmp_path, "valid")


def test_celeba_loader_on_official_layout_stand_in(tmp_path):
    from PIL import Image

    names = [f"Attr_{i}" for i in range(40)]
    (tmp_path / "img_align_celeba").mkdir()
    rng = np.random.default_rng(0)
    attrs, parts, files = [], [], []
    for i in range(6):
        f = f"{i + 1:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(
            tmp_path / "img_align_celeba" / f
        )
        files.append(f)
        attrs.append(rng.choice([-1, 1], size=40))
        parts.append([0, 0, 0, 1, 2, 2][i])
    lines = [str(len(files)), " ".join(names)]
    lines += [f + "  " + " ".join(f"{v:2d}" for v in a) for f, a in zip(files, attrs, strict=True)]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "list_eval_partition.txt").write_text(
        "\n".join(f"{f} {p}" for f, p in zip(files, parts, strict=True)) + "\n"
    )
    x, y = common["load_celeba"](tmp_path, "train", size=16)
    assert x.shape == (3, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [[float(v > 0) for v in a] for a in attrs[:3]]
    x, y = common["load_celeba"](tmp_path, "test", size=8)
    assert x.shape == (2, 3, 8, 8)
    ds = common["CelebADataset"](tmp_path, "valid", size=8)
    assert ds.files == ["000004.jpg"] and ds.attribute_names == names
    with pytest.raises(ValueError, match="split"):
        common["CelebADataset"](tmp_path, "dev")


def test_image_folder_loader(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 12), (value, value, value)).save(
                tmp_path / "train" / cls / f"{i}.png"
            )
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    ds = common["ImageFolderDataset"](tmp_path / "train", size=8, max_per_class=2)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    img, label = ds[3]
    assert img.shape == (3, 8, 8) and label == 1 and torch.allclose(img, torch.ones_like(img))
    assert torch.allclose(ds[0][0], torch.zeros(3, 8, 8))
    with pytest.raises(FileNotFoundError):
        common["ImageFolderDataset"](tmp_path / "val")


def test_write_report_joins_the_sections_under_their_headings(tmp_path):
    text = common["write_report"](tmp_path / "r.md", "Title", [(None, "a"), ("Heading", "b")])
    assert text == "# Title\n\na\n\n## Heading\n\nb\n"
    assert (tmp_path / "r.md").read_text() == text
