"""Adam (Kingma & Ba, 2015) on pytrees of arrays, over one flat buffer.

The moments m and v live in flat 1-d arrays, and the update is five vectorised
operations over all parameters at once instead of a loop over layers: the same
arithmetic, a fraction of the Python overhead.  The parameters handed back are
views into one new flat array, so the step is still pure (inputs untouched).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module
from .trees import tree_flatten, tree_unflatten


@dataclass(frozen=True)
class Adam:
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def flatten_to_vector(tree: dict | list) -> np.ndarray:
    """All leaves of a pytree, raveled and concatenated into one 1-d array."""
    return np.concatenate([np.ravel(a) for a in tree_flatten(tree)])


def vector_to_tree(vec: np.ndarray, template: dict | list) -> dict | list:
    """Views into `vec` shaped like the leaves of `template` (no copies)."""
    leaves, start = [], 0
    for a in tree_flatten(template):
        leaves.append(vec[start:start + a.size].reshape(a.shape))
        start += a.size
    return tree_unflatten(template, leaves)


def adam_init(params: dict | list) -> dict:
    """State: step count t and flat first / second moments m, v (same dtype as params)."""
    n = sum(a.size for a in tree_flatten(params))
    dtype = np.result_type(*tree_flatten(params))
    xp = array_module(tree_flatten(params)[0])                    # the params' device
    return {"t": 0, "m": xp.zeros(n, dtype), "v": xp.zeros(n, dtype)}


def _step_size(cfg, lr, t):
    """The step size of step t with both bias corrections folded in:
    lr sqrt(1 - b2^t) / (1 - b1^t) (lr None: cfg.lr)."""
    lr = cfg.lr if lr is None else lr
    return lr * np.sqrt(1 - cfg.b2 ** t) / (1 - cfg.b1 ** t)


def adam_step(cfg: Adam, params: dict | list, grads: dict | list, state: dict,
              lr: float | None = None) -> tuple:
    """One Adam step that *descends* `grads`; returns (new_params, new_state).

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    lr overrides cfg.lr (for schedules).  Inputs are not modified.
    """
    t = state["t"] + 1
    step = _step_size(cfg, lr, t)
    p, g = flatten_to_vector(params), flatten_to_vector(grads)
    m = cfg.b1 * state["m"] + (1 - cfg.b1) * g
    v = cfg.b2 * state["v"] + (1 - cfg.b2) * (g * g)
    d = np.sqrt(v)
    d += cfg.eps
    np.divide(m, d, out=d)
    d *= -step
    d += p                                                      # p - step m / (sqrt(v) + eps)
    return vector_to_tree(d.astype(p.dtype, copy=False), params), {"t": t, "m": m, "v": v}


def adam_update_(cfg: Adam, p: np.ndarray, g: np.ndarray, state: dict, lr: float | None = None,
                 tmp: np.ndarray | None = None, chunk: int = 1 << 17) -> tuple:
    """`adam_step` in place over flat buffers (the fast path's optimiser, same arithmetic):
    p (the flat parameters), state['m'] and state['v'] are updated; g is the flat gradient
    in the same layout; tmp (optional) is a scratch array of p's shape, reused across steps.
    Twelve in-place vector operations per chunk of `chunk` elements (so that the five
    arrays stay in cache between the operations), no allocation when tmp is given."""
    t = state["t"] + 1
    # a Python float, so that `tmp *= -step` runs in p's dtype (a float64 scalar would make
    # NumPy cast every element through float64)
    step = float(_step_size(cfg, lr, t))
    tmp = np.empty_like(p) if tmp is None else tmp
    for s in range(0, p.size, chunk):
        c = slice(s, s + chunk)
        _adam_chunk(cfg, step, p[c], g[c], state["m"][c], state["v"][c], tmp[c])
    state["t"] = t
    return p, state


def _adam_chunk(cfg, step, p, g, m, v, tmp):
    m *= cfg.b1
    np.multiply(g, 1 - cfg.b1, out=tmp)
    m += tmp                                                    # m <- b1 m + (1 - b1) g
    np.multiply(g, g, out=tmp)
    tmp *= 1 - cfg.b2
    v *= cfg.b2
    v += tmp                                                    # v <- b2 v + (1 - b2) g^2
    np.sqrt(v, out=tmp)
    tmp += cfg.eps
    np.divide(m, tmp, out=tmp)
    tmp *= -step
    p += tmp                                                    # p <- p - step m / (sqrt(v) + eps)
