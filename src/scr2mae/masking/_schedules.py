"""Masking-ratio schedules.

A schedule answers one question: *which masking ratio(s) should the next mini-batch use?*
Every schedule exposes :meth:`RatioSchedule.sample` (ratios only) and
:meth:`RatioSchedule.draw` (ratios plus, for discrete schedules, the index of the ratio in its
set, which the curriculum weights need).  All computation stays on the requested device: the
step may be a Python ``int`` or a 0-d tensor living on the accelerator, so that a training loop
can keep its step counter on the GPU and never synchronise with the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ._checks import _check_ratio, _resolve_device, _step_tensor, check_int

__all__ = [
    "DiscreteRatios",
    "FixedRatio",
    "LinearDecayRatio",
    "MDLMRatio",
    "RatioDraw",
    "RatioSchedule",
    "UniformDecayRatio",
    "UniformRatio",
]


class RatioDraw(NamedTuple):
    """Masking ratios drawn for one mini-batch.

    Attributes
    ----------
    ratio
        Float tensor of shape ``(n,)`` with the ratios.
    index
        Long tensor of shape ``(n,)`` with the position of each ratio in a discrete schedule's
        set, or ``None`` for continuous schedules.
    """

    ratio: torch.Tensor
    index: torch.Tensor | None


class _ParameterObject:
    """Base of the schedules, which are frozen dataclasses (equality, hashing and repr from
    their fields); ``__post_init__`` validates the fields and stores them normalised."""

    def _set(self, **values: object) -> None:
        for key, value in values.items():
            object.__setattr__(self, key, value)


class RatioSchedule(_ParameterObject):
    """Base class of masking-ratio schedules.

    Subclasses implement :meth:`sample`; discrete schedules also override :meth:`draw`.
    """

    #: short name used by :func:`~scr2mae.masking.get_masking`
    name: str = "schedule"

    def sample(
        self,
        step: int | torch.Tensor = 0,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` masking ratios for training step ``step``.

        Parameters
        ----------
        step
            Current optimisation step (``int`` or 0-d tensor, possibly on an accelerator).
        n
            Number of ratios to draw (``1`` for one ratio per mini-batch, the batch size for
            one ratio per row).
        generator
            Optional seeded :class:`torch.Generator`; it must live on ``device``.
        device
            Device of the returned tensor. Defaults to the device of ``step`` (if a tensor),
            else of ``generator``, else CPU.

        Returns
        -------
        Float tensor of shape ``(n,)`` with values in ``[0, 1)``.
        """
        raise NotImplementedError

    def draw(
        self,
        step: int | torch.Tensor = 0,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> RatioDraw:
        """Like :meth:`sample` but also returns the discrete index (``None`` here)."""
        return RatioDraw(self.sample(step, n, generator=generator, device=device), None)

    def expected_ratio(self, step: int = 0) -> float:
        """Mean masking ratio at ``step`` (a host-side number for reporting)."""
        raise NotImplementedError

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest ratio the schedule can produce over all steps."""
        raise NotImplementedError

    @property
    def needs_total_steps(self) -> bool:
        """Whether the schedule still needs the training length (see :meth:`with_total_steps`)."""
        return False

    def with_total_steps(self, total_steps: int) -> RatioSchedule:
        """Return a copy whose training length is ``total_steps`` where it was left open.

        Schedules that do not depend on the step return themselves.
        """
        return self


@dataclasses.dataclass(frozen=True)
class FixedRatio(RatioSchedule):
    """A constant masking ratio (standard MAE / MLM).

    Parameters
    ----------
    mask_ratio
        The ratio, in ``[0, 1)``.
    """

    name = "fixed"
    mask_ratio: float = 0.25

    def __post_init__(self):
        self._set(mask_ratio=_check_ratio("mask_ratio", self.mask_ratio))

    def sample(self, step=0, n=1, *, generator=None, device=None):
        dev = _resolve_device(step, generator, device)
        return torch.full((n,), self.mask_ratio, device=dev, dtype=torch.float32)

    def expected_ratio(self, step: int = 0) -> float:
        return self.mask_ratio

    def bounds(self) -> tuple[float, float]:
        return (self.mask_ratio, self.mask_ratio)


class _LinearCentre(RatioSchedule):
    """Shared logic of schedules whose centre decays linearly from ``start`` to ``end``."""

    start: float
    end: float
    total_steps: int | None

    def __post_init__(self):
        self._set(
            start=_check_ratio("start", self.start),
            end=_check_ratio("end", self.end),
            total_steps=check_int("total_steps", self.total_steps, allow_none=True),
        )

    @property
    def needs_total_steps(self) -> bool:
        return self.total_steps is None

    def with_total_steps(self, total_steps: int) -> RatioSchedule:
        if self.total_steps is not None:
            return self
        return dataclasses.replace(self, total_steps=total_steps)

    def _centre(self, step, device) -> torch.Tensor:
        if self.total_steps is None:
            raise RuntimeError(
                f"{type(self).__name__} needs `total_steps`; pass it explicitly or call "
                "`with_total_steps(n)` (R2MAEModel.train does this from max_epochs)."
            )
        t = _step_tensor(step, device)
        frac = torch.clamp(t / float(self.total_steps), 0.0, 1.0)
        return self.start + (self.end - self.start) * frac

    def expected_ratio(self, step: int = 0) -> float:
        if self.total_steps is None:
            return self.start
        frac = min(max(step / self.total_steps, 0.0), 1.0)
        return self.start + (self.end - self.start) * frac


@dataclasses.dataclass(frozen=True)
class LinearDecayRatio(_LinearCentre):
    """Linearly decaying masking ratio ("dynamic MR").

    The ratio moves from ``start`` at step 0 to ``end`` at ``total_steps`` and stays there.

    Parameters
    ----------
    start
        Ratio at the first step.
    end
        Ratio from ``total_steps`` on.
    total_steps
        Length of the decay in optimisation steps; ``None`` leaves it to be filled in from the
        training length (see :meth:`with_total_steps`).
    """

    name = "dynamic"
    start: float = 0.5
    end: float = 0.1
    total_steps: int | None = None

    def sample(self, step=0, n=1, *, generator=None, device=None):
        dev = _resolve_device(step, generator, device)
        return self._centre(step, dev).reshape(1).expand(n).clone()

    def bounds(self) -> tuple[float, float]:
        return (min(self.start, self.end), max(self.start, self.end))


@dataclasses.dataclass(frozen=True)
class UniformRatio(RatioSchedule):
    """R2MAE: a ratio drawn uniformly from ``[p_min, p_max)`` for every draw.

    Parameters
    ----------
    p_min
        Lower end of the masking range, in ``[0, 1)``.
    p_max
        Upper end of the masking range (exclusive), in ``[p_min, 1]``.
    """

    name = "r2mae"
    p_min: float = 0.1
    p_max: float = 0.5

    def __post_init__(self):
        self._set(
            p_min=_check_ratio("p_min", self.p_min),
            p_max=_check_ratio("p_max", self.p_max, allow_one=True),
        )
        if self.p_min > self.p_max:
            raise ValueError(
                f"`p_min` ({self.p_min}) must not exceed `p_max` ({self.p_max}) in the mask range."
            )

    @property
    def mask_range(self) -> tuple[float, float]:
        """The ``(p_min, p_max)`` pair."""
        return (self.p_min, self.p_max)

    def sample(self, step=0, n=1, *, generator=None, device=None):
        dev = _resolve_device(step, generator, device)
        u = torch.rand(n, generator=generator, device=dev)
        return self.p_min + (self.p_max - self.p_min) * u

    def expected_ratio(self, step: int = 0) -> float:
        return 0.5 * (self.p_min + self.p_max)

    def bounds(self) -> tuple[float, float]:
        return (self.p_min, self.p_max)


@dataclasses.dataclass(frozen=True, repr=False)
class MDLMRatio(UniformRatio):
    """The training phase of a masked diffusion language model: ratio ~ uniform(0, 1)."""

    name = "mdlm"
    p_min: float = dataclasses.field(default=0.0, init=False)
    p_max: float = dataclasses.field(default=1.0, init=False)

    def __repr__(self) -> str:
        return "MDLMRatio()"


@dataclasses.dataclass(frozen=True)
class UniformDecayRatio(_LinearCentre):
    """R2MAE + dynamic MR: a uniform window whose centre decays linearly.

    At step ``t`` the ratio is drawn from ``U(c_t - half_width, c_t + half_width)`` where
    ``c_t`` decays from ``start`` to ``end`` over ``total_steps`` (appendices C.7/C.8), so the
    expected ratio matches :class:`LinearDecayRatio` with the same ``start``/``end``.

    Parameters
    ----------
    start
        Window centre at step 0.
    end
        Window centre from ``total_steps`` on.
    half_width
        Half the width of the window; the window must stay inside ``[0, 1]``.
    total_steps
        Length of the decay; ``None`` to fill it in from the training length.
    """

    name = "r2mae_dynamic"
    start: float = 0.5
    end: float = 0.2
    half_width: float = 0.1
    total_steps: int | None = None

    def __post_init__(self):
        super().__post_init__()
        self._set(half_width=_check_ratio("half_width", self.half_width))
        for label, centre in (("start", self.start), ("end", self.end)):
            if centre - self.half_width < 0.0 or centre + self.half_width > 1.0:
                raise ValueError(
                    f"`half_width` ({self.half_width}) pushes the window around `{label}` "
                    f"({centre}) outside [0, 1]."
                )

    def sample(self, step=0, n=1, *, generator=None, device=None):
        dev = _resolve_device(step, generator, device)
        centre = self._centre(step, dev)
        u = torch.rand(n, generator=generator, device=dev)
        return centre + self.half_width * (2.0 * u - 1.0)

    def bounds(self) -> tuple[float, float]:
        lo, hi = min(self.start, self.end), max(self.start, self.end)
        return (lo - self.half_width, hi + self.half_width)


@dataclasses.dataclass(frozen=True, init=False)
class DiscreteRatios(RatioSchedule):
    """Ratios drawn uniformly from a finite set (the curriculum's ratio vector).

    :meth:`draw` also returns the index of each drawn ratio, which selects the column of the
    curriculum weight matrix (appendix A.3).

    Parameters
    ----------
    ratios
        The allowed ratios, each in ``[0, 1)``. Defaults to ten evenly spaced ratios from 0.1
        to 0.5 (the single-cell R2MAE range).
    """

    name = "discrete"
    ratios: tuple[float, ...]

    def __init__(self, ratios: Sequence[float] | None = None):
        if ratios is None:
            ratios = [0.1 + (0.5 - 0.1) * i / 9 for i in range(10)]
        ratios = tuple(ratios) if not isinstance(ratios, torch.Tensor) else tuple(ratios.tolist())
        if len(ratios) == 0:
            raise ValueError("`ratios` must contain at least one masking ratio.")
        self._set(ratios=tuple(_check_ratio("ratios", r) for r in ratios))

    @classmethod
    def spanning(cls, p_min: float, p_max: float, n: int = 10) -> DiscreteRatios:
        """``n`` evenly spaced ratios from ``p_min`` to ``p_max`` inclusive."""
        UniformRatio(p_min, p_max)  # validates the range
        check_int("n", n)
        if n == 1:
            return cls((0.5 * (p_min + p_max),))
        step = (p_max - p_min) / (n - 1)
        return cls(tuple(min(p_min + i * step, p_max) for i in range(n)))

    @property
    def n_ratios(self) -> int:
        """Number of ratios in the set (``K``)."""
        return len(self.ratios)

    def draw(self, step=0, n=1, *, generator=None, device=None) -> RatioDraw:
        dev = _resolve_device(step, generator, device)
        index = torch.randint(len(self.ratios), (n,), generator=generator, device=dev)
        return RatioDraw(self._table(dev)[index], index)

    def _table(self, device: torch.device) -> torch.Tensor:
        """The ratios as a tensor on ``device``, copied there once (no per-step copy)."""
        cache = self.__dict__.setdefault("_tables", {})
        key = str(device)
        if key not in cache:
            cache[key] = torch.tensor(self.ratios, dtype=torch.float32).to(device)
        return cache[key]

    def __getstate__(self) -> dict:
        return {"ratios": self.ratios}

    def sample(self, step=0, n=1, *, generator=None, device=None):
        return self.draw(step, n, generator=generator, device=device).ratio

    def expected_ratio(self, step: int = 0) -> float:
        return sum(self.ratios) / len(self.ratios)

    def bounds(self) -> tuple[float, float]:
        return (min(self.ratios), max(self.ratios))
