"""Figures (matplotlib, no display needed)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import evaluate as E  # noqa: E402
from . import models as M  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]
TITLES = {"vae": "VAE (Gaussian encoder)", "avb": "AVB", "avb_ac": "AVB + adaptive contrast"}


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format=os.path.splitext(path)[1][1:] or "png")
    plt.close(fig)
    os.replace(tmp, path)


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
