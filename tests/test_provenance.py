"""Every number regenerable from the command line: each JSON records where it comes from
(version, commit, command line, date, BLAS threads, device); seeds and the training step are
flags of every command that trains; one name per quantity; nulls where a figure does not exist."""
import argparse
import datetime
import json
import os
import subprocess
import sys

import pytest

from avb_minimal.__main__ import build_parser, main
from avb_minimal.argcheck import seed_list
from avb_minimal.checkpoint import git_commit, provenance, write_json
from avb_minimal.experiments import mnist as MN
from avb_minimal.objectives import OBJECTIVES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"package", "version", "git_commit", "git_dirty", "command_line", "date", "blas_threads", "device"}


def _cli(*argv, **kw):
    """python -m avb_minimal ARGV with this checkout's package, one BLAS thread."""
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "avb_minimal", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env, **kw)


def test_provenance_fields():
    p = provenance("gpu", argv=["/x/avb_minimal/__main__.py", "reproduce", "table1", "--json", "a b.json"])
    assert set(p) == KEYS and p["device"] == "gpu" and p["package"] == "avb-minimal"
    assert p["command_line"] == "python -m avb_minimal reproduce table1 --json 'a b.json'"
    when = datetime.datetime.fromisoformat(p["date"])
    assert when.utcoffset() == datetime.timedelta(0)                        # UTC, ISO 8601
    assert p["blas_threads"] is None or p["blas_threads"] >= 1
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        assert len(p["git_commit"]) == 40


def test_the_commit_is_the_one_the_command_started_from(monkeypatch):
    """A run writes its JSON hours after it starts; by then the checkout may have moved on."""
    from avb_minimal import checkpoint as C
    monkeypatch.setattr(C, "_STARTED_FROM", {})
    monkeypatch.setattr(C, "git_commit", lambda folder=None: {"git_commit": "a" * 40, "git_dirty": False})
    C.note_start()
    monkeypatch.setattr(C, "git_commit", lambda folder=None: {"git_commit": "b" * 40, "git_dirty": True})
    assert (C.provenance()["git_commit"], C.provenance()["git_dirty"]) == ("a" * 40, False)
    C._STARTED_FROM.clear()                                   # no command started: the checkout now
    assert C.provenance()["git_commit"] == "b" * 40


def test_no_commit_outside_a_checkout(tmp_path):
    assert git_commit(str(tmp_path)) == {"git_commit": None, "git_dirty": None}


def test_write_json_adds_provenance_on_request(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    write_json(tmp_path / "b.json", {"x": 1}, device="cpu")
    assert set(json.loads((tmp_path / "b.json").read_text())["provenance"]) == KEYS


def test_train_json_records_the_command_line(tmp_path):
    js = tmp_path / "t.json"
    r = _cli("train", "--model", "vae", "--quick", "--iters", "5", "--seed", "2", "--step", "readable",
             "--checkpoint", str(tmp_path / "c.npz"), "--json", str(js), "--quiet")
    assert r.returncode == 0, r.stderr
    p = json.loads(js.read_text())["provenance"]
    assert p["command_line"].startswith("python -m avb_minimal train --model vae --quick --iters 5 --seed 2")
    assert p["device"] == "cpu" and p["blas_threads"] == 1


def test_table1_one_seed_has_null_stds_and_no_plus_minus(tmp_path, capsys, smoke_table1):
    js = tmp_path / "r.json"
    rc = main(["reproduce", "table1", "--quick", "--quiet", "--models", "avb", "--seed", "1", "--step", "readable",
               "--json", str(js), "--out", str(tmp_path / "run")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "+-" not in text
    res = json.loads(js.read_text())
    assert res["settings"]["seeds"] == [1] and res["provenance"]["device"] == "cpu"
    assert res["avb"]["log_likelihood_std"] is None and res["avb"]["elbo_from_T_std"] is None
    assert "elbo_from_T" in res["avb"] and "elbo_adversary" not in json.dumps(res)
    assert (tmp_path / "run" / "avb_seed1_quick.npz").exists()


def test_eight_schools_one_seed_has_null_std(tmp_path):
    from avb_minimal.experiments.eight_schools import (
        format_eight_schools,
        run_eight_schools,
    )
    js = tmp_path / "e.json"
    res = run_eight_schools(quick=True, seeds=(4,), out_dir=None, methods=("meanfield",), json_path=str(js))
    assert res["kl_to_hmc"]["meanfield"]["std"] is None and "+-" not in format_eight_schools(res)
    out = json.loads(js.read_text())
    assert out["seeds"] == [4] and set(out["provenance"]) == KEYS


def test_seed_syntax():
    assert seed_list("3") == (0, 1, 2)
    assert seed_list("4,7") == (4, 7) and seed_list("5,") == (5,)
    for bad in ("0", "x", "1,1", "1,-2", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)
    a = build_parser().parse_args(["reproduce", "eight-schools", "--seeds", "2,5"])
    assert tuple(a.seeds) == (2, 5) and a.seed is None
    r = _cli("reproduce", "table1", "--seed", "1", "--seeds", "2")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


@pytest.mark.parametrize("cmd", [["train", "--checkpoint", "c.npz"], ["reproduce", "table1"],
                                 ["reproduce", "mnist"]])
def test_step_and_seeds_on_every_command_that_trains(cmd):
    a = build_parser().parse_args(cmd + ["--step", "fast", "--seed", "3"])
    assert a.step == "fast" and a.seed == 3


def test_eight_schools_says_why_it_has_no_step(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "eight-schools", "--help"])
    assert "no --step" in " ".join(capsys.readouterr().out.split())


def test_mnist_seeds_apart_and_summarised():
    assert MN.checkpoint_path("o", "avb", 8, True) == os.path.join("o", "avb_z8_quick.npz")
    assert MN.checkpoint_path("o", "avb", 8, True, seed=2) == os.path.join("o", "avb_z8_seed2_quick.npz")
    row = {"ais_log_likelihood": -100.0, "elbo": None, "elbo_from_T": -99.0, "reconstruction": 80.0}
    one = MN.mnist_over_seeds({0: {"avb": row}})
    assert one["avb"]["ais_log_likelihood_std"] is None and "+-" not in MN.format_mnist_over_seeds(one)
    two = MN.mnist_over_seeds({0: {"avb": row}, 1: {"avb": dict(row, ais_log_likelihood=-102.0)}})
    assert two["avb"]["ais_log_likelihood"] == -101.0 and two["avb"]["ais_log_likelihood_std"] == 1.0


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == "avb-minimal 0.1.0"


def test_every_command_and_flag_has_help():
    missing = []

    def walk(parser, name):
        if not (parser.description or name == "avb-minimal"):
            missing.append(f"{name}: no description")
        for act in parser._actions:
            if isinstance(act, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in act._choices_actions}
                for sub, p in act.choices.items():
                    if not helps.get(sub):
                        missing.append(f"{name} {sub}: no help")
                    walk(p, f"{name} {sub}")
            elif not act.help or act.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(act.option_strings) or act.dest}: no help")
    walk(build_parser(), "avb-minimal")
    assert not missing, missing


def test_closed_pipe_ends_quietly():
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(f"{sys.executable} -m avb_minimal assignments list | head -1; exit ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.stdout.startswith("task ") and r.stdout.count("\n") == 1
    assert r.stderr == "" and r.returncode in (0, 141)


def test_objective_names_are_the_works_names():
    assert {"tutorial", "tutorial_corrected", "bavae_encoder", "bavae_decoder"} <= set(OBJECTIVES)
    assert not [n for n, o in OBJECTIVES.items() if "seed" in n or "seed" in o.equation]
