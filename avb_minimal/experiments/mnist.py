"""Binarized MNIST (sec. 5.2, Table 2): settings, training and evaluation of the models.

VAE, AVB and AVB + AC share one decoder architecture (MLP z -> 300 -> 300 -> 784
Bernoulli logits), so that the comparison is one of inference models only.  The
encoders: a Gaussian MLP (VAE), the implicit encoder z = g(x, eps) (AVB) and the
noise-basis encoder of supplement III (AVB + AC).  The adversary is the inner
product of two MLPs plus the terms acting on x and z alone of sec. 5.2
(`Arch.adv_unary`).  The paper uses conv nets; MLPs keep a run on a 2-core CPU.

Evaluation (`evaluate_mnist`, `reproduce_mnist`): the AIS log-likelihood of
`ais.ais_log_likelihood` (the prior as initial distribution for VAE and AVB, the
adaptive-contrast Gaussian for AVB + AC), the ELBO (exact for the VAE; for AVB only
the adversary's estimate, which is not a bound) and the reconstruction.

The Biadversarial VAE (Fickinger, `bavae`) trains with AVB's architecture and settings as a
fourth model, 'bavae' (eq. 19), and 'bavae_exact' (its ablation: eq. 6 kept, eq. 14 replaced
by the exact reconstruction term); its decoder is evaluated by the same AIS.

Nothing here knows of a test split: every function takes the arrays it is given.

Longer than 400 lines because it holds the whole Table 2 experiment in one place: settings,
training, the evaluation protocol, results kept across interrupted runs and seeds, the table.
"""
import json
import os
import sys
import time

import numpy as np

from .. import bavae as BV
from .. import models as M
from ..ais import ais_log_likelihood
from ..backend import check_fits, device_module, tree_to_device, tree_to_host
from ..bavae import adversary_D, game_diagnostics, load_bavae, reconstruction_of
from ..checkpoint import load_checkpoint, read_meta, save_checkpoint, write_json
from ..data import data_dir, dataset_file, load_binary
from ..distributions import kl_diag_normal_std, log_std_normal
from ..ops import bernoulli_loglik
from ..train import TrainConfig, load_params, train
from .plots import bavae_training_figure, figure7, mnist_figure

X_DIM = 784
BAVAE_KINDS = ("bavae", "bavae_exact")
MNIST_KINDS = M.KINDS + BAVAE_KINDS


def check_mnist_kind(kind):
    if kind not in MNIST_KINDS:
        raise ValueError(f"MNIST model must be one of {MNIST_KINDS}, got {kind!r}")
    return kind


def base_kind(kind):
    """The kind whose encoder and decoder a model uses: a BAVAE's are AVB's."""
    return "avb" if check_mnist_kind(kind) in BAVAE_KINDS else kind


def mnist_arch(latent=8, quick=False):
    """One architecture for every model (each uses the parts it needs)."""
    if quick:
        return M.Arch(x_dim=X_DIM, z_dim=latent, hidden=(64, 64), adv_hidden=(64, 64), adv_dim=64,
                      adv_unary=True, eps_dim=16, n_basis=8)
    return M.Arch(x_dim=X_DIM, z_dim=latent, hidden=(300, 300), adv_hidden=(256, 256), adv_dim=256,
                  adv_unary=True, eps_dim=32, n_basis=16)


def mnist_configs(quick=False):
    """{kind: TrainConfig}.  Batch 100; the same number of iterations for the three
    kinds (40k = 80 epochs of the 50k training images)."""
    if quick:
        base = dict(iters=300, batch=100, lr_gen=1e-3, lr_adv=2e-3, negatives="all_pairs",
                    log_every=50, checkpoint_every=100)
        return {k: TrainConfig(**base) for k in M.KINDS}
    # lr 1e-3 for every player: the study (`mnist_study`, README) found AVB + AC at 10k
    # iterations far ahead with it than with the slower 2e-4 / 5e-4 it was first run with
    base = dict(iters=40000, batch=100, lr_gen=1e-3, lr_adv=1e-3, negatives="all_pairs",
                decay_from=0.5, lr_final=0.1, log_every=500, checkpoint_every=2000)
    return {"vae": TrainConfig(**base), "avb": TrainConfig(**base), "avb_ac": TrainConfig(**base)}


def mnist_config(kind, quick=False, step="auto"):
    """The TrainConfig of one model (the BAVAE trains with AVB's); step: 'auto', 'readable'
    or 'fast' (`train.TrainConfig.step`)."""
    return TrainConfig(**dict(mnist_configs(quick)[base_kind(kind)].__dict__, step=step))


def train_mnist(kind, train_x, out_dir, latent=8, quick=False, seed=0, quiet=True, device="cpu", step="auto"):
    """Train (or resume) one model; its checkpoint is `checkpoint_path(out_dir, kind, latent,
    quick, seed)`.  Returns (params, info) as `train.train`."""
    if check_mnist_kind(kind) in BAVAE_KINDS:
        return train_bavae_mnist(train_x, out_dir, latent, quick, seed, quiet, BV.reconstruction_of(kind), device)
    arch, cfg = mnist_arch(latent, quick), mnist_config(kind, quick, step)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = checkpoint_path(out_dir, kind, latent, quick, seed)
    return train(kind, train_x, arch, cfg, seed=seed, checkpoint=ckpt, quiet=quiet,
                 desc=f"mnist {kind}", device=device)


def train_bavae_mnist(train_x, out_dir, latent=8, quick=False, seed=0, quiet=True, reconstruction="adversary",
                      device="cpu"):
    """A Biadversarial VAE on binarized MNIST with the AVB model's architecture and settings
    (`mnist.mnist_arch`, `mnist.mnist_configs()['avb']`); checkpoint
    `checkpoint_path(out_dir, <mnist_name>, latent, quick, seed)` (resumed if present).  Returns (params, info)."""
    arch, cfg = mnist_arch(latent, quick), mnist_configs(quick)["avb"]
    os.makedirs(out_dir, exist_ok=True)
    name = BV.mnist_name(reconstruction)
    return BV.train_bavae(train_x, arch, cfg, seed=seed, checkpoint=checkpoint_path(out_dir, name, latent, quick, seed),
                       quiet=quiet, desc=f"mnist {name}", reconstruction=reconstruction, device=device)


def run_suffix(latent=8, quick=False, seed=0):
    """'_z<latent>[_seed<S>][_quick]': the part of a file name that tells runs apart (seed 0's
    files carry no seed, so earlier runs keep resuming)."""
    return f"_z{latent}{f'_seed{seed}' if seed else ''}{'_quick' if quick else ''}"


def checkpoint_path(out_dir, kind, latent=8, quick=False, seed=0):
    """OUT_DIR/<kind>_z<latent>[_seed<S>][_quick].npz: one file per model, latent size, seed and mode."""
    return os.path.join(out_dir, f"{kind}{run_suffix(latent, quick, seed)}.npz")


# ------------------------------------------------------------------ evaluation
def eval_settings(quick=False):
    """AIS and ELBO settings: the authors' AIS protocol (1000 intermediate distributions,
    5 chains, 10 leapfrog steps) on the first 2048 examples; quick: a smoke test."""
    if quick:
        return {"ais_examples": 64, "ais_steps": 50, "ais_chains": 5, "leapfrog": 10, "elbo_samples": 4}
    return {"ais_examples": 2048, "ais_steps": 1000, "ais_chains": 5, "leapfrog": 10, "elbo_samples": 10}


def elbo_and_reconstruction(params, kind, x, arch, rng, n_samples=10, chunk=256):
    """Per-example ELBO, reconstruction and pixel error with n_samples draws z ~ q(z|x).

    - VAE: the ELBO E_q[log p(x|z)] - KL(q(z|x), p(z)), KL in closed form (eq. 2.1): an
      unbiased estimate of a lower bound of log p(x).
    - AVB / AVB + AC: the only ELBO at hand puts the adversary's T in place of
      log q(z|x) - log p(z) (eq. 3.5; with AC eq. 4.1 with T for the KL of the normalised
      codes).  It trusts T = T* and is NOT a bound; it is returned as 'elbo_from_T'.
    - BAVAE: E_q[log p(x|z) + D_phi(x, z)] with its encoder adversary (D* = log p(z) -
      log q(z|x), eq. 8): 'elbo_from_T' too, not a bound.
    - reconstruction: -E_q log p(x|z), nats per image; pixel_error: the fraction of pixels
      where the decoder's most likely value (logit > 0) differs from x, for z ~ q(z|x).
    Returns a dict of (N,) arrays."""
    bavae, kind = kind in BAVAE_KINDS, base_kind(kind)
    x = np.asarray(x, np.float32)
    out = {k: [] for k in ("elbo" if kind == "vae" else "elbo_from_T", "reconstruction", "pixel_error")}
    K = int(n_samples)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        B = xb.shape[0]
        xr = np.repeat(xb, K, axis=0)                                             # (B K, D)
        noise = M.sample_noise(rng, kind, arch, B * K)
        if kind == "vae":
            mean, log_var = M.gaussian_encoder(params["enc"], xb, arch.act)             # (B, dz)
            z = np.repeat(mean, K, 0) + np.exp(0.5 * np.repeat(log_var, K, 0)) * noise
        elif kind == "avb":
            z = M.implicit_encoder(params["enc"], xr, noise, arch.act)
        else:
            z, zm, zv = M.noise_basis_encoder(params["enc"], xr, noise, arch.act)
        logits = M.decoder_logits(params["dec"], z, arch.act)                          # (B K, D)
        ll = np.asarray(bernoulli_loglik(xr, logits), np.float64).reshape(B, K)
        if kind == "vae":
            elbo = ll.mean(1) - np.asarray(kl_diag_normal_std(mean, log_var), np.float64)
        elif bavae:
            D = np.asarray(adversary_D(params["adv"], xr, z, arch), np.float64).reshape(B, K)
            elbo = (ll + D).mean(1)                                                # eq. (8): D* = -T*
        elif kind == "avb":
            T = np.asarray(M.adversary(params["adv"], xr, z, arch.act, arch.adv_unary), np.float64).reshape(B, K)
            elbo = (ll - T).mean(1)                                                # eq. (3.5) with T
        else:
            zb = M.normalise(z, zm, zv, arch.ac_var_floor)
            T = M.adversary(params["adv"], xr, zb, arch.act, arch.adv_unary)
            elbo = np.asarray(ll.ravel() - T - M.log_r_alpha(zb, zv, arch.ac_var_floor) + log_std_normal(z),
                              np.float64).reshape(B, K).mean(1)
        out["elbo" if kind == "vae" else "elbo_from_T"].append(elbo)
        out["reconstruction"].append(-ll.mean(1))
        err = ((np.asarray(logits) > 0) != (xr > 0.5)).mean(1).reshape(B, K).mean(1)
        out["pixel_error"].append(err)
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate_mnist(params, kind, x, arch, rng, ais_steps=1000, ais_chains=5, leapfrog=10,
                   elbo_samples=10, quiet=True, device="cpu"):
    """AIS log-likelihood, ELBO (exact for the VAE, T-based for AVB: see
    `elbo_and_reconstruction`) and reconstruction on the rows of x.  -> dict of floats."""
    t0 = time.perf_counter()
    er = elbo_and_reconstruction(params, kind, x, arch, rng, elbo_samples)
    t_elbo = time.perf_counter() - t0
    xp = device_module(device)                          # AIS runs on the device; the rest on the host
    a = ais_log_likelihood(tree_to_device(params, xp), base_kind(kind), x, arch, rng, n_steps=ais_steps,
                           n_chains=ais_chains,
                           n_leapfrog=leapfrog, quiet=quiet, desc=f"AIS {kind}")
    ll = a["log_likelihood"]
    n = x.shape[0]
    res = {"ais_log_likelihood": float(ll.mean()),
           "ais_log_likelihood_sem": float(ll.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
           "ais_ess_mean": float(a["ess"].mean()), "ais_ess_min": float(a["ess"].min()),
           "ais_acceptance": float(a["acceptance"].mean()),
           "ais_init": a["settings"]["init"],
           "ais_per_example": [round(float(v), 4) for v in ll]}      # for paired differences
    if kind == "vae":
        res.update(elbo=float(er["elbo"].mean()), elbo_is_bound=True,
                   elbo_note="exact KL, Monte Carlo E_q log p(x|z): a lower bound of log p(x)")
    else:
        res.update(elbo=None, elbo_from_T=float(er["elbo_from_T"].mean()), elbo_is_bound=False,
                   elbo_note="no tractable bound for an implicit q(z|x); elbo_from_T puts the "
                             + ("encoder adversary's D in place of log p - log q" if kind in BAVAE_KINDS
                                else "adversary's T in place of log q - log p") + " and is NOT a bound")
    res.update(reconstruction=float(er["reconstruction"].mean()),
               pixel_error=float(er["pixel_error"].mean()),
               _seconds={"ais": a["seconds"], "elbo_and_reconstruction": t_elbo})
    return res


# ------------------------------------------------------------------ the experiment
def reproduce_mnist(data=None, split="valid", latent=8, quick=False, out_dir="runs/mnist",
                    kinds=M.KINDS, ais_examples=None, ais_steps=None, ais_chains=None, leapfrog=None,
                    seed=0, quiet=False, json_path=None, figure=True, device="cpu", step="auto", pretrained=None):
    """Table 2 on binarized MNIST: train (or resume) each model of `kinds` (MNIST_KINDS) on
    DATA/train.npz and evaluate it on the first `ais_examples` rows of DATA/<split>.npz (.amat
    also accepted; see data.dataset_file).  Returns the JSON-able results; writes them to
    json_path (if given) and the figures (samples and reconstructions; the BAVAE's training
    logs) into out_dir.  A JSON written before with the same settings keeps its other models'
    rows (and they are drawn too); one with other settings is moved aside, not overwritten."""
    folder = data_dir(data)
    train_file, eval_file = dataset_file(folder, "train"), dataset_file(folder, split)
    ev = eval_settings(quick)
    for k, v in (("ais_examples", ais_examples), ("ais_steps", ais_steps), ("ais_chains", ais_chains),
                 ("leapfrog", leapfrog)):
        if v is not None:
            if int(v) < 1:
                raise ValueError(f"{k} must be a positive integer, got {v}")
            ev[k] = int(v)
    for k in kinds:
        check_mnist_kind(k)
    check_fits(M.memory_estimate(mnist_arch(latent, quick), mnist_configs(quick)["avb"].batch),
               f"a model with --latent {latent}", device_module(device))
    # load both files before any training, so a bad file stops the run at once (IDX images are
    # binarized at random: with draws of their own from the seed)
    x_eval = load_binary(eval_file, np.random.default_rng([seed, 1]))[:ev["ais_examples"]]
    x_train = load_binary(train_file, np.random.default_rng([seed, 0]))
    arch, cfgs = mnist_arch(latent, quick), {k: mnist_config(k, quick, step) for k in kinds}
    given = {}
    for kind in kinds if pretrained else ():   # every file checked before any evaluation
        if kind in BAVAE_KINDS:
            raise ValueError(f"--pretrained holds VAE, AVB and AVB + AC models only, not {kind!r}")
        given[kind] = load_pretrained(pretrained_path(pretrained, kind, latent), kind, arch)
        cfgs[kind] = TrainConfig(**dict(cfgs[kind].__dict__, iters=given[kind][1]["trained_iterations"]))
    res = {"settings": {"data": os.path.abspath(folder), "train_file": train_file, "eval_file": eval_file,
                        "split": split, "latent": latent, "quick": quick, "seed": seed, "device": device,
                        "step": step, **({"pretrained": os.path.abspath(pretrained)} if pretrained else {}),
                        "n_train": int(x_train.shape[0]), "n_eval": int(x_eval.shape[0]),
                        "arch": arch.to_dict(), "iterations": {k: cfgs[k].iters for k in kinds}, **ev},
           "paper_table2_8d": PAPER_TABLE2_8D}
    done, moved = _previous_results(json_path, res["settings"])
    if moved:                              # said even with quiet: it is about the user's file
        print(f"{json_path} held results for other settings: moved to {moved}", file=sys.stderr, flush=True)
    models, histories = {}, {}
    for k in MNIST_KINDS:                  # other models' results in the same JSON are kept
        if k in done and k not in kinds:
            res[k] = done[k]
            res["settings"]["iterations"][k] = done[k]["trained_iterations"]
            if figure and os.path.exists(done[k].get("checkpoint") or ""):
                models[k], histories[k] = load_mnist_model(k, done[k]["checkpoint"], arch)
    done = {k: r for k, r in done.items()   # reuse an evaluation only of the checkpoint used now
            if r.get("checkpoint") == (pretrained_path(pretrained, k, latent) if k in given
                                       else checkpoint_path(out_dir, k, latent, quick, seed))}
    for kind in kinds:
        if kind in given:                  # a pretrained model: nothing to train
            params = given[kind][0]
            info = {"history": [], "wall_seconds": 0.0}
        else:
            params, info = train_mnist(kind, x_train, out_dir, latent, quick, seed, quiet, device, step)
        params = tree_to_host(params)      # evaluation and figures on the host (AIS moves it back)
        models[kind], histories[kind] = params, info["history"]
        if kind in done:                   # evaluated before with these settings: reuse
            res[kind] = done[kind]
            if not quiet:
                print(f"{kind}: evaluation found in {json_path}; reused", flush=True)
            continue
        if not quiet:
            print(f"{kind}: trained ({cfgs[kind].iters} iterations, {info['wall_seconds']:.0f} s); evaluating",
                  flush=True)
        r = evaluate_mnist(params, kind, x_eval, arch, np.random.default_rng(10_000 + seed),
                           ev["ais_steps"], ev["ais_chains"], ev["leapfrog"], ev["elbo_samples"], quiet, device)
        secs = r.pop("_seconds")
        r["wall_seconds"] = {"train": info["wall_seconds"], **secs}
        r["checkpoint"] = (pretrained_path(pretrained, kind, latent) if kind in given
                           else checkpoint_path(out_dir, kind, latent, quick, seed))
        r["trained_iterations"] = cfgs[kind].iters
        res[kind] = r
        if json_path:                      # partial results survive an interrupted evaluation
            _write_keeping_others(json_path, res, kinds, device)
    for k in kinds:                        # where each BAVAE's game stands (cheap, always recomputed)
        if k in BAVAE_KINDS:
            res[k]["game_diagnostics"] = game_diagnostics(
                models[k], x_train, arch, np.random.default_rng(20_000 + seed), cfgs[k].negatives,
                reconstruction=reconstruction_of(k))
    order = [k for k in MNIST_KINDS if k in models]          # the table's rows, in the table's order
    if figure and any(k in BAVAE_KINDS for k in order):
        res["figure_bavae_training"] = bavae_training_figure(
            {k: histories[k] for k in order if k in BAVAE_KINDS},
            os.path.join(out_dir, f"bavae_training{run_suffix(latent, quick, seed)}.png"))
    if figure and "avb_ac" in models:       # Figure 7: samples of AVB + AC beside training images
        res["figure7"] = figure7(models["avb_ac"], x_train, arch,
                                 os.path.join(out_dir, f"figure7{run_suffix(latent, quick, seed)}.png"), seed=seed,
                                 title=f"AVB + AC ({latent}-d latent, MLP decoder)")
    if figure:
        res["figure"] = mnist_figure({k: models[k] for k in order}, x_eval, arch,
                                     os.path.join(out_dir, f"mnist{run_suffix(latent, quick, seed)}.png"),
                                     seed=seed, stats={k: f"AIS log p(x) = {res[k]['ais_log_likelihood']:.1f}"
                                                       for k in order})
    if json_path:
        _write_keeping_others(json_path, res, kinds, device)
    return res


def _write_keeping_others(json_path, res, kinds, device):
    """Write res to json_path, adding the rows of other models that a run beside this one
    (same settings, other --models) wrote there meanwhile, so that neither loses the other's."""
    now, _ = _previous_results(json_path, res["settings"])
    for k, r in now.items():
        if k not in kinds and k not in res:
            res[k] = r
    write_json(json_path, res, device=device)


def _previous_results(json_path, settings):
    """(rows, moved): the per-model results already in json_path from a run with the same
    settings (the model list aside) and models trained for as many iterations, so that an
    interrupted or split evaluation resumes and a run of other models adds to the table.
    A JSON with model rows for other settings is renamed to <name>.previous-N.json (moved:
    its new path), so that no evaluation is lost."""
    if not json_path or not os.path.exists(json_path):
        return {}, None
    try:
        with open(json_path) as fh:
            old = json.load(fh)
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict) or not isinstance(old.get("settings", {}), dict):
        raise ValueError(f"--json {json_path!r} holds JSON that is not a results file of reproduce mnist (a "
                         f"{type(old).__name__}); choose another file, or remove it")
    rows = [k for k in MNIST_KINDS if isinstance(old.get(k), dict)]
    same = {k: v for k, v in settings.items() if k not in ("iterations", "step")}      # both steps: one result
    prev = {k: v for k, v in old.get("settings", {}).items() if k not in ("iterations", "step")}
    if json.loads(json.dumps(same)) != prev:
        if not rows:
            return {}, None
        stem = os.path.splitext(json_path)[0]
        n = 1
        while os.path.exists(f"{stem}.previous-{n}.json"):
            n += 1
        os.replace(json_path, f"{stem}.previous-{n}.json")
        return {}, f"{stem}.previous-{n}.json"
    iters = {k: settings["iterations"].get(k) or mnist_config(k, settings["quick"]).iters for k in MNIST_KINDS}
    return {k: old[k] for k in rows if old[k].get("trained_iterations") == iters[k]}, None


def load_mnist_model(kind, path, arch):
    """(params, training history) of a model from its checkpoint."""
    if check_mnist_kind(kind) in BAVAE_KINDS:
        params = load_bavae(path, arch)
    else:
        params = load_params(path, kind, arch)
    return params, read_meta(path)["history"]


PRETRAINED = "avb-minimal pretrained Table 2 model"


def pretrained_path(folder, kind, latent=8):
    """FOLDER/<kind>_z<latent>.npz: a trained model's parameters without optimiser state."""
    return os.path.join(folder, f"{kind}_z{latent}.npz")


def export_pretrained(params, kind, arch, path, trained_iterations, seed=0):
    """Write a trained model's parameters (float32, no optimiser state: a few MB) for others
    to evaluate without training (`load_pretrained`, `reproduce mnist --pretrained`)."""
    save_checkpoint(path, {"params": tree_to_host(params)},
                    {"format": PRETRAINED, "kind": kind, "arch": arch.to_dict(),
                     "trained_iterations": int(trained_iterations), "seed": int(seed)})
    return path


def load_pretrained(path, kind, arch):
    """The parameters in a file of `export_pretrained`, checked to be a `kind` model of `arch`:
    anything else stops with one line naming the file and the mismatch.  -> (params, meta)."""
    meta = read_meta(path)
    if meta.get("format") != PRETRAINED:
        raise ValueError(f"{path}: not a pretrained Table 2 model (written by export_pretrained)")
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: holds a {meta.get('kind')!r} model, not {kind!r}")
    try:
        changed = arch.differences(meta.get("arch", {}))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    diff = [f"{k} {theirs!r} (this run needs {v!r})" for k, theirs, v in changed]
    if diff:
        what = "latent size" if "z_dim" in [k for k, _, _ in changed] else "architecture"
        raise ValueError(f"{path}: a model of another {what}: {'; '.join(diff)}")
    template = M.init_params(np.random.default_rng(0), kind, arch)
    trees, _ = load_checkpoint(path, {"params": template})
    return trees["params"], meta


PAPER_TABLE2_8D = {"vae": -90.9, "avb": -91.2, "avb_ac": -89.6}   # conv nets, AIS (paper, Table 2)
PAPER_TABLE2 = {8: PAPER_TABLE2_8D, 32: {"vae": -81.9, "avb_ac": -80.2}}   # the same, per latent size


def paired_difference(a, b):
    """(mean, standard error) over images of a - b: two models' per-image AIS values on the
    same images (the spread between images, far larger than between models, cancels).
    Lists of lists (one per seed) are averaged over seeds per image first."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = (a.mean(0) if a.ndim == 2 else a), (b.mean(0) if b.ndim == 2 else b)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs values of the same images, got {a.shape} and {b.shape}")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def format_paired_across(results):
    """Paired differences between the models of several results files ({name: reproduce_mnist's
    result}) over the images they share: the first n rows of the same evaluation file, n the
    smallest of their counts.  Each model against the VAE (the first file holding each)."""
    rows = {}
    for name, res in results.items():
        for k in MNIST_KINDS:
            if "ais_per_example" in res.get(k, {}):
                rows.setdefault(k, (name, res))
    if "vae" not in rows or len({res["settings"]["eval_file"] for _, res in rows.values()}) != 1:
        return "(no VAE row, or the files evaluate different images: no paired differences across them)"
    vname, vres = rows["vae"]
    lines = []
    for k, (name, res) in rows.items():
        if k == "vae" or name == vname:
            continue
        n = min(len(res[k]["ais_per_example"]), len(vres["vae"]["ais_per_example"]))
        d, se = paired_difference(res[k]["ais_per_example"][:n], vres["vae"]["ais_per_example"][:n])
        lines.append(f"{k} ({name}) - vae ({vname}), paired over the first {n} images: {d:+.2f} +- {se:.2f} nats")
    return "\n".join(lines)


def mnist_over_seeds(per_seed):
    """{seed: reproduce_mnist's result} -> per model the mean and std over seeds (std None with
    one seed) of the AIS log-likelihood, the ELBO (VAE), 'elbo_from_T' and the reconstruction."""
    seeds = list(per_seed)
    out = {"seeds": seeds}
    for k in MNIST_KINDS:
        rows = [per_seed[s][k] for s in seeds if k in per_seed[s]]
        if not rows:
            continue
        out[k] = {}
        for key in ("ais_log_likelihood", "elbo", "elbo_from_T", "reconstruction"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                out[k][key] = float(np.mean(vals))
                out[k][key + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
                out[k][key + "_per_seed"] = vals
    return out


def format_mnist_over_seeds(summary):
    """The mean +- std over seeds of each model's AIS log-likelihood, as text."""
    lines = [f"over seeds {', '.join(map(str, summary['seeds']))}: AIS log p(x), mean"
             + (" +- std" if len(summary["seeds"]) > 1 else "")]
    for k in MNIST_KINDS:
        if k in summary:
            r = summary[k]
            std = "" if r["ais_log_likelihood_std"] is None else f" +- {r['ais_log_likelihood_std']:.2f}"
            lines.append(f"  {k:11s} {r['ais_log_likelihood']:9.2f}{std}")
    return "\n".join(lines)


def format_mnist(res):
    """The Table 2 rows as text."""
    s = res["settings"]
    seed = f"seed {s['seed']}, " if "seed" in s else ""
    lines = [f"binarized MNIST, {s['latent']}-d latent, {seed}{s['n_eval']} examples of {s['eval_file']}; "
             f"AIS {s['ais_steps']} steps x {s['ais_chains']} chains x {s['leapfrog']} leapfrog",
             f"{'model':11s} {'AIS log p(x)':>14s} {'ELBO':>9s} {'ELBO from T*':>13s} {'recon':>8s} "
             f"{'px err':>7s} {'ESS':>5s} {'train s':>8s} {'AIS s':>7s}  paper (conv)"]
    for k in MNIST_KINDS:
        if k not in res:
            continue
        r = res[k]
        elbo = f"{r['elbo']:9.2f}" if r["elbo"] is not None else f"{'-':>9s}"
        elbo_t = f"{r['elbo_from_T']:13.2f}" if r.get("elbo_from_T") is not None else f"{'-':>13s}"
        lines.append(f"{k:11s} {r['ais_log_likelihood']:9.2f} +-{r['ais_log_likelihood_sem'] or 0:4.2f} {elbo} "
                     f"{elbo_t} {r['reconstruction']:8.2f} {r['pixel_error']:7.4f} {r['ais_ess_mean']:5.2f} "
                     f"{r['wall_seconds']['train']:8.0f} {r['wall_seconds']['ais']:7.0f}  "
                     f"{PAPER_TABLE2.get(s['latent'], {}).get(k, '')}")
    for k in MNIST_KINDS:                   # the comparison that matters: over the same images
        if k != "vae" and "ais_per_example" in res.get(k, {}) and "ais_per_example" in res.get("vae", {}):
            d, se = paired_difference(res[k]["ais_per_example"], res["vae"]["ais_per_example"])
            lines.append(f"{k} - vae, paired over the same {len(res[k]['ais_per_example'])} images: "
                         f"{d:+.2f} +- {se:.2f} nats (s.e.; {abs(d) / se:.1f} s.e. from zero)")
    lines.append("* ELBO from T: the adversary's estimate (BAVAE: its encoder adversary's D), not a bound: "
                 "an implicit q(z|x) has no tractable ELBO.")
    if any(k in res for k in BAVAE_KINDS):
        lines.append("  bavae: eq. (19) of the Biadversarial VAE (Fickinger); bavae_exact: eq. (6) + the exact "
                     "reconstruction term "
                     "(ablation); both with AVB's architecture and settings.")
    for k in BAVAE_KINDS:
        d = res.get(k, {}).get("game_diagnostics")
        if d:
            lines.append(f"  {k} at the end (median of {d['n_batches']} training batches): decoder adversary D = "
                         f"{d['D_data_median']:.4g} on data pairs, {d['D_model_median']:.4g} on model pairs "
                         f"(max {d['D_model_max']:.4g}); w = exp(D(x', z) - 1): mean {d['w_mean']:.3g}, "
                         f"ESS {d['w_ess']:.2f} of {d['batch']}; |grad| decoder {d['grad_norm_decoder']:.3g}, "
                         f"encoder {d['grad_norm_encoder']:.3g}")
    return "\n".join(lines)
