import numpy as np
import pytest

from avb_minimal.data import check_binary_data, four_points, sample_batch


def test_four_points():
    x = four_points()
    assert x.shape == (4, 4) and x.dtype == np.float32
    assert np.all(x.sum(1) == 1) and len({tuple(r) for r in x}) == 4


def test_sample_batch(rng):
    b = sample_batch(rng, four_points(), 100)
    assert b.shape == (100, 4)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(4), r"shape \(N, D\)"),
    (np.zeros((0, 4)), "at least one row"),
    (np.zeros((3, 5)), "4 columns"),
    (np.array([["a", "b", "c", "d"]]), "dtype"),
    (np.array([[0, 1, np.nan, 0]]), "NaN or inf"),
    (np.array([[0, 1, np.inf, 0]]), "NaN or inf"),
    (np.array([[0, 0.5, 1, 0]]), "binary"),
    ([[0, 1, 0, 0]], "numpy array"),
])
def test_bad_data_is_rejected_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        check_binary_data(bad, "data", dim=4)
    assert "data" in str(e.value)


def test_good_data_is_converted():
    out = check_binary_data(np.array([[0, 1], [1, 1]], dtype=np.uint8), "x")
    assert out.dtype == np.float32
