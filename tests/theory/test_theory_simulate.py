"""The Monte-Carlo simulator: protocol, seeding, R2MAE row-wise ratios."""

import numpy as np
import pytest

from scr2mae.masking import FixedRatio, get_masking
from scr2mae.theory import beta_spectrum_covariance, eigenvector_signal, simulate_risk


@pytest.fixture(scope="module")
def model():
    cov = beta_spectrum_covariance(40, seed=0)
    return cov, eigenvector_signal(cov, 0.9)


def test_r2mae_with_equal_bounds_equals_fixed_ratio(model):
    # appendix C.1: R2MAE with p_min = p_max reproduces the fixed ratio under the same seed
    cov, beta = model
    res = simulate_risk(
        cov,
        beta,
        n_samples=60,
        n_repeats=6,
        seed=5,
        masking=[0.35, FixedRatio(0.35), get_masking("r2mae", mask_range=(0.35, 0.35))],
    )
    np.testing.assert_array_equal(res.risk[0], res.risk[2])
    np.testing.assert_array_equal(res.risk[1], res.risk[2])
    np.testing.assert_array_equal(res.n_rows[0], res.n_rows[2])
    alone = simulate_risk(
        cov,
        beta,
        n_samples=60,
        n_repeats=6,
        seed=5,
        masking=get_masking("r2mae", mask_range=(0.35, 0.35)),
    )
    np.testing.assert_array_equal(alone.risk[0], res.risk[0])


def test_seeding_and_common_random_numbers(model):
    cov, beta = model
    a = simulate_risk(cov, beta, n_samples=50, masking=[0.2, 0.5], n_repeats=5, seed=1)
    b = simulate_risk(cov, beta, n_samples=50, masking=[0.5], n_repeats=5, seed=1)
    c = simulate_risk(cov, beta, n_samples=50, masking=[0.5], n_repeats=5, seed=2)
    np.testing.assert_array_equal(a.risk[1], b.risk[0])  # settings do not disturb each other
    assert not np.array_equal(b.risk, c.risk)
    # repeats are processed in chunks: the first repeats do not depend on how many follow
    d = simulate_risk(cov, beta, n_samples=50, masking=[0.5], n_repeats=2, seed=1)
    np.testing.assert_array_equal(d.risk[0], b.risk[0, :2])


def test_row_inclusion_follows_the_ratios(model):
    cov, beta = model
    n, reps = 400, 20
    res = simulate_risk(
        cov,
        beta,
        n_samples=n,
        n_repeats=reps,
        seed=0,
        masking=[0.3, get_masking("r2mae", mask_range=(0.2, 0.6))],
    )
    # a row trains with probability equal to its ratio: E[rows] = E[p] n
    assert res.n_rows[0].mean() == pytest.approx(0.3 * n, rel=0.05)
    assert res.n_rows[1].mean() == pytest.approx(0.4 * n, rel=0.05)
    assert res.labels == ("fixed 0.3", "r2mae [0.2, 0.6]")


def test_min_norm_solution_is_exact():
    # with no masking noise and few rows the fit interpolates; with many rows and no label
    # noise the estimate is b* (here beta, isotropic), so the risk only reflects masking
    d = 30
    beta = np.ones(d) / np.sqrt(d)
    res = simulate_risk(
        np.eye(d), beta, n_samples=4000, masking=0.05, noise_var=0.0, n_repeats=3, seed=0
    )
    # isotropic, under-parametrised: risk = (p ||beta||^2) gamma / ((1 - p)(1 - gamma))
    gamma = d / (0.05 * 4000)
    expected = 0.05 * gamma / (0.95 * (1 - gamma))
    assert res.mean[0] == pytest.approx(expected, rel=0.25)
    assert res.null_risk == pytest.approx(1.0)
    np.testing.assert_allclose(res.normalized_mean, res.mean / 1.0)


def test_simulate_validation(model):
    cov, beta = model
    with pytest.raises(ValueError, match="masking"):
        simulate_risk(cov, beta, n_samples=10, masking=1.0)
    with pytest.raises(ValueError, match="masking"):
        simulate_risk(cov, beta, n_samples=10, masking=[])
    with pytest.raises(ValueError, match="masking"):
        simulate_risk(cov, beta, n_samples=10, masking="dynamic")  # needs training steps
    with pytest.raises(ValueError, match="unknown masking"):
        simulate_risk(cov, beta, n_samples=10, masking="nope")
    with pytest.raises(ValueError, match="n_repeats"):
        simulate_risk(cov, beta, n_samples=10, masking=0.3, n_repeats=0)
    with pytest.raises(ValueError, match="seed"):
        simulate_risk(cov, beta, n_samples=10, masking=0.3, seed=-1)
    with pytest.raises(ValueError, match="beta"):
        simulate_risk(cov, beta[:-1], n_samples=10, masking=0.3)


def test_batched_min_norm_solver_matches_pseudo_inverse():
    import torch

    from scr2mae.theory._simulate import _min_norm

    gen = torch.Generator().manual_seed(0)
    reps, n, d = 4, 12, 6
    z = torch.randn(reps, n, d, generator=gen, dtype=torch.float64)
    keep = torch.ones(reps, n, dtype=torch.bool)
    keep[0, 4:] = False  # 4 rows <= d: dual form
    keep[1, 3:] = False
    z[2, :, 1] = 0.0  # a covariate masked in every row: singular normal equations
    z = z * keep.unsqueeze(-1)
    y = torch.randn(reps, n, generator=gen, dtype=torch.float64) * keep
    out = _min_norm(z, y, keep)
    for r in range(reps):
        expected = torch.linalg.pinv(z[r]) @ y[r]
        torch.testing.assert_close(out[r], expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("setting", [0.45, get_masking("r2mae", mask_range=(0.4, 0.5))])
def test_simulator_matches_a_direct_implementation_of_the_protocol(model, setting):
    # one repeat written out with the masking core's own bernoulli_mask and a pseudo-inverse:
    # the vectorised simulator must draw the same masks and find the same estimate
    import torch

    from scr2mae.masking import bernoulli_mask
    from scr2mae.theory._simulate import _seeds

    cov, beta = model
    d, n, sigma2, seed = cov.shape[0], 70, 0.3, 11
    res = simulate_risk(
        cov, beta, n_samples=n, masking=[0.2, setting], noise_var=sigma2, n_repeats=3, seed=seed
    )
    schedule = res.schedules[1]
    lam, vecs = np.linalg.eigh(cov)
    root = torch.as_tensor(vecs * np.sqrt(lam))
    for repeat in range(3):
        seed_data, seed_ratio, seed_mask = _seeds(seed, repeat)
        g_data = torch.Generator().manual_seed(seed_data)
        x = torch.randn(n, d, generator=g_data, dtype=torch.float64) @ root.T
        y = x @ torch.as_tensor(beta) + np.sqrt(sigma2) * torch.randn(
            n, generator=g_data, dtype=torch.float64
        )
        ratio = schedule.sample(0, n, generator=torch.Generator().manual_seed(seed_ratio))
        g_mask = torch.Generator().manual_seed(seed_mask)
        hidden = bernoulli_mask(n, d, ratio, generator=g_mask)
        keep = bernoulli_mask(n, 1, ratio, generator=g_mask)[:, 0]
        estimate = torch.linalg.pinv(x.masked_fill(hidden, 0.0)[keep]) @ y[keep]
        err = (estimate - torch.as_tensor(beta)).numpy()
        assert res.n_rows[1, repeat] == int(keep.sum())
        assert res.risk[1, repeat] == pytest.approx(err @ cov @ err, rel=1e-8)
