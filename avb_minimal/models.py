"""Encoders, decoders and adversaries (paper sec. 2, 3, 5.2 and supplement III).

A model is an architecture (`Arch`, hashable settings) plus a params pytree
(dicts of MLP parameter lists).  Every function here is a pure forward pass.

- Gaussian encoder (VAE, Fig. 2a):   x -> (mean, log_var)
- implicit encoder (AVB, Fig. 2b):   z = g_phi(x, eps), eps ~ N(0, I) as *input*
- noise-basis encoder (supp. III):   z = z0(x) + sum_i a_i(x) * v_i(eps_i)
- decoder:                           z -> Bernoulli logits of p_theta(x | z)
- adversary T(x, z): the paper's inner product <f(x), g(z)> or the authors'
  residual net on concat(x, z); both with the prior term folded in (see `fold_prior`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from .backend import array_module
from .distributions import log_std_normal
from .nn import (
    basis_linear,
    concatenate,
    get_activation,
    init_mlp,
    init_resnet,
    mlp,
    resnet,
)
from .ops import inner_product_all_pairs, inner_product_rows

KINDS = ("vae", "avb", "avb_ac")
ADVERSARIES = ("inner", "residual")


@dataclass(frozen=True)
class Arch:
    """Network sizes.  Defaults are the paper's synthetic example (sec. 5.2):
    2 x 512 encoder and decoder, adversary = inner product of two 2 x 512 nets."""
    x_dim: int = 4
    z_dim: int = 2
    eps_dim: int = 64              # noise fed to the implicit encoder (authors: 64)
    hidden: tuple = (512, 512)     # encoder and decoder hidden layers
    adversary: str = "inner"       # 'inner' (paper) or 'residual' (authors' code)
    adv_hidden: tuple = (512, 512)  # hidden layers of f and g (inner product)
    adv_dim: int = 512             # dimension of <f(x), g(z)>
    res_width: int = 256           # residual adversary width ...
    res_blocks: int = 5            # ... and number of blocks
    n_basis: int = 16              # noise-basis encoder: number of basis vectors m
    basis_eps_dim: int = 4         # noise per basis net
    basis_hidden: int = 32         # hidden width of each basis net v_i
    activation: str = "elu"
    adv_unary: bool = False        # sec. 5.2 (MNIST): add terms r(x) and s(z) acting on x, z alone
    ac_var_floor: float = 1e-4     # adaptive contrast: z_bar = (z - mean) / sqrt(var + floor)

    def __post_init__(self):
        for name in ("x_dim", "z_dim", "eps_dim", "adv_dim", "res_width", "n_basis",
                     "basis_eps_dim", "basis_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Arch.{name} must be a positive integer, got {getattr(self, name)}")
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"Arch.adversary must be one of {ADVERSARIES}, got {self.adversary!r}")
        get_activation(self.activation)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "adv_hidden", tuple(int(h) for h in self.adv_hidden))
        object.__setattr__(self, "adv_unary", bool(self.adv_unary))
        floor = float(self.ac_var_floor)
        if not (onp.isfinite(floor) and floor > 0):
            raise ValueError(f"Arch.ac_var_floor must be a positive number, got {self.ac_var_floor!r}")
        object.__setattr__(self, "ac_var_floor", floor)

    @property
    def act(self) -> Callable:
        """The activation function named by `activation` (the forward passes take it)."""
        return get_activation(self.activation)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def differences(self, record: dict) -> list:
        """[(field, recorded, self's)] where an architecture record (`to_dict`'s form, e.g. a
        checkpoint's) differs from this one; a field the record lacks takes its default."""
        try:
            theirs = Arch.from_dict(record).to_dict()
        except (TypeError, ValueError) as e:
            raise ValueError(f"its architecture record is not readable here ({e})") from None
        return [(k, theirs.get(k), v) for k, v in self.to_dict().items() if theirs.get(k) != v]

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        """From `to_dict`'s form; a key missing (a record older than the setting) takes its default."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def memory_estimate(arch: Arch, batch: int = 512) -> int:
    """Bytes (float32) a training run of `arch` needs at least: every weight matrix four
    times (parameters, gradient, Adam's two moments) and one batch's activations; used to
    refuse sizes that cannot fit before anything is allocated."""
    nets = [(arch.x_dim + arch.eps_dim, *arch.hidden, 2 * arch.z_dim), (arch.z_dim, *arch.hidden, arch.x_dim),
            (arch.x_dim, *arch.adv_hidden, arch.adv_dim), (arch.z_dim, *arch.adv_hidden, arch.adv_dim),
            (arch.x_dim + arch.z_dim, arch.res_width, arch.res_width)]
    weights = sum(a * b for sizes in nets for a, b in zip(sizes, sizes[1:]))
    activations = batch * sum(sum(sizes) for sizes in nets)
    return 4 * (4 * weights + 4 * activations)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    return kind


# ------------------------------------------------------------------ init
def init_params(rng: onp.random.Generator, kind: str, arch: Arch, dtype: type = onp.float32) -> dict:
    """Parameters for a model of `kind` ('vae', 'avb', 'avb_ac')."""
    check_kind(kind)
    h = list(arch.hidden)
    params = {"dec": init_mlp(rng, [arch.z_dim] + h + [arch.x_dim], dtype)}
    if kind == "vae":
        params["enc"] = init_mlp(rng, [arch.x_dim] + h + [2 * arch.z_dim], dtype)
        return params
    if kind == "avb":
        params["enc"] = init_mlp(rng, [arch.x_dim + arch.eps_dim] + h + [arch.z_dim], dtype)
    else:
        m, e, hb = arch.n_basis, arch.basis_eps_dim, arch.basis_hidden
        params["enc"] = {
            "a": init_mlp(rng, [arch.x_dim] + h + [(m + 1) * arch.z_dim], dtype),
            # m small nets v_i: eps_i (e) -> hb -> z_dim, stored stacked: W (m, in, out)
            "v": [((rng.standard_normal((m, e, hb)) * onp.sqrt(2.0 / (e + hb))).astype(dtype),
                   onp.zeros((m, 1, hb), dtype)),
                  ((rng.standard_normal((m, hb, arch.z_dim)) * onp.sqrt(2.0 / (hb + arch.z_dim))).astype(dtype),
                   onp.zeros((m, 1, arch.z_dim), dtype))],
        }
    params["adv"] = init_adversary(rng, arch, dtype)
    return params


def init_adversary(rng: onp.random.Generator, arch: Arch, dtype: type = onp.float32) -> dict:
    if arch.adversary == "inner":
        # Output layers scaled by H^(-1/4) each, so that <f(x), g(z)> starts at O(1)
        # rather than O(sqrt(H)): a saturated sigmoid at step 0 slows the adversary down.
        s = arch.adv_dim ** -0.25
        out = arch.adv_dim + int(arch.adv_unary)        # + one unit for r(x) / s(z)
        return {"f": init_mlp(rng, [arch.x_dim] + list(arch.adv_hidden) + [out], dtype, s),
                "g": init_mlp(rng, [arch.z_dim] + list(arch.adv_hidden) + [out], dtype, s)}
    return {"net": init_resnet(rng, arch.x_dim + arch.z_dim, arch.res_width, arch.res_blocks, 1, dtype)}


# ------------------------------------------------------------------ noise
def sample_noise(rng: onp.random.Generator, kind: str, arch: Arch, batch: int,
                 dtype: type = onp.float32) -> onp.ndarray:
    """The encoder's noise for one batch: (B, eps_dim) or (B, m, e) for the basis encoder."""
    if kind == "vae":
        shape = (batch, arch.z_dim)
    elif kind == "avb":
        shape = (batch, arch.eps_dim)
    else:
        shape = (batch, arch.n_basis, arch.basis_eps_dim)
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------ encoders
def gaussian_encoder(enc: list, x: onp.ndarray, act: Callable) -> tuple:
    """VAE encoder q(z|x) = N(mean(x), diag(exp(log_var(x)))).  -> (B, dz), (B, dz)."""
    out = mlp(enc, x, act)                                   # (B, 2 dz)
    dz = out.shape[1] // 2
    return out[:, :dz], out[:, dz:]


def implicit_encoder(enc: list, x: onp.ndarray, eps: onp.ndarray, act: Callable) -> onp.ndarray:
    """AVB's black-box encoder z = g_phi(x, eps) (Fig. 2b): noise is an input.  -> (B, dz)."""
    return mlp(enc, concatenate([x, eps], axis=1), act)


def _basis_nets(v_params, eps, act):
    """v_i(eps_i) for all i at once.  eps: (B, m, e) -> (B, m, dz)."""
    (W1, b1), (W2, b2) = v_params
    h = act(basis_linear(eps, W1) + b1[:, 0][None])               # (B, m, hb)
    return basis_linear(h, W2) + b2[:, 0][None]                    # (B, m, dz)


def noise_basis_encoder(enc: dict, x: onp.ndarray, eps: onp.ndarray, act: Callable) -> tuple:
    """Supplement III: z = z0(x) + sum_i a_i(x) * v_i(eps_i)  (eq. III.1, with an offset z0).

    Returns z (B, dz) and its moments mean, var (B, dz) from eq. (III.2)-(III.3),
    with E[v_i], Var[v_i] estimated over the batch's noise (v_i does not depend
    on x).  The moments carry no gradient (Algorithm 2 treats them as constants).
    """
    m, _, dz = enc["v"][1][0].shape                    # the basis nets' output weights (m, hb, dz)
    out = mlp(enc["a"], x, act)                         # (B, (m+1) dz)
    z0 = out[:, :dz]                                    # (B, dz)
    a = np.reshape(out[:, dz:], (-1, m, dz))            # (B, m, dz)
    v = _basis_nets(enc["v"], eps, act)                 # (B, m, dz)
    z = z0 + np.sum(a * v, axis=1)                      # eq. (III.1)   (B, dz)
    v0 = getval(v)
    mean, var = ac_moments(getval(z0), getval(a), onp.mean(v0, axis=0), onp.var(v0, axis=0))
    return z, mean, var


def ac_moments(z0: onp.ndarray, a: onp.ndarray, v_mean: onp.ndarray, v_var: onp.ndarray) -> tuple:
    """The moments of q(z|x) for the noise-basis encoder, given E[v_ik] and Var[v_ik] (m, dz):
    mean = z0 + sum_i a_i E[v_i] (eq. III.2), var = sum_i a_i^2 Var[v_i] (eq. III.3).
    z0: (B, dz), a: (B, m, dz) -> mean, var (B, dz)."""
    return z0 + onp.sum(a * v_mean[None], axis=1), onp.sum(a ** 2 * v_var[None], axis=1)


def mc_moments(enc: list, x: onp.ndarray, eps_k: onp.ndarray, act: Callable) -> tuple:
    """Monte Carlo moments of an implicit encoder: K noise draws per x.
    eps_k: (K, B, eps_dim) -> mean, var (B, dz), no gradient."""
    K, B = eps_k.shape[:2]
    xk = onp.broadcast_to(getval(x)[None], (K,) + x.shape).reshape(K * B, -1)
    zk = getval(implicit_encoder(enc, xk, eps_k.reshape(K * B, -1), act)).reshape(K, B, -1)
    return zk.mean(axis=0), zk.var(axis=0)


AC_VAR_FLOOR = 1e-4  # z_bar = (z - mean) / sqrt(var + 1e-4), as in the authors' code (Arch.ac_var_floor)


def normalise(z: onp.ndarray, mean: onp.ndarray, var: onp.ndarray, floor: float = AC_VAR_FLOOR) -> onp.ndarray:
    """z_bar = (z - mu(x)) / sigma(x), Algorithm 2 line 9 (mu, sigma held constant),
    with sigma(x)^2 = var + floor, so that a collapsed dimension cannot divide by zero."""
    ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
    return (z - mean) / onp.sqrt(var + floor)
    ### END SOLUTION


def log_r_alpha(z_bar: onp.ndarray, var: onp.ndarray, floor: float = AC_VAR_FLOOR) -> onp.ndarray:
    """log r_alpha(z|x) = log N(z; mean, var + floor) at z, from z_bar = normalise(z, mean, var, floor):
    log N(z_bar; 0, I) - 1/2 sum_k log(var_k + floor), the change of variables.  -> (B,)"""
    return log_std_normal(z_bar) - 0.5 * np.sum(np.log(var + floor), 1)


# ------------------------------------------------------------------ decoder
def decoder_logits(dec: list, z: onp.ndarray, act: Callable) -> onp.ndarray:
    """Bernoulli logits of p_theta(x | z).  (B, dz) -> (B, D)."""
    return mlp(dec, z, act)


# ------------------------------------------------------------------ adversary
def fold_prior(z: onp.ndarray) -> onp.ndarray:
    """The prior term folded into T: + ||z||^2 / 2 = -log N(z; 0, I) + const.

    With it, T(x, z) = T_net(x, z) + ||z||^2/2, so at the optimum (eq. 3.4)
    T_net only has to learn log q(z|x) (up to a constant), not log q - log p.
    The authors' code does the same; it is part of the adversary, not a new loss.
    """
    return 0.5 * np.sum(z * z, axis=-1)                  # (B,)


def adversary_features_x(adv: dict, x: onp.ndarray, act: Callable, unary: bool = False) -> onp.ndarray:
    """f_psi(x) of the inner-product adversary.  (B, D) -> (B, H), or (B, H + 2) with
    `unary` (Arch.adv_unary, see `adversary_features_z`)."""
    F = mlp(adv["f"], x, act)
    if not unary:
        return F
    one = array_module(getval(F)).ones((F.shape[0], 1), F.dtype)            # on F's device
    return concatenate([F, one], axis=1)                                    # [f(x), r(x), 1]


def adversary_features_z(adv: dict, z: onp.ndarray, act: Callable, unary: bool = False) -> onp.ndarray:
    """g_psi(z) of the inner-product adversary.  (M, dz) -> (M, H).

    Sec. 5.2 (MNIST) adds networks acting on x and on z alone:
    T = <f(x), g(z)> + r(x) + s(z).  With `arch.adv_unary` the last output unit of
    each net is r(x) (resp. s(z)) and the features are padded so that ONE inner
    product gives all three terms: <[f, r, 1], [g, 1, s]> = <f, g> + r + s.
    Every caller (matched rows, all pairs, the CUDA kernels) then works unchanged.
    """
    G = mlp(adv["g"], z, act)
    if not unary:
        return G
    H = G.shape[1] - 1                                                      # g's last unit is s(z)
    one = array_module(getval(G)).ones((G.shape[0], 1), G.dtype)
    return concatenate([G[:, :H], one, G[:, H:]], axis=1)                # [g(z), 1, s(z)]


def adversary(adv: dict, x: onp.ndarray, z: onp.ndarray, act: Callable, unary: bool = False) -> onp.ndarray:
    """T_psi(x, z) for matched rows (x_i, z_i): the inner product <f(x), g(z)> (adv holds
    'f' and 'g') or the residual net on concat(x, z) (adv holds 'net').  -> (B,)."""
    if "f" in adv:
        F = adversary_features_x(adv, x, act, unary)
        G = adversary_features_z(adv, z, act, unary)
        return inner_product_rows(F, G) + fold_prior(z)
    xz = concatenate([x, z], axis=1)
    return resnet(adv["net"], xz, act)[:, 0] + fold_prior(z)


def adversary_all_pairs(adv: dict, x: onp.ndarray, z: onp.ndarray, act: Callable,
                        unary: bool = False) -> onp.ndarray:
    """T_psi(x_i, z_j) for all i, j (inner-product adversary only).  -> (B, M)."""
    if "f" not in adv:
        raise ValueError("all-pairs logits need the inner-product adversary (Arch.adversary='inner')")
    F = adversary_features_x(adv, x, act, unary)
    G = adversary_features_z(adv, z, act, unary)
    return inner_product_all_pairs(F, G) + fold_prior(z)[None, :]
