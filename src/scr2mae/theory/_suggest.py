"""From a data set's covariance spectrum to an R2MAE masking range (beyond the paper)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..masking import UniformRatio, get_masking
from ._deterministic import deterministic_risk
from ._validation import check_int, check_nonnegative, check_positive, check_ratios

__all__ = ["MaskRangeSuggestion", "suggest_mask_range"]


@dataclass(frozen=True)
class MaskRangeSuggestion:
    """A recommended R2MAE masking range and the linear-theory curves behind it.

    Attributes
    ----------
    mask_range
        Recommended ``(p_min, p_max)``.
    ratios
        Masking ratios at which the risk was evaluated, shape ``(n_ratios,)``.
    quantiles
        Eigenvalue quantiles of the signal directions, shape ``(n_quantiles,)``.
    eigenvalues
        Eigenvalue of the covariance at each quantile (the signal strength).
    risk
        Predicted normalised test risk (1 = no better than predicting zero), shape
        ``(n_quantiles, n_ratios)``.
    optimal_ratios
        Ratio with the smallest risk for each quantile.
    informative
        Whether masking beats the null predictor (minimum risk below 1) for each quantile;
        only those quantiles set the range.
    spectrum
        All eigenvalues of the estimated covariance, in decreasing order.
    n_features
        Number of genes (features) in the linear model.
    n_samples
        Number of samples ``n`` in the linear model (``samples_per_feature * n_features``).
    """

    mask_range: tuple[float, float]
    ratios: np.ndarray
    quantiles: np.ndarray
    eigenvalues: np.ndarray
    risk: np.ndarray
    optimal_ratios: np.ndarray
    informative: np.ndarray
    spectrum: np.ndarray
    n_features: int
    n_samples: int

    def to_masking(self) -> UniformRatio:
        """The R2MAE schedule for :attr:`mask_range`, from :mod:`scr2mae.masking`."""
        return get_masking("r2mae", mask_range=self.mask_range)

    def plot(self, ax=None):
        """Plot the risk curves, their minima and the recommended range.

        Parameters
        ----------
        ax
            A matplotlib axes to draw on; a new figure is made when ``None``.

        Returns
        -------
        The :class:`matplotlib.figure.Figure` holding the axes.
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6.0, 4.0), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.axvspan(*self.mask_range, color="0.85", label="suggested range")
        for q, lam, curve, best in zip(
            self.quantiles, self.eigenvalues, self.risk, self.optimal_ratios, strict=True
        ):
            (line,) = ax.plot(self.ratios, curve, label=f"q={q:g} (eigenvalue {lam:.3g})")
            ax.plot([best], [np.min(curve)], "o", color=line.get_color())
        ax.axhline(1.0, color="k", lw=0.8, ls=":", label="null predictor")
        finite = self.risk[np.isfinite(self.risk)]
        ax.set_ylim(max(0.0, finite.min() - 0.05), min(finite.max(), 1.5) + 0.05)
        ax.set_xlabel("masking ratio p")
        ax.set_ylabel("predicted normalised test risk")
        ax.set_title(f"linear theory: d={self.n_features}, n={self.n_samples}")
        ax.legend(fontsize="small")
        return fig


def _matrix_from(data, layer):
    """The cells x genes matrix of an AnnData (``.X`` or a layer) or a numpy/scipy matrix."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        if layer is None:
            matrix = data.X
        elif layer in data.layers:
            matrix = data.layers[layer]
        else:
            raise ValueError(
                f"`layer` {layer!r} is not in the AnnData; available: {list(data.layers)}."
            )
        if matrix is None:
            raise ValueError("`data.X` is empty; pass `layer=` with the counts.")
    else:
        if layer is not None:
            raise ValueError("`layer` is only meaningful when `data` is an AnnData.")
        matrix = data
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix, dtype=np.float64)
    if hasattr(matrix, "__array__"):
        out = np.asarray(matrix, dtype=np.float64)
        if out.ndim != 2:
            raise ValueError(f"`data` must be 2-d (cells x genes), got shape {out.shape}.")
        return out
    raise TypeError(
        "`data` must be an AnnData, a numpy array or a scipy sparse matrix, "
        f"got {type(data).__name__}."
    )


def _values(matrix) -> np.ndarray:
    return matrix.data if sp.issparse(matrix) else matrix.ravel()


def _log_normalise(matrix, target_sum: float):
    """Scale every cell to ``target_sum`` counts and take ``log1p`` (on a copy)."""
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = target_sum / totals
    if sp.issparse(matrix):
        out = sp.diags(scale) @ matrix
        out.data = np.log1p(out.data)
        return sp.csr_matrix(out)
    return np.log1p(matrix * scale[:, None])


def _covariance(matrix) -> np.ndarray:
    n = matrix.shape[0]
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    second = matrix.T @ matrix
    second = second.toarray() if sp.issparse(second) else second
    cov = (second - n * np.outer(mean, mean)) / (n - 1)
    return 0.5 * (cov + cov.T)


def suggest_mask_range(
    data,
    *,
    layer: str | None = None,
    counts: bool | None = None,
    target_sum: float = 1e4,
    n_top_genes: int = 500,
    max_cells: int = 20_000,
    samples_per_feature: float = 0.5,
    noise_ratio: float = 0.1,
    quantiles=(0.5, 0.9, 0.99),
    ratios=None,
    min_width: float = 0.1,
    seed: int = 0,
) -> MaskRangeSuggestion:
    """Suggest an R2MAE masking range ``(p_min, p_max)`` from a data set's gene covariance.

    The paper's linear theory says that the best masking ratio grows with the strength of
    the feature to be learnt (Fig. 1E) and motivates R2MAE as a way to serve features of
    several strengths at once. This function makes that quantitative for a given data set:

    1. take the cells x genes matrix, log1p-normalise counts (on a copy), keep the
       ``n_top_genes`` most variable genes and estimate their covariance ``Sigma`` from up to
       ``max_cells`` cells;
    2. for signal directions ``beta`` = eigenvectors of ``Sigma`` at the eigenvalue
       ``quantiles``, evaluate the deterministic-equivalent risk
       (:func:`~scr2mae.theory.deterministic_risk`) of masked min-norm regression over the
       masking ratios;
    3. return the span of the risk-minimising ratios over the quantiles for which masking
       beats the null predictor, widened symmetrically to at least ``min_width``.

    Assumptions (read them before trusting the numbers): each gene's reconstruction is
    modelled as a linear regression on the other (masked) genes with Gaussian covariates of
    covariance ``Sigma``; the network's capacity relative to the data enters only through
    ``samples_per_feature`` (``n / d`` in the linear model; smaller means a larger, more
    over-parametrised model, which favours heavier masking); the label noise is
    ``noise_ratio`` times the signal variance ``beta^T Sigma beta``; masks are i.i.d. per gene
    (the covariance of masked inputs is ``(1-p)^2 Sigma + p(1-p) diag(Sigma)``, which also
    holds for the per-mini-batch column masks of appendix C.8 averaged over batches). The
    suggestion is a starting point for a sweep, not a replacement for one.

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` (cells x genes), a numpy array or a scipy sparse
        matrix. Not modified.
    layer
        AnnData layer to read instead of ``.X``.
    counts
        Whether the matrix holds raw counts (then each cell is scaled to ``target_sum`` and
        ``log1p`` is applied). ``None`` decides from the data: non-negative integers are
        counts, anything else is taken as already normalised.
    target_sum
        Library size after normalisation of counts.
    n_top_genes
        Number of most variable genes kept (after normalisation); sets the linear model's
        dimension ``d``. The cost is ``O(d^3)`` per ratio.
    max_cells
        At most this many cells (drawn at random with ``seed``) estimate the covariance.
    samples_per_feature
        ``n / d`` of the linear model.
    noise_ratio
        Label-noise variance relative to the signal variance.
    quantiles
        Eigenvalue quantiles in ``[0, 1]`` of the signal directions.
    ratios
        Masking ratios to evaluate, in ``(0, 1)``; defaults to 0.05, 0.075, ..., 0.95.
    min_width
        Smallest width of the returned range.
    seed
        Seed for the cell subsample.

    Returns
    -------
    :class:`MaskRangeSuggestion` with ``mask_range``, the curves and a ``plot()`` method.

    Raises
    ------
    ValueError
        For malformed arguments, fewer than 3 usable cells or 2 variable genes, or negative
        or non-finite values.
    TypeError
        If ``data`` is not a matrix or AnnData.
    """
    matrix = _matrix_from(data, layer)
    n_top = check_int("n_top_genes", n_top_genes)
    max_cells = check_int("max_cells", max_cells)
    target_sum = check_positive("target_sum", target_sum)
    spf = check_positive("samples_per_feature", samples_per_feature)
    noise_ratio = check_nonnegative("noise_ratio", noise_ratio)
    min_width = check_nonnegative("min_width", min_width)
    if min_width >= 1.0:
        raise ValueError(f"`min_width` must be below 1, got {min_width}.")
    grid = np.unique(check_ratios(np.arange(0.05, 0.9501, 0.025) if ratios is None else ratios))
    q = np.atleast_1d(np.asarray(quantiles, dtype=float))
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)) or not np.all(np.isfinite(q)):
        raise ValueError(f"`quantiles` must be values in [0, 1], got {quantiles!r}.")
    if counts is not None and not isinstance(counts, bool):
        raise ValueError(f"`counts` must be True, False or None, got {counts!r}.")
    check_int("seed", seed, minimum=None)

    values = _values(matrix)
    if not np.all(np.isfinite(values)):
        raise ValueError("`data` contains non-finite values.")
    rng = np.random.default_rng(seed)
    if matrix.shape[0] > max_cells:
        rows = np.sort(rng.choice(matrix.shape[0], size=max_cells, replace=False))
        matrix = matrix[rows]
        values = _values(matrix)
    if counts is None:
        counts = bool(np.all(values >= 0) and np.all(values == np.round(values)))
    if counts:
        if np.any(values < 0):
            raise ValueError("`data` holds negative values but `counts=True`.")
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        matrix = matrix[totals > 0]  # empty cells carry no covariance information
        if matrix.shape[0] > 0:
            matrix = _log_normalise(matrix, target_sum)
    if matrix.shape[0] < 3:
        raise ValueError(f"`data` needs at least 3 non-empty cells, got {matrix.shape[0]}.")

    mean = np.asarray(matrix.mean(axis=0)).ravel()
    sq = matrix.multiply(matrix) if sp.issparse(matrix) else matrix**2
    second = np.asarray(sq.mean(axis=0)).ravel()
    var = second - mean**2
    # relative to the second moment, so that round-off in E[x^2] - E[x]^2 reads as constant
    variable = np.flatnonzero(var > 1e-9 * second)
    if variable.size < 2:
        raise ValueError("`data` needs at least 2 genes that vary across cells.")
    genes = variable[np.argsort(var[variable])[::-1][:n_top]]
    cov = _covariance(matrix[:, np.sort(genes)])
    d = cov.shape[0]

    spectrum, vecs = np.linalg.eigh(cov)
    idx = np.round(q * (d - 1)).astype(int)
    signals = vecs[:, idx]
    lam = spectrum[idx]
    n_model = max(1, round(spf * d))
    # noise is set per signal relative to its variance; evaluate each column separately
    risk = np.empty((q.size, grid.size))
    for j in range(q.size):
        curve = deterministic_risk(
            grid, cov, signals[:, j], n_samples=n_model, noise_var=noise_ratio * lam[j]
        )
        risk[j] = curve.normalized_risk
    best = grid[np.nanargmin(risk, axis=1)]
    informative = np.nanmin(risk, axis=1) < 1.0
    if not informative.any():
        warnings.warn(
            "the linear theory predicts that no masking ratio beats the null predictor for "
            "these settings (try a smaller `samples_per_feature`); the range spans the "
            "risk minima of all quantiles.",
            UserWarning,
            stacklevel=2,
        )
        informative = np.ones_like(informative)
    lo, hi = float(best[informative].min()), float(best[informative].max())
    if hi - lo < min_width:
        centre = 0.5 * (lo + hi)
        lo, hi = centre - 0.5 * min_width, centre + 0.5 * min_width
        shift = max(0.0, grid[0] - lo) - max(0.0, hi - grid[-1])
        lo, hi = max(lo + shift, grid[0]), min(hi + shift, grid[-1])
    return MaskRangeSuggestion(
        mask_range=(round(lo, 4), round(hi, 4)),
        ratios=grid,
        quantiles=q,
        eigenvalues=lam,
        risk=risk,
        optimal_ratios=best,
        informative=informative,
        spectrum=spectrum[::-1].copy(),
        n_features=d,
        n_samples=n_model,
    )
