"""Chapter 9: black-box variational inference with AVB on 2-d toy densities (Figure 1).

Paper: Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017
(https://arxiv.org/abs/1701.04722), sec. 5.1 and Figure 1; Algorithm 2 (supplement II) with the model term
log p_theta(x, z) replaced by an unnormalised target log p~(z).

Equations
    target        p(z) = p~(z) / Z,           Z = int p~(z) dz (unknown to the method)
    ELBO          E_q[log p~(z) - log q(z)] = log Z - KL(q || p)
    AVB sampler   z = G_phi(eps), eps ~ N(0, I): q_phi(z) has no density we can evaluate
    contrast      z_bar = (z - mu) / sigma, mu and sigma the batch's moments, held constant
    adversary     T*(z_bar) = log q_bar(z_bar) - log N(z_bar; 0, I)        (eq. 3.4 with AC)
    sampler step  maximise E[-T(z_bar) + ||z_bar||^2 / 2 + log p~(z)]      (eq. 4.2)
    Gaussian VB   z = m + L eps, maximise E[log p~(m + L eps)] + sum log diag L  (ADVI)

What you will learn
    - how AVB turns a neural sampler into a variational family for *any* differentiable
      unnormalised density: the adversary supplies the missing -log q(z);
    - how adaptive contrast wires in: only the deviation from a moment-matched Gaussian
      is left for the adversary to learn;
    - how to score an approximation honestly in 2-d: the normaliser from a grid, the
      entropy of the implicit q from a k-NN estimate, never the adversary's own number;
    - where Gaussian VB fails (bananas, rings, several modes) and AVB does not.

Run:  python chapters/09_vi_toys.py            (233 s measured on 2 CPU cores shared with other jobs, load average 3.07-7.55)
      python chapters/09_vi_toys.py --quick    (seconds; the test suite)
      python chapters/09_vi_toys.py --full     (the authors' sampler 2 x 128, batch 512,
                                                3x the iterations, more samples; ~10 min)
      [--out DIR] [--seed N]
"""
import os
import time

# One BLAS thread unless you say otherwise: these small matrices run faster on one
# thread than on several fighting for the cores.  It must be set before numpy loads;
# to override, export OPENBLAS_NUM_THREADS (or OMP_ / MKL_NUM_THREADS) yourself.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from avb_minimal import targets as TG
from avb_minimal import vi
from avb_minimal.chapter import chapter_args

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "runs", "chapters")


def parse_args(argv=None):
    return chapter_args("Chapter 09: black-box variational inference with AVB on 2-d toy densities (Figure 1).",
                        "tiny nets, few steps (seconds; for tests)",
                        "longer, larger run: sampler 2 x 128 and adversary 128 x 2 blocks (the chapter's "
                        "64-wide nets otherwise), batch 512, 6000 AVB / 5000 VB iterations, 50,000 samples "
                        "scored (about 10 minutes on 2 cores)",
                        DEFAULT_OUT, argv)


args = parse_args()
t_start = time.perf_counter()

# %% 1. The targets and their normalisers on a grid
# Each toy is an unnormalised log-density (B, 2) -> (B,).  In 2-d the normaliser
# log Z = log int p~ is a sum over grid cells: that gives us the *true* KL later.
# Two of the toys are normalised by construction, which checks the grid rule.
toys = {name: TG.get_toy(name) for name in TG.TOYS}
log_z = {}
for name, t in toys.items():
    log_z[name] = TG.log_normaliser(t, 800)
    print(f"{name:16s} log Z = {log_z[name]:+.6f}   ({t.info})")
for name in ("warped_gaussian", "mixture"):
    assert abs(log_z[name] - toys[name].log_z) < 1e-4, (name, log_z[name])
print("grid rule: log Z of the two normalised toys within 1e-4 of their known value  [ok]")

# The scoring rule, KL(q || p) = -H[q] - E_q log p~ + log Z with a k-NN entropy, is
# itself checked first: exact samples of each target (drawn from the grid) score ~0.
rng = np.random.default_rng(args.seed)
n_eval = 4000 if args.quick else 50000 if args.full else 20000
for name, t in toys.items():
    kl_exact = vi.kl_to_target_grid(TG.sample_grid(t, rng, n_eval), t, log_z=log_z[name])
    print(f"{name:16s} KL(exact samples || p) = {kl_exact:+.3f}  (should be ~0)")
    assert abs(kl_exact) < 0.06, (name, kl_exact)
print("scoring rule: |KL(exact samples || p)| < 0.06 for every target  [ok]")

# %% 2. Gaussian VB: the reparameterisation trick, mean-field and full-rank
# q = N(m, L L^T); the ELBO's entropy is closed-form, its expectation is a Monte
# Carlo average over z = m + L eps.  Gradients flow through z into m and L.
if args.quick:
    vb_cfg = dict(iters=300, batch=64, lr=3e-2)
elif args.full:
    vb_cfg = dict(iters=5000, batch=256, lr=1e-2)
else:
    vb_cfg = dict(iters=2000, batch=128, lr=1e-2)
vb = {}
for name, t in toys.items():
    for fam in vi.FAMILIES:
        params, info = vi.fit_gaussian_vb(t, cfg=vi.VBConfig(fam, **vb_cfg), seed=args.seed,
                                          quiet=False, desc=f"Gaussian VB ({fam}) on {name}")
        q = vi.sample_gaussian_vb(params, rng, n_eval)
        # same scoring rule as AVB (k-NN entropy); the closed-form entropy is printed beside it
        vb[name, fam] = {"samples": q, "kl": vi.kl_to_target_grid(q, t, log_z=log_z[name]),
                         "kl_exact_entropy": vi.kl_to_target_grid(
                             q, t, log_z=log_z[name], entropy=vi.gaussian_vb_entropy(params))}

# %% 3. AVB with adaptive contrast
# One step = one gradient of (sampler loss + adversary loss) with stop-gradient cuts
# (vi.avb_losses), then k - 1 = 1 extra adversary step.  The adversary compares
# z_bar = (z - mu) / sigma with N(0, I); its T has ||z_bar||^2 / 2 folded in, so the
# network part learns log q_bar.  The sampler's objective is line 12 of Algorithm 2.
if args.quick:
    avb_cfg = vi.AVBConfig(iters=120, batch=128, hidden=(32, 32), adv_width=32, adv_blocks=1,
                           lr_gen=3e-3, lr_adv=6e-3, decay_from=0.5)
elif args.full:
    avb_cfg = vi.AVBConfig(iters=6000, batch=512, hidden=(128, 128), adv_width=128, adv_blocks=2,
                           lr_gen=1e-3, lr_adv=2e-3, decay_from=0.5)
else:
    avb_cfg = vi.AVBConfig(iters=2000, batch=256, hidden=(64, 64), adv_width=64, adv_blocks=2,
                           lr_gen=1e-3, lr_adv=2e-3, decay_from=0.5)
avb = {}
for name, t in toys.items():
    params, info = vi.fit_avb(t, cfg=avb_cfg, seed=args.seed, quiet=False, desc=f"AVB on {name}")
    q = vi.sample_avb(params, rng, n_eval)
    kl = vi.kl_to_target_grid(q, t, log_z=log_z[name])
    # the adversary's own ELBO estimate trusts T = T*: compare with the honest log Z - KL
    avb[name] = {"samples": q, "kl": kl, "elbo_from_T": info["history"][-1]["elbo_from_T"],
                 "elbo_honest": log_z[name] - kl, "seconds": info["wall_seconds"]}

# %% 4. The numbers: KL(q || p) on the grid, AVB against Gaussian VB
print(f"\n{'target':16s} {'VB mean-field':>14s} {'VB full-rank':>13s} {'AVB':>7s}   "
      f"AVB ELBO: adversary's / honest (log Z - KL)")
for name in toys:
    mf, fr, a = vb[name, "meanfield"], vb[name, "fullrank"], avb[name]
    print(f"{name:16s} {mf['kl']:14.3f} {fr['kl']:13.3f} {a['kl']:7.3f}   "
          f"{a['elbo_from_T']:+.3f} / {a['elbo_honest']:+.3f}   ({a['seconds']:.0f} s)")
print("(VB with the closed-form entropy instead of k-NN: "
      + ", ".join(f"{n} {vb[n, 'fullrank']['kl_exact_entropy']:.3f}" for n in toys) + ")")
if not args.quick:
    for name in toys:
        for fam in vi.FAMILIES:
            assert avb[name]["kl"] < vb[name, fam]["kl"], (name, fam, avb[name]["kl"], vb[name, fam]["kl"])
    print("AVB's KL(q || p) below both Gaussian VB families' on every target  [ok]")
else:
    print("(--quick: nets too small to assert that AVB beats Gaussian VB; the default run does)")

# %% 5. Figure 1: samples over the target's contours
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(len(toys), 3, figsize=(10, 3.1 * len(toys)), squeeze=False)
for r, (name, t) in enumerate(toys.items()):
    logp, c1, c2, _ = TG.grid_log_density(t, 300)
    (a1, b1), (a2, b2) = t.view or t.bounds
    dens = np.exp(logp - log_z[name])
    cols = [("target p(z)", None), (f"VB full-rank: KL {vb[name, 'fullrank']['kl']:.3f}",
                                    vb[name, "fullrank"]["samples"]),
            (f"AVB: KL {avb[name]['kl']:.3f}", avb[name]["samples"])]
    for c, (title, s) in enumerate(cols):
        ax = axes[r][c]
        if s is None:
            ax.contourf(c1, c2, dens.T, levels=14, cmap="Greys")
        else:
            ax.contour(c1, c2, dens.T, levels=8, colors="k", linewidths=0.5)
            ax.scatter(s[:1500, 0], s[:1500, 1], s=2, alpha=0.35,
                       color="#d62728" if c == 2 else "#1f77b4")
        ax.set_xlim(a1, b1)
        ax.set_ylim(a2, b2)
        ax.set_title(f"{name}: {title}", fontsize=9)
fig.suptitle("Figure 1: samples of q over the target's contours; KL(q || p) on a grid", fontsize=10)
fig.tight_layout()
path = os.path.join(args.out, "09_vi_toys.png")
fig.savefig(path, dpi=100)
print(f"\nfigure: {path}")

# %% What goes wrong
WHAT_GOES_WRONG = """
What goes wrong
- Mode seeking.  Both methods minimise KL(q || p), which punishes mass where p has
  none far more than missing mass: a sampler that starts on one mode of the mixture
  can stay there (KL ~ log 2 for two equal modes).  A continuous G(eps) with
  Gaussian eps also has connected support, so it must bridge separated modes with a
  thin filament of samples; the ring forces a seam.  More separated modes make both
  failure modes worse.
- Trusting the adversary.  The "ELBO" computed from T is only as good as T: it is
  not a bound and it drifts while the adversary lags behind the sampler (compare
  the two ELBO columns above).  Score with something that does not use T.
- Without adaptive contrast (AVBConfig(adaptive_contrast=False)) the adversary has
  to tell q from a fixed N(0, I): an easy, uninformative task once q has moved away,
  so T saturates and the sampler's gradient gets noisy.  Too small a batch makes the
  moment estimates (and hence z_bar) noisy as well.
- Grid scoring only works where the box holds the mass: a target whose bounds cut
  off mass gets a wrong log Z and every KL shifts by the same amount.
"""
print(WHAT_GOES_WRONG)
print(f"chapter 09 done in {time.perf_counter() - t_start:.0f} s")
