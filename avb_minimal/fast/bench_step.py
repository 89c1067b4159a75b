"""`python -m avb_minimal bench step`: the cost of one AVB training step (Algorithm 1).

- `step_flops`: the fixed FLOP rule 2B(3 P_enc + 3 P_dec + 2 P_f + 5 P_g) that
  fraction_of_peak is defined with (P = sum of in*out over a net's dense layers).
  It is a *convention*, kept as it is so that figures stay comparable: a correct
  step does more matrix work than it counts (`step_products` lists the products
  each path really runs; `work_flops` sums them).
- `sgemm_gflops`: the machine's float32 matrix-product rate (n x n, median).
- `bench_step`: median time per step, with the sgemm rate measured in the same
  process *between* the steps, so that load from other jobs affects both alike.
- `bench_sweep`: batch x width grid; `profile_step`: where the time goes.
- `bench_graph`: the captured step (`fast.graph`) on the GPU at the issue's three sizes, as a
  fraction of the device's measured matmul rate (cuBLAS) and of the GEMM kernel's own rate.

Longer than 400 lines because every benchmark of one training step (host, device, captured,
sweep, profile, time to result) shares the setup and FLOP rules kept here.
"""
import cProfile
import io
import os
import pstats
import time

import numpy as np

from .. import evaluate as E
from .. import models as M
from ..backend import check_fits, device_module, tree_to_device, tree_to_host
from ..data import four_points, sample_batch
from ..experiments.plots import bench_sweep_figure
from ..experiments.table1 import table1_settings
from ..nn import elu, elu_, elu_grad_
from ..optim import Adam, adam_init, adam_step, adam_update_, flatten_to_vector
from ..train import TrainConfig, init_states, make_step, step_path, train
from ..trees import tree_flatten
from .bench_ops import device_name
from .device_ops import gemm
from .graph import GraphAVBStep

SWEEP_BATCHES = (64, 512, 4096)
SWEEP_WIDTHS = (128, 512, 1024)


def _layer_sizes(params):
    """sum of in*out over a net's dense layers (the P of the FLOP rule)."""
    return int(sum(W.shape[0] * W.shape[1] for W in tree_flatten(params) if W.ndim == 2))


def bench_arch(width):
    """The paper's synthetic-example nets at hidden width `width` (sec. 5.2)."""
    return M.Arch(hidden=(width, width), adv_hidden=(width, width), adv_dim=width)


def step_flops(arch, batch):
    """The issue's fixed FLOP rule for one AVB step:
    2 * B * (3 P_enc + 3 P_dec + 2 P_f + 5 P_g), P = sum of in*out over dense layers."""
    p = M.init_params(np.random.default_rng(0), "avb", arch)
    P = {k: _layer_sizes(v) for k, v in (("enc", p["enc"]), ("dec", p["dec"]),
                                          ("f", p["adv"]["f"]), ("g", p["adv"]["g"]))}
    return 2 * batch * (3 * P["enc"] + 3 * P["dec"] + 2 * P["f"] + 5 * P["g"]), P


def step_products(arch, batch, step="fast"):
    """The dense-layer matrix products one AVB step (pairs negatives) runs, as
    (rows, n_in, n_out, kind) with kind 'fwd' (h W), 'dW' (h^T d) or 'dh' (d W^T).

    fast: forward, dW and dh of every net, except dh into data / noise / prior samples;
    g runs once on 2B rows and its q-rows' backward also serves the generator.
    readable: as autograd runs it: g also runs forward and backward (dh only) on the
    B q-rows with psi frozen for the generator's T."""
    p = M.init_params(np.random.default_rng(0), "avb", arch)
    shapes = {k: [W.shape for W, _ in v] for k, v in
              (("enc", p["enc"]), ("dec", p["dec"]), ("f", p["adv"]["f"]), ("g", p["adv"]["g"]))}
    B, out = batch, []

    def net(name, rows, dW=True, dh_first=False, dh=True):
        for i, (n_in, n_out) in enumerate(shapes[name]):
            out.append((rows, n_in, n_out, "fwd"))
            if dW:
                out.append((rows, n_in, n_out, "dW"))
            if dh and (i > 0 or dh_first):
                out.append((rows, n_in, n_out, "dh"))
    net("enc", B)
    net("dec", B, dh_first=True)
    net("f", B)
    net("g", 2 * B)
    if step == "fast":
        out.append((B, shapes["g"][0][0], shapes["g"][0][1], "dh"))        # dz of the q-rows
    else:
        net("g", B, dW=False, dh_first=True)                               # psi frozen, for T_gen
    return out


def work_flops(arch, batch, step="fast"):
    """FLOPs of the matrix products the step really runs (2 * rows * n_in * n_out each)."""
    return sum(2 * r * i * o for r, i, o, _ in step_products(arch, batch, step))


def _sgemm_operands(n, rng, xp=np):
    """a, b (random) and c (output) for one float32 n x n product c = a b, on xp's device."""
    return (xp.asarray(rng.standard_normal((n, n), dtype=np.float32)),
            xp.asarray(rng.standard_normal((n, n), dtype=np.float32)), xp.empty((n, n), np.float32))


def _sync(xp):
    """Wait for the device (kernel launches return before the work is done)."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def sgemm_gflops(n=1024, reps=20, rng=None):
    """Measured float32 matrix-product rate of an n x n product (median of reps), in GFLOP/s."""
    a, b, c = _sgemm_operands(n, rng or np.random.default_rng(0))
    for _ in range(2):
        np.dot(a, b, out=c)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.dot(a, b, out=c)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def _setup(batch, width, negatives, seed, step, xp=np):
    arch = bench_arch(width)
    check_fits(M.memory_estimate(arch, batch), f"a step with --batch {batch} --width {width}", xp)
    cfg = TrainConfig(iters=10 ** 6, batch=batch, negatives=negatives, step=step)
    rng = np.random.default_rng(seed)
    params = M.init_params(rng, "avb", arch)
    states = init_states("avb", params)
    fn = make_step("avb", arch, cfg, "cpu" if xp is np else "gpu")
    data = four_points()
    batches = [(sample_batch(rng, data, batch), M.sample_noise(rng, "avb", arch, batch),
                rng.standard_normal((batch, arch.z_dim)).astype(np.float32)) for _ in range(4)]
    batches = [tuple(xp.asarray(a) for a in b) for b in batches]
    return arch, tree_to_device(params, xp), tree_to_device(states, xp), fn, batches


def _threads():
    return os.environ.get("OPENBLAS_NUM_THREADS", "default")


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def bench_step(batch=512, width=512, steps=30, warmup=5, negatives="pairs", seed=0, step="auto", device="cpu"):
    """Time one simultaneous AVB step (Algorithm 1; paper widths by default: 2 x width
    encoder and decoder, inner-product adversary of two 2 x width nets, float32) on the
    `step` path ('auto' = the fastest that applies: fast on the CPU, the captured step on the
    GPU; 'readable', 'fast', 'graph').  After every timed
    step one 1024^3 sgemm is timed as well; fraction_of_peak = (fixed-rule FLOPs /
    median step time) / median sgemm rate.  device 'gpu': everything on the device, the
    sgemm by cupy's matmul (cuBLAS), each timing after a device synchronisation."""
    xp = device_module(device)
    arch, params, states, fn, batches = _setup(batch, width, negatives, seed, step, xp)
    n = 1024 if xp is np else 4096
    a, b, c_ = _sgemm_operands(n, np.random.default_rng(1), xp)
    wall, cpu, gwall, gcpu = [], [], [], []
    for i in range(warmup + steps):
        x, noise, zn = batches[i % 4]
        _sync(xp)
        c, t = time.process_time(), time.perf_counter()
        params, states, _ = fn(params, states, x, noise, zn, 1.0)
        _sync(xp)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        c, t = time.process_time(), time.perf_counter()
        np.dot(a, b, out=c_)
        _sync(xp)
        gwall.append(time.perf_counter() - t)
        gcpu.append(time.process_time() - c)
    med = {k: float(np.median(v[warmup:])) for k, v in
           (("wall", wall), ("cpu", cpu), ("gwall", gwall), ("gcpu", gcpu))}
    flops, P = step_flops(arch, batch)
    path = step_path("avb", arch, TrainConfig(step=step), device)
    work = work_flops(arch, batch, "readable" if path == "readable" else "fast") if negatives == "pairs" else None
    ms, peak = med["wall"] * 1e3, 2 * n ** 3 / med["gwall"] / 1e9
    peak_cpu = 2 * n ** 3 / med["gcpu"] / 1e9
    return {"batch": batch, "width": width, "step": path, "device": device, "ms_per_step": ms,
            "ms_per_step_min": float(np.min(wall[warmup:])) * 1e3,
            "gflop_per_step": flops / 1e9, "sgemm_gflops": peak,
            "achieved_gflops": flops / 1e9 / med["wall"],
            "fraction_of_peak": flops / 1e9 / med["wall"] / peak,
            # the same ratio in CPU time (process_time): with one BLAS thread on a loaded
            # machine this is the robust figure (time the process spends waiting for a core
            # counts in neither the step nor the sgemm)
            "cpu_ms_per_step": med["cpu"] * 1e3, "sgemm_gflops_cpu": peak_cpu,
            "fraction_of_peak_cpu": flops / 1e9 / med["cpu"] / peak_cpu,
            "work_gflop_per_step": None if work is None else work / 1e9,
            "work_fraction_of_peak": None if work is None else work / 1e9 / med["wall"] / peak,
            "layer_sizes": P, "steps": steps, "negatives": negatives,
            "threads": _threads(), "load_average_1min": _load()}


GRAPH_SIZES = ((512, 512), (4096, 1024), (16384, 1024))


def _timed(fn, xp, reps):
    """Median wall time of fn() over reps calls, each between device synchronisations."""
    times = []
    for _ in range(reps):
        _sync(xp)
        t = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_graph(device="gpu", sizes=GRAPH_SIZES, steps=20):
    """The captured step (`fast.graph.GraphAVBStep`, pairs negatives) at each (batch, width):
    ms per step, and the FLOPs of the products it runs per second as a fraction of the
    device's float32 matmul rate (cupy's matmul, 4096^3) and of the GEMM kernel's own rate
    at the same size.  Without a GPU (NumPy, or the strict stand-in) it runs one small cell
    (unless given sizes), as a check that the path works, and reports no GPU figure.  A size
    that does not fit the device's memory is refused before anything is allocated."""
    xp = device_module(device)
    gpu = getattr(xp, "__name__", "") == "cupy"
    n = 4096 if gpu else 256
    a, b, c = _sgemm_operands(n, np.random.default_rng(1), xp)
    rates = {"matmul": 2 * n ** 3 / _timed(lambda: np.dot(a, b, out=c), xp, 10) / 1e9,
             "gemm_kernel": 2 * n ** 3 / _timed(lambda: gemm(a, b, c), xp, 10) / 1e9}
    cells = []
    for batch, width in (sizes if gpu or sizes is not GRAPH_SIZES else [(64, 128)]):
        arch, params, states, _, batches = _setup(batch, width, "pairs", 0, "fast", xp)
        step = GraphAVBStep("avb", arch, TrainConfig(batch=batch, negatives="pairs", step="fast"))
        box = [params, states, 0]

        def one(box=box, step=step, batches=batches):
            box[2] += 1
            box[0], box[1], _ = step(box[0], box[1], *batches[box[2] % 4], 1.0)
        for _ in range(3):                                   # the first call captures
            one()
        sec = _timed(one, xp, steps)
        gflops = work_flops(arch, batch, "fast") / sec / 1e9
        cells.append({"batch": batch, "width": width, "ms_per_step": sec * 1e3, "mode": step.mode,
                      "fraction_of_matmul": gflops / rates["matmul"],
                      "fraction_of_gemm_kernel": gflops / rates["gemm_kernel"]})
    return {"gpu": gpu, "device": device, "device_name": device_name(xp), "rates_gflops": rates, "matmul_n": n,
            "cells": cells}


def format_graph(r):
    lines = [] if r["gpu"] else [("no GPU figure: no GPU here (the captured step ran as a check that it "
                                  "works; its times are CPU times)")]
    lines.append(f"{r['device_name']}, float32 {r['matmul_n']}^3: matmul "
                 f"{r['rates_gflops']['matmul']:.0f} GFLOP/s, GEMM kernel {r['rates_gflops']['gemm_kernel']:.0f} GFLOP/s")
    for c in r["cells"]:
        lines.append(f"captured AVB step ({c['mode']}), batch {c['batch']}, width {c['width']}: "
                     f"{c['ms_per_step']:.3f} ms/step; {c['fraction_of_matmul']:.3f} of the matmul rate, "
                     f"{c['fraction_of_gemm_kernel']:.3f} of the GEMM kernel's")
    return "\n".join(lines)


def sweep_steps(batch, width, budget_s=4.0):
    """Timed steps for one sweep cell: about budget_s of work at ~50 GFLOP/s, 3..30."""
    flops, _ = step_flops(bench_arch(width), batch)
    return int(min(30, max(3, budget_s * 50e9 / flops)))


def bench_sweep(batches=SWEEP_BATCHES, widths=SWEEP_WIDTHS, step="auto", negatives="pairs",
                budget_s=4.0, progress=None):
    """bench_step over batch x width; few timed steps for the big cells."""
    cells = []
    for B in batches:
        for W in widths:
            n = sweep_steps(B, W, budget_s)
            r = bench_step(B, W, steps=n, warmup=min(3, n), negatives=negatives, step=step)
            cells.append(r)
            if progress:
                progress(r)
    return {"cells": cells, "threads": _threads(), "step": cells[0]["step"] if cells else step}


def format_cell(r):
    return (f"AVB step ({r['step']}), batch {r['batch']}, width {r['width']}: {r['ms_per_step']:.2f} ms/step, "
            f"{r['gflop_per_step']:.3f} GFLOP/step (fixed rule) -> {r['achieved_gflops']:.1f} GFLOP/s; "
            f"sgemm 1024^3 (interleaved): {r['sgemm_gflops']:.1f} GFLOP/s; "
            f"fraction_of_peak {r['fraction_of_peak']:.3f} (in CPU time: {r['fraction_of_peak_cpu']:.3f})"
            + (f" (work actually done: {r['work_gflop_per_step']:.3f} GFLOP, "
               f"{r['work_fraction_of_peak']:.3f} of peak)" if r.get("work_gflop_per_step") else "")
            + f"; threads {r['threads']}, load {r['load_average_1min']:.2f}")


# ------------------------------------------------------------------ profile
def _products_fn(products):
    """A function running the step's dense-layer products alone, at its shapes and operand
    layouts (h W, h^T d, d W^T), into preallocated outputs."""
    rng = np.random.default_rng(0)
    ops = []
    for r, i, o, kind in products:
        if kind == "fwd":
            A, Bm, C = rng.standard_normal((r, i), np.float32), rng.standard_normal((i, o), np.float32), (r, o)
        elif kind == "dW":
            A, Bm, C = rng.standard_normal((r, i), np.float32).T, rng.standard_normal((r, o), np.float32), (i, o)
        else:
            A, Bm, C = rng.standard_normal((r, o), np.float32), rng.standard_normal((i, o), np.float32).T, (r, i)
        ops.append((A, Bm, np.empty(C, np.float32)))

    def run():
        for A, Bm, C in ops:
            np.dot(A, Bm, out=C)
    return run


def _elu_shapes(arch, batch, path):
    """(rows, width) of every hidden ELU layer of one step."""
    B = batch
    out = [(B, h) for h in arch.hidden] * 2 + [(B, h) for h in arch.adv_hidden]   # enc, dec, f
    out += [(2 * B, h) for h in arch.adv_hidden]                                   # g on [z_q; z_p]
    if path != "fast":
        out += [(B, h) for h in arch.adv_hidden]                                   # g, psi frozen
    return out


def _elu_fn(shapes, fast):
    """ELU forward and backward at the step's hidden-layer shapes: in place (fast path) or
    allocating, as the autograd primitive and its VJP do (readable path)."""
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal(s, np.float32) for s in shapes]
    work = [(a.copy(), a.copy(), np.empty_like(a)) for a in arrs]

    def run():                     # (repeating the in-place ops on one buffer costs the same)
        for a, (h, d, t) in zip(arrs, work):
            if fast:
                elu_(h, t)
                elu_grad_(d, h, t)
            else:
                elu_grad_(a.copy(), elu(a), np.empty_like(a))   # a fresh array each, as autograd's VJP
    return run


def _adam_fn(params, fast):
    """Both players' Adam updates: in place over flat buffers, or the pure pytree form."""
    cfg, calls = Adam(), []
    for tree in ({"enc": params["enc"], "dec": params["dec"]}, params["adv"]):
        st = adam_init(tree)
        if fast:
            p, g = flatten_to_vector(tree), flatten_to_vector(tree) * 1e-3
            tmp = np.empty_like(p)
            calls.append(lambda p=p, g=g, st=st, tmp=tmp: adam_update_(cfg, p, g, st, 1e-6, tmp))
        else:
            calls.append(lambda tree=tree, st=st: adam_step(cfg, tree, tree, st, 1e-6))

    def run():
        for c in calls:
            c()
    return run


def profile_step(batch=512, width=512, steps=15, step="auto", top=12):
    """Where one step's time goes: its matrix products alone (replayed at the same shapes and
    layouts), ELU forward + backward, the optimiser, and the rest (Python, autograd's tracing
    and VJP bookkeeping, allocation, the other elementwise work); every part is timed in turn
    with the step itself (round robin, medians), so that load from other jobs hits all alike.
    Plus cProfile's top entries."""
    arch, params, states, fn, batches = _setup(batch, width, "pairs", 0, step)
    path = "fast" if type(fn).__name__ == "FastAVBStep" else "readable"
    products = step_products(arch, batch, path)
    parts = {"matrix products": _products_fn(products),
             "ELU forward + backward": _elu_fn(_elu_shapes(arch, batch, path), path == "fast"),
             "optimiser (Adam)": _adam_fn(params, path == "fast")}
    times = {k: [] for k in ["step"] + list(parts)}     # CPU time (process_time): robust under load
    box = [params, states]

    def one_step(i=[0]):
        i[0] += 1
        box[0], box[1], _ = fn(box[0], box[1], *batches[i[0] % 4], 1.0)
    for rep in range(steps + 2):
        for k, f in [("step", one_step)] + list(parts.items()):
            t = time.process_time()
            f()
            if rep >= 2:
                times[k].append(time.process_time() - t)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    t_step = med.pop("step")
    med["rest (Python, autograd tracing, allocation, other elementwise)"] = t_step - sum(med.values())
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        one_step()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    flops, _ = step_flops(arch, batch)
    return {"batch": batch, "width": width, "step": path, "ms_per_step": t_step, "parts_ms": med,
            "products_gflop": work_flops(arch, batch, path) / 1e9,
            "rule_gflop": flops / 1e9, "threads": _threads(), "load_average_1min": _load(),
            "cprofile": s.getvalue()}


def format_profile(p):
    lines = [f"profile of one AVB step ({p['step']} path), batch {p['batch']}, width {p['width']}, "
             f"threads {p['threads']}, load {p['load_average_1min']:.2f}: {p['ms_per_step']:.1f} ms/step "
             f"(median CPU time)",
             f"  matrix products run: {p['products_gflop']:.2f} GFLOP (fixed rule: {p['rule_gflop']:.2f} GFLOP)"]
    for k, v in p["parts_ms"].items():
        lines.append(f"  {k:<66s} {v:8.2f} ms  {v / p['ms_per_step']:6.1%}")
    return "\n".join(lines)


# ------------------------------------------------------------------ plot
def sweep_figure(sweeps, path, key="fraction_of_peak"):
    """Grouped bars of fraction_of_peak (or `key`, e.g. 'fraction_of_peak_cpu') per
    (batch, width) cell, one bar per sweep.  sweeps: {label: bench_sweep result}."""
    return bench_sweep_figure(sweeps, path, key=key)


# ------------------------------------------------------------------ time to result
class _Reached(Exception):
    pass


def time_to_result(kind="avb_ac", seed=0, step="auto", target=-1.40, every=500, iters=None, device="cpu"):
    """Train `kind` on the 4-point data with the Table 1 settings (`experiments.table1_settings`)
    and return the training wall time (evaluation excluded) at which the exact log-likelihood
    (integration over the 2-d latent, 400 x 400 grid, as `train --curve-every`) first reaches
    `target`, checked every `every` iterations.  The run stops there; its learning-rate schedule
    is that of the full run.  device 'gpu': trained on the device (the captured step under
    'auto'), the decoder copied to the host for each evaluation.
    -> dict with seconds (None if never reached), iteration, curve."""
    arch, cfgs, _ = table1_settings()
    cfg = TrainConfig(**dict(cfgs[kind].__dict__, step=step, log_every=every,
                             iters=iters or cfgs[kind].iters))
    data = four_points()
    clock = {"start": time.perf_counter(), "eval": 0.0, "it": 0,
             "cpu_start": time.process_time(), "cpu_eval": 0.0}
    curve = []

    def eval_fn(p):
        t = time.perf_counter()
        clock["it"] += every
        c = time.process_time()
        train_s, train_cpu = t - clock["start"] - clock["eval"], c - clock["cpu_start"] - clock["cpu_eval"]
        ll = float(np.mean(E.exact_log_likelihood(tree_to_host(p["dec"]), data, arch, 400)))
        clock["eval"] += time.perf_counter() - t
        clock["cpu_eval"] += time.process_time() - c
        curve.append({"iteration": clock["it"], "train_seconds": train_s, "train_cpu_seconds": train_cpu,
                      "log_likelihood": ll})
        if ll >= target:
            raise _Reached()
        return {"log_likelihood": ll}

    reached = False
    try:
        train(kind, data, arch, cfg, seed=seed, eval_fn=eval_fn, eval_every=every, device=device)
    except _Reached:
        reached = True
    last = curve[-1] if curve else {}
    return {"kind": kind, "seed": seed, "step": step_path(kind, arch, cfg, device), "device": device,
            "device_name": device_name(device_module(device)),
            "target": target, "reached": reached,
            "seconds": last.get("train_seconds") if reached else None,
            "cpu_seconds": last.get("train_cpu_seconds") if reached else None,
            "iteration": last.get("iteration") if reached else None,
            "best_log_likelihood": max((c["log_likelihood"] for c in curve), default=None),
            "eval_seconds": clock["eval"], "curve": curve, "threads": _threads(),
            "load_average_1min": _load()}
