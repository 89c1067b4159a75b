"""The paper's experiments as functions that return numbers.

- `table1`: VAE, AVB and AVB + AC on the 4-point synthetic dataset (sec. 5.2, Table 1, Fig. 6).
- `bench_step`: the cost of one AVB training step (Algorithm 1) against this machine's
  float32 matrix-product rate.
"""
import json
import os
import time

import numpy as np

from . import evaluate as E
from . import models as M
from .data import four_points, sample_batch
from .nn import tree_flatten
from .train import TrainConfig, init_states, make_step, train

# Table 1 of the paper (seed 001): log-likelihood, reconstruction error, ELBO, KL(q(z), p(z)).
PAPER_TABLE1 = {
    "vae": {"log_likelihood": -1.568, "reconstruction_error": 88.5e-3, "elbo": -1.697, "kl_aggregate": 0.165},
    "avb": {"log_likelihood": -1.403, "reconstruction_error": 5.77e-3, "elbo": -1.421, "kl_aggregate": 0.026},
}
OPTIMUM_LL = -np.log(4.0)
METRICS = ("log_likelihood", "reconstruction_error", "elbo", "kl_aggregate")


def table1_settings(quick=False):
    """(arch, {kind: TrainConfig}, eval settings) for Table 1.  The full settings are
    the ones reported in the README; --quick is a smoke run (well under a minute)."""
    if quick:
        arch = M.Arch(hidden=(64, 64), adv_hidden=(64, 64), adv_dim=64, eps_dim=16, n_basis=8)
        cfgs = {k: TrainConfig(iters=400, batch=256, lr_gen=1e-3, lr_adv=2e-3, negatives="all_pairs",
                               log_every=100, checkpoint_every=400) for k in M.KINDS}
        return arch, cfgs, {"grid_n": 256, "n_samples": 4000}
    # 2 x 128 nets and batch 128: ~4x cheaper per step than the paper's 2 x 512 / 512,
    # so that ~25k iterations fit in the 5-minute budget per run on a 2-core CPU.
    arch = M.Arch(hidden=(128, 128), adv_hidden=(128, 128), adv_dim=128)
    base = dict(iters=25000, batch=128, lr_gen=3e-4, lr_adv=1e-3, negatives="all_pairs",
                decay_from=0.6, lr_final=0.1, log_every=500, checkpoint_every=2500)
    cfgs = {"vae": TrainConfig(**dict(base, lr_gen=1e-3)),
            "avb": TrainConfig(**base),
            "avb_ac": TrainConfig(**base)}
    return arch, cfgs, {"grid_n": 512, "n_samples": 10000}


def table1(seeds=(0,), quick=False, out_dir=None, kinds=M.KINDS, quiet=True, curve_every=None):
    """Train and evaluate each model kind for each seed.  Returns a dict with, per kind,
    the mean/std over seeds of every metric, the per-seed values and wall times."""
    arch, cfgs, ev = table1_settings(quick)
    data = four_points()
    results = {"settings": {"arch": arch.to_dict(), "quick": quick, "seeds": list(seeds),
                            "configs": {k: cfgs[k].__dict__ for k in kinds}, "eval": ev},
               "models": {}}
    for kind in kinds:
        runs = []
        for seed in seeds:
            ckpt = None if out_dir is None else os.path.join(out_dir, f"{kind}_seed{seed}.npz")
            eval_fn = None
            if curve_every:
                def eval_fn(p):
                    return {"log_likelihood": float(np.mean(E.exact_log_likelihood(p["dec"], data, arch, 400)))}
            params, info = train(kind, data, arch, cfgs[kind], seed=seed, checkpoint=ckpt, quiet=quiet,
                                 eval_fn=eval_fn, eval_every=curve_every or 0,
                                 desc=f"{kind} seed {seed}")
            res = E.evaluate_model(params, kind, data, arch, np.random.default_rng(10_000 + seed),
                                   grid_n=ev["grid_n"], n_samples=ev["n_samples"])
            res["wall_seconds"] = info["wall_seconds"]
            res["seed"] = seed
            res["params"] = params
            res["history"] = info["history"]
            runs.append(res)
        summary = {}
        for key in METRICS + ("wall_seconds", "elbo_adversary", "ll_refinement_change"):
            vals = [r[key] for r in runs if key in r]
            if vals:
                summary[key] = float(np.mean(vals))
                summary[key + "_std"] = float(np.std(vals))
        summary["runs"] = [{k: v for k, v in r.items() if k not in ("params", "history")} for r in runs]
        summary["curves"] = [r["history"] for r in runs] if curve_every else []
        summary["_params"] = [r["params"] for r in runs]
        results["models"][kind] = summary
    return results


def format_table1(results):
    """The paper's Table 1 with our numbers (mean +- std over seeds) beside it."""
    kinds = list(results["models"])
    rows = [("log-likelihood", "log_likelihood", 1, "{:.3f}"),
            ("reconstruction error (x1e-3)", "reconstruction_error", 1e3, "{:.2f}"),
            ("ELBO", "elbo", 1, "{:.3f}"),
            ("  ELBO from T (not a bound)", "elbo_adversary", 1, "{:.3f}"),
            ("KL(q(z), p(z))", "kl_aggregate", 1, "{:.3f}"),
            ("wall seconds per run", "wall_seconds", 1, "{:.0f}")]
    head = ["quantity"] + [f"paper {k}" for k in ("vae", "avb")] + [f"ours {k}" for k in kinds]
    lines = []
    for label, key, scale, fmt in rows:
        cells = [label]
        for k in ("vae", "avb"):
            v = PAPER_TABLE1[k].get(key)
            cells.append("-" if v is None else fmt.format(v * scale))
        for k in kinds:
            s = results["models"][k]
            if key not in s:
                cells.append("-")
            else:
                cell = fmt.format(s[key] * scale)
                if len(results["settings"]["seeds"]) > 1 and key != "wall_seconds":
                    cell += " +- " + fmt.format(s[key + "_std"] * scale)
                cells.append(cell)
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    out.append(f"optimum log-likelihood: -log 4 = {OPTIMUM_LL:.3f}; "
               f"largest grid-refinement change of the log-likelihood: "
               f"{max(results['models'][k].get('ll_refinement_change', 0) for k in kinds):.1e} nats")
    return "\n".join(out)


def table1_json(results):
    """JSON-able view: per model the keys log_likelihood, reconstruction_error, elbo,
    kl_aggregate, wall_seconds (means over seeds) plus stds, per-seed runs and settings."""
    out = {"settings": results["settings"], "paper": PAPER_TABLE1}
    for k, s in results["models"].items():
        out[k] = {key: v for key, v in s.items() if not key.startswith("_")}
    return out


# ------------------------------------------------------------------ bench step
def _layer_sizes(params):
    """sum of in*out over a net's dense layers (the P of the FLOP rule)."""
    return int(sum(W.shape[0] * W.shape[1] for W in tree_flatten(params) if W.ndim == 2))


def step_flops(arch, batch):
    """The issue's fixed FLOP rule for one AVB step:
    2 * B * (3 P_enc + 3 P_dec + 2 P_f + 5 P_g), P = sum of in*out over dense layers."""
    p = M.init_params(np.random.default_rng(0), "avb", arch)
    P = {k: _layer_sizes(v) for k, v in (("enc", p["enc"]), ("dec", p["dec"]),
                                          ("f", p["adv"]["f"]), ("g", p["adv"]["g"]))}
    return 2 * batch * (3 * P["enc"] + 3 * P["dec"] + 2 * P["f"] + 5 * P["g"]), P


def sgemm_gflops(n=1024, reps=20, rng=None):
    """Measured float32 matrix-product rate of an n x n product (median of reps), in GFLOP/s."""
    rng = rng or np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def bench_step(batch=512, width=512, steps=30, warmup=5, negatives="pairs", seed=0):
    """Time one simultaneous AVB step (Algorithm 1, paper widths by default: 2 x width
    encoder and decoder, inner-product adversary of two 2 x width nets, float32)."""
    arch = M.Arch(hidden=(width, width), adv_hidden=(width, width), adv_dim=width)
    cfg = TrainConfig(iters=steps + warmup, batch=batch, negatives=negatives)
    rng = np.random.default_rng(seed)
    params = M.init_params(rng, "avb", arch)
    states = init_states("avb", params)
    step = make_step("avb", arch, cfg)
    data = four_points()
    batches = [(sample_batch(rng, data, batch), M.sample_noise(rng, "avb", arch, batch),
                rng.standard_normal((batch, arch.z_dim)).astype(np.float32)) for _ in range(4)]
    gemm_before = sgemm_gflops()
    times = []
    for i in range(warmup + steps):
        x, noise, zn = batches[i % 4]
        t = time.perf_counter()
        params, states, _ = step(params, states, x, noise, zn, 1.0)
        times.append(time.perf_counter() - t)
    gemm_after = sgemm_gflops()
    ms = float(np.median(times[warmup:])) * 1e3
    flops, P = step_flops(arch, batch)
    peak = max(gemm_before, gemm_after)
    return {"batch": batch, "width": width, "ms_per_step": ms, "gflop_per_step": flops / 1e9,
            "sgemm_gflops": peak, "achieved_gflops": flops / 1e9 / (ms / 1e3),
            "fraction_of_peak": flops / 1e9 / (ms / 1e3) / peak,
            "layer_sizes": P, "steps": steps, "negatives": negatives,
            "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}


def write_json(path, obj):
    """Write JSON atomically (temporary file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
    os.replace(tmp, path)
