import numpy as np
from scipy import stats

from avb_minimal import distributions as D


def test_log_densities_match_scipy(rng):
    z = rng.standard_normal((5, 3))
    assert np.allclose(D.log_std_normal(z), stats.multivariate_normal(np.zeros(3)).logpdf(z))
    mean, log_var = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    ref = [stats.multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))).logpdf(z[i]) for i in range(5)]
    assert np.allclose(D.log_normal_diag(z, mean, log_var), ref)


def test_kl_closed_form_matches_monte_carlo(rng):
    mean, log_var = np.array([[0.7, -0.3]]), np.array([[-0.5, 0.4]])
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((200000, 2))
    mc = np.mean(D.log_normal_diag(z, mean, log_var) - D.log_std_normal(z))
    assert abs(D.kl_diag_normal_std(mean, log_var)[0] - mc) < 0.01
