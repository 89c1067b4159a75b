"""Objectives of section 6 (related work) of the AVB paper, as pure functions.

- Adversarial autoencoders (sec. 6.2): an adversary T(z) that does not see x.  Its
  optimum under eq. (6.3) is eq. (6.4), T(z) = log q(z) - log p(z) for the
  *aggregated* posterior q(z) = E_{p_D(x)} q(z|x) (eq. 6.2), not log q(z|x) - log p(z).
- f-GAN form of AVB (sec. 6.3): the reverse KL as an f-divergence with f(t) = t log t,
  conjugate f*(xi) = exp(xi - 1) (eq. 6.6-6.8), and the discriminator objective
  eq. (6.10), whose optimum is T*(x, z) = 1 + log q(z|x) - log p(z).

Conventions as in `objectives`: losses are to be *minimised*; T_pos are the logits of
pairs (x, z ~ q(z|x)), T_neg those of pairs (x, z ~ p(z)) (rows or all pairs); batch
terms are means.
"""
from __future__ import annotations

import autograd.numpy as np
from scipy.special import logsumexp

from . import models as M
from .nn import get_activation, init_mlp, mlp
from .objectives import adversary_loss, fgan_discriminator_loss


# ------------------------------------------------------------------ sec. 6.2: AAE
def init_z_adversary(rng: np.random.Generator, z_dim: int, hidden: tuple = (64, 64),
                     dtype: type = np.float32) -> list:
    """Weights of an adversary T(z) that sees only the latent code (an AAE's
    discriminator): an MLP z -> 1, output layer scaled down so T starts near 0."""
    return init_mlp(rng, [z_dim] + list(hidden) + [1], dtype, last_scale=0.1)


def z_adversary(adv: list, z: np.ndarray, activation: str = "elu", fold: bool = True) -> np.ndarray:
    """T(z) = MLP(z) (+ ||z||^2 / 2, the folded prior term of `models.fold_prior`).
    z: (B, dz) -> (B,).  With x absent, the best it can do is eq. (6.4)."""
    T = mlp(adv, z, get_activation(activation))[:, 0]
    return T + M.fold_prior(z) if fold else T


def aae_adversary_loss(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:
    """Negative of eq. (6.3): the logistic loss of eq. (3.3) with T = T(z).

    The formula is that of `objectives.adversary_loss`; what makes it an adversarial
    autoencoder is that the logits come from an adversary without x (`z_adversary`).
    The maximiser of (6.3) is eq. (6.4): T(z) = log q(z) - log p(z), q(z) the
    aggregated posterior."""
    return adversary_loss(T_pos, T_neg)


def log_aggregate_posterior(log_q_given_x: np.ndarray, log_pd: np.ndarray | None = None) -> np.ndarray:
    """log q(z) = log sum_i p_D(x_i) q(z | x_i)  (eq. 6.2, the aggregated posterior).

    log_q_given_x: (N, M) values log q(z_m | x_i) for N data points and M latent points;
    log_pd: (N,) log p_D(x_i), uniform if None.  -> (M,)."""
    L = np.asarray(log_q_given_x, dtype=float)
    if L.ndim != 2:
        raise ValueError(f"log_q_given_x must have shape (N, M), got {L.shape}")
    lpd = np.full(L.shape[0], -np.log(L.shape[0])) if log_pd is None else np.asarray(log_pd, float)
    if lpd.shape != (L.shape[0],):
        raise ValueError(f"log_pd must have shape ({L.shape[0]},), got {lpd.shape}")
    return logsumexp(L + lpd[:, None], axis=0)


def aae_optimum(log_q_given_x: np.ndarray, log_p: np.ndarray, log_pd: np.ndarray | None = None) -> np.ndarray:
    """eq. (6.4): T(z) = log q(z) - log p(z) with q(z) from `log_aggregate_posterior`.
    log_q_given_x: (N, M), log_p: (M,) -> (M,)."""
    return log_aggregate_posterior(log_q_given_x, log_pd) - np.asarray(log_p, float)


# ------------------------------------------------------------------ sec. 6.3: f-GAN
def f_reverse_kl(t: np.ndarray) -> np.ndarray:
    """f(t) = t log t: the f of eq. (6.6) for which D_f(p || q) = KL(q, p) (eq. 6.8)."""
    return t * np.log(t)


def f_star_reverse_kl(xi: np.ndarray) -> np.ndarray:
    """Convex conjugate of f(t) = t log t: f*(xi) = sup_t (xi t - t log t) = exp(xi - 1)
    (eq. 6.8)."""
    return np.exp(xi - 1.0)


def fgan_kl_estimate(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:
    """The variational lower bound of eq. (6.7)/(6.8) on KL(q, p) for a given T:
    E_q T - E_p exp(T - 1) = -fgan_discriminator_loss.  For *any* T this is <= KL(q, p)
    (in expectation); equality at T* = 1 + log q/p.  Plugged into the ELBO it gives an
    *upper* bound on the ELBO, so it is no more a bound on log p(x) than eq. (3.5) is."""
    return -fgan_discriminator_loss(T_pos, T_neg)


def fgan_optimum(log_q: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """The maximiser of eq. (6.7) for the reverse KL: T* = f'(q/p) = 1 + log q - log p."""
    return 1.0 + np.asarray(log_q) - np.asarray(log_p)


def gan_to_fgan(T_gan: np.ndarray) -> np.ndarray:
    """Map an optimal GAN discriminator of eq. (3.3) (T* = log q/p, Prop. 1) to the
    optimum of eq. (6.10): add 1.  The two objectives estimate the same log ratio."""
    return T_gan + 1.0
