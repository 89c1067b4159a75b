"""The adversary-objective family (avb_minimal.objectives.OBJECTIVES, issue 7).

For each member: the closed-form optimum T* and the divergence its optimal value estimates,
checked (1) exactly on small discrete distributions (samples in exact proportions, a free
table T minimised to solver precision) and (2) on 1-d Gaussians, where T is *learned* from
samples in a family that contains T* (quadratic features: every log ratio of two Gaussians
is quadratic) and compared with T* over the bulk of the support."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from reference_values import expect
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.stats import norm

from avb_minimal import objectives as O

NAMES = ("logistic", "fgan_reverse_kl", "bavae_encoder", "bavae_decoder", "tutorial", "tutorial_corrected")
P = np.array([1, 2, 3, 4]) / 10                     # "positive" distribution (q)
Q = np.array([4, 3, 2, 1]) / 10                     # "negative" distribution (p)
ZP = np.repeat(np.arange(4), [1, 2, 3, 4])          # samples of P in exact proportions
ZQ = np.repeat(np.arange(4), [4, 3, 2, 1])


def _minimise(loss, n):
    return minimize(loss, np.zeros(n), jac=grad(loss), method="BFGS", options={"gtol": 1e-11}).x


def _discrete_divergence(name, p, q):
    kl = float(np.sum(p * np.log(p / q)))
    m = 0.5 * (p + q)
    js = 0.5 * float(np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m)))
    return {"logistic": js, "tutorial": None}.get(name, kl)


def test_registry_holds_the_family_and_rejects_unknown_names():
    assert tuple(O.OBJECTIVES) == NAMES
    for name in NAMES:
        assert O.get_objective(name).name == name
    with pytest.raises(ValueError) as e:
        O.get_objective("wasserstein")
    for name in NAMES:                              # the message lists every valid name
        assert name in str(e.value)
    assert "wasserstein" in str(e.value)
    # the earlier public names keep working and are the family's functions
    assert O.get_objective("logistic").loss is O.adversary_loss


@pytest.mark.parametrize("name", NAMES)
def test_discrete_optimum_and_value_are_the_closed_forms(name):
    """Minimise each loss over a free table T[k] with exact expectations: the minimiser is
    the stated T*(log P, log Q), and the loss there gives the stated divergence."""
    obj = O.get_objective(name)
    loss = lambda T: obj.loss(T[ZP], T[ZQ])         # noqa: E731
    T = _minimise(loss, 4)
    T_star = obj.optimum(np.log(P), np.log(Q))
    assert np.allclose(T, T_star, atol=1e-5), (name, T, T_star)
    div = _discrete_divergence(name, P, Q)
    if obj.from_value is None:
        assert div is None and np.isclose(loss(T), 1.0)
    else:
        assert np.isclose(obj.from_value(loss(T)), div, atol=1e-9), name


def test_tutorial_optimum_is_zero_whatever_q_is():
    """Seed 003's E_q[exp(T) - T]: T* = 0 for three very different q (and any p), its
    value 1 every time; the corrected form recovers log q - log p for each."""
    for counts in ([1, 2, 3, 4], [7, 1, 1, 1], [1, 1, 1, 7]):
        zq = np.repeat(np.arange(4), counts)
        q = np.array(counts) / 10
        T = _minimise(lambda T: O.tutorial_critic_loss(T[zq], T[ZQ]), 4)
        assert np.allclose(T, 0, atol=1e-6)
        assert np.isclose(O.tutorial_critic_loss(T[zq]), 1.0)
        Tc = _minimise(lambda T: O.tutorial_corrected_loss(T[zq], T[ZQ]), 4)
        assert np.allclose(Tc, np.log(q) - np.log(Q), atol=1e-5)
    # the tutorial's claim T* = log q - 1 is false: it would differ between the q's
    assert not np.allclose(0.0, np.log(np.array([7, 1, 1, 1]) / 10) - 1)


def test_bavae_optima_are_the_papers_and_differ_from_their_swap():
    """Eq. (8): the encoder adversary's optimum is log p - log q (minus AVB's); eq. (16): the
    decoder adversary's is 1 + log P - log Q.  Swapping the two losses (as the authors'
    public code does) moves both optima and both divergences: KL(P, Q) becomes KL(Q, P)."""
    enc, dec = O.get_objective("bavae_encoder"), O.get_objective("bavae_decoder")
    D_enc = _minimise(lambda D: enc.loss(D[ZP], D[ZQ]), 4)
    D_dec = _minimise(lambda D: dec.loss(D[ZP], D[ZQ]), 4)
    assert np.allclose(D_enc, np.log(Q / P), atol=1e-5)
    assert np.allclose(D_dec, 1 + np.log(P / Q), atol=1e-5)
    # the swap: eq. (14)'s loss on the encoder adversary's (real = prior, fake = q) pairs
    D_sw = _minimise(lambda D: dec.loss(D[ZQ], D[ZP]), 4)
    assert np.allclose(D_sw, 1 + np.log(Q / P), atol=1e-5)
    assert np.max(np.abs(D_sw - D_enc)) > 0.9
    kl_pq, kl_qp = np.sum(P * np.log(P / Q)), np.sum(Q * np.log(Q / P))
    assert np.isclose(-enc.loss(D_enc[ZP], D_enc[ZQ]), kl_pq)
    assert np.isclose(-dec.loss(D_sw[ZQ], D_sw[ZP]), kl_qp)


def test_losses_are_the_written_formulas(rng):
    """Each loss at random (T_pos, T_neg), rows and all pairs, against its formula written out."""
    tp, tn = rng.normal(size=7), rng.normal(size=(7, 5))
    exp, mean = np.exp, np.mean
    written = {"logistic": expect("adversary_loss", T_pos=tp, T_neg=tn)["loss"],        # -(3.3): task 3.1
               "fgan_reverse_kl": mean(exp(tn - 1)) - mean(tp),                          # (6.10)
               "bavae_encoder": -(mean(1 - tp) - mean(exp(-tn))),                         # -(6)
               "bavae_decoder": -(mean(tp) - mean(exp(tn - 1))),                          # -(14)
               "tutorial": mean(exp(tp) - tp),
               "tutorial_corrected": mean(exp(tn)) - mean(tp)}
    for name in NAMES:
        assert np.isclose(O.get_objective(name).loss(tp, tn), written[name]), name
        check_grads(lambda a, b, name=name: O.get_objective(name).loss(a, b), modes=["rev"], order=1)(tp, tn)


# ------------------------------------------------------------------ Gaussians, learned T
MU_Q, S_Q = 0.5, 0.7                                # q = N(0.5, 0.7^2);  p = N(0, 1)


def _features(z):
    return anp.stack([anp.ones_like(z), z, z * z], 1)      # (n, 3): T is quadratic in z


@pytest.fixture(scope="module")
def gaussian_fits():
    """T learned from 100k samples of q and of p for each objective (seeded, deterministic)."""
    r = np.random.default_rng(7)
    zq, zp = MU_Q + S_Q * r.standard_normal(100_000), r.standard_normal(100_000)
    Fq, Fp = _features(zq), _features(zp)
    fits = {}
    for name in NAMES:
        loss_fn = O.get_objective(name).loss
        loss = lambda w, loss_fn=loss_fn: loss_fn(Fq @ w, Fp @ w)      # noqa: E731
        w = minimize(loss, np.zeros(3), jac=grad(loss), method="BFGS", options={"gtol": 1e-10}).x
        fits[name] = (w, float(loss(w)))
    return fits


def _bulk():
    """The central 95% of q and of p together, as a fine grid."""
    lo = min(norm.ppf(0.025), norm.ppf(0.025, MU_Q, S_Q))
    hi = max(norm.ppf(0.975), norm.ppf(0.975, MU_Q, S_Q))
    return np.linspace(lo, hi, 401)


@pytest.mark.parametrize("name", NAMES)
def test_learned_T_matches_the_closed_form_on_gaussians(name, gaussian_fits):
    """Target of issue 7: mean |T - T*| < 0.05 over the bulk of the support."""
    obj = O.get_objective(name)
    w, _ = gaussian_fits[name]
    z = _bulk()
    T = _features(z) @ w
    T_star = obj.optimum(norm.logpdf(z, MU_Q, S_Q), norm.logpdf(z))
    mae = float(np.mean(np.abs(T - T_star)))
    assert mae < 0.05, (name, mae)


def test_optimal_values_estimate_the_stated_divergences(gaussian_fits):
    """KL(q, p) in closed form; JS by quadrature; the tutorial's value is 1 and says nothing."""
    kl = 0.5 * (S_Q ** 2 + MU_Q ** 2 - 1 - np.log(S_Q ** 2))
    lq = lambda z: norm.logpdf(z, MU_Q, S_Q)        # noqa: E731
    lp = norm.logpdf
    lm = lambda z: np.logaddexp(lq(z), lp(z)) - np.log(2)    # noqa: E731
    js = 0.5 * (quad(lambda z: np.exp(lq(z)) * (lq(z) - lm(z)), -12, 12)[0]
                + quad(lambda z: np.exp(lp(z)) * (lp(z) - lm(z)), -12, 12)[0])
    truth = {"logistic": js, "fgan_reverse_kl": kl, "bavae_encoder": kl, "bavae_decoder": kl,
             "tutorial_corrected": kl}
    for name, div in truth.items():
        est = O.get_objective(name).from_value(gaussian_fits[name][1])
        assert abs(est - div) < 0.02, (name, est, div)
    assert abs(gaussian_fits["tutorial"][1] - 1.0) < 0.01
    assert O.get_objective("tutorial").from_value is None


def test_exp_linear_with_an_infinite_cap_is_the_papers_exp(monkeypatch):
    from autograd import elementwise_grad
    monkeypatch.setattr(O, "EXP_CAP", np.inf)
    d = np.array([-3.0, 20.0, 100.0])
    np.testing.assert_allclose(O.exp_linear(d), np.exp(d), rtol=1e-12)
    np.testing.assert_allclose(elementwise_grad(O.exp_linear)(d), np.exp(d), rtol=1e-12)


def test_exp_linear_is_exp_below_the_cap_and_its_tangent_above():
    """The BAVAE losses' exp: exact up to EXP_CAP, then the tangent line (C^1, convex), so
    an adversary's value of 100 on a negative sample gives a finite loss and gradient."""
    from autograd import elementwise_grad
    d = np.array([-50.0, 0.0, 3.0, O.EXP_CAP, O.EXP_CAP + 1.0, 100.0, 1e4])
    f, g = O.exp_linear(d), elementwise_grad(O.exp_linear)(d)
    e = np.exp(O.EXP_CAP)
    np.testing.assert_allclose(f[:4], np.exp(d[:4]), rtol=1e-12)
    np.testing.assert_allclose(f[4:], e * (1 + d[4:] - O.EXP_CAP), rtol=1e-12)
    np.testing.assert_allclose(g, np.minimum(np.exp(np.minimum(d, O.EXP_CAP)), e), rtol=1e-12)
    assert np.all(np.isfinite(O.bavae_decoder_loss(np.zeros(3), np.array([0.0, 200.0, 1e5], np.float32))))
    assert np.all(np.isfinite(O.bavae_encoder_loss(np.zeros(3), np.array([0.0, -200.0, -1e5], np.float32))))
