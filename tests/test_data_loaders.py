"""The dataset loaders for the formats users hold (binarized MNIST): .npz, text .amat and
MNIST IDX (dynamic binarization), on small files written here; bad files give errors
that name the file."""
import gzip
import os

import numpy as np
import pytest

from avb_minimal.data import (
    data_dir,
    dataset_file,
    load_amat,
    load_binary,
    load_idx,
    load_npz,
)

D = 6


def binary(rng, n=5, d=D):
    return (rng.random((n, d)) < 0.4).astype(np.uint8)


def write_idx(path, pixels, magic=2051, rows=2, cols=3, n=None, gz=False, cut=0):
    n = pixels.shape[0] if n is None else n
    raw = b"".join(int(v).to_bytes(4, "big") for v in (magic, n, rows, cols)) + pixels.astype(np.uint8).tobytes()
    raw = raw[:len(raw) - cut]
    if gz:
        raw = gzip.compress(raw)
    with open(path, "wb") as fh:
        fh.write(raw)
    return str(path)


# ------------------------------------------------------------------ .npz
def test_npz_roundtrip_and_errors(tmp_path, rng):
    x = binary(rng)
    np.savez(tmp_path / "a.npz", x=x)
    y = load_npz(str(tmp_path / "a.npz"), dim=D)
    assert y.dtype == np.float32 and np.array_equal(y, x)
    np.savez(tmp_path / "wrong.npz", x=x[:, :4])
    np.savez(tmp_path / "gray.npz", x=x * 0.5)
    np.savez(tmp_path / "nokey.npz", images=x)
    raw = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
    for name, match in (("wrong.npz", "columns"), ("gray.npz", "binary"), ("nokey.npz", "no array 'x'"),
                        ("cut.npz", "truncated or corrupt"), ("missing.npz", "no such file")):
        with pytest.raises(ValueError, match=match) as e:
            load_npz(str(tmp_path / name), dim=D)
        assert name in str(e.value)


# ------------------------------------------------------------------ .amat
def test_amat_roundtrip(tmp_path, rng):
    x = binary(rng)
    p = tmp_path / "binarized_mnist_valid.amat"
    np.savetxt(p, x, fmt="%d")
    y = load_amat(str(p), dim=D)
    assert y.dtype == np.float32 and np.array_equal(y, x)
    # float formatting, CRLF line ends and a blank last line are accepted too
    (tmp_path / "f.amat").write_text("\r\n".join(" ".join(f"{v:.1f}" for v in r) for r in x) + "\r\n\r\n")
    assert np.array_equal(load_amat(str(tmp_path / "f.amat"), dim=D), x)


@pytest.mark.parametrize("text, match", [
    ("0 1 0 1 0 1\n1 1 0\n", "line 2 holds 3 values"),        # truncated last line
    ("0 1 0 1 0 1 1\n", "holds 7 values"),                    # wrong width
    ("0 1 0.5 1 0 1\n", "binary"),                            # not 0/1
    ("0 1 2 1 0 1\n", "binary"),
    ("0 1 x 1 0 1\n", "not a text matrix"),                   # corrupt
    ("", "empty"),
])
def test_amat_bad_files_name_the_file(tmp_path, text, match):
    p = tmp_path / "bad.amat"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_amat(str(p), dim=D)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [False, True])
def test_idx_dynamic_binarization(tmp_path, gz):
    n = 4000
    pix = np.tile(np.array([0, 255, 128, 64, 255, 0], np.uint8), (n, 1))
    p = write_idx(tmp_path / ("imgs-idx3-ubyte" + (".gz" if gz else "")), pix, gz=gz)
    a = load_idx(p, np.random.default_rng(0), dim=D)
    assert a.shape == (n, D) and a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    assert np.all(a[:, 0] == 0) and np.all(a[:, 1] == 1)                 # p = 0 and p = 1
    np.testing.assert_allclose(a.mean(0)[2:4], [128 / 255, 64 / 255], atol=0.03)
    b = load_idx(p, np.random.default_rng(1), dim=D)                     # a fresh draw per call
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, load_idx(p, np.random.default_rng(0), dim=D))
    gray = load_idx(p, binarize=False, dim=D)
    np.testing.assert_allclose(gray[0], pix[0] / 255.0)
    assert np.array_equal(load_binary(p, np.random.default_rng(0), dim=D), a)


@pytest.mark.parametrize("kw, match", [
    (dict(magic=2049), "magic number 2049"),
    (dict(rows=3, cols=3), "3 x 3 = 9 pixels"),
    (dict(cut=5), "truncated or corrupt"),
    (dict(n=7), "announces 7 images"),
])
def test_idx_bad_files_name_the_file(tmp_path, rng, kw, match):
    p = write_idx(tmp_path / "bad-idx3-ubyte", rng.integers(0, 256, (5, D)), **kw)
    with pytest.raises(ValueError, match=match) as e:
        load_idx(p, rng, dim=D)
    assert p in str(e.value)


def test_idx_truncated_gzip_header_and_missing_rng(tmp_path, rng):
    p = write_idx(tmp_path / "g-idx3-ubyte.gz", rng.integers(0, 256, (50, D)), gz=True)
    raw = open(p, "rb").read()
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(raw[:len(raw) - 20])
    with pytest.raises(ValueError, match="cannot be decompressed") as e:
        load_idx(str(cut), rng, dim=D)
    assert str(cut) in str(e.value)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(b"\x00\x00\x08\x03")
    with pytest.raises(ValueError, match="too short"):
        load_idx(str(short), rng, dim=D)
    with pytest.raises(ValueError, match="rng="):
        load_idx(p, None, dim=D)


# ------------------------------------------------------------------ finding the files
def test_dataset_folder_and_split_files(tmp_path, rng, monkeypatch):
    monkeypatch.delenv("AVB_DATA", raising=False)
    with pytest.raises(ValueError, match="AVB_DATA"):
        data_dir(None)
    with pytest.raises(ValueError, match="does not exist"):
        data_dir(str(tmp_path / "nope"))
    (tmp_path / "train.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; give the folder"):
        data_dir(str(tmp_path / "train.npz"))
    (tmp_path / "train.npz").unlink()
    monkeypatch.setenv("AVB_DATA", str(tmp_path))
    assert data_dir(None) == str(tmp_path)
    with pytest.raises(ValueError, match=r"put the images there as valid\.npz") as e:
        dataset_file(str(tmp_path), "valid")
    assert "binarized_mnist_valid.amat" in str(e.value)
    np.savetxt(tmp_path / "binarized_mnist_valid.amat", binary(rng), fmt="%d")
    assert dataset_file(str(tmp_path), "valid").endswith("binarized_mnist_valid.amat")
    np.savez(tmp_path / "valid.npz", x=binary(rng))
    f = dataset_file(str(tmp_path), "valid")
    assert f.endswith("valid.npz") and load_binary(f, dim=D).shape == (5, D)
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_binary(os.path.join(str(tmp_path), "x.csv"))
