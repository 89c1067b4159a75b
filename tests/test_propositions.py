"""Propositions 1 and 2 and the claim behind eq. (3.7), checked numerically with the
library's own objectives.  Each test fails if the corresponding code is wrong
(a swapped label, a wrong sign, a gradient leaking between the players)."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.tracer import getval
from reference_values import expect
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


# ------------------------------------------------------------------ through the training code
# Propositions 1-3 and Corollary 4 assume an adversary that can represent T* (and, for the
# corollary, an encoder that can represent the posterior).  The model below makes both hold
# exactly, and runs the library's own training functions on it: `objectives.avb_losses`
# (whose one gradient is Algorithm 1's three), `train.make_step` and `train.make_adversary_step`.
#   data: the four one-hot 2x2 images (sec. 5.2);  latent: 1-d;
#   encoder: the implicit encoder with no hidden layer, z = x w + s eps + b: q(z|x) = N(m(x), s^2);
#   decoder: one linear layer (Bernoulli logits);
#   adversary: the library's inner product <f(x), g(z)> + ||z||^2/2 (the folded prior), with
#   f linear in the one-hot x (any function of x) and g(z) = [z, z^2, 1] W_g + b_g (W_g = I,
#   b_g = 0: the features in which log q(z|x) is linear), so T* = log q(z|x) - log p(z) is one
#   exact parameter value psi*.
from autograd.scipy.special import logsumexp  # noqa: E402

from avb_minimal import train as TR  # noqa: E402
from avb_minimal.nn import concatenate, linear  # noqa: E402

G_IDENTITY = [(np.eye(3), np.zeros(3))]
ARCH = M.Arch(x_dim=4, z_dim=1, eps_dim=1, hidden=(), adv_hidden=(), adv_dim=3)
N_PER_X = 20000


@pytest.fixture
def quadratic_adversary(monkeypatch):
    def features_z(adv, z, act, unary=False):                   # g(z) = [z, z^2, 1] W_g + b_g  (M, 3)
        (W, b), = adv["g"]
        return linear(concatenate([z, z * z, anp.ones((z.shape[0], 1))], 1), W, b)
    monkeypatch.setattr(M, "adversary_features_z", features_z)


def _model(m=(0.8, -0.4, 0.3, -1.0), s=0.6, seed=0):
    rng = np.random.default_rng(seed)
    p = M.init_params(rng, "avb", ARCH, np.float64)
    p["enc"] = [(np.array([[*m, s]]).T, np.zeros(1))]            # z = x m + s eps   (5, 1)
    p["dec"] = [(rng.standard_normal((1, 4)), 0.3 * rng.standard_normal(4))]
    p["adv"] = {"f": [(np.zeros((4, 3)), np.zeros(3))], "g": G_IDENTITY}
    return p


def _data(seed=1, n=N_PER_X):
    rng = np.random.default_rng(seed)
    x = np.repeat(np.eye(4), n, axis=0)                          # (4n, 4)
    return x, rng.standard_normal((4 * n, 1)), rng.standard_normal((4 * n, 1))   # x, eps, z ~ p(z)


def _encoder(p):
    (W, b), = p["enc"]
    return W[:4, 0] + b[0], abs(W[4, 0])                         # m_k for x = e_k, s


def _T_star(p):
    """psi*: f(e_k) = [m_k / s^2, -1 / (2 s^2), -m_k^2 / (2 s^2) - log s], so that
    <f(x), g(z)> = log q(z|x) + log(2 pi)/2 and T = <f, g> + z^2/2 = log q(z|x) - log p(z)."""
    m, s = _encoder(p)
    A = np.stack([m / s**2, np.full(4, -0.5 / s**2), -m**2 / (2 * s**2) - np.log(s)], 1)
    return {"f": [(A, np.zeros(3))], "g": G_IDENTITY}


def _step_gradients(p, x, eps, z_neg, kind="avb", negatives="pairs"):
    """The gradient train.make_step takes: of gen_loss + adv_loss from avb_losses."""
    def total(q):
        gen, adv = O.avb_losses(q, kind, x, eps, z_neg, ARCH, negatives)
        return gen + adv
    return grad(total)(p)


def _flat(tree):
    from avb_minimal.trees import tree_flatten
    return np.concatenate([np.ravel(a) for a in tree_flatten(tree)])


@pytest.mark.task3_1
def test_prop1_the_adversary_step_learns_T_star(quadratic_adversary):
    """Proposition 1, eq. (3.4), through `train.make_adversary_step` (eq. (3.3), i.e. eq. (I.1),
    by Adam): the
    adversary trained against a fixed encoder learns T* = log q(z|x) - log p(z) -- and its
    nets learn log q(z|x), the folded prior supplying -log p(z)."""
    p = _model()
    x, eps, z_neg = _data(n=5000)
    cfg = TR.TrainConfig(lr_adv=0.05, step="readable")
    step, states = TR.make_adversary_step("avb", ARCH, cfg), TR.init_states("avb", p)
    for it in range(800):
        p, states = step(p, states, x, eps, z_neg, 1.0 - 0.95 * it / 800)
    F = p["adv"]["f"][0][0] + p["adv"]["f"][0][1]                 # f(e_k)  (4, 3)
    (W, b), = p["adv"]["g"]
    A = F @ W.T + np.outer(F @ b, [0, 0, 1])                     # T's coefficients on [z, z^2, 1]
    A_star = _T_star(p)["f"][0][0]
    assert np.allclose(A, A_star, atol=0.12), (A, A_star)


@pytest.mark.task3_2
def test_prop2_the_generator_gradient_of_the_step_is_the_elbo_gradient(quadratic_adversary):
    """Proposition 2, eq. (3.5)-(3.6) (eq. (3.5): eq. (3.1) with T* in place of log q - log p):
    with T = T* the encoder's and decoder's gradient in
    Algorithm 1 (avb_losses, psi held fixed) is the gradient of the ELBO, eq. (2.4); the
    decoder's exactly (same z), the encoder's up to the Monte Carlo error of E_q[grad T*] = 0."""
    p = _model()
    x, eps, z_neg = _data()
    p["adv"] = _T_star(p)
    g_elbo = expect("prop_elbo_grad", p=p, x=x, eps=eps, arch=ARCH)     # the ELBO's, in closed form
    g = _step_gradients(p, x, eps, z_neg)
    for part in ("dec", "enc"):
        tol = 1e-10 if part == "dec" else 0.02
        assert np.allclose(_flat(g[part]), -g_elbo[part], atol=tol), part
    assert np.max(np.abs(g_elbo["enc"])) > 0.1                # the check has power: not at an optimum


@pytest.mark.task3_1
@pytest.mark.task3_2
def test_prop3_the_elbo_optimum_with_T_star_is_a_nash_equilibrium_of_the_step(quadratic_adversary):
    """Proposition 3, eq. (3.8): (theta*, phi*, T*) with (theta*, phi*) the ELBO's optimum
    (eq. 2.4) and T* = log q - log p (eq. 3.4) is a Nash equilibrium of the game of eq. (3.3) and (3.7):
    each player's gradient in Algorithm 1's step vanishes (up to Monte Carlo error).  Each
    player's gradient is its own objective's: the adversary's is eq. (3.3)'s alone (no
    gradient of eq. (3.7) reaches psi), the encoder's is eq. (3.7)'s alone (none of eq. 3.3).
    The proof's steps, eq. (I.7), eq. (I.8), eq. (I.9), eq. (I.10), eq. (I.11): with T = T*
    fixed, eq. (3.7) is the ELBO plus KL(q_phi, q_phi*), stationary at phi = phi*."""
    x, eps, z_neg = _data()
    p = _model()
    opt = expect("prop_elbo_optimum", p=p, x=x, eps=eps, arch=ARCH)    # the ELBO's maximum, by BFGS
    p = dict(p, enc=[(opt["enc_W"], opt["enc_b"])], dec=[(opt["dec_W"], opt["dec_b"])])
    p["adv"] = _T_star(p)
    g = _step_gradients(p, x, eps, z_neg)
    assert np.max(np.abs(_flat(g["adv"]))) < 0.02, g["adv"]
    assert np.max(np.abs(_flat(g["enc"]))) < 0.02 and np.max(np.abs(_flat(g["dec"]))) < 1e-6
    # each player's gradient is its own objective's, at a generic point too
    q = _model()
    q["adv"] = {"f": [(0.3 * np.ones((4, 3)), np.full(3, 0.1))], "g": G_IDENTITY}
    g = _step_gradients(q, x, eps, z_neg)
    g_adv = grad(lambda a: O.adversary_only_loss(dict(q, adv=a), "avb", x, eps, z_neg, ARCH))(q["adv"])
    assert np.allclose(_flat(g["adv"]), _flat(g_adv), atol=1e-12)

    def gen_only(gp):                                            # eq. (3.7), T evaluated with psi fixed
        z = M.implicit_encoder(gp["enc"], x, eps, ARCH.act)
        T = M.adversary(q["adv"], x, z, ARCH.act) + 0.0
        return -O.generator_objective(T, bernoulli_loglik(x, M.decoder_logits(gp["dec"], z, ARCH.act)))
    g_gen = grad(gen_only)({"enc": q["enc"], "dec": q["dec"]})
    assert np.allclose(_flat(g["enc"]), _flat(g_gen["enc"]), atol=1e-12)
    assert np.allclose(_flat(g["dec"]), _flat(g_gen["dec"]), atol=1e-12)


def _log_px_and_posterior_kl(p, n_quad=120):
    """Per one-hot x: log p_theta(x) and KL(q(z|x), p_theta(z|x)) by quadrature on a grid."""
    z = np.linspace(-9, 9, 4001)[:, None]                        # (K, 1)
    dz = z[1, 0] - z[0, 0]
    m, s = _encoder(p)
    out = []
    for k in range(4):
        x = np.repeat(np.eye(4)[k:k + 1], len(z), 0)
        log_joint = bernoulli_loglik(x, M.decoder_logits(p["dec"], z, ARCH.act)) + log_std_normal(z)
        log_px = logsumexp(log_joint) + np.log(dz)
        log_q = log_normal_diag(z, m[k], 2 * np.log(s) * np.ones((1, 1)))
        kl = np.sum(np.exp(log_q) * (log_q - (log_joint - log_px))) * dz
        out.append((log_px, kl))
    return np.array(out)


def test_cor4_the_avb_objective_is_log_px_minus_the_posterior_gap(quadratic_adversary):
    """Corollary 4, eq. (3.9): with T = T*, eq. (3.7) as the step computes it (avb_losses) is
    log p_theta(x) - KL(q(z|x), p_theta(z|x)) (eq. (2.2); its mean over x bounds eq. (2.3)), so it reaches log p_theta(x) --
    maximum likelihood -- exactly when q is the true posterior.  Here the decoder ignores z, so
    the posterior is the prior, which this encoder can represent: the objective is log p(x)
    there and falls by the KL for any other q."""
    x, eps, z_neg = _data()
    values = []
    for m, s in [((0.8, -0.4, 0.3, -1.0), 0.6), ((0.0, 0.0, 0.0, 0.0), 1.0)]:
        p = _model(m, s)
        if s == 1.0:
            p["dec"] = [(np.zeros((1, 4)), p["dec"][0][1])]      # the posterior is p(z)
        p["adv"] = _T_star(p)
        aux = {}
        O.avb_losses(p, "avb", x, eps, z_neg, ARCH, "pairs", aux)
        ref = _log_px_and_posterior_kl(p)
        assert abs(aux["gen_objective"] - np.mean(ref[:, 0] - ref[:, 1])) < 0.02, (aux, ref)
        values.append((aux["gen_objective"], ref))
    (_, ref_a), (obj_b, ref_b) = values
    assert np.min(ref_a[:, 1]) > 0.05 and np.max(ref_b[:, 1]) < 1e-6    # KL to the posterior
    assert abs(obj_b - np.mean(ref_b[:, 0])) < 0.02                      # = log p(x): ML's objective


@pytest.mark.task4_1
def test_prop1_under_adaptive_contrast_the_contrast_matches_q(quadratic_adversary):
    """Algorithm 2 (eq. (4.3): the adversary tells q~(z~|x) from r_0 = N(0, I); eq. (III.1):
    z = z0 + sum_i a_i v_i): the adversary sees z_bar = (z - mu) / sigma with
    the moments of eq. (III.2)-(III.3), so for a Gaussian q (linear basis nets) z_bar ~ N(0, 1)
    = r_alpha's standardisation and T* = 0: the adversary's step gradient at T = 0 vanishes
    (Proposition 1 with q = the contrast), which needs the moments right."""
    arch = M.Arch(x_dim=4, z_dim=1, hidden=(), adv_hidden=(), adv_dim=3, n_basis=3, basis_eps_dim=1,
                  basis_hidden=1)
    rng = np.random.default_rng(3)
    p = M.init_params(rng, "avb_ac", arch, np.float64)
    (W1, b1), (W2, b2) = p["enc"]["v"]
    b2 = -((b1 + 50.0)[:, 0, 0] * W2[:, 0, 0]).reshape(b2.shape)   # E[v_i] = 0
    p["enc"]["v"] = [(W1, b1 + 50.0), (W2, b2)]                 # ELU's linear side: v_i Gaussian
    p["adv"] = {"f": [(np.tile([0.0, -0.5, 0.0], (4, 1)), np.zeros(3))], "g": G_IDENTITY}   # T = 0
    p["dec"] = [(np.zeros_like(W), b) for W, b in p["dec"]]     # log p(x|z) flat in z: only eq. (4.2)'s
                                                                # contrast and prior terms move q
    n = 20000
    x = np.repeat(np.eye(4), n, axis=0)
    eps, z_neg = rng.standard_normal((4 * n, 3, 1)), rng.standard_normal((4 * n, 1))
    # the ELBO's gradient in the a-net, for a Gaussian q = N(mean, var) with the population
    # moments of eq. (III.2)-(III.3) (the reference's closed form; compared below)
    g_elbo = expect("ac_elbo_grad", enc=p["enc"], dec=p["dec"], x=x, eps=eps, arch=arch)
    a = {}
    g = grad(lambda q: sum(O.avb_losses(q, "avb_ac", x, eps, z_neg, arch, "pairs", a)))(p)
    assert np.max(np.abs(_flat(g["adv"]))) < 0.02, g["adv"]
    assert abs(a["T_q"]) < 1e-12
    # ... and with T = T* = 0 the generator's gradient of eq. (4.2) (Algorithm 2, line 12) is the
    # ELBO's: q = N(mean, var) with the population moments of eq. (III.2)-(III.3)
    ge, gl = _flat(g["enc"]["a"]), -g_elbo["a"]                  # the a-net: z0(x) and a_i(x)
    assert np.linalg.norm(ge - gl) < 0.05 * np.linalg.norm(gl), np.linalg.norm(ge - gl) / np.linalg.norm(gl)
