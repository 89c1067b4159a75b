"""Encoders, decoder and adversaries (avb_minimal.models): the architecture's checks, the
parameter shapes of each model kind, and each forward pass against the formula it implements,
written out by hand with plain NumPy."""
import numpy as np
import pytest
from scipy.stats import norm

from avb_minimal import models as M
from avb_minimal.nn import elu, mlp

ARCH = M.Arch(x_dim=5, z_dim=3, eps_dim=4, hidden=(7, 6), adv_hidden=(8,), adv_dim=6, n_basis=4,
              basis_eps_dim=2, basis_hidden=5)


def _params(kind, arch=ARCH, seed=0, dtype=np.float64):
    return M.init_params(np.random.default_rng(seed), kind, arch, dtype)


def test_arch_checks_its_fields_and_round_trips_through_a_dict():
    with pytest.raises(ValueError, match="Arch.z_dim must be a positive integer"):
        M.Arch(z_dim=0)
    with pytest.raises(ValueError, match="Arch.adversary must be one of"):
        M.Arch(adversary="mlp")
    with pytest.raises(ValueError, match="activation must be one of"):
        M.Arch(activation="gelu")
    arch = M.Arch(hidden=[3, 4], adv_unary=1)
    assert arch.hidden == (3, 4) and arch.adv_unary is True
    assert M.Arch.from_dict(arch.to_dict()) == arch
    for bad in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="Arch.ac_var_floor must be a positive number"):
            M.Arch(ac_var_floor=bad)
    old = {k: v for k, v in M.Arch(ac_var_floor=0.5).to_dict().items() if k != "ac_var_floor"}
    assert M.Arch.from_dict(old).ac_var_floor == M.AC_VAR_FLOOR      # a record older than the setting
    assert M.Arch(ac_var_floor=0.5).differences(old) == [("ac_var_floor", M.AC_VAR_FLOOR, 0.5)]
    assert M.Arch().differences(old) == []
    with pytest.raises(ValueError, match="its architecture record is not readable here"):
        M.Arch().differences(dict(old, wings=2))                    # a record newer than this code
    np.testing.assert_allclose(M.Arch(activation="tanh").act(np.ones(2)), np.tanh(np.ones(2)))
    assert M.Arch().act is elu


@pytest.mark.parametrize("kind", M.KINDS)
def test_parameter_shapes_of_each_kind(kind):
    p = _params(kind)
    a = ARCH
    assert [W.shape for W, _ in p["dec"]] == [(3, 7), (7, 6), (6, 5)]
    if kind == "vae":
        assert [W.shape for W, _ in p["enc"]] == [(5, 7), (7, 6), (6, 2 * 3)] and "adv" not in p
        return
    if kind == "avb":
        assert p["enc"][0][0].shape == (a.x_dim + a.eps_dim, 7) and p["enc"][-1][0].shape == (6, 3)
    else:
        assert p["enc"]["a"][-1][0].shape == (6, (a.n_basis + 1) * a.z_dim)
        assert p["enc"]["v"][0][0].shape == (a.n_basis, a.basis_eps_dim, a.basis_hidden)
        assert p["enc"]["v"][1][0].shape == (a.n_basis, a.basis_hidden, a.z_dim)
    assert p["adv"]["f"][-1][0].shape == (8, 6) and p["adv"]["g"][0][0].shape == (3, 8)
    with pytest.raises(ValueError, match="model kind must be one of"):
        M.init_params(np.random.default_rng(0), "gan", ARCH)


@pytest.mark.parametrize("kind, shape", [("vae", (9, 3)), ("avb", (9, 4)), ("avb_ac", (9, 4, 2))])
def test_noise_shapes_and_dtype(kind, shape):
    eps = M.sample_noise(np.random.default_rng(0), kind, ARCH, 9)
    assert eps.shape == shape and eps.dtype == np.float32


def test_gaussian_encoder_splits_mean_and_log_variance(rng):
    p = _params("vae")
    x = rng.random((4, 5))
    mean, log_var = M.gaussian_encoder(p["enc"], x, ARCH.act)
    out = mlp(p["enc"], x, elu)
    np.testing.assert_array_equal(mean, out[:, :3])
    np.testing.assert_array_equal(log_var, out[:, 3:])


def test_implicit_encoder_takes_the_noise_as_an_input(rng):
    p = _params("avb")
    x = rng.random((4, 5))
    eps = rng.standard_normal((4, 4))
    z = M.implicit_encoder(p["enc"], x, eps, ARCH.act)
    np.testing.assert_allclose(z, mlp(p["enc"], np.concatenate([x, eps], 1), elu), rtol=1e-12)
    assert not np.allclose(z, M.implicit_encoder(p["enc"], x, eps + 1.0, ARCH.act))


def test_noise_basis_encoder_is_eq_III_1_with_moments_III_2_and_III_3(rng):
    """z = z0(x) + sum_i a_i(x) * v_i(eps_i); mean and var from the batch moments of v_i."""
    p = _params("avb_ac")
    x = rng.random((6, 5))
    eps = rng.standard_normal((6, 4, 2))
    z, mean, var = M.noise_basis_encoder(p["enc"], x, eps, ARCH.act)
    out = mlp(p["enc"]["a"], x, elu)
    z0, a = out[:, :3], out[:, 3:].reshape(6, 4, 3)
    (W1, b1), (W2, b2) = p["enc"]["v"]
    v = np.stack([elu(eps[:, i] @ W1[i] + b1[i, 0]) @ W2[i] + b2[i, 0] for i in range(4)], 1)   # (B, m, dz)
    np.testing.assert_allclose(z, z0 + np.sum(a * v, 1), rtol=1e-10)                          # eq. (III.1)
    np.testing.assert_allclose(mean, z0 + np.sum(a * v.mean(0), 1), rtol=1e-10)               # eq. (III.2)
    np.testing.assert_allclose(var, np.sum(a ** 2 * v.var(0), 1), rtol=1e-10)                 # eq. (III.3)


def test_the_moments_match_monte_carlo_over_many_noise_draws(rng):
    """With many draws of eps for ONE x, the sample mean / variance of z are eq. (III.2) / (III.3)."""
    p = _params("avb_ac")
    x = np.repeat(rng.random((1, 5)), 20000, 0)
    z, mean, var = M.noise_basis_encoder(p["enc"], x, rng.standard_normal((20000, 4, 2)), ARCH.act)
    np.testing.assert_allclose(z.mean(0), mean[0], atol=4 * np.sqrt(var[0].max() / 20000))
    np.testing.assert_allclose(z.var(0), var[0], rtol=0.05)


def test_normalise_and_log_r_alpha_are_a_change_of_variables(rng):
    z, mean, var = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.random((5, 3)) + 0.1
    zb = M.normalise(z, mean, var)                      # its values: tests/test_objectives.py (task 4.1)
    log_n = norm.logpdf(z, mean, np.sqrt(var + M.AC_VAR_FLOOR)).sum(1)                # log N(z; mean, sd^2)
    np.testing.assert_allclose(M.log_r_alpha(zb, var), log_n, rtol=1e-12)
    for floor in (1e-2, 0.5):                          # Arch.ac_var_floor: r_alpha = N(mean, var + floor)
        zb = M.normalise(z, mean, var, floor)
        np.testing.assert_allclose(zb * np.sqrt(var + floor), z - mean, rtol=1e-12)
        np.testing.assert_allclose(M.log_r_alpha(zb, var, floor),
                                   norm.logpdf(z, mean, np.sqrt(var + floor)).sum(1), rtol=1e-12)


def test_mc_moments_of_the_implicit_encoder(rng):
    p = _params("avb")
    x = rng.random((3, 5))
    eps_k = rng.standard_normal((50, 3, 4))
    mean, var = M.mc_moments(p["enc"], x, eps_k, ARCH.act)
    zk = np.stack([M.implicit_encoder(p["enc"], x, e, ARCH.act) for e in eps_k])
    np.testing.assert_allclose(mean, zk.mean(0), rtol=1e-10)
    np.testing.assert_allclose(var, zk.var(0), rtol=1e-10)


def test_decoder_gives_one_logit_per_pixel(rng):
    p = _params("vae")
    z = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(M.decoder_logits(p["dec"], z, ARCH.act), mlp(p["dec"], z, elu))


def test_inner_product_adversary_with_the_folded_prior(rng):
    """T(x, z) = <f(x), g(z)> + ||z||^2 / 2; the all-pairs logits hold the matched rows on their diagonal."""
    adv = _params("avb")["adv"]
    x, z = rng.random((4, 5)), rng.standard_normal((4, 3))
    f, g = mlp(adv["f"], x, elu), mlp(adv["g"], z, elu)
    T = M.adversary(adv, x, z, ARCH.act)
    np.testing.assert_allclose(T, np.sum(f * g, 1) + 0.5 * np.sum(z * z, 1), rtol=1e-12)
    T_all = M.adversary_all_pairs(adv, x, z, ARCH.act)
    assert T_all.shape == (4, 4)
    np.testing.assert_allclose(np.diag(T_all), T, rtol=1e-12)
    np.testing.assert_allclose(T_all, f @ g.T + 0.5 * np.sum(z * z, 1)[None], rtol=1e-12)


def test_residual_adversary_and_its_all_pairs_error(rng):
    arch = M.Arch(x_dim=5, z_dim=3, adversary="residual", res_width=8, res_blocks=2)
    adv = M.init_adversary(np.random.default_rng(0), arch, np.float64)
    x, z = rng.random((4, 5)), rng.standard_normal((4, 3))
    T = M.adversary(adv, x, z, arch.act)
    assert T.shape == (4,)
    # the blocks' inner output weights start at zero: at initialisation T is the in -> out map plus the prior
    h = mlp(adv["net"]["inp"], np.concatenate([x, z], 1), elu)
    np.testing.assert_allclose(T, mlp(adv["net"]["out"], elu(h), elu)[:, 0] + M.fold_prior(z), rtol=1e-12)
    with pytest.raises(ValueError, match="all-pairs logits need the inner-product adversary"):
        M.adversary_all_pairs(adv, x, z, arch.act)
