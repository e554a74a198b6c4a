"""Tests of the Sinkhorn curriculum (appendix A.3): operator, generator, multiplier, presets."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from scr2mae.masking import (
    CURRICULUM_STRATEGIES,
    ConstantMultiplier,
    Curriculum,
    CurriculumWeightGenerator,
    DiscreteRatios,
    GradientMultiplier,
    LinearMultiplier,
    column_mask,
    feature_statistics,
    get_curriculum,
    multiply_gradient,
    sinkhorn,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are tiny: one intra-op thread avoids contention on busy CI machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _counts(n_rows: int, n_genes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rate = torch.rand(n_genes, generator=g) * 5.0
    return torch.poisson(rate.expand(n_rows, n_genes).contiguous(), generator=g)


def _assert_margins(w: torch.Tensor, tol: float = 1e-4) -> None:
    """Rows sum to K and columns to G, to ``tol`` relative to the targets."""
    n_rows, n_cols = w.shape[-2], w.shape[-1]
    row_err = (w.sum(-1) / n_cols - 1.0).abs().max()
    col_err = (w.sum(-2) / n_rows - 1.0).abs().max()
    assert row_err < tol, f"row sums off by {row_err:.2e} (relative)"
    assert col_err < tol, f"column sums off by {col_err:.2e} (relative)"


# ---------------------------------------------------------------------------------------------
# Sinkhorn
# ---------------------------------------------------------------------------------------------

SHAPES = [(50, 7), (7, 50), (765, 10), (10, 765), (3, 2), (2, 3), (4, 33, 5), (2, 3, 6, 40)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["uniform", "lognormal"])
def test_sinkhorn_margins_float32(shape, kind):
    g = torch.Generator().manual_seed(10 * SHAPES.index(shape) + (kind == "lognormal"))
    if kind == "uniform":
        p = torch.rand(shape, generator=g) * 0.95 + 0.05
    else:  # entries spanning about three orders of magnitude
        p = torch.randn(shape, generator=g).exp()
    w = sinkhorn(p)
    assert w.shape == p.shape and w.dtype == torch.float32
    assert (w > 0).all()
    _assert_margins(w, 1e-4)


@pytest.mark.parametrize("shape", [(200, 10), (10, 200), (3, 64, 7)])
def test_sinkhorn_margins_float64_absolute(shape):
    g = torch.Generator().manual_seed(1)
    p = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5).exp()
    w = sinkhorn(p)
    n_rows, n_cols = shape[-2], shape[-1]
    torch.testing.assert_close(
        w.sum(-1), torch.full(w.shape[:-1], float(n_cols), dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        w.sum(-2),
        torch.full((*w.shape[:-2], n_cols), float(n_rows), dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_sinkhorn_batched_equals_slices():
    p = torch.rand(3, 20, 4, generator=torch.Generator().manual_seed(2)) + 0.1
    w = sinkhorn(p)
    for i in range(3):
        torch.testing.assert_close(w[i], sinkhorn(p[i]))


def test_sinkhorn_log_input_and_scale_invariance():
    p = torch.rand(30, 6, generator=torch.Generator().manual_seed(3)) + 0.1
    w = sinkhorn(p)
    torch.testing.assert_close(sinkhorn(p.log(), log_input=True), w)
    # a diagonal scaling of rows / columns is removed by the operator
    row_scale = torch.linspace(0.5, 3.0, 30).unsqueeze(1)
    col_scale = torch.linspace(1.0, 2.0, 6).unsqueeze(0)
    torch.testing.assert_close(sinkhorn(p * row_scale * col_scale), w, atol=1e-5, rtol=1e-5)


def test_sinkhorn_fixed_point_of_already_balanced_matrix():
    ones = torch.ones(12, 5)
    torch.testing.assert_close(sinkhorn(ones), ones)


def test_sinkhorn_single_column_is_all_ones():
    p = torch.rand(9, 1) + 0.1
    torch.testing.assert_close(sinkhorn(p), torch.ones(9, 1))


def test_sinkhorn_is_differentiable():
    p = (torch.rand(5, 3, dtype=torch.float64) + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: sinkhorn(m, 10), (p,))


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        sinkhorn(torch.rand(5))
    with pytest.raises(TypeError, match="floating"):
        sinkhorn(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n_iters"):
        sinkhorn(torch.rand(3, 2), 0)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        sinkhorn([[1.0, 2.0]])


# ---------------------------------------------------------------------------------------------
# Gradient multiplier and its schedules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coefficient", [1.0, -1.0, 0.0, 0.3, torch.tensor(-2.5)])
def test_multiply_gradient(coefficient):
    x = torch.randn(4, 3, requires_grad=True)
    y = multiply_gradient(x, coefficient)
    torch.testing.assert_close(y, x)
    upstream = torch.randn(4, 3)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * float(coefficient))


def test_gradient_multiplier_layer_and_checks():
    x = torch.randn(3, requires_grad=True)
    GradientMultiplier()(x, -1.0).sum().backward()
    torch.testing.assert_close(x.grad, -torch.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        multiply_gradient(x, torch.ones(2))


def test_constant_multiplier_values():
    sched = ConstantMultiplier(1.0, warmup_steps=5000)
    assert float(sched(0)) == 0.0
    assert float(sched(4999)) == 0.0
    assert float(sched(5000)) == 1.0
    assert float(sched(10**6)) == 1.0
    assert float(ConstantMultiplier(-0.5, warmup_steps=0)(0)) == -0.5


def test_linear_multiplier_values_int_and_tensor_steps():
    sched = LinearMultiplier(1.0, -1.0, start_step=30000, end_step=120000, warmup_steps=5000)
    expected = {
        0: 0.0,
        4999: 0.0,
        5000: 1.0,
        30000: 1.0,
        75000: 0.0,
        52500: 0.5,
        97500: -0.5,
        120000: -1.0,
        500000: -1.0,
    }
    for step, value in expected.items():
        assert float(sched(step)) == pytest.approx(value, abs=1e-6), step
        out = sched(torch.tensor(step))  # a device-resident counter (long tensor)
        assert out.dim() == 0 and out.dtype == torch.float32
        assert float(out) == pytest.approx(value, abs=1e-6), step
    assert float(sched(torch.tensor(52500.0))) == pytest.approx(0.5)


def test_multiplier_schedule_validation():
    with pytest.raises(ValueError, match="end_step"):
        LinearMultiplier(start_step=10, end_step=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        ConstantMultiplier(warmup_steps=-1)
    with pytest.raises(ValueError, match="0-d"):
        ConstantMultiplier()(torch.tensor([1, 2]))


# ---------------------------------------------------------------------------------------------
# Weight generator
# ---------------------------------------------------------------------------------------------


def test_feature_statistics_values():
    x = torch.tensor([[1.0, 0.0, 9.0], [3.0, 0.0, 7.0]])
    stats = feature_statistics(x, transform="none", standardise=False)
    torch.testing.assert_close(
        stats, torch.tensor([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0], [8.0, 1.0, 1.0]])
    )
    z = feature_statistics(_counts(64, 40))
    assert z.shape == (40, 3)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_generator_counts_mode_shape_and_margins():
    gen = CurriculumWeightGenerator(10, n_features=120)
    w = gen(_counts(32, 120))
    assert w.shape == (120, 10)
    assert (w > 0).all()
    _assert_margins(w)


def test_generator_single_column_has_mean_one_but_varies():
    gen = CurriculumWeightGenerator(1, n_features=80)
    w = gen(_counts(16, 80))
    assert w.shape == (80, 1)
    assert float(w.detach().mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w.detach().std()) > 1e-3  # not collapsed to ones (eq. 9 with K = 1 would be)


def test_generator_token_mode_per_sequence_sinkhorn():
    gen = CurriculumWeightGenerator(
        10, input_kind="features", n_inputs=16, hidden_dims=(128, 128), positive_offset=0.5
    )
    h = torch.randn(4, 128, 16, requires_grad=True)
    w = gen(h)
    assert w.shape == (4, 128, 10)
    _assert_margins(w)
    # detach_inputs (default): the curriculum gradient never reaches the representation model
    w[..., 0].sum().backward()
    assert h.grad is None
    assert all(p.grad is not None for p in gen.parameters())


def test_generator_argument_checks():
    with pytest.raises(ValueError, match="n_features"):
        CurriculumWeightGenerator(10)
    with pytest.raises(ValueError, match="n_inputs"):
        CurriculumWeightGenerator(10, input_kind="features")
    with pytest.raises(ValueError, match="n_inputs"):
        CurriculumWeightGenerator(10, n_features=5, n_inputs=3)
    with pytest.raises(ValueError, match="input_kind"):
        CurriculumWeightGenerator(10, input_kind="pixels", n_features=5)
    with pytest.raises(ValueError, match="positive_offset"):
        CurriculumWeightGenerator(10, n_features=5, positive_offset=0.0)
    gen = CurriculumWeightGenerator(10, n_features=5)
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        gen(torch.ones(3, 6))


# ---------------------------------------------------------------------------------------------
# Curriculum: gradients, sign flip, warm-up freeze
# ---------------------------------------------------------------------------------------------

N_GENES = 60
N_CELLS = 24


def _loss_and_grads(cur: Curriculum, step, x, nll, mask, index):
    cur.zero_grad(set_to_none=True)
    nll = nll.detach().clone().requires_grad_(True)
    out = cur.weighted_loss(nll, mask, index, x, step)
    out.loss.backward()
    return out, [p.grad.clone() for p in cur.generator_parameters()], nll.grad


def _batch(seed=0, ratio=0.3):
    x = _counts(N_CELLS, N_GENES, seed)
    nll = torch.rand(N_CELLS, N_GENES, generator=torch.Generator().manual_seed(seed + 1))
    mask = column_mask(N_CELLS, N_GENES, ratio, generator=torch.Generator().manual_seed(seed + 2))
    return x, nll, mask


def test_gradients_reach_generator_and_flip_sign_with_multiplier():
    torch.manual_seed(0)
    cur = get_curriculum("r2mae_cl", n_features=N_GENES)
    x, nll, mask = _batch()
    index = torch.tensor([3])
    out_pos, g_pos, nll_grad_pos = _loss_and_grads(cur, 30000, x, nll, mask, index)  # +1
    out_neg, g_neg, nll_grad_neg = _loss_and_grads(cur, 120000, x, nll, mask, index)  # -1
    _, g_half, _ = _loss_and_grads(cur, 52500, x, nll, mask, index)  # +0.5
    assert all(g.abs().sum() > 0 for g in g_pos)  # every generator parameter gets a gradient
    for gp, gn, gh in zip(g_pos, g_neg, g_half, strict=True):
        assert torch.equal(gn, -gp)
        torch.testing.assert_close(gh, 0.5 * gp)
    # the forward value and the reconstruction model's gradient do not see the multiplier
    assert torch.equal(out_pos.loss, out_neg.loss)
    assert torch.equal(nll_grad_pos, nll_grad_neg)


def test_gradient_descent_direction_matches_multiplier_sign():
    """+1 lowers the weighted loss (easy mask, k = 0); -1 raises it (adversarial)."""
    x, nll, mask = _batch(seed=5)
    index = torch.tensor([0])
    for step, sign in ((30000, -1.0), (120000, 1.0)):
        torch.manual_seed(1)
        cur = get_curriculum("r2mae_cl", n_features=N_GENES)
        before = float(cur.weighted_loss(nll, mask, index, x, step).loss.detach())
        opt = torch.optim.SGD(cur.parameters(), lr=0.05)
        for _ in range(5):
            opt.zero_grad()
            cur.weighted_loss(nll, mask, index, x, step).loss.backward()
            opt.step()
        after = float(cur.weighted_loss(nll, mask, index, x, step).loss.detach())
        assert math.copysign(1.0, after - before) == sign


def _train_steps(cur, model_param, optimiser, steps, x, nll, mask):
    for step in steps:
        optimiser.zero_grad()  # set_to_none=True, the default
        elementwise = nll * model_param  # stands in for the model's NB NLL
        draw = cur.draw(step, generator=torch.Generator().manual_seed(int(step)))
        cur.weighted_loss(elementwise, mask, draw.index, x, step).loss.backward()
        optimiser.step()


@pytest.mark.parametrize("optim_cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_warmup_freeze_leaves_generator_bit_identical(optim_cls, as_tensor):
    """Python-int and device-tensor steps freeze alike: coefficient 0 + the generator's group."""
    torch.manual_seed(0)
    cur = get_curriculum("r2mae_cl_k0", n_features=N_GENES, warmup_steps=5)
    model_param = torch.nn.Parameter(torch.ones(N_GENES))
    opt = optim_cls(
        [{"params": [model_param], "weight_decay": 1e-4}, cur.generator_param_group()], lr=1e-2
    )
    x, nll, mask = _batch()
    start = copy.deepcopy(cur.state_dict())
    wrap = torch.tensor if as_tensor else int
    _train_steps(cur, model_param, opt, [wrap(s) for s in range(5)], x, nll, mask)
    for name, value in cur.state_dict().items():
        assert torch.equal(value, start[name]), name
    assert not torch.equal(model_param.detach(), torch.ones(N_GENES))  # the model did train
    # after the warm-up the generator trains with the same optimiser
    _train_steps(cur, model_param, opt, [wrap(s) for s in range(5, 8)], x, nll, mask)
    assert any(not torch.equal(v, start[k]) for k, v in cur.state_dict().items())


def test_warmup_freeze_with_tensor_steps_uses_param_group():
    """A device-resident step: coefficient 0 + a weight-decay-free group keeps bits unchanged."""
    torch.manual_seed(0)
    cur = get_curriculum("r2mae_cl", n_features=N_GENES, warmup_steps=5)
    model_param = torch.nn.Parameter(torch.ones(N_GENES))
    opt = torch.optim.Adam(
        [{"params": [model_param], "weight_decay": 1e-4}, cur.generator_param_group()], lr=1e-2
    )
    x, nll, mask = _batch()
    start = copy.deepcopy(cur.state_dict())
    _train_steps(cur, model_param, opt, [torch.tensor(s) for s in range(5)], x, nll, mask)
    for name, value in cur.state_dict().items():
        assert torch.equal(value, start[name]), name
    # negative control: with weight decay on the generator, zero gradients are not enough
    opt_bad = torch.optim.Adam([model_param, *cur.parameters()], lr=1e-2, weight_decay=1e-4)
    _train_steps(cur, model_param, opt_bad, [torch.tensor(s) for s in range(2)], x, nll, mask)
    assert any(not torch.equal(v, start[k]) for k, v in cur.state_dict().items())


# ---------------------------------------------------------------------------------------------
# Curriculum: column selection, loss, weights mean one
# ---------------------------------------------------------------------------------------------


def test_select_weights_by_ratio_index():
    cur = Curriculum(DiscreteRatios([0.1, 0.2, 0.3]), n_features=4)
    w = torch.arange(12.0).reshape(4, 3)
    torch.testing.assert_close(cur.select_weights(w, torch.tensor([2]), 5), w[:, 2].expand(5, 4))
    per_row = cur.select_weights(w, torch.tensor([0, 2, 1]), 3)
    torch.testing.assert_close(per_row, torch.stack([w[:, 0], w[:, 2], w[:, 1]]))
    w3 = torch.arange(24.0).reshape(2, 4, 3)  # token-wise: one matrix per row
    torch.testing.assert_close(cur.select_weights(w3, torch.tensor([1]), 2), w3[..., 1])
    torch.testing.assert_close(
        cur.select_weights(w3, torch.tensor([0, 2]), 2), torch.stack([w3[0, :, 0], w3[1, :, 2]])
    )
    with pytest.raises(ValueError, match="1 or 5"):
        cur.select_weights(w, torch.tensor([0, 1]), 5)
    with pytest.raises(TypeError, match="long"):
        cur.select_weights(w, torch.tensor([0.0]), 5)


def test_weighted_loss_formula_and_weights_mean_one():
    torch.manual_seed(0)
    cur = get_curriculum("r2mae_cl", n_features=N_GENES)
    x, nll, mask = _batch(ratio=0.4)
    for k in range(cur.n_columns):
        out = cur.weighted_loss(nll, mask, torch.tensor([k]), x, 40000)
        assert out.weights.shape == (N_CELLS, N_GENES)
        torch.testing.assert_close(out.weights, out.weight_matrix[:, k].expand(N_CELLS, N_GENES))
        torch.testing.assert_close(out.weights.mean(1), torch.ones(N_CELLS), atol=1e-5, rtol=0)
        manual = (out.weights * nll)[mask].sum() / mask.sum()
        torch.testing.assert_close(out.loss, manual)
    # all-unmasked mini-batch: a finite zero, not a NaN
    none = torch.zeros_like(mask)
    assert float(cur.weighted_loss(nll, none, torch.tensor([0]), x, 40000).loss.detach()) == 0.0


def test_weighted_loss_token_mode():
    cur = get_curriculum(
        "r2mae_cl",
        input_kind="features",
        n_inputs=8,
        hidden_dims=(128, 128),
        positive_offset=0.5,
    )
    h = torch.randn(3, 20, 8)
    nll = torch.rand(3, 20)
    mask = torch.rand(3, 20) < 0.3
    out = cur.weighted_loss(nll, mask, torch.tensor([4]), h, 40000)
    assert out.weight_matrix.shape == (3, 20, 10)
    torch.testing.assert_close(out.weights, out.weight_matrix[..., 4])
    torch.testing.assert_close(out.weights.mean(1), torch.ones(3), atol=1e-5, rtol=0)


def test_k1_curriculum_always_selects_its_single_column():
    cur = get_curriculum("cl", n_features=N_GENES, mask_ratio=0.15)
    assert cur.n_columns == 1 and cur.ratios.ratios == (0.15,)
    draw = cur.draw(0, generator=torch.Generator().manual_seed(0))
    assert draw.index.tolist() == [0] and draw.ratio.tolist() == [pytest.approx(0.15)]
    x, nll, mask = _batch()
    out = cur.weighted_loss(nll, mask, draw.index, x, 40000)
    assert out.weight_matrix.shape == (N_GENES, 1)
    torch.testing.assert_close(out.weights.mean(1), torch.ones(N_CELLS), atol=1e-5, rtol=0)


def test_short_training_keeps_weights_mean_one_and_finite():
    """A k = 0 curriculum (the degenerate setting) trained for a while stays finite."""
    torch.manual_seed(0)
    for strategy in CURRICULUM_STRATEGIES:
        ramp = {} if strategy.endswith("k0") else {"multiplier_start_step": 0}
        cur = get_curriculum(strategy, n_features=N_GENES, warmup_steps=2, **ramp)
        model_param = torch.nn.Parameter(torch.ones(N_GENES))
        opt = torch.optim.Adam([model_param, *cur.parameters()], lr=5e-2)
        rng = torch.Generator().manual_seed(0)
        for step in range(20):
            x, nll, _ = _batch(seed=step)
            draw = cur.draw(step, generator=rng)
            mask = column_mask(N_CELLS, N_GENES, draw.ratio, generator=rng)
            out = cur.weighted_loss(nll * model_param, mask, draw.index, x, step)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            assert torch.isfinite(out.loss)
            assert torch.isfinite(out.weight_matrix).all()
            torch.testing.assert_close(
                out.weight_matrix.mean(0), torch.ones(cur.n_columns), atol=1e-4, rtol=0
            )


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


def test_presets_match_the_paper_defaults():
    cl = get_curriculum("cl", n_features=10)
    assert cl.ratios.ratios == (0.25,)
    assert cl.multiplier == LinearMultiplier(1.0, -1.0, 30000, 120000, warmup_steps=5000)
    cl_k0 = get_curriculum("CL (k=0)", n_features=10)
    assert cl_k0.n_columns == 1 and cl_k0.multiplier == ConstantMultiplier(1.0, 5000)
    r2 = get_curriculum("R2MAE+CL", n_features=10)
    assert r2.ratios == DiscreteRatios.spanning(0.1, 0.5, 10)
    assert isinstance(r2.multiplier, LinearMultiplier)
    r2k0 = get_curriculum("r2mae_cl_k0", n_features=10, mask_range=(0.2, 0.6), n_ratios=5)
    assert r2k0.ratios == DiscreteRatios.spanning(0.2, 0.6, 5)
    assert isinstance(r2k0.multiplier, ConstantMultiplier)
    gen = r2.weight_generator
    assert gen.positive_offset == 1e-9
    assert [m.out_features for m in gen.mlp if isinstance(m, torch.nn.Linear)] == [128, 256, 10]


def test_preset_argument_checks():
    with pytest.raises(ValueError, match="unknown curriculum"):
        get_curriculum("curriculum", n_features=10)
    with pytest.raises(ValueError, match="mask_range"):
        get_curriculum("cl", n_features=10, mask_range=(0.1, 0.5))
    with pytest.raises(ValueError, match="mask_ratio"):
        get_curriculum("r2mae_cl", n_features=10, mask_ratio=0.2)
    with pytest.raises(ValueError, match="multiplier_end_step"):
        get_curriculum("cl_k0", n_features=10, multiplier_end_step=100)
    with pytest.raises(ValueError, match="mask_ratio"):
        get_curriculum("cl", n_features=10, mask_ratio=1.5)
    with pytest.raises(ValueError, match="n_columns"):
        Curriculum(n_features=10, n_columns=3)
    with pytest.raises(TypeError, match="GradientMultiplierSchedule"):
        Curriculum(n_features=10, multiplier=1.0)
