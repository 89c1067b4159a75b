"""Annealed importance sampling (Neal 2001) for log p(x) of a decoder (sec. 5.2, Table 2).

The paper's MNIST numbers are AIS estimates of log p(x) = log int p(x|z) p(z) dz.
AIS moves samples from an initial density p0(z) (the prior, or the Gaussian of
adaptive contrast) to the posterior p(z|x) through the geometric path

    log f_b(z) = log p0(z) + b [log p(x|z) + log p(z) - log p0(z)],   0 = b_0 < ... < b_T = 1,

with one HMC transition (L leapfrog steps) leaving f_{b_t} invariant at every
intermediate b_t, and accumulates the importance weight

    log w = sum_t (b_t - b_{t-1}) [log p(x|z_{t-1}) + log p(z_{t-1}) - log p0(z_{t-1})],

an unbiased estimate of p(x) (since int f_0 = 1 and int f_1 = p(x)).  With C chains
per example, log p(x) ~ log mean_c w_c: in expectation a *lower* bound (Jensen), so
a higher value means a less biased estimate.  The authors' protocol (not in the
paper): 1000 intermediate distributions, 5 chains, 10 leapfrog steps, step size
adapted toward an acceptance rate of 0.6-0.7.

Everything is vectorised over (examples x chains): one (E C, dz) batch, row e C + c
is chain c of example e; examples are processed in chunks to bound memory.  The
decoder's gradient with respect to z is back-propagated by hand (an MLP: a few
matrix products; no weight gradients, no autograd tape) and checked against
autograd in tests/test_ais.py.

Adapting the step size from the chains' acceptance makes the transitions depend on
the chains' past, which strictly breaks AIS's unbiasedness; it is what the authors
(and Wu et al. 2017) do, and tests/test_ais.py checks the estimate against exact
log-likelihoods to within 0.1 nats.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from scipy.special import expit, logsumexp

from . import models as M
from .backend import DeviceRNG, array_module, is_device_array, to_numpy
from .data import check_binary_data
from .distributions import LOG_2PI, log_std_normal
from .progress import Progress


# ------------------------------------------------------------------ schedule
def sigmoid_schedule(n_steps: int, delta: float = 4.0) -> np.ndarray:
    """b_0 = 0 < b_1 < ... < b_T = 1 (T = n_steps): a sigmoid on [-delta, delta], rescaled
    (Grosse et al. 2015; Wu et al. 2017): small steps near b = 0, where the path moves
    away from p0 fastest, and near b = 1.  -> (T + 1,), float64."""
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    s = expit(np.linspace(-delta, delta, int(n_steps) + 1))
    b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0
    return b


def linear_schedule(n_steps: int) -> np.ndarray:
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    return np.linspace(0.0, 1.0, int(n_steps) + 1)


SCHEDULES = {"sigmoid": sigmoid_schedule, "linear": linear_schedule}


def default_adapt(n_steps: int) -> float:
    """The step-size adaptation rate: the authors' 2% per transition, faster for short runs."""
    return min(0.5, max(0.02, 5.0 / max(int(n_steps), 1)))


# ------------------------------------------------------------------ the sampler
def ais(loglik_fn: Callable, n_examples: int, z_dim: int, rng: np.random.Generator,
        init_mean: np.ndarray | None = None, init_std: np.ndarray | None = None, n_steps: int = 1000,
        n_chains: int = 5, n_leapfrog: int = 10,
        step_size: np.ndarray | None = None, target_accept: float = 0.65, adapt: float | None = None,
        schedule: str = "sigmoid", chunk: int = 256, progress: Progress | None = None, xp=np) -> dict:
    """AIS estimate of log p(x_e) for n_examples examples.

    loglik_fn(start, stop) -> f: the log-likelihood of examples start:stop, where
        f(z, want_value) with z (R, dz), R = (stop - start) * n_chains, rows example-major
        (row i belongs to example start + i // n_chains) returns (ll (R,) or None, dll/dz (R, dz)).
    init_mean, init_std: (n_examples, dz) Gaussian p0 per example, or None for the prior N(0, I).
    step_size: initial leapfrog step per example (None: half the mean initial std); it is
        multiplied by 1 + adapt after each transition where the mean acceptance probability
        over the example's chains exceeds target_accept, and by 1 - adapt otherwise.
        adapt=None: 0.02 (the authors' x1.02 / x0.98) for n_steps >= 250, and 5 / n_steps for
        shorter runs, so that a short run's step can still shrink from the prior's scale
        to the posterior's (a factor of ~10 takes ~115 steps at 2%).
    progress: a Progress over n_steps * number of chunks, or None.
    xp: the array module of loglik_fn's arrays (numpy, or cupy on a GPU): the chains, weights
        and step sizes live there, and rng draws there (a `backend.DeviceRNG` on a GPU).

    Returns {'log_likelihood' (E,), 'ess' (E,) effective number of chains (sum w)^2 / sum w^2,
    'log_weights' (E, C), 'acceptance' (E,) mean acceptance probability, 'step_size' (E,) final,
    'z' (E, C, dz) the chains' last states (approximate posterior samples)}.
    """
    E, C, L, d = int(n_examples), int(n_chains), int(n_leapfrog), int(z_dim)
    for name, v in (("n_examples", E), ("n_chains", C), ("n_leapfrog", L), ("z_dim", d),
                    ("chunk", chunk)):
        if int(v) != v or int(v) < 1:
            raise ValueError(f"AIS: {name} must be a positive integer, got {v}")
    chunk = int(chunk)
    if schedule not in SCHEDULES:
        raise ValueError(f"AIS: schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    if adapt is None:
        adapt = default_adapt(n_steps)
    if not 0 < target_accept < 1 or not 0 <= adapt < 1:
        raise ValueError(f"AIS: need 0 < target_accept < 1 and 0 <= adapt < 1, got {target_accept}, {adapt}")
    betas = SCHEDULES[schedule](n_steps)
    if (init_mean is None) != (init_std is None):
        raise ValueError("AIS: give both init_mean and init_std (a Gaussian p0), or neither (the prior)")
    if init_mean is not None:
        init_mean = xp.asarray(init_mean).astype(np.float64)
        init_std = xp.asarray(init_std).astype(np.float64)
        for name, a in (("init_mean", init_mean), ("init_std", init_std)):
            if a.shape != (E, d):
                raise ValueError(f"AIS: {name} must have shape {(E, d)}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"AIS: {name} must be finite")
        if not np.all(init_std > 0):
            raise ValueError("AIS: init_std must be > 0")
    if step_size is not None:
        step_size = xp.asarray(np.broadcast_to(np.asarray(step_size, np.float64), (E,)).copy())
        if not np.all(step_size > 0):
            raise ValueError(f"AIS: step_size must be > 0, got {step_size.min()}")

    out = {k: [] for k in ("log_weights", "acceptance", "step_size", "z")}
    for s in range(0, E, chunk):
        e = min(E, s + chunk)
        mean = None if init_mean is None else init_mean[s:e]
        std = None if init_std is None else init_std[s:e]
        eps = None if step_size is None else step_size[s:e]
        r = _ais_chunk(loglik_fn(s, e), e - s, C, L, d, rng, betas, mean, std, eps,
                       target_accept, adapt, progress, (s // chunk) * (len(betas) - 1), xp)
        for k in out:
            out[k].append(r[k])
    out = {k: to_numpy(xp.concatenate(v)) for k, v in out.items()}        # the results, once, to the host
    lw = out["log_weights"]                                                     # (E, C)
    out["log_likelihood"] = logsumexp(lw, axis=1) - math.log(C)                 # log mean_c w_c
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    out["ess"] = w.sum(1) ** 2 / (w ** 2).sum(1)                                # in [1, C]
    return out


def _ais_chunk(f, E, C, L, d, rng, betas, mean, std, eps, target, adapt, progress, done0, xp):
    """AIS on R = E C chains.  The path, split into the initial density and the ratio r:
        log f_b(z) = log p0(z) + b r(z),   r(z) = log p(x|z) + log p(z) - log p0(z)
    Each chain carries r and its gradient at its state, so that each HMC transition
    evaluates the decoder exactly L times (once per leapfrog step)."""
    R = E * C
    if mean is None:                                   # p0 = p(z) = N(0, I): r(z) = log p(x|z)
        mean_r, std_r = xp.zeros((R, d)), xp.ones((R, d))

        def log_p0(z, want_value=True):                # log p0(z) (R,) or None, d/dz log p0(z) (R, d)
            return (log_std_normal(z) if want_value else None), -z

        ratio = f
    else:                                              # p0 = N(mean, std^2), one per example
        mean_r, std_r = np.repeat(mean, C, 0), np.repeat(std, C, 0)            # (R, d)
        inv_var = 1 / std_r ** 2
        log_norm0 = -np.sum(np.log(std_r), 1) - 0.5 * d * LOG_2PI                  # (R,)

        def log_p0(z, want_value=True):
            dz = z - mean_r                                                    # (R, d)
            return (log_norm0 - 0.5 * np.sum(dz * dz * inv_var, 1) if want_value else None), -dz * inv_var

        def ratio(z, want_value):                      # r(z) (R,) or None, d/dz r(z) (R, d)
            ll, gll = f(z, want_value)
            l0, g0 = log_p0(z, want_value)
            return (ll + log_std_normal(z) - l0 if want_value else None), gll - z - g0

    if eps is None:
        eps = 0.5 * (xp.ones(E) if std is None else std.mean(1))              # (E,)
    eps = eps.copy()
    z = mean_r + std_r * rng.standard_normal((R, d))                           # z_0 ~ p0   (R, d)
    r, gr = ratio(z, True)                                                     # at z: (R,), (R, d)
    logw = xp.zeros(R)
    acc_sum = xp.zeros(E)
    T = len(betas) - 1
    for t in range(1, T + 1):
        b0, b = betas[t - 1], betas[t]
        logw += (b - b0) * r                           # log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})
        if progress is not None:
            progress.update(done0 + t)
        if t == T:                                     # b = 1 reached: the weight is complete
            break
        # one HMC transition leaving f_b invariant; the first half step uses the carried gradient
        step = np.repeat(eps, C)[:, None]                                     # (R, 1)
        p = rng.standard_normal((R, d))                                        # momentum
        l0, g0 = log_p0(z)
        lf_old = l0 + b * r                                                    # log f_b(z)
        zn, pn = z, p + 0.5 * step * (g0 + b * gr)
        for k in range(L):
            last = k == L - 1
            zn = zn + step * pn
            rn, grn = ratio(zn, last)                  # the decoder: its value at the last step only
            pn += (0.5 * step if last else step) * (log_p0(zn, False)[1] + b * grn)
        lf_new = log_p0(zn)[0] + b * rn
        log_acc = (lf_new - 0.5 * np.sum(pn * pn, 1)) - (lf_old - 0.5 * np.sum(p * p, 1))
        log_acc = np.where(np.isnan(log_acc), -np.inf, np.minimum(log_acc, 0.0))  # (R,)
        accept = np.log(rng.random(R)) < log_acc
        z = np.where(accept[:, None], zn, z)           # the carried r, gr follow the accepted state
        r = np.where(accept, rn, r)
        gr = np.where(accept[:, None], grn, gr)
        acc = np.exp(log_acc).reshape(E, C).mean(1)                            # (E,)
        acc_sum += acc
        eps *= np.where(acc > target, 1 + adapt, 1 - adapt)
    return {"log_weights": logw.reshape(E, C), "acceptance": acc_sum / max(T - 1, 1),
            "step_size": eps, "z": z.reshape(E, C, d)}


# ------------------------------------------------------------------ the decoder's log-likelihood
def _act_and_derivative(name, a, h, d):
    """h <- act(a) and d <- dh/da, into the buffers h, d (all (R, H))."""
    if name == "elu":           # elu(a) = max(a, e^min(a,0) - 1), elu'(a) = e^min(a,0): one exp for both
        np.minimum(a, 0, out=d)     # (exp - 1, not nn.elu's expm1: NumPy's float32 expm1 is ~8x slower)
        np.exp(d, out=d)
        np.subtract(d, 1, out=h)
        np.maximum(a, h, out=h)
    elif name == "relu":
        np.maximum(a, 0, out=h)
        np.greater(a, 0, out=d)
    elif name == "tanh":
        np.tanh(a, out=h)
        np.multiply(h, h, out=d)
        np.subtract(1, d, out=d)
    else:
        raise ValueError(f"activation must be one of elu, relu, tanh, got {name!r}")


def _log_sigmoid(u, tmp):
    """u <- log sigma(u) = min(u, 0) - log(1 + e^{-|u|}), stable; tmp: scratch of u's shape.
    log(1 + e), not log1p(e): the same to float precision here (e <= 1), and NumPy's
    float32 log1p is ~5x slower."""
    np.abs(u, out=tmp)
    np.negative(tmp, out=tmp)
    np.exp(tmp, out=tmp)
    tmp += 1
    np.log(tmp, out=tmp)
    np.minimum(u, 0, out=u)
    u -= tmp
    return u


def decoder_loglik_fn(dec: list, x: np.ndarray, arch: M.Arch) -> Callable:
    """f(z, want_value) -> (log p(x|z) (R,) float64 or None, d/dz log p(x|z) (R, dz) float64):
    the decoder's Bernoulli log-likelihood (eq. 2.1's likelihood term) for fixed data x (R, D),
    with its z-gradient back-propagated by hand through the MLP (no weight gradients).

    With s = 2x - 1 (computed once, here):
        log p(x|z) = sum_d log sigma(s_d l_d)                  l = decoder logits (R, D)
        d/dl log p(x|z) = x - sigma(l) = (s - tanh(l / 2)) / 2
    Every intermediate lives in buffers allocated here, once for all calls (f is called
    L times per AIS transition); z is cast to x's dtype; the results come back in float64."""
    xp = array_module(x)
    R, D = x.shape
    sign = 2 * x - 1                                                 # (R, D), x's dtype
    widths = [W.shape[1] for W, _ in dec[:-1]]                       # H_1 .. H_{L-1}
    a, h, dh = ([xp.empty((R, n), x.dtype) for n in widths] for _ in range(3))   # act(a) = h, dh/da
    logits, u, tmp = (xp.empty((R, D), x.dtype) for _ in range(3))
    W_T = [xp.ascontiguousarray(W.T) for W, _ in dec]                # for the backward pass
    grads = [xp.empty((R, n), x.dtype) for n in widths]              # 2 d log p(x|z) / d h_i

    def f(z, want_value=True):
        inp = z.astype(x.dtype)                                      # (R, dz)
        ### BEGIN SOLUTION task 0.1: the MLP forward pass
        for i, (W, b) in enumerate(dec[:-1]):
            xp.matmul(inp, W, out=a[i])
            a[i] += b
            _act_and_derivative(arch.activation, a[i], h[i], dh[i])
            inp = h[i]
        W, b = dec[-1]
        xp.matmul(inp, W, out=logits)
        np.add(logits, b, out=logits)                                # (R, D)
        ### END SOLUTION
        ll = None
        if want_value:
            ### BEGIN SOLUTION task 0.2: the Bernoulli log-likelihood, NumPy form
            np.multiply(logits, sign, out=u)
            ll = np.sum(_log_sigmoid(u, tmp), 1, dtype=np.float64)  # (R,)
            ### END SOLUTION
        # g = 2 d log p(x|z) / d l = s - tanh(l / 2), then back through the layers (halved at the end)
        ### BEGIN SOLUTION task 0.3: the Bernoulli log-likelihood's VJP
        t = np.multiply(logits, 0.5, out=u)
        np.tanh(t, out=t)
        g = np.subtract(sign, t, out=t)                             # (R, D)
        ### END SOLUTION
        for i in reversed(range(len(widths))):
            g = xp.matmul(g, W_T[i + 1], out=grads[i])               # 2 d/dh_i   (R, H_i)
            g *= dh[i]                                               # 2 d/da_i
        g = g @ W_T[0]                                               # 2 d/dz     (R, dz)
        g *= 0.5
        return ll, g.astype(np.float64)
    return f


def decoder_loglik_and_grad(dec: list, x: np.ndarray, z: np.ndarray, arch: M.Arch,
                            want_value: bool = True) -> tuple:
    """log p(x|z) and its z-gradient for one z: `decoder_loglik_fn(dec, x, arch)(z, want_value)`.
    x, z: (R, D), (R, dz) -> ll (R,) float64 or None, grad (R, dz) float64."""
    return decoder_loglik_fn(dec, x, arch)(z, want_value)


def ais_log_likelihood(params: dict, kind: str, x: np.ndarray, arch: M.Arch, rng: np.random.Generator,
                       n_steps: int = 1000, n_chains: int = 5, n_leapfrog: int = 10,
                       step_size: np.ndarray | None = None,
                       target_accept: float = 0.65, adapt: float | None = None, chunk: int = 512,
                       init: str | None = None, n_noise: int = 10000, quiet: bool = True, desc: str = "AIS",
                       dtype: type = np.float32) -> dict:
    """AIS estimate of log p(x) for each row of binary x under a trained model's decoder.

    init: 'prior' (N(0, I)) or 'ac' (the noise-basis encoder's Gaussian N(mean(x), var(x)),
    eq. III.2-III.3, supplement III; needs kind 'avb_ac'); None picks 'ac' for avb_ac and
    'prior' otherwise.  Returns the dict of `ais` plus 'seconds' and the settings.
    """
    M.check_kind(kind)
    xp = array_module(params["dec"][0][0])                # the device of the model: AIS runs there
    if is_device_array(x):                                # checked where it lies (one bool back)
        if x.ndim != 2 or x.shape[1] != arch.x_dim or not bool(xp.all((x == 0) | (x == 1))):
            raise ValueError(f"x must be a (N, {arch.x_dim}) array of 0/1 values, got shape {x.shape}")
        x = x.astype(np.float32)
    else:
        x = xp.asarray(check_binary_data(x, "x", arch.x_dim))
    if xp is not np:                                      # draws on the device, seeded from rng
        rng = DeviceRNG(xp, int(rng.integers(2 ** 62)))
    init = init or ("ac" if kind == "avb_ac" else "prior")
    if init not in ("prior", "ac"):
        raise ValueError(f"init must be 'prior' or 'ac', got {init!r}")
    mean = std = None
    if init == "ac":
        if kind != "avb_ac":
            raise ValueError("init='ac' needs the noise-basis encoder of an 'avb_ac' model")
        mean, var = ac_gaussian(params["enc"], x, arch, rng, n_noise)
        std = np.sqrt(var + arch.ac_var_floor)
    dec = [(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params["dec"]]
    xd = x.astype(dtype)

    def loglik_fn(s, e):
        return decoder_loglik_fn(dec, np.repeat(xd[s:e], n_chains, 0), arch)   # rows (R, D)

    if int(chunk) != chunk or int(chunk) < 1:
        raise ValueError(f"AIS: chunk must be a positive integer, got {chunk}")
    n_chunks = -(-x.shape[0] // int(chunk))
    prog = Progress(n_chunks * int(n_steps), desc, quiet)
    t0 = time.perf_counter()
    res = ais(loglik_fn, x.shape[0], arch.z_dim, rng, mean, std, n_steps, n_chains, n_leapfrog,
              step_size, target_accept, adapt, "sigmoid", chunk, prog, xp)
    res["seconds"] = time.perf_counter() - t0
    res["settings"] = {"n_steps": int(n_steps), "n_chains": int(n_chains), "n_leapfrog": int(n_leapfrog),
                       "init": init, "target_accept": target_accept,
                       "adapt": adapt if adapt is not None else default_adapt(n_steps),
                       "schedule": "sigmoid", "n_examples": int(x.shape[0])}
    return res


# ------------------------------------------------------------------ the AC Gaussian
def ac_gaussian(enc: dict, x: np.ndarray, arch: M.Arch, rng: np.random.Generator, n_noise: int = 10000) -> tuple:
    """The Gaussian of adaptive contrast for the noise-basis encoder (supplement III):
    mean(x) = z0(x) + sum_i a_i(x) E[v_i]         (eq. III.2)
    var(x)  = sum_i a_i(x)^2 Var[v_i]             (eq. III.3)
    with E[v_i], Var[v_i] estimated once from n_noise draws of eps (v_i does not
    depend on x, so one sample serves every example).  -> mean, var (N, dz) float64."""
    act = arch.act
    m, dz = arch.n_basis, arch.z_dim
    eps = M.sample_noise(rng, "avb_ac", arch, int(n_noise))                    # (K, m, e)
    v = M._basis_nets(enc["v"], eps, act).astype(np.float64)                  # (K, m, dz)
    v_mean, v_var = v.mean(0), v.var(0)                                        # (m, dz)
    out = M.mlp(enc["a"], x.astype(np.float32), act).astype(np.float64)       # (N, (m+1) dz)
    return M.ac_moments(out[:, :dz], out[:, dz:].reshape(-1, m, dz), v_mean, v_var)
