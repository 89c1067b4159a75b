"""The study behind Table 2: which settings let AVB (+ AC) match a VAE with the same decoder?

Short screening runs (`screen_run`): one model of `experiments.mnist` with some of its
settings changed (a *variant*: the adversary's width and depth, adversary steps per
generator step, the two learning rates and their decay, batch size, length, adaptive
contrast's variance floor), trained to a checkpoint and scored by AIS
(`ais.ais_log_likelihood`, the full protocol of 1000 distributions and 5 chains) on the
first rows of the evaluation split.  Every run keeps
its per-image AIS values, so that two models are compared by a *paired* difference
over the same images (`paired_difference`): the spread between images, which is much
larger than the difference between models, cancels.

Each run writes OUT/<variant>_<kind>_<iters>_seed<S>.json (and its checkpoint beside it);
a run whose JSON exists is skipped, so a study can be split over processes and resumed.
`study_table` gathers the JSONs into one table and record.
"""
import glob
import json
import os
import time

import numpy as np

from .. import models as M
from ..ais import ais_log_likelihood
from ..checkpoint import write_json
from ..train import TrainConfig, train
from .mnist import mnist_arch, mnist_config, paired_difference

# name -> (kinds it applies to, Arch changes, TrainConfig changes), relative to mnist.py's
# settings; 'base' is the setting AVB was first run with (lr 2e-4 / 5e-4), 'lr1e-3' Table 2's now.
VARIANTS = {
    "base": (("avb", "avb_ac"), {}, {"lr_gen": 2e-4, "lr_adv": 5e-4}),
    "lr1e-3": (M.KINDS, {}, {"lr_gen": 1e-3, "lr_adv": 1e-3}),
    "vae_lr3e-4": (("vae",), {}, {"lr_gen": 3e-4}),
    "vae_lr2e-3": (("vae",), {}, {"lr_gen": 2e-3}),
    "lr1e-3_adv3e-3": (("avb", "avb_ac"), {}, {"lr_gen": 1e-3, "lr_adv": 3e-3}),
    "lr1e-3_k2": (("avb", "avb_ac"), {}, {"lr_gen": 1e-3, "lr_adv": 1e-3, "adv_steps": 2}),
    "lr1e-3_wide": (("avb", "avb_ac"), {"adv_hidden": (512, 512, 512), "adv_dim": 512},
                    {"lr_gen": 1e-3, "lr_adv": 1e-3}),
    "lr1e-3_b256": (("avb", "avb_ac"), {}, {"lr_gen": 1e-3, "lr_adv": 1e-3, "batch": 256}),
    "lr1e-3_nodecay": (("avb", "avb_ac"), {}, {"lr_gen": 1e-3, "lr_adv": 1e-3, "decay_from": 1.0}),
    "lr1e-3_floor1e-2": (("avb_ac",), {"ac_var_floor": 1e-2}, {"lr_gen": 1e-3, "lr_adv": 1e-3}),
}


def variant_settings(variant, kind, latent=8, iters=10000, quick=False):
    """(Arch, TrainConfig) of one variant of one model, at `iters` iterations (quick: on the
    small nets of `mnist_arch(quick=True)`, for tests)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    kinds, arch_changes, cfg_changes = VARIANTS[variant]
    if kind not in kinds:
        raise ValueError(f"variant {variant!r} applies to {', '.join(kinds)}, not {kind!r}")
    arch = M.Arch(**dict(mnist_arch(latent, quick).to_dict(), **arch_changes))
    cfg = TrainConfig(**dict(mnist_config(kind, quick).__dict__, **cfg_changes, iters=int(iters),
                             checkpoint_every=min(2000, int(iters)), log_every=min(500, int(iters))))
    return arch, cfg


def bench_steps(x_train, kinds=("avb", "avb_ac"), iters=200, latent=8):
    """Time per training iteration of Table 2's models on the readable (autograd) and the fast
    (hand-written) step, over `iters` iterations after 10 of warm-up: wall and CPU
    milliseconds (the CPU time is the robust one on a busy machine).
    -> {kind: {step: {'wall_ms': , 'cpu_ms': }}}."""
    out = {}
    for kind in kinds:
        out[kind] = {}
        for step in ("readable", "fast"):
            cfg = TrainConfig(**dict(mnist_config(kind).__dict__, iters=iters + 10, step=step,
                                     log_every=10, checkpoint_every=iters + 10))
            marks = []                             # (wall, cpu) at iteration 10 and at the end
            train(kind, x_train, mnist_arch(latent), cfg, eval_every=10,
                  eval_fn=lambda p: marks.append((time.perf_counter(), time.process_time())) or {})
            (w0, c0), (w1, c1) = marks[0], marks[-1]
            out[kind][step] = {"wall_ms": 1e3 * (w1 - w0) / iters, "cpu_ms": 1e3 * (c1 - c0) / iters}
    return out


def run_name(variant, kind, iters, seed, latent=8, quick=False):
    return f"{variant}_{kind}_{iters}{f'_z{latent}' if latent != 8 else ''}_seed{seed}{'_quick' if quick else ''}"


def screen_run(variant, kind, x_train, x_eval, out_dir, iters=10000, seed=0, latent=8, ais_steps=1000,
               ais_chains=5, quiet=True, quick=False):
    """Train (or resume) one variant and score it by AIS on x_eval; writes and returns its record
    (skipped, returning the stored record, when its JSON exists)."""
    name = run_name(variant, kind, iters, seed, latent, quick)
    path = os.path.join(out_dir, name + ".json")
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    arch, cfg = variant_settings(variant, kind, latent, iters, quick)
    os.makedirs(out_dir, exist_ok=True)
    params, info = train(kind, x_train, arch, cfg, seed=seed, checkpoint=os.path.join(out_dir, name + ".npz"),
                         quiet=quiet, desc=name)
    t0 = time.perf_counter()
    a = ais_log_likelihood(params, kind, x_eval, arch, np.random.default_rng(10_000 + seed), n_steps=ais_steps,
                           n_chains=ais_chains, quiet=quiet, desc=f"AIS {name}")
    ll = a["log_likelihood"]
    rec = {"variant": variant, "kind": kind, "seed": seed, "latent": latent, "iters": int(iters), "quick": quick,
           "arch_changes": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[variant][1].items()},
           "config_changes": VARIANTS[variant][2], "config": cfg.__dict__, "n_eval": int(ll.shape[0]),
           "ais_steps": ais_steps, "ais_chains": ais_chains,
           "ais_log_likelihood": float(ll.mean()), "ais_log_likelihood_sem": float(ll.std(ddof=1) / np.sqrt(ll.size)),
           "ais_per_example": [round(float(v), 4) for v in ll],
           "train_seconds": info["wall_seconds"], "ais_seconds": time.perf_counter() - t0,
           "final_history": info["history"][-1] if info["history"] else None}
    write_json(path, rec)
    return rec


def study_table(out_dir, reference="lr1e-3", full_length=()):
    """Gather OUT/*.json into rows per (variant, kind, iters, latent, images): the mean over
    seeds of the AIS log-likelihood, its seeds, and the paired difference to the same model
    under the `reference` variant (Table 2's settings) at the same length, latent size, images
    and seeds: does a lever move a model, and by how much.  `full_length`: Table 2 records
    (`reproduce mnist --json`) whose models join as runs of the reference variant
    (`table2_runs`); a reference row longer than the screening runs is compared with the
    reference at the screening length (training length as a lever)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        with open(path) as fh:
            r = json.load(fh)
        if isinstance(r, dict) and "variant" in r:
            runs.append(r)
    n_evals = sorted({r["n_eval"] for r in runs})
    for path in full_length:
        runs += table2_runs(path, n_evals, reference)
    groups = {}
    for r in runs:
        key = (r["variant"], r["kind"], r["iters"], r["latent"], r["n_eval"], r.get("quick", False))
        groups.setdefault(key, []).append(r)
    rows = []
    for (variant, kind, iters, latent, n_eval, quick), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rs = sorted(rs, key=lambda r: r["seed"])
        row = {"variant": variant, "kind": kind, "iters": iters, "latent": latent, "n_eval": n_eval,
               "seeds": [r["seed"] for r in rs], "changes": _changes(rs[0]),
               "ais_log_likelihood": float(np.mean([r["ais_log_likelihood"] for r in rs])),
               "ais_per_seed": [r["ais_log_likelihood"] for r in rs],
               "ais_per_example_by_seed": {str(r["seed"]): r["ais_per_example"] for r in rs},
               **({"source": rs[0]["source"]} if "source" in rs[0] else
                  {"train_seconds_per_iter": float(np.mean([r["train_seconds"] / r["iters"] for r in rs]))})}
        if variant != reference:
            ref_iters = iters
        else:                                   # the reference itself: against its shorter runs
            ref_iters = max([k[2] for k in groups if k[:2] == (reference, kind) and k[2] < iters
                             and k[3:] == (latent, n_eval, quick)], default=None)
        ref = {r["seed"]: r for r in groups.get((reference, kind, ref_iters, latent, n_eval, quick), [])}
        seeds = [r["seed"] for r in rs if r["seed"] in ref]
        if seeds and ref_iters is not None:
            mine = {r["seed"]: r for r in rs}
            d, se = paired_difference([mine[s]["ais_per_example"] for s in seeds],
                                      [ref[s]["ais_per_example"] for s in seeds])
            row.update(vs_reference=d, vs_reference_se=se, vs_reference_seeds=seeds)
            if ref_iters != iters:
                row["vs_reference_iters"] = ref_iters
        rows.append(row)
    return {"reference": reference, "rows": rows, "vs_vae": _against_the_vae(rows, reference)}


def table2_runs(results_json, n_evals, variant="lr1e-3"):
    """The models of a Table 2 record (`reproduce mnist --json`: full length, one seed, the
    settings of `variant`) as study runs scored on the first n images, n in n_evals."""
    with open(results_json) as fh:
        rec = json.load(fh)
    settings = rec.get("settings", {})
    if settings.get("quick") or "iterations" not in settings:
        raise ValueError(f"{results_json}: not the record of a full reproduce mnist run")
    runs = []
    for kind, iters in sorted(settings["iterations"].items()):
        per = rec.get(kind, {}).get("ais_per_example") or []
        for n in n_evals:
            if len(per) >= n:
                runs.append({"variant": variant, "kind": kind, "seed": settings["seed"], "latent": settings["latent"],
                             "iters": int(iters), "quick": False, "n_eval": n, "arch_changes": {},
                             "config": mnist_config(kind).__dict__, "ais_log_likelihood": float(np.mean(per[:n])),
                             "ais_per_example": per[:n], "source": results_json})
    return runs


def _against_the_vae(rows, reference):
    """AVB + AC at the reference settings against each VAE row of the same length, latent size
    and images, paired over their shared seeds: Table 2's claim under every VAE setting that ran."""
    out = []
    for a in rows:
        for v in rows:
            if (a["kind"], a["variant"], v["kind"]) != ("avb_ac", reference, "vae") or \
                    (a["iters"], a["latent"], a["n_eval"]) != (v["iters"], v["latent"], v["n_eval"]):
                continue
            seeds = [s for s in a["seeds"] if s in v["seeds"]]
            if seeds:
                d, se = paired_difference([a["ais_per_example_by_seed"][str(s)] for s in seeds],
                                          [v["ais_per_example_by_seed"][str(s)] for s in seeds])
                out.append({"avb_ac": a["variant"], "vae": v["variant"], "iters": a["iters"], "latent": a["latent"],
                            "n_eval": a["n_eval"], "seeds": seeds, "difference": d, "se": se})
    return out


def _changes(rec):
    """What a run changed against Table 2's settings now (`mnist.mnist_config`), read from the
    configuration it recorded, plus its architecture changes."""
    now = mnist_config(rec["kind"], rec.get("quick", False)).__dict__
    skip = ("iters", "log_every", "checkpoint_every", "step")
    return {**rec["arch_changes"], **{k: v for k, v in rec["config"].items() if k not in skip and now.get(k) != v}}


def format_study(table):
    """The study's rows as a Markdown table."""
    head = (f"| model | variant | changes to Table 2's settings | iterations | seeds | images | AIS log p(x) | "
            f"minus the same model at {table['reference']} (paired, +- s.e.) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        ch = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        d = (f"{r['vs_reference']:+.2f} +- {r['vs_reference_se']:.2f}" if "vs_reference" in r else "-")
        if "vs_reference_iters" in r:
            d += f" (against {r['vs_reference_iters']} iterations)"
        lines.append(f"| {r['kind']} | {r['variant']}{' (Table 2)' if 'source' in r else ''} | {ch} | {r['iters']} | "
                     f"{','.join(map(str, r['seeds']))} | {r['n_eval']} | {r['ais_log_likelihood']:.2f} | {d} |")
    for i, c in enumerate(table.get("vs_vae", [])):
        lines.append(f"{'' if i else chr(10)}avb_ac ({c['avb_ac']}) - vae ({c['vae']}), {c['iters']} iterations, paired over the first "
                     f"{c['n_eval']} images, seeds {','.join(map(str, c['seeds']))}: {c['difference']:+.2f} +- {c['se']:.2f}")
    return "\n".join(lines)
