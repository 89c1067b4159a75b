"""Chapter 02 - The implicit encoder z = g(x, eps), and why log q(z|x) is out of reach.

Paper: Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017
(https://arxiv.org/abs/1701.04722): section 3 and Fig. 2 (a: the VAE's Gaussian encoder, b: the black-box
encoder with the noise as an *input*); section 3.1, eq. (3.1)-(3.2).

The VAE's encoder outputs a mean and a variance and adds the noise at the very end,
so q(z|x) is Gaussian and log q(z|x) is a formula.  AVB feeds the noise into the
network instead (Fig. 2b): q(z|x) can take any shape, but it is only a *sampler*.
Eq. (3.1) writes the ELBO as an expectation of log p(z) - log q(z|x) + log p(x|z);
for the black-box encoder every term is computable except log q(z|x), and the
difference (3.2) is exactly what the adversary of chapter 03 will learn.

What you will learn
- eq. (3.1): the ELBO as one expectation, checked against the closed-form-KL ELBO of
  eq. (2.1) for a Gaussian encoder, where log q is known;
- Fig. 2b: models.implicit_encoder produces samples that no Gaussian fits - measured
  as the KL from q(z|x) to its best (moment-matched) Gaussian, with a Gaussian control;
- why log q(z|x) has no formula: the map eps -> z is not invertible (64-d noise to a 2-d
  z: a 2 x 64 Jacobian, a 62-dimensional set of noise values behind every z);
- that a *randomly initialised* implicit encoder with 64-d noise is nearly Gaussian
  (a central-limit effect): flexibility is something training has to use (chapter 05).

Run:  python chapters/02_implicit_encoder.py            (26 s measured on 2 CPU cores shared with other jobs, load average 2.08-2.04)
      python chapters/02_implicit_encoder.py --quick    (seconds; the test suite)
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
import autograd.numpy as anp  # noqa: E402
import numpy as np  # noqa: E402
from autograd import grad, jacobian  # noqa: E402
from scipy.special import ndtr  # noqa: E402

from avb_minimal.chapter import chapter_args  # noqa: E402
from avb_minimal import evaluate as E  # noqa: E402
from avb_minimal import models as M  # noqa: E402
from avb_minimal import objectives as O  # noqa: E402
from avb_minimal.data import four_points  # noqa: E402
from avb_minimal.ops import bernoulli_loglik  # noqa: E402
from avb_minimal.distributions import log_normal_diag, log_std_normal  # noqa: E402
from avb_minimal.experiments.table1 import SMOKE_ITERS, table1_settings  # noqa: E402
from avb_minimal.optim import Adam, adam_init, adam_step  # noqa: E402
from avb_minimal.train import train  # noqa: E402
from avb_minimal.progress import Progress  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "runs", "chapters")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]


def parse_args(argv=None):
    return chapter_args("Chapter 02: the implicit encoder (Fig. 2b, eq. 3.1-3.2).",
                        "fewer samples (seconds; for tests)",
                        "more samples for the k-NN estimates",
                        DEFAULT_OUT, argv)


# %% eq. (3.1): the ELBO as E_q[log p(z) - log q(z|x) + log p(x|z)]
def check_eq31(params, arch, rng, n):
    """For a Gaussian encoder (Fig. 2a) every term of eq. (3.1) is computable, and its
    Monte Carlo mean must equal the ELBO of eq. (2.1) with the KL in closed form
    (objectives.vae_elbo, same noise).  float64."""
    data = four_points(np.float64)
    x = np.repeat(data, n // 4, axis=0)                                            # (n, 4)
    eps = rng.standard_normal((x.shape[0], arch.z_dim))                            # (n, 2)
    mean, log_var = M.gaussian_encoder(params["enc"], x, arch.act)                     # (n, 2) x2
    z = mean + np.exp(0.5 * log_var) * eps                                         # z ~ q(z|x)
    log_q = log_normal_diag(z, mean, log_var)                                      # known: Gaussian
    terms = log_std_normal(z) - log_q + bernoulli_loglik(x, M.decoder_logits(params["dec"], z, arch.act))  # eq. (3.1)
    closed = O.vae_elbo(params, x, eps, arch)                                      # eq. (2.1)
    a, b = terms.reshape(4, -1), closed.reshape(4, -1)
    se = np.sqrt(a.var(1) / a.shape[1] + b.var(1) / b.shape[1])
    assert np.all(np.abs(a.mean(1) - b.mean(1)) < 5 * se), (a.mean(1), b.mean(1), se)
    print("eq. (3.1) = eq. (2.1) for a Gaussian encoder (per x, Monte Carlo): "
          + " ".join(f"{u:.3f}/{v:.3f}" for u, v in zip(a.mean(1), b.mean(1))) + "  [ok]")


# %% Fig. 2b: an implicit encoder, and how far its q(z|x) is from every Gaussian
def non_gaussianity(z, k=5):
    """min over Gaussians G of KL(q, G) = H[N(mean, cov of q)] - H[q]: the KL to the
    moment-matched Gaussian (the minimiser), with H[q] from samples by the k-NN
    (Kozachenko-Leonenko) estimator of evaluate.knn_entropy.  0 iff q is Gaussian."""
    C = np.cov(z.T)
    h_gauss = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * C))
    return h_gauss - E.knn_entropy(np.asarray(z, np.float64), k)


OFFSETS = np.array([[-2.0, 2.0], [2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])


def target_sampler(i, eps):
    """Four non-Gaussian samplers, one per data point, written as maps of the first two
    noise coordinates: a ring, a banana, two bumps and a skewed fan.  (n, 2)."""
    e1, e2 = eps[:, 0], eps[:, 1]
    if i == 0:
        a, r = 2 * np.pi * ndtr(e2), 1.0 + 0.12 * e1
        z = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif i == 1:
        z = np.stack([0.8 * e1, 0.45 * e1 ** 2 + 0.25 * e2 - 0.45], 1)
    elif i == 2:
        z = np.stack([1.2 * np.tanh(3 * e1) + 0.15 * e1, 0.3 * e2], 1)
    else:
        z = np.stack([np.exp(0.8 * e1) - 1.4, 0.4 * e2 * np.exp(0.4 * e1)], 1)
    return z + OFFSETS[i]


def fit_implicit_encoder(arch, data, steps, seed):
    """Fit models.implicit_encoder to the four samplers by regression on the noise,
    || g(x_i, eps) - sampler_i(eps) ||^2.  This is only to get a clear picture of what
    the network class can represent; AVB finds its shapes through the adversary
    (chapter 05), with no target sampler.  float32, Adam."""
    rng = np.random.default_rng(seed)
    enc = M.init_params(rng, "avb", arch)["enc"]
    opt = Adam(3e-3, 0.9, 0.999)
    state = adam_init(enc)
    loss = lambda p, x, e, y: anp.mean(anp.sum((M.implicit_encoder(p, x, e, arch.act) - y) ** 2, 1))  # noqa: E731
    g = grad(loss)
    prog = Progress(steps, "fitting the implicit encoder")
    for it in range(steps):
        idx = rng.integers(0, 4, 512)
        eps = rng.standard_normal((512, arch.eps_dim)).astype(np.float32)           # (B, 64)
        y = np.empty((512, 2), np.float32)
        for i in range(4):
            y[idx == i] = target_sampler(i, eps[idx == i])
        enc, state = adam_step(opt, enc, g(enc, data[idx], eps, y), state, opt.lr * (1 - 0.9 * it / steps))
        prog.update(it + 1)
    return enc


def implicit_samples(enc, arch, x_row, eps):
    x = np.repeat(x_row[None], eps.shape[0], axis=0)
    return np.asarray(M.implicit_encoder(enc, x, eps, arch.act))                       # z = g(x, eps)  (n, 2)


# %% Why log q(z|x) is out of reach
def jacobian_shape(enc, arch, x_row, rng):
    """q(z|x) = integral of delta(z - g(x, eps)) p(eps) d eps.  A density formula needs
    the change of variables p(eps) / |det dg/deps| at the (unique) eps with g(x, eps) = z.
    The paper's encoder maps 64-d noise to a 2-d z: dg/deps is 2 x 64, there is no
    determinant, and every z has a 62-dimensional set of preimages to integrate over."""
    enc64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in enc]
    g = lambda e: M.implicit_encoder(enc64, x_row[None].astype(np.float64), e[None], arch.act)[0]  # noqa: E731
    return jacobian(g)(rng.standard_normal(arch.eps_dim)).shape


def make_figure(path, gauss_z, impl_z, ng):
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.3), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    for ax, Z, key, title in ((axes[0], gauss_z, "gauss", "(a) Fig. 2a: Gaussian encoder (a trained VAE)"),
                              (axes[1], impl_z, "fitted", "(b) Fig. 2b: implicit encoder z = g(x, eps)")):
        for i in range(4):
            z = Z[i]
            ax.scatter(z[:3000, 0], z[:3000, 1], s=1.5, color=COLORS[i], alpha=0.35)
            m, C = z.mean(0), np.cov(z.T)
            ell = m[:, None] + 2 * np.linalg.cholesky(C) @ circle
            ax.plot(ell[0], ell[1], color=COLORS[i], ls="--", lw=1.3,
                    label=f"x = e{i + 1}: KL(q, best Gaussian) = {ng[key][i]:.2f}")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        lim = (-4.2, 4.2) if key == "gauss" else (-4.5, 5.5)
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_aspect("equal")
        ax.set_title(title + "\ndots: samples of q(z|x); dashed: best Gaussian (2 sigma)", fontsize=10)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    ax = axes[2]
    xs = np.arange(4)
    for k, (key, label, c) in enumerate((("gauss", "Gaussian encoder (control)", "0.5"),
                                         ("fitted", "implicit encoder, fitted", "#9467bd"),
                                         ("init", "implicit encoder, random init", "#8c564b"))):
        ax.bar(xs + (k - 1) * 0.27, ng[key], 0.27, color=c, label=label)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"x = e{i + 1}" for i in xs])
    ax.set_ylabel("KL(q(z|x), best Gaussian), nats (k-NN estimate)")
    ax.set_title("(c) how far from Gaussian, per data point\n(64-d noise at init: central limit)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("Chapter 02: a black-box encoder is a sampler without a density (Fig. 2, eq. 3.1-3.2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WHAT_GOES_WRONG = """What goes wrong
- Trying to evaluate log q(z|x) for the black-box encoder: there is no formula (64-d noise, 2-d z),
  and density estimates from samples (KDE, k-NN) are biased and have no gradient you can trust in
  more than a few dimensions.  AVB never evaluates it: the adversary learns log q - log p (eq. 3.2).
- Feeding the noise only at the end (z = mu(x) + sigma(x) * eps) is the VAE: whatever the network
  depth, q(z|x) stays Gaussian.  The noise must be an *input* of the network (Fig. 2b).
- Expecting non-Gaussian posteriors at initialisation: with 64-d noise a random network is close to
  Gaussian (printed above); the shape comes from training against the adversary.
- The k-NN non-Gaussianity here is an *estimate* with its own error (the Gaussian control shows its
  size); it is a diagnostic, never a training signal.
- An adversary that conditions only on z cannot see q(z|x) at all (an adversarial autoencoder,
  sec. 6.2, chapter 08): T must take the pair (x, z)."""


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = 4000 if args.quick else 40000 if args.full else 12000
    data = four_points()

    # a Gaussian encoder worth looking at: the VAE of Table 1, quick settings (~2 s)
    varch, cfgs, _ = table1_settings(quick=True, iters=SMOKE_ITERS)
    vae, _ = train("vae", data, varch, cfgs["vae"], seed=args.seed, quiet=False, desc="training a VAE")
    vae64 = {k: [(W.astype(np.float64), b.astype(np.float64)) for W, b in v] for k, v in vae.items()}
    check_eq31(vae64, varch, rng, 40000 if args.quick else 200000)

    # the paper's implicit encoder (64-d noise as input), fitted to four non-Gaussian samplers
    arch = M.Arch(hidden=(64, 64))                    # eps_dim = 64 as in the authors' code
    enc = fit_implicit_encoder(arch, data, 2000 if args.quick else 3000, args.seed)
    enc0 = M.init_params(np.random.default_rng(args.seed + 1), "avb", arch)["enc"]
    gauss_z = [np.asarray(z) for z in E.sample_posterior(vae, "vae", data, varch, rng, n)]
    impl_z, init_z = [], []
    for i in range(4):
        eps = rng.standard_normal((n, arch.eps_dim)).astype(np.float32)
        impl_z.append(implicit_samples(enc, arch, data[i], eps))
        init_z.append(implicit_samples(enc0, arch, data[i], eps))
    ng = {"gauss": np.array([non_gaussianity(z) for z in gauss_z]),
          "fitted": np.array([non_gaussianity(z) for z in impl_z]),
          "init": np.array([non_gaussianity(z) for z in init_z])}
    print(f"KL(q(z|x), best Gaussian), k-NN estimate from {n} samples per x:    e1      e2      e3      e4")
    print("  Gaussian encoder (control)                                  : " + " ".join(f"{v:7.3f}" for v in ng["gauss"]))
    print("  implicit encoder (64-d noise) fitted to non-Gaussian shapes : " + " ".join(f"{v:7.3f}" for v in ng["fitted"]))
    print("  implicit encoder (64-d noise), random initialisation        : " + " ".join(f"{v:7.3f}" for v in ng["init"]))
    J = jacobian_shape(enc, arch, data[0], rng)
    print(f"dg/deps of this encoder has shape {J}: no determinant, no change of variables, "
          f"so log q(z|x) has no formula (eq. 3.2 is what the adversary will learn)")

    # %% The checks
    tol = 0.08 if args.quick else 0.05                         # k-NN estimator error at this n
    assert np.all(np.abs(ng["gauss"]) < tol), ng["gauss"]      # the estimator is calibrated on Gaussians
    assert np.all(ng["fitted"] > 0.3), ng["fitted"]            # no Gaussian fits the implicit q(z|x)
    assert np.all(np.abs(ng["init"]) < tol), ng["init"]        # 64-d noise at init: nearly Gaussian
    assert J == (2, arch.eps_dim)
    print("checks: eq. (3.1) = eq. (2.1); Gaussian control ~ 0; fitted implicit q(z|x) far from every "
          "Gaussian; random 64-d-noise encoder ~ Gaussian  [ok]")

    path = os.path.join(args.out, "02_implicit_encoder.png")
    make_figure(path, gauss_z, impl_z, ng)
    print(f"figure: {path}")
    print(WHAT_GOES_WRONG)
    print(f"chapter 02 done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
