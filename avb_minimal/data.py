"""Datasets and input validation.

The synthetic dataset of the paper (sec. 5.2, Fig. 5) is embedded: the four
2x2 binary images with exactly one pixel on, sampled uniformly.
"""
import numpy as np


def four_points(dtype=np.float32):
    """The 4 data points of the synthetic example: one-hot 2x2 images.  (4, 4)."""
    return np.eye(4, dtype=dtype)


def sample_batch(rng, data, batch_size):
    """x^(1..m) ~ p_D(x): rows of `data` drawn uniformly with replacement.  (m, D)."""
    return data[rng.integers(0, data.shape[0], size=batch_size)]


def check_finite(a, name):
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name} must be finite; it holds {bad} NaN or inf value(s)")
    return a


def check_binary_data(x, name="x", dim=None):
    """Validate a (N, D) array of 0/1 values for a Bernoulli likelihood; return it as float32."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape (N, D), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == np.bool_):
        raise ValueError(f"{name} must have a numeric or bool dtype, got {x.dtype}")
    check_finite(x, name)
    if not np.all((x == 0) | (x == 1)):
        raise ValueError(f"{name} must be binary (0/1) for a Bernoulli likelihood; "
                         f"found values such as {np.unique(x[(x != 0) & (x != 1)])[:3].tolist()}")
    return x.astype(np.float32)


# ------------------------------------------------------------------ binarized MNIST
DATA_ENV = "AVB_DATA"


def data_dir(path=None):
    """The dataset folder: `path` if given, else $AVB_DATA.  Nothing is downloaded."""
    import os
    d = path if path is not None else os.environ.get(DATA_ENV)
    if d is None:
        raise ValueError(f"no dataset folder given: pass --data DIR or set {DATA_ENV}=DIR, where DIR "
                         "holds train.npz and valid.npz (key 'x', uint8 0/1, shape (N, 784))")
    if not os.path.isdir(d):
        raise ValueError(f"dataset folder {d!r} does not exist; it should hold train.npz and valid.npz "
                         "(key 'x', uint8 0/1, shape (N, 784))")
    return d


def load_npz(path, key="x", dim=784):
    """A binary dataset stored as an .npz with one (N, dim) 0/1 array under `key`.  -> float32."""
    import os
    import zipfile
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; expected an .npz holding key {key!r}, "
                         f"a 0/1 array of shape (N, {dim})")
    try:
        with np.load(path, allow_pickle=False) as f:
            if key not in f.files:
                raise ValueError(f"{path}: no array {key!r} in this .npz (it holds {f.files})")
            x = f[key]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt?): {e}") from None
    try:
        return check_binary_data(x, "x", dim)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
