"""Every loss as a pure function of (params, data, noise).

Conventions: each function returns a quantity to *minimise* (the negative of
the paper's maximisation objective) unless its name says `elbo`.  Per-example
terms are sums over pixels / latent dimensions; batch terms are means, so T
(one number per (x, z) pair) and log p(x|z) (a sum over pixels) share a scale.
"""
from __future__ import annotations

import math
from collections import namedtuple

import autograd.numpy as np
from autograd.tracer import getval

from . import models as M
from .distributions import kl_diag_normal_std, log_std_normal
from .nn import concatenate, take_rows, where
from .ops import bernoulli_loglik, inner_product_all_pairs, inner_product_rows, softplus
from .trees import stop_gradient


# ------------------------------------------------------------------ VAE
def vae_elbo(params: dict, x: np.ndarray, eps: np.ndarray, arch: M.Arch) -> np.ndarray:
    """eq. (2.1): ELBO(x) = -KL(q(z|x), p(z)) + E_q log p(x|z), one reparameterised
    sample z = mean + exp(log_var / 2) * eps per row.  -> (B,)."""
    ### BEGIN SOLUTION task 2.1: eq. (2.1), the VAE's ELBO
    mean, log_var = M.gaussian_encoder(params["enc"], x, arch.act)          # (B, dz) x2
    z = mean + np.exp(0.5 * log_var) * eps                               # (B, dz)
    loglik = bernoulli_loglik(x, M.decoder_logits(params["dec"], z, arch.act))   # (B,)
    return loglik - kl_diag_normal_std(mean, log_var)
    ### END SOLUTION


def vae_loss(params: dict, x: np.ndarray, eps: np.ndarray, arch: M.Arch) -> np.ndarray:
    """Negative of eq. (2.4) on a batch: -mean_x ELBO(x)."""
    return -np.mean(vae_elbo(params, x, eps, arch))


# ------------------------------------------------------------------ adversary
def adversary_loss(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:
    """Negative of eq. (3.3), the logistic loss of the adversary.

    T_pos: logits of pairs (x, z ~ q(z|x)), shape (B,).
    T_neg: logits of pairs (x, z ~ p(z)), shape (B,) or all pairs (B, M).
    The optimum is T* = log q(z|x) - log p(z) (Proposition 1, eq. 3.4).
    """
    ### BEGIN SOLUTION task 3.1: eq. (3.3), the adversary's loss
    return np.mean(softplus(-T_pos)) + np.mean(softplus(T_neg))
    ### END SOLUTION


def generator_objective(T_q: np.ndarray, loglik: np.ndarray) -> np.ndarray:
    """eq. (3.7): E[-T(x, z_phi(x, eps)) + log p_theta(x | z_phi(x, eps))] (to maximise).
    With T = T* this is the ELBO of eq. (3.5)."""
    ### BEGIN SOLUTION task 3.2: eq. (3.7), the generator objective
    return np.mean(-T_q + loglik)
    ### END SOLUTION


def ac_generator_objective(T_bar: np.ndarray, z_bar: np.ndarray, loglik: np.ndarray,
                           log_prior: np.ndarray) -> np.ndarray:
    """eq. (4.2) as in Algorithm 2, line 12 (to maximise):
    E[-T(x, z_bar) + ||z_bar||^2 / 2 + log p_theta(x, z)], where -log r_alpha(z|x)
    = ||z_bar||^2/2 + const because mu(x), sigma(x) carry no gradient."""
    ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
    return np.mean(-T_bar + 0.5 * np.sum(z_bar * z_bar, axis=-1) + loglik + log_prior)
    ### END SOLUTION


def _adversary_logits(adv, x, z_pos, z_neg, arch, negatives, F=None):
    """T on (x, z_pos) rows and on the negatives: matched rows (x_i, z_neg_i) or all
    pairs (x_i, z_neg_j).  For the inner-product adversary f(x) is computed once
    (or passed in as F) and g runs once on [z_pos; z_neg]."""
    act, unary = arch.act, arch.adv_unary
    if arch.adversary != "inner":
        if negatives == "all_pairs":
            raise ValueError("negatives='all_pairs' needs the inner-product adversary")
        return M.adversary(adv, x, z_pos, act), M.adversary(adv, x, z_neg, act)
    F = M.adversary_features_x(adv, x, act, unary) if F is None else F                   # (B, H)
    B, M_ = z_pos.shape[0], z_neg.shape[0]
    G = M.adversary_features_z(adv, concatenate([z_pos, z_neg], 0), act, unary)      # (B+M, H): one pass
    G_pos, G_neg = take_rows(G, 0, B), take_rows(G, B, B + M_)               # (B, H), (M, H)
    T_pos = inner_product_rows(F, G_pos) + M.fold_prior(z_pos)             # (B,)
    if negatives == "all_pairs":
        T_neg = inner_product_all_pairs(F, G_neg) + M.fold_prior(z_neg)[None, :]   # (B, M)
    else:
        T_neg = inner_product_rows(F, G_neg) + M.fold_prior(z_neg)         # (B,)
    return T_pos, T_neg


NEGATIVES = ("pairs", "all_pairs")


def check_negatives(negatives: str) -> str:
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    return negatives


# ------------------------------------------------------------------ Algorithm 1 / 2
def encode(params: dict, kind: str, x: np.ndarray, noise: np.ndarray, arch: M.Arch) -> tuple:
    """z ~ q_phi(z|x) for the implicit encoders, plus the AC moments (or None)."""
    if kind == "avb":
        return M.implicit_encoder(params["enc"], x, noise, arch.act), None, None
    return M.noise_basis_encoder(params["enc"], x, noise, arch.act)


def avb_losses(params: dict, kind: str, x: np.ndarray, noise: np.ndarray, z_neg: np.ndarray, arch: M.Arch,
               negatives: str = "pairs", aux: dict | None = None) -> tuple:
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
    act, unary = arch.act, arch.adv_unary
    z, mean, var = encode(params, kind, x, noise, arch)               # (B, dz)
    loglik = bernoulli_loglik(x, M.decoder_logits(params["dec"], z, act))   # (B,)
    z_adv = z if kind == "avb" else M.normalise(z, mean, var, arch.ac_var_floor)          # what T sees
    adv, adv_fixed = params["adv"], stop_gradient(params["adv"])
    F = M.adversary_features_x(adv, x, act, unary) if arch.adversary == "inner" else None
    # T for the generator: psi fixed, gradient flows through z only.
    if F is not None:
        T_gen = (inner_product_rows(getval(F), M.adversary_features_z(adv_fixed, z_adv, act, unary))
                 + M.fold_prior(z_adv))                                 # (B,)
    else:
        T_gen = M.adversary(adv_fixed, x, z_adv, act)
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


def adversary_only_loss(params: dict, kind: str, x: np.ndarray, noise: np.ndarray, z_neg: np.ndarray, arch: M.Arch,
                        negatives: str = "pairs") -> np.ndarray:
    """eq. (3.3) alone, for the extra adversary steps (k > 1); the encoder runs forward only."""
    fixed = {"enc": stop_gradient(params["enc"])}
    z, mean, var = encode(fixed, kind, x, noise, arch)
    z_adv = z if kind == "avb" else M.normalise(z, mean, var, arch.ac_var_floor)
    T_pos, T_neg = _adversary_logits(params["adv"], x, z_adv, z_neg, arch, negatives)
    return adversary_loss(T_pos, T_neg)


# ------------------------------------------------------------------ the adversary-objective family
# Every adversary objective of the AVB paper, the Biadversarial VAE and a tutorial on implicit
# posteriors, as losses of the same two arguments.
# P is the "positive" distribution, Q the "negative" one, r = log P - log Q their log ratio:
#   AVB (3.3), (6.10), tutorial:  P = q(z|x), Q = p(z)           (pairs (x, z), x ~ p_D)
#   BAVAE (6), encoder adversary: P = q(z|x), Q = p(z)
#   BAVAE (14), decoder adversary: P = p_D(x) q(z|x),  Q = q(z) p_theta(x|z)
# T_pos: the adversary on samples of P, (B,);  T_neg: on samples of Q, (B,) or all pairs (B, M).
# Each loss is to be minimised over T.  At its pointwise optimum T*(r) the loss value L*
# is a known function of a divergence between P and Q (`from_value` inverts it).

def fgan_discriminator_loss(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:
    """eq. (6.10), to minimise: E_Q exp(T - 1) - E_P T  (Q = p(z), P = q(z|x)).

    exp(xi - 1) is f*(xi), the conjugate of f(t) = t log t (eq. 6.8).  Pointwise,
    b e^(t-1) - a t is least at t* = 1 + log(a/b): T* = 1 + log q(z|x) - log p(z), and the
    loss there is -KL(q(z|x), p(z)) (eq. 6.8)."""
    return np.mean(np.exp(T_neg - 1.0)) - np.mean(T_pos)


EXP_CAP = 15.0


def exp_linear(d: np.ndarray, cap: float | None = None) -> np.ndarray:
    """exp(d) for d <= cap, continued by its tangent line beyond: e^cap (1 + d - cap).
    cap None: EXP_CAP, read at call time (set it to math.inf for the plain exp of the paper).

    Used in place of exp in the two BAVAE losses.  On binarized MNIST an adversary's value
    on a negative sample can swing past 88 during training, where float32 exp overflows and
    the gradient e^d blows up Adam's second moment.  The tangent keeps the function convex,
    increasing and C^1, so the pointwise optimum d* is unchanged wherever d* <= cap
    (everywhere on the 4-point data and the Gaussian tests); the gradient is at most e^cap.
    The price: where the density ratio inside the exp exceeds e^cap, a d - b f(d) grows without
    bound (slope a - b e^cap > 0), so the adversary's objective has no maximum there and its
    value is no longer an estimate of the KL.  On binarized MNIST such points exist (an 8-d
    posterior is sharper than e^15 against the prior), and the trained adversaries' values run
    off (README, the Biadversarial VAE on MNIST)."""
    cap = EXP_CAP if cap is None else cap                  # read at call time: can be set to inf
    if math.isinf(cap):                                     # objectives.EXP_CAP = math.inf: plain exp
        return np.exp(d)
    below = getval(d) < cap
    return where(below, np.exp(where(below, d, 0.0)), math.exp(cap) * (1.0 + d - cap))


def bavae_encoder_loss(D_pos: np.ndarray, D_neg: np.ndarray) -> np.ndarray:
    """Biadversarial VAE, eq. (6), negated: -(E_P[1 - D] - E_Q[exp(-D)]),
    D_pos = D_phi(x, z ~ q(z|x)), D_neg = D_phi(x, z ~ p(z)).

    Pointwise a(1 - d) - b e^(-d) is largest at d* = log(b/a), so D* = log p(z) - log q(z|x)
    (eq. 8, the *negative* of AVB's T*), and the maximum is KL(q(z|x), p(z)) (eq. 9): the
    loss at D* is -KL(P, Q).  With D = 1 - T this is eq. (6.10) term for term.
    exp is `exp_linear` (exact for -D <= EXP_CAP)."""
    return -(np.mean(1.0 - D_pos) - np.mean(exp_linear(-D_neg)))


def bavae_decoder_loss(D_pos: np.ndarray, D_neg: np.ndarray) -> np.ndarray:
    """Biadversarial VAE, eq. (14), negated: -(E_P[D] - E_Q[exp(D - 1)]),
    D_pos = D_theta,phi(x, z) on data pairs x ~ p_D, z ~ q(z|x);
    D_neg = D_theta,phi(x', z) on model pairs z ~ q(z|x), x' ~ p_theta(x'|z).

    Pointwise a d - b e^(d-1) is largest at d* = 1 + log(a/b): D* = 1 + log P - log Q (eq. 16)
    and the maximum is KL(P, Q) (eq. 17).  As a function of (D_pos, D_neg) it *is*
    eq. (6.10); what differs is which pairs are P and Q.  exp is `exp_linear` (exact for
    D - 1 <= EXP_CAP)."""
    return -(np.mean(D_pos) - np.mean(exp_linear(D_neg - 1.0)))


def tutorial_critic_loss(T_pos: np.ndarray, T_neg: np.ndarray | None = None) -> np.ndarray:
    """The critic objective of a tutorial on implicit posteriors, to minimise: E_q[exp(T) - T] (T_neg is ignored).

    Broken: e^t - t is least at t = 0, for every z, so T* = 0 whatever q is (p never
    enters), not the claimed log q(z|x) - 1; the loss at T* is 1 for every q and estimates
    no divergence.  The corrected form is `tutorial_corrected_loss`."""
    return np.mean(np.exp(T_pos) - T_pos)


def tutorial_corrected_loss(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:
    """The tutorial's critic with the prior term of eq. (6.10) restored: E_p[exp(T)] - E_q[T].

    Pointwise b e^t - a t is least at t* = log(a/b): T* = log q(z|x) - log p(z), the AVB
    log ratio; the loss there is 1 - KL(q, p).  It is eq. (6.10) with T shifted by one
    (T_(6.10) = T + 1), and it is what the tutorial's ELBO needs: -T* + log p(x|z) is the
    integrand of the ELBO, with no stray constant."""
    return np.mean(np.exp(T_neg)) - np.mean(T_pos)


AdversaryObjective = namedtuple("AdversaryObjective", "name equation loss optimum divergence from_value")
AdversaryObjective.__doc__ = """One member of the family:
name, equation: registry key and where it comes from;
loss(T_pos, T_neg): the loss to minimise (see the convention above);
optimum(log_pos, log_neg): the closed-form pointwise minimiser T* of `loss`;
divergence: what the optimal value estimates, in words;
from_value(L*): that divergence from the loss at T* (None for the tutorial's: nothing)."""


def _log_ratio(log_pos, log_neg):
    return np.asarray(log_pos) - np.asarray(log_neg)


OBJECTIVES = {o.name: o for o in (
    AdversaryObjective("logistic", "AVB eq. (3.3)", adversary_loss,
                       lambda lp, ln: _log_ratio(lp, ln),                     # eq. (3.4)
                       "Jensen-Shannon: L* = log 4 - 2 JS(P, Q)",
                       lambda L: 0.5 * (np.log(4.0) - L)),
    AdversaryObjective("fgan_reverse_kl", "AVB eq. (6.10)", fgan_discriminator_loss,
                       lambda lp, ln: 1.0 + _log_ratio(lp, ln),
                       "KL(P, Q) = KL(q(z|x), p(z)): L* = -KL", lambda L: -L),
    AdversaryObjective("bavae_encoder", "BAVAE eq. (6)", bavae_encoder_loss,
                       lambda lp, ln: -_log_ratio(lp, ln),                    # eq. (8)
                       "KL(P, Q) = KL(q(z|x), p(z)): L* = -KL", lambda L: -L),
    AdversaryObjective("bavae_decoder", "BAVAE eq. (14)", bavae_decoder_loss,
                       lambda lp, ln: 1.0 + _log_ratio(lp, ln),               # eq. (16)
                       "KL(P, Q) = KL(p_D(x) q(z|x), q(z) p(x|z)): L* = -KL", lambda L: -L),
    AdversaryObjective("tutorial", "a tutorial on implicit posteriors, E_q[exp(T) - T]", tutorial_critic_loss,
                       lambda lp, ln: np.zeros_like(_log_ratio(lp, ln)),
                       "none: L* = 1 for every q and p", None),
    AdversaryObjective("tutorial_corrected", "the tutorial + the prior term of (6.10)", tutorial_corrected_loss,
                       lambda lp, ln: _log_ratio(lp, ln),
                       "KL(P, Q): L* = 1 - KL", lambda L: 1.0 - L),
)}


def get_objective(name: str) -> AdversaryObjective:
    """The family member called `name`; an unknown name raises ValueError listing the valid ones."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown adversary objective {name!r}; valid names: "
                         f"{', '.join(OBJECTIVES)}") from None
