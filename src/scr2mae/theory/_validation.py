"""Argument checks shared by the theory modules (clear errors before any computation)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..masking._checks import check_int as check_int  # the package's one integer check


def check_ratios(ratios, name: str = "ratios") -> np.ndarray:
    """Return masking ratios as a 1-d float array, each strictly inside ``(0, 1)``.

    A ratio of 0 leaves no training rows and a ratio of 1 hides every covariate, so the
    linear model is only defined on the open interval.
    """
    try:
        arr = np.atleast_1d(np.asarray(ratios, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number or a sequence of numbers.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a scalar or a non-empty 1-d sequence.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0) or np.any(arr >= 1.0):
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {arr.tolist()}.")
    return arr


def check_nonnegative(name: str, value) -> float:
    """Return ``value`` as a finite non-negative ``float``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.") from None
    if not math.isfinite(out) or out < 0.0:
        raise ValueError(f"`{name}` must be a finite non-negative number, got {value!r}.")
    return out


def check_positive(name: str, value) -> float:
    """Return ``value`` as a finite positive ``float``."""
    out = check_nonnegative(name, value)
    if out == 0.0:
        raise ValueError(f"`{name}` must be positive, got {value!r}.")
    return out


def check_covariance(cov, name: str = "cov") -> np.ndarray:
    """Return a symmetric positive semi-definite matrix as a float64 array."""
    try:
        arr = np.asarray(cov, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a square numeric matrix.") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty square matrix, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains non-finite entries.")
    scale = max(float(np.max(np.abs(arr))), 1e-300)
    if not np.allclose(arr, arr.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError(f"`{name}` must be symmetric.")
    arr = 0.5 * (arr + arr.T)
    if np.any(np.diag(arr) <= 0.0):
        raise ValueError(f"`{name}` must have a positive diagonal (every feature must vary).")
    return arr


def check_signal(beta, n_features: int, name: str = "beta", allow_matrix: bool = False):
    """Return ``beta`` as a float array with ``n_features`` rows (1-d, or 2-d if allowed)."""
    try:
        arr = np.asarray(beta, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a numeric vector.") from None
    ok_ndim = (1, 2) if allow_matrix else (1,)
    if arr.ndim not in ok_ndim or arr.shape[0] != n_features:
        shape = "(d,) or (d, k)" if allow_matrix else "(d,)"
        raise ValueError(
            f"`{name}` must have shape {shape} with d = {n_features}, got {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains non-finite entries.")
    return arr


def as_rng(seed) -> np.random.Generator:
    """A NumPy generator from ``None``, an integer seed or an existing generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise ValueError(f"`seed` must be None, an integer or a numpy Generator, got {seed!r}.")
