"""Figures (matplotlib, no display needed)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import expit  # noqa: E402  (a sigmoid that does not overflow)

from .. import evaluate as E  # noqa: E402
from .. import models as M  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]
TITLES = {"vae": "VAE (Gaussian encoder)", "avb": "AVB", "avb_ac": "AVB + adaptive contrast",
          "bavae": "Biadversarial VAE (Fickinger)",
          "bavae_exact": "BAVAE ablation: eq. (6) + exact reconstruction"}


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")   # one per writer
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=os.path.splitext(path)[1][1:] or "png")
        os.replace(tmp, path)
    except BaseException:                              # no half-written .tmp- file left behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        plt.close(fig)


def latent_figure(models, data, arch, path, n=1500, seed=0, lim=3.2, stats=None):
    """Figure 6 of the paper: samples of q(z|x) for each of the 4 data points, one
    colour per point, over the decoder's partition of the latent space (the lightly
    shaded background is argmax_i p(x_i | z)).  models: {kind: params}."""
    kinds = list(models)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.4), squeeze=False)
    zz, _ = E.latent_grid(200, lim)
    for ax, kind in zip(axes[0], kinds):
        params = models[kind]
        ll, _, _ = E.decoder_loglik_grid(params["dec"], data, arch, 200, lim)
        region = np.argmax(ll, axis=0).reshape(200, 200)
        cmap = matplotlib.colors.ListedColormap([matplotlib.colors.to_rgba(c, 0.18) for c in COLORS])
        ax.imshow(region.T, origin="lower", extent=[-lim, lim, -lim, lim], cmap=cmap,
                  vmin=-0.5, vmax=3.5, interpolation="nearest")
        z = E.sample_posterior(params, kind, data, arch, np.random.default_rng(seed), n)
        for i in range(data.shape[0]):
            ax.scatter(z[i, :, 0], z[i, :, 1], s=2, color=COLORS[i % 4], alpha=0.5,
                       label=f"x = e{i + 1}")
        t = np.linspace(0, 2 * np.pi, 200)
        for r in (1, 2):
            ax.plot(r * np.cos(t), r * np.sin(t), "k:", lw=0.6)
        title = TITLES.get(kind, kind)
        if stats and kind in stats:
            title += "\n" + stats[kind]
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=4)
    fig.suptitle("Samples of q(z|x) per data point (colours) over the decoder's partition "
                 "(shading); dotted: prior 1- and 2-sigma circles", fontsize=9)
    _save(fig, path)
    return path


def curve_figure(curves, path, key="log_likelihood", optimum=None, label=""):
    """Log-likelihood (or another key) over iterations, one line per run."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, hist in curves.items():
        it = [h["iteration"] for h in hist if key in h]
        val = [h[key] for h in hist if key in h]
        ax.plot(it, val, label=name)
    if optimum is not None:
        ax.axhline(optimum, color="k", ls=":", lw=0.8, label=f"optimum {optimum:.3f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(label, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return path


def bavae_training_figure(histories, path):
    """The Biadversarial VAE's training logs (`bavae.train_bavae` history), one line per run:
    the batch mean of log p(x|z), z ~ q(z|x); the two adversaries' KL estimates (eq. 9 and
    17; symlog axis); and w_model, the batch mean of exp(D(x', z) - 1) that weights the
    decoder's score-function gradient (1 in expectation at D = D*).  histories: {kind: [dict]}."""
    panels = [("loglik", "batch mean log p(x|z), z ~ q(z|x)", "linear"),
              (("kl_encoder", "kl_decoder"), "adversaries' values (KL estimates at D*; eq. 6: -, eq. 14: --)",
               "symlog"),
              ("w_model", "w = mean exp(D(x', z) - 1) (1 at D*; 0 drawn at 1e-30)", "log")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for j, (kind, hist) in enumerate(histories.items()):
        color = f"C{j}"
        it = np.array([h["iteration"] for h in hist])
        for ax, (keys, title, scale) in zip(axes, panels):
            for key, ls in zip((keys,) if isinstance(keys, str) else keys, ("-", "--")):
                val = np.array([h.get(key, np.nan) for h in hist], float)
                if np.all(np.isnan(val)):
                    continue
                if scale == "log":
                    val = np.maximum(val, 1e-30)
                ax.plot(it, val, ls, color=color, lw=1.2,
                        label=TITLES.get(kind, kind) if key in ("loglik", "kl_encoder", "w_model") else None)
            ax.set_yscale(scale, **({"linthresh": 10} if scale == "symlog" else {}))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    _save(fig, path)
    return path


def _mosaic(images, rows, cols, side=28, pad=1):
    """(n, side*side) images in [0, 1] -> one (rows*(side+pad), cols*(side+pad)) array."""
    out = np.ones((rows * (side + pad) + pad, cols * (side + pad) + pad))
    for i, im in enumerate(images[:rows * cols]):
        r, c = divmod(i, cols)
        out[pad + r * (side + pad):pad + r * (side + pad) + side,
            pad + c * (side + pad):pad + c * (side + pad) + side] = im.reshape(side, side)
    return out


def mnist_figure(models, x, arch, path, n_samples=36, n_recon=12, seed=0, stats=None):
    """Binarized MNIST (Table 2 models): per model (one row) the decoder's mean images
    sigmoid(logits(z)) for z ~ p(z) (left), and the first n_recon examples of x (top strip)
    above their reconstructions sigmoid(logits(z)), z ~ q(z|x) (bottom strip, right).
    models: {kind: params}."""
    kinds = list(models)
    side = int(round(np.sqrt(arch.x_dim)))
    if side * side != arch.x_dim:
        raise ValueError(f"mnist_figure needs square images, got x_dim={arch.x_dim}")
    rng = np.random.default_rng(seed)
    z_prior = rng.standard_normal((n_samples, arch.z_dim)).astype(np.float32)    # one set for all models
    xs = np.asarray(x[:n_recon], np.float32)
    k = int(np.ceil(np.sqrt(n_samples)))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 3.3 * len(kinds)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2]})
    for row, kind in zip(axes, kinds):
        params = models[kind]
        samples = expit(np.asarray(M.decoder_logits(params["dec"], z_prior, arch.act)))
        row[0].imshow(_mosaic(samples, k, k, side), cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{TITLES.get(kind, kind)}: samples (mean images)", fontsize=9)
        z = E.sample_posterior(params, kind, xs, arch, np.random.default_rng(seed + 1), 1)[:, 0]
        recon = expit(np.asarray(M.decoder_logits(params["dec"], z, arch.act)))
        cols = int(np.ceil(n_recon / 2))
        strip = np.concatenate([_mosaic(xs[:cols], 1, cols, side), _mosaic(recon[:cols], 1, cols, side),
                                _mosaic(xs[cols:], 1, cols, side), _mosaic(recon[cols:], 1, cols, side)])
        row[1].imshow(strip, cmap="gray", vmin=0, vmax=1)
        title = "data (rows 1, 3) and reconstructions z ~ q(z|x) (rows 2, 4)"
        if stats and kind in stats:
            title += "\n" + stats[kind]
        row[1].set_title(title, fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    _save(fig, path)
    return path


def figure7(params, x_train, arch, path, n=100, seed=0, title=""):
    """Figure 7 of the paper: independent samples of a trained model (left: the decoder's
    mean image sigmoid(logits(z)) for z ~ p(z), one per cell) beside n training images
    (right), on the same grid so that the two can be compared at a glance."""
    side, k = int(round(np.sqrt(arch.x_dim))), int(np.ceil(np.sqrt(n)))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, arch.z_dim)).astype(np.float32)                       # z ~ p(z)
    samples = expit(np.asarray(M.decoder_logits(params["dec"], z, arch.act)))
    data = np.asarray(x_train, np.float32)[rng.choice(len(x_train), n, replace=False)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, imgs, name in ((axes[0], samples, f"samples of {title}" if title else "samples"),
                           (axes[1], data, "training images")):
        ax.imshow(_mosaic(imgs, k, k, side), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Figure 7 (AVB, Mescheder et al. 2017): independent samples z ~ p(z), mean images", fontsize=10)
    _save(fig, path)
    return path


def bench_sweep_figure(sweeps, path, targets=((512, 0.75), (64, 0.5)), key="fraction_of_peak"):
    """`bench step --sweep`: fraction_of_peak per (batch, width) cell as grouped bars, one
    colour per sweep.  sweeps: {label: {'cells': [bench_step results]}}; dotted lines mark
    the issue's targets (0.75 at batch 512, 0.5 at batch 64)."""
    labels = list(sweeps)
    keys = sorted({(c["batch"], c["width"]) for s in sweeps.values() for c in s["cells"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) * max(1, len(labels)) / 2 + 2), 3.8))
    w = 0.8 / max(1, len(labels))
    for j, lab in enumerate(labels):
        cells = {(c["batch"], c["width"]): c for c in sweeps[lab]["cells"]}
        xs = [i + (j - (len(labels) - 1) / 2) * w for i in range(len(keys))]
        ys = [cells[k].get(key, np.nan) if k in cells else np.nan for k in keys]
        ax.bar(xs, ys, w, label=lab, color=COLORS[j % len(COLORS)])
        for xx, yy in zip(xs, ys):
            if np.isfinite(yy):
                ax.text(xx, yy + 0.01, f"{yy:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
    for batch, target in targets:
        idx = [i for i, k in enumerate(keys) if k[0] == batch]
        if idx:
            ax.hlines(target, min(idx) - 0.45, max(idx) + 0.45, colors="k", linestyles=":", lw=1)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"B {b}\nH {h}" for b, h in keys], fontsize=8)
    ax.set_ylabel("fraction of peak" + (" (CPU time)" if key.endswith("_cpu") else "")
                  + "\n(fixed FLOP rule / sgemm)")
    ax.set_ylim(0, 1)
    ax.set_title("One AVB step vs this machine's sgemm rate (dotted: targets)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return path
