"""The device path (marker `device`): on a GPU where one is present, else on the strict
stand-in of tests/strict_device.py, whose arrays refuse the two things cupy refuses
(implicit conversion to NumPy; a host array mixed into a device operation).

- the stand-in itself is strict (so that these tests can fail);
- every kernel against the NumPy path, through autograd (the .cu files themselves, run
  through kernels/cuda_emulation.h on the stand-in), and `check_grads` in float64;
- one training step on device arrays against the host step, readable and fast;
- short training runs of every model on the device (nothing leaves it inside the loop),
  the MNIST models, the Biadversarial VAE and AIS, and resumes: bit for bit on the same
  device, and across devices.

Run with:  python -m pytest -m device tests/test_device.py
"""
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from avb_minimal import backend, ops, trees
from avb_minimal import bavae as BV
from avb_minimal import models as M
from avb_minimal import train as T
from avb_minimal.ais import ais_log_likelihood
from avb_minimal.data import four_points, sample_batch

pytestmark = pytest.mark.device
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _stand_in(device):
    return device.__name__ == "strict_cupy"


@pytest.fixture
def emulated(device, monkeypatch):
    """On the stand-in: run the unchanged .cu files through the emulation header, with small
    blocks (every emulated CUDA thread is an OS thread).  On a GPU: the real launch shapes."""
    if _stand_in(device):
        monkeypatch.setattr(device, "kernels", "emulated")
        monkeypatch.setattr(ops, "ROW_BLOCK", (8, 4))
        monkeypatch.setattr(ops, "PAIR_BLOCK", 4)
    return device


def _same(device, dev_value, host_value, tol):
    assert isinstance(dev_value, device.ndarray), type(dev_value)           # stayed on the device
    assert dev_value.dtype == host_value.dtype and dev_value.shape == host_value.shape
    assert np.allclose(device.asnumpy(dev_value), host_value, **tol)


def _shapes(device, small, large):
    return small if _stand_in(device) else small + large


# ------------------------------------------------------------------ the stand-in is strict
def test_the_device_refuses_what_cupy_refuses(device):
    dev, host = device.asarray(np.ones(3, np.float32)), np.ones(3, np.float32)
    for bad in (lambda: dev + host, lambda: host * dev, lambda: np.dot(host, dev), lambda: np.asarray(dev),
                lambda: host.__setitem__(slice(None), dev), lambda: np.concatenate([dev, host])):
        with pytest.raises((TypeError, ValueError)):
            bad()
    assert float(np.sum(dev * 2 + 1)) == 9.0 and isinstance(np.exp(dev), device.ndarray)   # scalars mix
    assert np.array_equal(device.asnumpy(dev), host)                                          # explicit copy


# ------------------------------------------------------------------ kernels against NumPy
@pytest.mark.parametrize("dt", DTYPES)
def test_row_kernels_match_numpy(emulated, rng, dt):
    device = emulated
    for B, H in _shapes(device, [(37, 29), (1, 1), (0, 5)], [(1823, 781), (4096, 1024)]):
        shape = (B, H)
        F, G, c, w = (rng.standard_normal(s).astype(dt) for s in (shape, shape, B, B))
        x, l = (rng.random(shape) < 0.5).astype(dt), (rng.standard_normal(shape) * 4).astype(dt)
        cases = [(lambda a, b, c: ops.inner_product_rows(a, b), (F, G, c)),
                 (lambda a, b, c: ops.inner_product_logistic(a, b, c, 0), (F, G, c)),
                 (lambda a, b, c: ops.inner_product_logistic(a, b, c, 1), (F, G, c)),
                 (lambda a, b, c: ops.bernoulli_loglik(a, b), (x, l, c))]
        for f, host in cases:
            dev = tuple(device.asarray(a) for a in host)
            _same(device, f(*dev), f(*host), TOL[dt])
            for argnum in (0, 1):                          # the VJP kernels, through autograd

                def loss(*a, weights):
                    return np.sum(f(*a) * weights)
                g_dev = grad(loss, argnum)(*dev, weights=device.asarray(w))
                _same(device, g_dev, grad(loss, argnum)(*host, weights=w), TOL[dt])


@pytest.mark.parametrize("dt", DTYPES)
def test_all_pairs_kernels_match_numpy(emulated, rng, dt):
    device = emulated
    for B, M_, H in _shapes(device, [(70, 37, 13), (1, 1, 1), (0, 3, 2)], [(1823, 781, 37), (512, 512, 512)]):
        F, G, w = (rng.standard_normal(s).astype(dt) for s in ((B, H), (M_, H), (B, M_)))
        Fd, Gd = device.asarray(F), device.asarray(G)
        _same(device, ops.inner_product_all_pairs(Fd, Gd), ops.inner_product_all_pairs(F, G), TOL[dt])
        for argnum in (0, 1):

            def loss(F, G, weights):
                return np.sum(ops.inner_product_all_pairs(F, G) * weights)
            _same(device, grad(loss, argnum)(Fd, Gd, device.asarray(w)), grad(loss, argnum)(F, G, w), TOL[dt])


def test_extreme_logits_float32_on_device(emulated):
    device = emulated
    x = device.asarray(np.array([[1, 0, 1, 0]], np.float32))
    l = device.asarray(np.array([[1e4, -1e4, -1e4, 1e4]], np.float32))
    out = ops.bernoulli_loglik(x, l)
    assert out.dtype == np.float32 and np.isclose(float(out[0]), -2e4, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (17, 11)])
def test_check_grads_float64_on_device(emulated, rng, shape):
    device = emulated
    B, H = shape
    F, G, G2, c, l = (device.asarray(rng.standard_normal(s)) for s in ((B, H), (B, H), (B + 2, H), B, (B, H)))
    x = device.asarray((rng.random((B, H)) < 0.5).astype(np.float64))
    rev = dict(modes=["rev"], order=1)
    check_grads(ops.inner_product_rows, **rev)(F, G)
    check_grads(ops.inner_product_all_pairs, **rev)(F, G2)
    for label in (0, 1):
        check_grads(lambda F, G, c: ops.inner_product_logistic(F, G, c, label), **rev)(F, G, c)
    check_grads(ops.bernoulli_loglik, **rev)(x, l)
    check_grads(ops.softplus, **rev)(l)


# ------------------------------------------------------------------ one step
@pytest.mark.parametrize("kind, step, negatives", [("vae", "readable", "pairs"), ("avb", "readable", "pairs"),
                                                   ("avb", "fast", "all_pairs"), ("avb_ac", "readable", "all_pairs"),
                                                   ("avb_ac", "fast", "pairs")])
def test_one_step_on_the_device_matches_the_host_step(device, kind, step, negatives):
    arch = M.Arch(hidden=(32, 32), adv_hidden=(32,), adv_dim=16, eps_dim=8, n_basis=4)
    cfg = T.TrainConfig(iters=1, batch=64, negatives=negatives, step=step)
    rng = np.random.default_rng(0)
    params = M.init_params(rng, kind, arch)
    x = sample_batch(rng, four_points(), cfg.batch)                         # (B, 4)
    noise = M.sample_noise(rng, kind, arch, cfg.batch)
    z_neg = rng.standard_normal((cfg.batch, arch.z_dim)).astype(np.float32)
    p_host, _, aux_host = T.make_step(kind, arch, cfg)(params, T.init_states(kind, params), x, noise, z_neg, 1.0)
    to_dev = backend.tree_to_device
    p_dev, s_dev, aux_dev = T.make_step(kind, arch, cfg)(
        to_dev(params, device), to_dev(T.init_states(kind, params), device),
        *(device.asarray(a) for a in (x, noise, z_neg)), 1.0)
    for (path, a), (_, b) in zip(trees.tree_leaves(p_dev), trees.tree_leaves(p_host)):
        assert isinstance(a, device.ndarray), f"{path} left the device"
        assert np.allclose(device.asnumpy(a), b, rtol=1e-4, atol=1e-5), path
    assert all(isinstance(a, device.ndarray) for _, a in trees.tree_leaves(s_dev["gen"]["m"]))
    for k in aux_host:
        assert np.isclose(aux_dev[k], aux_host[k], rtol=1e-4, atol=1e-5), k


# ------------------------------------------------------------------ training runs
SMALL = M.Arch(hidden=(16, 16), adv_hidden=(16,), adv_dim=8, eps_dim=4, n_basis=4)


def _on_device(device, tree):
    return all(isinstance(a, device.ndarray) for _, a in trees.tree_leaves(tree))


@pytest.mark.parametrize("kind, step", [("vae", "auto"), ("avb", "readable"), ("avb", "fast"),
                                        ("avb_ac", "readable"), ("avb_ac", "fast")])
def test_training_stays_on_the_device(device, kind, step):
    cfg = T.TrainConfig(iters=12, batch=32, log_every=4, step=step, negatives="all_pairs", adv_steps=2)
    gets = getattr(device, "gets", 0)
    params, info = T.train(kind, four_points(), SMALL, cfg, seed=0, device="gpu")
    assert _on_device(device, params)
    if _stand_in(device):
        assert device.gets == gets, "arrays were copied to the host inside the loop"
    assert all(np.isfinite(h.get("gen_objective", h.get("elbo", 0.0))) for h in info["history"])


def test_resume_is_bit_exact_on_the_device_and_crosses_devices(device, tmp_path, capsys):
    cfg = T.TrainConfig(iters=8, batch=32, log_every=2, checkpoint_every=4, negatives="all_pairs")
    full, _ = T.train("avb_ac", four_points(), SMALL, cfg, seed=1, device="gpu")
    half = T.TrainConfig(**dict(cfg.__dict__, iters=4))
    ck = str(tmp_path / "run.npz")
    T.train("avb_ac", four_points(), SMALL, half, seed=1, checkpoint=ck, device="gpu")
    resumed, _ = T.train("avb_ac", four_points(), SMALL, cfg, seed=1, checkpoint=ck, device="gpu")
    for (path, a), (_, b) in zip(trees.tree_leaves(resumed), trees.tree_leaves(full)):
        assert np.array_equal(device.asnumpy(a), device.asnumpy(b)), path
    # a device checkpoint resumes on the CPU, and a CPU one on the device, saying so
    ck_cpu = str(tmp_path / "cpu.npz")
    T.train("avb_ac", four_points(), SMALL, half, seed=1, checkpoint=ck_cpu, device="cpu")
    p_dev, _ = T.train("avb_ac", four_points(), SMALL, cfg, seed=1, checkpoint=ck_cpu, device="gpu")
    p_cpu, _ = T.train("avb_ac", four_points(), SMALL, T.TrainConfig(**dict(cfg.__dict__, iters=12)), seed=1,
                       checkpoint=ck, device="cpu")
    assert _on_device(device, p_dev) and all(isinstance(a, np.ndarray) for _, a in trees.tree_leaves(p_cpu))
    err = capsys.readouterr().err
    assert "written on cpu" in err and "written on gpu" in err


@pytest.mark.parametrize("kind, negatives", [("avb", "pairs"), ("avb_ac", "all_pairs")])
def test_the_captured_step_trains_as_the_fast_step_and_resumes(device, tmp_path, kind, negatives):
    """step='graph' (fast/graph.py: captured on a GPU, plain launches on the stand-in) trains to
    the fast step's numbers for the same seed, copies one aux vector per step to the host,
    is what 'auto' takes on the device, and resumes from its checkpoint bit for bit."""
    cfg = T.TrainConfig(iters=8, batch=32, log_every=2, checkpoint_every=4, negatives=negatives, step="graph")
    assert T.step_path(kind, SMALL, T.TrainConfig(), "gpu") == "graph"
    fast, info_fast = T.train(kind, four_points(), SMALL, T.TrainConfig(**dict(cfg.__dict__, step="fast")),
                              seed=2, device="gpu")
    gets = getattr(device, "gets", 0)
    full, info = T.train(kind, four_points(), SMALL, cfg, seed=2, device="gpu")
    if _stand_in(device):
        assert device.gets == gets + cfg.iters            # the aux vector, once per step
    assert _on_device(device, full)
    for (path, a), (_, b) in zip(trees.tree_leaves(full), trees.tree_leaves(fast)):
        assert np.allclose(device.asnumpy(a), device.asnumpy(b), rtol=1e-4, atol=1e-5), path
    for h, hf in zip(info["history"], info_fast["history"], strict=True):
        assert all(np.isclose(h[k], hf[k], rtol=1e-4, atol=1e-5) for k in ("gen_objective", "adv_loss", "T_q"))
    ck = str(tmp_path / "graph.npz")
    T.train(kind, four_points(), SMALL, T.TrainConfig(**dict(cfg.__dict__, iters=4)), seed=2, checkpoint=ck,
            device="gpu")
    resumed, _ = T.train(kind, four_points(), SMALL, cfg, seed=2, checkpoint=ck, device="gpu")
    for (path, a), (_, b) in zip(trees.tree_leaves(resumed), trees.tree_leaves(full)):
        assert np.array_equal(device.asnumpy(a), device.asnumpy(b)), path


def test_mnist_models_bavae_and_ais_run_on_the_device(device):
    rng = np.random.default_rng(0)
    x = (rng.random((64, 12)) < 0.3).astype(np.float32)
    arch = M.Arch(x_dim=12, z_dim=3, hidden=(10,), adv_hidden=(8,), adv_dim=4, adv_unary=True, eps_dim=4,
                  n_basis=3, basis_hidden=5)
    cfg = T.TrainConfig(iters=6, batch=16, log_every=3, negatives="all_pairs")
    for kind in M.KINDS:                                   # sec. 5.2's adversary, the noise-basis encoder
        params, _ = T.train(kind, x, arch, cfg, seed=0, device="gpu")
        assert _on_device(device, params), kind
        r = ais_log_likelihood(params, kind, device.asarray(x[:4]), arch, np.random.default_rng(1),
                               n_steps=5, n_chains=2, n_leapfrog=2, dtype=np.float32)
        assert np.all(np.isfinite(r["log_likelihood"])) and r["log_likelihood"].shape == (4,), kind
    params, _ = BV.train_bavae(x, arch, cfg, seed=0, device="gpu")
    assert _on_device(device, params)


def test_black_box_vi_runs_on_the_device(device):
    """Sec. 5.1 on the device: AVB and Gaussian VB for Eight Schools (the data go to the device
    with the batch), parameters handed back on the host."""
    from avb_minimal import targets as TG
    from avb_minimal import vi
    t = TG.eight_schools()
    small = vi.AVBConfig(iters=6, batch=32, hidden=(16,), adv_width=16, adv_blocks=1, log_every=3)
    params, info = vi.fit_avb(t, cfg=small, seed=0, device="gpu")
    assert all(isinstance(a, np.ndarray) for _, a in trees.tree_leaves(params))
    assert np.isfinite(info["history"][-1]["elbo_from_T"])
    assert vi.sample_avb(params, np.random.default_rng(0), 5).shape == (5, 10)
    for family in vi.FAMILIES:
        p, info = vi.fit_gaussian_vb(t, cfg=vi.VBConfig(family=family, iters=5, log_every=5), seed=0, device="gpu")
        assert np.isfinite(info["elbo"]) and isinstance(p["mean"], np.ndarray)


# ------------------------------------------------------------------ the command line
def test_device_gpu_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """Where there is no GPU (always here: CI has none), --device gpu names the flag and what to
    install, and creates nothing."""
    from avb_minimal.__main__ import main
    if backend.cupy_module() is not None:
        pytest.skip("a GPU is present")
    for argv in (["train", "--model", "avb", "--quick", "--device", "gpu", "--checkpoint", str(tmp_path / "a" / "c.npz")],
                 ["reproduce", "table1", "--quick", "--device", "gpu", "--out", str(tmp_path / "out")],
                 ["bench", "step", "--device", "gpu"], ["selfcheck"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("avb-minimal: error: --device gpu: cupy is") and "\n" not in err, err
        assert "cupy-cuda13x" in err and "cupy-cuda12x" in err
    assert list(tmp_path.iterdir()) == []                  # no folder, no checkpoint


def test_selfcheck_runs_and_writes_one_json(tmp_path, capsys, smoke_table1):
    """The self-check's code path, on the CPU (its device tests are this file: skipped here)."""
    import json

    from avb_minimal.__main__ import main
    out = tmp_path / "selfcheck.json"
    assert main(["selfcheck", "--device", "cpu", "--no-tests", "--sizes", "32x16,64x16", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["device_name"].startswith("CPU")
    assert [(s["batch"], s["width"]) for s in r["bench_step"]] == [(32, 16), (64, 16)]
    assert all(s["ms_per_step"] > 0 for s in r["bench_step"]) and r["bench_ops"]["backends"]
    assert set(r["table1_quick"]) >= set(M.KINDS)
    assert "quick Table 1 on cpu" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--sizes takes BATCHxWIDTH"):
        from avb_minimal.fast.selfcheck import parse_sizes
        parse_sizes("512,512")
