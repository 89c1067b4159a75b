"""The captured step (avb_minimal/fast/graph.py) computes what the fast step computes: on NumPy
arrays and on the strict stand-in (where capture is unavailable, so the same launches run one
by one, and it says so once), with the kernels' NumPy references and with the .cu files
themselves run through the emulation header.  No GPU needed."""
import numpy as np
import pytest
import strict_device

from avb_minimal import backend, ops
from avb_minimal import models as M
from avb_minimal import train as T
from avb_minimal.fast import device_ops
from avb_minimal.fast.graph import GraphAVBStep
from avb_minimal.fast.step import FastAVBStep
from avb_minimal.trees import tree_flatten, tree_map

ARCH = M.Arch(x_dim=5, z_dim=3, eps_dim=4, hidden=(7, 6), adv_hidden=(6, 5), adv_dim=4,
              n_basis=3, basis_hidden=4, basis_eps_dim=2)


def _problem(kind, steps=3, B=13, M_neg=9, seed=1):
    rng = np.random.default_rng(seed)
    params = M.init_params(rng, kind, ARCH)
    params = tree_map(lambda a: (a + 0.3 * rng.standard_normal(a.shape)).astype(np.float32), params)
    batches = [((rng.random((B, ARCH.x_dim)) < 0.5).astype(np.float32), M.sample_noise(rng, kind, ARCH, B),
                rng.standard_normal((M_neg, ARCH.z_dim)).astype(np.float32)) for _ in range(steps)]
    return params, batches


def _run(step, kind, params, batches, xp=np):
    params, states = backend.tree_to_device(params, xp), backend.tree_to_device(T.init_states(kind, params), xp)
    auxes = []
    for i, b in enumerate(batches):
        params, states, aux = step(params, states, *[xp.asarray(a) for a in b], 1.0 - 0.1 * i)
        auxes.append(aux)
    return backend.tree_to_host(params), backend.tree_to_host(states), auxes


def _same(a, b, tol=1e-5):
    for u, v in zip(tree_flatten(a), tree_flatten(b), strict=True):
        assert np.allclose(u, v, rtol=tol, atol=tol), float(np.max(np.abs(u - v)))


def _same_aux(a, b):
    for u, v in zip(a, b, strict=True):
        assert u.keys() == v.keys() and all(np.isclose(u[k], v[k], rtol=1e-5, atol=1e-6) for k in u), (u, v)


@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
@pytest.mark.parametrize("negatives", ["pairs", "all_pairs"])
def test_graph_step_equals_fast_step_on_numpy(kind, negatives, capsys):
    params, batches = _problem(kind, M_neg=13 if negatives == "pairs" else 9)
    cfg = T.TrainConfig(negatives=negatives, lr_gen=1e-2, lr_adv=1e-2)
    want = _run(FastAVBStep(kind, ARCH, cfg), kind, params, batches)
    step = GraphAVBStep(kind, ARCH, cfg)
    got = _run(step, kind, params, batches)
    _same(got[0], want[0])
    _same([got[1][k][m] for k in ("gen", "adv") for m in "mv"], [want[1][k][m] for k in ("gen", "adv") for m in "mv"])
    assert [got[1][k]["t"] for k in ("gen", "adv")] == [want[1][k]["t"] for k in ("gen", "adv")] == [3, 3]
    _same_aux(got[2], want[2])
    err = capsys.readouterr().err
    assert step.mode == "plain" and err.count("plain kernel launches") == 1 and "NumPy arrays" in err


@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
def test_graph_step_on_the_stand_in_copies_only_aux_to_the_host(kind, capsys):
    params, batches = _problem(kind)
    cfg = T.TrainConfig(negatives="all_pairs")
    want = _run(FastAVBStep(kind, ARCH, cfg), kind, params, batches)
    with strict_device.activate("reference") as dev:
        step = GraphAVBStep(kind, ARCH, cfg)
        params_d = backend.tree_to_device(params, dev)
        states_d = backend.tree_to_device(T.init_states(kind, params), dev)
        launches, auxes = [], []
        for i, b in enumerate(batches):
            gets, n = dev.gets, dev.launches
            params_d, states_d, aux = step(params_d, states_d, *[dev.asarray(a) for a in b], 1.0 - 0.1 * i)
            assert dev.gets == gets + 1                      # aux, and nothing else
            launches.append(dev.launches - n)
            auxes.append(aux)
        got = backend.tree_to_host(params_d)
    _same(got, want[0])
    _same_aux(auxes, want[2])
    assert launches[0] == launches[1] > 0 and "has no CUDA streams" in capsys.readouterr().err


def test_graph_step_runs_the_cu_files_through_the_emulation(monkeypatch):
    params, batches = _problem("avb_ac", steps=2, B=6, M_neg=5)
    cfg = T.TrainConfig(negatives="all_pairs")
    want = _run(FastAVBStep("avb_ac", ARCH, cfg), "avb_ac", params, batches)
    monkeypatch.setattr(device_ops, "GEMM_BLOCK", 2)
    monkeypatch.setattr(device_ops, "FLAT_BLOCK", 4)
    monkeypatch.setattr(ops, "ROW_BLOCK", (2, 2))
    with strict_device.activate("emulated") as dev:
        got = _run(GraphAVBStep("avb_ac", ARCH, cfg), "avb_ac", params, batches, dev)
    _same(got[0], want[0], tol=1e-4)
    _same_aux(got[2], want[2])


def test_a_non_finite_step_changes_nothing():
    params, batches = _problem("avb", steps=1, M_neg=13)
    x, noise, z_neg = batches[0]
    noise = noise.copy()
    noise[0, 0] = np.nan
    cfg = T.TrainConfig()
    step = GraphAVBStep("avb", ARCH, cfg)
    states = T.init_states("avb", params)
    before = tree_map(np.copy, params)
    new, states, aux = step(params, states, x, noise, z_neg, 1.0)
    assert not np.isfinite(aux["gen_objective"]) and states["gen"]["t"] == states["adv"]["t"] == 0
    for k in ("enc", "dec", "adv"):
        _same(new[k], before[k], tol=0)


def test_bench_graph_on_the_stand_in_says_no_gpu_figure_and_refuses_what_does_not_fit():
    from avb_minimal.fast import bench_step as BS
    with strict_device.activate("reference"):
        r = BS.bench_graph("gpu", steps=2)
        assert not r["gpu"] and [c["mode"] for c in r["cells"]] == ["plain"]
        assert BS.format_graph(r).startswith("no GPU figure") and "strict stand-in (CPU), float32" in BS.format_graph(r)
        with pytest.raises(ValueError, match=r"would need about .* GiB of memory; this GPU has 16.0 GiB"):
            BS.bench_graph("gpu", sizes=((16384, 65536),), steps=1)


def test_the_captured_step_refuses_the_unary_adversary():
    arch = M.Arch(x_dim=5, z_dim=3, eps_dim=4, hidden=(7,), adv_hidden=(6,), adv_dim=4, adv_unary=True)
    with pytest.raises(ValueError, match="adv_unary"):
        GraphAVBStep("avb", arch, T.TrainConfig())


def test_time_to_result_runs_on_the_device_path(monkeypatch, capsys):
    """`bench step --time-to-result avb_ac --device gpu`: Table 1's AVB + AC trained on the device
    with the captured step, the decoder copied to the host for each exact log-likelihood (a
    smoke run: 4 iterations, a target reached at the first evaluation)."""
    from avb_minimal.__main__ import main
    from avb_minimal.fast import bench_step as BS
    real = BS.time_to_result
    monkeypatch.setattr(BS, "time_to_result", lambda *a, **kw: real(*a, **kw, iters=4, every=2, target=-50.0))
    with strict_device.activate("reference") as dev:
        gets = dev.gets
        assert main(["bench", "step", "--time-to-result", "avb_ac", "--device", "gpu", "--seeds", "1"]) == 0
        assert dev.gets > gets                                          # it ran on the stand-in
    out, err = capsys.readouterr()
    assert "avb_ac seed 0 (graph step, strict stand-in (CPU)): log-likelihood >= -1.40 after" in out
    assert err.count("plain kernel launches") == 1
    r = real("avb", iters=4, every=2, target=0.0, device="cpu")         # not reached: no time reported
    assert r["step"] == "fast" and not r["reached"] and r["seconds"] is None and len(r["curve"]) == 2
