"""Chapter 07 - Adaptive contrast: compare q(z|x) with a Gaussian that is already close.

Paper: Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017
(https://arxiv.org/abs/1701.04722): section 4, eq. (4.1)-(4.3); supplement II, Algorithm 2; supplement III,
eq. (III.1)-(III.3) (the noise-basis encoder).

Logistic regression estimates a log density ratio well when the two densities are
alike, and badly when they are far apart (sec. 4).  In AVB they are far apart: a
posterior q(z|x) is much narrower than the prior.  Adaptive contrast (AC) inserts a
known Gaussian r_alpha(z|x) with the mean and variance of q(z|x) and splits the KL:

    KL(q, p) = KL(q, r_alpha) + E_q[log r_alpha(z|x) - log p(z)]         (eq. 4.1)

The second term is known in closed form; the adversary only estimates the first,
which equals KL(q~(z~|x), N(0, I)) for the normalised z~ = (z - mu(x)) / sigma(x)
(eq. 4.3).  The generator maximises eq. (4.2).  Algorithm 2 treats mu and sigma as
constants.  To get the moments cheaply, supplement III's encoder is linear in learned
noise bases, z = sum_i v_i(eps_i) * a_i(x) (III.1), so E[z] and Var[z] follow from the
moments of the v_i (III.2, III.3), estimated once per batch.

What you will learn
- eq. (III.1)-(III.3): models.noise_basis_encoder's moments against moments sampled
  with 10^5 draws, and how the error shrinks with the batch size;
- Algorithm 2, lines 12-13: objectives.avb_losses(kind='avb_ac') gives exactly the
  gradients written out line by line, with mu and sigma held constant;
- sec. 4: on a q far from the prior, the adversary's error in log q - log p with and
  without AC, same network, same steps, same batch.

Run:  python chapters/07_adaptive_contrast.py            (54 s measured on 2 CPU cores shared with other jobs, load average 6.60-4.23)
      python chapters/07_adaptive_contrast.py --quick    (seconds; the test suite)
      python chapters/07_adaptive_contrast.py --full     (longer adversary training)
"""
import os
import sys
import time

# One BLAS thread unless you say otherwise: these small matrices run faster on one
# thread than on several fighting for the cores.  It must be set before numpy loads;
# to override, export OPENBLAS_NUM_THREADS (or OMP_ / MKL_NUM_THREADS) yourself.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from autograd import grad  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from avb_minimal.chapter import chapter_args  # noqa: E402
from avb_minimal import models as M  # noqa: E402
from avb_minimal import objectives as O  # noqa: E402
from avb_minimal.data import four_points  # noqa: E402
from avb_minimal.distributions import log_normal_diag, log_std_normal  # noqa: E402
from avb_minimal.trees import tree_flatten  # noqa: E402
from avb_minimal.ops import bernoulli_loglik  # noqa: E402
from avb_minimal.optim import Adam, adam_init, adam_step  # noqa: E402
from avb_minimal.progress import Progress  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "runs", "chapters")
DATA = four_points()


def parse_args(argv=None):
    return chapter_args("Chapter 07: adaptive contrast (sec. 4, Algorithm 2, supp. III).",
                        "small nets, few steps (seconds; for tests)",
                        "longer adversary training (a few minutes)",
                        DEFAULT_OUT, argv)


# %% eq. (III.1)-(III.3): the noise-basis encoder's moments
def check_moments(rng, batches=(64, 512, 4096), n_ref=100000):
    """Moments of q(z|x) from eq. (III.2)-(III.3) (E[v_i], Var[v_i] estimated over one
    batch of noise) against the sample mean and variance of 10^5 draws z ~ q(z|x).
    Returns {batch: (est_mean, est_var)} and the reference (mean, var), each (4, dz)."""
    arch = M.Arch(hidden=(32, 32), n_basis=8, basis_eps_dim=3, basis_hidden=16)
    enc = M.init_params(rng, "avb_ac", arch, np.float64)["enc"]
    ref_m, ref_v = [], []
    for i in range(4):
        x = np.repeat(DATA[i:i + 1].astype(np.float64), n_ref, axis=0)
        z, _, _ = M.noise_basis_encoder(enc, x, M.sample_noise(rng, "avb_ac", arch, n_ref, np.float64), arch.act)
        ref_m.append(z.mean(0)), ref_v.append(z.var(0))
    ref = (np.array(ref_m), np.array(ref_v))
    est = {}
    for B in batches:
        x = DATA[np.arange(B) % 4].astype(np.float64)                             # a batch with all four x
        _, mean, var = M.noise_basis_encoder(enc, x, M.sample_noise(rng, "avb_ac", arch, B, np.float64), arch.act)
        est[B] = (mean[:4], var[:4])                                               # rows 0..3 are x = e1..e4
    return est, ref


# %% Algorithm 2, lines 12-13, against objectives.avb_losses(kind='avb_ac')
def check_algorithm2(rng):
    arch = M.Arch(hidden=(16,), adv_hidden=(16,), adv_dim=8, n_basis=5, basis_eps_dim=2, basis_hidden=8)
    params = M.init_params(rng, "avb_ac", arch, np.float64)
    m = 10
    x = DATA[rng.integers(0, 4, m)].astype(np.float64)
    eps = M.sample_noise(rng, "avb_ac", arch, m, np.float64)
    eta = rng.standard_normal((m, arch.z_dim))                                    # line 6: eta ~ N(0, I)
    g_lib = grad(lambda p: sum(O.avb_losses(p, "avb_ac", x, eps, eta, arch)))(params)
    _, mu, var = M.noise_basis_encoder(params["enc"], x, eps, arch.act)                # line 8 (constants)

    def zbar_of(enc):                                                              # line 9
        z, _, _ = M.noise_basis_encoder(enc, x, eps, arch.act)
        return z, M.normalise(z, mu, var)                                          # mu, var: constants

    def line12(enc):    # g_phi: grad [-T(x, z_bar) + ||z_bar||^2 / 2 + log p(x, z)]   eq. (4.2)
        z, zb = zbar_of(enc)
        return O.ac_generator_objective(M.adversary(params["adv"], x, zb, arch.act), zb,
                                        bernoulli_loglik(x, M.decoder_logits(params["dec"], z, arch.act)),
                                        log_std_normal(z))

    def line13(adv):    # g_psi: grad [log sigma(T(x, z_bar)) + log(1 - sigma(T(x, eta)))]   eq. (3.3)
        _, zb = zbar_of(params["enc"])                                             # -(the adversary's loss)
        return -O.adversary_loss(M.adversary(adv, x, zb, arch.act), M.adversary(adv, x, eta, arch.act))

    for name, mine, lib in (("phi", grad(line12)(params["enc"]), g_lib["enc"]),
                            ("psi", grad(line13)(params["adv"]), g_lib["adv"])):
        for a, b in zip(tree_flatten(mine), tree_flatten(lib)):
            assert np.allclose(a, -b, rtol=1e-9, atol=1e-12), name
    print("Algorithm 2, lines 9, 12, 13, one player at a time (mu, sigma constant) == gradient of "
          "avb_losses('avb_ac')  [ok]")


# %% A known q(z|x) far from the prior: narrow, bimodal, off-centre
ANG = np.pi / 4 + np.arange(4) * np.pi / 2
CENTRES = 1.5 * np.stack([np.cos(ANG), np.sin(ANG)], 1)                 # (4, 2)
DIRS = np.stack([-np.sin(ANG), np.cos(ANG)], 1)                          # (4, 2)
SPREAD, SIGMA = 0.35, 0.15
MOM_MEAN = CENTRES                                                       # exact moments of q(z|x_i)
MOM_VAR = SIGMA ** 2 + SPREAD ** 2 * DIRS ** 2                           # (diagonal of the covariance)


def sample_q(rng, idx):
    sign = rng.choice([-1.0, 1.0], size=len(idx))[:, None]
    return (CENTRES[idx] + sign * SPREAD * DIRS[idx] + SIGMA * rng.standard_normal((len(idx), 2))).astype(np.float32)


def log_q(idx, z):
    z = np.asarray(z, np.float64)
    lv = np.full_like(z, 2 * np.log(SIGMA))
    return logsumexp(np.stack([log_normal_diag(z, CENTRES[idx] + s * SPREAD * DIRS[idx], lv) for s in (-1, 1)]),
                     axis=0) - np.log(2)


def log_r(idx, z):
    """log r_alpha(z|x) = log N(z; mu(x), diag sigma^2(x)), the adaptive Gaussian (eq. 4.1)."""
    return log_normal_diag(np.asarray(z, np.float64), MOM_MEAN[idx], np.log(MOM_VAR[idx] + M.AC_VAR_FLOOR))


def normalised(idx, z):
    """z~ = (z - mu(x)) / sigma(x) (Algorithm 2, line 9; eq. 4.3)."""
    return M.normalise(z, MOM_MEAN[idx].astype(np.float32), MOM_VAR[idx].astype(np.float32))


def log_ratio_estimate(adv, arch, idx, z, ac):
    """The adversary's estimate of log q(z|x) - log p(z): T(x, z) without AC; with AC,
    T(x, z~) + log r_alpha(z|x) - log p(z) (the two terms of eq. 4.1)."""
    x = DATA[idx]
    if not ac:
        return np.asarray(M.adversary(adv, x, z, arch.act), np.float64)
    T = np.asarray(M.adversary(adv, x, normalised(idx, z), arch.act), np.float64)
    return T + log_r(idx, z) - log_std_normal(np.asarray(z, np.float64))


def train_adversary(arch, steps, batch, seed, ac, test, every):
    """eq. (3.3) against the known q: positives (x, z ~ q(z|x)) vs negatives (x, z ~ p(z))
    without AC; with AC positives (x, z~) vs negatives (x, eta ~ N(0, I)) (Algorithm 2,
    line 13).  Same nets, optimiser, steps and batch; all-pairs negatives for both."""
    rng = np.random.default_rng(seed)
    adv = M.init_adversary(rng, arch, np.float32)
    opt = Adam(3e-3, 0.9, 0.999)
    state = adam_init(adv)
    g = grad(lambda a, x, zp, zn: O.adversary_loss(M.adversary(a, x, zp, arch.act),
                                                   M.adversary_all_pairs(a, x, zn, arch.act)))
    idx_t, zq_t, true_t = test
    curve = []
    prog = Progress(steps, "training T with adaptive contrast" if ac else "training T")
    for it in range(steps + 1):
        if it % every == 0 or it == steps:
            est = log_ratio_estimate(adv, arch, idx_t, zq_t, ac)
            curve.append((it, float(np.sqrt(np.mean((est - true_t) ** 2)))))
        if it == steps:
            break
        idx = rng.integers(0, 4, batch)
        zq = sample_q(rng, idx)
        zpos = normalised(idx, zq) if ac else zq
        zneg = rng.standard_normal((batch, 2)).astype(np.float32)     # p(z) = N(0, I) = r_0 as well
        scale = 1.0 - 0.95 * max(0.0, it / steps - 0.5) / 0.5
        adv, state = adam_step(opt, adv, g(adv, DATA[idx], zpos, zneg), state, opt.lr * scale)
        prog.update(it + 1)
    return adv, curve


def make_figure(path, arch, runs, test, kl_true, moments, batches):
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    for (name, (_, curve, _)), c in zip(runs.items(), ["#d62728", "#2ca02c"]):
        it, e = zip(*curve)
        ax.plot(it, e, color=c, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("adversary step")
    ax.set_ylabel("RMSE of the estimate of log q(z|x) - log p(z), z ~ q")
    ax.set_title("(a) the adversary's error, same network and budget", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    t = np.linspace(-1.0, 1.0, 300)
    z = (CENTRES[0] + t[:, None] * DIRS[0]).astype(np.float32)
    idx = np.zeros(len(t), int)
    ax.plot(t, log_q(idx, z) - log_std_normal(z.astype(np.float64)), color="k", lw=2.5, alpha=0.5,
            label="true log q(z|x) - log p(z)")
    for (name, (adv, _, _)), c in zip(runs.items(), ["#d62728", "#2ca02c"]):
        ax.plot(t, log_ratio_estimate(adv, arch, idx, z, "AC" in name), color=c, ls="--", label=name)
    ax.axvspan(-SPREAD - 2 * SIGMA, SPREAD + 2 * SIGMA, color="0.92", zorder=0, label="bulk of q(z | x = e1)")
    ax.set_xlabel("t along z = c_1 + t u_1, through both bumps of q(z | x = e1)")
    ax.set_ylabel("log-ratio")
    ax.set_ylim(-6, 6)
    ax.set_title("(b) the estimates along one line in z", fontsize=10)
    ax.legend(fontsize=8, loc="lower center")

    ax = axes[2]
    est, (ref_m, ref_v) = moments
    for B, mk in zip(batches, ["o", "s", "^"]):
        m, v = est[B]
        ax.scatter(ref_v.ravel(), v.ravel(), marker=mk, s=30, facecolors="none", edgecolors="#9467bd",
                   label=f"variance, eq. (III.3), batch {B}")
        ax.scatter(np.abs(ref_m).ravel(), np.abs(m).ravel(), marker=mk, s=30, color="#1f77b4", alpha=0.6,
                   label=f"|mean|, eq. (III.2), batch {B}")
    lo = 0.8 * min(ref_v.min(), np.abs(ref_m).min())
    hi = 1.25 * max(ref_v.max(), np.abs(ref_m).max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="estimate = sampled")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("moment from 10^5 samples z ~ q(z|x)")
    ax.set_ylabel("moment from one batch (eq. III.2, III.3)")
    ax.set_title("(c) the noise-basis encoder's moments, per x and dimension", fontsize=10)
    ax.legend(fontsize=6.5)
    fig.suptitle(f"Chapter 07: adaptive contrast (sec. 4).  q(z|x) narrow and far from p(z): "
                 f"KL(q, p) = {np.mean(kl_true):.2f} nats")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WHAT_GOES_WRONG = """What goes wrong
- Back-propagating through mu(x) and sigma(x): Algorithm 2 holds them constant (models.noise_basis_encoder
  returns them without gradient).  Through them, z~ is invariant to the location and scale of q, and the
  ||z~||^2/2 term of eq. (4.2) stops acting on them.
- Forgetting the known term: with AC, T estimates KL(q, r_alpha) only; the generator objective (4.2) must
  add -log r_alpha(z|x) (= ||z~||^2/2 + const, plus sum log sigma, which carries no gradient) and
  log p(x, z) = log p(x|z) + log p(z), the prior now explicitly (objectives.ac_generator_objective).
- Wrong negatives: the adversary contrasts z~ with eta ~ N(0, I) (line 13), not with the prior samples in
  z-space, and both positives and negatives go through the *same* T (with its folded ||.||^2/2).
- Moments from too small a batch are noisy (panel c), and a variance near zero blows up z~: the library
  adds a floor, sqrt(var + 1e-4), as the authors' code does.
- AC's Gaussian has a *diagonal* covariance: correlations of q stay for the adversary to learn.
- Like any adversary-based KL, E_q[T] + E_q[log r - log p] is an estimate, not a bound."""


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    batches = (64, 512, 4096)
    est, ref = check_moments(rng, batches, 20000 if args.quick else 100000)
    errs = {}
    for B in batches:
        m, v = est[B]
        errs[B] = (float(np.max(np.abs(m - ref[0]) / np.sqrt(ref[1]))), float(np.max(np.abs(v / ref[1] - 1))))
        print(f"eq. (III.2)-(III.3), batch {B:5d}: max |mean error| / sd = {errs[B][0]:.3f}, "
              f"max relative variance error = {errs[B][1]:.3f}")
    check_algorithm2(rng)

    if args.quick:
        width, steps, batch, n_test = 32, 600, 256, 8000
    elif args.full:
        width, steps, batch, n_test = 128, 6000, 512, 40000
    else:
        width, steps, batch, n_test = 64, 1500, 256, 20000
    arch = M.Arch(adv_hidden=(width, width), adv_dim=width)
    trng = np.random.default_rng(10_000 + args.seed)
    idx = np.repeat(np.arange(4), n_test // 4)
    zq = sample_q(trng, idx)
    true = log_q(idx, zq) - log_std_normal(zq.astype(np.float64))
    kl_true = np.array([true[idx == i].mean() for i in range(4)])
    kl_known = np.array([np.mean((log_r(idx, zq) - log_std_normal(zq.astype(np.float64)))[idx == i])
                         for i in range(4)])                                           # E_q[log r - log p]
    runs = {}
    for name, ac in (("AVB: T(x, z), q vs p", False), ("AVB + AC: T(x, z~), q~ vs N(0, I)", True)):
        adv, curve = train_adversary(arch, steps, batch, args.seed, ac, (idx, zq, true), max(steps // 30, 10))
        est_ratio = log_ratio_estimate(adv, arch, idx, zq, ac)
        kl_est = np.array([est_ratio[idx == i].mean() for i in range(4)])
        runs[name] = (adv, curve, kl_est)
        print(f"{name:36s}: RMSE of log q - log p under q = {curve[-1][1]:.3f}; KL(q(z|x_i), p) estimates "
              + " ".join(f"{v:.3f}" for v in kl_est))
    print(f"{'true KL(q(z|x_i), p(z))':>105s} " + " ".join(f"{v:.3f}" for v in kl_true))
    print("  of which known in closed form with AC, E_q[log r - log p] (eq. 4.1): "
          + " ".join(f"{v:.3f}" for v in kl_known))
    (_, c_plain, kl_plain), (_, c_ac, kl_ac) = runs.values()

    # %% The checks
    assert errs[4096][0] < 0.1 and errs[4096][1] < 0.1, errs[4096]       # III.2-III.3 match sampled moments
    assert errs[64][1] > errs[4096][1], errs                               # ... better with a larger batch
    factor = 0.8 if args.quick else 0.5
    assert c_ac[-1][1] < factor * c_plain[-1][1], (c_ac[-1], c_plain[-1])  # AC: a smaller error, same budget
    assert np.max(np.abs(kl_ac - kl_true)) < np.max(np.abs(kl_plain - kl_true)), (kl_ac, kl_plain, kl_true)
    print(f"checks: noise-basis moments within 10% at batch 4096; AC's error < {factor} x AVB's on the same "
          f"budget; AC's KL estimates closer  [ok]")

    path = os.path.join(args.out, "07_adaptive_contrast.png")
    make_figure(path, arch, runs, (idx, zq, true), kl_true, (est, ref), batches)
    print(f"figure: {path}")
    print(WHAT_GOES_WRONG)
    print(f"chapter 07 done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
