import numpy as np
import pytest
from autograd.test_util import check_grads
from reference_values import expect

from avb_minimal import nn


def test_elu_values_and_grads(rng):
    a = rng.standard_normal((4, 6)) * 2
    assert np.allclose(nn.elu(a), np.where(a > 0, a, np.expm1(a)))
    check_grads(nn.elu, modes=["rev"], order=1)(a)


def test_linear_and_take_rows_grads(rng):
    h, W, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    assert np.allclose(nn.linear(h, W, b), h @ W + b)
    check_grads(nn.linear, modes=["rev"], order=1)(h, W, b)
    A = rng.standard_normal((6, 3))
    check_grads(lambda A: nn.take_rows(A, 1, 4), modes=["rev"], order=1)(A)


@pytest.mark.task0_1
def test_mlp_shapes_dtype_and_grads(rng):
    params = nn.init_mlp(rng, [3, 8, 8, 2], np.float32)
    assert [W.shape for W, _ in params] == [(3, 8), (8, 8), (8, 2)]
    out = nn.mlp(params, rng.standard_normal((5, 3)).astype(np.float32))
    assert out.shape == (5, 2) and out.dtype == np.float32
    p64 = nn.init_mlp(rng, [3, 4, 2], np.float64)
    x = rng.standard_normal((5, 3))
    check_grads(lambda p: nn.mlp(p, x), modes=["rev"], order=1)(p64)


@pytest.mark.task0_1
def test_mlp_is_affine_layers_with_the_activation_between(rng):
    """Task 0.1: h -> act(h W1 + b1) -> ... -> h WL + bL, no activation after the last layer."""
    params = nn.init_mlp(rng, [3, 5, 4, 2], np.float64)
    params = [(W, b + rng.standard_normal(b.shape)) for W, b in params]   # non-zero biases
    x = rng.standard_normal((6, 3))
    ref = expect("mlp", params=params, x=x, act="tanh")
    assert np.allclose(nn.mlp(params, x, np.tanh), ref["out"])
    assert np.allclose(nn.mlp(params[:1], x), ref["first_layer"])        # one layer: affine only


@pytest.mark.task0_1
def test_resnet_zero_init_blocks_are_identity(rng):
    p = nn.init_resnet(rng, 4, 16, 3, 1, np.float64)
    x = rng.standard_normal((5, 4))
    h = nn.mlp(p["inp"], x)
    assert np.allclose(nn.resnet(p, x), nn.mlp(p["out"], nn.elu(h)))   # blocks start as identity


def test_bad_activation_name():
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.get_activation("swish")
