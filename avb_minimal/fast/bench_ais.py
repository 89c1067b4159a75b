"""`python -m avb_minimal bench ais`: the cost of one AIS log-likelihood estimate (Table 2).

Times `ais.ais_log_likelihood` at the authors' protocol (1000 sigmoid-schedule
distributions, 5 chains, 10 leapfrog steps, step size adapted toward 0.65 acceptance)
on a decoder of the MNIST architecture (`experiments.mnist.mnist_arch`: dz -> 300 ->
300 -> 784, ELU, float32), random-initialised or loaded from a checkpoint of
`reproduce mnist`, for the first rows of a data file or for random binary data.

Each transition evaluates the decoder and its z-gradient L times on E x C rows, so an
estimate costs about T L evaluations of a (E C)-row forward and backward pass: seconds
per example is the figure to compare, with the mean log p(x) beside it (the same seed
gives the same chains, so a faster implementation must give the same mean to within
its standard error).  The machine's other jobs only ever add time: `repeats` runs the
estimate several times and reports the fastest, in wall and in CPU time.
"""
import os
import time

import numpy as np

from .. import models as M
from ..ais import ais_log_likelihood
from ..backend import device_module, tree_to_device
from ..checkpoint import blas_threads
from ..data import load_binary
from ..experiments.mnist import base_kind, load_mnist_model, mnist_arch
from .bench_ops import device_name


def bench_data(path, n, dim, seed=0):
    """The first n rows of a binary data file, or n rows of random binary pixels (p = 1/2)."""
    if path is None:
        return (np.random.default_rng([seed, 2]).random((n, dim)) < 0.5).astype(np.float32)
    x = load_binary(path, np.random.default_rng([seed, 1]), dim)
    if x.shape[0] < n:
        raise ValueError(f"--examples {n}: {path} holds only {x.shape[0]} rows")
    return x[:n]


def bench_ais(examples=64, steps=1000, chains=5, leapfrog=10, data=None, checkpoint=None, kind="vae",
              latent=8, seed=0, repeats=1, device="cpu"):
    """Time AIS for `examples` rows at the given protocol, `repeats` times (same seed each).

    Returns a JSON-able dict: 'seconds' and 'cpu_seconds' (the fastest run), their values
    per example, 'runs' [[wall, cpu], ...], 'log_likelihood_mean' and its standard error
    over the examples, 'acceptance', 'ess_mean', 'decoder_calls' (evaluations of the
    decoder and its gradient on all rows), the settings, the BLAS threads and the load."""
    xp = device_module(device)
    arch = mnist_arch(latent)
    if checkpoint is None:
        params = M.init_params(np.random.default_rng(seed), base_kind(kind), arch)
    else:
        params, _ = load_mnist_model(kind, checkpoint, arch)
    params = tree_to_device(params, xp)
    x = bench_data(data, examples, arch.x_dim, seed)
    runs, res = [], None
    for _ in range(int(repeats)):
        c, t = time.process_time(), time.perf_counter()
        res = ais_log_likelihood(params, base_kind(kind), x, arch, np.random.default_rng(seed), n_steps=steps,
                                 n_chains=chains, n_leapfrog=leapfrog)
        runs.append([time.perf_counter() - t, time.process_time() - c])
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    ll = res["log_likelihood"]
    return {"seconds": wall, "cpu_seconds": cpu, "seconds_per_example": wall / examples,
            "cpu_seconds_per_example": cpu / examples, "runs": runs,
            "log_likelihood_mean": float(ll.mean()),
            "log_likelihood_sem": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else None,
            "acceptance": float(res["acceptance"].mean()), "ess_mean": float(res["ess"].mean()),
            "decoder_calls": 1 + (steps - 1) * leapfrog, "init": res["settings"]["init"],
            "examples": examples, "steps": steps, "chains": chains, "leapfrog": leapfrog,
            "kind": kind, "latent": latent, "checkpoint": checkpoint, "data": data or "random",
            "seed": seed, "device": device, "device_name": device_name(xp),
            "threads": blas_threads(), "load_average_1min": _load()}


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def format_bench_ais(r):
    """The result of bench_ais as a few printable lines."""
    sem = r["log_likelihood_sem"]
    head = (f"AIS on {r['examples']} examples ({r['data']}), {r['kind']} decoder "
            f"({r['checkpoint'] or 'random init'}), latent {r['latent']}; {r['steps']} distributions, "
            f"{r['chains']} chains, {r['leapfrog']} leapfrog steps, start: {r['init']}")
    speed = (f"{r['seconds_per_example']:.3f} s per example ({r['cpu_seconds_per_example']:.3f} CPU s); "
             f"{r['seconds']:.1f} s in all, fastest of {len(r['runs'])}")
    ll = (f"log p(x) mean {r['log_likelihood_mean']:.3f}" + (f" +- {sem:.3f} (s.e.)" if sem is not None else "")
          + f"; acceptance {r['acceptance']:.3f}, ESS {r['ess_mean']:.2f} of {r['chains']}")
    machine = f"{r['device_name']}; BLAS threads {r['threads']}, load {r['load_average_1min']:.2f}"
    return f"{head}\n{machine}\n{speed}\n{ll}"
