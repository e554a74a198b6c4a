"""Monte-Carlo simulator of masked min-norm regression (appendix C.1).

Protocol (the fair comparison of Tables 5 and 9): every row ``i`` of a repeat draws its own
masking ratio ``p_i`` from a :mod:`scr2mae.masking` schedule (a constant for fixed ratios,
``U(p_min, p_max)`` for R2MAE); the row becomes a training row when its target is masked
(probability ``p_i``) and each of its covariates is zeroed with probability ``p_i``. The
estimate is the minimum-norm least-squares fit on the training rows and the risk is
``(beta_hat - beta)^T Sigma (beta_hat - beta)``, the exact expectation over a fresh unmasked
sample (no test-set noise).

Random numbers come from three independent streams per repeat, seeded from ``(seed,
repeat)``: the data (``X``, ``eps``), the ratios and the masks; the ratio and mask streams
restart for every setting. All settings of a call therefore see the same data and the same
uniforms (common random numbers) and a repeat does not depend on how many others are run.
Comparisons between settings are thus paired, and an R2MAE range with ``p_min = p_max``
reproduces the fixed-ratio run exactly, as appendix C.1 states.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..masking import FixedRatio, RatioSchedule, get_masking
from ._validation import check_covariance, check_int, check_nonnegative, check_signal

__all__ = ["SimulationResult", "simulate_risk"]

_MEMORY_BUDGET = 96 * 2**20  # bytes for one chunk's (repeats, n, d) float64 array


@dataclass(frozen=True)
class SimulationResult:
    """Monte-Carlo test risks of masked min-norm regression.

    Attributes
    ----------
    labels
        One label per masking setting.
    schedules
        The :class:`~scr2mae.masking.RatioSchedule` of each setting.
    risk
        Test risk per setting and repeat, shape ``(n_settings, n_repeats)``.
    prediction_norm2
        ``E[(x^T beta_hat)^2] = beta_hat^T Sigma beta_hat`` per setting and repeat.
    n_rows
        Number of training rows per setting and repeat.
    null_risk
        ``beta^T Sigma beta``, the risk of predicting zero.
    """

    labels: tuple[str, ...]
    schedules: tuple[RatioSchedule, ...]
    risk: np.ndarray
    prediction_norm2: np.ndarray
    n_rows: np.ndarray
    null_risk: float

    @property
    def mean(self) -> np.ndarray:
        """Mean risk per setting."""
        return self.risk.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of the risk across repeats, per setting."""
        return self.risk.std(axis=1, ddof=1) if self.risk.shape[1] > 1 else 0 * self.mean

    @property
    def normalized_mean(self) -> np.ndarray:
        """Mean risk divided by the null risk (the tables' "normalized test risk")."""
        return self.mean / self.null_risk


def _as_schedule(setting) -> RatioSchedule:
    if isinstance(setting, (RatioSchedule, str)):
        schedule = get_masking(setting)
        if schedule.needs_total_steps:
            raise ValueError(
                f"`masking` schedule {schedule!r} depends on the training step; the linear "
                "model has no steps, use a fixed ratio or a step-free schedule such as R2MAE."
            )
        return schedule
    if isinstance(setting, bool) or not isinstance(setting, (int, float, np.floating)):
        raise ValueError(
            "`masking` entries must be ratios in (0, 1), schedule names or RatioSchedule "
            f"objects, got {setting!r}."
        )
    if not 0.0 < float(setting) < 1.0:
        raise ValueError(f"`masking` ratios must lie strictly between 0 and 1, got {setting}.")
    return FixedRatio(float(setting))


def _label(schedule: RatioSchedule) -> str:
    if isinstance(schedule, FixedRatio):
        return f"fixed {schedule.mask_ratio:g}"
    lo, hi = schedule.bounds()
    return f"{schedule.name} [{lo:g}, {hi:g}]"


def _seeds(seed: int, repeat: int) -> tuple[int, int, int]:
    """Seeds of the data, ratio and mask streams of one repeat."""
    state = np.random.SeedSequence([seed, repeat]).generate_state(3, dtype=np.uint64)
    return tuple(int(s) & 0x7FFF_FFFF_FFFF_FFFF for s in state)


def _min_norm(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Batched minimum-norm least squares; rows with ``keep = False`` are zero in ``z``, ``y``.

    Repeats with at most ``d`` training rows use the dual form ``Z^T (Z Z^T)^-1 y`` (the
    excluded rows get a unit diagonal, which leaves the solution unchanged); the others use
    the normal equations. A repeat whose system is singular falls back to an SVD solver.
    """
    reps, _, d = z.shape
    out = torch.empty(reps, d, dtype=z.dtype)
    failed = torch.zeros(reps, dtype=torch.bool)
    dual = keep.sum(dim=1) <= d
    for select, use_dual in ((dual, True), (~dual, False)):
        if not select.any():
            continue
        zs, ys = z[select], y[select].unsqueeze(-1)
        zt = zs.transpose(1, 2)
        if use_dual:
            gram = zs @ zt
            gram.diagonal(dim1=1, dim2=2).add_((~keep[select]).to(z.dtype))
            sol, info = torch.linalg.solve_ex(gram, ys)
            out[select] = (zt @ sol).squeeze(-1)
        else:
            sol, info = torch.linalg.solve_ex(zt @ zs, zt @ ys)
            out[select] = sol.squeeze(-1)
        failed[select] = info != 0
    for r in torch.nonzero(failed).flatten().tolist():
        out[r] = torch.linalg.pinv(z[r]) @ y[r]
    return out


def simulate_risk(
    cov,
    beta,
    *,
    n_samples: int,
    masking,
    noise_var: float = 1.0,
    n_repeats: int = 50,
    seed: int = 0,
) -> SimulationResult:
    """Monte-Carlo test risk of masked min-norm regression for fixed ratios or R2MAE.

    Parameters
    ----------
    cov
        Covariance ``Sigma`` of the Gaussian covariates, shape ``(d, d)``.
    beta
        True coefficients, shape ``(d,)``; ``y = x^T beta + eps``.
    n_samples
        Number of samples ``n`` per repeat before masking.
    masking
        One setting or a sequence of settings. A setting is a fixed ratio in ``(0, 1)``, a
        schedule name for :func:`~scr2mae.masking.get_masking`, or a
        :class:`~scr2mae.masking.RatioSchedule` (e.g. ``get_masking("r2mae",
        mask_range=(0.3, 0.6))``). Ratios are drawn once per row.
    noise_var
        Label-noise variance ``sigma^2``.
    n_repeats
        Number of independent data sets (the paper averages 50).
    seed
        Seed of the random streams (data, ratios, masks); the same seed gives the same data
        and uniforms to every setting.

    Returns
    -------
    :class:`SimulationResult`.

    Examples
    --------
    >>> import numpy as np
    >>> from scr2mae.masking import get_masking
    >>> from scr2mae.theory import simulate_risk
    >>> cov, beta = np.eye(50), np.full(50, 50**-0.5)
    >>> res = simulate_risk(cov, beta, n_samples=80, n_repeats=4, seed=0,
    ...                     masking=[0.3, get_masking("r2mae", mask_range=(0.2, 0.4))])
    >>> res.risk.shape
    (2, 4)
    """
    cov = check_covariance(cov)
    d = cov.shape[0]
    beta = check_signal(beta, d)
    n = check_int("n_samples", n_samples)
    sigma2 = check_nonnegative("noise_var", noise_var)
    reps = check_int("n_repeats", n_repeats)
    seed = check_int("seed", seed, minimum=0)
    if isinstance(masking, (RatioSchedule, str, numbers.Number)):
        masking = [masking]
    elif not isinstance(masking, (Sequence, np.ndarray)):
        raise ValueError(f"`masking` must be a setting or a sequence of settings, got {masking!r}.")
    if len(masking) == 0:
        raise ValueError("`masking` must contain at least one setting.")
    schedules = tuple(_as_schedule(s) for s in masking)

    dtype = torch.float64
    lam, vecs = np.linalg.eigh(cov)
    # root @ root.T = cov
    root = torch.as_tensor(vecs * np.sqrt(np.clip(lam, 0.0, None)), dtype=dtype)
    cov_t = torch.as_tensor(cov, dtype=dtype)
    beta_t = torch.as_tensor(beta, dtype=dtype)
    risk = np.empty((len(schedules), reps))
    pred = np.empty((len(schedules), reps))
    rows = np.empty((len(schedules), reps), dtype=np.int64)
    chunk = max(1, min(reps, _MEMORY_BUDGET // (8 * n * max(d, n))))
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        # one seed triple per repeat: repeat i is the same whatever n_repeats or the chunking
        seeds = [_seeds(seed, i) for i in range(start, start + r)]
        x = torch.empty(r, n, d, dtype=dtype)
        eps = torch.empty(r, n, dtype=dtype)
        # the mask stream of a repeat restarts for every setting (common random numbers), so
        # its uniforms are drawn once: n x d for the covariates, then n for the targets, in the
        # order of two ``bernoulli_mask`` calls (the masks are ``uniform < ratio``)
        u_hidden = torch.empty(r, n, d)
        u_keep = torch.empty(r, n, 1)
        for j, (seed_data, _, seed_mask) in enumerate(seeds):
            g_data = torch.Generator().manual_seed(seed_data)
            torch.randn(n, d, generator=g_data, dtype=dtype, out=x[j])
            torch.randn(n, generator=g_data, dtype=dtype, out=eps[j])
            g_mask = torch.Generator().manual_seed(seed_mask)
            torch.rand(n, d, generator=g_mask, out=u_hidden[j])
            torch.rand(n, 1, generator=g_mask, out=u_keep[j])
        x = x @ root.T
        y = x @ beta_t + np.sqrt(sigma2) * eps
        for k, schedule in enumerate(schedules):
            ratio = torch.stack(
                [
                    # fresh ratio stream per setting: every setting sees the same uniforms
                    schedule.sample(0, n, generator=torch.Generator().manual_seed(seed_ratio))
                    for _, seed_ratio, _ in seeds
                ]
            ).unsqueeze(-1)
            # appendix C.1: a row trains the target's regression when its target is masked
            keep = (u_keep < ratio)[:, :, 0]
            # move each repeat's training rows to the front and drop the all-excluded tail
            order = torch.argsort(keep.to(torch.int8), dim=1, descending=True, stable=True)
            order = order[:, : max(int(keep.sum(dim=1).max()), 1)]
            rows_idx = order.unsqueeze(-1).expand(-1, -1, d)
            keep_c = torch.gather(keep, 1, order)
            hidden_c = (
                torch.gather(u_hidden, 1, rows_idx) < torch.gather(ratio, 1, order.unsqueeze(-1))
            ) | ~keep_c.unsqueeze(-1)
            z = torch.gather(x, 1, rows_idx).masked_fill(hidden_c, 0.0)
            estimate = _min_norm(z, torch.gather(y, 1, order) * keep_c, keep_c)
            for out, v in ((risk, estimate - beta_t), (pred, estimate)):
                out[k, start : start + r] = torch.einsum("ri,ij,rj->r", v, cov_t, v).numpy()
            rows[k, start : start + r] = keep.sum(dim=1).numpy()
    return SimulationResult(
        labels=tuple(_label(s) for s in schedules),
        schedules=schedules,
        risk=risk,
        prediction_norm2=pred,
        n_rows=rows,
        null_risk=float(beta @ cov @ beta),
    )
