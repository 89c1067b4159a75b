"""The captured step's kernels (kernels/gemm.cu, philox.cu, adam.cu) run unchanged on the CPU
through kernels/cuda_emulation.h, against the NumPy forms of avb_minimal/fast/device_ops.py:

- gemm in its three layouts (A B, A B^T, A^T B) and five epilogues, on irregular shapes,
  several grids (smaller than the work: grid-stride loops), strided views and batches;
- Philox 4x32-10 against the known-answer vectors of its authors (Random123) and the NumPy
  form, then Box-Muller normals: reproducible, independent of the launch shape, N(0, 1);
- the fused Adam step against optim.adam_update_, and skipped when ok[0] == 0.

Launches use small blocks: every emulated CUDA thread is an OS thread.
"""
import numpy as np
import pytest
import strict_device
from strict_device import GXX, compile_emulated

from avb_minimal.fast import device_ops as D
from avb_minimal.optim import Adam, adam_update_

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not on the PATH: cannot build the CPU emulation")
DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


@pytest.fixture(scope="module")
def emulated():
    return compile_emulated()


@pytest.fixture
def stand_in(emulated, monkeypatch):
    """device_ops' kernel path on the strict stand-in, the .cu files run through the emulation."""
    monkeypatch.setattr(D, "GEMM_BLOCK", 4)
    monkeypatch.setattr(D, "FLAT_BLOCK", 8)
    with strict_device.activate("emulated") as dev:
        yield dev


def _data(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt)


def _gemm_ref(a, b, ta, tb, epilogue, bias, E, C0):
    """float64 reference of gemm.cu."""
    A = np.swapaxes(a, -1, -2) if ta else a
    Bm = np.swapaxes(b, -1, -2) if tb else b
    c = np.matmul(A.astype(np.float64), Bm.astype(np.float64))
    if epilogue == "accumulate":
        return C0 + c
    if bias is not None:
        c = c + (bias[:, None, :] if c.ndim == 3 else bias)
    if epilogue == "bias_elu":
        return np.where(c > 0, c, np.expm1(np.minimum(c, 0)))
    if epilogue == "elu_grad":
        return c * (np.minimum(E, 0) + 1)
    return c


# ------------------------------------------------------------------ gemm, the .cu itself
GEMM_CASES = [((183, 71, 45), 4, (3, 2, 1)),      # grid smaller than the tiles: grid-stride
              ((37, 29, 16), 2, (9, 9, 1)),       # more blocks than tiles
              ((1, 1, 1), 2, (1, 1, 1)),
              ((5, 3, 0), 2, (1, 1, 1))]          # k = 0: a product of zeros


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("sizes,t,grid", GEMM_CASES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("epilogue", list(D.EPILOGUES))
def test_gemm_kernel(emulated, rng, dt, sizes, t, grid, ta, tb, epilogue):
    m, n, k = sizes
    a = _data(rng, (k, m) if ta else (m, k), dt)
    b = _data(rng, (n, k) if tb else (k, n), dt)
    bias = _data(rng, n, dt) if "bias" in epilogue else None
    E = np.tanh(_data(rng, (m, n), dt)) if epilogue == "elu_grad" else None
    C = _data(rng, (m, n), dt)
    want = _gemm_ref(a, b, ta, tb, epilogue, bias, E, C)
    sfx = "_f32" if dt == np.float32 else "_f64"
    name = "gemm_" + "nt"[ta] + "nt"[tb] + sfx
    lda, ldb = a.shape[1], b.shape[1]
    args = [np.int32(v) for v in (m, n, k, lda, ldb, n, 1, 0, 0, 0, D.EPILOGUES[epilogue])]
    emulated["gemm"].get_function(name)(grid, (t, t), [a, b, C, bias, E, *args])
    assert np.allclose(C, want, **TOL[dt])


# ------------------------------------------------------------------ gemm through device_ops
@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_views_and_batches_on_the_stand_in(stand_in, rng, dt):
    dev = stand_in
    big = _data(rng, (50, 3, 40), dt)                # (B, m, E): per-basis products, as the AC encoder
    W = _data(rng, (3, 40, 17), dt)
    bias = _data(rng, (3, 17), dt)
    out = dev.empty((50, 3, 17), dt)
    got = D.gemm(dev.asarray(big).transpose(1, 0, 2), dev.asarray(W), out.transpose(1, 0, 2),
                 epilogue="bias_elu", bias=dev.asarray(bias))
    want = _gemm_ref(big.transpose(1, 0, 2), W, False, False, "bias_elu", bias, None, None)
    assert np.allclose(dev.asnumpy(got), want, **TOL[dt])
    assert np.allclose(dev.asnumpy(out), want.transpose(1, 0, 2), **TOL[dt])
    # a row block of a wider buffer as the output, a column slice as an operand, and the
    # host form of the same call
    h, d = _data(rng, (60, 33), dt), _data(rng, (60, 21), dt)
    buf = dev.zeros((80, 21), dt)
    D.gemm(dev.asarray(h)[:, 5:30], dev.asarray(d), buf[:25], ta=True)
    host = D.gemm(h[:, 5:30], d, np.zeros((25, 21), dt), ta=True)
    assert np.allclose(dev.asnumpy(buf)[:25], host, **TOL[dt]) and not dev.asnumpy(buf)[25:].any()
    assert np.allclose(host, _gemm_ref(h[:, 5:30], d, True, False, "store", None, None, None), **TOL[dt])


def test_gemm_refuses_what_it_cannot_take(rng):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="do not chain"):
        D.gemm(a, b, np.empty((3, 6), np.float32))
    with pytest.raises(ValueError, match="epilogue"):
        D.gemm(a, b, np.empty((3, 5), np.float32), epilogue="relu")
    with pytest.raises(ValueError, match="takes bias"):
        D.gemm(a, b, np.empty((3, 5), np.float32), epilogue="bias")


# ------------------------------------------------------------------ philox
# Known-answer vectors of Philox 4x32-10 (Random123's kat_vectors): counter, key -> output.
KAT = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
       ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
       ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
        (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(emulated, ctr, key, want):
    assert D.philox4x32_10(np.array([ctr], np.uint32), key).tolist() == [list(want)]
    if ctr[1] == 0:                                      # the kernel's counter is (q, 0, offset)
        out = np.zeros(4, np.uint32)
        state = np.array([key[0], key[1], ctr[2], ctr[3]], np.uint32)
        emulated["philox"].get_function("philox_bits")((1,), (2,), [out, state, np.int32(1)])
        assert out.tolist() == list(want)


@pytest.mark.parametrize("dt", DTYPES)
def test_philox_normal_kernel_matches_numpy_and_is_standard_normal(emulated, dt):
    n, state = 40_003, D.philox_state(12345, 7)
    fn = emulated["philox"].get_function("philox_normal" + ("_f32" if dt == np.float32 else "_f64"))
    outs = []
    for grid, block in (((3,), (8,)), ((40,), (32,))):    # the launch shape changes nothing
        out = np.full(n, np.nan, dt)
        fn(grid, block, [out, state, np.int32(n)])
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    ref = D.philox_normal(np.empty(n, dt), state)
    assert np.allclose(outs[0], ref, rtol=1e-5 if dt == np.float32 else 1e-12, atol=1e-5 if dt == np.float32 else 1e-12)
    z = outs[0].astype(np.float64)
    assert np.all(np.isfinite(z)) and abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs(np.mean(z[:-1] * z[1:])) < 0.02                       # neighbours uncorrelated
    other = D.philox_normal(np.empty(n, dt), D.philox_state(12345, 8))     # the next offset
    assert abs(np.corrcoef(ref, other)[0, 1]) < 0.02


def test_philox_normal_on_the_stand_in_is_seeded(stand_in):
    dev = stand_in
    a = D.philox_normal(dev.empty(1001, np.float32), D.philox_state(3, 0, dev))
    b = D.philox_normal(dev.empty(1001, np.float32), D.philox_state(3, 0, dev))
    c = D.philox_normal(dev.empty(1001, np.float32), D.philox_state(4, 0, dev))
    assert np.array_equal(dev.asnumpy(a), dev.asnumpy(b)) and not np.array_equal(dev.asnumpy(a), dev.asnumpy(c))


# ------------------------------------------------------------------ adam
@pytest.mark.parametrize("dt", DTYPES)
def test_adam_kernel_matches_adam_update(emulated, rng, dt):
    n, opt = 10_007, Adam(3e-4, 0.5, 0.999)
    p, g = _data(rng, n, dt), _data(rng, n, dt)
    state = {"t": 4, "m": _data(rng, n, dt) * 0.1, "v": np.abs(_data(rng, n, dt)) * 0.01}
    p_k, m_k, v_k = p.copy(), state["m"].copy(), state["v"].copy()
    hyper, fn = D.adam_hyper(opt, 3e-4, 5, dt), emulated["adam"].get_function("adam" + ("_f32" if dt == np.float32 else "_f64"))
    fn((5,), (16,), [p_k, g, m_k, v_k, hyper, np.ones(1, dt), np.int32(n)])
    adam_update_(opt, p, g, state, 3e-4)
    for got, want in ((p_k, p), (m_k, state["m"]), (v_k, state["v"])):
        assert np.allclose(got, want, rtol=1e-6 if dt == np.float32 else 1e-14, atol=0)
    before = p_k.copy()
    fn((5,), (16,), [p_k, g, m_k, v_k, hyper, np.zeros(1, dt), np.int32(n)])     # ok = 0: skipped
    assert np.array_equal(p_k, before)
    host = p.copy()
    D.adam_(host, g, state["m"].copy(), state["v"].copy(), hyper, np.zeros(1, dt))
    assert np.array_equal(host, p)
