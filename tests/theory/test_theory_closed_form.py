"""Closed forms (Theorem 1, Corollary 1) against each other and against simulation."""

import numpy as np
import pytest

from scr2mae.theory import (
    deterministic_risk,
    isotropic_covariance,
    isotropic_risk,
    random_signal,
    simulate_risk,
    solve_fixed_point,
    spiked_covariance,
    spiked_fixed_point,
    spiked_risk,
    spiked_signal,
)


def test_isotropic_check_numbers_closed_form_and_simulation():
    # the check: d=300, n=400, sigma^2=0.5, ||beta||^2=1 -> about 0.97, 1.06, 1.36
    ratios = [0.1, 0.2, 0.3]
    curve = isotropic_risk(ratios, n_features=300, n_samples=400, noise_var=0.5)
    np.testing.assert_allclose(curve.risk, [0.97, 1.06, 1.36], rtol=0.01)
    sim = simulate_risk(
        isotropic_covariance(300),
        random_signal(300, seed=0),
        n_samples=400,
        masking=ratios,
        noise_var=0.5,
        n_repeats=40,
        seed=1,
    )
    np.testing.assert_allclose(sim.mean, [0.97, 1.06, 1.36], rtol=0.05)
    np.testing.assert_allclose(sim.mean, curve.risk, rtol=0.05)


def test_isotropic_bias_and_variance_terms():
    # over-parametrised: gamma = 300 / (0.2 * 400) = 3.75
    curve = isotropic_risk(0.2, n_features=300, n_samples=400, noise_var=0.5, signal_norm2=2.0)
    gamma = 3.75
    assert curve.bias[0] == pytest.approx(2.0 * (1 - 1 / gamma))
    assert curve.variance[0] == pytest.approx((0.5 + 0.2 * 2.0) / (0.8 * (gamma - 1)))
    # under-parametrised: no bias, gamma = 50 / (0.5 * 1000) = 0.1
    under = isotropic_risk(0.5, n_features=50, n_samples=1000, noise_var=0.5)
    assert under.bias[0] == 0.0
    assert under.variance[0] == pytest.approx((0.5 + 0.5) * 0.1 / (0.5 * 0.9))
    assert under.kappa[0] == 0.0
    # the interpolation threshold p n = d diverges
    assert np.isinf(isotropic_risk(0.5, n_features=100, n_samples=200).risk[0])


def test_isotropic_regimes_shape():
    ratios = np.linspace(0.05, 0.95, 19)
    under = isotropic_risk(ratios, n_features=20, n_samples=1000, noise_var=0.5)
    # under-parametrised for every ratio: masking never beats the null risk by much and the
    # curve ends increasing
    assert np.all(np.diff(under.risk[-8:]) > 0)
    over = isotropic_risk(ratios, n_features=300, n_samples=200, noise_var=0.5)
    assert np.all(over.bias > 0) and np.all(over.risk > 0.6)


@pytest.mark.parametrize(("d", "n", "ratios"), [(200, 150, [0.2, 0.4]), (40, 600, [0.3, 0.5])])
def test_isotropic_matches_simulation_both_regimes(d, n, ratios):
    curve = isotropic_risk(ratios, n_features=d, n_samples=n, noise_var=0.5)
    sim = simulate_risk(
        np.eye(d),
        random_signal(d, seed=3),
        n_samples=n,
        masking=ratios,
        noise_var=0.5,
        n_repeats=60,
        seed=4,
    )
    np.testing.assert_allclose(sim.mean, curve.risk, rtol=0.05)


def test_general_deterministic_equivalent_reduces_to_isotropic():
    ratios = [0.1, 0.3, 0.6, 0.9]
    closed = isotropic_risk(ratios, n_features=120, n_samples=200, noise_var=0.3)
    beta = random_signal(120, seed=0)
    general = deterministic_risk(ratios, np.eye(120), beta, n_samples=200, noise_var=0.3)
    np.testing.assert_allclose(general.bias, closed.bias, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(general.variance, closed.variance, rtol=1e-9)


def test_spiked_reduces_to_isotropic_without_spike():
    ratios = [0.1, 0.5, 0.9]
    spiked = spiked_risk(
        ratios, n_features=200, n_samples=300, spike=0.0, strength=0.4, noise_var=0.5
    )
    iso = isotropic_risk(ratios, n_features=200, n_samples=300, noise_var=0.5)
    np.testing.assert_allclose(spiked.risk, iso.risk, rtol=1e-12)


def test_spiked_closed_form_equals_general_for_flat_direction():
    # with u = ones / sqrt(d), diag(u u^T) = I / d exactly, so Corollary 1 is exact
    d, n, theta, alpha = 150, 200, 20.0, 0.6
    cov, u = spiked_covariance(d, theta, direction="ones")
    beta = spiked_signal(u, alpha, seed=0)
    ratios = [0.1, 0.3, 0.5, 0.8, 0.9]
    closed = spiked_risk(
        ratios, n_features=d, n_samples=n, spike=theta, strength=alpha, noise_var=0.2
    )
    general = deterministic_risk(ratios, cov, beta, n_samples=n, noise_var=0.2)
    np.testing.assert_allclose(closed.risk, general.risk, rtol=1e-9)
    np.testing.assert_allclose(closed.kappa, general.kappa, rtol=1e-9, atol=1e-12)


def test_spiked_matches_simulation():
    d, n, theta, alpha = 200, 400, 10.0, 0.5
    cov, u = spiked_covariance(d, theta, direction="random", seed=0)
    beta = spiked_signal(u, alpha, seed=1)
    ratios = [0.2, 0.25]  # 80 and 100 rows, well below the threshold p n = d
    closed = spiked_risk(
        ratios, n_features=d, n_samples=n, spike=theta, strength=alpha, noise_var=0.1
    )
    sim = simulate_risk(cov, beta, n_samples=n, masking=ratios, noise_var=0.1, n_repeats=80, seed=2)
    np.testing.assert_allclose(sim.mean, closed.risk, rtol=0.05)
    # masking beats the null predictor for a spike-aligned feature
    assert closed.normalized_risk.max() < 0.5


@pytest.mark.parametrize("theta", [0.0, 1.0, 25.0, 400.0])
@pytest.mark.parametrize("n", [50, 150, 299, 300, 1000])
def test_spiked_fixed_point_unique_nonnegative_root(theta, n):
    d = 300
    ratios = np.linspace(0.05, 0.95, 19)
    kappa = spiked_fixed_point(ratios, n_features=d, n_samples=n, spike=theta)
    assert np.all(kappa >= 0.0)
    for p, k in zip(ratios, kappa, strict=True):
        m = p * n
        a = (1 - p) * (1 + p * theta / d)
        s = np.r_[np.full(d - 1, a), a + (1 - p) ** 2 * theta]
        # agrees with the generic solver on the full spectrum
        assert k == pytest.approx(solve_fixed_point(s, m), rel=1e-8, abs=1e-12)
        if m < d:
            assert k > 0
            assert np.sum(s / (s + k)) == pytest.approx(m, rel=1e-9)
            # exactly one sign change of the fixed-point residual on [0, infinity)
            grid = np.concatenate([[0.0], np.geomspace(1e-6, 1e6, 400) * a])
            residual = np.array([np.sum(s / (s + g)) - m for g in grid])
            assert np.count_nonzero(np.diff(np.sign(residual)) != 0) == 1
        else:
            assert k == 0.0


def test_closed_form_validation():
    with pytest.raises(ValueError, match="ratios"):
        isotropic_risk(0.0, n_features=10, n_samples=10)
    with pytest.raises(ValueError, match="ratios"):
        isotropic_risk([0.5, 1.0], n_features=10, n_samples=10)
    with pytest.raises(ValueError, match="n_features"):
        isotropic_risk(0.5, n_features=0, n_samples=10)
    with pytest.raises(ValueError, match="n_samples"):
        isotropic_risk(0.5, n_features=10, n_samples=2.5)
    with pytest.raises(ValueError, match="noise_var"):
        isotropic_risk(0.5, n_features=10, n_samples=10, noise_var=-1)
    with pytest.raises(ValueError, match="strength"):
        spiked_risk(0.5, n_features=10, n_samples=10, spike=1.0, strength=1.5)
    with pytest.raises(ValueError, match="spike"):
        spiked_fixed_point(0.5, n_features=10, n_samples=10, spike=-1.0)
