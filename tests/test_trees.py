"""Pytrees (avb_minimal.trees): the fixed leaf order and paths that checkpoints rely on,
flatten / unflatten, map, stop_gradient and the finiteness check of the training loop."""
import numpy as np
from autograd import grad

from avb_minimal import nn, trees


def test_stop_gradient_cuts_the_graph(rng):
    W = rng.standard_normal((3, 3))
    f = lambda W: np.sum(W * trees.stop_gradient(W))   # noqa: E731
    assert np.allclose(grad(f)(W), W)               # only the un-stopped factor contributes


def test_tree_flatten_roundtrip(rng):
    tree = {"a": nn.init_mlp(rng, [2, 3, 1]), "b": {"c": nn.init_mlp(rng, [1, 2])}}
    leaves = trees.tree_flatten(tree)
    back = trees.tree_unflatten(tree, leaves)
    assert all(x is y for x, y in zip(trees.tree_flatten(back), leaves))
    assert [p for p, _ in trees.tree_leaves(tree)][:2] == ["a/0/W", "a/0/b"]


def test_paths_name_W_and_b_of_pairs_and_index_lists(rng):
    tree = {"enc": nn.init_mlp(rng, [2, 3, 1]), "v": [rng.random((2, 2)), (rng.random(1), rng.random(1), rng.random(1))]}
    paths = [p for p, _ in trees.tree_leaves(tree)]
    assert paths == ["enc/0/W", "enc/0/b", "enc/1/W", "enc/1/b", "v/0", "v/1/0", "v/1/1", "v/1/2"]
    assert trees.n_params(tree) == 2 * 3 + 3 + 3 * 1 + 1 + 4 + 3
    seen = trees.tree_map_with_path(lambda path, a: path, tree)
    assert seen["enc"][1] == ("enc/1/W", "enc/1/b") and seen["v"][0] == "v/0"


def test_tree_map_keeps_the_structure_and_combines_trees(rng):
    a = {"x": [(np.ones(2), np.zeros(1))], "y": np.arange(3.0)}
    b = trees.tree_map(lambda u, v: u + 2 * v, a, a)
    assert isinstance(b["x"][0], tuple) and isinstance(b["x"], list)
    np.testing.assert_array_equal(b["y"], 3 * np.arange(3.0))


def test_check_finite_tree_names_the_first_bad_leaf(rng):
    tree = {"enc": nn.init_mlp(rng, [2, 3, 1])}
    assert trees.check_finite_tree(tree) is None
    tree["enc"][1][0][0, 0] = np.nan
    assert trees.check_finite_tree(tree) == "params/enc/1/W"
    assert trees.check_finite_tree(tree, "grads") == "grads/enc/1/W"
