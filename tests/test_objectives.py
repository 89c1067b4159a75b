"""Algorithm 1 / 2's losses: float64 gradient checks, and the claim that one gradient
of (gen_loss + adv_loss) is exactly the algorithm's three gradients."""
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from reference_values import expect

from avb_minimal import models as M
from avb_minimal import objectives as O
from avb_minimal.distributions import log_std_normal
from avb_minimal.ops import bernoulli_loglik
from avb_minimal.trees import tree_flatten

ARCHS = {"inner": M.Arch(hidden=(6,), adv_hidden=(5,), adv_dim=4, eps_dim=3, n_basis=3,
                         basis_hidden=4, basis_eps_dim=2),
         "residual": M.Arch(hidden=(6,), adversary="residual", res_width=5, res_blocks=2, eps_dim=3,
                            n_basis=3, basis_hidden=4, basis_eps_dim=2)}


def _setup(rng, kind, arch, B=7):
    params = M.init_params(rng, kind, arch, np.float64)
    # make zero-initialised residual blocks non-trivial so every weight gets a gradient
    params = {k: v for k, v in params.items()}
    x = np.eye(4)[rng.integers(0, 4, B)]
    noise = M.sample_noise(rng, kind, arch, B, np.float64)
    z_neg = rng.standard_normal((B, arch.z_dim))
    return params, x, noise, z_neg


@pytest.mark.task2_1
def test_vae_elbo_is_loglik_minus_kl_at_one_reparameterised_sample(rng):
    """Task 2.1, eq. (2.1) at one reparameterised sample, against the float64 reference."""
    arch = ARCHS["inner"]
    params, x, _, _ = _setup(rng, "vae", arch)
    eps = rng.standard_normal((x.shape[0], arch.z_dim))
    elbo = O.vae_elbo(params, x, eps, arch)
    ref = expect("vae_elbo", params=params, x=x, eps=eps, arch=arch)
    assert elbo.shape == (x.shape[0],) and np.allclose(elbo, ref["elbo"])
    assert np.isclose(O.vae_loss(params, x, eps, arch), ref["loss"])


@pytest.mark.task2_1
def test_vae_loss_grads(rng):
    arch = ARCHS["inner"]
    params, x, _, _ = _setup(rng, "vae", arch)
    eps = rng.standard_normal((x.shape[0], arch.z_dim))
    check_grads(lambda p: O.vae_loss(p, x, eps, arch), modes=["rev"], order=1)(params)


@pytest.mark.task3_1
def test_adversary_loss_sign_and_grads(rng):
    T_pos, T_neg = rng.standard_normal(5), rng.standard_normal((5, 3))
    check_grads(O.adversary_loss, modes=["rev"], order=1)(T_pos, T_neg)
    # a confident, correct adversary (large T on q-samples, small on p-samples) has low loss
    assert O.adversary_loss(np.full(3, 10.0), np.full(3, -10.0)) < 1e-3
    assert O.adversary_loss(np.full(3, -10.0), np.full(3, 10.0)) > 19


@pytest.mark.task3_2
def test_generator_objective_is_the_batch_mean_of_minus_T_plus_loglik(rng):
    """Task 3.2, eq. (3.7): E[-T(x, z) + log p(x|z)], to maximise."""
    T, ll = rng.standard_normal(7), rng.standard_normal(7) - 5
    ref = expect("generator_objective", T=T, ll=ll)
    assert np.isclose(O.generator_objective(T, ll), ref["value"])
    assert O.generator_objective(T + 1, ll) < O.generator_objective(T, ll)   # the sign of T
    check_grads(O.generator_objective, modes=["rev"], order=1)(T, ll)
    assert np.allclose(grad(O.generator_objective)(T, ll), ref["grad_T"])


@pytest.mark.task4_1
def test_adaptive_contrast_normalise_and_eq_4_2(rng):
    """Task 4.1: z_bar = (z - mu) / sqrt(var + 1e-4) (Algorithm 2, line 9) and eq. (4.2),
    E[-T(x, z_bar) + ||z_bar||^2 / 2 + log p(x|z) + log p(z)]."""
    z, mean, var = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.random((6, 3)) + 0.1
    T, ll, lp = rng.standard_normal(6), rng.standard_normal(6) - 4, rng.standard_normal(6) - 2
    assert M.AC_VAR_FLOOR == 1e-4
    ref = expect("adaptive_contrast", z=z, mean=mean, var=var, floor=1e-4, T=T, ll=ll, lp=lp)
    z_bar = M.normalise(z, mean, var)
    assert np.allclose(z_bar, ref["z_bar"])
    assert np.allclose(M.normalise(z, mean, np.zeros_like(var)), ref["z_bar_no_var"])   # the floor
    assert np.allclose(grad(lambda z: np.sum(M.normalise(z, mean, var)))(z), ref["grad_z"])
    assert np.isclose(O.ac_generator_objective(T, z_bar, ll, lp), ref["objective"])
    check_grads(O.ac_generator_objective, modes=["rev"], order=1)(T, z_bar, ll, lp)
    assert np.allclose(grad(O.ac_generator_objective, 1)(T, z_bar, ll, lp), ref["grad_z_bar"])


@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
@pytest.mark.parametrize("adv_name", ["inner", "residual"])
@pytest.mark.parametrize("negatives", ["pairs", "all_pairs"])
def test_one_gradient_gives_algorithm_gradients(rng, kind, adv_name, negatives):
    arch = ARCHS[adv_name]
    params, x, noise, z_neg = _setup(rng, kind, arch)
    if adv_name == "residual" and negatives == "all_pairs":
        with pytest.raises(ValueError, match="all_pairs' needs the inner-product adversary"):
            O.avb_losses(params, kind, x, noise, z_neg, arch, negatives)
        return
    total = lambda p: sum(O.avb_losses(p, kind, x, noise, z_neg, arch, negatives))  # noqa: E731
    g = grad(total)(params)

    # independent formulation: each player's objective with the other's values frozen
    z, mean, var = O.encode(params, kind, x, noise, arch)
    z_adv = z if kind == "avb" else M.normalise(z, mean, var)

    def adv_only(adv):
        T_pos = M.adversary(adv, x, z_adv, arch.act)
        T_neg = (M.adversary_all_pairs(adv, x, z_neg, arch.act) if negatives == "all_pairs"
                 else M.adversary(adv, x, z_neg, arch.act))
        return O.adversary_loss(T_pos, T_neg)

    def gen_only(p):
        zz, _, _ = O.encode(p, kind, x, noise, arch)
        ll = bernoulli_loglik(x, M.decoder_logits(p["dec"], zz, arch.act))
        if kind == "avb":
            return -O.generator_objective(M.adversary(params["adv"], x, zz, arch.act), ll)
        zb = M.normalise(zz, mean, var)                          # mean, var: the outer encode's, constants
        return -O.ac_generator_objective(M.adversary(params["adv"], x, zb, arch.act), zb, ll, log_std_normal(zz))

    g_adv = grad(adv_only)(params["adv"])
    g_gen = grad(gen_only)({"enc": params["enc"], "dec": params["dec"]})
    for a, b in zip(tree_flatten(g["adv"]), tree_flatten(g_adv)):
        assert np.allclose(a, b, atol=1e-10)
    for a, b in zip(tree_flatten({"enc": g["enc"], "dec": g["dec"]}), tree_flatten(g_gen)):
        assert np.allclose(a, b, atol=1e-10)
    # each loss alone passes a float64 gradient check in its own player's parameters
    check_grads(lambda adv: O.avb_losses(dict(params, adv=adv), kind, x, noise, z_neg, arch, negatives)[1],
                modes=["rev"], order=1)(params["adv"])
    check_grads(lambda dec: O.avb_losses(dict(params, dec=dec), kind, x, noise, z_neg, arch, negatives)[0],
                modes=["rev"], order=1)(params["dec"])


def test_adversary_only_loss_matches_avb_losses(rng):
    arch = ARCHS["inner"]
    params, x, noise, z_neg = _setup(rng, "avb", arch)
    a = O.adversary_only_loss(params, "avb", x, noise, z_neg, arch, "all_pairs")
    b = O.avb_losses(params, "avb", x, noise, z_neg, arch, "all_pairs")[1]
    assert np.isclose(a, b)


def test_noise_basis_moments_match_sampled_moments(rng):
    """eq. (III.2)-(III.3) against the mean and variance of many samples for one x."""
    arch = M.Arch(hidden=(8,), n_basis=5, basis_eps_dim=2, basis_hidden=6)
    params = M.init_params(rng, "avb_ac", arch, np.float64)
    n = 100000
    x = np.repeat(np.eye(4)[[2]], n, axis=0)
    z, mean, var = M.noise_basis_encoder(params["enc"], x, M.sample_noise(rng, "avb_ac", arch, n, np.float64), arch.act)
    assert np.allclose(mean[0], z.mean(0), atol=1e-10)   # same samples: exact identity
    assert np.allclose(var[0], z.var(0), rtol=0.05)      # independent bases: Var z = sum a^2 Var v


def test_unknown_negatives_and_kind():
    with pytest.raises(ValueError, match="negatives must be one of"):
        O.check_negatives("some")
    with pytest.raises(ValueError, match="model kind must be one of"):
        M.check_kind("gan")


def test_fold_prior_means_T_net_learns_log_q():
    z = np.array([[1.0, 2.0]])
    assert np.isclose(M.fold_prior(z)[0], -log_std_normal(z)[0] - np.log(2 * np.pi))
