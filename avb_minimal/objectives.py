"""Every loss as a pure function of (params, data, noise).

Conventions: each function returns a quantity to *minimise* (the negative of
the paper's maximisation objective) unless its name says `elbo`.  Per-example
terms are sums over pixels / latent dimensions; batch terms are means, so T
(one number per (x, z) pair) and log p(x|z) (a sum over pixels) share a scale.
"""
import autograd.numpy as np
from autograd.tracer import getval

from . import models as M
from .distributions import bernoulli_loglik, kl_diag_normal_std, log_std_normal
from .nn import stop_gradient, take_rows
from .ops import inner_product_all_pairs, inner_product_rows, softplus


# ------------------------------------------------------------------ VAE
def vae_elbo(params, x, eps, arch):
    """eq. (2.1): ELBO(x) = -KL(q(z|x), p(z)) + E_q log p(x|z), one reparameterised
    sample z = mean + exp(log_var / 2) * eps per row.  -> (B,)."""
    mean, log_var = M.gaussian_encoder(params["enc"], x, arch)          # (B, dz) x2
    z = mean + np.exp(0.5 * log_var) * eps                               # (B, dz)
    loglik = bernoulli_loglik(x, M.decoder_logits(params["dec"], z, arch))   # (B,)
    return loglik - kl_diag_normal_std(mean, log_var)


def vae_loss(params, x, eps, arch):
    """Negative of eq. (2.4) on a batch: -mean_x ELBO(x)."""
    return -np.mean(vae_elbo(params, x, eps, arch))


# ------------------------------------------------------------------ adversary
def adversary_loss(T_pos, T_neg):
    """Negative of eq. (3.3): E_q[-log sigma(T)] + E_p[-log(1 - sigma(T))]
    = mean softplus(-T_pos) + mean softplus(T_neg).

    T_pos: logits of pairs (x, z ~ q(z|x)), shape (B,).
    T_neg: logits of pairs (x, z ~ p(z)), shape (B,) or all pairs (B, M).
    The optimum is T* = log q(z|x) - log p(z) (Proposition 1, eq. 3.4).
    """
    return np.mean(softplus(-T_pos)) + np.mean(softplus(T_neg))


def generator_objective(T_q, loglik):
    """eq. (3.7): E[-T(x, z_phi(x, eps)) + log p_theta(x | z_phi(x, eps))] (to maximise).
    With T = T* this is the ELBO of eq. (3.5)."""
    return np.mean(-T_q + loglik)


def ac_generator_objective(T_bar, z_bar, loglik, log_prior):
    """eq. (4.2) as in Algorithm 2, line 12 (to maximise):
    E[-T(x, z_bar) + ||z_bar||^2 / 2 + log p_theta(x, z)], where -log r_alpha(z|x)
    = ||z_bar||^2/2 + const because mu(x), sigma(x) carry no gradient."""
    return np.mean(-T_bar + 0.5 * np.sum(z_bar * z_bar, axis=-1) + loglik + log_prior)


def _adversary_logits(adv, x, z_pos, z_neg, arch, negatives, F=None):
    """T on (x, z_pos) rows and on the negatives: matched rows (x_i, z_neg_i) or all
    pairs (x_i, z_neg_j).  For the inner-product adversary f(x) is computed once
    (or passed in as F) and g runs once on [z_pos; z_neg]."""
    if arch.adversary != "inner":
        if negatives == "all_pairs":
            raise ValueError("negatives='all_pairs' needs the inner-product adversary")
        return M.adversary(adv, x, z_pos, arch), M.adversary(adv, x, z_neg, arch)
    F = M.adversary_features_x(adv, x, arch) if F is None else F           # (B, H)
    B, M_ = z_pos.shape[0], z_neg.shape[0]
    G = M.adversary_features_z(adv, np.concatenate([z_pos, z_neg], 0), arch)  # (B+M, H): one pass
    G_pos, G_neg = take_rows(G, 0, B), take_rows(G, B, B + M_)               # (B, H), (M, H)
    T_pos = inner_product_rows(F, G_pos) + M.fold_prior(z_pos)             # (B,)
    if negatives == "all_pairs":
        T_neg = inner_product_all_pairs(F, G_neg) + M.fold_prior(z_neg)[None, :]   # (B, M)
    else:
        T_neg = inner_product_rows(F, G_neg) + M.fold_prior(z_neg)         # (B,)
    return T_pos, T_neg


NEGATIVES = ("pairs", "all_pairs")


def check_negatives(negatives):
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    return negatives


# ------------------------------------------------------------------ Algorithm 1 / 2
def encode(params, kind, x, noise, arch):
    """z ~ q_phi(z|x) for the implicit encoders, plus the AC moments (or None)."""
    if kind == "avb":
        return M.implicit_encoder(params["enc"], x, noise, arch), None, None
    return M.noise_basis_encoder(params["enc"], x, noise, arch)


def avb_losses(params, kind, x, noise, z_neg, arch, negatives="pairs", aux=None):
    """The two losses of one simultaneous step of Algorithm 1 (kind='avb') or
    Algorithm 2 (kind='avb_ac'), arranged so that ONE gradient of their sum gives
    exactly the algorithm's three gradients:

    - g_theta, g_phi from eq. (3.7) (AC: line 12 of Algorithm 2) with psi held fixed;
    - g_psi from eq. (3.3) with the encoder's samples held fixed.

    "Held fixed" is `getval`/`stop_gradient`: the value is used, the graph edge is
    cut, so no gradient of one player's loss reaches the other player's weights.
    z_neg: prior samples z ~ p(z) (AVB) or eta ~ N(0, I) (AC).  Returns
    (gen_loss, adv_loss), both to minimise.  `aux`, if a dict, receives floats.
    """
    z, mean, var = encode(params, kind, x, noise, arch)               # (B, dz)
    loglik = bernoulli_loglik(x, M.decoder_logits(params["dec"], z, arch))   # (B,)
    z_adv = z if kind == "avb" else M.normalise(z, mean, var)          # what T sees
    adv, adv_fixed = params["adv"], stop_gradient(params["adv"])
    F = M.adversary_features_x(adv, x, arch) if arch.adversary == "inner" else None
    # T for the generator: psi fixed, gradient flows through z only.
    if F is not None:
        T_gen = (inner_product_rows(getval(F), M.adversary_features_z(adv_fixed, z_adv, arch))
                 + M.fold_prior(z_adv))                                 # (B,)
    else:
        T_gen = M.adversary(adv_fixed, x, z_adv, arch)
    if kind == "avb":
        gen = generator_objective(T_gen, loglik)                        # eq. (3.7)
    else:
        gen = ac_generator_objective(T_gen, z_adv, loglik, log_std_normal(z))   # eq. (4.2)
    # T for the adversary: encoder samples fixed.
    T_pos, T_neg = _adversary_logits(adv, x, getval(z_adv), z_neg, arch, negatives, F)
    adv_loss = adversary_loss(T_pos, T_neg)                             # eq. (3.3)
    if aux is not None:
        aux["gen_objective"] = float(getval(gen))
        aux["adv_loss"] = float(getval(adv_loss))
        aux["loglik"] = float(np.mean(getval(loglik)))
        aux["T_q"] = float(np.mean(getval(T_pos)))
    return -gen, adv_loss


def adversary_only_loss(params, kind, x, noise, z_neg, arch, negatives="pairs"):
    """eq. (3.3) alone, for the extra adversary steps (k > 1); the encoder runs forward only."""
    fixed = {"enc": stop_gradient(params["enc"])}
    z, mean, var = encode(fixed, kind, x, noise, arch)
    z_adv = z if kind == "avb" else M.normalise(z, mean, var)
    T_pos, T_neg = _adversary_logits(params["adv"], x, z_adv, z_neg, arch, negatives)
    return adversary_loss(T_pos, T_neg)
