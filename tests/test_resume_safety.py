"""Nothing silent: a resume checks what it resumes, one writer per checkpoint, and every bad
input or fault is one line naming the file or flag (the command line as a user runs it).

What is checked: the checkpoint records its seed and configuration and a resume compares
them with the asked ones; two runs cannot write one checkpoint; and each bad input below
ends in one line naming the file or flag, with nothing left behind.
A few seconds on one core (the training runs are the quick settings for 20-40 iterations).
"""
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from avb_minimal import checkpoint as C
from avb_minimal.__main__ import main
from avb_minimal.train import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(ck, *extra):
    return main(["train", "--model", "vae", "--quick", "--iters", "20", "--checkpoint", str(ck), "--quiet", *extra])


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("avb-minimal:")]
    assert "Traceback" not in err and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


def _break_deflate(path, member):
    """Compressed data whose first deflate block has an invalid type (zlib.error on reading)."""
    with zipfile.ZipFile(path) as z:
        offset = z.getinfo(member).header_offset
    raw = bytearray(open(path, "rb").read())
    start = offset + 30 + int.from_bytes(raw[offset + 26:offset + 28], "little") \
        + int.from_bytes(raw[offset + 28:offset + 30], "little")      # the local header's own lengths
    raw[start:start + 4] = b"\xff" * 4
    with open(path, "wb") as fh:
        fh.write(bytes(raw))


def _rewrite_meta(ck, **changes):
    """The checkpoint with its metadata edited (None: the key removed), as a user could."""
    with np.load(ck) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(ck, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.fixture
def trained(tmp_path):
    ck = tmp_path / "c.npz"
    assert _train(ck) == 0
    return ck


# ------------------------------------------------------------------ checkpoints know their run
def test_the_checkpoint_stores_the_run(trained):
    import avb_minimal
    meta = C.read_meta(trained)
    assert meta["seed"] == 0 and meta["kind"] == "vae" and meta["version"] == avb_minimal.__version__
    assert meta["config"]["iters"] == 20 and "hidden" in meta["arch"] and meta["device"] == "cpu"


@pytest.mark.parametrize("argv, needles", [
    (["--seed", "1"], ["seed: checkpoint 0, asked 1", "--allow-config-change"]),
    (["--iters", "10"], ["has already trained 20 iterations; --iters 10 asks for fewer"]),
])
def test_a_resume_with_other_settings_says_what_differs_and_stops(trained, capsys, argv, needles):
    before = trained.read_bytes()
    capsys.readouterr()
    assert _train(trained, *argv) == 2
    _one_error_line(capsys, repr(str(trained)), *needles)
    assert trained.read_bytes() == before


def test_more_iterations_extend_the_run_and_a_flag_allows_a_change_saying_so(trained, capsys):
    capsys.readouterr()
    assert _train(trained, "--iters", "30") == 0
    assert "the run now ends at iteration 30 (was 20)" in capsys.readouterr().err
    assert C.read_meta(trained)["iteration"] == 30
    assert _train(trained, "--iters", "30", "--seed", "4", "--allow-config-change") == 0
    assert "continuing with changed settings (seed: checkpoint 0, asked 4)" in capsys.readouterr().err


def test_a_changed_training_setting_is_named(trained):
    from avb_minimal.data import four_points
    from avb_minimal.experiments.table1 import table1_settings
    from avb_minimal.train import train
    arch, cfgs, _ = table1_settings(True)
    cfg = TrainConfig(**dict(cfgs["vae"].__dict__, iters=20, lr_gen=1e-2, batch=7))
    with pytest.raises(ValueError, match=r"batch: checkpoint \d+, asked 7; lr_gen: checkpoint .*, asked 0.01"):
        train("vae", four_points(), arch, cfg, checkpoint=str(trained))
    # a VAE has no adversary: its settings may differ (the run extends, nothing is refused)
    cfg = TrainConfig(**dict(cfgs["vae"].__dict__, iters=22, lr_adv=0.123, adv_steps=3, negatives="all_pairs"))
    _, info = train("vae", four_points(), arch, cfg, checkpoint=str(trained))
    assert info["history"][-1]["iteration"] == 22


@pytest.mark.parametrize("changes, needle", [
    ({"iteration": -50}, "'iteration' should be int >= 0, found -50"),
    ({"iteration": "10"}, "'iteration' should be int >= 0, found '10'"),
    ({"rng_state": None}, "'rng_state' should be dict, found None (missing)"),
    ({"rng_state": {"bit_generator": "PCG64", "state": 5}}, "its 'rng_state' cannot be restored"),
    ({"opt_t": {"gen": "x"}}, "'opt_t' should map"),
    ({"iteration": 900}, "iteration 900 is past its configuration's iters 20"),
])
def test_bad_metadata_is_one_line_naming_the_file(trained, capsys, changes, needle):
    _rewrite_meta(trained, **changes)
    capsys.readouterr()
    assert _train(trained) == 2
    _one_error_line(capsys, repr(str(trained)), needle)


def test_nan_weights_are_named_as_such(trained, capsys):
    with np.load(trained) as f:
        arrays = {k: f[k] for k in f.files}
    key = next(k for k in arrays if k.startswith("params/"))
    arrays[key] = np.full_like(arrays[key], np.nan)
    with open(trained, "wb") as fh:
        np.savez(fh, **arrays)
    capsys.readouterr()
    assert _train(trained) == 2
    _one_error_line(capsys, repr(str(trained)), "NaN or inf", key)


@pytest.mark.parametrize("damage", ["flip", "deflate"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, trained, capsys, damage):
    if damage == "flip":                        # flipped bytes inside the stored arrays: a CRC error
        raw = bytearray(trained.read_bytes())
        for i in range(200, 260):
            raw[i] ^= 0xFF
        trained.write_bytes(bytes(raw))
    else:                                       # compressed, then its deflate data broken
        with np.load(trained) as f:
            arrays = {k: f[k] for k in f.files}
        with open(trained, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        _break_deflate(trained, next(k for k in arrays if k.startswith("params")) + ".npy")
    capsys.readouterr()
    assert _train(trained) == 2
    _one_error_line(capsys, repr(str(trained)))


# ------------------------------------------------------------------ one writer per output
def test_a_second_writer_is_refused_naming_the_holder(trained, capsys):
    before = trained.read_bytes()
    with C.hold(str(trained)):
        capsys.readouterr()
        assert _train(trained, "--iters", "30") == 2
        _one_error_line(capsys, "is being written by another run", f"process {os.getpid()}")
    assert trained.read_bytes() == before and not os.path.exists(f"{trained}.lock")


def test_a_dead_holders_lock_and_partial_files_are_taken_over(trained, capsys):
    code = ("import os, signal, sys; from avb_minimal import checkpoint as C\n"
            "with C.hold(sys.argv[1]):\n"
            "    open(os.path.join(os.path.dirname(sys.argv[1]), '.tmp-c.npz.abcd1234.npz'), 'wb').write(b'PK')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, str(trained)], env=env)
    assert proc.returncode == -signal.SIGKILL
    (trained.parent / ".tmp-k3j9x_2a.npz").write_bytes(b"PK")          # an older version's partial
    assert os.path.exists(f"{trained}.lock")
    assert _train(trained, "--iters", "30") == 0
    assert sorted(p.name for p in trained.parent.iterdir()) == ["c.npz"]


def test_an_output_naming_the_checkpoint_is_refused_up_front(trained, capsys):
    before = trained.read_bytes()
    capsys.readouterr()
    assert _train(trained, "--json", str(trained)) == 2
    _one_error_line(capsys, "is the same file as", "give each output its own file")
    assert trained.read_bytes() == before


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(trained, capsys, monkeypatch):
    before = trained.read_bytes()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(C.np, "savez", full)
    capsys.readouterr()
    assert _train(trained, "--iters", "30") == 2
    _one_error_line(capsys, f"could not write checkpoint {str(trained)!r}", "No space left on device",
                    "the previous version is intact")
    monkeypatch.undo()
    assert trained.read_bytes() == before and sorted(p.name for p in trained.parent.iterdir()) == ["c.npz"]


# ------------------------------------------------------------------ bad inputs: one line, nothing left behind
@pytest.mark.parametrize("kwargs, needle", [
    ({"iters": 2.5}, "iters must be a positive integer, got 2.5"),
    ({"lr_gen": "1e-3"}, "lr_gen must be a number, got '1e-3'"),
    ({"batch": True}, "batch must be a positive integer, got True"),
])
def test_train_config_checks_types(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)


def _mnist_folder(tmp_path, rng):
    d = tmp_path / "data"
    d.mkdir()
    np.savez(d / "train.npz", x=(rng.random((40, 784)) < 0.3).astype(np.uint8))
    np.savez(d / "valid.npz", x=(rng.random((8, 784)) < 0.3).astype(np.uint8))
    return d


@pytest.mark.parametrize("argv, needle", [
    (["bench", "step", "--width", "10000000"], "a step with --batch 512 --width 10000000 would need about"),
    (["reproduce", "mnist", "--data", "{data}", "--latent", "1000000000", "--out", "{tmp}/out"],
     "a model with --latent 1000000000 would need about"),
    (["reproduce", "mnist", "--data", "{data}", "--quick", "--json", "{tmp}/list.json", "--out", "{tmp}/out"],
     "holds JSON that is not a results file of reproduce mnist (a list)"),
    (["reproduce", "mnist", "--data", "{data}", "--quick", "--split", "bad", "--out", "{tmp}/out"],
     "bad.npz: not a readable .npz file"),
    (["assignments", "build", "{tmp}/list.json/sub/s"], "is a file, not a folder"),
])
def test_bad_inputs_are_one_line_and_leave_nothing_behind(tmp_path, rng, capsys, argv, needle):
    data = _mnist_folder(tmp_path, rng)
    (tmp_path / "list.json").write_text("[1, 2]")
    with open(data / "bad.npz", "wb") as fh:             # compressed, with broken deflate data
        np.savez_compressed(fh, x=np.zeros((8, 784), np.uint8))
    _break_deflate(data / "bad.npz", "x.npy")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    _one_error_line(capsys, needle.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before           # no empty --out left


def test_the_command_line_loads_idx_images(tmp_path, rng, capsys):
    """An IDX file as --split is binarized with the seed's draws (before: 'pass rng=')."""
    data = _mnist_folder(tmp_path, rng)
    pixels = rng.integers(0, 256, (8, 784)).astype(np.uint8)
    (data / "t10k-images-idx3-ubyte").write_bytes(
        b"".join(int(v).to_bytes(4, "big") for v in (2051, 8, 28, 28)) + pixels.tobytes())
    argv = ["reproduce", "mnist", "--data", str(data), "--quick", "--split", "t10k-images-idx3-ubyte",
            "--models", "vae", "--out", str(tmp_path / "out"), "--ais-steps", "2", "--ais-examples", "4",
            "--ais-chains", "1", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
