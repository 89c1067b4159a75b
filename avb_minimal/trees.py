"""Pytrees: parameters as nested dicts, lists and (W, b) tuples of arrays.

Every model's parameters are such a tree (see `nn.init_mlp`); these helpers walk it
in one fixed order, so that a tree can be flattened, saved, checked and rebuilt.
"""
from __future__ import annotations

from typing import Callable

from autograd.tracer import getval

from .backend import array_module


def tree_map(fn: Callable, *trees: dict | list) -> dict | list:
    """Apply fn leafwise over nested dicts, lists and tuples of arrays."""
    t0 = trees[0]
    if isinstance(t0, dict):
        return {k: tree_map(fn, *[t[k] for t in trees]) for k in t0}
    if isinstance(t0, (list, tuple)):
        out = [tree_map(fn, *items) for items in zip(*trees)]
        return type(t0)(out) if isinstance(t0, tuple) else out
    return fn(*trees)


def tree_leaves(tree: dict | list, prefix: str = "") -> list:
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


def stop_gradient(tree: dict | list) -> dict | list:
    """The same values with autograd's tracing removed: no gradient flows back."""
    return tree_map(getval, tree)


def n_params(tree: dict | list) -> int:
    return int(sum(a.size for _, a in tree_leaves(tree)))


def tree_map_with_path(fn: Callable, tree: dict | list, prefix: str = "") -> dict | list:
    """Like tree_map on one tree, but fn(path, leaf) also gets the leaf's path."""
    if isinstance(tree, dict):
        return {k: tree_map_with_path(fn, tree[k], f"{prefix}{k}/") for k in tree}
    if isinstance(tree, (list, tuple)):
        names = ("W", "b") if isinstance(tree, tuple) and len(tree) == 2 else None
        out = [tree_map_with_path(fn, item, f"{prefix}{names[i] if names else i}/")
               for i, item in enumerate(tree)]
        return tuple(out) if isinstance(tree, tuple) else out
    return fn(prefix.rstrip("/"), tree)


def tree_flatten(tree: dict | list) -> list:
    """The leaves of a pytree as a list, in tree_leaves order."""
    return [a for _, a in tree_leaves(tree)]


def tree_unflatten(template: dict | list, leaves: list) -> dict | list:
    """Inverse of tree_flatten: a pytree shaped like `template` holding `leaves`."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), template)


def check_finite_tree(tree: dict | list, name: str = "params") -> str | None:
    """The path of the first leaf holding NaN or inf ('params/enc/0/W'), or None."""
    for path, a in tree_leaves(tree):
        if not bool(array_module(a).isfinite(a).all()):
            return f"{name}/{path}"
    return None
