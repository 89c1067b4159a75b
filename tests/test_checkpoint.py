"""Unit tests of avb_minimal.checkpoint: save_checkpoint, load_checkpoint, read_meta, write_json.

What is checked here (the training-level behaviour, resume and the "missing arrays" /
"mis-shaped arrays" wording, lives in tests/test_train.py and tests/test_cli.py):
  * nested trees (dicts, lists, (W, b) tuples, longer tuples, bare arrays) round-trip
    with their structure, values and float32 / float64 dtypes, and JSON metadata
    round-trips through both load_checkpoint and read_meta;
  * every failure to read (missing file, folder, not an .npz, an .npz without
    '__meta__', a missing or mis-shaped array) is a FileNotFoundError / ValueError
    whose message names the file;
  * writes are atomic: a save or write_json that fails part way leaves the previous
    file byte for byte as it was and no temporary file in the folder.
"""
import json
import os

import numpy as np
import pytest

from avb_minimal import checkpoint as C
from avb_minimal.checkpoint import (
    load_checkpoint,
    read_meta,
    save_checkpoint,
    write_json,
)


def _tree(rng):
    """A tree with every container kind save_checkpoint walks, in two dtypes."""
    return {
        "enc": [(rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)),
                (rng.standard_normal((4, 2)), rng.standard_normal(2))],            # float64
        "triple": (np.arange(3.0), np.ones((2, 2), np.float32), np.array(7.5)),    # not a (W, b) pair
        "pair_list": [np.zeros(2), np.full(3, 2.0, np.float32)],                   # a list, not (W, b)
        "nested": {"a": {"b": np.array([[1.0, -2.0]])}},
    }


def _assert_same_tree(got, want):
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            _assert_same_tree(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same_tree(g, w)
    else:
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.asarray(want).dtype and got.shape == np.shape(want)
        np.testing.assert_array_equal(got, want)


def _zeros_like_tree(tree):
    if isinstance(tree, dict):
        return {k: _zeros_like_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        out = [_zeros_like_tree(v) for v in tree]
        return tuple(out) if isinstance(tree, tuple) else out
    return np.zeros_like(tree)


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------ round trips
def test_nested_tree_round_trips_with_structure_values_and_dtypes(tmp_path, rng):
    params, opt = _tree(rng), {"m": [np.arange(4, dtype=np.float32)], "t": np.array(3)}
    meta = {"kind": "avb", "iteration": 12, "lr": 1e-3, "history": [{"loss": 0.5}], "note": "µ ok"}
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": params, "opt": opt}, meta)
    out, got_meta = load_checkpoint(ck, {"params": _zeros_like_tree(params), "opt": _zeros_like_tree(opt)})
    assert sorted(out) == ["opt", "params"]
    _assert_same_tree(out["params"], params)
    _assert_same_tree(out["opt"], opt)
    assert got_meta == meta


def test_arrays_are_stored_under_their_paths_in_their_own_dtype(tmp_path, rng):
    """(W, b) pairs are named W / b, lists and other tuples by index; nothing is upcast on disk."""
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": _tree(rng), "scalar": np.float32(2.5)}, {})
    with np.load(ck) as f:
        stored = {k: f[k] for k in f.files}
    assert sorted(stored) == sorted([
        "__meta__", "scalar",
        "params/enc/0/W", "params/enc/0/b", "params/enc/1/W", "params/enc/1/b",
        "params/triple/0", "params/triple/1", "params/triple/2",
        "params/pair_list/0", "params/pair_list/1", "params/nested/a/b"])
    assert stored["params/enc/0/W"].dtype == np.float32 and stored["params/enc/1/W"].dtype == np.float64
    assert stored["params/pair_list/1"].dtype == np.float32 and stored["scalar"].dtype == np.float32
    assert stored["scalar"].shape == () and float(stored["scalar"]) == 2.5


def test_load_casts_to_the_template_dtype(tmp_path):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"w": np.array([1.5, 2.5])}, {})                    # float64 on disk
    out, _ = load_checkpoint(ck, {"w": np.zeros(2, np.float32)})
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], np.array([1.5, 2.5], np.float32))


def test_metadata_round_trips_through_read_meta(tmp_path):
    meta = {"kind": "bavae", "iteration": 40, "seed": None, "ok": True,
            "arch": {"hidden": [8, 16], "eps_dim": 4}, "history": [{"it": 1, "loss": -3.25}]}
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": {"w": np.ones(2)}}, meta)
    assert read_meta(ck) == meta
    assert read_meta(str(ck)) == meta                                       # str and PathLike alike
    assert load_checkpoint(ck, {})[1] == meta                               # no templates: meta only


def test_save_creates_the_folder_and_overwrites_an_existing_checkpoint(tmp_path):
    ck = tmp_path / "deep" / "er" / "c.npz"
    save_checkpoint(ck, {"w": np.ones(3)}, {"iteration": 1})
    save_checkpoint(ck, {"w": np.full(3, 2.0)}, {"iteration": 2})
    out, meta = load_checkpoint(ck, {"w": np.zeros(3)})
    assert meta == {"iteration": 2}
    np.testing.assert_array_equal(out["w"], np.full(3, 2.0))
    assert _leftovers(ck.parent, {"c.npz"}) == []


# ------------------------------------------------------------------ errors name the file
@pytest.mark.parametrize("reader", [lambda p: load_checkpoint(p, {}), read_meta], ids=["load", "read_meta"])
def test_a_missing_file_is_a_file_not_found_error_naming_it(tmp_path, reader):
    ck = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        reader(ck)
    assert repr(str(ck)) in str(e.value)
    assert not ck.exists()


@pytest.mark.parametrize("reader", [lambda p: load_checkpoint(p, {}), read_meta], ids=["load", "read_meta"])
def test_a_folder_is_a_value_error_naming_it(tmp_path, reader):
    folder = tmp_path / "c.npz"
    folder.mkdir()
    with pytest.raises(ValueError, match="it is a folder") as e:
        reader(folder)
    assert repr(str(folder)) in str(e.value) and C.OTHER_RUN in str(e.value)


def _npy_bytes():
    import io
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b'{"json": 1}', "npy", "truncated"])
@pytest.mark.parametrize("reader", [lambda p: load_checkpoint(p, {}), read_meta], ids=["load", "read_meta"])
def test_a_file_that_is_not_an_npz_is_a_value_error_naming_it(tmp_path, reader, content):
    ck = tmp_path / "c.npz"
    if content == "npy":
        content = _npy_bytes()
    elif content == "truncated":
        save_checkpoint(ck, {"w": np.ones(100)}, {"k": 1})
        content = ck.read_bytes()[: ck.stat().st_size // 2]
    ck.write_bytes(content)
    with pytest.raises(ValueError, match="is not a checkpoint written by avb_minimal") as e:
        reader(ck)
    assert repr(str(ck)) in str(e.value)
    assert ck.read_bytes() == content                                       # left as it was


@pytest.mark.parametrize("reader", [lambda p: load_checkpoint(p, {}), read_meta], ids=["load", "read_meta"])
def test_an_npz_without_meta_is_a_value_error_naming_it(tmp_path, reader):
    ck = tmp_path / "c.npz"
    np.savez(ck, w=np.ones(2))
    with pytest.raises(ValueError, match="no '__meta__' entry") as e:
        reader(ck)
    assert repr(str(ck)) in str(e.value)


def test_missing_and_misshaped_arrays_are_all_named_with_the_file(tmp_path):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": {"enc": [(np.ones((2, 3)), np.ones(3))]}}, {})
    templates = {"params": {"enc": [(np.zeros((2, 5)), np.zeros(3))], "dec": [np.zeros(1)]}}
    with pytest.raises(ValueError) as e:
        load_checkpoint(ck, templates)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {str(ck)!r} does not match the model:")
    assert "missing arrays: params/dec/0" in msg
    assert "mis-shaped arrays: params/enc/0/W: expected (2, 5), found (2, 3)" in msg
    assert "params/enc/0/b" not in msg                                       # the right one is not blamed


def test_a_missing_name_is_reported_as_a_missing_array(tmp_path):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": {"w": np.ones(2)}}, {})
    with pytest.raises(ValueError, match=r"missing arrays: opt/m, opt/v$"):
        load_checkpoint(ck, {"params": {"w": np.zeros(2)}, "opt": {"m": np.zeros(2), "v": np.zeros(2)}})


def test_many_missing_arrays_are_cut_short(tmp_path):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {}, {})
    with pytest.raises(ValueError) as e:
        load_checkpoint(ck, {"p": [np.zeros(1)] * 10})
    msg = str(e.value)
    assert "p/7" in msg and "p/8" not in msg and msg.endswith(" ...")


# ------------------------------------------------------------------ atomic writes
def _raise(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("target", ["savez", "replace", "interrupt"])
def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch, target):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"w": np.ones(3)}, {"iteration": 1})
    before = ck.read_bytes()
    if target == "savez":
        monkeypatch.setattr(C.np, "savez", _raise)
        expected = OSError
    elif target == "replace":
        monkeypatch.setattr(C.os, "replace", _raise)
        expected = OSError
    else:                                   # Ctrl-C mid-write: a BaseException, not an Exception
        def interrupted(fh, **arrays):
            fh.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt
        monkeypatch.setattr(C.np, "savez", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        save_checkpoint(ck, {"w": np.full(3, 9.0)}, {"iteration": 2})
    monkeypatch.undo()
    assert ck.read_bytes() == before
    assert _leftovers(tmp_path, {"c.npz"}) == []
    assert read_meta(ck) == {"iteration": 1}


def test_unserialisable_meta_fails_before_touching_the_folder(tmp_path):
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"w": np.ones(3)}, {"iteration": 1})
    before = ck.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(ck, {"w": np.ones(3)}, {"bad": object()})
    assert ck.read_bytes() == before and _leftovers(tmp_path, {"c.npz"}) == []


def test_write_json_round_trips_and_converts_numpy_scalars(tmp_path):
    path = tmp_path / "sub" / "r.json"
    obj = {"elbo": np.float32(-91.5), "n": 3, "rows": [{"kind": "avb", "nll": np.float64(88.25)}]}
    write_json(str(path), obj)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "elbo": -91.5, "n": 3, "rows": [{"kind": "avb", "nll": 88.25}]}
    write_json(str(path), {"second": True})                                 # replaces the file
    assert json.loads(path.read_text(encoding="utf-8")) == {"second": True}
    assert _leftovers(path.parent, {"r.json"}) == []


@pytest.mark.parametrize("bad", [object(), {1, 2}, "replace"], ids=["object", "set", "os.replace"])
def test_a_failed_write_json_leaves_the_file_and_no_temporary_file(tmp_path, monkeypatch, bad):
    path = tmp_path / "r.json"
    write_json(str(path), {"kept": 1})
    before = path.read_bytes()
    if bad == "replace":
        monkeypatch.setattr(C.os, "replace", _raise)
        obj, expected = {"new": 2}, OSError
    else:                     # json.dump has already written part of the temporary file when it fails
        obj, expected = {"first": [1, 2, 3], "bad": bad}, TypeError
    with pytest.raises(expected):
        write_json(str(path), obj)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"r.json"}) == []


def test_a_failed_first_write_json_creates_no_file(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(TypeError):
        write_json(str(path), {"bad": object()})
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists(path)


def test_a_full_disk_names_the_file_that_could_not_be_written(tmp_path, monkeypatch):
    """[Errno 28] alone named no file; now the file and the fate of its previous version."""
    path, ck = tmp_path / "r.json", tmp_path / "c.npz"
    write_json(str(path), {"kept": 1})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(C.os, "replace", full)
    with pytest.raises(OSError, match=r"could not write file .*r\.json.*No space left on device.*previous version "
                                      r"is intact"):
        write_json(str(path), {"new": 2})
    with pytest.raises(OSError, match=r"could not write checkpoint .*c\.npz.*nothing was written there"):
        save_checkpoint(ck, {"w": np.ones(2)}, {})
    monkeypatch.undo()
    assert _leftovers(tmp_path, {"r.json"}) == [] and json.loads(path.read_text()) == {"kept": 1}


def test_hold_refuses_a_second_holder_and_leaves_no_lock_file(tmp_path):
    ck = str(tmp_path / "c.npz")
    with C.hold(ck):
        with pytest.raises(C.CheckpointBusy, match=f"process {os.getpid()}"):
            with C.hold(ck):
                pass
    with C.hold(ck):                     # free again once released
        pass
    assert list(tmp_path.iterdir()) == []
