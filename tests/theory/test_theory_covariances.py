"""Covariance models and signals of appendix C.1."""

import numpy as np
import pytest

from scr2mae.theory import (
    beta_spectrum_covariance,
    eigenvector_signal,
    isotropic_covariance,
    latent_space_covariance,
    random_signal,
    spectrum_covariance,
    spiked_covariance,
    spiked_signal,
    two_plateau_model,
    uniform_spectrum_covariance,
)


def test_spectra_are_rescaled_to_the_range():
    for make in (uniform_spectrum_covariance, beta_spectrum_covariance):
        lam = np.linalg.eigvalsh(make(80, seed=0))
        assert lam.min() == pytest.approx(1.0) and lam.max() == pytest.approx(10.0)
    # Beta(2, 5) piles eigenvalues at the low end, uniform does not
    beta_median = np.median(np.linalg.eigvalsh(beta_spectrum_covariance(400, seed=1)))
    uniform_median = np.median(np.linalg.eigvalsh(uniform_spectrum_covariance(400, seed=1)))
    assert beta_median < 5.0 < uniform_median


def test_latent_space_spectrum_runs_from_one_to_about_top():
    lam = np.linalg.eigvalsh(latent_space_covariance(300, seed=0))
    assert lam.min() == pytest.approx(1.0, abs=1e-8)  # d - k directions are untouched
    assert 7.0 < lam.max() < 12.0


def test_spiked_and_signal():
    cov, u = spiked_covariance(50, 4.0, direction="ones")
    np.testing.assert_allclose(u, np.full(50, 50**-0.5))
    assert np.linalg.eigvalsh(cov).max() == pytest.approx(5.0)
    beta = spiked_signal(u, 0.6, seed=0, norm=2.0)
    assert np.linalg.norm(beta) == pytest.approx(2.0)
    assert beta @ u == pytest.approx(1.2)
    _, u_rand = spiked_covariance(50, 4.0, seed=3)
    assert np.all(u_rand >= 0) and np.linalg.norm(u_rand) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="direction"):
        spiked_covariance(5, 1.0, direction="diagonal")


def test_eigenvector_signal_and_two_plateau_model():
    cov = spectrum_covariance(np.arange(1.0, 11.0), seed=0)
    top = eigenvector_signal(cov, 1.0)
    assert top @ cov @ top == pytest.approx(10.0)
    assert eigenvector_signal(cov, 0.0) @ cov @ eigenvector_signal(cov, 0.0) == pytest.approx(1.0)
    cov2, beta = two_plateau_model(40, rank=5, spike=9.0, seed=0)
    lam = np.linalg.eigvalsh(cov2)
    assert np.sum(np.isclose(lam, 10.0)) == 5 and np.sum(np.isclose(lam, 1.0)) == 35
    assert beta @ cov2 @ beta == pytest.approx(10.0)  # beta lies in the strong subspace
    np.testing.assert_array_equal(isotropic_covariance(3), np.eye(3))
    assert np.linalg.norm(random_signal(7, norm=3.0, seed=0)) == pytest.approx(3.0)


def test_covariance_validation():
    with pytest.raises(ValueError, match="high"):
        uniform_spectrum_covariance(5, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="rank"):
        two_plateau_model(5, rank=6)
    with pytest.raises(ValueError, match="quantile"):
        eigenvector_signal(np.eye(3), 1.5)
    with pytest.raises(ValueError, match="eigenvalues"):
        spectrum_covariance([1.0, -1.0])
    with pytest.raises(ValueError, match="top"):
        latent_space_covariance(5, top=1.0)
