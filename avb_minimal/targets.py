"""Unnormalised target densities for black-box variational inference (paper sec. 5.1).

A `Target` is a named log-density log p~(z) (autograd-differentiable, (B, d) -> (B,))
known only up to its normaliser Z = int p~(z) dz.  Two families:

- 2-d toys (Figure 1): a warped Gaussian, Rosenbrock, a torus (ring), and a
  mixture of separated Gaussians.  Each has a box `bounds` that holds all but a
  negligible part of its mass, so log Z, the normalised density and exact samples
  come from a grid (`grid_log_density`, `log_normaliser`, `sample_grid`), which
  is what lets us score an approximation by its KL to the *true* target.
- Eight Schools (Gelman et al., 2014), the 10-d posterior of sec. 5.1, in the
  non-centred form with tau unconstrained (`eight_schools`).

Everything here is a pure function of its arguments; randomness comes in as a
numpy Generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval
from scipy.special import logsumexp

from .backend import array_module
from .distributions import LOG_2PI


@dataclass(frozen=True)
class Target:
    """An unnormalised log-density and what we know about it.

    name:        short identifier ('rosenbrock', 'eight_schools', ...)
    dim:         d, the dimension of z
    log_density: autograd-differentiable (B, d) -> (B,), rows independent
    bounds:      ((lo_1, hi_1), (lo_2, hi_2)) for 2-d targets: the grid box
    log_z:       log Z in closed form where known (None otherwise)
    labels:      a name per coordinate, for figures and tables
    info:        one line on what the density is
    view:        the box to draw (2-d; defaults to bounds)
    """
    name: str
    dim: int
    log_density: Callable
    bounds: Optional[Tuple[Tuple[float, float], ...]] = None
    log_z: Optional[float] = None
    labels: Tuple[str, ...] = field(default_factory=tuple)
    info: str = ""
    view: Optional[Tuple[Tuple[float, float], ...]] = None

    def __call__(self, z):
        return self.log_density(z)


# ------------------------------------------------------------------ 2-d toys
def warped_gaussian(scale1: float = 1.0, scale2: float = 0.3, warp: float = 0.8) -> Target:
    """The warped Gaussian of Figure 1: u ~ N(0, diag(scale1^2, scale2^2)) pushed
    through the shear z = (u_1, u_2 + warp * (u_1^2 - scale1^2)), a banana.  The
    shear has unit Jacobian, so the density is known exactly and normalised (log Z = 0):

        log p(z) = log N(z_1; 0, scale1^2) + log N(z_2 - warp (z_1^2 - scale1^2); 0, scale2^2).
    """
    def log_density(z):
        z1, z2 = z[:, 0], z[:, 1]
        u2 = z2 - warp * (z1 * z1 - scale1 ** 2)
        return (-0.5 * (z1 / scale1) ** 2 - 0.5 * (u2 / scale2) ** 2
                - onp.log(scale1 * scale2) - LOG_2PI)
    # the grid box: |z1| < 4.5 scale1 (mass outside < 1e-5), and every z2 those z1 reach
    lo2 = -warp * scale1 ** 2 - 6 * scale2
    hi2 = warp * (4.5 ** 2 - 1) * scale1 ** 2 + 6 * scale2
    return Target("warped_gaussian", 2, log_density,
                  bounds=((-4.5 * scale1, 4.5 * scale1), (lo2, hi2)),
                  view=((-3 * scale1, 3 * scale1), (lo2, warp * 5 * scale1 ** 2 + 3 * scale2)),
                  log_z=0.0, labels=("z1", "z2"),
                  info=f"banana: z2 - {warp} (z1^2 - {scale1 ** 2:g}) ~ N(0, {scale2}^2), "
                       f"z1 ~ N(0, {scale1}^2)")


def rosenbrock(scale: float = 1.0) -> Target:
    """The authors' Rosenbrock density: log p~(z) = -scale [(z_1 - 1)^2 + (z_2^2 - z_1)^2].

    Proper as it stands (it decays like exp(-z_1^2) and exp(-z_2^4)); its mass is a
    horseshoe along z_1 = z_2^2 with two lobes at z_2 = +-1 joined through z_2 = 0.
    `scale` sharpens it (scale > 1) or flattens it (scale < 1)."""
    def log_density(z):
        z1, z2 = z[:, 0], z[:, 1]
        return -scale * ((z1 - 1.0) ** 2 + (z2 * z2 - z1) ** 2)
    s = 1.0 / onp.sqrt(scale)
    return Target("rosenbrock", 2, log_density,
                  bounds=((1 - 6 * s, 1 + 6 * s), (-3.2 * max(s, 1) ** 0.5, 3.2 * max(s, 1) ** 0.5)),
                  view=((1 - 2.5 * s, 1 + 3.5 * s), (-2.6 * max(s, 1) ** 0.5, 2.6 * max(s, 1) ** 0.5)),
                  labels=("z1", "z2"), info=f"-{scale:g} [(z1 - 1)^2 + (z2^2 - z1)^2]")


def torus(radius2: float = 2.0, scale: float = 1.0) -> Target:
    """The authors' torus (a ring): log p~(z) = -scale (z_1^2 + z_2^2 - radius2)^2.

    Proper: it decays like exp(-|z|^4).  With the defaults the mass lies on the
    circle of radius sqrt(2) with a radial spread of about 0.25; a Gaussian cannot
    follow it round."""
    def log_density(z):
        r2 = z[:, 0] ** 2 + z[:, 1] ** 2
        return -scale * (r2 - radius2) ** 2
    lim = onp.sqrt(radius2 + 4.0 / onp.sqrt(scale))
    return Target("torus", 2, log_density, bounds=((-lim, lim), (-lim, lim)),
                  labels=("z1", "z2"), info=f"-{scale:g} (z1^2 + z2^2 - {radius2:g})^2")


def gaussian_mixture(means: tuple = ((-1.5, -1.0), (1.5, 1.0)), std: float = 0.5,
                     weights: tuple | None = None) -> Target:
    """A mixture of separated isotropic Gaussians (normalised: log Z = 0).

    log p(z) = log sum_k w_k N(z; m_k, std^2 I).  With the defaults: two equal
    components 7.2 standard deviations apart; halfway between them the density is
    exp(-6.5) of the peaks, so a Gaussian either sits on one (KL ~ log 2) or spans both."""
    means = onp.asarray(means, float)
    K = means.shape[0]
    w = onp.full(K, 1.0 / K) if weights is None else onp.asarray(weights, float) / onp.sum(weights)
    logw = onp.log(w)

    def log_density(z):
        d2 = np.sum((z[:, None, :] - means[None]) ** 2, axis=-1)               # (B, K)
        a = logw[None] - 0.5 * d2 / std ** 2                                    # (B, K)
        m = getval(np.max(a, axis=1, keepdims=True))       # log-sum-exp shift: a constant
        return np.log(np.sum(np.exp(a - m), axis=1)) + m[:, 0] - 2 * onp.log(std) - LOG_2PI
    lo = means.min(0) - 5 * std
    hi = means.max(0) + 5 * std
    return Target("mixture", 2, log_density, bounds=tuple(zip(lo, hi)), log_z=0.0,
                  labels=("z1", "z2"), info=f"{K} Gaussians, std {std}, means {means.tolist()}")


def gaussian(mean: onp.ndarray, cov: onp.ndarray) -> Target:
    """A normalised multivariate Gaussian N(mean, cov) as a Target (for tests and checks)."""
    mean = onp.asarray(mean, float)
    cov = onp.asarray(cov, float)
    d = mean.shape[0]
    prec = onp.linalg.inv(cov)
    logdet = onp.linalg.slogdet(cov)[1]

    def log_density(z):
        r = z - mean                                                            # (B, d)
        return -0.5 * np.sum(np.dot(r, prec) * r, axis=1) - 0.5 * (logdet + d * LOG_2PI)
    bounds = None
    if d == 2:
        s = onp.sqrt(onp.diag(cov))
        bounds = tuple((m - 7 * si, m + 7 * si) for m, si in zip(mean, s))
    return Target("gaussian", d, log_density, bounds=bounds, log_z=0.0,
                  labels=tuple(f"z{i + 1}" for i in range(d)), info="N(mean, cov)")


TOYS = {"warped_gaussian": warped_gaussian, "rosenbrock": rosenbrock,
        "torus": torus, "mixture": gaussian_mixture}


def get_toy(name: str) -> Target:
    """One of the 2-d toys by name (its default settings)."""
    if name not in TOYS:
        raise ValueError(f"toy target must be one of {sorted(TOYS)}, got {name!r}")
    return TOYS[name]()


# ------------------------------------------------------------------ grid normaliser
def _check_grid_target(target):
    if target.dim != 2 or target.bounds is None:
        raise ValueError(f"grid computations need a 2-d target with bounds, got {target.name!r} "
                         f"(dim {target.dim})")


def grid_log_density(target: Target, n: int = 400) -> tuple:
    """log p~ at the midpoints of an n x n grid over target.bounds.
    -> (logp (n, n) indexed [i along z1, j along z2], centres z1 (n,), z2 (n,), cell area)."""
    _check_grid_target(target)
    (a1, b1), (a2, b2) = target.bounds
    e1, e2 = onp.linspace(a1, b1, n + 1), onp.linspace(a2, b2, n + 1)
    c1, c2 = 0.5 * (e1[1:] + e1[:-1]), 0.5 * (e2[1:] + e2[:-1])
    zz = onp.stack(onp.meshgrid(c1, c2, indexing="ij"), -1).reshape(-1, 2)     # (n*n, 2)
    logp = onp.asarray(target.log_density(zz), float).reshape(n, n)
    return logp, c1, c2, (b1 - a1) * (b2 - a2) / n ** 2


def log_normaliser(target: Target, n: int = 800) -> float:
    """log Z = log int p~(z) dz by the midpoint rule on an n x n grid over target.bounds
    (the bounds hold all but a negligible part of the mass; for the toys here the
    rule agrees with the closed form, where there is one, to ~1e-6)."""
    logp, _, _, area = grid_log_density(target, n)
    return float(logsumexp(logp) + onp.log(area))


def sample_grid(target: Target, rng: onp.random.Generator, n_samples: int, n: int = 800) -> onp.ndarray:
    """Exact samples (up to the grid resolution) of the normalised 2-d target: pick a
    cell with probability p~ * area / Z, then a uniform point inside it.  -> (n_samples, 2)."""
    logp, c1, c2, _ = grid_log_density(target, n)
    p = onp.exp(logp - logsumexp(logp)).ravel()
    idx = rng.choice(p.size, size=n_samples, p=p)
    i, j = onp.unravel_index(idx, (n, n))
    h1, h2 = c1[1] - c1[0], c2[1] - c2[0]
    return onp.stack([c1[i] + (rng.random(n_samples) - 0.5) * h1,
                      c2[j] + (rng.random(n_samples) - 0.5) * h2], 1)


# ------------------------------------------------------------------ Eight Schools
EIGHT_SCHOOLS_Y = (2.8, 0.8, -0.3, 0.7, -0.1, 0.1, 1.8, 1.2)
EIGHT_SCHOOLS_SIGMA = (0.8, 0.5, 0.8, 0.6, 0.5, 0.6, 0.5, 0.4)
EIGHT_SCHOOLS_LABELS = ("mu", "tau") + tuple(f"eta_{j + 1}" for j in range(8))


def eight_schools(y: tuple = EIGHT_SCHOOLS_Y, sigma: tuple = EIGHT_SCHOOLS_SIGMA,
                  prior_scale: float = 1.0) -> Target:
    """Eight Schools (Gelman et al., 2014; AVB paper sec. 5.1), tau unconstrained.

    z = (mu, tau, eta_1, ..., eta_J), d = J + 2 = 10 for the data used by the authors:

        theta_j = mu + tau * eta_j
        y_j     ~ N(theta_j, sigma_j^2)                  j = 1..J
        mu, tau, eta_j ~ N(0, prior_scale^2)              (prior_scale = 1 as in the paper)

    log p~(z) = log p(y | z) + log p(z), normalised up to the evidence p(y) (unknown).
    tau is *not* constrained to be positive: the posterior is symmetric under
    (tau, eta) -> (-tau, -eta) (see `eight_schools_flip`), hence bimodal, with
    exactly half its mass on tau < 0.  A Gaussian approximation sits on one mode.
    """
    y = onp.asarray(y, float)
    sigma = onp.asarray(sigma, float)
    if y.shape != sigma.shape or y.ndim != 1:
        raise ValueError(f"y and sigma must be 1-d of the same length, got {y.shape} and {sigma.shape}")
    if not onp.all(sigma > 0):
        raise ValueError("sigma must be positive")
    J = y.shape[0]
    const = -onp.sum(onp.log(sigma)) - 0.5 * J * LOG_2PI \
        - (J + 2) * (onp.log(prior_scale) + 0.5 * LOG_2PI)

    data = {onp: (y, sigma)}                          # the data on each device it is asked on

    def log_density(z):
        xp = array_module(getval(z))
        if xp not in data:
            data[xp] = (xp.asarray(y), xp.asarray(sigma))
        y_, sigma_ = data[xp]
        mu, tau, eta = z[:, 0:1], z[:, 1:2], z[:, 2:]                         # (B,1) (B,1) (B,J)
        theta = mu + tau * eta                                                 # (B, J)
        loglik = -0.5 * np.sum(((y_ - theta) / sigma_) ** 2, axis=1)           # (B,)
        logprior = -0.5 * np.sum(z * z, axis=1) / prior_scale ** 2             # (B,)
        return loglik + logprior + const
    return Target("eight_schools", J + 2, log_density, labels=EIGHT_SCHOOLS_LABELS[:J + 2],
                  info="theta_j = mu + tau eta_j, y_j ~ N(theta_j, sigma_j^2), N(0, 1) priors, "
                       "tau unconstrained")


def eight_schools_flip(z: onp.ndarray) -> onp.ndarray:
    """The posterior's symmetry (mu, tau, eta) -> (mu, -tau, -eta): an involution with
    unit Jacobian that leaves log p~ unchanged.  (B, 10) -> (B, 10)."""
    z = onp.array(z, copy=True)
    z[:, 1:] *= -1
    return z


# ------------------------------------------------------------------ input checks
def check_log_density(log_density: Callable, dim: int | None, rng: onp.random.Generator | None = None,
                      name: str = "log_density", n: int = 3) -> tuple:
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


def check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float, onp.floating, onp.integer)) and value > 0
            and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
