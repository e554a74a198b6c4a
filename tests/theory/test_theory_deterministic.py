"""The numerical deterministic equivalent against simulation, for general covariances."""

import numpy as np
import pytest

from scr2mae.theory import (
    beta_spectrum_covariance,
    deterministic_prediction_norm,
    deterministic_risk,
    eigenvector_signal,
    latent_space_covariance,
    masked_covariance,
    masked_target,
    random_signal,
    simulate_risk,
    solve_fixed_point,
)


def test_masked_covariance_matches_empirical():
    rng = np.random.default_rng(0)
    cov = beta_spectrum_covariance(6, seed=1)
    x = rng.multivariate_normal(np.zeros(6), cov, size=200_000)
    z = x * (rng.uniform(size=x.shape) >= 0.3)
    np.testing.assert_allclose(np.cov(z.T), masked_covariance(cov, 0.3), atol=0.06)
    # the best masked predictor is the population regression of y on z
    beta = random_signal(6, seed=2)
    b_star = masked_target(cov, beta, 0.3)
    fitted = np.linalg.lstsq(z, x @ beta, rcond=None)[0]
    np.testing.assert_allclose(fitted, b_star, atol=0.02)


def test_masked_target_is_beta_for_identity():
    beta = random_signal(10, seed=0)
    np.testing.assert_allclose(masked_target(np.eye(10), beta, 0.4), beta)


@pytest.mark.parametrize("model", ["beta", "latent"])
def test_general_risk_matches_simulation(model):
    d, n = 200, 200
    make = {"beta": beta_spectrum_covariance, "latent": latent_space_covariance}[model]
    cov = make(d, seed=0)
    signals = np.stack([eigenvector_signal(cov, 0.5), random_signal(d, seed=1)], axis=1)
    ratios = [0.15, 0.3]  # p n = 30 and 60 rows, far from the threshold p n = d
    theory = deterministic_risk(ratios, cov, signals, n_samples=n, noise_var=0.5)
    assert theory.risk.shape == (2, 2)
    for j in range(2):
        sim = simulate_risk(
            cov,
            signals[:, j],
            n_samples=n,
            masking=ratios,
            noise_var=0.5,
            n_repeats=40,
            seed=j,
        )
        np.testing.assert_allclose(sim.mean, theory.risk[:, j], rtol=0.05)


def test_strong_signal_risk_matches_simulation():
    # a top-eigenvector signal: the risk varies a lot between repeats, so more of them
    d, n = 200, 400
    cov = beta_spectrum_covariance(d, seed=0)
    beta = eigenvector_signal(cov, 0.99)
    theory = deterministic_risk([0.2], cov, beta, n_samples=n, noise_var=0.5)
    sim = simulate_risk(cov, beta, n_samples=n, masking=0.2, noise_var=0.5, n_repeats=100)
    np.testing.assert_allclose(sim.mean, theory.risk, rtol=0.05)
    assert theory.normalized_risk[0] < 0.8  # masking beats the null predictor here


def test_underparametrised_general_risk_matches_simulation():
    d, n = 200, 1500
    cov = latent_space_covariance(d, seed=3)
    beta = eigenvector_signal(cov, 0.9)
    ratios = [0.3, 0.5]  # p n = 450 and 750 rows > d
    theory = deterministic_risk(ratios, cov, beta, n_samples=n, noise_var=0.5)
    assert np.all(theory.kappa == 0.0)
    sim = simulate_risk(cov, beta, n_samples=n, masking=ratios, noise_var=0.5, n_repeats=20)
    np.testing.assert_allclose(sim.mean, theory.risk, rtol=0.05)


def test_stronger_signals_prefer_heavier_masking():
    # Fig. 1E: the optimal ratio grows with the eigenvalue of the signal direction
    cov = beta_spectrum_covariance(100, seed=0)
    qs = [0.5, 0.9, 0.99]
    signals = np.stack([eigenvector_signal(cov, q) for q in qs], axis=1)
    curve = deterministic_risk(
        np.arange(0.02, 0.7, 0.02), cov, signals, n_samples=50, noise_var=0.5
    )
    assert np.all(np.diff(curve.optimal_ratio) > 0)
    assert np.all(np.diff(curve.normalized_risk.min(axis=0)) < 0)


def test_prediction_norm_matches_simulation():
    d, n = 200, 400
    cov = latent_space_covariance(d, seed=0)
    beta = eigenvector_signal(cov, 0.99)
    ratios = [0.2, 0.3]  # 80 and 120 rows
    theory = deterministic_prediction_norm(ratios, cov, beta, n_samples=n, noise_var=0.1)
    sim = simulate_risk(cov, beta, n_samples=n, masking=ratios, noise_var=0.1, n_repeats=30)
    np.testing.assert_allclose(sim.prediction_norm2.mean(axis=1), theory, rtol=0.05)


def test_solve_fixed_point():
    s = np.array([1.0, 2.0, 3.0, 0.0])
    k = solve_fixed_point(s, 1.5)
    assert np.sum(s / (s + k)) == pytest.approx(1.5)
    assert solve_fixed_point(s, 3.0) == 0.0  # as many rows as non-zero eigenvalues
    with pytest.raises(ValueError, match="eigenvalues"):
        solve_fixed_point([-1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="n_effective"):
        solve_fixed_point([1.0], 0.0)


def test_deterministic_validation():
    cov = np.eye(4)
    with pytest.raises(ValueError, match="cov"):
        deterministic_risk(0.5, np.ones((3, 4)), np.ones(3), n_samples=5)
    with pytest.raises(ValueError, match="symmetric"):
        deterministic_risk(0.5, np.triu(np.ones((4, 4))), np.ones(4), n_samples=5)
    with pytest.raises(ValueError, match="beta"):
        deterministic_risk(0.5, cov, np.ones(3), n_samples=5)
    with pytest.raises(ValueError, match="n_samples"):
        deterministic_risk(0.5, cov, np.ones(4), n_samples=0)
    with pytest.raises(ValueError, match="ratio"):
        masked_covariance(cov, 1.0)
