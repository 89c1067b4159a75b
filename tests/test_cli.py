"""The command line as a user runs it."""
import json
import subprocess
import sys

import pytest

from avb_minimal.__main__ import main
from avb_minimal.fast.bench_step import step_flops
from avb_minimal.models import Arch


def test_table1_quick_writes_json_and_figure(tmp_path, capsys, smoke_table1):
    out = tmp_path / "res.json"
    rc = main(["reproduce", "table1", "--quick", "--quiet", "--models", "vae,avb",
               "--json", str(out), "--out", str(tmp_path / "run")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "paper vae" in text and "ours avb" in text and "-1.403" in text
    # the short run says so above its table, and names the full run
    assert text.index("short run (400 iterations") < text.index("paper vae")
    assert "the full run is `python -m avb_minimal reproduce table1 --seeds 3`" in text
    res = json.loads(out.read_text())
    for kind in ("vae", "avb"):
        for key in ("log_likelihood", "reconstruction_error", "elbo", "kl_aggregate", "wall_seconds"):
            assert isinstance(res[kind][key], float)
        assert res[kind]["log_likelihood"] <= -1.386   # never above the optimum -log 4
    assert (tmp_path / "run" / "figure6_latent_quick.png").stat().st_size > 10000
    # quick files are named apart, so the README's full run can follow in the same --out
    assert sorted(p.name for p in (tmp_path / "run").glob("*.npz")) == ["avb_seed0_quick.npz", "vae_seed0_quick.npz"]


def test_bench_step_keys(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "step", "--width", "32", "--batch", "64", "--steps", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("ms_per_step", "gflop_per_step", "sgemm_gflops", "fraction_of_peak"):
        assert r[key] > 0
    assert r["provenance"]["device"] == "cpu" and r["provenance"]["version"]   # where the figures come from


def test_bench_ais_keys(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["bench", "ais", "--examples", "3", "--steps", "3", "--chains", "2", "--leapfrog", "2",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["seconds_per_example"] > 0 and r["decoder_calls"] == 1 + 2 * 2 and r["init"] == "prior"
    assert r["log_likelihood_mean"] < 0 and r["provenance"]["device"] == "cpu"
    assert "s per example" in capsys.readouterr().out


def test_flop_rule_paper_widths():
    flops, P = step_flops(Arch(), 512)
    assert P == {"enc": 68 * 512 + 512 * 512 + 512 * 2, "dec": 2 * 512 + 512 * 512 + 512 * 4,
                 "f": 4 * 512 + 2 * 512 * 512, "g": 2 * 512 + 2 * 512 * 512}
    assert flops == 2 * 512 * (3 * P["enc"] + 3 * P["dec"] + 2 * P["f"] + 5 * P["g"])


def test_bad_arguments_are_named():
    r = subprocess.run([sys.executable, "-m", "avb_minimal", "reproduce", "table1", "--models", "vae,gan"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--models takes a comma list of vae, avb, avb_ac" in r.stderr
    r = subprocess.run([sys.executable, "-m", "avb_minimal", "reproduce", "table1", "--seeds", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "argument --seeds: must be a positive integer" in r.stderr


def test_help_runs():
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "table1", "--help"])
    assert e.value.code == 0


def test_train_resumes_and_rejects_a_foreign_checkpoint(tmp_path, capsys):
    ck = tmp_path / "vae.npz"
    assert main(["train", "--model", "vae", "--quick", "--iters", "20", "--checkpoint", str(ck), "--quiet"]) == 0
    assert ck.exists()
    rc = main(["train", "--model", "avb", "--quick", "--iters", "20", "--checkpoint", str(ck), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds a 'vae' model, not 'avb'" in err and "delete it, or write this run elsewhere" in err
    bv = tmp_path / "bavae.npz"                        # the Biadversarial VAE trains the same way
    assert main(["train", "--model", "bavae", "--quick", "--iters", "20", "--checkpoint", str(bv), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"log_likelihood", "reconstruction_error", "elbo", "elbo_from_T", "wall_seconds"} <= set(out)
    assert main(["train", "--model", "bavae", "--quick", "--iters", "20", "--checkpoint", str(ck), "--quiet"]) == 2
    assert "holds a 'vae' model, not 'bavae'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["train", "--checkpoint", "x.npz", "--curve-every", "-5"], "argument --curve-every: must be a non-negative integer"),
    (["reproduce", "table1", "--curve-every", "often"], "argument --curve-every: must be a non-negative integer"),
    (["train", "--checkpoint", "x.npz", "--seed", "-1"], "argument --seed: must be a non-negative integer"),
    (["reproduce", "mnist", "--seed", "x"], "argument --seed: must be a non-negative integer"),
    (["reproduce", "mnist", "--models", "avb,bavea"], "vae, avb, avb_ac, bavae, bavae_exact"),
])
def test_bad_numbers_and_model_names_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_a_model_named_twice_runs_once():
    from avb_minimal.__main__ import _mnist_models
    assert _mnist_models("vae,avb,vae") == ["vae", "avb"]


def _blocker(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    return str(f)


@pytest.mark.parametrize("argv, needle", [
    (["reproduce", "table1", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["reproduce", "table1", "--out", "{file}/sub"], "--out '{file}/sub' cannot be made: '{file}' is a file"),
    (["reproduce", "table1", "--json", "{file}/r.json"], "--json's folder '{file}' is a file"),
    (["reproduce", "mnist", "--json", "{tmp}"], "--json '{tmp}' is a folder; give a file path"),
    (["reproduce", "eight-schools", "--out", "{file}"], "--out '{file}' is a file"),
    (["train", "--checkpoint", "{file}/c.npz"], "--checkpoint's folder '{file}' is a file"),
    (["bench", "step", "--plot", "{tmp}/s.png"], "--plot draws a --sweep: add --sweep"),
    (["bench", "step", "--sweep", "--plot", "{tmp}/s.png", "--also", "{tmp}/none.json"], "--also '{tmp}/none.json': no such file"),
    (["bench", "ops", "--json", "{file}/o.json"], "--json's folder '{file}' is a file"),
    (["bench", "step", "--sweep", "--profile"], "--sweep, --profile: choose one"),
    (["bench", "ais", "--model", "{tmp}/none.npz"], "--model '{tmp}/none.npz': no such file"),
    (["reproduce", "mnist", "--data", "{tmp}/nowhere"], "dataset folder '{tmp}/nowhere' does not exist"),
])
def test_bad_paths_are_named_before_any_work(argv, needle, tmp_path, capsys, monkeypatch):
    """A path that cannot be written is refused up front, naming its flag (before: after the
    whole run, or with a traceback), and nothing is created: not even the default --out."""
    file = _blocker(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [a.format(file=file, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert needle.format(file=file, tmp=tmp_path) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys):
    import io

    import numpy as np
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, np.zeros(3))                             # a .npy renamed .npz
    np.savez(npz, x=np.zeros(3))                          # an .npz not written by avb_minimal
    for content in (b"", b'{"json": 1}', npy.getvalue(), npz.getvalue()):
        ck = tmp_path / "c.npz"
        ck.write_bytes(content)
        assert main(["train", "--quick", "--checkpoint", str(ck), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"checkpoint '{ck}' is not a checkpoint written by avb_minimal" in err and "Traceback" not in err
        assert ck.read_bytes() == content                 # left as it was
