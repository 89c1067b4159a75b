"""The two hot ops: values against naive forms, stability, and hand-written VJPs."""
import numpy as np
import pytest
from autograd.test_util import check_grads
from reference_values import expect

from avb_minimal import ops


def test_softplus_matches_log1p_exp_and_is_stable(rng):
    l = rng.standard_normal(100) * 5
    assert np.allclose(ops.softplus(l), np.log1p(np.exp(l)))
    big = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=np.float32)
    out = ops.softplus(big)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.allclose(out, [0.0, np.exp(-50.0), np.log(2.0), 50.0, 1e4])


@pytest.mark.task5_2
def test_inner_product_rows_and_all_pairs(rng):
    F, G = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    assert np.allclose(ops.inner_product_rows(F, G), ops.inner_product_rows_naive(F, G))
    G2 = rng.standard_normal((3, 5))
    T = ops.inner_product_all_pairs(F, G2)
    ref = expect("inner_products", F=F, G=G, G2=G2)
    assert T.shape == (7, 3) and np.allclose(T, ref["pairs"])
    assert np.allclose(ops.inner_product_rows(F, G), ref["rows"])
    # the diagonal of the all-pairs logits is the row-wise op
    assert np.allclose(np.diag(ops.inner_product_all_pairs(F, G)), ops.inner_product_rows(F, G))


@pytest.mark.task0_2
def test_bernoulli_loglik_matches_naive_and_is_stable(rng):
    x = (rng.random((6, 9)) < 0.5).astype(np.float64)
    l = rng.standard_normal((6, 9)) * 3
    assert np.allclose(ops.bernoulli_loglik(x, l), ops.bernoulli_loglik_naive(x, l))
    assert np.allclose(ops.bernoulli_loglik(x, l), expect("bernoulli_loglik", x=x, l=l)["loglik"])
    # extreme logits in float32: the naive form gives -inf / nan, ours the exact value
    x32 = np.array([[1, 0, 1, 0]], np.float32)
    l32 = np.array([[1e4, -1e4, -1e4, 1e4]], np.float32)
    out = ops.bernoulli_loglik(x32, l32)
    assert out.dtype == np.float32
    assert np.isfinite(out[0]) and np.isclose(out[0], -2e4, rtol=1e-6)
    assert np.isclose(ops.bernoulli_loglik(x32, l32 * 0 + np.float32(30))[0], -2 * 30.0, rtol=1e-5)


@pytest.mark.task0_3
def test_bernoulli_vjp_is_g_times_x_minus_sigmoid(rng):
    """Task 0.3: the NumPy VJP itself, called directly (no forward pass needed)."""
    x = (rng.random((6, 9)) < 0.5).astype(np.float64)
    l, g = rng.standard_normal((6, 9)) * 3, rng.standard_normal(6)
    dx, dl = ops._bernoulli_vjp((0, 1), None, (x, l), {})(g)
    ref = expect("bernoulli_vjp", x=x, l=l, g=g)
    assert np.allclose(dl, ref["dl"]) and np.allclose(dx, ref["dx"])
    (dl_only,) = ops._bernoulli_vjp((1,), None, (x, l), {})(g)          # only the logits asked for
    assert np.allclose(dl_only, dl)
    x32, l32 = x.astype(np.float32), np.array([[1e4, -1e4] * 4 + [0.0]] * 6, np.float32)
    (d32,) = ops._bernoulli_vjp((1,), None, (x32, l32), {})(np.ones(6, np.float32))
    assert d32.dtype == np.float32 and np.allclose(d32, x32 - np.array([1, 0] * 4 + [0.5], np.float32))


@pytest.mark.task0_3
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 11)])
def test_bernoulli_grads_float64(rng, shape):
    x = (rng.random(shape) < 0.5).astype(np.float64)
    l = rng.standard_normal(shape) * 4
    check_grads(lambda l: ops.bernoulli_loglik(x, l), modes=["rev"], order=1)(l)
    check_grads(lambda x: ops.bernoulli_loglik(x, l), modes=["rev"], order=1)(x)


@pytest.mark.task5_2
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 11)])
def test_inner_product_grads_float64(rng, shape):
    B, H = shape
    F, G, G2 = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal((B + 2, H))
    check_grads(ops.inner_product_rows, modes=["rev"], order=1)(F, G)
    check_grads(lambda G: ops.inner_product_rows(F, G), modes=["rev"], order=1)(G)
    check_grads(ops.inner_product_all_pairs, modes=["rev"], order=1)(F, G2)
    check_grads(lambda G2: ops.inner_product_all_pairs(F, G2), modes=["rev"], order=1)(G2)
    assert np.allclose(ops.inner_product_all_pairs(F, G2), ops.inner_product_all_pairs_naive(F, G2))


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 11)])
def test_grads_float64(rng, shape):
    B, H = shape
    F, G = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    G2 = rng.standard_normal((B + 2, H))
    check_grads(ops.inner_product_rows, modes=["rev"], order=1)(F, G)
    check_grads(lambda G: ops.inner_product_rows(F, G), modes=["rev"], order=1)(G)
    check_grads(ops.inner_product_all_pairs, modes=["rev"], order=1)(F, G2)
    check_grads(lambda G2: ops.inner_product_all_pairs(F, G2), modes=["rev"], order=1)(G2)
    x = (rng.random((B, H)) < 0.5).astype(np.float64)
    l = rng.standard_normal((B, H)) * 4
    check_grads(lambda l: ops.bernoulli_loglik(x, l), modes=["rev"], order=1)(l)
    check_grads(lambda x: ops.bernoulli_loglik(x, l), modes=["rev"], order=1)(x)
    check_grads(ops.softplus, modes=["rev"], order=1)(l)
