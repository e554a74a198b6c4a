import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    TrainerControl,
    TrainerState,
)

from scr2mae.integrations.transformers import MaskingStepCallback, R2MAEDataCollator
from scr2mae.masking import get_masking

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _examples(tokenizer, n=64, seed=0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(n)]
    return [tokenizer(t, return_special_tokens_mask=True) for t in texts]


def _stats(tokenizer, batch, originals):
    """Fractions of eligible tokens masked, and of masked tokens -> mask/random/unchanged."""
    labels, ids = batch["labels"], batch["input_ids"]
    special = torch.isin(originals, torch.tensor([0, 1, 2]))
    masked = labels != -100
    assert not (masked & special).any()  # special and padding tokens never masked
    assert torch.equal(ids[special], originals[special])  # and never altered
    assert torch.equal(labels[masked], originals[masked])
    assert torch.equal(ids[~masked], originals[~masked])
    n_masked = masked.sum().item()
    to_mask = (ids == tokenizer.mask_token_id) & masked
    unchanged = (ids == originals) & masked
    return {
        "rate": n_masked / (~special).sum().item(),
        "mask": to_mask.sum().item() / n_masked,
        "unchanged": unchanged.sum().item() / n_masked,
        "random": 1 - (to_mask | unchanged).sum().item() / n_masked,
    }


def _originals(tokenizer, examples):
    return tokenizer.pad([{"input_ids": e["input_ids"]} for e in examples], return_tensors="pt")[
        "input_ids"
    ]


def test_exact_parity_with_hf_collator_at_fixed_ratio(tokenizer):
    examples = _examples(tokenizer)
    ours = R2MAEDataCollator(tokenizer, "fixed", {"mask_ratio": 0.15}, seed=7)
    hf = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=7)
    for _ in range(3):  # the generators advance identically batch after batch
        a, b = ours(examples), hf(examples)
        assert set(a) == set(b) == {"input_ids", "attention_mask", "labels"}
        for key in a:
            assert torch.equal(a[key], b[key])


def test_statistics_match_hf_collator(tokenizer):
    examples = _examples(tokenizer, n=400, seed=1)
    originals = _originals(tokenizer, examples)
    ours = R2MAEDataCollator(tokenizer, "fixed", {"mask_ratio": 0.3}, seed=0)
    hf = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3, seed=123)
    s_ours = _stats(tokenizer, ours(examples), originals)
    s_hf = _stats(tokenizer, hf(examples), originals)
    # ~8800 eligible tokens, ~2600 masked: binomial standard errors below 0.01
    assert s_ours["rate"] == pytest.approx(0.3, abs=0.02)
    assert s_ours["mask"] == pytest.approx(0.8, abs=0.03)
    # a random replacement draws the original token 1/65 of the time
    assert s_ours["unchanged"] == pytest.approx(0.1 + 0.1 / 65, abs=0.02)
    assert s_ours["random"] == pytest.approx(0.1 - 0.1 / 65, abs=0.02)
    for key in s_ours:
        assert s_ours[key] == pytest.approx(s_hf[key], abs=0.04)


def test_list_inputs_and_padding(tokenizer):
    examples = [[1, 10, 11, 12, 2], [1, 13, 2]]
    out = R2MAEDataCollator(tokenizer, "fixed", {"mask_ratio": 0.0}, pad_to_multiple_of=8, seed=0)(
        examples
    )
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][1].tolist() == [1, 13, 2, 0, 0, 0, 0, 0]
    assert (out["labels"] == -100).all()


def test_r2mae_ratio_per_batch_drives_masking(tokenizer):
    examples = _examples(tokenizer, n=200, seed=2)
    originals = _originals(tokenizer, examples)
    coll = R2MAEDataCollator(tokenizer, "r2mae", {"p_min": 0.1, "p_max": 0.6}, seed=3)
    ratios, rates = [], []
    for _ in range(8):
        batch = coll(examples)
        ratios.append(coll.last_ratio.item())
        rates.append(_stats(tokenizer, batch, originals)["rate"])
    assert all(0.1 <= r < 0.6 for r in ratios)
    assert np.ptp(ratios) > 0.1  # ratios vary between batches
    np.testing.assert_allclose(rates, ratios, atol=0.03)


def test_ratio_per_row(tokenizer):
    coll = R2MAEDataCollator(tokenizer, "mdlm", ratio_per="row", seed=0)
    coll(_examples(tokenizer, n=16))
    assert coll.last_ratio.shape == (16,)
    assert coll.last_ratio.std() > 0.1


def test_callback_drives_dynamic_schedule(tokenizer):
    coll = R2MAEDataCollator(tokenizer, get_masking("dynamic", start=0.4, end=0.15), seed=0)
    assert coll.schedule.needs_total_steps
    cb = MaskingStepCallback(coll)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 100
    cb.on_train_begin(None, state, control)
    assert coll.schedule.total_steps == 100
    examples = _examples(tokenizer, n=4)
    got = []
    for step in (0, 50, 100):
        state.global_step = step
        cb.on_step_begin(None, state, control)
        coll(examples)
        got.append(coll.last_ratio.item())
    np.testing.assert_allclose(got, [0.4, 0.275, 0.15], atol=1e-6)


def test_step_is_shared_with_dataloader_workers(tokenizer):
    coll = R2MAEDataCollator(
        tokenizer, get_masking("dynamic", start=0.5, end=0.0, total_steps=10), seed=0
    )

    class _Probe:
        def __call__(self, batch):
            coll(batch)
            return coll.last_ratio

    examples = _examples(tokenizer, n=4)
    loader = torch.utils.data.DataLoader(
        examples * 50, batch_size=2, num_workers=1, collate_fn=_Probe(), prefetch_factor=1,
        multiprocessing_context="fork",
    )  # fmt: skip
    it = iter(loader)
    first = next(it).item()
    coll.step = 10  # set in the main process after the worker started
    later = [next(it).item() for _ in range(5)]
    assert first == pytest.approx(0.5)
    assert later[-1] == pytest.approx(0.0)
    del it


def test_bad_arguments(tokenizer):
    with pytest.raises(TypeError, match="tokenizer"):
        R2MAEDataCollator(None)
    with pytest.raises(ValueError, match="ratio_per"):
        R2MAEDataCollator(tokenizer, ratio_per="token")
    with pytest.raises(ValueError, match="mask_replace_prob"):
        R2MAEDataCollator(tokenizer, mask_replace_prob=0.95, random_replace_prob=0.1)
    with pytest.raises(ValueError, match="unknown masking strategy"):
        R2MAEDataCollator(tokenizer, "nope")
    with pytest.raises(TypeError, match="collator"):
        MaskingStepCallback(object())
    coll = R2MAEDataCollator(tokenizer)
    with pytest.raises(ValueError, match="step"):
        coll.step = -1
    with pytest.raises(ValueError, match="examples"):
        coll([])


def test_old_import_path_warns_and_returns_the_same_classes():
    import scr2mae.data

    with pytest.warns(DeprecationWarning, match="integrations.transformers"):
        old = scr2mae.data.R2MAEDataCollator
    with pytest.warns(DeprecationWarning, match="integrations.transformers"):
        from scr2mae.data import MaskingStepCallback as old_callback
    assert old is R2MAEDataCollator and old_callback is MaskingStepCallback
    with pytest.raises(AttributeError):
        scr2mae.data.NotThere  # noqa: B018
