"""Datasets and input validation.

The synthetic dataset of the paper (sec. 5.2, Fig. 5) is embedded: the four
2x2 binary images with exactly one pixel on, sampled uniformly.
"""
from __future__ import annotations

import gzip
import os
import zipfile
import zlib

import numpy as np

from .backend import check_finite


def four_points(dtype: type = np.float32) -> np.ndarray:
    """The 4 data points of the synthetic example: one-hot 2x2 images.  (4, 4)."""
    return np.eye(4, dtype=dtype)


def sample_batch(rng: np.random.Generator, data: np.ndarray, batch_size: int) -> np.ndarray:
    """x^(1..m) ~ p_D(x): rows of `data` drawn uniformly with replacement.  (m, D)."""
    return data[rng.integers(0, data.shape[0], size=batch_size)]


def check_binary_data(x: np.ndarray, name: str = "x", dim: int | None = None) -> np.ndarray:
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
    check_finite(name, x)
    if not np.all((x == 0) | (x == 1)):
        raise ValueError(f"{name} must be binary (0/1) for a Bernoulli likelihood; "
                         f"found values such as {np.unique(x[(x != 0) & (x != 1)])[:3].tolist()}")
    return x.astype(np.float32)


# ------------------------------------------------------------------ binarized MNIST
DATA_ENV = "AVB_DATA"


def data_dir(path: str | None = None) -> str:
    """The dataset folder: `path` if given, else $AVB_DATA.  Nothing is downloaded."""
    d = path if path is not None else os.environ.get(DATA_ENV)
    if d is None:
        raise ValueError(f"no dataset folder given: pass --data DIR or set {DATA_ENV}=DIR, where DIR "
                         "holds train.npz and valid.npz (key 'x', uint8 0/1, shape (N, 784))")
    if os.path.isfile(d):
        raise ValueError(f"dataset folder {d!r} is a file; give the folder that holds train.npz and "
                         "valid.npz (key 'x', uint8 0/1, shape (N, 784))")
    if not os.path.isdir(d):
        raise ValueError(f"dataset folder {d!r} does not exist; it should hold train.npz and valid.npz "
                         "(key 'x', uint8 0/1, shape (N, 784))")
    return d


def load_npz(path: str, key: str = "x", dim: int = 784) -> np.ndarray:
    """A binary dataset stored as an .npz with one (N, dim) 0/1 array under `key`.  -> float32."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; expected an .npz holding key {key!r}, "
                         f"a 0/1 array of shape (N, {dim})")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head == b"\x93NUMPY":
        raise ValueError(f"{path}: a .npy file (one array) under an .npz name; save it with "
                         f"numpy.savez({os.path.basename(path)!r}, {key}=array)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz (zip) file (empty, truncated or corrupt, or another format); expected "
                         f"an .npz holding key {key!r}, a 0/1 array of shape (N, {dim})")
    try:
        with np.load(path, allow_pickle=False) as f:
            if key not in f.files:
                raise ValueError(f"{path}: no array {key!r} in this .npz (it holds {f.files})")
            x = f[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path}: array {key!r} holds Python objects (pickled data), which are never "
                             f"loaded; store a numeric 0/1 array of shape (N, {dim})") from None
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, KeyError, NotImplementedError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt?): {type(e).__name__}: {e}") \
            from None
    try:
        return check_binary_data(x, "x", dim)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# ------------------------------------------------------------------ other formats users hold
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def load_amat(path: str, dim: int = 784) -> np.ndarray:
    """The fixed binarization as distributed by Larochelle (binarized_mnist_{train,valid,test}.amat):
    text, one image per line, `dim` whitespace-separated 0/1 values.  -> float32 (N, dim)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; expected a text .amat file with {dim} 0/1 values per line")
    with open(path, "rb") as fh:
        raw = fh.read()
    buf = np.frombuffer(raw, np.uint8)
    tok = ~_WHITESPACE[buf]                                        # non-whitespace bytes
    if buf.size == 0 or not tok.any():
        raise ValueError(f"{path}: the file is empty; expected {dim} 0/1 values per line")
    digits = buf[tok]
    if np.any(tok[1:] & tok[:-1]) or np.any((digits != 48) & (digits != 49)):
        # not the one-character '0'/'1' layout: parse numbers the slow way to say what is there
        try:
            x = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path}: not a text matrix of numbers (truncated or corrupt?): {e}") from None
    else:
        starts = np.concatenate([[0], np.flatnonzero(buf[:-1] == 10) + 1])     # first byte of each line
        counts = np.add.reduceat(tok.view(np.uint8), starts, dtype=np.int64)     # values per line
        rows = np.flatnonzero(counts)
        bad = rows[counts[rows] != dim]
        if bad.size:
            raise ValueError(f"{path}: line {bad[0] + 1} holds {counts[bad[0]]} values, expected {dim} "
                             f"per line ({bad.size} such line(s); truncated file?)")
        x = (digits - 48).reshape(rows.size, dim)
    try:
        return check_binary_data(x, "x", dim)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


IDX_IMAGES_MAGIC = 2051      # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)


def load_idx(path: str, rng: np.random.Generator | None = None, dim: int = 784,
             binarize: bool = True) -> np.ndarray:
    """MNIST images in the IDX format (train-images-idx3-ubyte, optionally .gz).

    binarize=True: dynamic binarization, x_d ~ Bernoulli(pixel_d / 255), drawn with the
    Generator `rng` (one draw per call: call again with the rng to get a fresh draw);
    binarize=False: the intensities pixel / 255 in [0, 1].  -> float32 (N, dim)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; expected MNIST images in the IDX format "
                         "(e.g. train-images-idx3-ubyte or train-images-idx3-ubyte.gz)")
    if binarize and rng is None:
        raise ValueError(f"{path}: IDX images are binarized at random (dynamic binarization), which needs a "
                         "numpy Generator (rng=); from the command line the training seed draws it")
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: a gzip file that cannot be decompressed (truncated or corrupt?): {e}") \
                from None
    if len(raw) < 16:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX image header (16 bytes)")
    magic, n, r, c = (int.from_bytes(raw[i:i + 4], "big") for i in (0, 4, 8, 12))
    if magic != IDX_IMAGES_MAGIC:
        raise ValueError(f"{path}: magic number {magic}, not {IDX_IMAGES_MAGIC} (IDX unsigned-byte images); "
                         "a label file (2049) or not an IDX file?")
    if r * c != dim:
        raise ValueError(f"{path}: images of {r} x {c} = {r * c} pixels, expected {dim}")
    if len(raw) - 16 != n * dim:
        raise ValueError(f"{path}: the header announces {n} images ({n * dim} bytes) but "
                         f"{len(raw) - 16} bytes follow (truncated or corrupt?)")
    if n == 0:
        raise ValueError(f"{path}: holds no images")
    p = np.frombuffer(raw, np.uint8, offset=16).reshape(n, dim).astype(np.float32) / 255.0
    if not binarize:
        return p
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)


def load_binary(path: str, rng: np.random.Generator | None = None, dim: int = 784) -> np.ndarray:
    """Load a binary dataset by its file type: .npz (key 'x'), .amat (text) or MNIST IDX
    (dynamically binarized with `rng`).  -> float32 (N, dim) of 0/1."""
    name = os.path.basename(path).lower()
    if name.endswith(".npz"):
        return load_npz(path, "x", dim)
    if name.endswith(".amat") or name.endswith(".txt"):
        return load_amat(path, dim)
    if "idx" in name or "ubyte" in name:
        return load_idx(path, rng, dim)
    raise ValueError(f"{path}: unknown dataset format; give an .npz (key 'x'), a text .amat or an "
                     "MNIST IDX file (*idx3-ubyte, optionally .gz)")


def dataset_file(folder: str, split: str) -> str:
    """The file of `split` in `folder`: FOLDER/<split>.npz, else the .amat name of the fixed
    binarization (binarized_mnist_<split>.amat), else FOLDER/<split> itself.  A missing file
    gives a message saying what to put where."""
    tries = [os.path.join(folder, f"{split}.npz"), os.path.join(folder, f"binarized_mnist_{split}.amat"),
             os.path.join(folder, split)]
    for t in tries:
        if os.path.isfile(t):
            return t
    raise ValueError(f"no {split!r} data in {folder!r}: put the images there as {split}.npz (key 'x', "
                     f"uint8 0/1, shape (N, 784)) or binarized_mnist_{split}.amat (text, 784 0/1 values per "
                     "line); nothing is downloaded")
