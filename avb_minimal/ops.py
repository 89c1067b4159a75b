"""The two hot ops of AVB as autograd primitives with hand-written VJPs.

1. The batched inner-product adversary T(x, z) = <f(x), g(z)> (paper sec. 5.2):
   row-wise logits T_i = <F_i, G_i> and the all-pairs logits T_ij = <F_i, G_j>.
2. The Bernoulli log-likelihood log p(x | z) = sum_d x_d l_d - softplus(l_d)
   for decoder logits l (the log p_theta(x|z) of eq. 2.1, 3.7).

Each op has a NumPy implementation here, which is also the CPU fallback: the
fastest honest NumPy form, not the naive one.  The CUDA kernels in `kernels/`
sit behind these same functions (see `backend`).  Inputs are assumed valid on
this hot path; validate at the API boundary (`data.check_*`).
"""
import autograd.numpy as anp  # noqa: F401  (re-exported for callers that want it)
import numpy as np
from autograd.extend import defvjp, primitive


def _softplus(l):
    # log(1 + e^l) without overflow: max(l, 0) + log1p(e^{-|l|}); exact to float
    # precision for |l| up to 1e4 and beyond (e^{-|l|} underflows to 0 cleanly).
    return np.maximum(l, 0) + np.log1p(np.exp(-np.abs(l)))


def _sigmoid(l):
    # 1 / (1 + e^{-l}) written with tanh: no overflow for any finite l.
    return 0.5 * (np.tanh(0.5 * l) + 1)


@primitive
def softplus(l):
    """softplus(l) = log(1 + exp(l)), elementwise and stable; d/dl = sigmoid(l)."""
    return _softplus(l)


defvjp(softplus, lambda ans, l: lambda g: g * _sigmoid(l))


@primitive
def inner_product_rows(F, G):
    """Row-wise logits T_i = <F_i, G_i>.  F, G: (B, H) -> (B,)."""
    return np.einsum("bh,bh->b", F, G)


defvjp(inner_product_rows,
       lambda ans, F, G: lambda g: g[:, None] * G,   # dT/dF_i = G_i  (B, H)
       lambda ans, F, G: lambda g: g[:, None] * F)   # dT/dG_i = F_i  (B, H)


@primitive
def inner_product_all_pairs(F, G):
    """All-pairs logits T_ij = <F_i, G_j>.  F: (B, H), G: (M, H) -> (B, M).

    Because f(x) is shared, the pairs (x_i, z_j) with z_j ~ p(z) are samples of
    p_D(x) p(z) for *every* i, j: one matrix product gives B*M negatives for eq. (3.3).
    """
    return np.dot(F, G.T)


defvjp(inner_product_all_pairs,
       lambda ans, F, G: lambda g: np.dot(g, G),     # (B, H)
       lambda ans, F, G: lambda g: np.dot(g.T, F))   # (M, H)


@primitive
def bernoulli_loglik(x, logits):
    """log p(x | l) = sum_d x_d l_d - softplus(l_d), one row per example.

    x: (B, D) in {0, 1} (any float dtype), logits: (B, D) -> (B,).
    """
    return np.einsum("bd,bd->b", x, logits) - np.sum(_softplus(logits), axis=-1)


defvjp(bernoulli_loglik,
       lambda ans, x, l: lambda g: g[:, None] * l,                     # d/dx = l
       lambda ans, x, l: lambda g: g[:, None] * (x - _sigmoid(l)))     # d/dl = x - sigmoid(l)


# The naive compositions the ops replace (for tests and `bench ops`).
def bernoulli_loglik_naive(x, logits):
    p = 1 / (1 + np.exp(-logits))
    return np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=-1)


def inner_product_rows_naive(F, G):
    return np.sum(F * G, axis=-1)
