"""The Biadversarial VAE (avb_minimal.bavae): eq. (6), (14), (19) of the Biadversarial VAE (Fickinger).

The authors' public code swaps the two adversary losses relative to eq. (6) and (14).
Three tests here fail if the two are swapped: the loss values against the equations
written out, their gradients, and (semantically) what each trained adversary converges
to on a model whose q(z|x), q(x|z) and p(x|z) are known in closed form: eq. (8) and (16)."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from scipy.special import logsumexp

from avb_minimal import bavae as BV
from avb_minimal import models as M
from avb_minimal.data import four_points
from avb_minimal.ops import bernoulli_loglik
from avb_minimal.optim import Adam, adam_init, adam_step
from avb_minimal.train import TrainConfig
from avb_minimal.trees import tree_flatten

ARCH = M.Arch(hidden=(8,), adv_hidden=(8,), adv_dim=8, eps_dim=3)


def _setup(rng, B=6, arch=ARCH):
    params = BV.init_bavae(rng, arch, np.float64)
    x = four_points(np.float64)[rng.integers(0, 4, B)]
    eps = rng.standard_normal((B, arch.eps_dim))
    zp = rng.standard_normal((B, arch.z_dim))
    u = rng.uniform(size=(B, arch.x_dim))
    return params, x, eps, zp, u


def _by_hand(params, x, eps, zp, u, arch=ARCH):
    """Eq. (6) and (14) written out, as the paper states them (to maximise)."""
    z = M.implicit_encoder(params["enc"], x, eps, arch.act)
    xm = BV.sample_decoder(M.decoder_logits(params["dec"], z, arch.act), u)
    D, Dd = params["adv"], params["adv_dec"]
    eq6 = anp.mean(1 - BV.adversary_D(D, x, z, arch)) - anp.mean(anp.exp(-BV.adversary_D(D, x, zp, arch)))
    eq14 = anp.mean(BV.adversary_D(Dd, x, z, arch)) - anp.mean(anp.exp(BV.adversary_D(Dd, xm, z, arch) - 1))
    # the public code's assignment: the latent adversary gets (14)'s form (real = prior, fake = q),
    # the image adversary gets (6)'s form (fake = generated, real = data)
    sw6 = anp.mean(BV.adversary_D(D, x, zp, arch)) - anp.mean(anp.exp(BV.adversary_D(D, x, z, arch) - 1))
    sw14 = anp.mean(1 - BV.adversary_D(Dd, xm, z, arch)) - anp.mean(anp.exp(-BV.adversary_D(Dd, x, z, arch)))
    return eq6, eq14, sw6, sw14


def test_adversary_losses_are_equations_6_and_14_not_their_swap(rng):
    params, x, eps, zp, u = _setup(rng)
    gen, adv, adv_dec = BV.bavae_losses(params, x, eps, zp, u, ARCH)
    eq6, eq14, sw6, sw14 = _by_hand(params, x, eps, zp, u)
    assert np.isclose(adv, -eq6, rtol=1e-12) and np.isclose(adv_dec, -eq14, rtol=1e-12)
    assert not np.isclose(adv, -sw6) and not np.isclose(adv_dec, -sw14)


def test_gradients_of_each_player_are_its_own_equation(rng):
    """One gradient of the summed losses gives: D_phi the gradient of -eq. (6), D_theta,phi the
    gradient of -eq. (14) (and not of the swapped forms), encoder and decoder that of `gen`."""
    params, x, eps, zp, u = _setup(rng)
    g = grad(lambda p: sum(BV.bavae_losses(p, x, eps, zp, u, ARCH)))(params)

    def hand(which, k):
        return grad(lambda a: -_by_hand(dict(params, **{which: a}), x, eps, zp, u)[k])(params[which])
    flat = lambda t: np.concatenate([np.ravel(a) for a in tree_flatten(t)])   # noqa: E731
    assert np.allclose(flat(g["adv"]), flat(hand("adv", 0)), rtol=1e-10, atol=1e-12)
    assert np.allclose(flat(g["adv_dec"]), flat(hand("adv_dec", 1)), rtol=1e-10, atol=1e-12)
    assert not np.allclose(flat(g["adv"]), flat(hand("adv", 2)), atol=1e-3)
    assert not np.allclose(flat(g["adv_dec"]), flat(hand("adv_dec", 3)), atol=1e-3)
    gg = grad(lambda p: BV.bavae_losses(dict(params, enc=p["enc"], dec=p["dec"]), x, eps, zp, u, ARCH)[0])(
        {"enc": params["enc"], "dec": params["dec"]})
    assert np.allclose(flat(g["enc"]), flat(gg["enc"]), rtol=1e-10, atol=1e-12)
    assert np.allclose(flat(g["dec"]), flat(gg["dec"]), rtol=1e-10, atol=1e-12)


def test_decoder_gradient_is_unbiased_score_function():
    """theta's gradient of E_{x' ~ p(x'|z)} exp(D(x', z) - 1) by the score function (with the
    leave-one-out baseline), averaged over a large batch, against the exact gradient by
    enumerating all 2^4 images x'."""
    rng = np.random.default_rng(3)
    params, x, eps, zp, u = _setup(rng, B=40000)
    allx = np.array([[(k >> d) & 1 for d in range(4)] for k in range(16)], np.float64)    # (16, 4)
    g_mc = grad(lambda d: BV.bavae_losses(dict(params, dec=d), x, eps, zp, u, ARCH)[0])(params["dec"])

    def exact(d):                                   # -mean_b sum_x' p(x'|z_b) exp(D(x', z_b) - 1)
        z_all = M.implicit_encoder(params["enc"], x, eps, ARCH.act)
        L = M.decoder_logits(d, z_all, ARCH.act)                                             # (B, 4)
        logp = anp.stack([bernoulli_loglik(np.repeat(xi[None], len(x), 0), L) for xi in allx])   # (16, B)
        Dm = anp.stack([BV.adversary_D(params["adv_dec"], np.repeat(xi[None], len(x), 0), z_all, ARCH)
                        for xi in allx])                                                 # (16, B)
        return -anp.mean(anp.sum(anp.exp(logp + Dm - 1), 0))
    g_ex = grad(exact)(params["dec"])
    a, b = np.concatenate([np.ravel(t) for t in tree_flatten(g_mc)]), np.concatenate(
        [np.ravel(t) for t in tree_flatten(g_ex)])
    assert np.linalg.norm(a - b) < 0.05 * np.linalg.norm(b), (np.linalg.norm(a - b), np.linalg.norm(b))


# ------------------------------------------------------------------ what the adversaries learn
MU = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64) * 0.8      # mean of q(z | x = e_i)
S = 0.6                                                                     # its standard deviation


def _known_model(arch):
    """A linear encoder z = MU[i] + S eps[:2] (q(z|x_i) = N(MU[i], S^2 I)) and a linear decoder
    logits_j(z) = 2 <MU[j]/|MU[j]|, z> - 2: every density in eq. (8) and (16) is known."""
    params = BV.init_bavae(np.random.default_rng(0), arch)                # float32
    W = np.zeros((arch.x_dim + arch.eps_dim, arch.z_dim), np.float32)
    W[:4], W[4], W[5] = MU, [S, 0], [0, S]
    params["enc"] = [(W, np.zeros(2, np.float32))]
    params["dec"] = [((2 * MU / np.linalg.norm(MU, axis=1, keepdims=True)).T.astype(np.float32),
                      np.full(4, -2.0, np.float32))]
    return params


def _log_q_z_given_x(z):                    # (n, 2) -> (4, n)
    return np.stack([-0.5 * np.sum((z - m) ** 2, 1) / S ** 2 - np.log(2 * np.pi * S ** 2) for m in MU])


@pytest.fixture(scope="module")
def trained_adversaries():
    """Both adversaries trained by the model's own losses (one summed gradient, as in
    `make_bavae_step`) with the encoder and decoder held fixed."""
    arch = M.Arch(hidden=(), adv_hidden=(32, 32), adv_dim=32, eps_dim=2)
    params = _known_model(arch)
    rng = np.random.default_rng(1)
    opt = Adam(3e-3, 0.5, 0.999)
    st = {k: adam_init(params[k]) for k in ("adv", "adv_dec")}
    g_fn = grad(lambda p, *a: sum(BV.bavae_losses(p, *a, arch, "all_pairs")))
    data = four_points()
    for it in range(400):                       # ~10 s on a loaded 2-core CPU
        x = data[rng.integers(0, 4, 256)]
        eps, zp, u = BV.sample_step_noise(rng, arch, 256)
        g = g_fn(params, x, eps, zp, u)
        lr = 3e-3 if it < 270 else 1e-3
        for k in ("adv", "adv_dec"):
            params[k], st[k] = adam_step(opt, params[k], g[k], st[k], lr)
    return arch, params


def _errors_per_point(adv, arch, seed, D_star):
    """Mean |D - D*| over 2000 samples z ~ q(z|x_i) for each of the 4 points.
    D_star(i, x, z) -> (2000,)."""
    rng = np.random.default_rng(seed)
    errs = []
    for i in range(4):
        z = MU[i] + S * rng.standard_normal((2000, 2))
        x = np.repeat(four_points(np.float64)[i:i + 1], 2000, 0)
        errs.append(np.mean(np.abs(BV.adversary_D(adv, x, z, arch) - D_star(i, x, z))))
    return errs


def test_encoder_adversary_learns_eq_8(trained_adversaries):
    """D_phi -> log p(z) - log q(z|x) (eq. 8).  The swapped loss ((14)'s form with real = prior,
    fake = q) would learn 1 + log p(z) - log q(z|x): an offset of 1, far outside the tolerance."""
    arch, params = trained_adversaries
    errs = _errors_per_point(params["adv"], arch, 5, lambda i, x, z: (-0.5 * np.sum(z ** 2, 1) - np.log(2 * np.pi))
                             - _log_q_z_given_x(z)[i])
    assert max(errs) < 0.45 and np.mean(errs) < 0.3, errs


def test_decoder_adversary_learns_eq_16(trained_adversaries):
    """D_theta,phi(x, z) -> 1 + log q(x|z) - log p_theta(x|z) on data pairs (eq. 16, joint pairs),
    q(x_i|z) = q(z|x_i) / sum_j q(z|x_j).  The swapped form would learn log(p_theta/q): the sign
    flips and the offset 1 goes."""
    arch, params = trained_adversaries

    def D_star(i, x, z):
        lq = _log_q_z_given_x(z)
        L = M.decoder_logits(params["dec"], z, arch.act)
        return 1 + (lq[i] - logsumexp(lq, axis=0)) - bernoulli_loglik(np.asarray(x, np.float64), L)
    errs = _errors_per_point(params["adv_dec"], arch, 6, D_star)
    assert max(errs) < 0.45 and np.mean(errs) < 0.3, errs


# ------------------------------------------------------------------ training loop
def test_train_resumes_exactly_and_rejects_bad_settings(tmp_path, monkeypatch):
    arch = M.Arch(hidden=(16,), adv_hidden=(16,), adv_dim=16, eps_dim=4)
    cfg = TrainConfig(iters=30, batch=32, log_every=10, checkpoint_every=20, negatives="all_pairs")
    p_full, info = BV.train_bavae(four_points(), arch, cfg, seed=2)
    assert len(info["history"]) == 3 and all(np.isfinite(h["kl_decoder"]) for h in info["history"])
    ck = str(tmp_path / "b.npz")
    BV.train_bavae(four_points(), arch, TrainConfig(**dict(cfg.__dict__, iters=20)), seed=2, checkpoint=ck)
    p_res, _ = BV.train_bavae(four_points(), arch, cfg, seed=2, checkpoint=ck)
    for a, b in zip(tree_flatten(p_full), tree_flatten(p_res)):
        assert np.array_equal(a, b)
    loaded = BV.load_bavae(ck, arch)
    for k in ("enc", "dec", "adv", "adv_dec"):
        assert all(np.array_equal(a, b) for a, b in zip(tree_flatten(loaded[k]), tree_flatten(p_res[k])))
    with pytest.raises(ValueError, match="adv_steps"):
        BV.train_bavae(four_points(), arch, TrainConfig(iters=2, adv_steps=2))
    with pytest.raises(ValueError, match="another architecture"):
        BV.train_bavae(four_points(), M.Arch(hidden=(8,), adv_hidden=(16,), adv_dim=16, eps_dim=4), cfg,
                       checkpoint=ck)
    with pytest.raises(ValueError, match="reconstruction='adversary'"):
        BV.train_bavae(four_points(), arch, cfg, checkpoint=ck, reconstruction="exact")
    monkeypatch.setattr(BV.O, "EXP_CAP", 20.0)           # trained with another cap: not resumed
    with pytest.raises(ValueError, match="EXP_CAP = 15.0"):
        BV.train_bavae(four_points(), arch, cfg, checkpoint=ck)


def test_mnist_shaped_data_trains(rng):
    """784-pixel binary rows (random here; the real loader is data.load_npz): a few finite steps."""
    arch = M.Arch(x_dim=784, z_dim=8, hidden=(16,), adv_hidden=(16,), adv_dim=16, eps_dim=4, adv_unary=True)
    x = (rng.uniform(size=(64, 784)) < 0.2).astype(np.float32)
    p, info = BV.train_bavae(x, arch, TrainConfig(iters=5, batch=16, log_every=5, negatives="all_pairs"))
    assert all(np.all(np.isfinite(a)) for a in tree_flatten(p))
    assert all(np.isfinite(h["kl_decoder"]) for h in info["history"])


def test_game_value_is_minus_elbo_plus_mutual_information(rng):
    """At both optimal adversaries, eq. (19)'s value is -ELBO - H(x) + I_q(x; z) (the encoder's
    mutual information counted once more than in the ELBO), and on the 4-point data with a
    4-state latent its minimum is the collapsed encoder, the ELBO's is the perfect one."""
    x = four_points(np.float64)
    for _ in range(5):
        A, L = rng.normal(0, 2, (4, 4)), rng.normal(0, 2, (4, 4))
        lq = A - np.log(np.sum(np.exp(A), 1, keepdims=True))
        g = BV.discrete_game(lq, L, x)
        assert np.isclose(g["v_encoder"] + g["v_decoder"],
                          -g["elbo"] - g["data_entropy"] + g["mutual_information"], rtol=1e-12)
    collapsed = BV.discrete_game(np.full((4, 4), -np.log(4)), np.full((4, 4), -np.log(3)), x)
    perfect = BV.discrete_game(np.where(np.eye(4) > 0, 0.0, -40.0), 40 * np.eye(4) - 20, x)
    val = lambda g: g["v_encoder"] + g["v_decoder"]            # noqa: E731
    assert np.isclose(val(collapsed), 4 * np.log(4) - 3 * np.log(3) - np.log(4))   # 0.863
    assert np.isclose(val(perfect), np.log(4), atol=1e-6)
    assert val(collapsed) < val(perfect) and collapsed["elbo"] < perfect["elbo"]


def test_table1_accepts_bavae_and_names_the_valid_models():
    import argparse

    from avb_minimal.__main__ import _table1_models
    from avb_minimal.experiments.table1 import TABLE1_KINDS, table1, table1_settings
    assert _table1_models("vae,avb,avb_ac,bavae") == ["vae", "avb", "avb_ac", "bavae"]
    assert "bavae" in TABLE1_KINDS and "bavae" in table1_settings(quick=True)[1]
    assert table1_settings()[1]["bavae"] == table1_settings()[1]["avb"]     # AVB's settings
    with pytest.raises(argparse.ArgumentTypeError, match="vae, avb, avb_ac, bavae"):
        _table1_models("vae,gan")
    with pytest.raises(ValueError, match="bavae"):
        table1(kinds=("gan",))


def test_training_goes_on_when_every_decoder_weight_underflows(monkeypatch):
    """On MNIST the decoder adversary soon puts D(x', z) below -100 on every model pair, so every
    float32 weight w = exp(D - 1) of the score-function gradient is 0: training must go on (the
    decoder's gradient from eq. 14 is then exactly zero) and report w_ess = 0, not NaN."""
    real = BV.adversary_D
    monkeypatch.setattr(BV, "adversary_D", lambda adv, x, z, arch: real(adv, x, z, arch) - 120.0)
    arch = M.Arch(x_dim=6, z_dim=2, hidden=(8,), adv_hidden=(8,), adv_dim=4, eps_dim=3)
    data = (np.random.default_rng(0).random((40, 6)) < 0.5).astype(np.float32)
    cfg = TrainConfig(iters=4, batch=10, log_every=1, checkpoint_every=4)
    params, info = BV.train_bavae(data, arch, cfg, seed=0)
    last = info["history"][-1]
    assert last["w_model"] == 0.0 and last["w_ess"] == 0.0
    d = BV.game_diagnostics(params, data, arch, np.random.default_rng(1), "pairs", batch=10, n_batches=2)
    assert d["grad_norm_decoder"] == 0.0 and d["grad_norm_encoder"] > 0
    assert d["D_model_median"] < -100 and 1 <= d["w_ess"] <= 10        # exact weights: finite, >= 1
    assert BV.effective_sample_size([0.0, 0.0]) == 0.0 and BV.effective_sample_size([1.0, 1.0, 0.0]) == 2.0


def test_mnist_names_and_reconstruction_modes_are_inverse():
    assert [BV.reconstruction_of(BV.mnist_name(r)) for r in BV.RECONSTRUCTION] == list(BV.RECONSTRUCTION)
    assert BV.mnist_name("adversary") == "bavae" and BV.reconstruction_of("bavae_exact") == "exact"
    with pytest.raises(ValueError, match="bavae, bavae_exact"):
        BV.reconstruction_of("avb")
