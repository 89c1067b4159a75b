"""The unchanged kernels/*.cu run on the CPU: g++ compiles each with
kernels/cuda_emulation.h (one std::thread per CUDA thread, std::barrier for
__syncthreads, blocks one after another) and ctypes calls the kernels with the
convention of cupy.RawKernel: fn(grid, block, args).

Checked against the ops' NumPy forms run in float64, and their VJPs (tests/test_ops.py
checks those against the float64 reference values): irregular shapes (1823 x 781) and 1 x 1, grids
with several blocks in each dimension (and grids smaller than the work, which the
kernels' grid-stride loops must cover), float32 and float64, logits of +-1e4,
zero-size batches; then the ops' own kernel path (shapes, 32-bit sizes, contiguous
copies) with `check_grads` in float64 for every primitive.  Launches use small
blocks: every CUDA thread is an OS thread here.
"""

import numpy as np
import pytest
from autograd import make_vjp
from autograd.test_util import check_grads
from strict_device import GXX, compile_emulated

from avb_minimal import backend, ops

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not on the PATH: cannot build the CPU emulation")
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


# ------------------------------------------------------------------ the emulated module
@pytest.fixture(scope="module")
def emulated():
    """{stem: EmulatedModule}: both .cu files compiled with g++ and cuda_emulation.h (in
    parallel, once per session: tests/strict_device.py, which the device tests share)."""
    return compile_emulated()


def _run(emulated, stem, name, dt, grid, block, *args):
    sfx = "_f32" if dt == np.float32 else "_f64"
    emulated[stem].get_function(name + sfx)(grid, block, args)


def _data(rng, shape, dt, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dt)


def _numpy_op(op, args, g):
    """The reference: op(*args) on the NumPy path of ops in float64, and its VJPs with respect
    to every argument at the incoming gradient g.  -> (out, (d_arg, ...))."""
    args = [np.asarray(a, np.float64) for a in args]
    vjp, out = make_vjp(op, tuple(range(len(args))))(*args)
    return out, vjp(np.asarray(g, np.float64))


# ------------------------------------------------------------------ row kernels
ROW_CASES = [((1823, 781), (8, 8), (5,)),       # a grid much smaller than the rows: grid-stride
             ((1823, 781), (16, 4), (456,)),    # one block per group of rows
             ((1, 1), (4, 2), (3,)),            # more blocks than rows
             ((0, 5), (4, 2), (1,))]            # zero-size batch


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,block,grid", ROW_CASES)
def test_ip_rows_and_vjp(emulated, rng, dt, shape, block, grid):
    B, H = shape
    F, G, g = _data(rng, shape, dt), _data(rng, shape, dt), _data(rng, B, dt)
    T = np.full(B, np.nan, dt)
    _run(emulated, "inner_product", "ip_rows", dt, grid, block, F, G, T, np.int32(B), np.int32(H))
    T_ref, (dF_ref, dG_ref) = _numpy_op(ops.inner_product_rows, (F, G), g)
    assert np.allclose(T, T_ref, **TOL[dt])
    dF, dG = np.full(shape, np.nan, dt), np.full(shape, np.nan, dt)
    _run(emulated, "inner_product", "ip_rows_vjp", dt, grid, block, F, G, g, dF, dG,
         np.int32(B), np.int32(H))
    assert np.allclose(dF, dF_ref, **TOL[dt]) and np.allclose(dG, dG_ref, **TOL[dt])
    dF2 = np.full(shape, np.nan, dt)                    # a null output is skipped
    _run(emulated, "inner_product", "ip_rows_vjp", dt, grid, block, F, G, g, dF2, None,
         np.int32(B), np.int32(H))
    assert np.array_equal(dF2, dF)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("label", [0, 1])
def test_ip_rows_logistic_is_stable_at_extreme_logits(emulated, rng, dt, label):
    B, H = 1823, 7
    F, G = _data(rng, (B, H), dt), _data(rng, (B, H), dt)
    F[:4], G[:4] = 0, 0
    F[:4, 0], G[:4, 0] = [1e4, -1e4, 30.0, 0.0], 1          # T = 1e4, -1e4, 30 (+ offset 0)
    c = _data(rng, B, dt)
    c[:4] = 0
    loss, dT = np.full(B, np.nan, dt), np.full(B, np.nan, dt)
    _run(emulated, "inner_product", "ip_rows_logistic", dt, (7,), (8, 8), F, G, c, np.int32(label),
         loss, dT, np.int32(B), np.int32(H))
    F64, G64 = F.astype(np.float64), G.astype(np.float64)
    loss_ref, (dT_ref,) = _numpy_op(lambda c: ops.inner_product_logistic(F64, G64, c, label), (c,), np.ones(B))
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dT))
    assert np.allclose(loss, loss_ref, **TOL[dt])
    assert np.allclose(dT, dT_ref, **TOL[dt])                  # d loss / d offset = d loss / dT
    expect = [0.0, 1e4, 0.0, np.log(2)] if label else [1e4, 0.0, 30.0, np.log(2)]
    assert np.allclose(loss[:4], expect, rtol=1e-6, atol=1e-6)
    c_none = np.full(B, np.nan, dt)                       # offset pointer may be null
    _run(emulated, "inner_product", "ip_rows_logistic", dt, (3,), (4, 4), F, G, None, np.int32(label),
         c_none, dT, np.int32(B), np.int32(H))
    assert np.allclose(c_none, ops.inner_product_logistic(F64, G64, None, label), **TOL[dt])


# ------------------------------------------------------------------ all-pairs kernels
PAIR_CASES = [((1823, 781, 7), 4, (3, 2)),       # several blocks per grid dimension, grid-stride
              ((61, 37, 45), 4, (2, 5)),         # H over several shared-memory steps
              ((61, 37, 45), 2, (9, 9)),         # more blocks than tiles
              ((1, 1, 1), 2, (2, 3)),
              ((0, 3, 2), 2, (1, 1)), ((3, 0, 2), 2, (1, 1)), ((3, 2, 0), 2, (1, 1))]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("sizes,t,grid", PAIR_CASES)
def test_ip_pairs_and_vjps(emulated, rng, dt, sizes, t, grid):
    B, M, H = sizes
    F, G, g = _data(rng, (B, H), dt), _data(rng, (M, H), dt), _data(rng, (B, M), dt)
    T_ref, (dF_ref, dG_ref) = _numpy_op(ops.inner_product_all_pairs, (F, G), g)
    dims = (np.int32(B), np.int32(M), np.int32(H))
    T = np.full((B, M), np.nan, dt)
    _run(emulated, "inner_product", "ip_pairs", dt, grid, (t, t), F, G, T, *dims)
    assert np.allclose(T, T_ref, **TOL[dt])
    dF, dG = np.full((B, H), np.nan, dt), np.full((M, H), np.nan, dt)
    _run(emulated, "inner_product", "ip_pairs_vjp_F", dt, grid, (t, t), g, G, dF, *dims)
    _run(emulated, "inner_product", "ip_pairs_vjp_G", dt, grid, (t, t), g, F, dG, *dims)
    assert np.allclose(dF, dF_ref, **TOL[dt]) and np.allclose(dG, dG_ref, **TOL[dt])


# ------------------------------------------------------------------ Bernoulli kernels
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,block,grid", ROW_CASES)
def test_bernoulli_and_vjp(emulated, rng, dt, shape, block, grid):
    B, D = shape
    x, l, g = (rng.random(shape) < 0.5).astype(dt), _data(rng, shape, dt, 4.0), _data(rng, B, dt)
    out = np.full(B, np.nan, dt)
    _run(emulated, "bernoulli", "bern_loglik", dt, grid, block, x, l, out, np.int32(B), np.int32(D))
    out_ref, (dx_ref, dl_ref) = _numpy_op(ops.bernoulli_loglik, (x, l), g)
    assert np.allclose(out, out_ref, **TOL[dt])
    dx, dl = np.full(shape, np.nan, dt), np.full(shape, np.nan, dt)
    _run(emulated, "bernoulli", "bern_loglik_vjp", dt, grid, block, x, l, g, dx, dl,
         np.int32(B), np.int32(D))
    assert np.allclose(dx, dx_ref, **TOL[dt]) and np.allclose(dl, dl_ref, **TOL[dt])


@pytest.mark.parametrize("dt", DTYPES)
def test_bernoulli_is_exact_at_logits_1e4(emulated, rng, dt):
    # 781 logits of 5e3..1e4 in magnitude per row: a form that sums x l and softplus(l)
    # separately meets partial sums near 3e6, where float32's ulp is 0.25.
    B, D = 1823, 781
    x = (rng.random((B, D)) < 0.5).astype(dt)
    wrong = rng.random((B, D)) < 0.01                       # 1% of the pixels get the wrong sign
    l = (rng.uniform(5e3, 1e4, (B, D)) * np.where(wrong, 1 - 2 * x, 2 * x - 1)).astype(dt)
    l[0, :2], x[0, :2] = [1e4, -1e4], [0, 1]                 # the extremes themselves
    wrong[0, :2] = True
    out, dl = np.full(B, np.nan, dt), np.full((B, D), np.nan, dt)
    _run(emulated, "bernoulli", "bern_loglik", dt, (11,), (16, 4), x, l, out, np.int32(B), np.int32(D))
    exact = -np.sum(np.abs(l, dtype=np.float64) * wrong, 1)   # each wrong pixel costs |l| nats
    assert np.all(np.isfinite(out)) and np.allclose(out, exact, rtol=1e-6, atol=0)
    _run(emulated, "bernoulli", "bern_loglik_vjp", dt, (11,), (16, 4), x, l, np.ones(B, dt), None, dl,
         np.int32(B), np.int32(D))
    assert np.array_equal(dl, np.where(l > 0, x - 1, x))     # sigmoid(+-5e3 or more) is exactly 1 / 0


@pytest.mark.task5_2
@pytest.mark.parametrize("dt", DTYPES)
def test_inner_product_numpy_reference_agrees_with_the_kernels(emulated, rng, dt):
    """Task 5.2: the NumPy forms of ops (the CPU fallback and the kernels' reference)
    give what kernels/inner_product.cu computes: both logits and all four VJPs.  The NumPy
    forms run first, so that a student tree reports task 5.2 (not the kernels' own tasks)."""
    B, M, H = 203, 45, 37
    F, G, Gm = _data(rng, (B, H), dt), _data(rng, (B, H), dt), _data(rng, (M, H), dt)
    g, gm = _data(rng, B, dt), _data(rng, (B, M), dt)
    vjp, out = make_vjp(lambda F, G: ops.inner_product_rows(F, G), (0, 1))(F, G)
    rows = (out, *vjp(g))
    vjp, out = make_vjp(lambda F, G: ops.inner_product_all_pairs(F, G), (0, 1))(F, Gm)
    pairs = (out, *vjp(gm))
    dims = (np.int32(B), np.int32(H))
    T, dF, dG = np.empty(B, dt), np.empty((B, H), dt), np.empty((B, H), dt)
    _run(emulated, "inner_product", "ip_rows", dt, (7,), (8, 8), F, G, T, *dims)
    _run(emulated, "inner_product", "ip_rows_vjp", dt, (7,), (8, 8), F, G, g, dF, dG, *dims)
    assert rows[0].dtype == dt
    for mine, theirs in zip(rows, (T, dF, dG)):
        assert mine.shape == theirs.shape and np.allclose(mine, theirs, **TOL[dt])
    dims = (np.int32(B), np.int32(M), np.int32(H))
    T, dF, dG = np.empty((B, M), dt), np.empty((B, H), dt), np.empty((M, H), dt)
    _run(emulated, "inner_product", "ip_pairs", dt, (2, 3), (4, 4), F, Gm, T, *dims)
    _run(emulated, "inner_product", "ip_pairs_vjp_F", dt, (2, 3), (4, 4), gm, Gm, dF, *dims)
    _run(emulated, "inner_product", "ip_pairs_vjp_G", dt, (2, 3), (4, 4), gm, F, dG, *dims)
    assert pairs[0].dtype == dt
    for mine, theirs in zip(pairs, (T, dF, dG)):
        assert mine.shape == theirs.shape and np.allclose(mine, theirs, **TOL[dt])


def test_bad_launch_shape_is_an_error(emulated):
    fn = emulated["inner_product"].get_function("ip_rows_f32")
    z = np.zeros(1, np.float32)
    with pytest.raises(RuntimeError, match="invalid launch shape"):
        fn((1,), (64, 32), (z, z, z, np.int32(1), np.int32(1)))      # 2048 threads
    with pytest.raises(TypeError, match="numpy.int32"):
        fn((1,), (4,), (z, z, z, 1, 1))                              # a Python int is 64-bit in cupy


# ------------------------------------------------------------------ the ops' kernel path
@pytest.fixture
def kernel_path(monkeypatch, emulated):
    """Send the ops down their CUDA path, with NumPy arrays standing in for device arrays."""
    monkeypatch.setattr(ops, "_on_device", lambda *arrays: True)
    monkeypatch.setattr(backend, "kernel", lambda stem, name: emulated[stem].get_function(name))
    monkeypatch.setattr(ops, "ROW_BLOCK", (4, 4))
    monkeypatch.setattr(ops, "PAIR_BLOCK", 2)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 11)])
def test_check_grads_float64_through_the_kernels(kernel_path, rng, shape):
    B, H = shape
    F, G, G2 = _data(rng, (B, H), np.float64), _data(rng, (B, H), np.float64), _data(rng, (B + 2, H), np.float64)
    c = _data(rng, B, np.float64)
    x, l = (rng.random((B, H)) < 0.5).astype(np.float64), _data(rng, (B, H), np.float64, 4.0)
    rev = dict(modes=["rev"], order=1)
    check_grads(ops.inner_product_rows, **rev)(F, G)
    check_grads(ops.inner_product_all_pairs, **rev)(F, G2)
    check_grads(lambda G2: ops.inner_product_all_pairs(F, G2), **rev)(G2)
    for label in (0, 1):
        check_grads(lambda F, G, c: ops.inner_product_logistic(F, G, c, label), **rev)(F, G, c)
        check_grads(lambda G: ops.inner_product_logistic(F, G, None, label), **rev)(G)
    check_grads(ops.bernoulli_loglik, **rev)(x, l)
    check_grads(lambda l: ops.bernoulli_loglik(x, l), **rev)(l)
    check_grads(ops.softplus, **rev)(l)


@pytest.mark.parametrize("dt", DTYPES)
def test_kernel_path_matches_numpy_path(kernel_path, monkeypatch, rng, dt):
    B, M, H = 203, 45, 37
    F, G, Gm = _data(rng, (B, 2 * H), dt)[:, ::2], _data(rng, (B, H), dt), _data(rng, (M, H), dt)
    c, x, l = _data(rng, B, dt), (rng.random((B, H)) < 0.5).astype(np.uint8), _data(rng, (B, H), dt, 3)
    assert not F.flags.c_contiguous                          # made contiguous on the way in
    calls = {"rows": lambda: ops.inner_product_rows(F, G),
             "pairs": lambda: ops.inner_product_all_pairs(F, Gm),
             "logistic": lambda: ops.inner_product_logistic(F, G, c, 1),
             "bernoulli": lambda: ops.bernoulli_loglik(x, l)}
    got = {k: f() for k, f in calls.items()}
    monkeypatch.setattr(ops, "_on_device", lambda *arrays: False)
    for k, f in calls.items():
        want = f()
        assert got[k].dtype == want.dtype == dt and got[k].shape == want.shape, k
        assert np.allclose(got[k], want, **TOL[dt]), k


def test_kernel_path_zero_size_batches(kernel_path):
    for dt in DTYPES:
        E, G = np.zeros((0, 4), dt), np.ones((3, 4), dt)
        assert ops.inner_product_rows(E, E).shape == (0,)
        assert ops.inner_product_all_pairs(E, G).shape == (0, 3)
        assert ops.inner_product_all_pairs(G, E).shape == (3, 0)
        assert np.array_equal(ops.inner_product_all_pairs(np.ones((2, 0), dt), np.ones((3, 0), dt)),
                              np.zeros((2, 3)))
        assert ops.inner_product_logistic(E, E, None, 0).shape == (0,)
        assert ops.bernoulli_loglik(E, E).shape == (0,)


def test_kernel_path_rejects_what_the_kernels_cannot_take(kernel_path):
    F = np.ones((3, 4), np.float16)
    with pytest.raises(ValueError, match="F, G: the CUDA kernels compute in float32 or float64"):
        ops.inner_product_rows(F, F)
