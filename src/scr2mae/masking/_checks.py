"""Argument checks shared by the masking core (each value is checked where it is used)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


class NotAnIntegerError(TypeError, ValueError):
    """A value that must be a whole number is not one (a ``TypeError`` and a ``ValueError``)."""


def check_int(
    name: str, value: Any, minimum: int | None = 1, *, allow_none: bool = False
) -> int | None:
    """``value`` as an ``int`` of at least ``minimum`` (``None``: any; a ``None`` value passes
    when ``allow_none``): the one integer check of the package. Booleans are not integers."""
    if value is None and allow_none:
        return None
    bound = "" if minimum is None else f" >= {minimum}"
    message = (
        f"`{name}` must be an integer{bound}{' or None' if allow_none else ''}, got {value!r}."
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NotAnIntegerError(message)
    if minimum is not None and value < minimum:
        raise ValueError(message)
    return int(value)


def _check_ratio(name: str, value: float, *, allow_one: bool = False) -> float:
    """Validate a masking ratio and return it as ``float``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.") from None
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (math.isfinite(value) and value >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
    return value


def _check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a finite ``float``."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}.")
    return value


def _resolve_device(like: Any, generator: torch.Generator | None, device) -> torch.device:
    """``device``, else that of ``like`` (a step or a ratio) if a tensor, else the generator's,
    else CPU: the one rule for where the masking core puts its results."""
    if device is not None:
        return torch.device(device)
    if isinstance(like, torch.Tensor):
        return like.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def _step_tensor(
    step: int | torch.Tensor, device: str | torch.device | None = None
) -> torch.Tensor:
    """The step as a float32 0-d tensor on ``device`` (default: the step's own, else CPU)."""
    if isinstance(step, torch.Tensor):
        if step.dim() != 0:
            raise ValueError(
                f"`step` must be a scalar (0-d tensor), got shape {tuple(step.shape)}."
            )
        return step.to(device=device if device is not None else step.device, dtype=torch.float32)
    if isinstance(step, bool) or not isinstance(step, int | float):
        raise TypeError(f"`step` must be an int or a 0-d tensor, got {type(step).__name__}.")
    # a fill kernel, not a host-to-device copy (which could synchronise on an accelerator)
    return torch.full((), float(step), device=device, dtype=torch.float32)
