"""Annealed importance sampling (avb_minimal.ais),
checked on models whose log-likelihood is known exactly: a linear-Gaussian model
(closed form) and a tiny binary model with a 2-d latent (grid integration)."""
import numpy as np
import pytest
from autograd import grad
from scipy.stats import multivariate_normal

from avb_minimal import evaluate as E
from avb_minimal import models as M
from avb_minimal.ais import (
    ac_gaussian,
    ais,
    ais_log_likelihood,
    decoder_loglik_and_grad,
    decoder_loglik_fn,
    linear_schedule,
    sigmoid_schedule,
)
from avb_minimal.ops import bernoulli_loglik


# ------------------------------------------------------------------ linear-Gaussian: p(x) in closed form
def linear_gaussian_params(seed=0, d=2, D=3, sig=0.3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((D, d)), rng.standard_normal(D), sig


def linear_gaussian(seed=0, n=24, d=2, D=3, sig=0.3):
    """p(z) = N(0, I), p(x|z) = N(A z + c, sig^2 I)  =>  p(x) = N(c, A A^T + sig^2 I)."""
    rng = np.random.default_rng(seed)
    A, c = rng.standard_normal((D, d)), rng.standard_normal(D)
    x = rng.standard_normal((n, d)) @ A.T + c + sig * rng.standard_normal((n, D))
    exact = multivariate_normal(c, A @ A.T + sig ** 2 * np.eye(D)).logpdf(x)

    def make(C):
        def loglik_fn(s, e):
            xr = np.repeat(x[s:e], C, 0)                                       # example-major rows

            def f(z, want_value):
                r = xr - z @ A.T - c
                ll = -0.5 * np.sum(r * r, 1) / sig ** 2 - D * np.log(sig) - 0.5 * D * np.log(2 * np.pi)
                return ll, r @ A / sig ** 2
            return f
        return loglik_fn
    return make, x, exact, d


def test_linear_gaussian_within_0p1_nats():
    make, x, exact, d = linear_gaussian()
    r = ais(make(5), x.shape[0], d, np.random.default_rng(1), n_steps=500, n_chains=5, chunk=7)
    err = r["log_likelihood"] - exact
    assert abs(err.mean()) < 0.1, err          # the mean over examples; one example's estimate
    assert np.abs(err).max() < 1.5, err        # (5 chains) scatters by a few tenths of a nat
    assert r["log_likelihood"].shape == (x.shape[0],) and r["z"].shape == (x.shape[0], 5, d)
    assert np.all(r["ess"] >= 1 - 1e-9) and np.all(r["ess"] <= 5 + 1e-9)
    assert 0.4 < r["acceptance"].mean() < 0.9                                   # adapted toward 0.65


def test_gaussian_initial_distribution_is_accounted_for():
    """A Gaussian p0 = N(m, s^2) near the posterior (what adaptive contrast provides) gives the
    exact log-likelihood, closer than from the prior with as many steps: the weights
    include log p(z) - log p0(z)."""
    make, x, exact, d = linear_gaussian(seed=3)
    A, c, sig = linear_gaussian_params(seed=3)
    P = np.eye(d) + A.T @ A / sig ** 2                                          # posterior precision
    post_mean = np.linalg.solve(P, A.T @ (x - c).T / sig ** 2).T                # (n, d)
    rng = np.random.default_rng(2)
    mean = post_mean + 0.1 * rng.standard_normal(post_mean.shape)
    std = np.broadcast_to(1.5 * np.sqrt(np.diag(np.linalg.inv(P))), mean.shape)
    r = ais(make(5), x.shape[0], d, rng, init_mean=mean, init_std=std, n_steps=200)
    assert abs((r["log_likelihood"] - exact).mean()) < 0.1
    prior = ais(make(5), x.shape[0], d, rng, n_steps=200)                        # worse from the prior
    assert np.abs(r["log_likelihood"] - exact).mean() < np.abs(prior["log_likelihood"] - exact).mean()


def test_more_temperatures_give_a_higher_estimate_on_average():
    """log mean w is a stochastic lower bound whose bias shrinks with the number of steps."""
    make, x, exact, d = linear_gaussian(seed=4, n=40)
    lo = ais(make(5), x.shape[0], d, np.random.default_rng(5), n_steps=3)["log_likelihood"]
    hi = ais(make(5), x.shape[0], d, np.random.default_rng(5), n_steps=200)["log_likelihood"]
    assert lo.mean() < hi.mean() - 0.3, (lo.mean(), hi.mean(), exact.mean())
    assert lo.mean() < exact.mean()


def test_same_seed_same_result_and_chunking_does_not_matter_for_shapes():
    make, x, _, d = linear_gaussian(n=6)
    a = ais(make(3), 6, d, np.random.default_rng(0), n_steps=20, n_chains=3)
    b = ais(make(3), 6, d, np.random.default_rng(0), n_steps=20, n_chains=3)
    np.testing.assert_array_equal(a["log_likelihood"], b["log_likelihood"])
    c = ais(make(3), 6, d, np.random.default_rng(0), n_steps=20, n_chains=3, chunk=4)
    assert c["log_weights"].shape == (6, 3)


def plain_ais(f, E, C, d, seed, n_steps, mean=None, std=None, L=10, target=0.65):
    """AIS as the module docstring writes it, with log f_b and its gradient recomputed from
    scratch at every point (no carried values): the reference for `ais`'s bookkeeping."""
    rng, betas, R = np.random.default_rng(seed), sigmoid_schedule(n_steps), E * C
    adapt = min(0.5, max(0.02, 5.0 / n_steps))
    m = np.zeros((R, d)) if mean is None else np.repeat(mean, C, 0)
    s = np.ones((R, d)) if std is None else np.repeat(std, C, 0)

    def log_f(b, z):                   # log p0 + b (log p(x|z) + log p(z) - log p0), and its gradient
        ll, gll = f(z, True)
        l0 = multivariate_normal_diag(z, m, s)
        lp = multivariate_normal_diag(z, 0 * m, 1 + 0 * s)
        return l0 + b * (ll + lp - l0), -(z - m) / s ** 2 + b * (gll - z + (z - m) / s ** 2)

    eps = 0.5 * (np.ones(E) if std is None else std.mean(1))
    z = m + s * rng.standard_normal((R, d))
    logw = np.zeros(R)
    for t in range(1, n_steps + 1):
        logw += log_f(betas[t], z)[0] - log_f(betas[t - 1], z)[0]
        if t == n_steps:
            break
        b, step = betas[t], np.repeat(eps, C)[:, None]
        p = rng.standard_normal((R, d))
        zn, pn = z.copy(), p + 0.5 * step * log_f(b, z)[1]
        for k in range(L):
            zn = zn + step * pn
            pn = pn + (step if k < L - 1 else 0.5 * step) * log_f(b, zn)[1]
        log_acc = np.minimum(log_f(b, zn)[0] - 0.5 * np.sum(pn ** 2, 1) - log_f(b, z)[0] + 0.5 * np.sum(p ** 2, 1), 0)
        z = np.where((np.log(rng.random(R)) < log_acc)[:, None], zn, z)
        eps *= np.where(np.exp(log_acc).reshape(E, C).mean(1) > target, 1 + adapt, 1 - adapt)
    return logw.reshape(E, C), z.reshape(E, C, d)


def multivariate_normal_diag(z, m, s):
    return -0.5 * np.sum(((z - m) / s) ** 2 + np.log(2 * np.pi * s ** 2), 1)


@pytest.mark.parametrize("start", ["prior", "gaussian"])
def test_carried_gradient_equals_recomputing_everything(start):
    """`ais` evaluates log p(x|z) once per leapfrog step and carries the value and gradient
    at each chain's state across transitions (the accepted rows); the plain algorithm,
    recomputing all of it at every point from the same draws, gives the same weights and chains."""
    make, x, _, d = linear_gaussian(seed=5, n=3)
    rng = np.random.default_rng(9)
    mean, std = (None, None) if start == "prior" else (0.3 * rng.standard_normal((3, d)), 0.5 + rng.random((3, d)))
    r = ais(make(4), 3, d, np.random.default_rng(1), mean, std, n_steps=25, n_chains=4)
    lw, z = plain_ais(make(4)(0, 3), 3, 4, d, 1, 25, mean, std)
    np.testing.assert_allclose(r["log_weights"], lw, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r["z"], z, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ tiny binary model: grid integration
def tiny_model(kind="vae", seed=1, D=10, scale=2.5):
    arch = M.Arch(x_dim=D, z_dim=2, hidden=(16, 16), n_basis=4, basis_hidden=8, adv_hidden=(8,), adv_dim=4)
    p = M.init_params(np.random.default_rng(seed), kind, arch, np.float64)
    p["dec"] = [(W * scale, b) for W, b in p["dec"]]                          # a sharper posterior
    z = np.random.default_rng(seed + 1).standard_normal((30, 2))
    logits = M.decoder_logits(p["dec"], z, arch.act)
    x = (np.random.default_rng(seed + 2).random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return arch, p, x


def test_tiny_binary_model_within_0p1_nats_of_the_exact_log_likelihood():
    arch, p, x = tiny_model()
    exact = E.exact_log_likelihood(p["dec"], x, arch, 512)
    r = ais_log_likelihood(p, "vae", x, arch, np.random.default_rng(0), n_steps=500, dtype=np.float64)
    err = r["log_likelihood"] - exact
    assert abs(err.mean()) < 0.1, err
    assert np.abs(err).max() < 1.5, err
    assert r["settings"]["init"] == "prior" and r["seconds"] > 0


def test_ac_gaussian_start_agrees_with_the_exact_log_likelihood():
    arch, p, x = tiny_model("avb_ac")
    exact = E.exact_log_likelihood(p["dec"], x, arch, 512)
    r = ais_log_likelihood(p, "avb_ac", x, arch, np.random.default_rng(0), n_steps=500, dtype=np.float64)
    assert r["settings"]["init"] == "ac"
    assert abs((r["log_likelihood"] - exact).mean()) < 0.1


def test_ac_gaussian_matches_monte_carlo_moments_of_the_noise_basis_encoder():
    """eq. (III.2)-(III.3) with E[v], Var[v] from one large noise sample == the moments of
    z = z0(x) + sum_i a_i(x) v_i(eps_i) estimated by sampling z for each x."""
    arch, p, x = tiny_model("avb_ac")
    p32 = {k: M.init_params(np.random.default_rng(7), "avb_ac", arch)[k] for k in ("enc",)}
    mean, var = ac_gaussian(p32["enc"], x[:4], arch, np.random.default_rng(0), n_noise=200_000)
    K = 100_000
    rng = np.random.default_rng(1)
    for i in range(4):
        z, _, _ = M.noise_basis_encoder(p32["enc"], np.repeat(x[i:i + 1], K, 0),
                                        M.sample_noise(rng, "avb_ac", arch, K), arch.act)
        np.testing.assert_allclose(mean[i], z.mean(0), atol=0.02 * np.sqrt(var[i]).max() + 1e-3)
        np.testing.assert_allclose(var[i], z.var(0), rtol=0.03)


# ------------------------------------------------------------------ the hand-written gradient
@pytest.mark.parametrize("activation", ["elu", "relu", "tanh"])
def test_decoder_gradient_matches_autograd(activation, rng):
    arch = M.Arch(x_dim=13, z_dim=3, hidden=(11, 7), activation=activation)
    dec = M.init_params(rng, "vae", arch, np.float64)["dec"]
    z = rng.standard_normal((9, 3)) * 2
    x = (rng.random((9, 13)) < 0.5).astype(np.float64)
    ll, g = decoder_loglik_and_grad(dec, x, z, arch)
    ref = bernoulli_loglik(x, M.decoder_logits(dec, z, arch.act))
    g_ref = grad(lambda zz: np.sum(bernoulli_loglik(x, M.decoder_logits(dec, zz, arch.act))))(z)
    np.testing.assert_allclose(ll, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10)
    assert decoder_loglik_and_grad(dec, x, z, arch, want_value=False)[0] is None


def test_decoder_buffers_are_reused_but_results_are_fresh(rng):
    """The decoder function keeps its intermediates in buffers across calls (AIS calls it L
    times per transition); what it returns is new each time: AIS keeps the accepted rows."""
    arch = M.Arch(x_dim=13, z_dim=3, hidden=(11, 7))
    dec = M.init_params(rng, "vae", arch)["dec"]
    x = (rng.random((9, 13)) < 0.5).astype(np.float32)
    z1, z2 = rng.standard_normal((2, 9, 3))
    f = decoder_loglik_fn(dec, x, arch)
    ll1, g1 = f(z1)
    ref = (ll1.copy(), g1.copy())
    ll2, g2 = f(z2)
    np.testing.assert_array_equal(ll1, ref[0])
    np.testing.assert_array_equal(g1, ref[1])
    np.testing.assert_array_equal(f(z1)[1], g1)                # the same input, the same numbers
    assert f(z2, want_value=False)[0] is None and g1.dtype == ll1.dtype == np.float64


def test_log_likelihood_is_stable_for_huge_logits():
    arch = M.Arch(x_dim=2, z_dim=1, hidden=(1,))
    dec = [(np.ones((1, 1), np.float32), np.zeros(1, np.float32)),
           (np.array([[1e4, -1e4]], np.float32), np.zeros(2, np.float32))]
    ll, g = decoder_loglik_and_grad(dec, np.array([[1, 1]], np.float32), np.ones((1, 1), np.float32), arch)
    assert np.isfinite(ll).all() and np.isfinite(g).all()
    np.testing.assert_allclose(ll, [-1e4], rtol=1e-6)


# ------------------------------------------------------------------ schedule and bad input
def test_schedules():
    for f in (sigmoid_schedule, linear_schedule):
        b = f(50)
        assert b.shape == (51,) and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    with pytest.raises(ValueError, match="n_steps"):
        sigmoid_schedule(0)


@pytest.mark.parametrize("kw, match", [
    (dict(n_steps=0), "n_steps"),
    (dict(n_chains=0), "n_chains"),
    (dict(n_leapfrog=0), "n_leapfrog"),
    (dict(init="ac"), "avb_ac"),
    (dict(init="posterior"), "init"),
    (dict(step_size=-1.0), "step_size"),
])
def test_bad_settings_are_rejected(kw, match):
    arch, p, x = tiny_model()
    with pytest.raises(ValueError, match=match):
        ais_log_likelihood(p, "vae", x[:3], arch, np.random.default_rng(0), **kw)


def test_bad_data_is_rejected():
    arch, p, x = tiny_model()
    with pytest.raises(ValueError, match="binary"):
        ais_log_likelihood(p, "vae", x[:3] * 0.5, arch, np.random.default_rng(0), n_steps=2)
    with pytest.raises(ValueError, match="columns"):
        ais_log_likelihood(p, "vae", x[:3, :5], arch, np.random.default_rng(0), n_steps=2)
    with pytest.raises(ValueError, match="NaN"):
        ais_log_likelihood(p, "vae", np.full((2, 10), np.nan), arch, np.random.default_rng(0))


def test_bad_initial_distribution_is_rejected():
    make, x, _, d = linear_gaussian(n=4)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shape"):
        ais(make(2), 4, d, rng, init_mean=np.zeros((3, d)), init_std=np.ones((3, d)))
    with pytest.raises(ValueError, match="> 0"):
        ais(make(2), 4, d, rng, init_mean=np.zeros((4, d)), init_std=np.zeros((4, d)))
    with pytest.raises(ValueError, match="both"):
        ais(make(2), 4, d, rng, init_mean=np.zeros((4, d)))
