"""Hand-written multilayer perceptrons on autograd.

Parameters are plain lists of (W, b) pairs; every function is pure and takes
its randomness (a numpy Generator) as an argument.
"""
from __future__ import annotations

from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, defvjp_argnum, primitive

from .backend import array_module


@primitive
def linear(h: onp.ndarray, W: onp.ndarray, b: onp.ndarray) -> onp.ndarray:
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


def elu_(a: onp.ndarray, tmp: onp.ndarray) -> onp.ndarray:
    """ELU in place: a <- max(a, expm1(min(a, 0))), i.e. a for a > 0 and exp(a) - 1
    otherwise (expm1(a) >= a).  tmp: scratch of a's shape.  Three passes, no allocation;
    the fast step calls it on its buffers, `elu` below on a fresh copy."""
    onp.minimum(a, 0, out=tmp)
    onp.expm1(tmp, out=tmp)
    onp.maximum(a, tmp, out=a)
    return a


def elu_grad_(d: onp.ndarray, ans: onp.ndarray, tmp: onp.ndarray) -> onp.ndarray:
    """d <- d * elu'(a) in place, from the forward result ans = elu(a) alone:
    elu'(a) = 1 for a > 0 and exp(a) = ans + 1 otherwise, i.e. min(ans, 0) + 1."""
    onp.minimum(ans, 0, out=tmp)
    tmp += 1
    d *= tmp
    return d


@primitive
def elu(a: onp.ndarray) -> onp.ndarray:
    """ELU activation: a for a > 0, exp(a) - 1 otherwise (`elu_` on a copy of a)."""
    return elu_(a.copy(), onp.empty_like(a))


def _elu_vjp(ans, a):
    # g * elu'(a), returned in the activation's dtype (g can arrive in float64)
    return lambda g: elu_grad_(g.copy(), ans, onp.empty_like(ans)).astype(ans.dtype, copy=False)


defvjp(elu, _elu_vjp)


def _concatenate_args(axis, *arrays):
    return array_module(arrays[0]).concatenate(arrays, axis=axis)


_concatenate_args = primitive(_concatenate_args)


def _concatenate_vjp(argnum, ans, args, kwargs):
    # args = (axis, *arrays): the cotangent of args[argnum] is its slice of g along axis
    axis, arrays = args[0], args[1:]
    start = sum(a.shape[axis] for a in arrays[:argnum - 1])
    stop = start + arrays[argnum - 1].shape[axis]
    index = (slice(None),) * (axis % ans.ndim) + (slice(start, stop),)
    return lambda g: g[index]


defvjp_argnum(_concatenate_args, _concatenate_vjp)


def concatenate(arrays: list, axis: int = 0) -> np.ndarray:
    """np.concatenate that keeps device arrays on their device, with its VJP (autograd's own
    ends in .view(numpy.ndarray), which reinterprets a cupy buffer).  Used by the models
    for [x, eps], [f, r, 1] and [z_pos; z_neg]."""
    return _concatenate_args(axis, *arrays)


@primitive
def basis_linear(h: np.ndarray, W: np.ndarray) -> np.ndarray:
    """One small dense map per basis net: out[b, i] = h[b, i] W[i].  h: (B, m, n_in),
    W: (m, n_in, n_out) -> (B, m, n_out).  A primitive because autograd's einsum VJP parses
    its operands with numpy.asanyarray, which a device array refuses."""
    return onp.einsum("bmi,mio->bmo", h, W)


defvjp(basis_linear,
       lambda ans, h, W: lambda g: onp.einsum("bmo,mio->bmi", g, W),    # dL/dh  (B, m, n_in)
       lambda ans, h, W: lambda g: onp.einsum("bmo,bmi->mio", g, h))    # dL/dW  (m, n_in, n_out)


@primitive
def where(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where(c, a, b) with a VJP that stays on c's device (autograd's builds host zeros)."""
    return onp.where(c, a, b)


defvjp(where, None,
       lambda ans, c, a, b: lambda g: onp.where(c, g, 0.0 * g),        # g where c, else 0
       lambda ans, c, a, b: lambda g: onp.where(c, 0.0 * g, g))        # g where not c, else 0


@primitive
def take_rows(A: onp.ndarray, start: int, stop: int) -> onp.ndarray:
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


def relu(a: onp.ndarray) -> onp.ndarray:
    return np.maximum(a, 0)


ACTIVATIONS = {"elu": elu, "relu": relu, "tanh": np.tanh}


def get_activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def init_mlp(rng: onp.random.Generator, sizes: list, dtype: type = onp.float32, last_scale: float = 1.0) -> list:
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


def mlp(params: list, h: onp.ndarray, activation: Callable = elu) -> onp.ndarray:
    """Forward pass: h -> act(h W1 + b1) -> ... -> h WL + bL (no final activation).

    h: (B, in) -> (B, out).
    """
    ### BEGIN SOLUTION task 0.1: the MLP forward pass
    for W, b in params[:-1]:
        h = activation(linear(h, W, b))         # (B, width)
    W, b = params[-1]
    return linear(h, W, b)                      # (B, out)
    ### END SOLUTION


def init_resnet(rng: onp.random.Generator, n_in: int, width: int, n_blocks: int, n_out: int = 1,
                dtype: type = onp.float32) -> dict:
    """The authors' residual adversary: in -> width, n_blocks residual blocks
    h + W2 act(W1 act(h)), each block's inner output weights zero-initialised, -> n_out."""
    params = {"inp": init_mlp(rng, [n_in, width], dtype),
              "blocks": [init_mlp(rng, [width, width, width], dtype, last_scale=0.0)
                         for _ in range(n_blocks)],
              "out": init_mlp(rng, [width, n_out], dtype)}
    return params


def resnet(params: dict, h: onp.ndarray, activation: Callable = elu) -> onp.ndarray:
    """Residual MLP forward: (B, in) -> (B, n_out)."""
    h = mlp(params["inp"], h)                          # (B, width)
    for block in params["blocks"]:
        h = h + mlp(block, activation(h), activation)  # (B, width)
    return mlp(params["out"], activation(h))           # (B, n_out)
