"""The Biadversarial VAE (A. Fickinger, github.com/ArnaudFickinger/BAVAE) to train: eq. (6), (14), (19).

Two adversaries replace the two terms of the ELBO:

- encoder adversary D_phi(x, z), eq. (6): max E_q(z|x)[1 - D] - E_p(z)[exp(-D)];
  optimum D* = log p(z) - log q(z|x) (eq. 8), value KL(q(z|x), p(z)) (eq. 9);
- decoder adversary D_theta,phi(x, z), eq. (14): max E[D(x, z)] - E[exp(D(x', z) - 1)] over
  data pairs x ~ p_D, z ~ q(z|x) and model pairs (x', z), x' ~ p_theta(x'|z) for the same z;
  optimum D* = 1 + log q(x|z) - log p_theta(x|z) (eq. 16; q(x|z) = p_D(x) q(z|x) / q(z)),
  value E_q(z) KL(q(x|z), p_theta(x|z)) (eq. 17);
- eq. (19): encoder and decoder minimise the sum of the two values, each adversary
  maximises its own.

Reading of the equations (the paper is terse; these choices are written out here):
- The pairs of eq. (14) are *joint*: x and z ~ q(z|x) come together, x' is drawn from
  p_theta(x'|z) for that z.  (With x drawn independently of z the optimum would be eq. (16)
  literally, log p_D(x) - log p_theta(x|z) + 1, and the decoder would learn to ignore z.)
- x' ~ p_theta(x'|z) is Bernoulli here, not reparameterisable: the gradient of
  -E_{p_theta(x'|z)} exp(D(x', z) - 1) reaches theta (and phi, through z) by the score
  function, exp(D - 1) * grad log p_theta(x'|z), with a leave-one-out batch baseline.
  At D = D* its expectation is exactly the reconstruction gradient -E_q grad log p_theta(x|z).
- Adversaries as in AVB (`models.init_adversary`: the paper's inner product <f(x), g(z)>
  or the authors' residual net) but *without* the folded prior term: under eq. (6) a folded
  ||z||^2 / 2 would make E_p exp(-D) infinite at initialisation.
- What it optimises: at both optima the sum is -ELBO - H(x) + I_q(x; z): the encoder's
  mutual information is penalised once more than in the ELBO (KL(q(z|x), p(z)) already
  holds I_q(x; z) once), so the BAVAE's fixed point is not the ELBO's (chapter 12).

The authors' public code swaps the two losses relative to eq. (6) and (14) (the latent
adversary gets (14)'s form, the image adversary (6)'s): each adversary then estimates the
KL in the other direction.  Here the equations are implemented; tests/test_bavae.py fails
if the two are swapped.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd import grad
from autograd.scipy.special import logsumexp  # scipy.special.logsumexp with a gradient
from autograd.tracer import getval
from scipy.special import expit

from . import evaluate as E
from . import models as M
from . import objectives as O
from . import train as T
from .backend import DeviceRNG, array_module, device_module, tree_to_device
from .checkpoint import OTHER_RUN, hold, load_checkpoint, read_meta
from .data import check_binary_data, sample_batch
from .nn import concatenate, resnet
from .ops import bernoulli_loglik, inner_product_all_pairs, inner_product_rows
from .optim import Adam, adam_init, adam_step
from .train import TrainConfig, resume_run, run_training, save_run
from .trees import stop_gradient, tree_leaves

KIND = "bavae"
PLAYERS = ("gen", "adv", "adv_dec")        # (encoder, decoder), D_phi, D_theta,phi


# ------------------------------------------------------------------ the model
def init_bavae(rng: onp.random.Generator, arch: M.Arch, dtype: type = onp.float32) -> dict:
    """{'enc': implicit encoder z = g(x, eps), 'dec': Bernoulli decoder, 'adv': D_phi,
    'adv_dec': D_theta,phi}.  enc, dec, adv are drawn exactly as AVB's for the same rng."""
    params = M.init_params(rng, "avb", arch, dtype)
    params["adv_dec"] = M.init_adversary(rng, arch, dtype)
    return params


def adversary_D(adv: dict, x: onp.ndarray, z: onp.ndarray, arch: M.Arch) -> onp.ndarray:
    """D(x_i, z_i) for matched rows, no folded prior.  (B, D), (B, dz) -> (B,)."""
    if arch.adversary == "inner":
        return inner_product_rows(M.adversary_features_x(adv, x, arch.act, arch.adv_unary),
                                  M.adversary_features_z(adv, z, arch.act, arch.adv_unary))
    return resnet(adv["net"], concatenate([x, z], axis=1), arch.act)[:, 0]


def adversary_D_all_pairs(adv: dict, x: onp.ndarray, z: onp.ndarray, arch: M.Arch) -> onp.ndarray:
    """D(x_i, z_j) for all i, j (inner-product adversary).  -> (B, M)."""
    if arch.adversary != "inner":
        raise ValueError("all-pairs logits need the inner-product adversary (Arch.adversary='inner')")
    return inner_product_all_pairs(M.adversary_features_x(adv, x, arch.act, arch.adv_unary),
                                   M.adversary_features_z(adv, z, arch.act, arch.adv_unary))


def sample_decoder(logits: onp.ndarray, u: onp.ndarray) -> onp.ndarray:
    """x' ~ p_theta(x'|z): Bernoulli(sigmoid(l)) from uniforms u, no gradient.  (B, D) -> (B, D)."""
    l = getval(logits)
    xp = array_module(l)
    p = expit(l) if xp is onp else 0.5 * (xp.tanh(0.5 * l) + 1)   # scipy's expit has no device form
    return (u < p).astype(l.dtype)                 # no log(0); u rounded to 1.0 in float32 gives 0


RECONSTRUCTION = ("adversary", "exact")


def bavae_losses(params: dict, x: onp.ndarray, eps: onp.ndarray, z_prior: onp.ndarray, u: onp.ndarray,
                 arch: M.Arch, negatives: str = "pairs", aux: dict | None = None,
                 reconstruction: str = "adversary") -> tuple:
    """The three losses of one simultaneous step of eq. (19), arranged (as `objectives.avb_losses`)
    so that ONE gradient of their sum gives each player the gradient of its own loss:

    gen     = V_enc + V_dec with both adversaries held fixed (to minimise over theta, phi);
    adv     = -V_enc, eq. (6), encoder samples held fixed (to minimise over D_phi);
    adv_dec = -V_dec, eq. (14), encoder and decoder samples held fixed (over D_theta,phi).

    eps: (B, eps_dim) encoder noise; z_prior: (B, dz) samples of p(z); u: (B, D) uniforms
    that draw x' ~ p_theta(x'|z).  `aux`, if a dict, receives floats (the two KL estimates
    -adv and -adv_dec, and the mean log p(x|z)).  Returns (gen, adv, adv_dec).

    reconstruction='exact' is an ablation, not the paper: V_dec in `gen` is replaced by the
    exact -E_q log p_theta(x|z) (the ELBO's own term), so that only eq. (6) is adversarial;
    D_theta,phi still trains but no longer drives the encoder or decoder.
    """
    if reconstruction not in RECONSTRUCTION:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTION}, got {reconstruction!r}")
    O.check_negatives(negatives)
    enc_obj, dec_obj = O.get_objective("bavae_encoder"), O.get_objective("bavae_decoder")
    z = M.implicit_encoder(params["enc"], x, eps, arch.act)                 # (B, dz)
    logits = M.decoder_logits(params["dec"], z, arch.act)                   # (B, D)
    x_model = sample_decoder(logits, u)                                 # (B, D)  x' ~ p(x'|z)
    # --- generator: both adversaries fixed; gradient through z, and through log p(x'|z)
    A, A_dec = stop_gradient(params["adv"]), stop_gradient(params["adv_dec"])
    D_q = adversary_D(A, x, z, arch)                                    # (B,)  D_phi(x, z)
    v_enc = np.mean(1.0 - D_q)                                          # eq. (6): the phi-dependent term
    if reconstruction == "exact":                                       # ablation: the ELBO's term
        v_dec = -np.mean(bernoulli_loglik(x, logits))
    else:
        D_data = adversary_D(A_dec, x, z, arch)                         # (B,)  data pairs
        D_model = adversary_D(A_dec, x_model, z, arch)                  # (B,)  model pairs
        w = O.exp_linear(D_model - 1.0)                                 # (B,)  exp, C^1-capped
        w0 = getval(w)
        B = w0.shape[0]
        baseline = (onp.sum(w0) - w0) / max(B - 1, 1)                   # leave-one-out
        score = bernoulli_loglik(x_model, logits)                       # (B,) log p_theta(x'|z)
        v_dec = np.mean(D_data) - np.mean(w) - np.mean((w0 - baseline) * score)   # eq. (14), score function
    gen = v_enc + v_dec                                                 # eq. (19)
    # --- adversaries: samples fixed
    zf = getval(z)
    D_pos = adversary_D(params["adv"], x, zf, arch)                     # (B,)
    if negatives == "all_pairs":
        D_neg = adversary_D_all_pairs(params["adv"], x, z_prior, arch)  # (B, M)
    else:
        D_neg = adversary_D(params["adv"], x, z_prior, arch)            # (B,)
    adv = enc_obj.loss(D_pos, D_neg)                                    # -eq. (6)
    adv_dec = dec_obj.loss(adversary_D(params["adv_dec"], x, zf, arch),
                           adversary_D(params["adv_dec"], x_model, zf, arch))   # -eq. (14)
    if aux is not None:
        aux["kl_encoder"] = float(-getval(adv))          # estimate of E_x KL(q(z|x), p(z))
        aux["kl_decoder"] = float(-getval(adv_dec))      # estimate of E_z KL(q(x|z), p(x|z))
        aux["loglik"] = float(onp.mean(getval(bernoulli_loglik(x, getval(logits)))))
        if reconstruction == "adversary":    # the decoder's score-function gradient is scaled by w
            aux["w_model"] = float(onp.mean(w0))          # E exp(D(x', z) - 1), 1 at D = D* on average
            aux["w_ess"] = effective_sample_size(w0)      # of B; 0 when every w underflows
    return gen, adv, adv_dec


# ------------------------------------------------------------------ training
def make_bavae_step(arch: M.Arch, cfg: TrainConfig, reconstruction: str = "adversary") -> Callable:
    """step(params, states, x, eps, z_prior, u, scale) -> (params, states, aux): one
    simultaneous update of the three players of eq. (19)."""
    gen_opt, adv_opt = Adam(cfg.lr_gen, cfg.b1, cfg.b2), Adam(cfg.lr_adv, cfg.b1, cfg.b2)

    def total(params, x, eps, z_prior, u, aux):
        return sum(bavae_losses(params, x, eps, z_prior, u, arch, cfg.negatives, aux, reconstruction))

    total_grad = grad(total)

    def step(params, states, x, eps, z_prior, u, scale):
        aux = {}
        g = total_grad(params, x, eps, z_prior, u, aux)
        gen, states["gen"] = adam_step(gen_opt, {"enc": params["enc"], "dec": params["dec"]},
                                       {"enc": g["enc"], "dec": g["dec"]}, states["gen"], cfg.lr_gen * scale)
        adv, states["adv"] = adam_step(adv_opt, params["adv"], g["adv"], states["adv"], cfg.lr_adv * scale)
        adv_dec, states["adv_dec"] = adam_step(adv_opt, params["adv_dec"], g["adv_dec"], states["adv_dec"],
                                               cfg.lr_adv * scale)
        return {"enc": gen["enc"], "dec": gen["dec"], "adv": adv, "adv_dec": adv_dec}, states, aux
    return step


def init_states(params: dict) -> dict:
    return dict(T.init_states("avb", params), adv_dec=adam_init(params["adv_dec"]))


def effective_sample_size(w: onp.ndarray) -> float:
    """(sum w)^2 / sum w^2 of non-negative weights, in float64; 0 if they are all 0."""
    w = w.astype(onp.float64) if hasattr(w, "astype") else onp.asarray(w, onp.float64)   # on its device
    s2 = float(onp.sum(w * w))
    return float(onp.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def sample_step_noise(rng: onp.random.Generator, arch: M.Arch, batch: int) -> tuple:
    """(eps, z_prior, u) for one step."""
    eps = M.sample_noise(rng, "avb", arch, batch)                               # (B, eps_dim)
    z_prior = rng.standard_normal((batch, arch.z_dim)).astype(onp.float32)      # (B, dz)
    u = rng.uniform(size=(batch, arch.x_dim)).astype(onp.float32)              # (B, D)
    return eps, z_prior, u


def _resume(path, arch, params, states, reconstruction, device="cpu", seed=0, cfg=None, allow_change=False):
    """`train.resume_run` (kind, architecture, optimiser states, rng) after the checks of its own:
    the checkpoint's reconstruction mode and exp cap (`objectives.exp_linear`)."""
    meta = read_meta(path)
    if meta.get("kind") == KIND and meta.get("reconstruction", "adversary") != reconstruction:
        raise ValueError(f"checkpoint {path!r} was trained with reconstruction={meta.get('reconstruction')!r}"
                         + OTHER_RUN)
    if meta.get("exp_cap", O.EXP_CAP) != O.EXP_CAP:
        raise ValueError(f"checkpoint {path!r} was trained with objectives.EXP_CAP = {meta['exp_cap']}, "
                         f"not {O.EXP_CAP}" + OTHER_RUN)
    return resume_run(path, KIND, arch, params, states, device, seed, 4, cfg, allow_change)


def train_bavae(data: onp.ndarray, arch: M.Arch, cfg: TrainConfig, seed: int = 0, checkpoint: str | None = None,
                quiet: bool = True, eval_fn: Callable | None = None, eval_every: int = 0,
                desc: str | None = None, reconstruction: str = "adversary", device: str = "cpu",
                allow_config_change: bool = False) -> tuple:
    """Train a Biadversarial VAE on binary `data` (N, D); same contract as `train.train`
    (resumable checkpoint, eval_fn every eval_every iterations, TrainingDiverged on NaN/inf).
    cfg: a `train.TrainConfig` (lr_adv serves both adversaries; adv_steps must be 1).
    reconstruction: 'adversary' (eq. 14, the paper) or 'exact' (ablation, see `bavae_losses`).
    device: 'cpu' or 'gpu', as for `train.train`."""
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a train.TrainConfig, got {type(cfg).__name__}")
    if reconstruction not in RECONSTRUCTION:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTION}, got {reconstruction!r}")
    if cfg.adv_steps != 1:
        raise ValueError(f"the Biadversarial VAE trains with adv_steps=1, got {cfg.adv_steps}")
    xp = device_module(device)
    data = check_binary_data(data, "data", arch.x_dim)
    rng = onp.random.default_rng(seed)
    params = init_bavae(rng, arch)
    states = init_states(params)
    start, history, wall0 = 0, [], 0.0
    with hold(checkpoint) if checkpoint is not None else nullcontext():   # one writer per checkpoint
        if checkpoint is not None and os.path.exists(checkpoint):
            params, states, start, history, wall0, rng = _resume(checkpoint, arch, params, states, reconstruction,
                                                                 device, seed, cfg, allow_config_change)
        elif xp is not onp:
            rng = DeviceRNG(xp, seed)
        params, states, data = tree_to_device(params, xp), tree_to_device(states, xp), xp.asarray(data)
        step = make_bavae_step(arch, cfg, reconstruction)

        def one_step(params, states, it):
            x = sample_batch(rng, data, cfg.batch)                              # (B, D)
            eps, z_prior, u = sample_step_noise(rng, arch, cfg.batch)
            return step(params, states, x, eps, z_prior, u, cfg.lr_scale(it))

        def save(params, states, it, history, wall):
            save_run(checkpoint, KIND, arch, cfg, params, states, it, rng, history, wall, seed,
                     reconstruction=reconstruction, exp_cap=O.EXP_CAP)

        return run_training(one_step, save, params, states, cfg, start, history, wall0, checkpoint,
                            desc or KIND, quiet, eval_fn, eval_every, ("kl_encoder", "kl_decoder", "w_model"))


def load_bavae(path: str, arch: M.Arch) -> dict:
    """Parameters of a trained Biadversarial VAE from its checkpoint."""
    template = init_bavae(onp.random.default_rng(0), arch)
    trees, _ = load_checkpoint(path, {"params": template})
    return trees["params"]


# ------------------------------------------------------------------ evaluation
def elbo_from_T(params: dict, data: onp.ndarray, arch: M.Arch, rng: onp.random.Generator,
                n: int = 2000) -> onp.ndarray:
    """The encoder adversary's ELBO estimate E_q[log p(x|z) + D_phi(x, z)] (D* = log p/q):
    it trusts D = D*, so it is NOT a bound.  -> (N,)."""
    out = []
    for x1 in onp.asarray(data, onp.float32):
        xr = onp.repeat(x1[None], n, axis=0)                                  # (n, D)
        z = M.implicit_encoder(params["enc"], xr, M.sample_noise(rng, "avb", arch, n), arch.act)
        ll = bernoulli_loglik(xr, M.decoder_logits(params["dec"], z, arch.act))
        out.append(float(onp.mean(ll + adversary_D(params["adv"], xr, z, arch))))
    return onp.array(out)


def evaluate_bavae(params: dict, data: onp.ndarray, arch: M.Arch, rng: onp.random.Generator, grid_n: int = 512,
                   n_samples: int = 10000) -> dict:
    """The Table 1 quantities of `evaluate.evaluate_model` for a Biadversarial VAE (its encoder
    and decoder are AVB's kinds, so the honest estimates are the same functions)."""
    ll = E.exact_log_likelihood_refined(params["dec"], data, arch, grid_n)
    return {"log_likelihood": ll["log_likelihood"], "ll_refinement_change": ll["refinement_change"],
            "reconstruction_error": E.reconstruction_error(params, "avb", data, arch, rng, n_samples // 5),
            "kl_aggregate": E.kl_aggregate(params, "avb", data, arch, rng, n_samples),
            "elbo": float(onp.mean(E.avb_elbo_independent(params, "avb", data, arch, rng, n_samples))),
            "elbo_from_T": float(onp.mean(elbo_from_T(params, data, arch, rng)))}


def game_diagnostics(params: dict, data: onp.ndarray, arch: M.Arch, rng: onp.random.Generator,
                     negatives: str = "all_pairs", batch: int = 100, n_batches: int = 3,
                     reconstruction: str = "adversary") -> dict:
    """Where a trained BAVAE's game stands, on n_batches training batches at its parameters:
    the decoder adversary's D on data pairs (x, z ~ q(z|x)) and on model pairs (x' ~ p(x'|z), z),
    w = exp(D(x', z) - 1) (batch mean and effective sample size (sum w)^2 / sum w^2), and the
    norms of the encoder's and decoder's gradients of the loss it trains with (eq. 19, or the
    ablation's).  At D = D*, E[w] = 1.  w_mean and w_ess are computed from log w = D - 1 with the
    exact exp (no cap, no underflow), so the ESS is that of the exact weights even where every
    float32 w of training is 0 (and the decoder's gradient from eq. (14) exactly zero).
    -> dict of floats (medians over the batches, and batch, n_batches)."""
    def norm(tree):
        return float(onp.sqrt(sum(onp.sum(onp.asarray(a, onp.float64) ** 2) for _, a in tree_leaves(tree))))
    gen_grad = grad(lambda p, *a: bavae_losses(p, *a, arch, negatives, reconstruction=reconstruction)[0])
    out = []
    for _ in range(n_batches):
        x = sample_batch(rng, data, batch)                                  # (B, D)
        eps, z_prior, u = sample_step_noise(rng, arch, batch)
        z = M.implicit_encoder(params["enc"], x, eps, arch.act)
        x_model = sample_decoder(M.decoder_logits(params["dec"], z, arch.act), u)
        D_data = onp.asarray(adversary_D(params["adv_dec"], x, z, arch), onp.float64)
        D_model = onp.asarray(adversary_D(params["adv_dec"], x_model, z, arch), onp.float64)
        a = D_model - 1.0                                                   # log w, exact exp
        g = gen_grad(params, x, eps, z_prior, u)
        out.append({"D_data_median": float(onp.median(D_data)), "D_model_median": float(onp.median(D_model)),
                    "D_model_max": float(D_model.max()),
                    "w_mean": float(onp.exp(min(logsumexp(a) - math.log(len(a)), 700.0))),
                    "w_ess": float(onp.exp(2 * logsumexp(a) - logsumexp(2 * a))),     # scale-free
                    "grad_norm_decoder": norm(g["dec"]), "grad_norm_encoder": norm(g["enc"])})
    return dict({k: float(onp.median([o[k] for o in out])) for k in out[0]}, batch=batch, n_batches=n_batches)


# ------------------------------------------------------------------ what the game optimises
def discrete_game(log_q_z_given_x: onp.ndarray, dec_logits: onp.ndarray, x: onp.ndarray,
                  log_pz: onp.ndarray | None = None) -> dict:
    """Every quantity of eq. (19) in closed form, for a discrete latent.

    log_q_z_given_x: (N, K) log q(z|x_i) for the N data points (p_D uniform over them);
    dec_logits: (K, D) Bernoulli logits of p_theta(x|z) for each latent state; x: (N, D);
    log_pz: (K,), uniform if None.  Returns a dict (autograd-differentiable values):
      v_encoder = E_x KL(q(z|x), p(z))               (eq. 9, the value of (6) at D*)
      v_decoder = KL(p_D(x) q(z|x), q(z) p(x|z))     (eq. 17, the value of (14) at D*)
      elbo, log_likelihood, mutual_information I_q(x; z), data_entropy H(x) = log N.
    Identity: v_encoder + v_decoder = -elbo - H(x) + I_q(x; z).
    """
    N, K = log_q_z_given_x.shape
    lpz = -np.log(K) * np.ones(K) if log_pz is None else log_pz
    lq = log_q_z_given_x                                                     # (N, K)
    q = np.exp(lq)
    lpx = np.dot(x, dec_logits.T) - np.sum(np.logaddexp(0, dec_logits), 1)[None]   # (N, K) log p(x_i|z)
    lqz = logsumexp(lq, axis=0) - np.log(N)                                  # (K,) log q(z)
    lq_x_given_z = lq - np.log(N) - lqz[None]                                # (N, K) log q(x_i|z)
    return {"v_encoder": np.sum(q * (lq - lpz[None])) / N,
            "v_decoder": np.sum(q * (lq_x_given_z - lpx)) / N,
            "elbo": np.sum(q * (lpx + lpz[None] - lq)) / N,
            "log_likelihood": np.mean(logsumexp(lpx + lpz[None], axis=1)),
            "mutual_information": np.sum(q * (lq - lqz[None])) / N,
            "data_entropy": float(np.log(N))}


# ------------------------------------------------------------------ binarized MNIST
def mnist_name(reconstruction: str = "adversary") -> str:
    """'bavae' (the paper's eq. 19) or 'bavae_exact' (the ablation of `bavae_losses`)."""
    return KIND if reconstruction == "adversary" else f"{KIND}_{reconstruction}"


def reconstruction_of(name: str) -> str:
    """The inverse of `mnist_name`: 'bavae' -> 'adversary', 'bavae_exact' -> 'exact'."""
    for r in RECONSTRUCTION:
        if mnist_name(r) == name:
            return r
    raise ValueError(f"not a Biadversarial VAE model name: {name!r} (expected one of "
                     f"{', '.join(mnist_name(r) for r in RECONSTRUCTION)})")
