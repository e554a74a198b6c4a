"""Gradient multiplier (reversal) layer and the schedules of its coefficient (appendix A.3).

Between the curriculum weights and the loss, a layer that is the identity forward and multiplies
the gradient by a coefficient decides whether the weight generator minimises the loss (``+1``,
the "k = 0" setting), maximises it (``-1``, adversarial) or is frozen (``0``, warm-up).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._checks import _check_finite, _step_tensor, check_int
from ._schedules import _ParameterObject

__all__ = [
    "ConstantMultiplier",
    "GradientMultiplier",
    "GradientMultiplierSchedule",
    "LinearMultiplier",
    "multiply_gradient",
]


class _MultiplyGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by a tensor coefficient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coefficient)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (coefficient,) = ctx.saved_tensors
        return grad_output * coefficient.to(dtype=grad_output.dtype), None


def multiply_gradient(x: torch.Tensor, coefficient: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``coefficient`` in the backward.

    A coefficient of ``-1`` is a gradient-reversal layer (what receives the gradient maximises
    the loss), ``+1`` leaves it unchanged and ``0`` blocks it.

    Parameters
    ----------
    x
        Any tensor.
    coefficient
        A number or a 0-d tensor (possibly on an accelerator, possibly computed from a
        device-resident step counter). It is treated as a constant: no gradient flows into it.

    Returns
    -------
    A tensor equal to ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if isinstance(coefficient, torch.Tensor):
        c = coefficient.detach().to(device=x.device)
    else:  # a fill kernel, not a host-to-device copy (which could synchronise)
        c = torch.full((), float(coefficient), device=x.device)
    if c.dim() != 0:
        raise ValueError(
            f"`coefficient` must be a scalar (0-d tensor), got shape {tuple(c.shape)}."
        )
    if not c.is_floating_point():
        c = c.to(torch.float32)
    return _MultiplyGradient.apply(x, c)


class GradientMultiplier(nn.Module):
    """Layer form of :func:`multiply_gradient`: ``forward(x, coefficient)`` returns ``x``."""

    def forward(self, x: torch.Tensor, coefficient: float | torch.Tensor) -> torch.Tensor:
        """Return ``x``; its gradient is multiplied by ``coefficient`` on the way back."""
        return multiply_gradient(x, coefficient)


@dataclasses.dataclass(frozen=True, init=False)
class GradientMultiplierSchedule(_ParameterObject):
    """Base class: the gradient coefficient the weight generator receives at each step.

    During the first ``warmup_steps`` steps the coefficient is ``0`` (the generator is frozen,
    appendices C.7/C.8: "fixed for 5000 initial training steps"); afterwards it is
    :meth:`value`. Subclasses implement :meth:`value`.

    Parameters
    ----------
    warmup_steps
        Number of initial steps during which the generator is frozen.
    """

    warmup_steps: int

    def __init__(self, warmup_steps: int = 5000):
        self._set(warmup_steps=check_int("warmup_steps", warmup_steps, minimum=0))

    def value(self, step: torch.Tensor) -> torch.Tensor:
        """Coefficient after warm-up at ``step`` (a float32 0-d tensor); see subclasses."""
        raise NotImplementedError

    def __call__(
        self, step: int | torch.Tensor, *, device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Coefficient at ``step``: ``0`` during warm-up, else :meth:`value`.

        Parameters
        ----------
        step
            Optimisation step, a Python ``int`` or a 0-d tensor (e.g. a device-resident
            counter); no host synchronisation happens.
        device
            Device of the result; defaults to ``step``'s device (CPU for an ``int``).

        Returns
        -------
        Float32 0-d tensor.
        """
        t = _step_tensor(step, device)
        return torch.where(t < self.warmup_steps, torch.zeros_like(t), self.value(t))


@dataclasses.dataclass(frozen=True, init=False)
class ConstantMultiplier(GradientMultiplierSchedule):
    """A constant gradient coefficient after warm-up.

    The default ``+1`` is the paper's "k = 0" setting: the generator follows the gradient of the
    loss, i.e. *minimises* it, and learns an easy mask (appendix A.3).

    Parameters
    ----------
    value
        The coefficient.
    warmup_steps
        As in :class:`GradientMultiplierSchedule`.
    """

    constant: float

    def __init__(self, value: float = 1.0, warmup_steps: int = 5000):
        super().__init__(warmup_steps)
        self._set(constant=_check_finite("value", value))

    def value(self, step: torch.Tensor) -> torch.Tensor:
        return torch.full_like(step, self.constant)


@dataclasses.dataclass(frozen=True, init=False)
class LinearMultiplier(GradientMultiplierSchedule):
    """A coefficient moving linearly from ``start`` to ``end`` between two steps.

    Before ``start_step`` it is ``start``, after ``end_step`` it is ``end``. The defaults
    (``+1 → -1`` from step 30000 to 120000) are the single-cell R2MAE + CL setting of appendix
    C.8: easy-to-hard, adversarial at the end. (C.7, DNA, decays over the whole training:
    ``start_step=0, end_step=total_steps``.)

    Parameters
    ----------
    start, end
        Coefficients at the two ends.
    start_step, end_step
        Steps where the linear ramp begins and ends (``end_step > start_step >= 0``).
    warmup_steps
        Number of initial steps with coefficient ``0`` (generator frozen); this overrides the
        ramp while it lasts.
    """

    start: float
    end: float
    start_step: int
    end_step: int

    def __init__(
        self,
        start: float = 1.0,
        end: float = -1.0,
        start_step: int = 30000,
        end_step: int = 120000,
        warmup_steps: int = 5000,
    ):
        super().__init__(warmup_steps)
        self._set(
            start=_check_finite("start", start),
            end=_check_finite("end", end),
            start_step=check_int("start_step", start_step, minimum=0),
            end_step=check_int("end_step", end_step, minimum=0),
        )
        if self.end_step <= self.start_step:
            raise ValueError(
                f"`end_step` ({self.end_step}) must be larger than `start_step` "
                f"({self.start_step})."
            )

    def value(self, step: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp((step - self.start_step) / (self.end_step - self.start_step), 0.0, 1.0)
        return self.start + (self.end - self.start) * frac
