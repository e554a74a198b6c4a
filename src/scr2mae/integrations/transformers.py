"""Hugging Face ``transformers`` integration: an R2MAE drop-in for its MLM data collator.

:class:`R2MAEDataCollator` replaces ``transformers.DataCollatorForLanguageModeling``.

The collator pads a list of tokenised examples exactly like the Hugging Face MLM collator and
masks tokens with the same 80/10/10 rule (``[MASK]`` / random token / unchanged), special and
padding tokens never masked, labels ``-100`` everywhere else. The only difference is where the
masking probability comes from: any schedule of :mod:`scr2mae.masking` (fixed, dynamic, MDLM,
R2MAE, R2MAE + dynamic, discrete). Schedules that depend on the training step read it from
:attr:`R2MAEDataCollator.step`, which :class:`MaskingStepCallback` keeps up to date inside a
``transformers.Trainer``.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from scr2mae.masking import RatioSchedule, get_masking

from .._validation import check_int

__all__ = ["MaskingStepCallback", "R2MAEDataCollator"]

try:  # transformers is optional for the library; the callback needs it
    from transformers import TrainerCallback as _CallbackBase
except ImportError:  # pragma: no cover - exercised only without transformers
    _CallbackBase = object


def _check_prob(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number in [0, 1], got {type(value).__name__}.")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value}.")
    return value


class R2MAEDataCollator:
    """Masked-language-modelling collator whose masking ratio follows an R2MAE schedule.

    Use it wherever ``transformers.DataCollatorForLanguageModeling(tokenizer, mlm=True)`` is
    used. Each call pads the examples, draws a masking ratio from ``schedule`` at the current
    :attr:`step` (one ratio per mini-batch, as in the paper's RoBERTa runs, appendix C.6, or one
    per sequence), masks every non-special, non-padding token independently with that
    probability, and replaces masked tokens by ``[MASK]`` (``mask_replace_prob``), a random
    token (``random_replace_prob``) or leaves them unchanged (the rest).

    Parameters
    ----------
    tokenizer
        A Hugging Face tokenizer with a mask token and a pad token.
    schedule
        A :class:`~scr2mae.masking.RatioSchedule` or a name for
        :func:`~scr2mae.masking.get_masking`; ``schedule_kwargs`` are passed along with a name.
        Default: R2MAE with ratios uniform in ``[0.15, 0.4)``.
    schedule_kwargs
        Parameters of a named schedule, e.g. ``{"mask_ratio": 0.15}`` for ``"fixed"``.
    ratio_per
        ``"batch"`` (one ratio per mini-batch, default) or ``"row"`` (one per sequence).
    mask_replace_prob
        Fraction of masked tokens replaced by the mask token (0.8 as in BERT).
    random_replace_prob
        Fraction of masked tokens replaced by a random token (0.1 as in BERT); the remaining
        ``1 - mask_replace_prob - random_replace_prob`` stay unchanged.
    pad_to_multiple_of
        Pad sequences to a multiple of this length.
    seed
        Seed of the masking random-number generator (worker ``i`` of a ``DataLoader`` uses
        ``seed + i``); ``None`` uses torch's global generator.
    total_steps
        Training length, filled into step-dependent schedules left open
        (:meth:`~scr2mae.masking.RatioSchedule.with_total_steps`); :class:`MaskingStepCallback`
        fills it from the trainer otherwise.

    Attributes
    ----------
    last_ratio
        The ratio(s) used for the last mini-batch (tensor of shape ``(1,)`` or ``(batch,)``).

    Examples
    --------
    >>> from transformers import AutoTokenizer, Trainer  # doctest: +SKIP
    >>> from scr2mae.integrations.transformers import MaskingStepCallback, R2MAEDataCollator
    >>> tokenizer = AutoTokenizer.from_pretrained("roberta-base")  # doctest: +SKIP
    >>> collator = R2MAEDataCollator(
    ...     tokenizer, "r2mae", {"p_min": 0.15, "p_max": 0.4}
    ... )  # doctest: +SKIP
    >>> trainer = Trainer(
    ...     model, args, train_dataset=ds, data_collator=collator,
    ...     callbacks=[MaskingStepCallback(collator)],
    ... )  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        schedule: RatioSchedule | str = "r2mae",
        schedule_kwargs: Mapping[str, Any] | None = None,
        *,
        ratio_per: str = "batch",
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
        total_steps: int | None = None,
    ):
        if tokenizer is None or not hasattr(tokenizer, "convert_tokens_to_ids"):
            raise TypeError("`tokenizer` must be a Hugging Face tokenizer.")
        if getattr(tokenizer, "mask_token", None) is None:
            raise ValueError(
                "`tokenizer` has no mask token, which masked language modelling needs."
            )
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("`tokenizer` has no pad token, which padding a batch needs.")
        if schedule_kwargs is None:
            schedule_kwargs = {"p_min": 0.15, "p_max": 0.4} if schedule == "r2mae" else {}
        if not isinstance(schedule_kwargs, Mapping):
            raise TypeError(
                f"`schedule_kwargs` must be a mapping, got {type(schedule_kwargs).__name__}."
            )
        sched = get_masking(schedule, **dict(schedule_kwargs))
        if total_steps is not None:
            sched = sched.with_total_steps(total_steps)
        if ratio_per not in ("batch", "row"):
            raise ValueError(f"`ratio_per` must be 'batch' or 'row', got {ratio_per!r}.")
        self.mask_replace_prob = _check_prob("mask_replace_prob", mask_replace_prob)
        self.random_replace_prob = _check_prob("random_replace_prob", random_replace_prob)
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-12:
            raise ValueError(
                "`mask_replace_prob` + `random_replace_prob` must not exceed 1, got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}."
            )
        check_int("pad_to_multiple_of", pad_to_multiple_of, allow_none=True)
        check_int("seed", seed, minimum=None, allow_none=True)
        self.tokenizer = tokenizer
        self.schedule = sched
        self.ratio_per = ratio_per
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.generator: torch.Generator | None = None
        # a shared-memory counter: DataLoader worker processes see the trainer's updates
        self._step = torch.zeros((), dtype=torch.long).share_memory_()
        self.last_ratio: torch.Tensor | None = None

    @property
    def step(self) -> int:
        """Training step the schedule is evaluated at (set by :class:`MaskingStepCallback`)."""
        return int(self._step)

    @step.setter
    def step(self, value: int) -> None:
        self._step.fill_(check_int("step", value, minimum=0))

    def set_total_steps(self, total_steps: int) -> None:
        """Fill the training length into a step-dependent schedule that left it open."""
        if self.schedule.needs_total_steps:
            self.schedule = self.schedule.with_total_steps(total_steps)

    def _make_generator(self) -> None:
        seed = self.seed
        if mp.current_process().name != "MainProcess":
            info = torch.utils.data.get_worker_info()
            if info is not None:
                seed = seed + info.id
        self.generator = torch.Generator().manual_seed(seed)

    def _pad(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if isinstance(examples[0], Mapping):
            batch = self.tokenizer.pad(
                list(examples), return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
            )
            return dict(batch)
        seqs = [torch.as_tensor(e, dtype=torch.long).reshape(-1) for e in examples]
        length = max(len(s) for s in seqs)
        if (m := self.pad_to_multiple_of) is not None:
            length = ((length + m - 1) // m) * m
        out = torch.full((len(seqs), length), self.tokenizer.pad_token_id, dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, s in enumerate(seqs):
            start = length - len(s) if left else 0
            out[i, start : start + len(s)] = s
        return {"input_ids": out}

    def __call__(self, examples: Sequence[Any], return_tensors: str | None = None) -> dict:
        """Pad ``examples`` and mask them; returns ``input_ids``, ``labels`` and the rest.

        Parameters
        ----------
        examples
            Token-id lists/tensors, or mappings with ``input_ids`` (and optionally
            ``attention_mask`` and ``special_tokens_mask``) as a tokenizer returns them.
        return_tensors
            Only ``"pt"`` (or ``None``) is supported.

        Returns
        -------
        A dict of tensors with masked ``input_ids`` and ``labels`` (``-100`` where not masked).
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(f"`return_tensors` must be 'pt', got {return_tensors!r}.")
        if len(examples) == 0:
            raise ValueError("`examples` must not be empty.")
        if self.seed is not None and self.generator is None:
            self._make_generator()
        batch = self._pad(examples)
        special = batch.pop("special_tokens_mask", None)
        batch.pop("offset_mapping", None)
        batch["input_ids"], batch["labels"] = self.mask_tokens(batch["input_ids"], special)
        return batch

    def mask_tokens(
        self, inputs: torch.Tensor, special_tokens_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask a padded batch of token ids in place; return ``(inputs, labels)``.

        Parameters
        ----------
        inputs
            Long tensor ``(batch, length)``.
        special_tokens_mask
            ``1`` where a token must never be masked; computed from the tokenizer if ``None``.
            Padding tokens are never masked either.

        Returns
        -------
        The corrupted inputs and the labels (original id where masked, ``-100`` elsewhere).
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2:
            raise ValueError("`inputs` must be a 2-d tensor of token ids.")
        labels = inputs.clone()
        if special_tokens_mask is None:
            special_tokens_mask = [
                self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                for row in labels.tolist()
            ]
        no_mask = torch.as_tensor(special_tokens_mask, dtype=torch.bool).reshape(labels.shape)
        no_mask = no_mask | (labels == self.tokenizer.pad_token_id)
        n = 1 if self.ratio_per == "batch" else labels.shape[0]
        ratio = self.schedule.sample(self.step, n, generator=self.generator)
        self.last_ratio = ratio
        probability = ratio.reshape(-1, 1).expand(labels.shape).clone()
        probability.masked_fill_(no_mask, 0.0)
        masked = torch.bernoulli(probability, generator=self.generator).bool()
        labels[~masked] = -100

        def coin(p: float) -> torch.Tensor:
            return torch.bernoulli(torch.full(labels.shape, p), generator=self.generator).bool()

        replaced = coin(self.mask_replace_prob) & masked
        inputs[replaced] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        if self.mask_replace_prob == 1.0 or self.random_replace_prob == 0.0:
            return inputs, labels
        scaled = self.random_replace_prob / (1.0 - self.mask_replace_prob)
        randomised = coin(scaled) & masked & ~replaced
        words = torch.randint(
            len(self.tokenizer), labels.shape, dtype=torch.long, generator=self.generator
        )
        inputs[randomised] = words[randomised]
        return inputs, labels

    def __repr__(self) -> str:
        return (
            f"R2MAEDataCollator(schedule={self.schedule!r}, ratio_per={self.ratio_per!r}, "
            f"mask_replace_prob={self.mask_replace_prob}, "
            f"random_replace_prob={self.random_replace_prob})"
        )


class MaskingStepCallback(_CallbackBase):
    """``transformers.TrainerCallback`` that feeds the trainer's step to an R2MAE collator.

    At the start of training it fills the trainer's ``max_steps`` into a step-dependent
    schedule that was left open (e.g. ``get_masking("dynamic", start=0.4, end=0.15)``), and
    before every optimisation step it sets ``collator.step = state.global_step``.

    Parameters
    ----------
    collator
        The :class:`R2MAEDataCollator` given to the trainer.
    """

    def __init__(self, collator: R2MAEDataCollator):
        if not isinstance(collator, R2MAEDataCollator):
            raise TypeError(
                f"`collator` must be an R2MAEDataCollator, got {type(collator).__name__}."
            )
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        """Fill the training length into the schedule and reset the step."""
        if state.max_steps and state.max_steps > 0:
            self.collator.set_total_steps(int(state.max_steps))
        self.collator.step = int(state.global_step)
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        """Hand the current global step to the collator (also at a step's end, so the
        incremented step is in place before the next batch is collated)."""
        self.collator.step = int(state.global_step)
        return control

    on_step_end = on_step_begin
