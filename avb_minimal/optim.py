"""Adam (Kingma & Ba, 2015) on pytrees of arrays, as pure functions."""
from dataclasses import dataclass

import numpy as np

from .nn import tree_flatten, tree_unflatten


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


def adam_init(params):
    """State (step count, first moments m, second moments v) for `params`."""
    return {"t": 0, "m": tree_unflatten(params, [np.zeros_like(a) for a in tree_flatten(params)]),
            "v": tree_unflatten(params, [np.zeros_like(a) for a in tree_flatten(params)])}


def adam_step(cfg, params, grads, state, lr=None):
    """One Adam step that *descends* `grads`; returns (new_params, new_state).

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    lr overrides cfg.lr (for schedules).  Arrays keep their dtype; inputs are not modified.
    """
    lr = cfg.lr if lr is None else lr
    t = state["t"] + 1
    step = lr * np.sqrt(1 - cfg.b2 ** t) / (1 - cfg.b1 ** t)   # bias corrections folded in
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(tree_flatten(params), tree_flatten(grads),
                          tree_flatten(state["m"]), tree_flatten(state["v"])):
        m = cfg.b1 * m + (1 - cfg.b1) * g
        v = cfg.b2 * v + (1 - cfg.b2) * (g * g)
        d = np.sqrt(v)
        d += cfg.eps
        np.divide(m, d, out=d)
        d *= -step
        d += p                                                  # p - step m / (sqrt(v) + eps)
        new_p.append(d.astype(p.dtype, copy=False))
        new_m.append(m)
        new_v.append(v)
    return (tree_unflatten(params, new_p),
            {"t": t, "m": tree_unflatten(params, new_m), "v": tree_unflatten(params, new_v)})
