import pytest
import torch

from scr2mae.masking import (
    FixedRatio,
    Masker,
    UniformRatio,
    bernoulli_mask,
    column_mask,
    exact_count_mask,
    ratio_to_count,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def test_ratio_to_count_rounds_half_up_and_clips():
    r = torch.tensor([0.0, 0.25, 0.5, 0.999, 1.0])
    assert ratio_to_count(r, 10).tolist() == [0, 3, 5, 10, 10]
    assert ratio_to_count(torch.tensor(0.1), 765).item() == 77


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_column_mask_masks_exact_count_of_shared_columns(device, ratio):
    m = column_mask(32, 765, ratio, generator=_gen(0, device), device=device)
    assert m.shape == (32, 765) and m.dtype == torch.bool and m.device.type == device
    expected = int(ratio * 765 + 0.5)
    assert int(m[0].sum()) == expected
    assert torch.equal(m, m[:1].expand_as(m))  # every cell hides the same genes


@pytest.mark.parametrize("device", DEVICES)
def test_exact_count_mask_per_row_counts_are_exact(device):
    ratios = torch.linspace(0.0, 0.95, 40, device=device)
    m = exact_count_mask(40, 101, ratios, generator=_gen(1, device))
    assert m.device.type == device
    assert torch.equal(m.sum(1).cpu(), ratio_to_count(ratios.cpu(), 101))
    # rows are not all the same set
    assert not torch.equal(m[10], m[11])


def test_exact_count_mask_is_uniform_over_positions():
    m = exact_count_mask(20_000, 10, 0.3, generator=_gen(2))
    freq = m.float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.015)


@pytest.mark.parametrize("device", DEVICES)
def test_bernoulli_mask_rates_match_ratios(device):
    ratios = torch.tensor([0.05, 0.3, 0.7], device=device).repeat_interleave(2000)
    m = bernoulli_mask(ratios.numel(), 500, ratios, generator=_gen(3, device))
    rates = m.float().mean(1).reshape(3, 2000).mean(1).cpu()
    assert torch.allclose(rates, torch.tensor([0.05, 0.3, 0.7]), atol=0.003)


@pytest.mark.parametrize("fn", [column_mask, exact_count_mask, bernoulli_mask])
def test_masks_reproducible_under_seeded_generator(fn):
    a = fn(8, 50, 0.4, generator=_gen(7))
    b = fn(8, 50, 0.4, generator=_gen(7))
    c = fn(8, 50, 0.4, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mask_generators_reject_bad_shapes_and_ratio_counts():
    with pytest.raises(ValueError, match="n_cols"):
        column_mask(4, 0, 0.3)
    with pytest.raises(ValueError, match="one ratio"):
        column_mask(4, 10, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="ratios"):
        exact_count_mask(4, 10, torch.tensor([0.1, 0.2]))


def test_masker_combines_schedule_and_generator():
    masker = Masker(UniformRatio(0.2, 0.6), mode="exact", ratio_per="row")
    draw = masker(64, 100, step=0, generator=_gen(5))
    assert draw.mask.shape == (64, 100) and draw.ratio.shape == (64,)
    assert torch.equal(draw.mask.sum(1), ratio_to_count(draw.ratio, 100))
    assert draw.index is None
    batch = Masker("fixed", mode="columns")(16, 40, generator=_gen(6))
    assert torch.all(batch.ratio == FixedRatio().mask_ratio)
    assert int(batch.mask[0].sum()) == 10


def test_masker_discrete_schedule_returns_index():
    draw = Masker("discrete", mode="columns")(8, 30, generator=_gen(1))
    assert draw.index is not None and draw.index.shape == (8,)
    assert torch.all(draw.index == draw.index[0])


def test_masker_validation():
    with pytest.raises(ValueError, match="mode"):
        Masker("r2mae", mode="blocks")
    with pytest.raises(ValueError, match="ratio_per"):
        Masker("r2mae", mode="columns", ratio_per="row")
    with pytest.raises(ValueError, match="unknown masking strategy"):
        Masker("nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_on_cuda():
    masker = Masker(UniformRatio(0.1, 0.5), mode="columns")
    step = torch.zeros((), dtype=torch.long, device="cuda")
    gen = _gen(0, "cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            masker(128, 765, step=step, generator=gen, device="cuda")
            exact_count_mask(64, 100, torch.rand(64, device="cuda", generator=gen), generator=gen)
            bernoulli_mask(64, 100, 0.3, generator=gen, device="cuda")
            step.add_(1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
