"""The training loops: VAE (eq. 2.4), AVB (Algorithm 1), AVB + AC (Algorithm 2).

One step of Algorithm 1 computes all three gradients (g_theta, g_phi, g_psi) at
the same parameters from one forward pass (see `objectives.avb_losses`) and
updates simultaneously; `adv_steps = k > 1` adds k - 1 adversary-only steps on
fresh batches.  Runs checkpoint atomically and resume from their checkpoint.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from autograd import grad

import avb_minimal

from . import models as M
from . import objectives as O
from .backend import DeviceRNG, device_module, tree_to_device, tree_to_host
from .checkpoint import OTHER_RUN, check_meta, hold, load_checkpoint, read_meta, save_checkpoint
from .data import check_binary_data, sample_batch
from .fast.graph import GraphAVBStep
from .fast.step import FastAVBStep, supports
from .optim import Adam, adam_init, adam_step
from .progress import Progress
from .trees import check_finite_tree

STEPS = ("auto", "readable", "fast", "graph")
# settings a resumed run may change: what is logged and saved, and which of two equal steps runs
BOOKKEEPING = ("log_every", "checkpoint_every", "step")
ADVERSARY_SETTINGS = ("lr_adv", "adv_steps", "negatives")     # what a VAE's training does not read
# what a checkpoint's metadata must hold: key -> (types, least value)
RUN_META = {"kind": ((str,), None), "arch": ((dict,), None), "config": ((dict,), None),
            "iteration": ((int,), 0), "rng_state": ((dict,), None), "history": ((list,), None),
            "wall_seconds": ((int, float), 0), "opt_t": ((dict,), None)}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the last good parameters were kept."""


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 10000
    batch: int = 512
    lr_gen: float = 3e-4          # encoder / decoder (theta, phi)
    lr_adv: float = 1e-3          # adversary (psi)
    b1: float = 0.5
    b2: float = 0.999
    adv_steps: int = 1            # k: adversary steps per generator step
    negatives: str = "pairs"      # 'pairs' (Algorithm 1 as written) or 'all_pairs'
    decay_from: float = 1.0       # fraction of iters after which the lrs decay linearly ...
    lr_final: float = 0.1         # ... to this fraction of their value at the last iteration
    log_every: int = 100
    checkpoint_every: int = 1000
    step: str = "auto"            # 'readable' (autograd), 'fast' (fast/step.py), 'graph' (fast/graph.py), 'auto'

    def __post_init__(self):
        for name in ("iters", "batch", "adv_steps", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr_gen", "lr_adv", "lr_final", "b1", "b2", "decay_from"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{name} must be a number, got {v!r}")
        for name in ("lr_gen", "lr_adv", "lr_final"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"b1 and b2 must be in [0, 1), got {self.b1}, {self.b2}")
        if not 0 <= self.decay_from <= 1:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")
        O.check_negatives(self.negatives)
        if self.step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {self.step!r}")

    def lr_scale(self, it: int) -> float:
        """1 until decay_from * iters, then linear down to lr_final at the end."""
        start = self.decay_from * self.iters
        if it < start or self.iters <= start:
            return 1.0
        frac = (it - start) / (self.iters - start)
        return 1.0 - frac * (1.0 - self.lr_final)


def step_path(kind: str, arch: M.Arch, cfg: TrainConfig, device: str = "cpu") -> str:
    """Which step runs: 'readable' (autograd), 'fast' (`fast/step.py`, the same numbers by
    hand) or 'graph' (`fast/graph.py`, the fast step on the project's own kernels, captured
    once as a CUDA graph on a GPU).  cfg.step 'auto' takes the fastest that applies: on the
    CPU the fast step, on the GPU the captured one (the fast one for sec. 5.2's adv_unary,
    which the captured step does not implement), the readable one for anything else."""
    why = supports(kind, arch)
    if cfg.step in ("fast", "graph") and why:
        raise ValueError(f"step={cfg.step!r} does not support {why}; use step='readable' or 'auto'")
    if cfg.step == "graph" and arch.adv_unary:
        raise ValueError("step='graph' does not support sec. 5.2's r(x) + s(z) (adv_unary); "
                         "use step='fast' or 'auto'")
    if cfg.step != "auto":
        return cfg.step
    if why:
        return "readable"
    return "graph" if device == "gpu" and not arch.adv_unary else "fast"


def make_step(kind: str, arch: M.Arch, cfg: TrainConfig, device: str = "cpu") -> Callable:
    """Return step(params, states, x, noise, z_neg, scale) -> (params, states, aux):
    one simultaneous update of Algorithm 1/2 (or one VAE step) for arrays on `device`.
    The readable step is below; `step_path` picks the hand-written one where it applies
    (the same numbers), captured as a CUDA graph on the GPU."""
    M.check_kind(kind)
    path = step_path(kind, arch, cfg, device)
    if path == "graph":
        return GraphAVBStep(kind, arch, cfg)
    if path == "fast":
        return FastAVBStep(kind, arch, cfg)
    gen_opt = Adam(cfg.lr_gen, cfg.b1, cfg.b2)
    adv_opt = Adam(cfg.lr_adv, cfg.b1, cfg.b2)

    if kind == "vae":
        loss_grad = grad(O.vae_loss)

        def step(params, states, x, noise, z_neg, scale):
            g = loss_grad(params, x, noise, arch)
            params, states["gen"] = adam_step(gen_opt, params, g, states["gen"], cfg.lr_gen * scale)
            return params, states, {}
        return step

    def total(params, x, noise, z_neg, aux):
        gen, adv = O.avb_losses(params, kind, x, noise, z_neg, arch, cfg.negatives, aux)
        return gen + adv

    total_grad = grad(total)

    def step(params, states, x, noise, z_neg, scale):
        aux = {}
        g = total_grad(params, x, noise, z_neg, aux)
        gen_p = {"enc": params["enc"], "dec": params["dec"]}
        gen_g = {"enc": g["enc"], "dec": g["dec"]}
        gen_p, states["gen"] = adam_step(gen_opt, gen_p, gen_g, states["gen"], cfg.lr_gen * scale)
        adv_p, states["adv"] = adam_step(adv_opt, params["adv"], g["adv"], states["adv"], cfg.lr_adv * scale)
        return {"enc": gen_p["enc"], "dec": gen_p["dec"], "adv": adv_p}, states, aux
    return step


def make_adversary_step(kind: str, arch: M.Arch, cfg: TrainConfig) -> Callable:
    adv_opt = Adam(cfg.lr_adv, cfg.b1, cfg.b2)

    def loss(adv, params, x, noise, z_neg):
        return O.adversary_only_loss({"enc": params["enc"], "adv": adv}, kind, x, noise, z_neg,
                                     arch, cfg.negatives)
    loss_grad = grad(loss)

    def step(params, states, x, noise, z_neg, scale):
        g = loss_grad(params["adv"], params, x, noise, z_neg)
        adv, states["adv"] = adam_step(adv_opt, params["adv"], g, states["adv"], cfg.lr_adv * scale)
        return dict(params, adv=adv), states
    return step


def init_states(kind: str, params: dict) -> dict:
    if kind == "vae":
        return {"gen": adam_init(params)}
    return {"gen": adam_init({"enc": params["enc"], "dec": params["dec"]}),
            "adv": adam_init(params["adv"])}


def _state_trees(states):
    return {f"opt_{k}_{part}": s[part] for k, s in states.items() for part in ("m", "v")}


def save_run(path: str, kind: str, arch: M.Arch, cfg: TrainConfig, params: dict, states: dict, it: int,
             rng, history: list, wall: float, seed: int | None = None, **extra: object) -> None:
    """The checkpoint: parameters, optimiser moments (copied to the host, so that a checkpoint
    is the same file whichever device wrote it), and meta: the run's kind, architecture,
    configuration, seed and the package version, so that a resume can check that it
    continues the run it was asked for (extra: more meta keys)."""
    device = "cpu" if isinstance(rng, np.random.Generator) or rng.xp is np else "gpu"
    rng_state = rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng.state
    meta = {"kind": kind, **extra, "arch": arch.to_dict(), "config": asdict(cfg), "seed": seed,
            "version": avb_minimal.__version__, "iteration": it,
            "rng_state": rng_state, "history": history, "wall_seconds": wall, "device": device,
            "opt_t": {k: s["t"] for k, s in states.items()}}
    save_checkpoint(path, tree_to_host(dict(params=params, **_state_trees(states))), meta)


def run_training(one_step: Callable, save: Callable | None, params: dict, states: dict, cfg: TrainConfig,
                 start: int = 0, history: list | None = None, wall0: float = 0.0, checkpoint: str | None = None,
                 label: str = "", quiet: bool = True, eval_fn: Callable | None = None, eval_every: int = 0,
                 progress_keys: tuple = ()) -> tuple:
    """The outer loop of Algorithm 1 that `train` and `bavae.train_bavae` share.

    one_step(params, states, it) -> (new_params, new_states, aux floats) draws the batch and
    noise and takes one step; it gets a copy of the `states` dict, so that the readable step
    (which returns new moments) leaves the last good state as it was.  save(params, states,
    it, history, wall) writes the checkpoint (every cfg.checkpoint_every iterations and at
    the end, if `checkpoint` is given).  A loss (aux) that is NaN/inf, or weights that are,
    stop the run with TrainingDiverged: the last good parameters are saved with their
    optimiser state, or, if the step updated them in place (the fast path), the last
    checkpoint is left as it was.  Returns (params, info) as `train`."""
    history = [] if history is None else history
    prog = Progress(cfg.iters, label, quiet)
    t0 = time.perf_counter() - wall0
    eval_s = history[-1].get("eval_seconds", 0.0) if history else 0.0   # evaluation time so far
    last = {}
    for it in range(start, cfg.iters):
        new_params, new_states, aux = one_step(params, dict(states), it)
        bad = [k for k, v in aux.items() if not math.isfinite(v)]
        saving = checkpoint is not None and ((it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iters)
        if not bad and (it % cfg.log_every == 0 or saving):
            bad = [b for b in [check_finite_tree(new_params)] if b]
        if bad:
            msg = f"{label}: non-finite values ({', '.join(bad)}) at iteration {it}"
            if checkpoint is not None and check_finite_tree(params):
                # the fast step updates in place: no good parameters of this iteration to save
                msg += (f"; {checkpoint} keeps the last checkpoint written before" if os.path.exists(checkpoint)
                        else "; no checkpoint had been written yet")
            elif checkpoint is not None:
                save(params, states, it, history, time.perf_counter() - t0)
                msg += f"; the last good parameters are in {checkpoint}"
            raise TrainingDiverged(msg)
        params, states, last = new_params, new_states, aux
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            wall = time.perf_counter() - t0
            entry = {"iteration": done, "wall_seconds": wall, "train_seconds": wall - eval_s, **aux}
            if eval_fn is not None and eval_every and (done % eval_every == 0 or done == cfg.iters):
                te = time.perf_counter()
                entry.update(eval_fn(params))
                eval_s += time.perf_counter() - te
            entry["eval_seconds"] = eval_s     # train_seconds = wall_seconds - evaluation before it
            history.append(entry)
        if checkpoint is not None and (done % cfg.checkpoint_every == 0 or done == cfg.iters):
            save(params, states, done, history, time.perf_counter() - t0)
        prog.update(done, **{k: v for k, v in last.items() if k in progress_keys})
    return params, {"history": history, "wall_seconds": time.perf_counter() - t0,
                    "iterations": cfg.iters}


def train(kind: str, data: np.ndarray, arch: M.Arch, cfg: TrainConfig, seed: int = 0,
          checkpoint: str | None = None, quiet: bool = True, eval_fn: Callable | None = None, eval_every: int = 0,
          desc: str | None = None, device: str = "cpu", allow_config_change: bool = False) -> tuple:
    """Train a model of `kind` on binary `data` (N, D).

    checkpoint: path of an .npz; if it exists the run resumes from it (after checking that
    it holds this run: `resume_run`), and it is rewritten every cfg.checkpoint_every
    iterations and at the end.  The run holds the checkpoint (`checkpoint.hold`): a second
    run asking for it meanwhile is refused.
    eval_fn(params) -> dict of floats, called every `eval_every` iterations (0: never).
    device: 'cpu' or 'gpu'.  On the GPU the parameters, Adam's moments, the data and every
    batch and noise draw live on the device for the whole run (the noise from the device's
    own generator, `backend.DeviceRNG`); only the scalars of the progress line and the
    checkpoints come back to the host.
    Returns (params, info) with info = {'history', 'wall_seconds', 'iterations'}; params
    on the device the run used.
    Raises TrainingDiverged (after saving the last good parameters) if a loss turns NaN/inf.
    """
    if checkpoint is None:
        return _train(kind, data, arch, cfg, seed, None, quiet, eval_fn, eval_every, desc, device,
                      allow_config_change)
    with hold(checkpoint):
        return _train(kind, data, arch, cfg, seed, checkpoint, quiet, eval_fn, eval_every, desc, device,
                      allow_config_change)


def _train(kind, data, arch, cfg, seed, checkpoint, quiet, eval_fn, eval_every, desc, device, allow_change):
    M.check_kind(kind)
    xp = device_module(device)
    data = check_binary_data(data, "data", arch.x_dim)
    rng = np.random.default_rng(seed)
    params = M.init_params(rng, kind, arch)              # the same numbers on either device
    states = init_states(kind, params)
    start, history, wall0 = 0, [], 0.0
    draws = 3 * (cfg.adv_steps if kind != "vae" else 1)  # noise draws per iteration
    if checkpoint is not None and os.path.exists(checkpoint):
        params, states, start, history, wall0, rng = resume_run(checkpoint, kind, arch, params, states, device,
                                                                seed, draws, cfg, allow_change)
    elif xp is not np:
        rng = DeviceRNG(xp, seed)
    params, states, data = tree_to_device(params, xp), tree_to_device(states, xp), xp.asarray(data)
    step = make_step(kind, arch, cfg, device)
    adv_step = make_adversary_step(kind, arch, cfg) if kind != "vae" and cfg.adv_steps > 1 else None
    B = cfg.batch

    def one_step(params, states, it):
        scale = cfg.lr_scale(it)
        x = sample_batch(rng, data, B)                                     # (B, D)
        noise = M.sample_noise(rng, kind, arch, B)
        z_neg = rng.standard_normal((B, arch.z_dim)).astype(np.float32)    # z ~ p(z) or eta ~ N(0, I)
        params, states, aux = step(params, states, x, noise, z_neg, scale)
        for _ in range(cfg.adv_steps - 1 if adv_step is not None else 0):
            x2 = sample_batch(rng, data, B)
            n2 = M.sample_noise(rng, kind, arch, B)
            zn2 = rng.standard_normal((B, arch.z_dim)).astype(np.float32)
            params, states = adv_step(params, states, x2, n2, zn2, scale)
        return params, states, aux

    def save(params, states, it, history, wall):
        save_run(checkpoint, kind, arch, cfg, params, states, it, rng, history, wall, seed)

    return run_training(one_step, save, params, states, cfg, start, history, wall0, checkpoint,
                        desc or kind, quiet, eval_fn, eval_every, ("gen_objective", "adv_loss"))


def resume_run(path: str, kind: str, arch: M.Arch, params: dict, states: dict, device: str = "cpu",
               seed: int = 0, draws: int = 3, cfg: TrainConfig | None = None, allow_change: bool = False) -> tuple:
    """(params, states, iteration, history, wall seconds, rng) from a checkpoint, on the host.

    The checkpoint must hold this run: its metadata is validated, and its kind, architecture,
    seed and configuration (`cfg`, if given) must be the asked ones.  A larger cfg.iters
    extends the run (a line on stderr says so); fewer iterations than it has trained, or any
    other difference, stops with a ValueError listing every difference (allow_change=True:
    continue with the asked configuration, saying so on stderr; the settings of
    BOOKKEEPING may always change).
    The noise generator continues as it was on the same device.  Across devices the
    parameters and Adam's moments carry over and the noise continues from the other
    device's generator, at the draw an uninterrupted run there would have reached (a
    line on stderr says so): the run goes on, though not bit for bit as it would have."""
    meta = check_meta(path, read_meta(path), RUN_META)
    if meta["kind"] != kind:
        raise ValueError(f"checkpoint {path!r} holds a {meta.get('kind')!r} model, not {kind!r}" + OTHER_RUN)
    try:
        changed = arch.differences(meta["arch"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path!r}: {e}" + OTHER_RUN) from None
    if changed:
        diff = [f"{k}: checkpoint {theirs!r}, asked {v!r}" for k, theirs, v in changed]
        raise ValueError(f"checkpoint {path!r} was written for another architecture ({'; '.join(diff)})"
                         + OTHER_RUN)
    it = meta["iteration"]
    if cfg is not None:
        compare_run(path, meta, cfg, seed, allow_change)
    if set(meta["opt_t"]) != set(states) or not all(isinstance(t, int) and t >= 0 for t in meta["opt_t"].values()):
        raise ValueError(f"checkpoint {path!r} has unreadable metadata: 'opt_t' should map {sorted(states)} to "
                         f"step counts, found {meta['opt_t']!r}" + OTHER_RUN)
    trees, meta = load_checkpoint(path, dict(params=params, **_state_trees(states)))
    for k, s in states.items():
        s["m"], s["v"], s["t"] = trees[f"opt_{k}_m"], trees[f"opt_{k}_v"], meta["opt_t"][k]
    written_on, state = meta.get("device", "cpu"), meta["rng_state"]
    try:
        if written_on == device == "cpu":
            rng = np.random.default_rng()
            rng.bit_generator.state = state
        elif written_on == device:
            rng = DeviceRNG(device_module(device), int(state["device_seed"]), int(state["counter"]))
        else:
            rng = (DeviceRNG(np, int(state["device_seed"]), int(state["counter"])) if written_on == "gpu"
                   else DeviceRNG(device_module(device), seed, it * draws))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path!r} has unreadable metadata: its 'rng_state' cannot be restored "
                         f"({type(e).__name__}: {e})" + OTHER_RUN) from None
    if written_on != device:
        print(f"{path}: written on {written_on}, resumed on {device}: the parameters and the optimiser state "
              f"carry over; the noise continues from the {device}'s generator (not bit for bit as on "
              f"{written_on})", file=sys.stderr, flush=True)
    return trees["params"], states, it, meta["history"], meta["wall_seconds"], rng


def compare_run(path: str, meta: dict, cfg: TrainConfig, seed: int, allow_change: bool = False) -> None:
    """Stop a resume whose asked seed or configuration is not the checkpoint's (see `resume_run`)."""
    stored, done, asked = meta["config"], meta["iteration"], asdict(cfg)
    if done > stored.get("iters", done):
        raise ValueError(f"checkpoint {path!r} has unreadable metadata: iteration {done} is past its "
                         f"configuration's iters {stored.get('iters')!r}" + OTHER_RUN)
    if cfg.iters < done:
        raise ValueError(f"checkpoint {path!r} has already trained {done} iterations; --iters {cfg.iters} asks "
                         "for fewer (resuming cannot undo them): write a shorter run to a new checkpoint")
    diffs = ([f"seed: checkpoint {meta['seed']!r}, asked {seed!r}"]
             if meta.get("seed") is not None and meta["seed"] != seed else [])
    unused = ADVERSARY_SETTINGS if meta.get("kind") == "vae" else ()        # a VAE has no adversary
    diffs += [f"{k}: checkpoint {stored.get(k, '(none)')!r}, asked {asked.get(k, '(none)')!r}"
              for k in dict.fromkeys(list(asked) + list(stored))
              if k not in BOOKKEEPING + unused + ("iters",) and stored.get(k, "(none)") != asked.get(k, "(none)")]
    if diffs and not allow_change:
        raise ValueError(f"checkpoint {path!r} holds a run with other settings ({'; '.join(diffs)}): resume with "
                         "the checkpoint's settings, write this run elsewhere (--checkpoint / --out), or pass "
                         "--allow-config-change to continue it with the new ones")
    notes = [f"continuing with changed settings ({'; '.join(diffs)})"] if diffs else []
    if meta.get("seed") is None:
        notes.append(f"the checkpoint does not record its seed; assuming --seed {seed}")
    if cfg.iters != stored.get("iters"):
        notes.append(f"the run now ends at iteration {cfg.iters} (was {stored.get('iters')}); "
                     f"resuming from iteration {done}")
    for n in notes:
        print(f"{path}: {n}", file=sys.stderr, flush=True)


def load_params(path: str, kind: str, arch: M.Arch) -> dict:
    """Parameters of a trained model from its checkpoint."""
    template = M.init_params(np.random.default_rng(0), kind, arch)
    trees, _ = load_checkpoint(path, {"params": template})
    return trees["params"]
