"""Propositions 1 and 2 and the claim behind eq. (3.7), checked numerically with the
library's own objectives.  Each test fails if the corresponding code is wrong
(a swapped label, a wrong sign, a gradient leaking between the players)."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.tracer import getval
from scipy.optimize import minimize

from avb_minimal import models as M
from avb_minimal import objectives as O
from avb_minimal.distributions import log_normal_diag, log_std_normal
from avb_minimal.ops import bernoulli_loglik


@pytest.mark.task3_1
def test_prop1_pointwise_optimum_on_a_discrete_space():
    """eq. (I.2)-(I.4): maximising eq. (3.3) pointwise gives T* = log q - log p."""
    q = np.array([1, 2, 3, 4]) / 10
    p = np.array([4, 3, 2, 1]) / 10
    zq = np.repeat(np.arange(4), [1, 2, 3, 4])    # exact frequencies of q
    zp = np.repeat(np.arange(4), [4, 3, 2, 1])    # ... and of p
    loss = lambda T: O.adversary_loss(T[zq], T[zp])  # noqa: E731
    T = minimize(loss, np.zeros(4), jac=grad(loss), method="BFGS", options={"gtol": 1e-10}).x
    assert np.allclose(T, np.log(q) - np.log(p), atol=1e-4)


@pytest.mark.task3_1
def test_prop1_gaussians_quadratic_adversary(rng):
    """Proposition 1 (eq. 3.4) on Gaussians: q = N(1, 0.5^2), p = N(0, 1); the family
    T(z) = a + b z + c z^2 contains log q - log p = -1.5 z^2 + 4 z - 2 + log 2."""
    zq = 1 + 0.5 * rng.standard_normal(400000)
    zp = rng.standard_normal(400000)
    T = lambda w, z: w[0] + w[1] * z + w[2] * z * z  # noqa: E731
    loss = lambda w: O.adversary_loss(T(w, zq), T(w, zp))  # noqa: E731
    w = minimize(loss, np.zeros(3), jac=grad(loss), method="BFGS").x
    assert np.allclose(w, [-2 + np.log(2), 4.0, -1.5], atol=0.05)


def _gaussian_T_star(mu, log_sigma, z):
    """T*(z) = log q_phi(z) - log p(z) for q_phi = N(mu, diag(exp(2 log_sigma))), p = N(0, I)."""
    return log_normal_diag(z, mu, 2 * log_sigma) - log_std_normal(z)


def test_prop2_expected_gradient_of_T_star_vanishes(rng):
    """eq. (3.6): E_q[grad_phi T*(x, z)] = 0 when z ~ q_phi is held fixed (I.5-I.6),
    whereas the reparameterised gradient of E[T*] (= grad KL) is far from 0."""
    mu, ls = np.array([0.8, -0.5]), np.array([-0.3, 0.2])
    n = 200000
    eps = rng.standard_normal((n, 2))
    z = mu + np.exp(ls) * eps                                    # samples of q_phi, held fixed
    g_mu = grad(lambda m: anp.sum(_gaussian_T_star(m, ls, z)))(mu) / n
    g_ls = grad(lambda s: anp.sum(_gaussian_T_star(mu, s, z)))(ls) / n
    se = 4 * np.sqrt(2.0 / n)                                   # both score components have var <= 2
    assert np.all(np.abs(g_mu) < se) and np.all(np.abs(g_ls) < se)
    # reparameterised: z moves with phi; equals grad KL = (mu, exp(2 ls) - 1)
    r_mu = grad(lambda m: anp.mean(_gaussian_T_star(m, ls, m + anp.exp(ls) * eps)))(mu)
    r_ls = grad(lambda s: anp.mean(_gaussian_T_star(mu, s, mu + anp.exp(s) * eps)))(ls)
    assert np.allclose(r_mu, mu, atol=0.02) and np.allclose(r_ls, np.exp(2 * ls) - 1, atol=0.02)
    assert np.min(np.abs(np.concatenate([r_mu, r_ls]))) > 0.3


@pytest.mark.task3_2
def test_eq37_gradient_with_T_star_fixed_is_the_elbo_gradient(rng):
    """With T = T* held fixed (its phi frozen), the phi- and theta-gradient of eq. (3.7)
    equals the gradient of the ELBO (eq. 2.4) -- here for a Gaussian encoder whose
    ELBO has a closed-form KL, same noise on both sides."""
    arch = M.Arch(hidden=(8,), z_dim=2)
    params = M.init_params(rng, "vae", arch, np.float64)
    params["enc"][-1] = (params["enc"][-1][0] * 0.5, params["enc"][-1][1] + 0.1)
    n = 50000
    x = np.repeat(np.eye(4), n, axis=0)                          # (4n, 4)
    eps = rng.standard_normal((4 * n, 2))
    mean0, lv0 = (getval(a) for a in M.gaussian_encoder(params["enc"], x, arch.act))

    def eq37(p, sign=1.0):
        mean, lv = M.gaussian_encoder(p["enc"], x, arch.act)
        z = mean + anp.exp(0.5 * lv) * eps                       # z_phi(x, eps)
        T_star = log_normal_diag(z, mean0, lv0) - log_std_normal(z)   # T* at the current phi, frozen
        return O.generator_objective(sign * T_star, bernoulli_loglik(x, M.decoder_logits(p["dec"], z, arch.act)))

    def elbo(p):
        return anp.mean(O.vae_elbo(p, x, eps, arch))

    g1, g2 = grad(eq37)(params), grad(elbo)(params)
    for (W1, b1), (W2, b2) in zip(g1["enc"] + g1["dec"], g2["enc"] + g2["dec"]):
        assert np.allclose(W1, W2, atol=0.01) and np.allclose(b1, b2, atol=0.01)
    # and the check has power: the wrong sign of T (a classic bug) gives another gradient
    g_wrong = grad(lambda p: eq37(p, sign=-1.0))(params)
    assert np.max(np.abs(g_wrong["enc"][-1][0] - g2["enc"][-1][0])) > 0.1
