"""GPN-MSA model, masking schemes through the shared core, masked loss and zero-shot LLR.

The architecture is ``gpn``'s ``GPNRoFormerForMaskedLM`` (the GPN-MSA model): the human token
one-hot (vocabulary ``-ACGT?``) and the one-hot of every aligned species' base are concatenated
into a ``hidden_size`` vector per position (no learned input embedding), followed by a RoFormer
encoder (rotary position embeddings) and an MLM head over the 6 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from _dna_data import (
    AUX_VOCAB_SIZE,
    MASK_ID,
    NUCLEOTIDE_IDS,
    VOCAB,
    GenomeMSA,
    tokenize,
)
from torch.nn import functional as F

from scr2mae.masking import (
    Curriculum,
    RatioSchedule,
    bernoulli_mask,
    get_curriculum,
    get_masking,
)

# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_gpn_msa_model(
    n_species: int,
    *,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int | None = None,
    dropout: float = 0.1,
    max_length: int = 512,
):
    """A ``GPNRoFormerForMaskedLM`` sized for ``n_species`` aligned species.

    Parameters
    ----------
    n_species
        Aligned species besides human; the model gets ``n_aux_features = 5 * n_species``.
    hidden_size, num_hidden_layers, num_attention_heads
        Transformer size (GPN-MSA / C.7: 768, 12, 12). ``hidden_size`` must hold the one-hot
        input: ``hidden_size >= 6 + 5 * n_species`` (89 species: 451 <= 768).
    intermediate_size
        Feed-forward width (default ``4 * hidden_size``).
    dropout
        Hidden and attention dropout.
    max_length
        Longest window the rotary embedding table covers.

    Returns
    -------
    The model (``gpn.legacy.GPNRoFormerForMaskedLM``).
    """
    from gpn.legacy import GPNRoFormerConfig, GPNRoFormerForMaskedLM

    for name, value in (
        ("n_species", n_species),
        ("hidden_size", hidden_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    n_aux = AUX_VOCAB_SIZE * n_species
    if hidden_size < len(VOCAB) + n_aux:
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be at least 6 + 5 * n_species = "
            f"{len(VOCAB) + n_aux} to hold the one-hot MSA input."
        )
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be divisible by `num_attention_heads` "
            f"({num_attention_heads})."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}.")
    config = GPNRoFormerConfig(
        vocab_size=len(VOCAB),
        aux_features_vocab_size=AUX_VOCAB_SIZE,
        n_aux_features=n_aux,
        hidden_size=hidden_size,
        embedding_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_length,
    )
    return GPNRoFormerForMaskedLM(config)


def forward_hidden(model, input_ids: torch.Tensor, aux_features: torch.Tensor):
    """Return MLM logits ``(B, L, 6)`` and the last hidden states ``(B, L, H)``."""
    hidden = model.model(input_ids=input_ids, aux_features=aux_features).last_hidden_state
    return model.cls(hidden), hidden


# --------------------------------------------------------------------------------------------
# Masking schemes (all through scr2mae.masking)
# --------------------------------------------------------------------------------------------

#: Table 3 rows -> (kind, strategy, parameters). Ranges are the paper's (C.7): fixed 15% is
#: the GPN-MSA default; R2MAE draws U(0.05, 0.30), whose ends are the "MR 5%" / "MR 30%" rows.
SCHEMES: dict[str, tuple[str, str, dict]] = {
    "GPN-MSA (MLM)": ("schedule", "fixed", {"mask_ratio": 0.15}),
    "MR 5%": ("schedule", "fixed", {"mask_ratio": 0.05}),
    "MR 30%": ("schedule", "fixed", {"mask_ratio": 0.30}),
    "MDLM": ("schedule", "mdlm", {}),
    "Dynamic MR": ("schedule", "dynamic", {"start": 0.30, "end": 0.05}),
    "CL-MAE": ("curriculum", "cl", {"mask_ratio": 0.15}),
    "CL-MAE (k=0)": ("curriculum", "cl_k0", {"mask_ratio": 0.15}),
    "R2MAE": ("schedule", "r2mae", {"mask_range": (0.05, 0.30)}),
    "R2MAE + Dynamic MR": (
        "schedule",
        "r2mae_dynamic",
        {"start": 0.30, "end": 0.05, "half_width": 0.05},
    ),
    "R2MAE + CL": ("curriculum", "r2mae_cl", {"mask_range": (0.05, 0.30), "n_ratios": 10}),
    "R2MAE + CL (k=0)": (
        "curriculum",
        "r2mae_cl_k0",
        {"mask_range": (0.05, 0.30), "n_ratios": 10},
    ),
}
#: the rows of Table 3 (standalone CL (k=0) is available but not a row of the table)
TABLE3_SCHEMES = tuple(s for s in SCHEMES if s != "CL-MAE (k=0)")


@dataclass
class MaskingScheme:
    """A named masking scheme: a ratio schedule, or a curriculum (discrete ratios + weights)."""

    name: str
    schedule: RatioSchedule | None = None
    curriculum: Curriculum | None = None

    def draw(self, step: int, *, generator: torch.Generator, device) -> tuple:
        """One ratio for the mini-batch (C.7) and, for curricula, its column index."""
        if self.curriculum is not None:
            return self.curriculum.draw(step, 1, generator=generator, device=device)
        return self.schedule.draw(step, 1, generator=generator, device=device)

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest ratio the scheme can draw."""
        if self.curriculum is not None:
            return self.curriculum.ratios.bounds()
        return self.schedule.bounds()


def build_scheme(
    name: str, *, total_steps: int, hidden_size: int, warmup_steps: int = 5000
) -> MaskingScheme:
    """Build a scheme of :data:`SCHEMES` for a run of ``total_steps`` optimisation steps.

    Curricula use the token-wise weight generator of C.7: an MLP [128, 128] on the masked
    token representations (``input_kind="features"``, ``n_inputs=hidden_size``), sigmoid + 0.5,
    Sinkhorn, frozen for ``warmup_steps``; the gradient multiplier of ``"cl"``/``"r2mae_cl"``
    decays linearly from +1 to -1 over the whole training. Decaying schedules decay over
    ``total_steps``.
    """
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose from {list(SCHEMES)}.")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"`total_steps` must be a positive integer, got {total_steps!r}.")
    kind, strategy, params = SCHEMES[name]
    if kind == "schedule":
        schedule = get_masking(strategy, **params)
        if schedule.needs_total_steps:
            schedule = schedule.with_total_steps(total_steps)
        return MaskingScheme(name, schedule=schedule)
    ramp = {}
    if not strategy.endswith("k0"):
        ramp = {"multiplier_start_step": 0, "multiplier_end_step": max(total_steps, 1)}
    curriculum = get_curriculum(
        strategy,
        warmup_steps=warmup_steps,
        input_kind="features",
        n_inputs=hidden_size,
        hidden_dims=(128, 128),
        positive_offset=0.5,
        **ramp,
        **params,
    )
    return MaskingScheme(name, curriculum=curriculum)


def maskable_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """``True`` where the human token is A, C, G or T (the only positions that may be masked)."""
    lo, hi = NUCLEOTIDE_IDS[0], NUCLEOTIDE_IDS[-1]
    return (input_ids >= lo) & (input_ids <= hi)


def human_mask(
    input_ids: torch.Tensor,
    ratio: torch.Tensor,
    *,
    mode: str = "exact",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask a fraction ``ratio`` of the human A/C/G/T positions of every window.

    ``mode="exact"`` masks exactly ``round(ratio * n_acgt)`` of each window's A/C/G/T positions
    (the rounding of :func:`scr2mae.masking.ratio_to_count`), chosen uniformly;
    ``mode="bernoulli"`` masks each A/C/G/T position independently with probability ``ratio``
    (:func:`scr2mae.masking.bernoulli_mask`, GPN-MSA's collator). Gaps and ``N`` are never
    masked. Auxiliary species are never masked.

    Returns
    -------
    Boolean ``(B, L)`` mask.
    """
    if mode not in ("exact", "bernoulli"):
        raise ValueError(f"`mode` must be 'exact' or 'bernoulli', got {mode!r}.")
    n_rows, n_cols = input_ids.shape
    allowed = maskable_positions(input_ids)
    if mode == "bernoulli":
        return (
            bernoulli_mask(n_rows, n_cols, ratio, generator=generator, device=input_ids.device)
            & allowed
        )
    n_allowed = allowed.sum(dim=1)
    # ratio_to_count's rule (round half up, clipped to [0, n]) with a per-window n
    k = torch.floor(ratio.reshape(-1).float() * n_allowed + 0.5).long()
    k = torch.minimum(k.clamp_min(0), n_allowed)
    scores = torch.rand(n_rows, n_cols, generator=generator, device=input_ids.device)
    scores = torch.where(allowed, scores, torch.full_like(scores, 2.0))
    order = torch.argsort(scores, dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(n_cols, device=order.device).expand_as(order)
    )
    return ranks < k.unsqueeze(1)


def corrupt(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BERT corruption of the masked human positions: 80% ``?``, 10% random base, 10% kept."""
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    random_base = torch.randint(
        NUCLEOTIDE_IDS[0],
        NUCLEOTIDE_IDS[-1] + 1,
        input_ids.shape,
        generator=generator,
        device=input_ids.device,
    )
    out = torch.where(mask & (u < mask_prob), torch.full_like(input_ids, MASK_ID), input_ids)
    return torch.where(mask & (u >= mask_prob) & (u < mask_prob + random_prob), random_base, out)


def masked_loss(
    model,
    batch: dict[str, torch.Tensor],
    scheme: MaskingScheme,
    step: int | torch.Tensor,
    *,
    generator: torch.Generator,
    mask_mode: str = "exact",
    fixed_ratio: float | None = None,
) -> dict[str, torch.Tensor]:
    """GPN-MSA masked-LM loss of one mini-batch under ``scheme``.

    Cross-entropy on the masked human positions only, weighted by the window's
    ``loss_weight`` and normalised by the masked weight (as ``gpn``'s ``compute_loss``); for
    curricula the token-wise weights of the drawn ratio multiply it further
    (:meth:`scr2mae.masking.Curriculum.weighted_loss`). ``fixed_ratio`` overrides the scheme's
    ratio (validation at a common ratio).

    Returns
    -------
    Dict with ``loss``, ``ratio`` (the drawn ratio) and ``n_masked``.
    """
    input_ids, aux = batch["input_ids"], batch["aux_features"]
    device = input_ids.device
    if fixed_ratio is None:
        ratio, index = scheme.draw(step, generator=generator, device=device)
    else:
        ratio, index = torch.full((1,), float(fixed_ratio), device=device), None
    mask = human_mask(input_ids, ratio, mode=mask_mode, generator=generator)
    labels = input_ids
    flip_p = batch.get("flip_p")
    if flip_p is not None:  # GPN-MSA: random labels at non-conserved masked positions
        flip = torch.rand(labels.shape, generator=generator, device=device) < flip_p
        rand_lab = torch.randint(1, 5, labels.shape, generator=generator, device=device)
        labels = torch.where(mask & flip, rand_lab, labels)
    corrupted = corrupt(input_ids, mask, generator=generator)
    logits, hidden = forward_hidden(model, corrupted, aux)
    ce = F.cross_entropy(logits.transpose(1, 2).float(), labels, reduction="none")
    weight = batch["loss_weight"].to(ce.dtype) * mask
    n_masked = mask.sum()
    norm = weight.sum().clamp_min(1e-8)
    if scheme.curriculum is not None and fixed_ratio is None:
        # weighted_loss divides by the number of masked tokens; rescale so that with uniform
        # curriculum weights the loss equals the plain weighted mean below
        elementwise = ce * batch["loss_weight"].to(ce.dtype) * (n_masked.clamp_min(1) / norm)
        loss = scheme.curriculum.weighted_loss(elementwise, mask, index, hidden, step).loss
    else:
        loss = (ce * weight).sum() / norm
    return {"loss": loss, "ratio": ratio.reshape(()), "n_masked": n_masked}


# --------------------------------------------------------------------------------------------
# Zero-shot variant effect prediction
# --------------------------------------------------------------------------------------------


def variant_inputs(
    genome_msa: GenomeMSA, variants: pd.DataFrame, window_size: int = 128
) -> dict[str, torch.Tensor]:
    """Masked forward and reverse-strand windows centred on each variant (``gpn.msa.vep``).

    For a variant at 1-based ``pos`` the window is ``[pos - 1 - W/2, pos - 1 + W/2)``; the
    variant sits at index ``W // 2`` of the forward window and at ``W // 2 - 1`` (even ``W``)
    of its reverse complement. The human token there is replaced by the mask token.

    Raises
    ------
    ValueError
        If a ``ref`` allele does not match the human reference.
    """
    missing = {"chrom", "pos", "ref", "alt"} - set(variants.columns)
    if missing:
        raise ValueError(f"`variants` lacks column(s) {sorted(missing)}.")
    if window_size < 2:
        raise ValueError(f"`window_size` must be at least 2, got {window_size}.")
    bad = ~variants["ref"].isin(list("ACGT")) | ~variants["alt"].isin(list("ACGT"))
    if bad.any():
        raise ValueError("`ref` and `alt` must be single bases A/C/G/T.")
    out = {k: [] for k in ("ids_fwd", "aux_fwd", "ids_rev", "aux_rev")}
    centre_fwd = window_size // 2
    centre_rev = centre_fwd - 1 if window_size % 2 == 0 else centre_fwd
    for row in variants.itertuples(index=False):
        p0 = int(row.pos) - 1
        start = p0 - window_size // 2
        fwd = genome_msa.get_msa(str(row.chrom), start, start + window_size, "+")
        if chr(fwd[centre_fwd, 0]).upper() != row.ref:
            raise ValueError(
                f"ref {row.ref!r} does not match the human base {chr(fwd[centre_fwd, 0])!r} at "
                f"{row.chrom}:{row.pos}."
            )
        rev = genome_msa.get_msa(str(row.chrom), start, start + window_size, "-")
        for tag, msa, centre in (("fwd", fwd, centre_fwd), ("rev", rev, centre_rev)):
            tok = tokenize(msa).astype(np.int64)
            ids = tok[:, 0].copy()
            ids[centre] = MASK_ID
            out[f"ids_{tag}"].append(ids)
            out[f"aux_{tag}"].append(tok[:, 1:])
    res = {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    res["ref_fwd"] = torch.tensor([VOCAB.index(b) for b in variants["ref"]])
    res["alt_fwd"] = torch.tensor([VOCAB.index(b) for b in variants["alt"]])
    res["ref_rev"] = torch.tensor([VOCAB.index(comp[b]) for b in variants["ref"]])
    res["alt_rev"] = torch.tensor([VOCAB.index(comp[b]) for b in variants["alt"]])
    res["pos_fwd"], res["pos_rev"] = centre_fwd, centre_rev
    return res


@torch.no_grad()
def score_variants(
    model,
    genome_msa: GenomeMSA,
    variants: pd.DataFrame,
    *,
    window_size: int = 128,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Zero-shot GPN-MSA score: ``log p(alt) - log p(ref)`` at the masked variant position.

    The log-likelihood ratio is the difference of the MLM logits of the two alleles (the
    softmax normaliser cancels), averaged over the forward and the reverse-complement window.
    Lower (more negative) = more likely deleterious.

    Returns
    -------
    ``float64`` array with one LLR per variant.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    was_training = model.training
    model.eval()
    inputs = variant_inputs(genome_msa, variants, window_size)
    scores = []
    n = len(variants)
    for lo in range(0, n, batch_size):
        sl = slice(lo, min(lo + batch_size, n))
        llr = 0.0
        for tag in ("fwd", "rev"):
            logits, _ = forward_hidden(
                model, inputs[f"ids_{tag}"][sl].to(device), inputs[f"aux_{tag}"][sl].to(device)
            )
            at = logits[:, inputs[f"pos_{tag}"]].float()
            rows = torch.arange(at.shape[0], device=at.device)
            ref = inputs[f"ref_{tag}"][sl].to(device)
            alt = inputs[f"alt_{tag}"][sl].to(device)
            llr = llr + 0.5 * (at[rows, alt] - at[rows, ref])
        scores.append(llr.cpu())
    model.train(was_training)
    return torch.cat(scores).double().numpy() if scores else np.zeros(0)


class MaskedLMTask(torch.nn.Module):
    """The GPN-MSA model, its masking scheme and (for curricula) the weight generator.

    One module so that a distributed wrapper (Lightning Fabric / DDP) sees every parameter and
    every forward call. ``forward(batch, step, generator)`` returns :func:`masked_loss`'s dict.

    Parameters
    ----------
    model
        A ``GPNRoFormerForMaskedLM``.
    scheme
        The :class:`MaskingScheme`; its curriculum (if any) becomes the submodule
        ``curriculum`` and trains with the model.
    mask_mode
        ``"exact"`` or ``"bernoulli"`` (see :func:`human_mask`).
    """

    def __init__(self, model, scheme: MaskingScheme, mask_mode: str = "exact"):
        super().__init__()
        if not isinstance(scheme, MaskingScheme):
            raise TypeError(f"`scheme` must be a MaskingScheme, got {type(scheme).__name__}.")
        if mask_mode not in ("exact", "bernoulli"):
            raise ValueError(f"`mask_mode` must be 'exact' or 'bernoulli', got {mask_mode!r}.")
        self.model = model
        self.curriculum = scheme.curriculum
        self.scheme = scheme
        self.mask_mode = mask_mode

    def forward(self, batch, step, generator, fixed_ratio=None):
        """Masked-LM loss of ``batch`` at ``step`` (see :func:`masked_loss`)."""
        return masked_loss(
            self.model,
            batch,
            self.scheme,
            step,
            generator=generator,
            mask_mode=self.mask_mode,
            fixed_ratio=fixed_ratio,
        )

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: the model with ``weight_decay``; the curriculum generator without.

        The generator's warm-up freeze is applied through a zero gradient coefficient (the
        step is a device tensor), which leaves it bit-identical under AdamW only without
        weight decay (see ``Curriculum.generator_param_group``).
        """
        groups = [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]
        if self.curriculum is not None:
            groups.append(self.curriculum.generator_param_group())
        return groups
