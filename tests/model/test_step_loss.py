"""The training loss evaluated on the scored entries equals the dense computation.

The reference below is the loss as it was first written: scvi-tools' negative binomial over
every entry of the mini-batch, then the masked, measured entries picked out with
``torch.where`` and weighted by the curriculum's weights.
"""

import pytest
import torch
from scvi.distributions import NegativeBinomial

from scr2mae import R2MAEModule

N_CELLS, N_GENES = 48, 40


def _module(mode: str, curriculum: bool, visible_weight: float = 0.0) -> R2MAEModule:
    torch.manual_seed(0)
    kwargs = {"n_input": N_GENES, "n_batch": 2, "n_hidden": 32, "n_latent": 8}
    kwargs["visible_weight"] = visible_weight
    if curriculum:
        # no warm-up, so that the generator's weights are in the graph from the first step
        kwargs["curriculum"] = ("r2mae_cl_k0", {"warmup_steps": 0})
    return R2MAEModule(mask_mode=mode, **kwargs).train()


def _counts(unmeasured: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    rate = torch.rand(N_CELLS, N_GENES, generator=generator) * 4
    x = torch.poisson(rate, generator=generator)
    x[:, 0] = 0.0  # a gene without counts in any cell
    if unmeasured == "entries":
        # each cell lacks its own genes
        x[torch.rand(N_CELLS, N_GENES, generator=generator) < 0.2] = float("nan")
    elif unmeasured == "panel":
        # half the cells come from a panel without genes 1-9
        x[: N_CELLS // 2, 1:10] = float("nan")
    return x


def _forward(module, x, **inference_kwargs):
    batch = (torch.arange(N_CELLS) % 2).unsqueeze(1)
    tensors = {"X": x, "batch": batch}
    # unmeasured entries reach the module as a `measured` mask, as the data loaders give it
    # (`measured=None` means every gene was measured)
    measured = ~torch.isnan(x)
    if not bool(measured.all()):
        inference_kwargs.setdefault("measured", measured)
    inf = module.inference(x, batch_index=batch, **inference_kwargs)
    gen = module.generative(**module._get_generative_input(tensors, inf))
    return tensors, inf, gen


def _dense_reference(module, inf, gen) -> dict[str, torch.Tensor]:
    x = inf["x"]
    nll = -NegativeBinomial(mu=gen["px_rate"], theta=gen["px_r"]).log_prob(x)
    measured = inf["measured"]
    scored = torch.ones_like(nll, dtype=torch.bool) if measured is None else measured.expand_as(x)
    if inf["mask"] is not None:
        scored = scored & inf["mask"]
    weights = torch.ones_like(nll)
    if module.curriculum is not None and module.training and inf["mask_index"] is not None:
        weights = module.curriculum.loss_weights(
            x, inf["mask_index"][:1], inf["mask_step"], x.shape[0]
        )
    mask_f = scored.to(nll.dtype)
    weighted = torch.where(scored, nll * weights, torch.zeros_like(nll))
    scored_nll = torch.where(scored, nll, torch.zeros_like(nll))
    loss = weighted.sum() / mask_f.sum().clamp_min(1.0)
    if module.training and module.visible_weight > 0 and inf["mask"] is not None:
        # the visible entries: measured, not masked; their mean NLL, unweighted
        visible = ~inf["mask"].expand_as(x)
        if measured is not None:
            visible = visible & measured.expand_as(x)
        visible_nll = torch.where(visible, nll, torch.zeros_like(nll)).sum() / visible.sum()
        loss = loss + module.visible_weight * visible_nll
    return {
        "loss": loss,
        "reconstruction_loss": scored_nll.sum(1) / mask_f.sum(1).clamp_min(1.0),
        "masked_fraction": mask_f.mean(),
        "scored_nll_sum": scored_nll.sum(),
        "scored_entries": mask_f.sum(),
    }


def _assert_loss_equals_reference(module, tensors, inf, gen):
    out = module.loss(tensors, inf, gen)
    reference = _dense_reference(module, inf, gen)
    close = {"rtol": 2e-6, "atol": 1e-6}
    torch.testing.assert_close(out.loss, reference["loss"], **close)
    torch.testing.assert_close(
        out.reconstruction_loss["reconstruction_loss"], reference["reconstruction_loss"], **close
    )
    for name in ("masked_fraction", "scored_nll_sum", "scored_entries"):
        torch.testing.assert_close(out.extra_metrics[name], reference[name], **close)
    # the same gradients for every parameter in the graph (the curriculum's generator too)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.loss, params, retain_graph=True, allow_unused=True)
    expected = torch.autograd.grad(reference["loss"], params, allow_unused=True)
    compared = 0
    for got, want in zip(grads, expected, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
            compared += 1
    assert compared > 0
    return out


@pytest.fixture(params=["host", "accelerator"])
def device_rules(request, monkeypatch):
    """``"accelerator"``: the module decides as on a GPU, where reading a device value (a
    mask's column count, which counts are non-zero) would stall the step."""
    if request.param == "accelerator":
        monkeypatch.setattr(R2MAEModule, "_reads_are_free", staticmethod(lambda device: False))
    return request.param


@pytest.mark.parametrize("curriculum", [False, True], ids=["plain", "curriculum"])
@pytest.mark.parametrize("unmeasured", ["none", "entries", "panel"])
@pytest.mark.parametrize("mode", ["columns", "exact", "bernoulli"])
def test_training_loss_equals_the_dense_computation(mode, unmeasured, curriculum, device_rules):
    module = _module(mode, curriculum)
    x = _counts(unmeasured)
    for _ in range(2):  # two draws of the mask (and of the ratio)
        tensors, inf, gen = _forward(module, x)
        assert inf["mask"] is not None
        out = _assert_loss_equals_reference(module, tensors, inf, gen)
        assert out.extra_metrics["scored_entries"] > 0


@pytest.mark.parametrize("unmeasured", ["none", "panel"])
@pytest.mark.parametrize("mode", ["columns", "exact"])
def test_visible_entries_add_their_weighted_mean_nll(mode, unmeasured, device_rules):
    module = _module(mode, curriculum=mode == "columns", visible_weight=1.5)
    x = _counts(unmeasured)
    tensors, inf, gen = _forward(module, x)
    out = _assert_loss_equals_reference(module, tensors, inf, gen)
    without = module.loss(tensors, inf, gen).loss - 1.5 * out.extra_metrics["visible_nll"]
    paper = _module(mode, curriculum=mode == "columns")
    paper.load_state_dict(module.state_dict())
    assert "visible_nll" not in paper.loss(tensors, inf, gen).extra_metrics
    torch.testing.assert_close(paper.loss(tensors, inf, gen).loss, without)
    assert out.extra_metrics["visible_nll"] > 0
    # outside training (validation masks) the loss is the masked entries' alone
    module.eval()
    tensors, inf, gen = _forward(module, x, masking="validation")
    assert "visible_nll" not in module.loss(tensors, inf, gen).extra_metrics
    _assert_loss_equals_reference(module, tensors, inf, gen)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_visible_weight_must_be_a_finite_number_at_least_zero(weight):
    with pytest.raises(ValueError, match="visible_weight"):
        _module("columns", curriculum=False, visible_weight=weight)
    with pytest.raises(TypeError, match="visible_weight"):
        _module("columns", curriculum=False, visible_weight="1")


@pytest.mark.parametrize("masking", ["validation", "none"])
def test_validation_and_unmasked_losses_equal_the_dense_computation(masking, device_rules):
    module = _module("columns", curriculum=True)
    x = _counts("entries")
    tensors, inf, gen = _forward(module, x, masking=masking)
    _assert_loss_equals_reference(module, tensors, inf, gen)


def test_column_masks_are_scored_on_the_masked_columns_only():
    # (host rules: the exact masked columns are gathered)
    module = _module("columns", curriculum=False)
    x = _counts("entries")
    _, inf, gen = _forward(module, x)
    nll, scored, weights = module.masked_nll(inf, gen)
    masked_columns = int(inf["mask"][0].sum())
    assert nll.shape == (N_CELLS, masked_columns) and masked_columns < N_GENES
    assert weights is None
    # among the gathered columns only the unmeasured entries are left out
    assert scored is not None and not bool(scored.all())
    # a per-cell mask is scored on every entry
    module = _module("exact", curriculum=False)
    _, inf, gen = _forward(module, x)
    assert module.masked_nll(inf, gen).nll.shape == (N_CELLS, N_GENES)


@pytest.mark.parametrize("device_rules", ["accelerator"], indirect=True)
@pytest.mark.parametrize("curriculum", [False, True], ids=["plain", "curriculum"])
def test_accelerator_rules_score_column_masks_on_every_column(device_rules, curriculum):
    # reading the masked columns back would wait for the device: the NLL covers every gene
    module = _module("columns", curriculum)
    x = _counts("panel")
    for _ in range(2):
        tensors, inf, gen = _forward(module, x)
        _assert_loss_equals_reference(module, tensors, inf, gen)
        assert module.masked_nll(inf, gen).nll.shape == (N_CELLS, N_GENES)


def _decoder_passes(module):
    calls = []
    handle = module.px_decoder.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_generative_reads_no_device_value_to_skip_the_library_estimate(monkeypatch):
    # in training mode (dropout): a second decoding would differ from the first
    module = _module("columns", curriculum=False)
    z = torch.randn(N_CELLS, 8)
    library = torch.rand(N_CELLS, 1) * 1000 + 10
    batch = (torch.arange(N_CELLS) % 2).unsqueeze(1)
    complete = torch.ones(N_CELLS, N_GENES, dtype=torch.bool)
    mixed = complete.clone()
    mixed[::2, 1:10] = False

    def decode(measured):
        calls, handle = _decoder_passes(module)
        torch.manual_seed(2)  # the same dropout in the first pass of every call
        with torch.no_grad():
            out = module.generative(z, library, batch_index=batch, measured=measured)
        handle.remove()
        return out, len(calls)

    # measured=None means complete data: one decoder pass, nothing read
    none, passes = decode(None)
    assert passes == 1
    # on the CPU a complete `measured` tensor is read (free) and the second pass is skipped
    on_cpu, passes = decode(complete)
    assert passes == 1
    torch.testing.assert_close(on_cpu["px_rate"], none["px_rate"], rtol=0, atol=0)
    cpu_mixed, passes = decode(mixed)
    assert passes == 2
    monkeypatch.setattr(R2MAEModule, "_reads_are_free", staticmethod(lambda device: False))
    # on an accelerator the estimate runs without reading `measured`; complete cells keep
    # their first decoding exactly, so the outputs do not depend on the device's rules
    accel, passes = decode(complete)
    assert passes == 2
    torch.testing.assert_close(accel["px_rate"], none["px_rate"], rtol=0, atol=0)
    accel_mixed, _ = decode(mixed)
    for key in ("px_rate", "px_scale", "library"):
        torch.testing.assert_close(accel_mixed[key], cpu_mixed[key], rtol=0, atol=0)
    # the complete cells of the mixed batch kept the observed library; the others were scaled
    torch.testing.assert_close(accel_mixed["library"][1::2], library[1::2], rtol=0, atol=0)
    assert torch.all(accel_mixed["library"][::2] > library[::2])


@pytest.mark.parametrize("fill", ["zeros", "large"])
def test_sparse_count_terms_equal_the_dense_formula(fill):
    from scr2mae.model._likelihood import nb_nll as _nb_nll

    generator = torch.Generator().manual_seed(3)
    mu = torch.rand(16, 10, generator=generator) * 50 + 1e-3
    theta = torch.rand(10, generator=generator) * 5 + 0.1
    if fill == "zeros":
        x = torch.zeros(16, 10)
    else:
        x = torch.poisson(torch.full((16, 10), 500.0), generator=generator)
        x[::3] = 0.0
    dense = _nb_nll(x, mu, theta)
    sparse = _nb_nll(x, mu, theta, sparse_counts=True)
    expected = -NegativeBinomial(mu=mu, theta=theta).log_prob(x)
    # float precision of the largest term summed (lgamma(x + theta) is about 2,600 at 500
    # counts): the order of the additions differs
    atol = 8 * torch.finfo(torch.float32).eps * max(1.0, float(torch.lgamma(x + 1).max()))
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=atol)
    torch.testing.assert_close(sparse, expected, rtol=1e-5, atol=atol)


def test_an_empty_mini_batch_has_a_zero_loss(device_rules):
    module = _module("columns", curriculum=False)
    x = torch.zeros(0, N_GENES)
    tensors = {"X": x, "batch": torch.zeros(0, 1, dtype=torch.long)}
    inf = module.inference(x, batch_index=tensors["batch"])
    gen = module.generative(**module._get_generative_input(tensors, inf))
    out = module.loss(tensors, inf, gen)
    assert out.loss.item() == 0.0 and out.extra_metrics["scored_entries"].item() == 0.0
