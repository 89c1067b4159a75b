"""The paper's experiments as functions that return numbers.

- `table1`: VAE, AVB and AVB + AC on the 4-point synthetic dataset (sec. 5.2, Table 1, Fig. 6),
  and on request the Biadversarial VAE of Fickinger ('bavae', `bavae.train_bavae`).
- `bench_step` (from bench_step.py): the cost of one AVB training step (Algorithm 1)
  against this machine's float32 matrix-product rate.
"""
import os

import numpy as np

from .. import bavae as BV
from .. import evaluate as E
from .. import models as M
from ..backend import tree_to_host
from ..data import four_points
from ..train import TrainConfig, train

# Table 1 of the AVB paper: log-likelihood, reconstruction error, ELBO, KL(q(z), p(z)).
PAPER_TABLE1 = {
    "vae": {"log_likelihood": -1.568, "reconstruction_error": 88.5e-3, "elbo": -1.697, "kl_aggregate": 0.165},
    "avb": {"log_likelihood": -1.403, "reconstruction_error": 5.77e-3, "elbo": -1.421, "kl_aggregate": 0.026},
}
OPTIMUM_LL = -np.log(4.0)
METRICS = ("log_likelihood", "reconstruction_error", "elbo", "kl_aggregate")
TABLE1_KINDS = M.KINDS + (BV.KIND,)        # 'bavae': the Biadversarial VAE (Fickinger)


SMOKE_ITERS = 400   # a smoke run of the quick settings: what the tests and the chapters' --quick train


def table1_settings(quick=False, iters=None):
    """(arch, {kind: TrainConfig}, eval settings) for Table 1.  The full settings are the ones
    reported in the README (about 25 minutes for 3 seeds).  quick=True is the short run of the
    README's first command: 2 x 64 nets, batch 256, 3000 iterations with the learning rates
    decaying linearly to 5% over the second half, about a minute for the three models on a
    2-core CPU, and enough for the paper's ranking (AVB + AC and AVB above the VAE in exact
    log-likelihood), though not for the paper's numbers.  iters: train this many iterations
    instead (e.g. SMOKE_ITERS, a smoke run in seconds), the schedule scaled with it."""
    if quick:
        arch = M.Arch(hidden=(64, 64), adv_hidden=(64, 64), adv_dim=64, eps_dim=16, n_basis=8)
        base = dict(iters=3000, batch=256, lr_gen=1e-3, lr_adv=2e-3, negatives="all_pairs",
                    decay_from=0.5, lr_final=0.05, log_every=100, checkpoint_every=1000)
        ev = {"grid_n": 256, "n_samples": 4000}
    else:
        # 2 x 128 nets and batch 128: ~4x cheaper per step than the paper's 2 x 512 / 512,
        # so that ~25k iterations fit in the 5-minute budget per run on a 2-core CPU.
        arch = M.Arch(hidden=(128, 128), adv_hidden=(128, 128), adv_dim=128)
        base = dict(iters=25000, batch=128, lr_gen=3e-4, lr_adv=1e-3, negatives="all_pairs",
                    decay_from=0.6, lr_final=0.1, log_every=500, checkpoint_every=2500)
        ev = {"grid_n": 512, "n_samples": 10000}
    if iters is not None:
        base.update(iters=iters, log_every=min(base["log_every"], iters),
                    checkpoint_every=min(base["checkpoint_every"], iters))
    cfgs = {"vae": TrainConfig(**dict(base, lr_gen=1e-3)),     # the VAE learns faster at 1e-3
            "avb": TrainConfig(**base),
            "avb_ac": TrainConfig(**base),
            "bavae": TrainConfig(**base)}         # AVB's settings; lr_adv serves both adversaries
    return arch, cfgs, ev


def loglik_curve_fn(data, arch, grid_n=400):
    """eval_fn for `train.train`: the exact log-likelihood on a grid_n^2 grid (--curve-every)."""
    def eval_fn(p):
        return {"log_likelihood": float(np.mean(E.exact_log_likelihood(p["dec"], data, arch, grid_n)))}
    return eval_fn


def train_and_evaluate(kind, data, arch, cfg, ev, seed=0, **opts):
    """Train one model of TABLE1_KINDS (resumable: see `train.train`, options passed on, the
    device among them) and evaluate it on the host with the Table 1 quantities (rng
    10_000 + seed).  -> (params on the host, info, results)."""
    ev_rng = np.random.default_rng(10_000 + seed)
    if kind == BV.KIND:                               # two adversaries, eq. (6) and (14) of the BAVAE
        params, info = BV.train_bavae(data, arch, cfg, seed=seed, **opts)
        params = tree_to_host(params)
        return params, info, BV.evaluate_bavae(params, data, arch, ev_rng, ev["grid_n"], ev["n_samples"])
    params, info = train(kind, data, arch, cfg, seed=seed, **opts)
    params = tree_to_host(params)                     # the evaluation integrates on a grid, on the host
    return params, info, E.evaluate_model(params, kind, data, arch, ev_rng, grid_n=ev["grid_n"],
                                          n_samples=ev["n_samples"])


def table1(seeds=(0,), quick=False, out_dir=None, kinds=M.KINDS, quiet=True, curve_every=None, device="cpu",
           step="auto"):
    """Train and evaluate each model kind for each seed.  Returns a dict with, per kind,
    the mean/std over seeds of every metric (std None with one seed: there is no spread to
    measure), the per-seed values and wall times.  step: `train.TrainConfig.step`."""
    bad = [k for k in kinds if k not in TABLE1_KINDS]
    if bad:
        raise ValueError(f"unknown model kind(s) {bad}; table1 knows {', '.join(TABLE1_KINDS)}")
    arch, cfgs, ev = table1_settings(quick)
    cfgs = {k: TrainConfig(**dict(c.__dict__, step=step)) for k, c in cfgs.items()}
    data = four_points()
    results = {"settings": {"arch": arch.to_dict(), "quick": quick, "seeds": list(seeds), "device": device,
                            "configs": {k: cfgs[k].__dict__ for k in kinds}, "eval": ev},
               "models": {}}
    for kind in kinds:
        runs = []
        for seed in seeds:
            name = f"{kind}_seed{seed}" + ("_quick" if quick else "")          # quick and full runs apart
            ckpt = None if out_dir is None else os.path.join(out_dir, name + ".npz")
            eval_fn = loglik_curve_fn(data, arch) if curve_every else None
            opts = dict(seed=seed, checkpoint=ckpt, quiet=quiet, eval_fn=eval_fn,
                        eval_every=curve_every or 0, desc=f"{kind} seed {seed}", device=device)
            params, info, res = train_and_evaluate(kind, data, arch, cfgs[kind], ev, **opts)
            res["wall_seconds"] = info["wall_seconds"]
            res["seed"] = seed
            res["params"] = params
            res["history"] = info["history"]
            runs.append(res)
        summary = {}
        for key in METRICS + ("wall_seconds", "elbo_from_T", "ll_refinement_change"):
            vals = [r[key] for r in runs if key in r]
            if vals:
                summary[key] = float(np.mean(vals))
                summary[key + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
        summary["runs"] = [{k: v for k, v in r.items() if k not in ("params", "history")} for r in runs]
        summary["curves"] = [r["history"] for r in runs] if curve_every else []
        summary["_params"] = [r["params"] for r in runs]
        results["models"][kind] = summary
    return results


def format_table1(results):
    """The paper's Table 1 with our numbers (mean +- std over seeds; one seed: no +-) beside it."""
    kinds = list(results["models"])
    rows = [("log-likelihood", "log_likelihood", 1, "{:.3f}"),
            ("reconstruction error (x1e-3)", "reconstruction_error", 1e3, "{:.2f}"),
            ("ELBO", "elbo", 1, "{:.3f}"),
            ("  ELBO from T (not a bound)", "elbo_from_T", 1, "{:.3f}"),
            ("KL(q(z), p(z))", "kl_aggregate", 1, "{:.3f}"),
            ("wall seconds per run", "wall_seconds", 1, "{:.0f}")]
    head = ["quantity"] + [f"paper {k}" for k in ("vae", "avb")] + [f"ours {k}" for k in kinds]
    lines = []
    out = []
    st = results["settings"]
    if st.get("quick") and "configs" in st:             # the caveat goes above the table
        iters = max(c["iters"] for c in st["configs"].values())
        out.append(f"short run ({iters} iterations, 2 x 64 nets, {len(st['seeds'])} seed(s)): it shows the "
                   "paper's ranking, not its numbers; the full run is `python -m avb_minimal reproduce "
                   "table1 --seeds 3` (about 25 minutes on a 2-core CPU)")
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
                if s.get(key + "_std") is not None and key != "wall_seconds":
                    cell += " +- " + fmt.format(s[key + "_std"] * scale)
                cells.append(cell)
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]
    out += ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
            "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    out.append(f"optimum log-likelihood: -log 4 = {OPTIMUM_LL:.3f}; "
               f"largest grid-refinement change of the log-likelihood: "
               f"{max(results['models'][k].get('ll_refinement_change', 0) for k in kinds):.1e} nats")
    return "\n".join(out)


def table1_json(results):
    """JSON-able view: per model the keys log_likelihood, reconstruction_error, elbo,
    kl_aggregate, elbo_from_T, wall_seconds (means over seeds) plus stds (null with one seed),
    per-seed runs and settings."""
    out = {"settings": results["settings"], "paper": PAPER_TABLE1}
    for k, s in results["models"].items():
        out[k] = {key: v for key, v in s.items() if not key.startswith("_")}
    return out
