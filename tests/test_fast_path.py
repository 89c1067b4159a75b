"""The fast path (fast_step.py, optim.adam_update_, nn.elu_, the fused ops) computes the
same numbers as the readable path (objectives.avb_losses + autograd, optim.adam_step)."""
import numpy as np
import pytest
from autograd import grad

from avb_minimal import models as M
from avb_minimal import objectives as O
from avb_minimal import train as T
from avb_minimal.data import four_points
from avb_minimal.fast.step import FastAVBStep, supports
from avb_minimal.nn import elu, elu_, elu_grad_
from avb_minimal.ops import bernoulli_loglik, bernoulli_loglik_grad, softplus_sigmoid
from avb_minimal.optim import Adam, adam_init, adam_step, adam_update_
from avb_minimal.trees import tree_flatten, tree_map

# irregular widths on purpose: every layer of every net has its own shape
ARCH = M.Arch(x_dim=5, z_dim=3, eps_dim=4, hidden=(7, 6), adv_hidden=(6, 5), adv_dim=4,
              n_basis=3, basis_hidden=4, basis_eps_dim=2)
ARCH_UNARY = M.Arch(**dict(ARCH.to_dict(), adv_unary=True))   # sec. 5.2's T = <f, g> + r(x) + s(z)
ARCH_FLOOR = M.Arch(**dict(ARCH_UNARY.to_dict(), ac_var_floor=0.3))   # AC's variance floor, not 1e-4


def _problem(seed, kind, B=13, M_neg=13, arch=ARCH):
    rng = np.random.default_rng(seed)
    params = M.init_params(rng, kind, arch)
    # non-zero biases and non-trivial output layers, so every term of every gradient is exercised
    params = tree_map(lambda a: (a + 0.3 * rng.standard_normal(a.shape)).astype(np.float32), params)
    x = (rng.random((B, ARCH.x_dim)) < 0.5).astype(np.float32)
    noise = M.sample_noise(rng, kind, ARCH, B)
    z_neg = rng.standard_normal((M_neg, ARCH.z_dim)).astype(np.float32)
    return params, x, noise, z_neg


def _readable_grads(params, kind, x, noise, z_neg, negatives, arch=ARCH):
    """The readable path's three gradients in float64 (the reference)."""
    p64 = tree_map(lambda a: a.astype(np.float64), params)
    args = [a.astype(np.float64) for a in (x, noise, z_neg)]
    aux = {}
    g = grad(lambda p: sum(O.avb_losses(p, kind, *args, arch, negatives, aux)))(p64)
    return g, aux


def _close(a, b, tol=2e-4):
    """Equal within float32 tolerance, relative to the array's scale."""
    scale = max(float(np.max(np.abs(b))), 1e-3)
    return float(np.max(np.abs(a - b))) <= tol * scale


@pytest.mark.parametrize("arch", [ARCH, ARCH_UNARY, ARCH_FLOOR], ids=["inner", "inner+unary", "inner+unary+floor"])
@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
@pytest.mark.parametrize("negatives,M_neg", [("pairs", 13), ("all_pairs", 9)])
def test_fast_gradients_equal_readable(kind, negatives, M_neg, arch):
    params, x, noise, z_neg = _problem(1, kind, M_neg=M_neg, arch=arch)
    ref, ref_aux = _readable_grads(params, kind, x, noise, z_neg, negatives, arch)
    fast = FastAVBStep(kind, arch, T.TrainConfig(negatives=negatives))
    fast._bind(params)
    aux = fast.gradients(x, noise, z_neg)
    got = {"enc": fast.gen.grad_tree["enc"], "dec": fast.gen.grad_tree["dec"], "adv": fast.adv.grad_tree}
    ref = {"enc": ref["enc"], "dec": ref["dec"], "adv": ref["adv"]}
    for (path, a), b in zip(_leaves(got), tree_flatten(ref), strict=True):
        assert a.dtype == np.float32
        assert _close(a, b), f"{kind}/{negatives}: gradient {path} differs"
    for k in ("gen_objective", "adv_loss", "loglik", "T_q"):
        assert np.isclose(aux[k], ref_aux[k], rtol=1e-5, atol=1e-5), k


def _leaves(tree):
    from avb_minimal.trees import tree_leaves
    return tree_leaves(tree)


@pytest.mark.parametrize("arch", [ARCH, ARCH_UNARY], ids=["inner", "inner+unary"])
@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
def test_fast_steps_equal_readable_steps(kind, arch):
    """Three full updates (gradients + both Adams) from the same start agree."""
    params, x, noise, z_neg = _problem(2, kind, arch=arch)
    out = {}
    for mode in ("readable", "fast"):
        cfg = T.TrainConfig(step=mode, lr_gen=1e-3, lr_adv=1e-3)
        step = T.make_step(kind, arch, cfg)
        assert isinstance(step, FastAVBStep) == (mode == "fast")
        p, s = tree_map(np.copy, params), T.init_states(kind, params)
        for _ in range(3):
            p, s, aux = step(p, s, x, noise, z_neg, 0.5)
        out[mode] = (p, s, aux)
    (p0, s0, a0), (p1, s1, a1) = out["readable"], out["fast"]
    for a, b in zip(tree_flatten(p1), tree_flatten(p0)):
        assert _close(a, b, 1e-4)
    for k in ("gen", "adv"):
        assert s1[k]["t"] == s0[k]["t"] == 3
        assert _close(s1[k]["m"], s0[k]["m"], 1e-3) and _close(s1[k]["v"], s0[k]["v"], 1e-3)
    for k in a0:
        assert np.isclose(a1[k], a0[k], rtol=1e-4, atol=1e-5), k


def test_training_runs_agree_and_resume_on_the_fast_path(tmp_path):
    arch = M.Arch(hidden=(16, 16), adv_hidden=(16,), adv_dim=8, eps_dim=4)
    cfg = T.TrainConfig(iters=30, batch=32, log_every=10, checkpoint_every=15, step="fast")
    fast, _ = T.train("avb", four_points(), arch, cfg, seed=4)
    slow, _ = T.train("avb", four_points(), arch, T.TrainConfig(**dict(cfg.__dict__, step="readable")), seed=4)
    for a, b in zip(tree_flatten(fast), tree_flatten(slow)):
        assert _close(a, b, 1e-3)
    ck = tmp_path / "run.npz"
    T.train("avb", four_points(), arch, T.TrainConfig(**dict(cfg.__dict__, iters=15)), seed=4, checkpoint=ck)
    resumed, info = T.train("avb", four_points(), arch, cfg, seed=4, checkpoint=ck)
    for a, b in zip(tree_flatten(fast), tree_flatten(resumed)):
        assert np.array_equal(a, b)
    assert [h["iteration"] for h in info["history"]] == [10, 15, 20, 30]


def test_fast_step_refuses_a_non_finite_update():
    params, x, noise, z_neg = _problem(3, "avb")
    step = FastAVBStep("avb", ARCH, T.TrainConfig())
    states = T.init_states("avb", params)
    p, states, _ = step(params, states, x, noise, z_neg, 1.0)
    before = [a.copy() for a in tree_flatten(p)]
    x_bad = x.copy()
    x_bad[0, 0] = np.nan
    p, states, aux = step(p, states, x_bad, noise, z_neg, 1.0)
    assert not all(np.isfinite(v) for v in aux.values())
    assert all(np.array_equal(a, b) for a, b in zip(tree_flatten(p), before))
    assert states["gen"]["t"] == 1


def test_which_step_runs():
    assert supports("avb", ARCH) == "" and supports("avb_ac", ARCH) == ""
    assert supports("avb_ac", ARCH_UNARY) == ""                          # sec. 5.2 (MNIST)
    res = M.Arch(adversary="residual")
    assert "residual" in supports("avb", res) and "vae" in supports("vae", ARCH)
    auto = T.TrainConfig()
    assert T.step_path("avb", res, auto) == T.step_path("avb", res, auto, "gpu") == "readable"   # falls back
    assert T.step_path("avb", ARCH, auto) == "fast" and T.step_path("avb", ARCH, auto, "gpu") == "graph"
    assert T.step_path("avb", ARCH_UNARY, auto, "gpu") == "fast"     # the captured step has no r(x) + s(z)
    assert T.step_path("avb", ARCH, T.TrainConfig(step="graph")) == "graph"   # plain launches on the CPU
    for step in ("fast", "graph"):
        with pytest.raises(ValueError, match=f"step='{step}' does not support the residual"):
            T.make_step("avb", res, T.TrainConfig(step=step))
    with pytest.raises(ValueError, match="step='graph' does not support .*adv_unary"):
        T.make_step("avb", ARCH_UNARY, T.TrainConfig(step="graph"), "gpu")
    with pytest.raises(ValueError, match="step must be one of"):
        T.TrainConfig(step="quick")


def test_adam_in_place_is_adam_step_exactly(rng):
    p = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    cfg = Adam(lr=0.01, b1=0.5, b2=0.99)
    s_pure, s_flat = adam_init(p), adam_init(p)
    flat = np.concatenate([a.ravel() for a in p])
    for t in range(4):
        g = [rng.standard_normal(a.shape).astype(np.float32) for a in p]
        p, s_pure = adam_step(cfg, p, g, s_pure, lr=0.01 / (t + 1))
        adam_update_(cfg, flat, np.concatenate([a.ravel() for a in g]), s_flat, lr=0.01 / (t + 1), chunk=5)
    # the moments are bitwise equal; the parameters within an ulp (the step size is rounded
    # to float32 before the product in the in-place form)
    assert np.allclose(flat, np.concatenate([a.ravel() for a in p]), rtol=1e-6, atol=0)
    assert np.array_equal(s_flat["m"], s_pure["m"]) and np.array_equal(s_flat["v"], s_pure["v"])


def test_fused_elementwise_forms(rng):
    a = (rng.standard_normal((37, 11)) * 3).astype(np.float32)
    out = a.copy()
    elu_(out, np.empty_like(a))
    assert np.array_equal(out, elu(a))
    d = rng.standard_normal(a.shape).astype(np.float32)
    want = grad(lambda a: np.sum(elu(a) * d))(a)
    assert np.array_equal(elu_grad_(d.copy(), out, np.empty_like(a)), want)
    l = np.concatenate([rng.standard_normal(50) * 5, [0.0, 80.0, -80.0, 1e4, -1e4]]).astype(np.float32)
    sp, sig = softplus_sigmoid(l)
    assert np.allclose(sp, np.logaddexp(0, l.astype(np.float64)), rtol=1e-6, atol=1e-7)
    assert np.allclose(sig, np.exp(-np.logaddexp(0, -l.astype(np.float64))), rtol=1e-6, atol=1e-7)
    x = (rng.random((6, 9)) < 0.5).astype(np.float32)
    lg = np.resize(l, (6, 9))
    ll, dl = bernoulli_loglik_grad(x, lg)
    assert np.allclose(ll, bernoulli_loglik(x, lg), rtol=1e-6)
    want = grad(lambda l: np.sum(bernoulli_loglik(x, l)))(lg)
    assert np.allclose(dl, want, atol=1e-6)


def test_bench_sweep_profile_and_plot(tmp_path):
    from avb_minimal.experiments.plots import bench_sweep_figure
    from avb_minimal.fast import bench_step as BS
    arch = BS.bench_arch(64)
    # the fast path runs less matrix work than autograd's path, and more than the fixed rule
    assert BS.step_flops(arch, 32)[0] < BS.work_flops(arch, 32, "fast") < BS.work_flops(arch, 32, "readable")
    sw = {s: BS.bench_sweep(batches=(8, 24), widths=(16,), step=s, budget_s=1e-6) for s in ("readable", "fast")}
    for s, r in sw.items():
        assert [c["step"] for c in r["cells"]] == [s, s]
        assert all(c["fraction_of_peak"] > 0 and c["fraction_of_peak_cpu"] > 0 for c in r["cells"])
    png = bench_sweep_figure(sw, str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 5000 and png.endswith(".png")
    p = BS.profile_step(16, 16, steps=3, step="fast")
    assert p["step"] == "fast" and set(p["parts_ms"]) >= {"matrix products", "optimiser (Adam)"}
    assert "FastAVBStep" not in BS.format_profile(p) and "matrix products" in BS.format_profile(p)
