import numpy as np
import pytest

from avb_minimal.optim import Adam, adam_init, adam_step


def test_adam_matches_reference_and_keeps_inputs(rng):
    p = {"w": [(rng.standard_normal((3, 2)).astype(np.float32), np.zeros(2, np.float32))]}
    cfg = Adam(lr=0.1, b1=0.5, b2=0.9)
    state = adam_init(p)
    W0 = p["w"][0][0].copy()
    m = v = np.zeros_like(W0)
    p_before = p
    W = W0.copy()
    for t in range(1, 4):
        g = {"w": [(np.full((3, 2), t, np.float32), np.ones(2, np.float32))]}
        p, state = adam_step(cfg, p, g, state)
        m = 0.5 * m + 0.5 * t
        v = 0.9 * v + 0.1 * t * t
        W = W - 0.1 * (m / (1 - 0.5 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-8)
    assert state["t"] == 3
    assert np.allclose(p["w"][0][0], W, atol=1e-5)
    assert p["w"][0][0].dtype == np.float32
    assert p_before["w"][0][0] is not p["w"][0][0]


def test_adam_minimises_a_quadratic():
    p = [np.array([3.0, -2.0])]
    cfg, state = Adam(lr=0.05), None
    state = adam_init(p)
    for _ in range(500):
        p, state = adam_step(cfg, p, [2 * p[0]], state)
    assert np.all(np.abs(p[0]) < 0.05)


def test_adam_bad_settings():
    with pytest.raises(ValueError, match="lr"):
        Adam(lr=0)
    with pytest.raises(ValueError, match="b1"):
        Adam(b1=1.0)
