"""Binarized MNIST (sec. 5.2, Table 2): settings and training of the three models.

VAE, AVB and AVB + AC share one decoder architecture (MLP z -> 300 -> 300 -> 784
Bernoulli logits), so that the comparison is one of inference models only.  The
encoders: a Gaussian MLP (VAE), the implicit encoder z = g(x, eps) (AVB) and the
noise-basis encoder of supplement III (AVB + AC).  The adversary is the inner
product of two MLPs plus the terms acting on x and z alone of sec. 5.2
(`Arch.adv_unary`).  The paper uses conv nets; MLPs keep a run on a 2-core CPU.

Nothing here knows of a test split: every function takes the arrays it is given.
"""
import os

from . import models as M
from .train import TrainConfig, train

X_DIM = 784


def mnist_arch(latent=8, quick=False):
    """One architecture for the three kinds (each kind uses the parts it needs)."""
    if quick:
        return M.Arch(x_dim=X_DIM, z_dim=latent, hidden=(64, 64), adv_hidden=(64, 64), adv_dim=64,
                      adv_unary=True, eps_dim=16, n_basis=8)
    return M.Arch(x_dim=X_DIM, z_dim=latent, hidden=(300, 300), adv_hidden=(256, 256), adv_dim=256,
                  adv_unary=True, eps_dim=32, n_basis=16)


def mnist_configs(quick=False):
    """{kind: TrainConfig}.  Batch 100; the same number of iterations for the three
    kinds (40k = 80 epochs of the 50k training images)."""
    if quick:
        base = dict(iters=300, batch=100, lr_gen=1e-3, lr_adv=2e-3, negatives="all_pairs",
                    log_every=50, checkpoint_every=100)
        return {k: TrainConfig(**base) for k in M.KINDS}
    base = dict(iters=40000, batch=100, lr_gen=2e-4, lr_adv=5e-4, negatives="all_pairs",
                decay_from=0.5, lr_final=0.1, log_every=500, checkpoint_every=2000)
    return {"vae": TrainConfig(**dict(base, lr_gen=1e-3)),
            "avb": TrainConfig(**base),
            "avb_ac": TrainConfig(**base)}


def train_mnist(kind, train_x, out_dir, latent=8, quick=False, seed=0, quiet=True):
    """Train (or resume) one model; its checkpoint is OUT_DIR/<kind>_z<latent>[_quick].npz.
    Returns (params, info) as `train.train`."""
    arch, cfg = mnist_arch(latent, quick), mnist_configs(quick)[kind]
    os.makedirs(out_dir, exist_ok=True)
    ckpt = checkpoint_path(out_dir, kind, latent, quick)
    return train(kind, train_x, arch, cfg, seed=seed, checkpoint=ckpt, quiet=quiet,
                 desc=f"mnist {kind}")


def checkpoint_path(out_dir, kind, latent=8, quick=False):
    return os.path.join(out_dir, f"{kind}_z{latent}{'_quick' if quick else ''}.npz")
