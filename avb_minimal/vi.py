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
import math
import time
from dataclasses import asdict, dataclass

import autograd.numpy as np
import numpy as onp
from autograd import grad
from autograd.tracer import getval
from scipy.special import ndtri

from . import evaluate as E
from . import objectives as O
from .distributions import LOG_2PI
from .models import AC_VAR_FLOOR, fold_prior
from .nn import elu, init_mlp, init_resnet, mlp, resnet, stop_gradient, tree_leaves
from .optim import Adam, adam_init, adam_step
from .progress import Progress
from .train import TrainingDiverged


# ------------------------------------------------------------------ input checks
def check_log_density(log_density, dim, rng=None, name="log_density", n=3):
    """Validate an unnormalised log-density before any work is done.

    log_density: a `Target` or a callable (B, d) -> (B,); dim: d (must agree with a
    Target's own dim).  It is called on a small (n, d) batch; a wrong output shape, a
    NaN/inf, or an exception (typically: d does not match what the function indexes)
    is a ValueError that names the argument.  Returns (callable, d)."""
    target_dim = getattr(log_density, "dim", None)
    if dim is None:
        dim = target_dim
    if dim is None:
        raise ValueError(f"dim is required when {name} is a plain function")
    if isinstance(dim, bool) or int(dim) != dim or int(dim) < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    if target_dim is not None and target_dim != dim:
        raise ValueError(f"dim={dim} does not match the dimension of {name} "
                         f"({getattr(log_density, 'name', 'target')!r} has dim {target_dim})")
    if not callable(log_density):
        raise ValueError(f"{name} must be callable, got {type(log_density).__name__}")
    rng = onp.random.default_rng(0) if rng is None else rng
    z = rng.standard_normal((n, dim))
    try:
        with onp.errstate(all="ignore"):
            out = onp.asarray(getval(log_density(z)))
    except Exception as exc:  # the function cannot take a (n, dim) batch
        raise ValueError(f"{name} failed on a batch of shape {z.shape} (is dim={dim} right?): "
                         f"{type(exc).__name__}: {exc}") from exc
    if out.shape != (n,):
        raise ValueError(f"{name} must map a batch (B, {dim}) to one value per row (B,); "
                         f"for B={n} it returned shape {out.shape}")
    if not onp.all(onp.isfinite(out)):
        raise ValueError(f"{name} returned non-finite values (NaN or inf) at standard normal "
                         f"points: {out.tolist()}")
    return log_density, dim


def _positive(name, value):
    if not (isinstance(value, (int, float, onp.floating, onp.integer)) and value > 0
            and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _positive_int(name, value):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_finite_tree(tree):
    for path, a in tree_leaves(tree):
        if not onp.all(onp.isfinite(a)):
            return path
    return None


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
            _positive_int(name, getattr(self, name))
        if isinstance(self.noise_dim, bool) or int(self.noise_dim) != self.noise_dim or self.noise_dim < 0:
            raise ValueError(f"noise_dim must be a non-negative integer, got {self.noise_dim!r}")
        if int(self.adv_blocks) != self.adv_blocks or self.adv_blocks < 0:
            raise ValueError(f"adv_blocks must be a non-negative integer, got {self.adv_blocks!r}")
        for name in ("lr_gen", "lr_adv", "ref_scale", "lr_final"):
            _positive(name, getattr(self, name))
        if not 0 <= self.decay_from <= 1:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")
        object.__setattr__(self, "hidden", tuple(_positive_int("hidden", h) for h in self.hidden))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def lr_scale(self, it):
        start = self.decay_from * self.iters
        if it < start or self.iters <= start:
            return 1.0
        return 1.0 - (it - start) / (self.iters - start) * (1.0 - self.lr_final)

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def init_avb(rng, dim, cfg):
    """{'gen': sampler MLP eps -> d, 'adv': residual adversary d -> 1}."""
    dt = onp.dtype(cfg.dtype)
    e = cfg.noise_dim or dim
    return {"gen": init_mlp(rng, [e] + list(cfg.hidden) + [dim], dt),
            "adv": init_resnet(rng, dim, cfg.adv_width, cfg.adv_blocks, 1, dt)}


def sampler(gen, eps):
    """The neural sampler z = G_phi(eps).  eps: (B, e) -> z: (B, d)."""
    return mlp(gen, eps, elu)


def adversary(adv, z_bar):
    """T_psi(z_bar) = T_net(z_bar) + ||z_bar||^2 / 2: the reference's -log N(z_bar; 0, I)
    is folded in (models.fold_prior), so T_net only has to learn log q_bar.  -> (B,)."""
    return resnet(adv, z_bar, elu)[:, 0] + fold_prior(z_bar)


def sample_noise(rng, cfg, dim, n):
    return rng.standard_normal((n, cfg.noise_dim or dim)).astype(cfg.dtype)


def contrast_moments(z, cfg):
    """mu, sigma of the reference r(z) = N(mu, diag sigma^2), held constant (no gradient).
    AC: the batch's Monte Carlo moments, sigma = sqrt(var + 1e-4) as in the authors'
    code; without AC: the fixed (ref_loc, ref_scale).  -> (d,), (d,)."""
    z = getval(z)
    if cfg.adaptive_contrast:
        return onp.mean(z, axis=0), onp.sqrt(onp.var(z, axis=0) + AC_VAR_FLOOR)
    d = z.shape[1]
    return onp.full(d, cfg.ref_loc, z.dtype), onp.full(d, cfg.ref_scale, z.dtype)


def avb_losses(params, log_density, eps, eta, cfg, aux=None):
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
    T_all = adversary(params["adv"], np.concatenate([getval(z_bar), eta], 0))   # (2B,) one pass
    adv_loss = O.adversary_loss(T_all[:B], T_all[B:])                      # eq. (3.3)
    if aux is not None:
        d = z.shape[1]
        log_sigma = float(onp.sum(onp.log(sigma)))
        aux["gen_objective"] = float(getval(gen))
        aux["adv_loss"] = float(getval(adv_loss))
        aux["log_p"] = float(onp.mean(getval(logp)))
        # ELBO = E[log p~ - log q],  log q(z) = T*(z_bar) - ||z_bar||^2/2 - d/2 log 2pi - sum log sigma
        aux["elbo_adversary"] = float(getval(gen)) + 0.5 * d * LOG_2PI + log_sigma
    return -gen, adv_loss


def adversary_only_loss(adv, gen, log_density, eps, eta, cfg):
    """eq. (3.3) alone, for the extra adversary steps (k > 1); the sampler runs forward only."""
    z = getval(sampler(gen, eps))
    mu, sigma = contrast_moments(z, cfg)
    z_bar = (z - mu) / sigma
    B = eta.shape[0]
    T_all = adversary(adv, np.concatenate([z_bar, eta], 0))
    return O.adversary_loss(T_all[:B], T_all[B:])


def sample_avb(params, rng, n):
    """n samples of the trained sampler.  -> (n, d) float64."""
    gen = params["gen"]
    e = gen[0][0].shape[0]
    eps = rng.standard_normal((n, e)).astype(gen[0][0].dtype)
    return onp.asarray(sampler(gen, eps), onp.float64)


def fit_avb(log_density, dim=None, cfg=AVBConfig(), seed=0, eval_fn=None, eval_every=0,
            quiet=True, desc="avb"):
    """Train an AVB sampler for the unnormalised density `log_density` in `dim` dims.

    One iteration = one simultaneous step of both players (one gradient of the sum of
    their losses, see `avb_losses`) plus cfg.adv_steps - 1 adversary-only steps on
    fresh batches.  eval_fn(params) -> dict of floats, called every eval_every
    iterations (and at the end); its values go into the history.
    Returns (params, info) with info = {'history', 'wall_seconds', 'config'}.
    Raises TrainingDiverged if a loss or a weight turns NaN/inf.
    """
    log_density, dim = check_log_density(log_density, dim)
    rng = onp.random.default_rng(seed)
    params = init_avb(rng, dim, cfg)
    gen_opt, adv_opt = Adam(cfg.lr_gen, cfg.b1, cfg.b2), Adam(cfg.lr_adv, cfg.b1, cfg.b2)
    gen_state, adv_state = adam_init(params["gen"]), adam_init(params["adv"])

    def total(p, eps, eta, aux):
        g, a = avb_losses(p, log_density, eps, eta, cfg, aux)
        return g + a
    total_grad = grad(total)
    adv_grad = grad(adversary_only_loss)

    history, t0 = [], time.perf_counter()
    prog = Progress(cfg.iters, desc, quiet)
    B = cfg.batch
    for it in range(cfg.iters):
        scale = cfg.lr_scale(it)
        aux = {}
        eps = sample_noise(rng, cfg, dim, B)                                     # (B, e)
        eta = rng.standard_normal((B, dim)).astype(cfg.dtype)                    # (B, d) ~ N(0, I)
        with onp.errstate(all="ignore"):
            g = total_grad(params, eps, eta, aux)
        bad = [k for k, v in aux.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(f"{desc}: non-finite {', '.join(bad)} at iteration {it}")
        gen, gen_state = adam_step(gen_opt, params["gen"], g["gen"], gen_state, cfg.lr_gen * scale)
        adv, adv_state = adam_step(adv_opt, params["adv"], g["adv"], adv_state, cfg.lr_adv * scale)
        for _ in range(cfg.adv_steps - 1):
            eps2 = sample_noise(rng, cfg, dim, B)
            eta2 = rng.standard_normal((B, dim)).astype(cfg.dtype)
            ga = adv_grad(adv, gen, log_density, eps2, eta2, cfg)
            adv, adv_state = adam_step(adv_opt, adv, ga, adv_state, cfg.lr_adv * scale)
        params = {"gen": gen, "adv": adv}
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            where = _check_finite_tree(params)
            if where:
                raise TrainingDiverged(f"{desc}: non-finite weights ({where}) at iteration {done}")
            entry = {"iteration": done, "wall_seconds": time.perf_counter() - t0, **aux}
            if eval_fn is not None and eval_every and (done % eval_every == 0 or done == cfg.iters):
                entry.update(eval_fn(params))
            history.append(entry)
        prog.update(done, **{k: aux[k] for k in ("elbo_adversary", "adv_loss")})
    return params, {"history": history, "wall_seconds": time.perf_counter() - t0,
                    "config": cfg.to_dict()}


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
            _positive_int(name, getattr(self, name))
        for name in ("lr", "lr_final"):
            _positive(name, getattr(self, name))
        if not 0 <= self.decay_from <= 1:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")

    lr_scale = AVBConfig.lr_scale

    def to_dict(self):
        return asdict(self)


def init_gaussian_vb(dim, cfg):
    """mean (d,), log of the scale's diagonal (d,), and (full-rank) the strictly lower
    triangle of the Cholesky factor as a (d, d) array (its other entries are unused)."""
    p = {"mean": onp.zeros(dim), "log_diag": onp.full(dim, float(cfg.init_log_scale))}
    if cfg.family == "fullrank":
        p["lower"] = onp.zeros((dim, dim))
    return p


def gaussian_vb_scale(params):
    """The Cholesky factor L of q = N(mean, L L^T): diag(exp(log_diag)) + strict lower part."""
    d = params["mean"].shape[0]
    L = np.diag(np.exp(params["log_diag"]))
    if "lower" in params:
        L = L + params["lower"] * onp.tril(onp.ones((d, d)), -1)
    return L


def gaussian_vb_elbo(params, log_density, eps):
    """Reparameterised ELBO: E_eps[log p~(mean + L eps)] + H[q],
    H[q] = sum log diag(L) + d/2 (1 + log 2 pi) in closed form.  eps: (S, d)."""
    L = gaussian_vb_scale(params)
    z = params["mean"] + np.dot(eps, L.T)                                   # (S, d)
    d = eps.shape[1]
    entropy = np.sum(params["log_diag"]) + 0.5 * d * (1.0 + LOG_2PI)
    return np.mean(log_density(z)) + entropy


def sample_gaussian_vb(params, rng, n):
    L = onp.asarray(gaussian_vb_scale(params))
    return params["mean"] + rng.standard_normal((n, L.shape[0])) @ L.T


def gaussian_vb_entropy(params):
    d = params["mean"].shape[0]
    return float(onp.sum(params["log_diag"]) + 0.5 * d * (1.0 + LOG_2PI))


def fit_gaussian_vb(log_density, dim=None, cfg=VBConfig(), seed=0, eval_fn=None, eval_every=0,
                    quiet=True, desc=None):
    """Mean-field or full-rank Gaussian VB (float64).  Returns (params, info) like fit_avb;
    info also holds the final ELBO estimate from 20k samples."""
    log_density, dim = check_log_density(log_density, dim)
    rng = onp.random.default_rng(seed)
    params = init_gaussian_vb(dim, cfg)
    opt = Adam(cfg.lr, cfg.b1, cfg.b2)
    state = adam_init(params)
    neg_elbo_grad = grad(lambda p, eps: -gaussian_vb_elbo(p, log_density, eps))
    history, t0 = [], time.perf_counter()
    prog = Progress(cfg.iters, desc or cfg.family, quiet)
    for it in range(cfg.iters):
        eps = rng.standard_normal((cfg.batch, dim))
        with onp.errstate(all="ignore"):
            g = neg_elbo_grad(params, eps)
        where = _check_finite_tree(g)
        if where:
            raise TrainingDiverged(f"{cfg.family} VB: non-finite gradient ({where}) at iteration {it}")
        params, state = adam_step(opt, params, g, state, cfg.lr * cfg.lr_scale(it))
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            entry = {"iteration": done, "wall_seconds": time.perf_counter() - t0}
            if eval_fn is not None and eval_every and (done % eval_every == 0 or done == cfg.iters):
                entry.update(eval_fn(params))
            history.append(entry)
            prog.update(done)
    eps = onp.random.default_rng(seed + 1).standard_normal((20000, dim))
    elbo = float(gaussian_vb_elbo(params, log_density, eps))
    return params, {"history": history, "wall_seconds": time.perf_counter() - t0,
                    "config": cfg.to_dict(), "elbo": elbo}


# ------------------------------------------------------------------ HMC
def _value_and_grad_rows(log_density):
    """f(z) -> (log p~(z) per row (B,), its gradient (B, d)); rows are independent, so
    the gradient of the sum is the per-row gradient."""
    def total(z, store):
        lp = log_density(z)
        store.append(getval(lp))
        return np.sum(lp)
    g = grad(total)

    def f(z):
        store = []
        with onp.errstate(all="ignore"):
            gz = g(z, store)
        return onp.asarray(store[0], float), onp.asarray(gz, float)
    return f


class DualAveraging:
    """Nesterov dual averaging of log step size toward a target acceptance rate
    (Hoffman & Gelman 2014, Algorithm 5; gamma = 0.05, t0 = 10, kappa = 0.75),
    for an array of step sizes at once (one per chain)."""

    def __init__(self, step_size, target=0.8, gamma=0.05, t0=10.0, kappa=0.75):
        self.mu = onp.log(10 * onp.asarray(step_size, float))
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.h_bar = onp.zeros_like(self.mu)
        self.log_eps_bar = onp.zeros_like(self.mu)
        self.t = 0

    def update(self, accept):
        """accept: this iteration's acceptance probabilities.  -> the next step sizes."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - onp.asarray(accept, float))
        log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** (-self.kappa)
        self.log_eps_bar = eta * log_eps + (1 - eta) * self.log_eps_bar
        return onp.exp(log_eps)

    @property
    def final(self):
        """The averaged step sizes, used after warm-up."""
        return onp.exp(self.log_eps_bar)


def hmc(log_density, init, n_samples=1000, n_warmup=1000, n_leapfrog=16, step_size=0.1,
        target_accept=0.8, adapt_mass=True, involution=None, seed=0, divergence_threshold=1000.0,
        quiet=True, desc="hmc"):
    """Hamiltonian Monte Carlo with C chains advanced together as arrays.

    log_density: Target or (B, d) -> (B,); init: (C, d) starting points, one row per chain.
    Each iteration: momentum p ~ N(0, M), n_leapfrog leapfrog steps of size eps_c
    (each chain c has its own, jittered by +-10% per iteration), Metropolis
    accept/reject of each chain on exp(-(H' - H)).  A transition whose energy error exceeds
    `divergence_threshold` (or is not finite) is a *divergence*: rejected, counted.

    Warm-up (n_warmup iterations, discarded): each chain's eps_c by dual averaging
    toward `target_accept` (a chain that wandered into a region of high curvature
    adapts a smaller step instead of getting stuck); with adapt_mass,
    the diagonal mass matrix M = 1 / Var[z] is estimated from the chains between 20%
    and 70% of warm-up (regularised toward 1e-3 as in Stan), after which dual
    averaging restarts.

    involution: optional z -> f(z), f(f(z)) = z with unit Jacobian (e.g. a symmetry
    of the target).  After each transition each chain proposes f(z) with probability
    1/2, accepted with probability min(1, p~(f(z)) / p~(z)): a valid Metropolis move.

    Returns a dict: samples (C, n_samples, d), log_p (C, n_samples), step_size (per chain),
    inv_mass (d,), accept_rate, divergences (sampling phase, total and per chain),
    warmup_divergences, rhat, rhat_rank, ess (per coordinate), n_grad_evals, wall_seconds.
    """
    step_size = _positive("step_size", step_size)
    n_leapfrog = _positive_int("n_leapfrog", n_leapfrog)
    n_samples = _positive_int("n_samples", n_samples)
    if isinstance(n_warmup, bool) or int(n_warmup) != n_warmup or n_warmup < 0:
        raise ValueError(f"n_warmup must be a non-negative integer, got {n_warmup!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    z = onp.array(init, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"init must have shape (chains, dim), got {z.shape}")
    log_density, dim = check_log_density(log_density, getattr(log_density, "dim", z.shape[1]))
    if z.shape[1] != dim:
        raise ValueError(f"init has {z.shape[1]} columns but log_density has dim {dim}")
    f = _value_and_grad_rows(log_density)
    lp, g = f(z)
    if not onp.all(onp.isfinite(lp)) or not onp.all(onp.isfinite(g)):
        raise ValueError("log_density or its gradient is not finite at init (rows "
                         f"{onp.flatnonzero(~onp.isfinite(lp) | ~onp.all(onp.isfinite(g), 1)).tolist()})")
    C = z.shape[0]
    rng = onp.random.default_rng(seed)
    inv_mass = onp.ones(dim)                          # M^{-1}: the velocity is inv_mass * p
    eps = onp.full(C, float(step_size))
    da = DualAveraging(eps, target_accept)
    w_lo, w_hi = int(0.2 * n_warmup), int(0.7 * n_warmup)
    window = []
    samples = onp.empty((C, n_samples, dim))
    logps = onp.empty((C, n_samples))
    div = onp.zeros(C, int)
    div_warm = 0
    acc_sum, flip_acc, n_flip = 0.0, 0, 0
    total = n_warmup + n_samples
    prog = Progress(total, desc, quiet)
    t0 = time.perf_counter()
    n_grad = 1
    for it in range(total):
        warm = it < n_warmup
        e = (eps * rng.uniform(0.9, 1.1, C))[:, None]                          # (C, 1)
        p = rng.standard_normal((C, dim)) / onp.sqrt(inv_mass)                  # p ~ N(0, M)
        H0 = -lp + 0.5 * onp.sum(p * p * inv_mass, 1)                           # (C,)
        zn, pn, gn = z.copy(), p + 0.5 * e * g, g
        with onp.errstate(all="ignore"):                  # a diverging chain overflows: caught below
            for l in range(n_leapfrog):                                          # leapfrog
                zn = zn + e * inv_mass * pn
                lpn, gn = f(zn)
                if l < n_leapfrog - 1:
                    pn = pn + e * gn
            pn = pn + 0.5 * e * gn
            H1 = -lpn + 0.5 * onp.sum(pn * pn * inv_mass, 1)
            dH = H1 - H0
        n_grad += n_leapfrog
        divergent = ~onp.isfinite(dH) | (dH > divergence_threshold) | ~onp.all(onp.isfinite(gn), 1)
        dH = onp.where(divergent, onp.inf, dH)
        acc_prob = onp.exp(-onp.maximum(dH, 0.0))                               # min(1, e^{-dH})
        accept = rng.random(C) < acc_prob
        z = onp.where(accept[:, None], zn, z)
        lp = onp.where(accept, lpn, lp)
        g = onp.where(accept[:, None], gn, g)
        if involution is not None:                                               # symmetry move
            try_flip = rng.random(C) < 0.5
            zf = onp.asarray(involution(z), float)
            lpf, gf = f(zf)
            n_grad += 1
            ok = try_flip & onp.isfinite(lpf) & (onp.log(rng.random(C)) < lpf - lp)
            z = onp.where(ok[:, None], zf, z)
            lp = onp.where(ok, lpf, lp)
            g = onp.where(ok[:, None], gf, g)
            flip_acc += int(ok.sum())
            n_flip += int(try_flip.sum())
        if warm:
            div_warm += int(divergent.sum())
            eps = da.update(acc_prob)
            if adapt_mass and w_lo <= it < w_hi:
                window.append(z.copy())
            if adapt_mass and it == w_hi - 1 and window:
                W = onp.concatenate(window, 0)
                n = W.shape[0]
                var = onp.var(W, axis=0)
                inv_mass = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                da = DualAveraging(eps, target_accept)                          # restart at the current eps
            if it == n_warmup - 1:
                eps = da.final
        else:
            s = it - n_warmup
            samples[:, s] = z
            logps[:, s] = lp
            div += divergent
            acc_sum += float(onp.mean(acc_prob))
        prog.update(it + 1, eps=float(onp.median(eps)))
    out = {"samples": samples, "log_p": logps, "step_size": eps.tolist(), "inv_mass": inv_mass.tolist(),
           "n_leapfrog": n_leapfrog, "accept_rate": acc_sum / n_samples,
           "divergences": int(div.sum()), "divergences_per_chain": div.tolist(),
           "warmup_divergences": div_warm, "chains": C, "n_samples": n_samples, "n_warmup": n_warmup,
           "n_grad_evals": n_grad, "wall_seconds": time.perf_counter() - t0,
           "rhat": split_rhat(samples).tolist(), "rhat_rank": split_rhat(samples, rank=True).tolist(),
           "ess": ess(samples).tolist()}
    if involution is not None:
        out["involution_accept_rate"] = flip_acc / max(n_flip, 1)
    return out


# ------------------------------------------------------------------ diagnostics
def _check_chains(x):
    x = onp.asarray(x, float)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[1] < 4:
        raise ValueError(f"chains must have shape (chains, draws >= 4[, dim]), got {x.shape}")
    return x


def _split(x):
    """Split each chain in half: (C, S, d) -> (2C, S // 2, d) (a middle draw is dropped if S is odd)."""
    h = x.shape[1] // 2
    return onp.concatenate([x[:, :h], x[:, x.shape[1] - h:]], 0)


def _rhat_plain(x):
    C, S, _ = x.shape
    means = x.mean(1)                                     # (C, d)
    W = x.var(1, ddof=1).mean(0)                          # within-chain variance (d,)
    B_over_n = means.var(0, ddof=1)                       # between-chain variance / S
    var_plus = (S - 1) / S * W + B_over_n
    with onp.errstate(invalid="ignore", divide="ignore"):     # constant chains: NaN
        return onp.sqrt(var_plus / W)


def _rank_normal(x):
    """Rank-normalise the pooled draws (Vehtari et al. 2021): Phi^-1((r - 3/8) / (N + 1/4))."""
    from scipy.stats import rankdata
    C, S, d = x.shape
    r = rankdata(x.reshape(C * S, d), axis=0)
    return ndtri((r - 0.375) / (C * S + 0.25)).reshape(C, S, d)


def split_rhat(chains, rank=False):
    """Split R-hat per coordinate (Gelman et al., BDA3): each chain cut in half, then
    sqrt(((S-1)/S W + B/S) / W).  rank=True: the rank-normalised version of Vehtari
    et al. (2021), the larger of the bulk (ranks) and tail (ranks of |z - median|)
    values.  chains: (C, S[, d]) -> (d,); NaN where every draw is the same."""
    x = _check_chains(chains)
    if not rank:
        return _rhat_plain(_split(x))
    bulk = _rhat_plain(_split(_rank_normal(x)))
    folded = onp.abs(x - onp.median(x.reshape(-1, x.shape[2]), axis=0))
    tail = _rhat_plain(_split(_rank_normal(folded)))
    return onp.maximum(bulk, tail)


def _autocov(x):
    """Autocovariance of each chain and coordinate by FFT (biased, divided by S).  (C, S, d) -> (C, S, d)."""
    C, S, d = x.shape
    xc = x - x.mean(1, keepdims=True)
    n = 1 << int(math.ceil(math.log2(2 * S)))
    fx = onp.fft.rfft(xc, n=n, axis=1)
    return onp.fft.irfft(fx * onp.conj(fx), n=n, axis=1)[:, :S] / S


def ess(chains):
    """Effective sample size per coordinate from C (split) chains, as in Stan: combined
    autocorrelations rho_t = 1 - (W - mean_c acov_c(t)) / var_plus, summed by Geyer's
    initial monotone sequence.  chains: (C, S[, d]) -> (d,)."""
    x = _split(_check_chains(chains))
    C, S, d = x.shape
    acov = _autocov(x)                                    # (C, S, d)
    chain_var = acov[:, 0] * S / (S - 1.0)                # (C, d)
    W = chain_var.mean(0)
    var_plus = W * (S - 1.0) / S + (x.mean(1).var(0, ddof=1) if C > 1 else 0.0)
    with onp.errstate(invalid="ignore", divide="ignore"):     # constant chains: NaN
        rho = 1.0 - (W - acov.mean(0)) / var_plus         # (S, d), rho[0] = 1
    out = onp.empty(d)
    for j in range(d):
        r = rho[:, j]
        # Geyer: pair sums P_k = rho_2k + rho_2k+1, while positive, made monotone
        npairs = S // 2
        P = r[0:2 * npairs:2] + r[1:2 * npairs:2]
        k_end = onp.argmax(P <= 0) if onp.any(P <= 0) else npairs
        P = onp.minimum.accumulate(P[:k_end]) if k_end > 0 else P[:1]
        tau = -1.0 + 2.0 * onp.sum(P)
        out[j] = C * S / max(tau, 1.0 / math.log10(max(C * S, 10)))
    return out


# ------------------------------------------------------------------ KL estimates
def kl_to_samples(q_samples, ref_samples, k=5):
    """KL(q || ref) from samples of both: the k-NN estimator `evaluate.knn_kl`
    (Wang, Kulkarni & Verdu 2009; what the paper's ITE package computes)."""
    return E.knn_kl(q_samples, ref_samples, k)


def kl_to_target_grid(q_samples, target, log_z=None, entropy=None, k=5, grid_n=800):
    """KL(q || p) for a 2-d target whose normaliser comes from a grid:

        KL = E_q[log q] - E_q[log p~] + log Z = -H[q] - E_q[log p~] + log Z,

    with E_q[log p~] averaged over the samples, log Z from `targets.log_normaliser`
    and H[q] given (`entropy`, e.g. the closed form of a Gaussian) or estimated from
    the samples by the Kozachenko-Leonenko k-NN estimator (`evaluate.knn_entropy`)."""
    from .targets import log_normaliser
    q = onp.asarray(q_samples, float)
    if q.ndim != 2 or q.shape[1] != target.dim:
        raise ValueError(f"q_samples must have shape (n, {target.dim}), got {q.shape}")
    log_z = log_normaliser(target, grid_n) if log_z is None else log_z
    H = E.knn_entropy(q, k) if entropy is None else entropy
    with onp.errstate(all="ignore"):
        elp = float(onp.mean(onp.asarray(target.log_density(q), float)))
    return -H - elp + log_z
