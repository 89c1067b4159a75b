"""Bad input at the ops' boundary, the fused eq. (3.3) op, and the NumPy fallbacks'
stability (the kernel paths are in test_kernels_emulated.py and test_gpu.py)."""
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from avb_minimal import ops
from avb_minimal.objectives import adversary_loss


@pytest.mark.parametrize("call,message", [
    (lambda a, b: ops.inner_product_rows(a.astype(int), b), "F must have a floating dtype"),
    (lambda a, b: ops.inner_product_rows(a, b[:, :3]), r"G must have the shape of F \(5, 4\), got \(5, 3\)"),
    (lambda a, b: ops.inner_product_rows(a[0], b[0]), r"F must be 2-d"),
    (lambda a, b: ops.inner_product_all_pairs(a, b[:, :3]), r"G must have as many columns as F \(4\)"),
    (lambda a, b: ops.inner_product_all_pairs(a, b.astype(complex)), "G must have a floating dtype"),
    (lambda a, b: ops.bernoulli_loglik(a > 0, b[:4]), r"logits must have the shape of x \(5, 4\)"),
    (lambda a, b: ops.bernoulli_loglik(a.astype(complex), b), "x must have a floating dtype"),
    (lambda a, b: ops.bernoulli_loglik(a, b.astype(np.int64)), "logits must have a floating dtype"),
    (lambda a, b: ops.inner_product_logistic(a, b, np.zeros(4), 1), r"offset must be a floating array of shape \(5,\)"),
    (lambda a, b: ops.inner_product_logistic(a, b, None, 2), "label must be 0 or 1"),
    (lambda a, b: ops.inner_product_rows(a.tolist(), b), "F must be a numpy or cupy array"),
])
def test_bad_input_names_the_argument(rng, call, message):
    F, G = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match=message):
        call(F, G)


def test_validate_rejects_non_finite_values_and_the_hot_path_lets_them_through(rng):
    F, G = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    G[2, 1] = np.nan
    G[3, 0] = np.inf
    for call in (lambda **kw: ops.inner_product_rows(F, G, **kw),
                 lambda **kw: ops.inner_product_all_pairs(F, G, **kw),
                 lambda **kw: ops.inner_product_logistic(F, G, None, 0, **kw)):
        with pytest.raises(ValueError, match=r"G must be finite; it holds 2 NaN or inf value\(s\)"):
            call(validate=True)
        assert np.isnan(call()).any()          # no check by default: NaN reaches train's divergence check
    with pytest.raises(ValueError, match="logits must be finite"):
        ops.bernoulli_loglik(F > 0, G, validate=True)
    with pytest.raises(ValueError, match="x must be finite"):
        ops.bernoulli_loglik(G, F, validate=True)


def test_non_contiguous_inputs_give_the_same_values(rng):
    F, G = rng.standard_normal((6, 10)), rng.standard_normal((6, 10))
    Fs, Gs = F[:, ::2], G[::-1, 1::2]
    Fc, Gc = np.ascontiguousarray(Fs), np.ascontiguousarray(Gs)
    assert not Fs.flags.c_contiguous and not Gs.flags.c_contiguous and Fc.flags.c_contiguous
    assert np.allclose(ops.inner_product_rows(Fs, Gs), ops.inner_product_rows(Fc, Gc))
    assert np.allclose(ops.inner_product_all_pairs(Fs, Gs), ops.inner_product_all_pairs(Fc, Gc))
    assert np.allclose(ops.bernoulli_loglik(Fs > 0, Gs), ops.bernoulli_loglik(Fc > 0, Gc))


@pytest.mark.parametrize("label", [0, 1])
def test_fused_logistic_matches_the_composition_and_has_exact_grads(rng, label):
    F, G, c = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)), rng.standard_normal(9)
    T = ops.inner_product_rows(F, G) + c
    assert np.allclose(ops.inner_product_logistic(F, G, c, label), ops.softplus(-T if label else T))
    assert np.allclose(ops.inner_product_logistic(F, G, c, label),
                       ops.inner_product_logistic_naive(F, G, c, label))
    check_grads(lambda F, G, c: ops.inner_product_logistic(F, G, c, label), modes=["rev"], order=1)(F, G, c)
    check_grads(lambda G: ops.inner_product_logistic(F, G, None, label), modes=["rev"], order=1)(G)
    big = np.array([[1e4], [-1e4]], np.float32)
    out = ops.inner_product_logistic(big, np.ones_like(big), None, label)
    assert out.dtype == np.float32 and np.allclose(out, [0, 1e4] if label else [1e4, 0])


def test_fused_logistic_gives_the_adversary_loss_of_eq_3_3(rng):
    F, Gq, Gp = (rng.standard_normal((7, 4)) for _ in range(3))
    cq, cp = rng.standard_normal(7), rng.standard_normal(7)

    def fused(F):
        return (np.mean(ops.inner_product_logistic(F, Gq, cq, 1))
                + np.mean(ops.inner_product_logistic(F, Gp, cp, 0)))

    def composed(F):
        return adversary_loss(ops.inner_product_rows(F, Gq) + cq, ops.inner_product_rows(F, Gp) + cp)
    assert np.isclose(fused(F), composed(F))
    assert np.allclose(grad(fused)(F), grad(composed)(F))


@pytest.mark.task0_2
def test_numpy_bernoulli_is_exact_for_wide_rows_at_logits_1e4(rng):
    # 781 logits of 5e3..1e4 in magnitude, float32: summing x.l and softplus(l) separately
    # subtracts two sums near 3e6 whose float32 ulp is 0.25 (an error of ~1 nat).
    x = (rng.random((64, 781)) < 0.5).astype(np.float32)
    wrong = rng.random(x.shape) < 0.01                         # 1% of the pixels get the wrong sign
    l = (rng.uniform(5e3, 1e4, x.shape) * np.where(wrong, 1 - 2 * x, 2 * x - 1)).astype(np.float32)
    exact = -np.sum(np.abs(l, dtype=np.float64) * wrong, 1)   # each wrong pixel costs |l| nats
    out = ops.bernoulli_loglik(x, l)
    assert out.dtype == np.float32 and np.allclose(out, exact, rtol=1e-6, atol=0)
    with np.errstate(all="ignore"):
        naive = ops.bernoulli_loglik_naive(x, l)
    assert not np.any(np.isfinite(naive))                     # the naive form gives -inf / nan
