"""The Eight Schools experiment of sec. 5.1 (Figures 3 and 4) as a function returning numbers.

1. Ground truth: HMC (`mcmc.hmc`), many chains, split R-hat / ESS / divergences reported.
2. AVB with adaptive contrast (`vi.fit_avb`), mean-field and full-rank Gaussian VB
   (`vi.fit_gaussian_vb`), each for several seeds.
3. Each method is scored by its KL to the HMC samples, KL(q || p_HMC), with the
   two-sample k-NN estimator (`evaluate.knn_kl`, what the paper's ITE package
   computes) on 10,000 samples of each, along training (Figure 3) and at the end;
   plus the fraction of each method's mass on tau < 0 (the true posterior is
   symmetric under (tau, eta) -> (-tau, -eta): exactly 1/2).
4. Figure 4: the (mu, tau) and (tau, eta_1) marginals of each method beside HMC.

`run_eight_schools` returns a JSON-able dict; `format_eight_schools` renders it.
"""
import os
import time

import numpy as np
from scipy.stats import gaussian_kde

from .. import mcmc, vi
from .. import targets as TG
from ..checkpoint import write_json
from .plots import plt  # pyplot on the Agg backend, set up once in plots

METHODS = ("avb", "meanfield", "fullrank")
TITLES = {"avb": "AVB (adaptive contrast)", "meanfield": "VB (mean-field)",
          "fullrank": "VB (full-rank)", "hmc": "HMC (ground truth)"}
# the targets (benchmarks, not tests)
TARGET_TAU_NEG = (0.35, 0.65)
TARGET_RHAT = 1.01
TARGET_WALL_SECONDS = 600.0


def eight_schools_settings(quick=False):
    """All settings of the run.  Full: what the README reports (fits in 10 minutes on a
    2-core CPU); quick: a smoke run of a few seconds.

    AVB deviates from the authors' settings (residual adversary 256 wide x 5 blocks,
    batch 512, Adam 1e-4 / 2e-4, 10k iterations; `vi.AVBConfig()`), which take
    ~0.15 s per iteration here, i.e. 25 minutes per seed: a 128-wide adversary with
    two residual blocks, batch 256, Adam 1e-3 / 2e-3 (beta1 = 0.5) decaying linearly
    to a tenth over the second half, 3000 iterations.  Kept: sampler eps (10-d) ->
    2 x 128 ELU -> 10, two adversary steps per sampler step, adaptive contrast on."""
    if quick:
        return {"quick": True,
                "hmc": dict(chains=16, n_warmup=150, n_samples=150, n_leapfrog=12, target_accept=0.9),
                "avb": vi.AVBConfig(iters=150, batch=128, hidden=(32, 32), adv_width=32, adv_blocks=1,
                                    lr_gen=1e-3, lr_adv=2e-3, decay_from=0.5, log_every=25),
                "vb": dict(iters=300, batch=64, lr=2e-2, decay_from=0.5, log_every=25),
                "n_kl": 1000, "n_kl_curve": 1000, "curve_every": 75, "k": 5, "n_plot": 1500}
    return {"quick": False,
            "hmc": dict(chains=64, n_warmup=1000, n_samples=3000, n_leapfrog=16, target_accept=0.9),
            "avb": vi.AVBConfig(iters=3000, batch=256, hidden=(128, 128), adv_width=128, adv_blocks=2,
                                lr_gen=1e-3, lr_adv=2e-3, decay_from=0.5, log_every=50),
            "vb": dict(iters=3000, batch=128, lr=1e-2, decay_from=0.5, log_every=50),
            "n_kl": 10000, "n_kl_curve": 5000, "curve_every": 250, "k": 5, "n_plot": 5000}


def _settings_json(s):
    out = dict(s)
    out["avb"] = s["avb"].to_dict()
    return out


# ------------------------------------------------------------------ steps
def hmc_ground_truth(target, settings, seed=0, quiet=True):
    """Run HMC from overdispersed starting points (N(0, 2^2 I)).  Returns the mcmc.hmc dict
    (samples (C, S, d) included)."""
    h = settings["hmc"]
    init = 2.0 * np.random.default_rng(10_000 + seed).standard_normal((h["chains"], target.dim))
    return mcmc.hmc(target, init, n_samples=h["n_samples"], n_warmup=h["n_warmup"],
                  n_leapfrog=h["n_leapfrog"], target_accept=h["target_accept"], seed=seed,
                  quiet=quiet, desc="hmc")


def reference_samples(hmc_result, n, seed=0):
    """n draws taken at random (without replacement) from all chains' draws.  -> (n, d)."""
    s = hmc_result["samples"].reshape(-1, hmc_result["samples"].shape[-1])
    rng = np.random.default_rng(20_000 + seed)
    return s[rng.choice(s.shape[0], size=min(n, s.shape[0]), replace=False)]


def fit_method(method, target, settings, seed, ref_curve, quiet=True, device="cpu"):
    """Fit one method with one seed, recording KL(q || HMC) every curve_every iterations.
    Returns (sample_fn(rng, n) -> (n, d), info)."""
    k, n_curve = settings["k"], settings["n_kl_curve"]

    def curve_point(sample):
        q = sample(np.random.default_rng(30_000 + seed), n_curve)
        return {"kl_to_hmc": vi.kl_to_samples(q, ref_curve, k)}

    every = settings["curve_every"]
    if method == "avb":
        cfg = settings["avb"]
        params, info = vi.fit_avb(target, cfg=cfg, seed=seed, quiet=quiet, desc=f"avb seed {seed}", device=device,
                                  eval_fn=lambda p: curve_point(lambda r, n: vi.sample_avb(p, r, n)),
                                  eval_every=every)
        return (lambda r, n: vi.sample_avb(params, r, n)), info
    if method in vi.FAMILIES:
        cfg = vi.VBConfig(family=method, **settings["vb"])
        params, info = vi.fit_gaussian_vb(
            target, cfg=cfg, seed=seed, quiet=quiet, desc=f"{method} seed {seed}", device=device,
            eval_fn=lambda p: curve_point(lambda r, n: vi.sample_gaussian_vb(p, r, n)), eval_every=every)
        info["params"] = {k_: v.tolist() for k_, v in params.items()}
        return (lambda r, n: vi.sample_gaussian_vb(params, r, n)), info
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ------------------------------------------------------------------ the experiment
def run_eight_schools(quick=False, seeds=(0, 1, 2), out_dir="runs/eight_schools", quiet=True,
                      methods=METHODS, hmc_seed=0, json_path=None, device="cpu"):
    """HMC ground truth, then AVB, mean-field and full-rank VB for each seed.

    Returns a JSON-able dict with keys
      kl_to_hmc[method]:   final (mean over seeds), std, per_seed, curve {iteration, per_seed, mean}
      kl_from_hmc[method]: the other direction KL(p_HMC || q), final values only
      fraction_tau_negative[method]: mean, per_seed (truth: 0.5)
      wall_seconds:        total, hmc, and per method the per-seed training times
      hmc:                 diagnostics (rhat, rhat_rank, ess per coordinate, divergences, ...)
      kl_floor:            KL between two disjoint HMC subsamples: the estimator's noise floor
      targets:             the issue's benchmarks, each with its measured value and met flag
      figures:             paths of Figure 3 (KL curves) and Figure 4 (marginals), PNG
    out_dir: where the figures (and results.json if json_path is None) go; None: no files.
    device: where AVB and Gaussian VB train ('cpu' or 'gpu'); HMC, the ground truth, runs on
    the host.
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must be a subset of {METHODS}, got {m!r}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    t_start = time.perf_counter()
    settings = eight_schools_settings(quick)
    target = TG.eight_schools()
    labels = list(target.labels)

    # 1. ground truth
    h = hmc_ground_truth(target, settings, hmc_seed, quiet)
    ref = reference_samples(h, settings["n_kl"], 0)
    ref_curve = ref[:settings["n_kl_curve"]]
    other = reference_samples(h, 2 * settings["n_kl"], 1)[settings["n_kl"]:]
    kl_floor = vi.kl_to_samples(other, ref, settings["k"]) if other.shape[0] > settings["k"] + 1 else None
    hmc_draws = h["samples"].reshape(-1, target.dim)
    hmc_info = {k: h[k] for k in ("rhat", "rhat_rank", "ess", "divergences", "warmup_divergences",
                                  "accept_rate", "chains", "n_samples", "n_warmup", "n_leapfrog",
                                  "n_grad_evals", "wall_seconds", "inv_mass")}
    hmc_info.update(labels=labels, max_rhat=max(h["rhat"]), max_rhat_rank=max(h["rhat_rank"]),
                    min_ess=min(h["ess"]), step_size_median=float(np.median(h["step_size"])),
                    fraction_tau_negative=float(np.mean(hmc_draws[:, 1] < 0)),
                    mean=hmc_draws.mean(0).tolist(), std=hmc_draws.std(0).tolist())

    # 2. the approximations
    res = {"kl_to_hmc": {}, "kl_from_hmc": {}, "fraction_tau_negative": {},
           "wall_seconds": {"hmc": h["wall_seconds"]}, "elbo": {}, "device": device}
    plot_samples = {}
    for m in methods:
        finals, back, neg, walls, curves, its, elbos = [], [], [], [], [], None, []
        for s in seeds:
            sample, info = fit_method(m, target, settings, s, ref_curve, quiet, device)
            q = sample(np.random.default_rng(40_000 + s), settings["n_kl"])
            finals.append(vi.kl_to_samples(q, ref, settings["k"]))
            back.append(vi.kl_to_samples(ref, q, settings["k"]))
            neg.append(float(np.mean(q[:, 1] < 0)))
            walls.append(info["wall_seconds"])
            pts = [e for e in info["history"] if "kl_to_hmc" in e]
            its = [e["iteration"] for e in pts]
            curves.append([e["kl_to_hmc"] for e in pts])
            elbos.append(info.get("elbo", info["history"][-1].get("elbo_from_T")))
            if s == seeds[0]:
                plot_samples[m] = q[:settings["n_plot"]]
        res["kl_to_hmc"][m] = {"final": float(np.mean(finals)),        # std None with one seed: no spread
                               "std": float(np.std(finals)) if len(finals) > 1 else None,
                               "per_seed": finals,
                               "curve": {"iteration": its, "per_seed": curves,
                                         "mean": np.mean(curves, 0).tolist()}}
        res["kl_from_hmc"][m] = {"final": float(np.mean(back)), "per_seed": back}
        res["fraction_tau_negative"][m] = {"mean": float(np.mean(neg)), "per_seed": neg}
        res["wall_seconds"][m] = walls
        res["elbo"][m] = elbos
    plot_samples["hmc"] = ref[:settings["n_plot"]]

    # 3. figures
    figures = {}
    if out_dir is not None:
        figures["figure3"] = kl_curve_figure(res["kl_to_hmc"], os.path.join(out_dir, "figure3_kl_to_hmc.png"),
                                             floor=kl_floor)
        stats = {m: f"KL to HMC {res['kl_to_hmc'][m]['per_seed'][0]:.2f}, "
                    f"P(tau<0) = {res['fraction_tau_negative'][m]['per_seed'][0]:.2f}" for m in methods}
        stats["hmc"] = f"P(tau<0) = {hmc_info['fraction_tau_negative']:.2f}"
        figures["figure4"] = marginals_figure(plot_samples, os.path.join(out_dir, "figure4_marginals.png"),
                                              stats=stats)
    res["wall_seconds"]["total"] = time.perf_counter() - t_start
    res.update(hmc=hmc_info, kl_floor=kl_floor, figures=figures, seeds=list(seeds),
               settings=_settings_json(settings), labels=labels)
    res["targets"] = check_targets(res)
    if out_dir is not None or json_path is not None:
        write_json(json_path or os.path.join(out_dir, "results.json"), res, device=device)
    return res


def check_targets(res):
    """The issue's benchmarks with their measured values (never used to change a run)."""
    out = {}
    kl = res["kl_to_hmc"]
    if "avb" in kl:
        for m in ("meanfield", "fullrank"):
            if m in kl:
                per = [a < b for a, b in zip(kl["avb"]["per_seed"], kl[m]["per_seed"])]
                out[f"avb_kl_below_{m}"] = {"avb": kl["avb"]["final"], m: kl[m]["final"],
                                            "per_seed": per, "met": bool(all(per))}
        neg = res["fraction_tau_negative"]["avb"]["per_seed"]
        out["avb_tau_negative_in_35_65"] = {"per_seed": neg, "met": bool(all(
            TARGET_TAU_NEG[0] <= v <= TARGET_TAU_NEG[1] for v in neg))}
    out["hmc_rhat_below_1.01"] = {"max_rhat": res["hmc"]["max_rhat"],
                                  "max_rhat_rank": res["hmc"]["max_rhat_rank"],
                                  "met": bool(res["hmc"]["max_rhat"] < TARGET_RHAT
                                              and res["hmc"]["max_rhat_rank"] < TARGET_RHAT)}
    out["within_10_minutes"] = {"wall_seconds": res["wall_seconds"]["total"],
                                "met": bool(res["wall_seconds"]["total"] < TARGET_WALL_SECONDS)}
    return out


def format_eight_schools(result):
    """A plain-text report of `run_eight_schools`'s result."""
    methods = list(result["kl_to_hmc"])
    h = result["hmc"]
    lines = [f"Eight Schools (sec. 5.1), seeds {result['seeds']}"
             f"{' [quick]' if result['settings']['quick'] else ''}", ""]
    head = ["method", "KL(q||HMC)", "KL(HMC||q)", "P(tau<0)", "train s/seed"]
    rows = []
    for m in methods:
        k = result["kl_to_hmc"][m]
        rows.append([TITLES[m], f"{k['final']:.3f}" + ("" if k["std"] is None else f" +- {k['std']:.3f}"),
                     f"{result['kl_from_hmc'][m]['final']:.3f}",
                     f"{result['fraction_tau_negative'][m]['mean']:.3f}",
                     f"{np.mean(result['wall_seconds'][m]):.1f}"])
    rows.append([TITLES["hmc"], "-", "-", f"{h['fraction_tau_negative']:.3f}", f"{h['wall_seconds']:.1f}"])
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines.append("  ".join(c.ljust(x) for c, x in zip(head, w)))
    lines.append("  ".join("-" * x for x in w))
    lines += ["  ".join(c.ljust(x) for c, x in zip(r, w)) for r in rows]
    if result.get("kl_floor") is not None:
        lines.append(f"k-NN estimator floor (KL between two HMC subsamples): {result['kl_floor']:.3f}")
    lines.append("")
    lines.append(f"HMC: {h['chains']} chains x {h['n_samples']} draws (+{h['n_warmup']} warm-up), "
                 f"{h['n_leapfrog']} leapfrog steps, median step {h['step_size_median']:.3f}, "
                 f"accept {h['accept_rate']:.2f}, divergences {h['divergences']} "
                 f"(warm-up: {h['warmup_divergences']})")
    lines.append("  " + "  ".join(f"{n}" for n in h["labels"]))
    lines.append("  split R-hat:      " + " ".join(f"{v:.4f}" for v in h["rhat"]))
    lines.append("  rank R-hat:       " + " ".join(f"{v:.4f}" for v in h["rhat_rank"]))
    lines.append("  ESS:              " + " ".join(f"{v:.0f}" for v in h["ess"]))
    lines.append("")
    for name, t in result["targets"].items():
        vals = {k: v for k, v in t.items() if k != "met"}
        lines.append(f"target {name}: {'met' if t['met'] else 'NOT met'}  {_short(vals)}")
    lines.append(f"wall seconds: total {result['wall_seconds']['total']:.0f}")
    for k, p in result.get("figures", {}).items():
        lines.append(f"{k}: {p}")
    return "\n".join(lines)


def _short(d):
    def f(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return "[" + ", ".join(f(x) for x in v) + "]"
        return str(v)
    return ", ".join(f"{k}={f(v)}" for k, v in d.items())


# ------------------------------------------------------------------ figures
def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


COLORS = {"avb": "#d62728", "meanfield": "#1f77b4", "fullrank": "#2ca02c", "hmc": "k"}


def kl_curve_figure(kl, path, floor=None):
    """Figure 3: KL(q || HMC) over training iterations, per method (thin: seeds; thick: mean)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, k in kl.items():
        it = k["curve"]["iteration"]
        for c in k["curve"]["per_seed"]:
            ax.plot(it, c, color=COLORS[m], lw=0.7, alpha=0.4)
        ax.plot(it, k["curve"]["mean"], color=COLORS[m], lw=2, label=f"{TITLES[m]}: final {k['final']:.2f}")
    if floor is not None:
        ax.axhline(floor, color="gray", ls=":", lw=1, label=f"estimator floor (HMC vs HMC): {floor:.2f}")
    ax.set_ylim(bottom=min(0.0, floor or 0.0) - 0.05)
    ax.set_xlabel("iteration")
    ax.set_ylabel("KL(q || p_HMC), k-NN estimate (nats)")
    ax.set_title("Eight Schools: KL to the HMC ground truth (cf. paper Fig. 3)\n"
                 "curve: smaller sample sets along training; final: 10k samples, mean over seeds",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _density(ax, x, y, box, cmap, n=90):
    """Kernel density estimate (Gaussian, Scott's rule, as in the authors' notebook) on a grid."""
    xx, yy = np.mgrid[box[0]:box[1]:n * 1j, box[2]:box[3]:n * 1j]
    kde = gaussian_kde(np.vstack([x, y]))
    f = kde(np.vstack([xx.ravel(), yy.ravel()])).reshape(n, n)
    ax.contourf(xx, yy, f, levels=12, cmap=cmap)


def marginals_figure(samples, path, stats=None, n_kde=3000):
    """Figure 4: the (mu, tau) and (tau, eta_1) marginals (kernel density estimates) of each
    method (rows) with HMC in the last row.  samples: {method: (n, 10)}."""
    rows = [m for m in list(METHODS) + ["hmc"] if m in samples]
    fig, axes = plt.subplots(len(rows), 2, figsize=(7.6, 3.1 * len(rows)), squeeze=False)
    boxes = [(-0.5, 2.0, -2.5, 2.5), (-2.5, 2.5, -5.0, 5.0)]
    pairs = [(0, 1, "mu", "tau"), (1, 2, "tau", "eta_1")]
    for r, m in enumerate(rows):
        z = np.asarray(samples[m])[:n_kde]
        for c, (i, j, xl, yl) in enumerate(pairs):
            ax = axes[r][c]
            cmap = {"avb": "Reds", "hmc": "Greys"}.get(m, "Blues")
            _density(ax, z[:, i], z[:, j], boxes[c], cmap)
            ax.set_xlim(boxes[c][:2])
            ax.set_ylim(boxes[c][2:])
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.axhline(0, color="k", lw=0.3) if c == 0 else ax.axvline(0, color="k", lw=0.3)
            title = TITLES[m]
            if c == 0 and stats and m in stats:
                title += "\n" + stats[m]
            ax.set_title(title, fontsize=9)
    fig.suptitle("Eight Schools: 2-d marginals (kernel density estimates; cf. paper Fig. 4)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)

