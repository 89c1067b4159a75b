"""Hamiltonian Monte Carlo and its diagnostics (avb_minimal.mcmc): a correlated Gaussian
recovered, divergences counted, a two-mode target mixed, R-hat and ESS on chains whose
answers are known, and clear errors for bad input."""
import numpy as np
import pytest

from avb_minimal import mcmc
from avb_minimal import targets as TG

MEAN3 = np.array([1.0, -2.0, 0.5])
A3 = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.4, 0.5]])
COV3 = A3 @ A3.T                                          # correlated, condition number ~ 20


def test_hmc_recovers_a_correlated_gaussian():
    t = TG.gaussian(MEAN3, COV3)
    init = 2 * np.random.default_rng(0).standard_normal((32, 3))
    r = mcmc.hmc(t, init, n_samples=500, n_warmup=300, n_leapfrog=8, seed=0)
    s = r["samples"].reshape(-1, 3)
    assert r["samples"].shape == (32, 500, 3)
    np.testing.assert_allclose(s.mean(0), MEAN3, atol=0.03)
    np.testing.assert_allclose(np.cov(s.T), COV3, atol=0.03)
    assert max(r["rhat"]) < 1.01 and max(r["rhat_rank"]) < 1.01
    assert min(r["ess"]) > 2000
    assert r["divergences"] == 0 and 0.7 < r["accept_rate"] <= 1.0
    assert len(r["step_size"]) == 32 and len(r["divergences_per_chain"]) == 32


def test_hmc_counts_divergences_instead_of_hiding_them():
    # a step far too large for a narrow Gaussian, no adaptation: every transition blows up
    t = TG.gaussian([0.0, 0.0], [[1e-4, 0.0], [0.0, 1.0]])
    r = mcmc.hmc(t, np.zeros((4, 2)), n_samples=20, n_warmup=0, n_leapfrog=10, step_size=5.0,
               adapt_mass=False, seed=0)
    assert r["divergences"] == 80 and r["accept_rate"] < 1e-6


def test_hmc_symmetry_move_is_valid_and_mixes_a_two_mode_target():
    t = TG.gaussian_mixture(means=((-3.0, 0.0), (3.0, 0.0)), std=0.4)
    init = np.tile([[-3.0, 0.0]], (16, 1))                  # every chain starts in one mode
    r = mcmc.hmc(t, init, n_samples=300, n_warmup=200, n_leapfrog=8, seed=1,
               involution=lambda z: -z)
    assert r["involution_accept_rate"] > 0.99
    assert abs(np.mean(r["samples"][..., 0] > 0) - 0.5) < 0.05


def test_split_rhat_and_ess_on_known_chains(rng):
    iid = rng.standard_normal((8, 1000, 2))
    assert np.all(np.abs(mcmc.split_rhat(iid) - 1) < 0.01)
    np.testing.assert_allclose(mcmc.ess(iid), 8000, rtol=0.15)
    stuck = iid + np.arange(8)[:, None, None]                 # chains that disagree
    assert np.all(mcmc.split_rhat(stuck) > 1.5) and np.all(mcmc.split_rhat(stuck, rank=True) > 1.5)
    rho, x = 0.9, np.zeros((8, 4000))                          # AR(1): ESS = N (1 - rho) / (1 + rho)
    e = rng.standard_normal((8, 4000))
    for i in range(1, 4000):
        x[:, i] = rho * x[:, i - 1] + np.sqrt(1 - rho ** 2) * e[:, i]
    np.testing.assert_allclose(mcmc.ess(x), 32000 * (1 - rho) / (1 + rho), rtol=0.2)


# ------------------------------------------------------------------ Gaussian VB

# ------------------------------------------------------------------ bad input
def test_bad_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"log_density failed on a batch of shape \(3, 2\)"):
        mcmc.hmc(lambda z: z[:, 0] + z[:, 4], np.zeros((4, 2)))
    t = TG.eight_schools()
    with pytest.raises(ValueError, match="init has 3 columns"):
        mcmc.hmc(t, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"init must have shape \(chains, dim\)"):
        mcmc.hmc(t, np.zeros(10))
    with pytest.raises(ValueError, match="n_leapfrog must be a positive integer"):
        mcmc.hmc(TG.rosenbrock(), np.zeros((2, 2)), n_leapfrog=0)
    with pytest.raises(ValueError, match="target_accept"):
        mcmc.hmc(TG.rosenbrock(), np.zeros((2, 2)), target_accept=1.0)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_step_size_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="step_size must be a positive"):
        mcmc.hmc(TG.rosenbrock(), np.zeros((2, 2)), step_size=bad)
