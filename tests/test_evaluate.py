"""Evaluation that does not trust the adversary: exact log-likelihood, ELBOs, k-NN KL."""
import numpy as np
import pytest
from reference_values import expect

from avb_minimal import evaluate as E
from avb_minimal import models as M


def _gauss_kl(m0, S0, m1, S1):
    d = len(m0)
    S1i = np.linalg.inv(S1)
    return 0.5 * (np.trace(S1i @ S0) + (m1 - m0) @ S1i @ (m1 - m0) - d
                  + np.log(np.linalg.det(S1) / np.linalg.det(S0)))


@pytest.mark.task5_1
@pytest.mark.parametrize("d", [1, 2])
def test_knn_kl_against_gaussians_with_known_kl(rng, d):
    m0, m1 = np.zeros(d), np.full(d, 0.8)
    S0, S1 = np.eye(d) * 0.5, np.eye(d) * 1.5
    true = _gauss_kl(m0, S0, m1, S1)
    x = rng.multivariate_normal(m0, S0, 20000)
    y = rng.multivariate_normal(m1, S1, 20000)
    assert abs(E.knn_kl(x, y, k=5) - true) < 0.05
    assert abs(E.knn_kl(x, rng.multivariate_normal(m0, S0, 20000), k=5)) < 0.03   # KL(P, P) = 0


@pytest.mark.task5_1
def test_knn_kl_matches_brute_force_distances(rng):
    """Task 5.1: the estimator against the reference that finds the neighbours by brute force."""
    x, y, k = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.5, 3
    assert np.isclose(E.knn_kl(x, y, k=k), expect("knn_kl", x=x, y=y, k=k)["kl"])
    with pytest.raises(ValueError, match="duplicate"):
        E.knn_kl(np.vstack([x] + [x[:1]] * k), y, k=k)         # k + 1 copies: rho = 0


def test_knn_entropy_against_gaussian(rng):
    S = np.array([[1.0, 0.6], [0.6, 2.0]])
    true = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * S))
    assert abs(E.knn_entropy(rng.multivariate_normal([0, 0], S, 20000)) - true) < 0.03


def test_knn_bad_input(rng):
    with pytest.raises(ValueError, match="same dimension"):
        E.knn_kl(rng.standard_normal((50, 2)), rng.standard_normal((50, 3)))
    with pytest.raises(ValueError, match="duplicate"):
        E.knn_entropy(np.zeros((50, 2)))
    with pytest.raises(ValueError, match="finite"):
        E.knn_kl(np.full((50, 2), np.nan), rng.standard_normal((50, 2)))


def _linear_decoder(a, c, arch):
    """A decoder whose logits are l = a * z_1 + c: log p(x) reduces to a 1-d integral."""
    W = np.zeros((arch.z_dim, arch.x_dim))
    W[0] = a
    return [(W, np.asarray(c, float))]


def test_exact_log_likelihood_matches_1d_quadrature():
    arch = M.Arch(x_dim=3, z_dim=2, hidden=())
    a, c = np.array([3.0, -2.0, 0.5]), np.array([0.2, 0.1, -0.4])
    dec = _linear_decoder(a, c, arch)
    x = np.array([[1, 0, 1], [0, 1, 1]], float)
    ll = E.exact_log_likelihood(dec, x, arch, n=400)
    ref = expect("exact_ll_quadrature", a=a, c=c, x=x)["log_px"]      # scipy.integrate.quad over z_1
    assert np.allclose(ll, ref, rtol=0, atol=1e-5)


def test_exact_ll_refinement_and_posterior_normalised(rng):
    arch = M.Arch(hidden=(32, 32))
    p = M.init_params(rng, "vae", arch)
    data = np.eye(4, dtype=np.float32)
    r = E.exact_log_likelihood_refined(p["dec"], data, arch, n=256)
    assert r["refinement_change"] < 1e-3
    # the 4 one-hot images do not exhaust {0,1}^4: their probabilities sum to < 1
    assert np.sum(np.exp(E.exact_log_likelihood(p["dec"], data, arch, 256))) < 1
    post, zz = E.exact_posterior_grid(p["dec"], data, arch, n=64)
    assert np.allclose(post.sum(1), 1)


@pytest.mark.task2_1
def test_vae_elbo_is_below_the_exact_log_likelihood(rng):
    arch = M.Arch(hidden=(16,))
    p = M.init_params(rng, "vae", arch)
    data = np.eye(4, dtype=np.float32)
    elbo = E.vae_elbo_exact(p, data, arch, n=256)
    ll = E.exact_log_likelihood(p["dec"], data, arch, 256)
    assert np.all(elbo <= ll + 1e-6)
    # and agrees with the Monte Carlo ELBO
    from avb_minimal.objectives import vae_elbo
    x = np.repeat(data, 20000, axis=0)
    mc = vae_elbo(p, x, rng.standard_normal((x.shape[0], 2)).astype(np.float32), arch).reshape(4, -1).mean(1)
    assert np.allclose(elbo, mc, atol=0.02)


@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
def test_independent_elbo_is_a_lower_bound_up_to_estimator_noise(rng, kind):
    arch = M.Arch(hidden=(16,), adv_hidden=(8,), adv_dim=8, eps_dim=4, n_basis=4)
    p = M.init_params(rng, kind, arch)
    data = np.eye(4, dtype=np.float32)
    elbo = E.avb_elbo_independent(p, kind, data, arch, rng, n=4000)
    ll = E.exact_log_likelihood(p["dec"], data, arch, 256)
    assert np.all(elbo <= ll + 0.05)
    # the adversary's estimate is a number, but nothing forces it below log p(x)
    assert np.all(np.isfinite(E.avb_elbo_from_T(p, kind, data, arch, rng, n=200)))


def test_kl_aggregate_of_the_prior_itself_is_zero(rng):
    """A VAE whose encoder ignores x and outputs N(0, I) has q(z) = p(z)."""
    arch = M.Arch(hidden=(4,))
    p = M.init_params(rng, "vae", arch)
    p["enc"] = [(W * 0, b * 0) for W, b in p["enc"]]
    assert abs(E.kl_aggregate(p, "vae", np.eye(4, dtype=np.float32), arch, rng, n=8000)) < 0.03


def test_reconstruction_error_is_the_mean_cross_entropy_per_pixel(rng):
    """With a decoder that ignores z (logits b), the error is -mean_d [x_d b_d - softplus(b_d)]."""
    arch = M.Arch(hidden=(4,))
    p = M.init_params(rng, "vae", arch)
    b = np.array([2.0, -1.0, 0.5, 0.0], np.float32)
    p["dec"] = [(W * 0, bb * 0) for W, bb in p["dec"][:-1]] + [(p["dec"][-1][0] * 0, b)]
    x = np.eye(4, dtype=np.float32)
    loglik = expect("bernoulli_loglik", x=x, l=np.broadcast_to(b, x.shape))["loglik"]
    assert np.isclose(E.reconstruction_error(p, "vae", x, arch, rng, n=10), -np.mean(loglik) / 4, rtol=1e-5)


def test_log_r_alpha_is_the_gaussian_density_of_adaptive_contrast():
    """log r_alpha(z|x) = log N(z; mean, var + AC_VAR_FLOOR), from z_bar (eq. 4.1's change of variables)."""
    from scipy.stats import norm
    rng = np.random.default_rng(3)
    mean, var = rng.normal(size=(5, 3)), rng.uniform(0.01, 2.0, (5, 3))
    z = rng.normal(size=(5, 3))
    by_scipy = norm.logpdf(z, mean, np.sqrt(var + M.AC_VAR_FLOOR)).sum(1)
    np.testing.assert_allclose(M.log_r_alpha(M.normalise(z, mean, var), var), by_scipy, rtol=1e-12)
