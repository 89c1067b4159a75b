"""Section 6 objectives (avb_minimal.related): the optima of eq. (6.3)-(6.4) and (6.10),
the convex conjugate of eq. (6.8), and gradients.  Expectations over discrete spaces are
exact (samples in exact proportions), so each optimum is checked to solver precision."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from scipy.optimize import minimize, minimize_scalar

from avb_minimal import objectives as O
from avb_minimal import related as R
from avb_minimal.models import fold_prior


def _minimise(loss, n):
    return minimize(loss, np.zeros(n), jac=grad(loss), method="BFGS", options={"gtol": 1e-11}).x


def test_fgan_pointwise_optimum_is_one_plus_log_ratio():
    """eq. (6.10) on a discrete latent space: the minimiser over a free table T[k] is
    1 + log q - log p, and minus the loss there is KL(q, p) (eq. 6.8)."""
    q = np.array([1, 2, 3, 4]) / 10
    p = np.array([4, 3, 2, 1]) / 10
    zq = np.repeat(np.arange(4), [1, 2, 3, 4])
    zp = np.repeat(np.arange(4), [4, 3, 2, 1])
    loss = lambda T: O.fgan_discriminator_loss(T[zq], T[zp])  # noqa: E731
    T = _minimise(loss, 4)
    assert np.allclose(T, 1 + np.log(q / p), atol=1e-5)
    assert np.allclose(T, R.fgan_optimum(np.log(q), np.log(p)), atol=1e-5)
    kl = float(np.sum(q * np.log(q / p)))
    assert np.isclose(R.fgan_kl_estimate(T[zq], T[zp]), kl, atol=1e-8)
    # hand-computed: KL = 0.1 ln .25 + 0.2 ln(2/3) + 0.3 ln 1.5 + 0.4 ln 4
    assert np.isclose(kl, 0.1 * np.log(0.25) + 0.2 * np.log(2 / 3) + 0.3 * np.log(1.5) + 0.4 * np.log(4))


def test_fgan_estimate_is_a_lower_bound_for_any_T(rng):
    """eq. (6.7): E_q T - E_p f*(T) <= KL(q, p) for every T (exact expectations)."""
    q = np.array([1, 2, 3, 4]) / 10
    p = np.array([4, 3, 2, 1]) / 10
    kl = float(np.sum(q * np.log(q / p)))
    for _ in range(200):
        T = rng.normal(0, 2, 4)
        assert np.sum(q * T) - np.sum(p * np.exp(T - 1)) <= kl + 1e-12


def test_conjugate_of_t_log_t():
    """f*(xi) = sup_t xi t - t log t = exp(xi - 1), the conjugate used in eq. (6.8)."""
    for xi in (-2.0, -0.3, 0.0, 0.7, 1.5):
        res = minimize_scalar(lambda t: -(xi * t - R.f_reverse_kl(t)), bounds=(1e-9, 50), method="bounded",
                              options={"xatol": 1e-12})
        assert np.isclose(-res.fun, R.f_star_reverse_kl(xi), rtol=1e-7)
        assert np.isclose(res.x, np.exp(xi - 1), rtol=1e-4)    # the sup is attained at t = e^(xi - 1)
    assert R.f_reverse_kl(1.0) == 0.0                          # f(1) = 0 (eq. 6.6)


def test_fgan_and_gan_optima_differ_by_one():
    """Prop. 1's T* = log q/p for eq. (3.3) and T* = 1 + log q/p for eq. (6.10)."""
    from avb_minimal.objectives import adversary_loss
    q = np.array([0.2, 0.5, 0.3])
    p = np.array([0.5, 0.3, 0.2])
    zq = np.repeat(np.arange(3), [2, 5, 3])
    zp = np.repeat(np.arange(3), [5, 3, 2])
    T_gan = _minimise(lambda T: adversary_loss(T[zq], T[zp]), 3)
    T_f = _minimise(lambda T: O.fgan_discriminator_loss(T[zq], T[zp]), 3)
    assert np.allclose(T_gan, np.log(q / p), atol=1e-5)
    assert np.allclose(R.gan_to_fgan(T_gan), T_f, atol=1e-5)


def test_aae_optimum_is_the_aggregated_posterior():
    """eq. (6.3)-(6.4) on a discrete (x, z) space: an adversary T(z) without x, trained on
    pairs (x, z ~ q(z|x)) vs (x, z ~ p(z)), recovers log q(z) - log p(z) for the aggregated
    q(z) = sum_x p_D(x) q(z|x), *not* log q(z|x) - log p(z)."""
    # two data points, three latent states; q(z|x) in tenths, p_D uniform
    qzx = np.array([[6, 3, 1], [1, 3, 6]]) / 10
    p = np.array([3, 4, 3]) / 10
    zq = np.concatenate([np.repeat(np.arange(3), (10 * qzx[i]).astype(int)) for i in range(2)])
    zp = np.concatenate([np.repeat(np.arange(3), (10 * p).astype(int)) for _ in range(2)])
    T = _minimise(lambda T: R.aae_adversary_loss(T[zq], T[zp]), 3)
    q_agg = qzx.mean(0)                                                 # (0.35, 0.3, 0.35)
    assert np.allclose(T, np.log(q_agg / p), atol=1e-5)
    assert np.allclose(T, R.aae_optimum(np.log(qzx), np.log(p)), atol=1e-5)
    # the per-x optimum of AVB is different from what T(z) can represent
    assert np.max(np.abs(np.log(qzx[0] / p) - T)) > 0.5


def test_log_aggregate_posterior_weights_and_errors():
    L = np.log(np.array([[0.5, 0.5], [0.1, 0.9]]))
    assert np.allclose(np.exp(R.log_aggregate_posterior(L)), [0.3, 0.7])
    assert np.allclose(np.exp(R.log_aggregate_posterior(L, np.log([0.25, 0.75]))), [0.2, 0.8])
    with pytest.raises(ValueError, match="shape"):
        R.log_aggregate_posterior(np.zeros(3))
    with pytest.raises(ValueError, match="log_pd"):
        R.log_aggregate_posterior(L, np.zeros(3))


def test_z_adversary_shapes_fold_and_gradients(rng):
    adv = R.init_z_adversary(rng, 2, (7, 5), np.float64)
    z = rng.standard_normal((9, 2))
    T = R.z_adversary(adv, z)
    assert T.shape == (9,)
    assert np.allclose(T - R.z_adversary(adv, z, fold=False), fold_prior(z))
    zp = rng.standard_normal((9, 2))
    check_grads(lambda a: R.aae_adversary_loss(R.z_adversary(a, z), R.z_adversary(a, zp)),
                modes=["rev"], order=1)(adv)
    check_grads(lambda Tp, Tn: O.fgan_discriminator_loss(Tp, Tn), modes=["rev"], order=1)(
        rng.standard_normal(6), rng.standard_normal((6, 4)))


def test_fgan_loss_gradient_by_hand():
    """d/dT_pos = -1/B, d/dT_neg = exp(T_neg - 1)/numel: the hand-computed gradient of eq. (6.10)."""
    Tp, Tn = np.array([0.3, -1.0]), np.array([[0.0, 1.0, 2.0]])
    gp = grad(lambda a: O.fgan_discriminator_loss(a, Tn))(Tp)
    gn = grad(lambda b: O.fgan_discriminator_loss(Tp, b))(Tn)
    assert np.allclose(gp, [-0.5, -0.5])
    assert np.allclose(gn, anp.exp(Tn - 1) / 3)
