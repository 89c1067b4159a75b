"""Hamiltonian Monte Carlo and its diagnostics: the ground truth that VI is scored against.

- `hmc`: many chains advanced together as arrays, with step-size adaptation (dual
  averaging, Hoffman & Gelman 2014) and a diagonal mass matrix during warm-up;
  divergences are counted and reported.
- `split_rhat` and `ess`: the chains' convergence diagnostics (Vehtari et al., 2021).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd import grad
from autograd.tracer import getval
from scipy.special import ndtri
from scipy.stats import rankdata

from .progress import Progress
from .targets import check_log_density, check_positive, check_positive_int


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

    def update(self, accept: onp.ndarray) -> onp.ndarray:
        """accept: this iteration's acceptance probabilities.  -> the next step sizes."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - onp.asarray(accept, float))
        log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** (-self.kappa)
        self.log_eps_bar = eta * log_eps + (1 - eta) * self.log_eps_bar
        return onp.exp(log_eps)

    @property
    def final(self) -> onp.ndarray:
        """The averaged step sizes, used after warm-up."""
        return onp.exp(self.log_eps_bar)


def hmc(log_density: Callable, init: onp.ndarray, n_samples: int = 1000, n_warmup: int = 1000,
        n_leapfrog: int = 16, step_size: float = 0.1, target_accept: float = 0.8, adapt_mass: bool = True,
        involution: Callable | None = None, seed: int = 0, divergence_threshold: float = 1000.0,
        quiet: bool = True, desc: str = "hmc") -> dict:
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
    step_size = check_positive("step_size", step_size)
    n_leapfrog = check_positive_int("n_leapfrog", n_leapfrog)
    n_samples = check_positive_int("n_samples", n_samples)
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
    C, S, d = x.shape
    r = rankdata(x.reshape(C * S, d), axis=0)
    return ndtri((r - 0.375) / (C * S + 0.25)).reshape(C, S, d)


def split_rhat(chains: onp.ndarray, rank: bool = False) -> onp.ndarray:
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


def ess(chains: onp.ndarray) -> onp.ndarray:
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
