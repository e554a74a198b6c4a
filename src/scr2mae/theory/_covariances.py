"""Covariance models and signals of the paper's simulations (appendix C.1)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._validation import as_rng, check_covariance, check_int, check_nonnegative, check_positive

__all__ = [
    "beta_spectrum_covariance",
    "eigenvector_signal",
    "isotropic_covariance",
    "latent_space_covariance",
    "random_signal",
    "spectrum_covariance",
    "spiked_covariance",
    "spiked_signal",
    "two_plateau_model",
    "uniform_spectrum_covariance",
]


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _check_range(low, high) -> tuple[float, float]:
    low = check_positive("low", low)
    high = check_positive("high", high)
    if high <= low:
        raise ValueError(f"`high` ({high}) must exceed `low` ({low}).")
    return low, high


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = values.max() - values.min()
    if span == 0.0:
        return np.full_like(values, 0.5 * (low + high))
    return low + (high - low) * (values - values.min()) / span


def _rescaled_rotation(draw, low, high, seed) -> np.ndarray:
    """Random rotation of the spectrum ``draw(rng)`` rescaled to the checked ``[low, high]``."""
    low, high = _check_range(low, high)
    rng = as_rng(seed)
    return spectrum_covariance(_rescale(draw(rng), low, high), seed=rng)


def isotropic_covariance(n_features: int) -> np.ndarray:
    """The identity covariance ``I_d`` (Fig. 1A, Theorem 1).

    Parameters
    ----------
    n_features
        Dimension ``d``.

    Returns
    -------
    ``(d, d)`` identity matrix.
    """
    return np.eye(check_int("n_features", n_features))


def spiked_covariance(
    n_features: int,
    spike: float,
    *,
    direction: Literal["random", "ones"] = "random",
    seed=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-one spiked covariance ``I + theta u u^T`` (Figs. 1B-D and 3).

    Parameters
    ----------
    n_features
        Dimension ``d``.
    spike
        Spike strength ``theta >= 0``.
    direction
        ``"random"``: ``u`` has i.i.d. uniform ``[0, 1)`` entries (Figs. 1B-D); ``"ones"``:
        the all-ones vector (Fig. 3). Either way ``||u|| = 1``.
    seed
        Seed or :class:`numpy.random.Generator` for ``direction="random"``.

    Returns
    -------
    ``(cov, u)``.
    """
    d = check_int("n_features", n_features)
    theta = check_nonnegative("spike", spike)
    if direction == "random":
        u = as_rng(seed).uniform(size=d)
    elif direction == "ones":
        u = np.ones(d)
    else:
        raise ValueError(f"`direction` must be 'random' or 'ones', got {direction!r}.")
    u = u / np.linalg.norm(u)
    return np.eye(d) + theta * np.outer(u, u), u


def spiked_signal(u, strength: float, *, seed=None, norm: float = 1.0) -> np.ndarray:
    """Coefficients ``beta = norm (alpha u + sqrt(1 - alpha^2) v)`` with ``v`` orthogonal to ``u``.

    ``v`` is the normalised component of a uniform ``[0, 1)`` vector after removing its
    projection onto ``u`` (appendix C.1); ``alpha`` is the feature strength.

    Parameters
    ----------
    u
        Unit spike direction, shape ``(d,)``, ``d >= 2``.
    strength
        Feature strength ``alpha`` in ``[-1, 1]``.
    seed
        Seed or generator for ``v``.
    norm
        ``||beta||``.

    Returns
    -------
    ``beta``, shape ``(d,)``.
    """
    u = np.asarray(u, dtype=float)
    if u.ndim != 1 or u.size < 2 or not np.isclose(np.linalg.norm(u), 1.0):
        raise ValueError("`u` must be a unit vector with at least 2 entries.")
    alpha = float(strength)
    if not -1.0 <= alpha <= 1.0:
        raise ValueError(f"`strength` must lie in [-1, 1], got {strength!r}.")
    norm = check_nonnegative("norm", norm)
    rng = as_rng(seed)
    v = rng.uniform(size=u.size)
    v -= (v @ u) * u
    while np.linalg.norm(v) < 1e-8:  # pragma: no cover - only if v happens to be parallel
        v = rng.standard_normal(u.size)
        v -= (v @ u) * u
    v /= np.linalg.norm(v)
    return norm * (alpha * u + np.sqrt(1.0 - alpha**2) * v)


def spectrum_covariance(eigenvalues, *, seed=None) -> np.ndarray:
    """``Q diag(eigenvalues) Q^T`` with a Haar-random orthogonal ``Q``.

    Parameters
    ----------
    eigenvalues
        Positive eigenvalues, shape ``(d,)``.
    seed
        Seed or generator for ``Q``.

    Returns
    -------
    ``(d, d)`` covariance.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("`eigenvalues` must be a non-empty 1-d array of positive numbers.")
    q = _haar_orthogonal(lam.size, as_rng(seed))
    cov = (q * lam) @ q.T
    return 0.5 * (cov + cov.T)


def uniform_spectrum_covariance(
    n_features: int, *, low: float = 1.0, high: float = 10.0, seed=None
) -> np.ndarray:
    """Random rotation of a uniform spectrum on ``[low, high]`` (Fig. 1E, "uniform").

    Eigenvalues are drawn uniformly and rescaled so the smallest is ``low`` and the largest
    ``high``.

    Parameters
    ----------
    n_features
        Dimension ``d``.
    low, high
        Range of the spectrum.
    seed
        Seed or generator.

    Returns
    -------
    ``(d, d)`` covariance.
    """
    d = check_int("n_features", n_features)
    return _rescaled_rotation(lambda rng: rng.uniform(size=d), low, high, seed)


def beta_spectrum_covariance(
    n_features: int,
    *,
    a: float = 2.0,
    b: float = 5.0,
    low: float = 1.0,
    high: float = 10.0,
    seed=None,
) -> np.ndarray:
    """Random rotation of a Beta(a, b) spectrum rescaled to ``[low, high]`` (Fig. 1E, Tables 5/9).

    The paper's Beta parameters were lost in the text extraction; the default ``(2, 5)`` puts
    most eigenvalues near the low end with a tail of strong directions.

    Parameters
    ----------
    a, b
        Beta shape parameters.
    n_features, low, high, seed
        As in :func:`uniform_spectrum_covariance`.

    Returns
    -------
    ``(d, d)`` covariance.
    """
    d = check_int("n_features", n_features)
    a = check_positive("a", a)
    b = check_positive("b", b)
    return _rescaled_rotation(lambda rng: rng.beta(a, b, size=d), low, high, seed)


def latent_space_covariance(
    n_features: int, *, n_latent: int | None = None, top: float = 10.0, seed=None
) -> np.ndarray:
    """Latent-space model ``I + W W^T`` with Gaussian ``W`` (Fig. 1E, Tables 5/9).

    ``W`` is ``d x k`` with i.i.d. ``N(0, s^2)`` entries, ``s^2 = (top - 1) / (sqrt(d) +
    sqrt(k))^2``, so the spectrum runs from 1 to about ``top``.

    Parameters
    ----------
    n_features, seed
        As in :func:`uniform_spectrum_covariance`.
    n_latent
        Latent dimension ``k``; defaults to ``d // 2``.
    top
        Approximate largest eigenvalue (``> 1``).

    Returns
    -------
    ``(d, d)`` covariance.
    """
    d = check_int("n_features", n_features)
    k = check_int("n_latent", max(d // 2, 1) if n_latent is None else n_latent)
    top = check_positive("top", top)
    if top <= 1.0:
        raise ValueError(f"`top` must exceed 1, got {top}.")
    scale = np.sqrt((top - 1.0) / (np.sqrt(d) + np.sqrt(k)) ** 2)
    w = scale * as_rng(seed).standard_normal((d, k))
    cov = np.eye(d) + w @ w.T
    return 0.5 * (cov + cov.T)


def two_plateau_model(
    n_features: int, *, rank: int = 10, spike: float = 20.0, seed=None
) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank latent model of Figs. 1G and 4, whose risk curve has two plateaus.

    ``Sigma = I + W W^T`` with ``W = U L V^T`` (``U``, ``V`` Haar-orthogonal, ``L`` diagonal
    with ``rank`` non-zero entries ``sqrt(spike)``), and ``beta = W g / ||W g||`` for ``g``
    uniform on ``[0, 1)^d``: the signal lives in the ``rank`` strong directions.

    Parameters
    ----------
    n_features, seed
        As in :func:`uniform_spectrum_covariance`.
    rank
        Number of strong directions (``1 <= rank <= d``).
    spike
        Eigenvalue of ``W W^T`` on those directions.

    Returns
    -------
    ``(cov, beta)`` with ``||beta|| = 1``.
    """
    d = check_int("n_features", n_features)
    rank = check_int("rank", rank)
    if rank > d:
        raise ValueError(f"`rank` ({rank}) must not exceed `n_features` ({d}).")
    spike = check_positive("spike", spike)
    rng = as_rng(seed)
    u = _haar_orthogonal(d, rng)
    v = _haar_orthogonal(d, rng)
    diag = np.zeros(d)
    diag[:rank] = np.sqrt(spike)
    w = (u * diag) @ v.T
    cov = np.eye(d) + w @ w.T
    beta = w @ rng.uniform(size=d)
    return 0.5 * (cov + cov.T), beta / np.linalg.norm(beta)


def eigenvector_signal(cov, quantile: float, *, norm: float = 1.0) -> np.ndarray:
    """Unit-norm (times ``norm``) eigenvector of ``cov`` at an eigenvalue quantile (Fig. 1E).

    Parameters
    ----------
    cov
        Covariance, shape ``(d, d)``.
    quantile
        In ``[0, 1]``: 0 picks the weakest direction, 1 the strongest, 0.5 the median one.
    norm
        ``||beta||``.

    Returns
    -------
    ``beta``, shape ``(d,)``, with a non-negative sum (a fixed sign).
    """
    cov = check_covariance(cov)
    q = float(quantile)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"`quantile` must lie in [0, 1], got {quantile!r}.")
    norm = check_nonnegative("norm", norm)
    _, vecs = np.linalg.eigh(cov)
    idx = round(q * (cov.shape[0] - 1))
    v = vecs[:, idx]
    return norm * (v if v.sum() >= 0 else -v)


def random_signal(n_features: int, *, norm: float = 1.0, seed=None) -> np.ndarray:
    """Coefficients with i.i.d. uniform ``[0, 1)`` entries scaled to ``||beta|| = norm`` (Fig. 1A).

    Parameters
    ----------
    n_features, seed
        As in :func:`uniform_spectrum_covariance`.
    norm
        ``||beta||``.

    Returns
    -------
    ``beta``, shape ``(d,)``.
    """
    d = check_int("n_features", n_features)
    norm = check_nonnegative("norm", norm)
    beta = as_rng(seed).uniform(size=d)
    return norm * beta / np.linalg.norm(beta)
