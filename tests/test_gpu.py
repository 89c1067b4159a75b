"""The CuPy path on a real GPU (marker `gpu`): every kernel against the NumPy path,
`check_grads` in float64 on device arrays, and one whole AVB training step on the
device against the NumPy step with the same noise.  Skipped where there is no GPU.

Run with:  python -m pytest -m gpu tests/test_gpu.py
"""
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from avb_minimal import backend, ops, trees
from avb_minimal import models as M
from avb_minimal import train as T
from avb_minimal.data import four_points, sample_batch

cp = backend.cupy_module()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cp is None, reason="needs cupy and a CUDA GPU; none is present here")]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}
SHAPES = [(1823, 781), (1, 1), (0, 5), (4096, 1024)]


def _dev(a):
    return cp.asarray(a)


def _same(dev_value, host_value, dt):
    assert isinstance(dev_value, cp.ndarray), type(dev_value)      # stayed on the device
    assert dev_value.dtype == host_value.dtype and dev_value.shape == host_value.shape
    assert np.allclose(cp.asnumpy(dev_value), host_value, **TOL[dt])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_row_kernels_match_numpy(rng, dt, shape):
    B, H = shape
    F, G, c, w = (rng.standard_normal(s).astype(dt) for s in (shape, shape, B, B))
    x, l = (rng.random(shape) < 0.5).astype(dt), (rng.standard_normal(shape) * 4).astype(dt)
    cases = [(lambda a, b, c: ops.inner_product_rows(a, b), (F, G, c)),
             (lambda a, b, c: ops.inner_product_logistic(a, b, c, 0), (F, G, c)),
             (lambda a, b, c: ops.inner_product_logistic(a, b, c, 1), (F, G, c)),
             (lambda a, b, c: ops.bernoulli_loglik(a, b), (x, l, c))]
    for f, host in cases:
        dev = tuple(_dev(a) for a in host)
        _same(f(*dev), f(*host), dt)
        for argnum in (0, 1):                              # the VJP kernels, through autograd
            def loss(*a):
                return np.sum(f(*a) * (_dev(w) if isinstance(a[0], cp.ndarray) else w))
            _same(grad(loss, argnum)(*dev), grad(loss, argnum)(*host), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("sizes", [(1823, 781, 37), (1, 1, 1), (0, 3, 2), (512, 512, 512)])
def test_all_pairs_kernels_match_numpy(rng, dt, sizes):
    B, M_, H = sizes
    F, G, w = (rng.standard_normal(s).astype(dt) for s in ((B, H), (M_, H), (B, M_)))
    _same(ops.inner_product_all_pairs(_dev(F), _dev(G)), ops.inner_product_all_pairs(F, G), dt)
    for argnum in (0, 1):
        def loss(F, G):
            return np.sum(ops.inner_product_all_pairs(F, G) * (_dev(w) if isinstance(F, cp.ndarray) else w))
        _same(grad(loss, argnum)(_dev(F), _dev(G)), grad(loss, argnum)(F, G), dt)


def test_extreme_logits_float32_on_device():
    x = np.array([[1, 0, 1, 0]], np.float32)
    l = np.array([[1e4, -1e4, -1e4, 1e4]], np.float32)
    out = ops.bernoulli_loglik(_dev(x), _dev(l))
    assert out.dtype == cp.float32 and np.isclose(float(out[0]), -2e4, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (17, 11)])
def test_check_grads_float64_on_device(rng, shape):
    B, H = shape
    F, G, G2, c, l = (_dev(rng.standard_normal(s)) for s in ((B, H), (B, H), (B + 2, H), B, (B, H)))
    x = _dev((rng.random((B, H)) < 0.5).astype(np.float64))
    rev = dict(modes=["rev"], order=1)
    check_grads(ops.inner_product_rows, **rev)(F, G)
    check_grads(ops.inner_product_all_pairs, **rev)(F, G2)
    for label in (0, 1):
        check_grads(lambda F, G, c: ops.inner_product_logistic(F, G, c, label), **rev)(F, G, c)
    check_grads(ops.bernoulli_loglik, **rev)(x, l)
    check_grads(ops.softplus, **rev)(l)


@pytest.mark.parametrize("negatives", ["pairs", "all_pairs"])
def test_one_avb_step_on_the_device_matches_numpy(negatives):
    arch = M.Arch(hidden=(64, 64), adv_hidden=(64,), adv_dim=32, eps_dim=8)
    cfg = T.TrainConfig(iters=1, batch=256, negatives=negatives)
    rng = np.random.default_rng(0)
    params = M.init_params(rng, "avb", arch)
    x = sample_batch(rng, four_points(), cfg.batch)                         # (B, 4)
    noise = M.sample_noise(rng, "avb", arch, cfg.batch)                     # (B, eps)
    z_neg = rng.standard_normal((cfg.batch, arch.z_dim)).astype(np.float32)
    step = T.make_step("avb", arch, cfg)

    def on_device(tree):
        return trees.tree_map(backend.to_device, tree)

    def dev_states(states):
        return {k: {"t": s["t"], "m": on_device(s["m"]), "v": on_device(s["v"])} for k, s in states.items()}
    p_host, _, aux_host = step(params, T.init_states("avb", params), x, noise, z_neg, 1.0)
    p_dev, s_dev, aux_dev = step(on_device(params), dev_states(T.init_states("avb", params)),
                                 backend.to_device(x), backend.to_device(noise), backend.to_device(z_neg), 1.0)
    for (path, a), (_, b) in zip(trees.tree_leaves(p_dev), trees.tree_leaves(p_host)):
        assert isinstance(a, cp.ndarray), f"{path} left the device"
        assert np.allclose(cp.asnumpy(a), b, rtol=1e-4, atol=1e-5), path
    assert all(isinstance(a, cp.ndarray) for _, a in trees.tree_leaves(s_dev["adv"]["m"]))
    for k in aux_host:
        assert np.isclose(aux_dev[k], aux_host[k], rtol=1e-4, atol=1e-5), k
