"""Hand-written multilayer perceptrons on autograd.

Parameters are plain lists of (W, b) pairs; every function is pure and takes
its randomness (a numpy Generator) as an argument.
"""
import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, primitive
from autograd.tracer import getval


@primitive
def linear(h, W, b):
    """One dense layer h W + b.  h: (B, n_in), W: (n_in, n_out), b: (n_out,) -> (B, n_out).

    A primitive so that its VJPs are the three plain matrix products below
    (BLAS reads the transposes in place: no copies, no tensordot reshuffling).
    """
    out = onp.dot(h, W)
    out += b
    return out


defvjp(linear,
       lambda ans, h, W, b: lambda g: onp.dot(g, W.T),     # dL/dh = g W^T   (B, n_in)
       lambda ans, h, W, b: lambda g: onp.dot(h.T, g),     # dL/dW = h^T g   (n_in, n_out)
       lambda ans, h, W, b: lambda g: onp.sum(g, axis=0))  # dL/db = sum_B g (n_out,)


@primitive
def elu(a):
    """ELU activation: a for a > 0, exp(a) - 1 otherwise."""
    out = onp.minimum(a, 0)
    onp.expm1(out, out=out)
    out += onp.maximum(a, 0)
    return out


def _elu_vjp(ans, a):
    # d elu/da = 1 for a > 0 and exp(a) = elu(a) + 1 <= 1 otherwise,
    # i.e. min(elu(a) + 1, 1): computed from the forward result alone.
    def vjp(g):
        d = ans + 1
        onp.minimum(d, 1, out=d)
        d *= g
        return d
    return vjp


defvjp(elu, _elu_vjp)


def elu_(a, tmp):
    """ELU in place (the fast path's form of `elu`, same numbers): a <- max(a, expm1(min(a, 0))),
    since expm1(a) >= a.  tmp: scratch of a's shape.  Three passes, no allocation."""
    onp.minimum(a, 0, out=tmp)
    onp.expm1(tmp, out=tmp)
    onp.maximum(a, tmp, out=a)
    return a


def elu_grad_(d, ans, tmp):
    """d <- d * elu'(a) in place, from the forward result ans = elu(a) (as in `_elu_vjp`):
    elu'(a) = min(ans + 1, 1) = min(ans, 0) + 1."""
    onp.minimum(ans, 0, out=tmp)
    tmp += 1
    d *= tmp
    return d


@primitive
def take_rows(A, start, stop):
    """A[start:stop] for a 2-d array, with a VJP that writes into one zero array
    (autograd's generic slicing VJP uses np.add.at, which is slow on big blocks)."""
    return A[start:stop]


def _take_rows_vjp(ans, A, start, stop):
    def vjp(g):
        out = onp.zeros_like(A, dtype=g.dtype)   # same array type as A (numpy or cupy)
        out[start:stop] = g
        return out
    return vjp


defvjp(take_rows, _take_rows_vjp)


def relu(a):
    return np.maximum(a, 0)


ACTIVATIONS = {"elu": elu, "relu": relu, "tanh": np.tanh}


def get_activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def init_mlp(rng, sizes, dtype=onp.float32, last_scale=1.0):
    """Weights for an MLP with layer widths `sizes` = [in, h1, ..., out].

    W ~ N(0, 2 / (fan_in + fan_out)) (Glorot), b = 0; the last layer's weights
    are multiplied by `last_scale` (0 gives a zero-initialised output layer).
    Returns [(W1, b1), ..., (WL, bL)] with W: (fan_in, fan_out), b: (fan_out,).
    """
    params = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        std = onp.sqrt(2.0 / (n_in + n_out))
        W = rng.standard_normal((n_in, n_out)) * std
        if i == len(sizes) - 2:
            W = W * last_scale
        params.append((W.astype(dtype), onp.zeros(n_out, dtype=dtype)))
    return params


def mlp(params, h, activation=elu):
    """Forward pass: h -> act(h W1 + b1) -> ... -> h WL + bL (no final activation).

    h: (B, in) -> (B, out).
    """
    ### BEGIN SOLUTION task 0.1: the MLP forward pass
    for W, b in params[:-1]:
        h = activation(linear(h, W, b))         # (B, width)
    W, b = params[-1]
    return linear(h, W, b)                      # (B, out)
    ### END SOLUTION


def init_resnet(rng, n_in, width, n_blocks, n_out=1, dtype=onp.float32):
    """The authors' residual adversary: in -> width, n_blocks residual blocks
    h + W2 act(W1 act(h)), each block's inner output weights zero-initialised, -> n_out."""
    params = {"inp": init_mlp(rng, [n_in, width], dtype),
              "blocks": [init_mlp(rng, [width, width, width], dtype, last_scale=0.0)
                         for _ in range(n_blocks)],
              "out": init_mlp(rng, [width, n_out], dtype)}
    return params


def resnet(params, h, activation=elu):
    """Residual MLP forward: (B, in) -> (B, n_out)."""
    h = mlp(params["inp"], h)                          # (B, width)
    for block in params["blocks"]:
        h = h + mlp(block, activation(h), activation)  # (B, width)
    return mlp(params["out"], activation(h))           # (B, n_out)


# ---------------------------------------------------------------- pytrees
def tree_map(fn, *trees):
    """Apply fn leafwise over nested dicts, lists and tuples of arrays."""
    t0 = trees[0]
    if isinstance(t0, dict):
        return {k: tree_map(fn, *[t[k] for t in trees]) for k in t0}
    if isinstance(t0, (list, tuple)):
        out = [tree_map(fn, *items) for items in zip(*trees)]
        return type(t0)(out) if isinstance(t0, tuple) else out
    return fn(*trees)


def tree_leaves(tree, prefix=""):
    """[(path, array)] in a fixed order; paths like 'enc/0/W'."""
    if isinstance(tree, dict):
        out = []
        for k in tree:
            out += tree_leaves(tree[k], f"{prefix}{k}/")
        return out
    if isinstance(tree, (list, tuple)):
        names = ("W", "b") if isinstance(tree, tuple) and len(tree) == 2 else None
        out = []
        for i, item in enumerate(tree):
            out += tree_leaves(item, f"{prefix}{names[i] if names else i}/")
        return out
    return [(prefix.rstrip("/"), tree)]


def stop_gradient(tree):
    """The same values with autograd's tracing removed: no gradient flows back."""
    return tree_map(getval, tree)


def n_params(tree):
    return int(sum(a.size for _, a in tree_leaves(tree)))


def tree_map_with_path(fn, tree, prefix=""):
    """Like tree_map on one tree, but fn(path, leaf) also gets the leaf's path."""
    if isinstance(tree, dict):
        return {k: tree_map_with_path(fn, tree[k], f"{prefix}{k}/") for k in tree}
    if isinstance(tree, (list, tuple)):
        names = ("W", "b") if isinstance(tree, tuple) and len(tree) == 2 else None
        out = [tree_map_with_path(fn, item, f"{prefix}{names[i] if names else i}/")
               for i, item in enumerate(tree)]
        return tuple(out) if isinstance(tree, tuple) else out
    return fn(prefix.rstrip("/"), tree)


def tree_flatten(tree):
    """The leaves of a pytree as a list, in tree_leaves order."""
    return [a for _, a in tree_leaves(tree)]


def tree_unflatten(template, leaves):
    """Inverse of tree_flatten: a pytree shaped like `template` holding `leaves`."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), template)
