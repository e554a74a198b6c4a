"""scArches weight surgery that keeps every reference weight on its own input column."""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from scvi.nn import FCLayers

__all__ = ["align_first_layers", "n_cats_per_cov"]


def n_cats_per_cov(registry: dict) -> tuple[int, ...]:
    """Categories of each extra categorical covariate, from a registry (as ``SCVI`` reads them)."""
    state = registry["field_registries"].get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry")
    return tuple((state or {}).get("n_cats_per_key", ()))


def _columns(n_in: int, n_cont: int, n_cat_list: list[int], reference: list[int]):
    """Reference → query column indices of a first layer reading ``n_cat_list``, and the query
    columns of new categories (the only ones a query trains). ``FCLayers`` reads its input, the
    continuous covariates, then a one-hot block per covariate of 2+ categories; scvi-tools'
    surgery appends new categories' columns at the end, which shifts every block after the
    batch, so each reference column is put where ``FCLayers`` reads it."""
    ref_index, new_index, trainable = [], [], []
    ref_at = new_at = n_in + n_cont
    ref_index += list(range(ref_at))
    new_index += list(range(new_at))
    for n_new, n_ref in zip(n_cat_list, reference, strict=True):
        width_new = n_new if n_new > 1 else 0
        width_ref = n_ref if n_ref > 1 else 0
        # a covariate that had one category had no columns: that category's new column
        # starts at zero (the reference's encoding), frozen
        ref_index += list(range(ref_at, ref_at + width_ref))
        new_index += list(range(new_at, new_at + width_ref))
        known = max(n_ref, 1) if width_new else 0
        trainable += list(range(new_at + known, new_at + width_new))
        ref_at += width_ref
        new_at += width_new
    return ref_index, new_index, trainable


def align_first_layers(
    module: torch.nn.Module,
    reference_state: dict[str, torch.Tensor],
    reference_counts: list[int],
    unfrozen: bool,
) -> None:
    """Rebuild every covariate-reading first layer of ``module`` from ``reference_state``:
    reference columns where ``FCLayers`` reads them, zeros for new categories. Unless
    ``unfrozen``, a gradient hook keeps all but the new categories' columns unchanged."""
    for name, layers in module.named_modules():
        if not isinstance(layers, FCLayers) or not layers.inject_into_layer(0):
            continue
        linear = layers.fc_layers[0][0]
        key = f"{name}.fc_layers.Layer 0.0.weight"
        before = reference_state[key]
        n_cont = layers.n_cov - sum(n if n > 1 else 0 for n in layers.n_cat_list)
        n_in = linear.in_features - layers.n_cov
        # a batch-blind encoder reads no batch (its category count is 0 in both)
        reference = [
            0 if n == 0 else c for n, c in zip(layers.n_cat_list, reference_counts, strict=True)
        ]
        ref_index, new_index, trainable = _columns(n_in, n_cont, layers.n_cat_list, reference)
        weight = torch.zeros_like(linear.weight)
        weight[:, new_index] = before[:, ref_index].to(weight)
        with torch.no_grad():
            linear.weight.copy_(weight)
        if unfrozen:
            continue
        keep = torch.zeros(linear.in_features, dtype=torch.bool)
        keep[trainable] = True

        def reference_columns_frozen(grad, keep=keep):
            return grad * keep.to(grad.device, grad.dtype)

        linear.weight.register_hook(reference_columns_frozen)
