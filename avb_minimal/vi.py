"""Black-box variational inference for an unnormalised log-density (paper sec. 5.1).

With the model and the data fixed, the "posterior" is one density known up to a
constant, log p~(z) (a `targets.Target`, or any autograd-differentiable function
(B, d) -> (B,) with its dimension d).  Three ways to approximate it, and the
ground truth they are scored against:

- `fit_avb`: AVB with a neural sampler z = G_phi(eps) (an implicit q_phi(z) of any
  shape) and an adversary T_psi (Algorithm 2 of the supplement with the data term
  replaced by log p~).  Adaptive contrast is on by default: the adversary tells
  z_bar = (z - mu) / sigma apart from eta ~ N(0, I), where mu, sigma are the
  batch's Monte Carlo moments of z, held constant (no gradient).
- `fit_gaussian_vb`: Gaussian VB with the reparameterisation trick (ADVI,
  Kucukelbir et al., 2015), mean-field or full-rank (Cholesky factor).
- `hmc`: Hamiltonian Monte Carlo, many chains advanced together as arrays, with
  step-size adaptation (dual averaging) and a diagonal mass matrix during warm-up;
  `split_rhat` and `ess` diagnose the chains; divergences are counted and reported.

KL estimates that do not trust the adversary: `kl_to_samples` (the two-sample k-NN
estimator of `evaluate.knn_kl`, as the paper's ITE package) and `kl_to_target_grid`
(2-d: -H[q] - E_q log p~ + log Z with the normaliser from a grid).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd import grad, value_and_grad
from autograd.tracer import getval

from . import evaluate as E
from . import objectives as O
from .backend import (
    DeviceRNG,
    array_module,
    device_module,
    to_numpy,
    tree_to_device,
    tree_to_host,
)
from .distributions import LOG_2PI
from .models import AC_VAR_FLOOR, fold_prior
from .nn import concatenate, elu, init_mlp, init_resnet, mlp, resnet
from .optim import Adam, adam_init, adam_step
from .targets import (
    Target,
    check_log_density,
    check_positive,
    check_positive_int,
    log_normaliser,
)
from .train import run_training
from .trees import stop_gradient, tree_flatten


# ------------------------------------------------------------------ AVB: sampler + adversary
@dataclass(frozen=True)
class AVBConfig:
    """AVB for an unnormalised density.  Defaults: the authors' Eight Schools
    settings (sampler eps -> 2 x 128 ELU -> d, residual adversary 256 wide with five
    blocks, Adam 1e-4 / 2e-4 with beta1 = 0.5, batch 512, two adversary steps per
    sampler step, adaptive contrast on) except the iteration count (authors: 10k)."""
    iters: int = 10000
    batch: int = 512
    noise_dim: int = 0                 # dimension of eps; 0: the target's d
    hidden: tuple = (128, 128)         # sampler hidden layers (ELU)
    adv_width: int = 256               # residual adversary width ...
    adv_blocks: int = 5                # ... and residual blocks
    lr_gen: float = 1e-4
    lr_adv: float = 2e-4
    b1: float = 0.5
    b2: float = 0.999
    adv_steps: int = 2                 # k: adversary steps per sampler step
    adaptive_contrast: bool = True     # reference N(mu, sigma^2) from the batch's moments
    ref_loc: float = 0.0               # without AC: the fixed reference N(ref_loc, ref_scale^2 I)
    ref_scale: float = 1.0
    decay_from: float = 1.0            # fraction of iters after which the lrs decay linearly ...
    lr_final: float = 0.1              # ... to this fraction at the end
    log_every: int = 100
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("iters", "batch", "adv_width", "adv_steps", "log_every"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.noise_dim, bool) or int(self.noise_dim) != self.noise_dim or self.noise_dim < 0:
            raise ValueError(f"noise_dim must be a non-negative integer, got {self.noise_dim!r}")
        if int(self.adv_blocks) != self.adv_blocks or self.adv_blocks < 0:
            raise ValueError(f"adv_blocks must be a non-negative integer, got {self.adv_blocks!r}")
        for name in ("lr_gen", "lr_adv", "ref_scale", "lr_final"):
            check_positive(name, getattr(self, name))
        if not 0 <= self.decay_from <= 1:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")
        object.__setattr__(self, "hidden", tuple(check_positive_int("hidden", h) for h in self.hidden))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def lr_scale(self, it: int) -> float:
        start = self.decay_from * self.iters
        if it < start or self.iters <= start:
            return 1.0
        return 1.0 - (it - start) / (self.iters - start) * (1.0 - self.lr_final)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def init_avb(rng: onp.random.Generator, dim: int, cfg: AVBConfig) -> dict:
    """{'gen': sampler MLP eps -> d, 'adv': residual adversary d -> 1}."""
    dt = onp.dtype(cfg.dtype)
    e = cfg.noise_dim or dim
    return {"gen": init_mlp(rng, [e] + list(cfg.hidden) + [dim], dt),
            "adv": init_resnet(rng, dim, cfg.adv_width, cfg.adv_blocks, 1, dt)}


def sampler(gen: list, eps: onp.ndarray) -> onp.ndarray:
    """The neural sampler z = G_phi(eps).  eps: (B, e) -> z: (B, d)."""
    return mlp(gen, eps, elu)


def adversary(adv: dict, z_bar: onp.ndarray) -> onp.ndarray:
    """T_psi(z_bar) = T_net(z_bar) + ||z_bar||^2 / 2: the reference's -log N(z_bar; 0, I)
    is folded in (models.fold_prior), so T_net only has to learn log q_bar.  -> (B,)."""
    return resnet(adv, z_bar, elu)[:, 0] + fold_prior(z_bar)


def sample_noise(rng: onp.random.Generator, cfg: AVBConfig, dim: int, n: int) -> onp.ndarray:
    return rng.standard_normal((n, cfg.noise_dim or dim)).astype(cfg.dtype)


def contrast_moments(z: onp.ndarray, cfg: AVBConfig) -> tuple:
    """mu, sigma of the reference r(z) = N(mu, diag sigma^2), held constant (no gradient).
    AC: the batch's Monte Carlo moments, sigma = sqrt(var + 1e-4) as in the authors'
    code; without AC: the fixed (ref_loc, ref_scale).  -> (d,), (d,)."""
    z = getval(z)
    if cfg.adaptive_contrast:
        return onp.mean(z, axis=0), onp.sqrt(onp.var(z, axis=0) + AC_VAR_FLOOR)
    d = z.shape[1]
    xp = array_module(z)
    return xp.full(d, cfg.ref_loc, z.dtype), xp.full(d, cfg.ref_scale, z.dtype)


def avb_losses(params: dict, log_density: Callable, eps: onp.ndarray, eta: onp.ndarray, cfg: AVBConfig,
               aux: dict | None = None) -> tuple:
    """The two losses of one simultaneous step of Algorithm 2 with the data term
    replaced by log p~(z), arranged (like `objectives.avb_losses`) so that ONE gradient
    of their sum gives both players' gradients:

      sampler   (line 12, eq. 4.2): maximise E[-T(z_bar) + ||z_bar||^2/2 + log p~(z)],
                T's weights held fixed (stop_gradient);
      adversary (line 13, eq. 3.3): logistic regression of z_bar (label 1) against
                eta ~ N(0, I) (label 0), the sampler's output held fixed (getval).

    z_bar = (z - mu) / sigma with mu, sigma constants, so -log r(z) = ||z_bar||^2/2
    + sum log sigma + d/2 log 2 pi, and the gradient ignores the last two terms.
    eps: (B, e) sampler noise; eta: (B, d) reference samples.  Returns (gen_loss,
    adv_loss), both to minimise; `aux`, if a dict, receives floats, among them the
    adversary's ELBO estimate (it trusts T = T*: not a bound).
    """
    z = sampler(params["gen"], eps)                                         # (B, d)
    mu, sigma = contrast_moments(z, cfg)                                    # (d,) x2, constants
    z_bar = (z - mu) / sigma                                                # Algorithm 2, line 9
    logp = log_density(z)                                                   # (B,)
    T_gen = adversary(stop_gradient(params["adv"]), z_bar)                  # (B,)  psi fixed
    gen = O.ac_generator_objective(T_gen, z_bar, logp, 0.0)                 # eq. (4.2)
    B = eta.shape[0]
    T_all = adversary(params["adv"], concatenate([getval(z_bar), eta], 0))   # (2B,) one pass
    adv_loss = O.adversary_loss(T_all[:B], T_all[B:])                      # eq. (3.3)
    if aux is not None:
        d = z.shape[1]
        log_sigma = float(onp.sum(onp.log(sigma)))
        aux["gen_objective"] = float(getval(gen))
        aux["adv_loss"] = float(getval(adv_loss))
        aux["log_p"] = float(onp.mean(getval(logp)))
        # ELBO = E[log p~ - log q],  log q(z) = T*(z_bar) - ||z_bar||^2/2 - d/2 log 2pi - sum log sigma
        aux["elbo_from_T"] = float(getval(gen)) + 0.5 * d * LOG_2PI + log_sigma
    return -gen, adv_loss


def adversary_only_loss(adv: dict, gen: list, log_density: Callable, eps: onp.ndarray, eta: onp.ndarray,
                        cfg: AVBConfig) -> onp.ndarray:
    """eq. (3.3) alone, for the extra adversary steps (k > 1); the sampler runs forward only."""
    z = getval(sampler(gen, eps))
    mu, sigma = contrast_moments(z, cfg)
    z_bar = (z - mu) / sigma
    B = eta.shape[0]
    T_all = adversary(adv, concatenate([z_bar, eta], 0))
    return O.adversary_loss(T_all[:B], T_all[B:])


def sample_avb(params: dict, rng: onp.random.Generator, n: int) -> onp.ndarray:
    """n samples of the trained sampler.  -> (n, d) float64."""
    gen = params["gen"]
    e = gen[0][0].shape[0]
    eps = array_module(gen[0][0]).asarray(rng.standard_normal((n, e)).astype(gen[0][0].dtype))
    return to_numpy(sampler(gen, eps)).astype(onp.float64)


def fit_avb(log_density: Callable, dim: int | None = None, cfg: AVBConfig = AVBConfig(), seed: int = 0,
            eval_fn: Callable | None = None, eval_every: int = 0, quiet: bool = True,
            desc: str = "avb", device: str = "cpu") -> tuple:
    """Train an AVB sampler for the unnormalised density `log_density` in `dim` dims.

    One iteration = one simultaneous step of both players (one gradient of the sum of
    their losses, see `avb_losses`) plus cfg.adv_steps - 1 adversary-only steps on
    fresh batches.  eval_fn(params) -> dict of floats, called every eval_every
    iterations (and at the end); its values go into the history.
    device: 'cpu' or 'gpu' (parameters, noise and the log-density's work on the device; eval_fn
    then gets device parameters).  Returns (params on the host, info) with info =
    {'history', 'wall_seconds', 'config'}.  Raises TrainingDiverged if a loss or a weight
    turns NaN/inf.
    """
    log_density, dim = check_log_density(log_density, dim)
    xp = device_module(device)
    rng = onp.random.default_rng(seed)
    params = tree_to_device(init_avb(rng, dim, cfg), xp)          # the same numbers on either device
    if xp is not onp:
        rng = DeviceRNG(xp, seed)
    gen_opt, adv_opt = Adam(cfg.lr_gen, cfg.b1, cfg.b2), Adam(cfg.lr_adv, cfg.b1, cfg.b2)
    states = {"gen": adam_init(params["gen"]), "adv": adam_init(params["adv"])}

    def total(p, eps, eta, aux):
        g, a = avb_losses(p, log_density, eps, eta, cfg, aux)
        return g + a
    total_grad = grad(total)
    adv_grad = grad(adversary_only_loss)
    B = cfg.batch

    def one_step(params, states, it):
        scale = cfg.lr_scale(it)
        aux = {}
        eps = sample_noise(rng, cfg, dim, B)                                     # (B, e)
        eta = rng.standard_normal((B, dim)).astype(cfg.dtype)                    # (B, d) ~ N(0, I)
        with onp.errstate(all="ignore"):
            g = total_grad(params, eps, eta, aux)
        gen, states["gen"] = adam_step(gen_opt, params["gen"], g["gen"], states["gen"], cfg.lr_gen * scale)
        adv, states["adv"] = adam_step(adv_opt, params["adv"], g["adv"], states["adv"], cfg.lr_adv * scale)
        for _ in range(cfg.adv_steps - 1):
            eps2 = sample_noise(rng, cfg, dim, B)
            eta2 = rng.standard_normal((B, dim)).astype(cfg.dtype)
            ga = adv_grad(adv, gen, log_density, eps2, eta2, cfg)
            adv, states["adv"] = adam_step(adv_opt, adv, ga, states["adv"], cfg.lr_adv * scale)
        return {"gen": gen, "adv": adv}, states, aux

    params, info = run_training(one_step, None, params, states, cfg, label=desc, quiet=quiet, eval_fn=eval_fn,
                                eval_every=eval_every, progress_keys=("elbo_from_T", "adv_loss"))
    return tree_to_host(params), dict(info, config=cfg.to_dict())


# ------------------------------------------------------------------ Gaussian VB (ADVI)
FAMILIES = ("meanfield", "fullrank")


@dataclass(frozen=True)
class VBConfig:
    """Gaussian VB by stochastic gradient ascent on the reparameterised ELBO."""
    family: str = "fullrank"          # 'meanfield' (diagonal) or 'fullrank' (Cholesky)
    iters: int = 3000
    batch: int = 128                  # Monte Carlo samples per gradient
    lr: float = 1e-2
    b1: float = 0.9
    b2: float = 0.999
    decay_from: float = 0.5
    lr_final: float = 0.02
    log_every: int = 100
    init_log_scale: float = 0.0       # q starts at N(0, exp(init_log_scale)^2 I)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("iters", "batch", "log_every"):
            check_positive_int(name, getattr(self, name))
        for name in ("lr", "lr_final"):
            check_positive(name, getattr(self, name))
        if not 0 <= self.decay_from <= 1:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")

    lr_scale = AVBConfig.lr_scale

    def to_dict(self) -> dict:
        return asdict(self)


def init_gaussian_vb(dim: int, cfg: VBConfig) -> dict:
    """mean (d,), log of the scale's diagonal (d,), and (full-rank) the strictly lower
    triangle of the Cholesky factor as a (d, d) array (its other entries are unused)."""
    p = {"mean": onp.zeros(dim), "log_diag": onp.full(dim, float(cfg.init_log_scale))}
    if cfg.family == "fullrank":
        p["lower"] = onp.zeros((dim, dim))
    return p


def gaussian_vb_scale(params: dict) -> onp.ndarray:
    """The Cholesky factor L of q = N(mean, L L^T): diag(exp(log_diag)) + strict lower part."""
    d = params["mean"].shape[0]
    L = np.diag(np.exp(params["log_diag"]))
    if "lower" in params:
        xp = array_module(getval(params["lower"]))
        L = L + params["lower"] * xp.tril(xp.ones((d, d)), -1)
    return L


def gaussian_vb_elbo(params: dict, log_density: Callable, eps: onp.ndarray) -> onp.ndarray:
    """Reparameterised ELBO: E_eps[log p~(mean + L eps)] + H[q],
    H[q] = sum log diag(L) + d/2 (1 + log 2 pi) in closed form.  eps: (S, d)."""
    L = gaussian_vb_scale(params)
    z = params["mean"] + np.matmul(eps, L.T)                                # (S, d)
    d = eps.shape[1]
    entropy = np.sum(params["log_diag"]) + 0.5 * d * (1.0 + LOG_2PI)
    return np.mean(log_density(z)) + entropy


def sample_gaussian_vb(params: dict, rng: onp.random.Generator, n: int) -> onp.ndarray:
    params = tree_to_host(params)
    L = onp.asarray(gaussian_vb_scale(params))
    return params["mean"] + rng.standard_normal((n, L.shape[0])) @ L.T


def gaussian_vb_entropy(params: dict) -> float:
    d = params["mean"].shape[0]
    return float(onp.sum(params["log_diag"]) + 0.5 * d * (1.0 + LOG_2PI))


def fit_gaussian_vb(log_density: Callable, dim: int | None = None, cfg: VBConfig = VBConfig(), seed: int = 0,
                    eval_fn: Callable | None = None, eval_every: int = 0, quiet: bool = True,
                    desc: str | None = None, device: str = "cpu") -> tuple:
    """Mean-field or full-rank Gaussian VB (float64).  Returns (params, info) like fit_avb;
    info also holds the final ELBO estimate from 20k samples."""
    log_density, dim = check_log_density(log_density, dim)
    xp = device_module(device)
    rng = onp.random.default_rng(seed)
    params = tree_to_device(init_gaussian_vb(dim, cfg), xp)
    if xp is not onp:
        rng = DeviceRNG(xp, seed)
    opt = Adam(cfg.lr, cfg.b1, cfg.b2)
    neg_elbo_and_grad = value_and_grad(lambda p, eps: -gaussian_vb_elbo(p, log_density, eps))

    def one_step(params, states, it):
        eps = rng.standard_normal((cfg.batch, dim))                               # (S, d)
        with onp.errstate(all="ignore"):
            neg_elbo, g = neg_elbo_and_grad(params, eps)
        # a non-finite gradient stops the run like a non-finite loss (run_training checks aux)
        aux = {"elbo_estimate": -float(neg_elbo),
               "grad_norm": float(onp.sqrt(sum(onp.sum(a * a) for a in tree_flatten(g))))}
        params, states["gen"] = adam_step(opt, params, g, states["gen"], cfg.lr * cfg.lr_scale(it))
        return params, states, aux

    params, info = run_training(one_step, None, params, {"gen": adam_init(params)}, cfg,
                                label=desc or f"{cfg.family} VB", quiet=quiet, eval_fn=eval_fn,
                                eval_every=eval_every, progress_keys=("elbo_estimate",))
    eps = xp.asarray(onp.random.default_rng(seed + 1).standard_normal((20000, dim)))
    elbo = float(gaussian_vb_elbo(params, log_density, eps))
    return tree_to_host(params), dict(info, config=cfg.to_dict(), elbo=elbo)


# ------------------------------------------------------------------ KL estimates
def kl_to_samples(q_samples: onp.ndarray, ref_samples: onp.ndarray, k: int = 5) -> float:
    """KL(q || ref) from samples of both: the k-NN estimator `evaluate.knn_kl`
    (Wang, Kulkarni & Verdu 2009; what the paper's ITE package computes)."""
    return E.knn_kl(q_samples, ref_samples, k)


def kl_to_target_grid(q_samples: onp.ndarray, target: Target, log_z: float | None = None,
                      entropy: float | None = None, k: int = 5, grid_n: int = 800) -> float:
    """KL(q || p) for a 2-d target whose normaliser comes from a grid:

        KL = E_q[log q] - E_q[log p~] + log Z = -H[q] - E_q[log p~] + log Z,

    with E_q[log p~] averaged over the samples, log Z from `targets.log_normaliser`
    and H[q] given (`entropy`, e.g. the closed form of a Gaussian) or estimated from
    the samples by the Kozachenko-Leonenko k-NN estimator (`evaluate.knn_entropy`)."""
    q = onp.asarray(q_samples, float)
    if q.ndim != 2 or q.shape[1] != target.dim:
        raise ValueError(f"q_samples must have shape (n, {target.dim}), got {q.shape}")
    log_z = log_normaliser(target, grid_n) if log_z is None else log_z
    H = E.knn_entropy(q, k) if entropy is None else entropy
    with onp.errstate(all="ignore"):
        elp = float(onp.mean(onp.asarray(target.log_density(q), float)))
    return -H - elp + log_z
