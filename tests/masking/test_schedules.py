import math

import pytest
import torch

from scr2mae.masking import (
    DiscreteRatios,
    FixedRatio,
    LinearDecayRatio,
    MDLMRatio,
    RatioSchedule,
    UniformDecayRatio,
    UniformRatio,
    get_masking,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_fixed_ratio_is_constant_and_on_device():
    s = FixedRatio(0.25)
    r = s.sample(7, 5, device="cpu")
    assert r.shape == (5,) and r.dtype == torch.float32
    assert torch.all(r == 0.25)
    assert s.bounds() == (0.25, 0.25) and s.expected_ratio(100) == 0.25


def test_uniform_ratio_distribution_and_bounds():
    s = UniformRatio(0.1, 0.5)
    r = s.sample(0, 200_000, generator=_gen())
    assert r.min() >= 0.1 and r.max() < 0.5
    assert abs(r.mean().item() - 0.3) < 2e-3
    # variance of U(a, b) is (b - a)^2 / 12
    assert abs(r.var().item() - 0.4**2 / 12) < 5e-4
    # roughly flat histogram over 4 bins
    hist = torch.histc(r, bins=4, min=0.1, max=0.5) / r.numel()
    assert torch.allclose(hist, torch.full((4,), 0.25), atol=0.01)


def test_mdlm_spans_unit_interval():
    r = MDLMRatio().sample(0, 100_000, generator=_gen(1))
    assert r.min() >= 0 and r.max() < 1
    assert abs(r.mean().item() - 0.5) < 5e-3
    assert get_masking("mdlm") == MDLMRatio()


def test_linear_decay_values_and_tensor_step():
    s = LinearDecayRatio(0.5, 0.1, total_steps=100)
    assert s.sample(0).item() == pytest.approx(0.5)
    assert s.sample(50).item() == pytest.approx(0.3)
    assert s.sample(100).item() == pytest.approx(0.1)
    assert s.sample(10_000).item() == pytest.approx(0.1)  # stays at the end value
    step = torch.tensor(25)
    assert s.sample(step, 3).tolist() == pytest.approx([0.4] * 3)
    assert s.expected_ratio(50) == pytest.approx(0.3)


def test_linear_decay_without_length_asks_for_it():
    s = get_masking("dynamic")
    assert s.needs_total_steps
    with pytest.raises(RuntimeError, match="total_steps"):
        s.sample(0)
    resolved = s.with_total_steps(10)
    assert not resolved.needs_total_steps and resolved.total_steps == 10
    assert s.total_steps is None  # the original is untouched
    assert resolved.with_total_steps(99) is resolved


def test_uniform_decay_window_follows_centre():
    s = UniformDecayRatio(start=0.5, end=0.2, half_width=0.1, total_steps=10)
    early = s.sample(0, 50_000, generator=_gen(2))
    late = s.sample(10, 50_000, generator=_gen(3))
    assert early.min() >= 0.4 and early.max() <= 0.6
    assert late.min() >= 0.1 and late.max() <= 0.3
    assert abs(early.mean().item() - 0.5) < 3e-3
    assert abs(late.mean().item() - 0.2) < 3e-3
    # expected ratio matches the dynamic schedule with the same start and end
    dyn = LinearDecayRatio(0.5, 0.2, total_steps=10)
    for t in (0, 3, 7, 10):
        assert s.expected_ratio(t) == pytest.approx(dyn.expected_ratio(t))


def test_discrete_ratios_draw_indices_consistently():
    s = DiscreteRatios.spanning(0.1, 0.5, 10)
    assert s.n_ratios == 10
    assert s.ratios[0] == pytest.approx(0.1) and s.ratios[-1] == pytest.approx(0.5)
    draw = s.draw(0, 10_000, generator=_gen(4))
    table = torch.tensor(s.ratios)
    assert torch.equal(draw.ratio, table[draw.index])
    counts = torch.bincount(draw.index, minlength=10).float() / 10_000
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.015)
    assert DiscreteRatios().ratios == pytest.approx(s.ratios)


@pytest.mark.parametrize(
    "schedule",
    [
        UniformRatio(0.1, 0.5),
        MDLMRatio(),
        UniformDecayRatio(total_steps=50),
        DiscreteRatios([0.1, 0.3]),
        FixedRatio(0.2),
        LinearDecayRatio(total_steps=5),
    ],
)
def test_sampling_is_reproducible_under_a_seeded_generator(schedule: RatioSchedule):
    a = schedule.sample(3, 64, generator=_gen(11))
    b = schedule.sample(3, 64, generator=_gen(11))
    assert torch.equal(a, b)
    lo, hi = schedule.bounds()
    assert a.min() >= lo - 1e-6 and a.max() <= hi + 1e-6


def test_random_schedules_differ_across_seeds():
    s = UniformRatio(0.1, 0.5)
    assert not torch.equal(s.sample(0, 16, generator=_gen(1)), s.sample(0, 16, generator=_gen(2)))


def test_get_masking_front_door():
    assert get_masking("r2mae", mask_range=(0.1, 0.5)) == UniformRatio(0.1, 0.5)
    assert get_masking("R2MAE") == UniformRatio(0.1, 0.5)
    assert get_masking("fixed", mask_ratio=0.25) == FixedRatio(0.25)
    assert isinstance(get_masking("R2MAE+dynamic"), UniformDecayRatio)
    assert isinstance(get_masking("dynamic", start=0.4, end=0.15), LinearDecayRatio)
    obj = UniformRatio(0.2, 0.3)
    assert get_masking(obj) is obj


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: get_masking("nonsense"), "unknown masking strategy"),
        (lambda: get_masking("fixed", mask_ratio=1.0), "mask_ratio"),
        (lambda: get_masking("fixed", mask_ratio=-0.1), "mask_ratio"),
        (lambda: get_masking("fixed", mask_ratio=math.nan), "mask_ratio"),
        (lambda: get_masking("r2mae", mask_range=(0.6, 0.2)), "p_min"),
        (lambda: get_masking("r2mae", mask_range=(0.1, 1.5)), "p_max"),
        (lambda: get_masking("r2mae", mask_range=0.3), "mask_range"),
        (lambda: get_masking("fixed", mask_range=(0.1, 0.2)), "mask_range"),
        (lambda: get_masking("dynamic", start=1.2), "start"),
        (lambda: get_masking("dynamic", total_steps=0), "total_steps"),
        (lambda: get_masking("r2mae_dynamic", start=0.95, half_width=0.1), "half_width"),
        (lambda: DiscreteRatios([]), "ratios"),
        (lambda: get_masking(UniformRatio(), p_min=0.2), "ready-made"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_get_masking_rejects_wrong_type():
    with pytest.raises(TypeError):
        get_masking(0.3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("R2MAE+dynamic", "r2mae_dynamic"),
        ("r2mae-dynamic-MR", "r2mae_dynamic"),
        ("MAE", "fixed"),
        ("R2MAE + CL (k=0)", "r2mae_cl_k0"),
        ("CL-MAE", "cl"),
        ("cl k=0", "cl_k0"),
    ],
)
def test_one_normaliser_for_schedules_and_curricula(name, expected):
    from scr2mae.masking import normalise_strategy_name

    assert normalise_strategy_name(name) == expected


def test_resolve_masking_maps_names_to_schedules_or_curricula():
    from scr2mae.masking import Curriculum, resolve_masking

    assert resolve_masking("uniform", mask_range=(0.2, 0.4)) == UniformRatio(0.2, 0.4)
    cur = resolve_masking("R2MAE+CL", n_features=7, n_ratios=4)
    assert isinstance(cur, Curriculum) and cur.n_columns == 4
    assert resolve_masking(cur) is cur
    schedule = FixedRatio(0.3)
    assert resolve_masking(schedule) is schedule
    with pytest.raises(ValueError, match="unknown masking strategy"):
        resolve_masking("blocky")
    with pytest.raises(ValueError, match="do not apply"):
        resolve_masking("cl_k0", n_features=7, multiplier_end=-1.0)
    with pytest.raises(ValueError, match="ready-made"):
        resolve_masking(schedule, mask_ratio=0.2)
