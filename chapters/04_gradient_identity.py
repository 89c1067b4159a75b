"""Chapter 04 - Proposition 2: the adversary's own dependence on phi can be ignored.

Paper: Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017
(https://arxiv.org/abs/1701.04722): section 3.1, eq. (3.5)-(3.7) and Proposition 2 (eq. 3.6); supplement I,
eq. (I.5)-(I.6).

The optimal adversary T*(x, z) = log q_phi(z|x) - log p(z) depends on the encoder's
weights phi twice: through the sample z = z_phi(x, eps) and through q_phi itself.
Algorithm 1 only differentiates through z (the adversary's weights are held fixed).
Proposition 2 says the other part vanishes in expectation:

    E_{q_phi(z|x)} [ grad_phi T*(x, z) ] = 0              (eq. 3.6),

because grad_phi T* = grad_phi log q_phi (I.5) and the score has mean zero (I.6).
So the pathwise gradient of E[-T* + log p(x|z)] with T* frozen is the true ELBO gradient.

Here q_phi is the library's Gaussian encoder (a small MLP, every weight of it is in
phi), so T* is known in closed form and all three gradients can be computed in float64.

What you will learn
- eq. (3.6)/(I.5)-(I.6): the explicit phi-gradient of T* averages to 0 (Monte Carlo,
  with standard errors, over all encoder weights at once);
- the *pathwise* gradient (z moves with phi, T* frozen) is not 0: it equals the full
  gradient of KL(q_phi(z|x), p(z)), computed in closed form;
- that Algorithm 1 as implemented (objectives.avb_losses) cuts exactly the edges
  Prop. 2 allows: no adversary gradient reaches the encoder, no encoder gradient the adversary.

Run:  python chapters/04_gradient_identity.py            (7 s measured on 2 CPU cores shared with other jobs, load average 2.06-2.05)
      python chapters/04_gradient_identity.py --quick    (seconds; the test suite)
      python chapters/04_gradient_identity.py --full     (4x the Monte Carlo samples)
"""
import os
import sys
import time

# One BLAS thread unless you say otherwise: these small matrices run faster on one
# thread than on several fighting for the cores.  It must be set before numpy loads;
# to override, export OPENBLAS_NUM_THREADS (or OMP_ / MKL_NUM_THREADS) yourself.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import autograd.numpy as anp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from autograd import grad  # noqa: E402
from autograd.test_util import check_grads  # noqa: E402
from autograd.tracer import getval  # noqa: E402
from scipy.stats import chi2 as chi2_dist  # noqa: E402

from avb_minimal.chapter import chapter_args  # noqa: E402
from avb_minimal import models as M  # noqa: E402
from avb_minimal import objectives as O  # noqa: E402
from avb_minimal.data import four_points  # noqa: E402
from avb_minimal.distributions import kl_diag_normal_std, log_normal_diag, log_std_normal  # noqa: E402
from avb_minimal.trees import tree_flatten  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "runs", "chapters")


def parse_args(argv=None):
    return chapter_args("Chapter 04: Proposition 2, E_q[grad_phi T*] = 0 (eq. 3.6).",
                        "fewer Monte Carlo samples (seconds; for tests)",
                        "4x the Monte Carlo samples of the default",
                        DEFAULT_OUT, argv)


def flat(tree):
    return np.concatenate([np.ravel(a) for a in tree_flatten(tree)])


# %% T* for the Gaussian encoder: the exact optimum of eq. (3.3) (Prop. 1, eq. 3.4)
def T_star(enc, x, z, arch):
    """T*(x, z) = log q_phi(z|x) - log p(z), phi = the encoder's weights `enc`.  (B,)."""
    mean, log_var = M.gaussian_encoder(enc, x, arch.act)                              # (B, dz) x2
    return log_normal_diag(z, mean, log_var) - log_std_normal(z)


# %% eq. (3.6): the explicit gradient, z held fixed
def explicit_gradient(enc, x, z, arch):
    """grad_phi of mean_i T*(x_i, z_i) with the samples z fixed (not moved by phi):
    the term Prop. 2 says averages to zero (I.5: it is the score grad_phi log q_phi)."""
    return flat(grad(lambda e: anp.mean(T_star(e, x, z, arch)))(enc))


# %% The pathwise gradient: z = z_phi(x, eps) moves with phi, T* frozen at the current phi
def pathwise_gradient(enc, x, eps, arch):
    """grad_phi of mean_i T*_{phi0}(x_i, z_phi(x_i, eps_i)), T* frozen (its phi0 is a
    constant): what Algorithm 1 computes for the KL part of eq. (3.7)."""
    frozen = [(getval(W), getval(b)) for W, b in enc]

    def f(e):
        mean, log_var = M.gaussian_encoder(e, x, arch.act)
        z = mean + anp.exp(0.5 * log_var) * eps                                   # z_phi(x, eps)
        return anp.mean(T_star(frozen, x, z, arch))
    return flat(grad(f)(enc))


def kl_gradient(enc, x, arch):
    """grad_phi of mean_x KL(q_phi(z|x), p(z)) in closed form: the total derivative that
    explicit + pathwise must add up to (and, by eq. 3.6, the pathwise part alone)."""
    return flat(grad(lambda e: anp.mean(kl_diag_normal_std(*M.gaussian_encoder(e, x, arch.act))))(enc))


def batched(fn, n, batch, rng, dz):
    """Monte Carlo mean of a gradient over n noise draws in `batch`-sized pieces, and the
    standard error of every component from the spread of the piece means."""
    means = np.stack([fn(rng.standard_normal((batch, dz))) for _ in range(n // batch)])  # (K, P)
    return means.mean(0), means.std(0, ddof=1) / np.sqrt(len(means)), means


# %% Algorithm 1 cuts exactly these edges
def check_algorithm1_edges(rng):
    """In objectives.avb_losses the generator's loss must not move the adversary, and the
    adversary's loss must not move the encoder or decoder (the adversary's weights are
    fixed for eq. 3.7, the encoder's samples fixed for eq. 3.3).  float64."""
    arch = M.Arch(hidden=(16,), adv_hidden=(16,), adv_dim=8, eps_dim=5)
    params = M.init_params(rng, "avb", arch, np.float64)
    x = four_points(np.float64)[rng.integers(0, 4, 9)]
    noise, z_neg = rng.standard_normal((9, 5)), rng.standard_normal((9, 2))
    g_gen = grad(lambda p: O.avb_losses(p, "avb", x, noise, z_neg, arch)[0])(params)
    g_adv = grad(lambda p: O.avb_losses(p, "avb", x, noise, z_neg, arch)[1])(params)
    assert np.all(flat(g_gen["adv"]) == 0) and np.any(flat(g_gen["enc"]) != 0)
    assert np.all(flat(g_adv["enc"]) == 0) and np.all(flat(g_adv["dec"]) == 0)
    assert np.any(flat(g_adv["adv"]) != 0)
    # and the generator's gradient is a correct derivative (finite differences, float64)
    check_grads(lambda e: O.avb_losses(dict(params, enc=e), "avb", x, noise, z_neg, arch)[0],
                modes=["rev"], order=1)(params["enc"])
    print("objectives.avb_losses: d(gen loss)/d(adversary) = 0, d(adv loss)/d(encoder, decoder) = 0, "
          "generator gradient passes check_grads  [ok]")


def zero_mean_test(means):
    """Is the mean of these gradient vectors 0?  means: (K, P), K independent batch means.
    Hotelling's statistic K m^T S^+ m on the subspace the gradients actually span (for a
    single x every weight-gradient is J^T times a 4-d gradient w.r.t. (mean, log_var), so
    the P components are strongly correlated and a per-component count would mislead).
    Returns (statistic / rank, rank, p-value under 'mean = 0')."""
    K = means.shape[0]
    m = means.mean(0)
    lam, U = np.linalg.eigh(np.cov(means.T))
    keep = lam > 1e-9 * lam.max()
    proj = U[:, keep].T @ m
    stat = K * float(np.sum(proj ** 2 / lam[keep]))
    r = int(keep.sum())
    return stat / r, r, float(chi2_dist.sf(stat, r))


def make_figure(path, means_e, means_p, kl_g, exp_mean, exp_se, path_mean, show, batch):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    K = means_e.shape[0]
    counts = np.arange(1, K + 1)
    samples = counts * batch
    for j, c in zip(show, ["#1f77b4", "#d62728", "#2ca02c"]):
        run_e = np.cumsum(means_e[:, j]) / counts
        run_p = np.cumsum(means_p[:, j]) / counts
        se = means_e[:, j].std(ddof=1) / np.sqrt(counts)
        ax.plot(samples, run_e, color=c, label=f"weight {j}: explicit, E_q[dT*/dphi] (eq. 3.6)")
        ax.fill_between(samples, -2 * se, 2 * se, color=c, alpha=0.12)
        ax.plot(samples, run_p, color=c, ls="--", label=f"weight {j}: pathwise (T* frozen)")
        ax.axhline(kl_g[j], color=c, ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(f"samples z ~ q_phi(z|x) averaged (in batches of {batch})")
    ax.set_ylabel("gradient component")
    ax.set_title("(a) running means: explicit -> 0 (band: +-2 s.e.),\npathwise -> dKL/dphi (dotted)", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    ax.grid(alpha=0.3)
    ax = axes[1]
    lim = 1.1 * np.max(np.abs(kl_g))
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, label="y = x")
    ax.scatter(kl_g, path_mean, s=8, color="#d62728", label="pathwise gradient (T* frozen)")
    ax.errorbar(kl_g, exp_mean, yerr=2 * exp_se, fmt="o", ms=2.5, color="#1f77b4", elinewidth=0.6,
                label="explicit gradient E_q[grad_phi T*] +- 2 s.e.")
    ax.set_xlabel("closed-form gradient of KL(q_phi(z|x), p(z)), per encoder weight")
    ax.set_ylabel("Monte Carlo gradient")
    ax.set_title("(b) all encoder weights: explicit part = 0, pathwise part = dKL/dphi", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("Chapter 04: Proposition 2 (eq. 3.6) on the library's Gaussian encoder, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WHAT_GOES_WRONG = """What goes wrong
- Differentiating through the adversary's weights in the generator step (letting psi depend on phi,
  or not stopping the gradient into T's parameters): that is not needed (this chapter) and, with a
  shared graph, it trains the adversary to *help* the generator.  objectives.avb_losses cuts the edge.
- Letting the adversary's loss move the encoder: the encoder's samples in eq. (3.3) must be constants;
  otherwise the encoder learns to make its samples easy to classify.
- Prop. 2 is about the *optimal* T*.  A stale adversary has no such guarantee: the generator then
  follows the gradient of a wrong KL.  Keep T close to optimal (Algorithm 1's variant with several
  adversary steps; train.TrainConfig.adv_steps), and watch for the encoder collapsing to a point
  (sec. 3.2).
- The sign: the pathwise term enters eq. (3.7) as -T.  With +T the same gradient *increases* the KL.
- Reading a Monte Carlo mean without its standard error: the explicit gradient is only zero in
  expectation; a single batch can be far from zero (panel a)."""


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = 100000 if args.quick else 3200000 if args.full else 800000
    batch = 2000

    # a Gaussian encoder with non-trivial weights (float64); one data point x = e1,
    # so every Monte Carlo sample is a draw from the same q_phi(z|x)
    arch = M.Arch(hidden=(8, 8))
    enc = M.init_params(rng, "vae", arch, np.float64)["enc"]
    W, b = enc[-1]
    enc[-1] = (W, b + np.array([0.6, -0.4, -0.5, 0.3]))            # mean away from 0, var != 1
    x1 = four_points(np.float64)[:1]
    P = flat(enc).size
    mean, log_var = (getval(a) for a in M.gaussian_encoder(enc, x1, arch.act))
    print(f"encoder: {P} weights phi; q_phi(z | x = e1) = N({np.round(mean[0], 3)}, "
          f"diag {np.round(np.exp(log_var[0]), 3)})")

    def explicit(eps):
        x = np.repeat(x1, eps.shape[0], axis=0)
        m, lv = M.gaussian_encoder(enc, x, arch.act)
        z = getval(m) + np.exp(0.5 * getval(lv)) * eps                            # samples of q_phi, fixed
        return explicit_gradient(enc, x, z, arch)

    def pathwise(eps):
        return pathwise_gradient(enc, np.repeat(x1, eps.shape[0], axis=0), eps, arch)

    exp_mean, exp_se, means_e = batched(explicit, n, batch, np.random.default_rng(args.seed + 1), arch.z_dim)
    path_mean, path_se, means_p = batched(pathwise, n, batch, np.random.default_rng(args.seed + 1), arch.z_dim)
    kl_g = kl_gradient(enc, x1, arch)
    # weights that multiply the zero pixels of x = e1 get exactly zero gradient in every term
    active = exp_se > 0
    stat_e, rank, p_e = zero_mean_test(means_e)
    stat_p, _, p_p = zero_mean_test(means_p)
    rel = np.linalg.norm(exp_mean) / np.linalg.norm(kl_g)
    path_err = np.max(np.abs(path_mean - kl_g)[active] / path_se[active])
    assert np.all(path_mean[~active] == 0) and np.all(kl_g[~active] == 0)
    print(f"{n} samples of z ~ q_phi(z|x), {n // batch} batches of {batch}; the {P} weight-gradients "
          f"span {rank} directions:")
    print(f"  explicit  E_q[grad_phi T*]   : |mean| = {np.linalg.norm(exp_mean):.2e}; test 'mean = 0': "
          f"chi2/dof = {stat_e:.2f}, p = {p_e:.3f}")
    print(f"  pathwise (T* frozen)        : |mean| = {np.linalg.norm(path_mean):.3e}; test 'mean = 0': "
          f"chi2/dof = {stat_p:.3g}, p = {p_p:.1e}")
    print(f"  closed-form grad_phi KL     : |grad| = {np.linalg.norm(kl_g):.3e}; "
          f"largest |pathwise - grad KL| / s.e. = {path_err:.2f}")
    print(f"  ||explicit|| / ||grad KL|| = {rel:.4f}")

    # %% The checks
    assert p_e > 1e-3, (stat_e, p_e)                                          # eq. (3.6): noise around 0
    assert p_p < 1e-12, (stat_p, p_p)                                         # the same test has power
    assert rel < (0.05 if args.quick else 0.02), rel                          # ... and small next to the KL gradient
    assert path_err < 5.0, path_err                                          # pathwise = grad KL (I.5-I.6 + 3.6)
    assert np.linalg.norm(kl_g) > 0.1                                         # ... which is far from 0
    check_algorithm1_edges(rng)
    print("Proposition 2 checks: explicit gradient = 0 within Monte Carlo error, pathwise gradient = "
          "closed-form KL gradient  [ok]")

    show = list(np.argsort(-np.abs(kl_g))[:3])                                # the three largest components
    path = os.path.join(args.out, "04_gradient_identity.png")
    make_figure(path, means_e, means_p, kl_g, exp_mean, exp_se, path_mean, show, batch)
    print(f"figure: {path}")
    print(WHAT_GOES_WRONG)
    print(f"chapter 04 done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
