"""The chapters 01-12 (one per equation group of the AVB paper; 09-10: black-box VI; 11-12:
the other seeds' objectives and the Biadversarial VAE) run end to end; 13 (MNIST) is
tested in test_mnist.py, where its data is found.

Each chapter is run with --quick in a subprocess, writing into a temporary --out
folder; it must exit 0 (its own asserted checks of the paper's equations passed) and
write its PNG figure(s).  Bad command lines must give a short error, not a traceback.
The whole file takes about 2 minutes on a 2-core CPU.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAPTERS = {
    "01_elbo.py": ["01_elbo.png"],
    "02_implicit_encoder.py": ["02_implicit_encoder.png"],
    "03_adversary.py": ["03_adversary.png"],
    "04_gradient_identity.py": ["04_gradient_identity.png"],
    "05_avb.py": ["05_avb_fig6.png", "05_avb_loglik.png"],
    "06_nash.py": ["06_nash.png"],
    "07_adaptive_contrast.py": ["07_adaptive_contrast.png"],
    "08_related_work.py": ["08_related_work.png"],
    "09_vi_toys.py": ["09_vi_toys.png"],
    "10_eight_schools.py": ["10_eight_schools_fig3.png", "10_eight_schools_fig4.png"],
    "11_objective_family.py": ["11_objective_family.png"],
    "12_biadversarial_vae.py": ["12_biadversarial_vae.png"],
    "14_kernels.py": ["14_kernels.png"],
}
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
SHARED_MNIST = os.environ.get("AVB_DATA") or os.path.join(ROOT, os.pardir, "shared", "data", "binarized_mnist")


def run(chapter, *args, timeout=300, env=ENV):
    return subprocess.run([sys.executable, os.path.join(ROOT, "chapters", chapter), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_chapter_runs_quick_and_writes_its_figures(chapter, tmp_path):
    # chapter 12's MNIST part runs where the files are: tell it where (or a folder that is not
    # there), so the expectation below does not hang on which copy of the package it imports
    mnist = SHARED_MNIST if os.path.exists(os.path.join(SHARED_MNIST, "train.npz")) else str(tmp_path / "no-mnist")
    proc = run(chapter, "--quick", "--out", str(tmp_path), env=dict(ENV, AVB_DATA=mnist))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert "[ok]" in proc.stdout                      # the chapter reports its asserted checks
    assert "What goes wrong" in proc.stdout
    pngs = list(CHAPTERS[chapter])
    if chapter == "12_biadversarial_vae.py":
        if mnist == SHARED_MNIST:
            pngs.append("12_biadversarial_vae_mnist.png")
            assert "starved" in proc.stdout
        else:
            assert "MNIST part skipped" in proc.stdout and "does not exist" in proc.stdout
    for png in pngs:
        path = tmp_path / png
        assert path.exists() and path.stat().st_size > 10_000, png
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def _assert_short_error(proc, needle):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert proc.stdout == "", proc.stdout              # refused before any work was done


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
@pytest.mark.parametrize("where", ["the file", "under the file"])
def test_chapter_rejects_an_out_that_is_not_a_writable_folder(chapter, where, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker if where == "the file" else blocker / "sub"
    _assert_short_error(run(chapter, "--quick", "--out", str(out), timeout=60), "--out")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_help_names_every_flag(chapter):
    proc = run(chapter, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--quick", "--full", "--out DIR", "--seed"):
        assert flag in proc.stdout, (flag, proc.stdout)


@pytest.mark.parametrize("args, needle", [(["--bogus"], "unrecognized arguments"),
                                          (["--quick", "--full"], "exclude each other"),
                                          (["--seed", "one"], "--seed"),
                                          (["--seed", "-1"], "argument --seed: must be a non-negative integer")])
def test_bad_flags_give_a_one_line_error(args, needle):
    _assert_short_error(run("03_adversary.py", *args, timeout=60), needle)


DEVICE_CHAPTERS = ("01_elbo.py", "05_avb.py", "06_nash.py", "12_biadversarial_vae.py", "13_mnist.py")


@pytest.mark.parametrize("chapter", sorted(CHAPTERS) + ["13_mnist.py"])
def test_device_flag_where_the_library_trains(chapter, tmp_path):
    """Chapters that train through the library take --device cpu|gpu (checked before any work:
    without a GPU, --device gpu is one line); chapters with their own loops run on the CPU and
    do not offer it."""
    from avb_minimal import backend
    proc = run(chapter, "--help", timeout=60)
    assert ("--device {cpu,gpu}" in proc.stdout) == (chapter in DEVICE_CHAPTERS), proc.stdout
    if chapter in DEVICE_CHAPTERS and backend.cupy_module() is None:
        _assert_short_error(run(chapter, "--quick", "--device", "gpu", "--out", str(tmp_path), timeout=60),
                            "--device gpu: cupy is")
        assert list(tmp_path.iterdir()) == []


def test_every_chapter_is_listed():
    found = sorted(f for f in os.listdir(os.path.join(ROOT, "chapters"))
                   if f[:2].isdigit() and f.endswith(".py") and f != "13_mnist.py")   # 13: tests/test_mnist.py
    assert found == sorted(CHAPTERS)


def test_mnist_folder_is_found_from_the_working_directory(tmp_path, monkeypatch):
    """`pip install .` puts the package in site-packages, whose parent is not the checkout: the
    chapters then find ../shared/data/binarized_mnist from the working directory."""
    from avb_minimal import chapter as C
    shared = tmp_path / "shared" / "data" / "binarized_mnist"
    shared.mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.delenv("AVB_DATA", raising=False)
    monkeypatch.setattr(C, "ROOT", str(tmp_path / "site" / "packages"))   # its parent has no shared/
    monkeypatch.chdir(tmp_path / "repo")
    assert C.mnist_folder() == str(shared)
    monkeypatch.chdir(tmp_path)                                           # ../shared is not there
    assert C.mnist_folder() is None
    monkeypatch.setattr(C, "ROOT", str(tmp_path / "repo"))                # an editable install
    assert C.mnist_folder() == str(shared)
    monkeypatch.setenv("AVB_DATA", str(tmp_path / "mine"))               # the variable wins
    assert C.mnist_folder() == str(tmp_path / "mine")


def test_the_mnist_chapters_take_data_and_name_a_missing_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    proc = run("13_mnist.py", "--quick", "--out", str(tmp_path), "--data", missing, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"dataset folder {missing!r} does not exist" in proc.stderr
    proc = run("12_biadversarial_vae.py", "--help", timeout=60)
    assert proc.returncode == 0 and "--data DIR" in proc.stdout
