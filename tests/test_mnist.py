"""Binarized MNIST (Table 2): the sec. 5.2 adversary, the evaluation, `reproduce mnist`
on a small fake dataset written here, resuming an interrupted run, and chapter 13."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from avb_minimal import models as M
from avb_minimal import train as TR
from avb_minimal.__main__ import main
from avb_minimal.checkpoint import read_meta
from avb_minimal.distributions import kl_diag_normal_std
from avb_minimal.experiments import mnist as MN
from avb_minimal.nn import mlp
from avb_minimal.ops import bernoulli_loglik

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.environ.get("AVB_DATA") or os.path.join(ROOT, os.pardir, "shared", "data", "binarized_mnist")


# ------------------------------------------------------------------ models (sec. 5.2, supplement III)
def test_adversary_unary_terms_add_up(rng):
    """sec. 5.2: T(x, z) = <f(x), g(z)> + r(x) + s(z) (+ the folded prior term ||z||^2 / 2),
    for matched rows and for all pairs."""
    arch = M.Arch(x_dim=7, z_dim=3, adv_hidden=(9,), adv_dim=5, adv_unary=True)
    adv = M.init_params(rng, "avb", arch, np.float64)["adv"]
    x, z = rng.random((6, 7)), rng.standard_normal((6, 3))
    F, G = mlp(adv["f"], x), mlp(adv["g"], z)                                    # (6, H + 1)
    f, r, g, s = F[:, :5], F[:, 5], G[:, :5], G[:, 5]
    fold = 0.5 * np.sum(z ** 2, 1)
    np.testing.assert_allclose(M.adversary(adv, x, z, arch.act, arch.adv_unary), np.sum(f * g, 1) + r + s + fold, rtol=1e-12)
    np.testing.assert_allclose(M.adversary_all_pairs(adv, x, z, arch.act, arch.adv_unary),
                               f @ g.T + r[:, None] + s[None, :] + fold[None, :], rtol=1e-12)


def test_the_three_kinds_share_one_decoder_architecture():
    arch = MN.mnist_arch(8, quick=True)
    shapes = {k: [W.shape for W, _ in M.init_params(np.random.default_rng(0), k, arch)["dec"]] for k in M.KINDS}
    assert shapes["vae"] == shapes["avb"] == shapes["avb_ac"]
    assert shapes["vae"][0][0] == 8 and shapes["vae"][-1][1] == 784
    assert MN.mnist_arch(8).adv_unary and MN.mnist_arch(8).adversary == "inner"


# ------------------------------------------------------------------ evaluation
def small(kind, rng):
    arch = M.Arch(x_dim=12, z_dim=3, hidden=(10,), adv_hidden=(8,), adv_dim=4, adv_unary=True,
                  eps_dim=5, n_basis=3, basis_hidden=6)
    x = (rng.random((7, 12)) < 0.5).astype(np.float32)
    return arch, M.init_params(np.random.default_rng(0), kind, arch), x


def test_vae_elbo_and_reconstruction_by_hand(rng):
    arch, p, x = small("vae", rng)
    out = MN.elbo_and_reconstruction(p, "vae", x, arch, np.random.default_rng(3), n_samples=4, chunk=3)
    r2 = np.random.default_rng(3)                                              # the same draws, by hand
    lls, kls = [], []
    for s in range(0, 7, 3):
        xb = x[s:s + 3]
        eps = M.sample_noise(r2, "vae", arch, 4 * len(xb))
        mean, log_var = M.gaussian_encoder(p["enc"], xb, arch.act)
        z = np.repeat(mean, 4, 0) + np.exp(0.5 * np.repeat(log_var, 4, 0)) * eps
        lls.append(bernoulli_loglik(np.repeat(xb, 4, 0), M.decoder_logits(p["dec"], z, arch.act)).reshape(-1, 4))
        kls.append(kl_diag_normal_std(mean, log_var))
    ll, kl = np.concatenate(lls), np.concatenate(kls)
    np.testing.assert_allclose(out["elbo"], ll.mean(1) - kl, rtol=1e-5)
    np.testing.assert_allclose(out["reconstruction"], -ll.mean(1), rtol=1e-5)
    assert np.all((0 <= out["pixel_error"]) & (out["pixel_error"] <= 1))


@pytest.mark.parametrize("kind", ["avb", "avb_ac"])
def test_avb_reports_the_T_based_estimate_under_its_own_name(kind, rng):
    arch, p, x = small(kind, rng)
    out = MN.elbo_and_reconstruction(p, kind, x, arch, rng, n_samples=3)
    assert "elbo" not in out and out["elbo_from_T"].shape == (7,) and np.all(np.isfinite(out["elbo_from_T"]))
    res = MN.evaluate_mnist(p, kind, x, arch, rng, ais_steps=3, ais_chains=2, leapfrog=2, elbo_samples=2)
    assert res["elbo"] is None and res["elbo_is_bound"] is False and "not a bound" in res["elbo_note"].lower()
    assert res["ais_init"] == ("ac" if kind == "avb_ac" else "prior")


def test_bavae_reports_its_encoder_adversarys_estimate_by_hand(rng):
    """The BAVAE's 'elbo_from_T' is E_q[log p(x|z) + D_phi(x, z)] (eq. 8: D* = log p - log q),
    with AVB's encoder and noise; AIS runs on its decoder from the prior."""
    from avb_minimal.bavae import adversary_D, init_bavae
    arch, _, x = small("avb", rng)
    p = init_bavae(np.random.default_rng(0), arch)
    out = MN.elbo_and_reconstruction(p, "bavae", x, arch, np.random.default_rng(5), n_samples=3)
    r2 = np.random.default_rng(5)
    xr = np.repeat(x, 3, 0)
    z = M.implicit_encoder(p["enc"], xr, M.sample_noise(r2, "avb", arch, 21), arch.act)
    ll = bernoulli_loglik(xr, M.decoder_logits(p["dec"], z, arch.act))
    np.testing.assert_allclose(out["elbo_from_T"], (ll + adversary_D(p["adv"], xr, z, arch)).reshape(7, 3).mean(1),
                               rtol=1e-5)
    res = MN.evaluate_mnist(p, "bavae_exact", x, arch, rng, ais_steps=3, ais_chains=2, leapfrog=2, elbo_samples=2)
    assert res["elbo"] is None and res["ais_init"] == "prior" and np.isfinite(res["ais_log_likelihood"])
    with pytest.raises(ValueError, match="bavae_exact"):
        MN.elbo_and_reconstruction(p, "bavea", x, arch, rng)


# ------------------------------------------------------------------ reproduce mnist
def fake_data(folder, rng, n_train=200, n_valid=12):
    """Stroke-like random binary images: enough for the pipeline, not for a benchmark."""
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid)):
        proto = (rng.random((4, 784)) < 0.15)
        x = proto[rng.integers(0, 4, n)] ^ (rng.random((n, 784)) < 0.02)
        np.savez(os.path.join(folder, f"{name}.npz"), x=x.astype(np.uint8))
    return str(folder)


def short_training(monkeypatch, iters):
    """The --quick settings with `iters` instead of 300 iterations (checkpoints every iters / 2)."""
    quick_cfgs = MN.mnist_configs(True)
    monkeypatch.setattr(MN, "mnist_configs", lambda quick=False: {
        k: TR.TrainConfig(**dict(c.__dict__, iters=iters, log_every=iters // 2, checkpoint_every=iters // 2))
        for k, c in quick_cfgs.items()})


def test_reproduce_mnist_quick_writes_json_figure_and_reuses_checkpoints(tmp_path, rng, capsys, monkeypatch):
    data = fake_data(tmp_path / "data", rng)
    short_training(monkeypatch, 40)
    out, js = tmp_path / "run", tmp_path / "r.json"
    argv = ["reproduce", "mnist", "--data", data, "--quick", "--quiet", "--out", str(out), "--json", str(js),
            "--ais-examples", "6", "--ais-steps", "4", "--ais-chains", "2", "--leapfrog", "3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "AIS log p(x)" in text and "not a bound" in text
    res = json.loads(js.read_text())
    assert res["settings"]["n_eval"] == 6 and res["settings"]["ais_steps"] == 4
    assert res["settings"]["eval_file"].endswith("valid.npz")
    for kind in M.KINDS:
        r = res[kind]
        assert isinstance(r["ais_log_likelihood"], float) and r["ais_log_likelihood"] < 0
        assert 1 <= r["ais_ess_mean"] <= 2
        assert set(r["wall_seconds"]) >= {"train", "ais"} and r["wall_seconds"]["train"] > 0
        assert os.path.exists(r["checkpoint"]) and r["checkpoint"].endswith(f"{kind}_z8_quick.npz")
        assert read_meta(r["checkpoint"])["iteration"] == 40
    assert res["vae"]["elbo_is_bound"] and res["vae"]["elbo"] <= res["vae"]["ais_log_likelihood"] + 5
    assert res["avb"]["elbo"] is None and isinstance(res["avb_ac"]["elbo_from_T"], float)
    with open(res["figure"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # a second run trains nothing: the finished checkpoints are reused as they are
    assert main(argv[:-8] + ["--models", "vae", "--ais-examples", "2", "--ais-steps", "2"]) == 0
    again = json.loads(js.read_text())
    assert again["vae"]["wall_seconds"]["train"] == pytest.approx(res["vae"]["wall_seconds"]["train"], abs=0.5)


def test_pretrained_models_are_exported_evaluated_and_checked(tmp_path, rng, capsys, monkeypatch):
    """--export-pretrained writes parameters only; --pretrained evaluates them without training,
    gives the same AIS as the run that trained them, prints paired differences and Figure 7;
    a file of another latent size or model stops with one line naming it."""
    data = fake_data(tmp_path / "data", rng)
    short_training(monkeypatch, 20)
    ais = ["--ais-examples", "5", "--ais-steps", "3", "--ais-chains", "2", "--leapfrog", "2"]
    base = ["reproduce", "mnist", "--data", data, "--quick", "--quiet"]
    js1, pre = tmp_path / "trained.json", tmp_path / "pre"
    assert main(base + ["--out", str(tmp_path / "run"), "--json", str(js1), "--export-pretrained", str(pre)] + ais) == 0
    out = capsys.readouterr().out
    assert "Figure 7" in out and "avb_ac - vae, paired over the same 5 images" in out
    for kind in M.KINDS:
        assert (pre / f"{kind}_z8.npz").exists() and "opt" not in " ".join(np.load(pre / f"{kind}_z8.npz").files)
    js2 = tmp_path / "pretrained.json"
    assert main(base + ["--out", str(tmp_path / "eval"), "--json", str(js2), "--pretrained", str(pre)] + ais) == 0
    r1, r2 = json.loads(js1.read_text()), json.loads(js2.read_text())
    for kind in M.KINDS:                               # same parameters, same AIS draws: same numbers
        assert r2[kind]["ais_per_example"] == r1[kind]["ais_per_example"]
        assert r2[kind]["trained_iterations"] == 20 and r2[kind]["wall_seconds"]["train"] == 0
    assert not (tmp_path / "eval" / "vae_z8_quick.npz").exists()            # nothing was trained
    with open(r1["figure7"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["reproduce", "mnist", "--table", str(js2)]) == 0          # the table from the JSON alone
    assert "avb - vae, paired" in capsys.readouterr().out
    os.rename(pre / "avb_z8.npz", pre / "avb_ac_z8.npz.tmp")
    os.replace(pre / "vae_z8.npz", pre / "avb_z8.npz")                     # a VAE where AVB is expected
    assert main(base + ["--out", str(tmp_path / "eval"), "--pretrained", str(pre), "--models", "avb"] + ais) == 2
    err = capsys.readouterr().err
    assert "avb_z8.npz: holds a 'vae' model, not 'avb'" in err and "Traceback" not in err
    params, _ = MN.load_pretrained(str(pre / "avb_ac_z8.npz"), "avb_ac", MN.mnist_arch(8, quick=True))
    MN.export_pretrained(params, "avb_ac", MN.mnist_arch(8, quick=True), str(pre / "x.npz"), 20)
    with pytest.raises(ValueError, match=r"x.npz: a model of another latent size: z_dim 8 \(this run needs 32\)"):
        MN.load_pretrained(str(pre / "x.npz"), "avb_ac", MN.mnist_arch(32, quick=True))


def test_an_evaluation_split_over_runs_reuses_what_is_done(tmp_path, rng, capsys, monkeypatch):
    data = fake_data(tmp_path / "data", rng)
    short_training(monkeypatch, 20)
    js = tmp_path / "r.json"
    argv = ["reproduce", "mnist", "--data", data, "--quick", "--quiet", "--out", str(tmp_path / "run"),
            "--json", str(js), "--ais-examples", "4", "--ais-steps", "3", "--ais-chains", "2", "--leapfrog", "2"]
    assert main(argv + ["--models", "vae"]) == 0
    first = json.loads(js.read_text())
    assert "avb" not in first
    assert main(argv + ["--models", "vae,avb"]) == 0
    second = json.loads(js.read_text())
    assert second["vae"] == first["vae"]                     # reused, not re-evaluated
    assert isinstance(second["avb"]["ais_log_likelihood"], float)
    assert main(argv + ["--models", "avb_ac"]) == 0          # another model adds a row, loses none
    added = json.loads(js.read_text())
    assert added["vae"] == first["vae"] and added["avb"] == second["avb"] and "avb_ac" in added
    assert set(added["settings"]["iterations"]) == {"vae", "avb", "avb_ac"}
    assert "vae " in capsys.readouterr().out.split("AIS log p(x)")[-1]      # the table shows all three
    # the figure shows every row of the table, read from the checkpoints of the kept ones
    assert added["figure"].endswith("mnist_z8_quick.png") and os.path.exists(added["figure"])
    # two runs side by side into one JSON: a row the other wrote after this one started is kept
    row = added.pop("avb")
    MN._write_keeping_others(str(js), added, ["vae", "avb_ac"], "cpu")     # as if 'avb' were being written
    assert json.loads(js.read_text())["avb"] == row
    # other settings: everything is evaluated again, and the old JSON is moved aside, not lost
    assert main(argv[:-2] + ["--leapfrog", "3", "--models", "vae"]) == 0
    third = json.loads(js.read_text())
    assert third["settings"]["leapfrog"] == 3 and "avb" not in third
    kept = json.loads((tmp_path / "r.previous-1.json").read_text())
    assert kept["avb_ac"] == added["avb_ac"] and "moved to" in capsys.readouterr().err
    # another --out: the evaluation of another checkpoint is not reused
    assert main(argv[:-2] + ["--leapfrog", "3", "--models", "vae", "--out", str(tmp_path / "run2")]) == 0
    fourth = json.loads(js.read_text())
    assert fourth["vae"]["checkpoint"].startswith(str(tmp_path / "run2"))


def test_reproduce_mnist_trains_and_evaluates_the_biadversarial_vae(tmp_path, rng, capsys, monkeypatch):
    data = fake_data(tmp_path / "data", rng)
    short_training(monkeypatch, 20)
    js = tmp_path / "r.json"
    argv = ["reproduce", "mnist", "--data", data, "--quick", "--quiet", "--out", str(tmp_path / "run"),
            "--json", str(js), "--ais-examples", "4", "--ais-steps", "3", "--ais-chains", "2", "--leapfrog", "2",
            "--models", "avb,bavae,bavae_exact"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "bavae_exact" in text and "Biadversarial VAE (Fickinger)" in text and "seed 002" not in text
    res = json.loads(js.read_text())
    for kind in ("bavae", "bavae_exact"):
        r = res[kind]
        assert r["checkpoint"].endswith(f"{kind}_z8_quick.npz") and r["elbo"] is None
        meta = read_meta(r["checkpoint"])
        assert meta["kind"] == "bavae" and meta["iteration"] == 20
        assert meta["reconstruction"] == ("adversary" if kind == "bavae" else "exact")
        assert r["ais_log_likelihood"] < 0 and r["ais_init"] == "prior"
    assert "w_model" in read_meta(res["bavae"]["checkpoint"])["history"][-1]
    diag = res["bavae"]["game_diagnostics"]
    assert (diag["batch"], diag["n_batches"]) == (100, 3)
    assert res["bavae_exact"]["game_diagnostics"]["grad_norm_decoder"] > 0      # the exact term's gradient
    assert "bavae at the end (median of 3 training batches)" in text            # printed with the table
    with open(res["figure_bavae_training"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert res["settings"]["iterations"]["bavae"] == 20
    # an unknown model name lists the valid ones
    with pytest.raises(SystemExit):
        main(argv[:-1] + ["avb,bavea"])
    assert "bavae_exact" in capsys.readouterr().err


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, rng, monkeypatch):
    x = np.load(fake_data(tmp_path / "data", rng, 100, 2) + "/train.npz")["x"].astype(np.float32)
    real_make_step = TR.make_step
    calls = {"n": 0}

    def make_step(*a):
        step = real_make_step(*a)

        def counted(*b):
            calls["n"] += 1
            if calls["n"] == 150:
                raise KeyboardInterrupt                         # Ctrl-C in the middle of the run
            return step(*b)
        return counted
    monkeypatch.setattr(TR, "make_step", make_step)
    with pytest.raises(KeyboardInterrupt):
        MN.train_mnist("vae", x, str(tmp_path / "run"), quick=True)
    ckpt = MN.checkpoint_path(str(tmp_path / "run"), "vae", 8, True)
    assert read_meta(ckpt)["iteration"] == 100                  # checkpoint_every = 100 (quick)
    calls["n"] = -10 ** 9
    _, info = MN.train_mnist("vae", x, str(tmp_path / "run"), quick=True)
    meta = read_meta(ckpt)
    assert meta["iteration"] == 300
    assert [h["iteration"] for h in meta["history"]][:2] == [50, 100]   # the first 100 were kept
    assert calls["n"] == -10 ** 9 + 200                          # only the missing 200 were run


@pytest.mark.parametrize("setup, needle", [
    ("nodir", "does not exist"),
    ("noenv", "AVB_DATA"),
    ("gray", "binary"),
    ("nofile", "put the images there"),
])
def test_reproduce_mnist_bad_data_gives_a_short_error(tmp_path, rng, capsys, monkeypatch, setup, needle):
    monkeypatch.delenv("AVB_DATA", raising=False)
    data = tmp_path / "data"
    argv = ["reproduce", "mnist", "--quick", "--quiet", "--out", str(tmp_path / "run")]
    if setup == "nodir":
        argv += ["--data", str(data)]
    elif setup == "gray":
        fake_data(data, rng, 5, 3)
        np.savez(data / "valid.npz", x=np.full((3, 784), 0.5))
        argv += ["--data", str(data)]
    elif setup == "nofile":
        fake_data(data, rng, 5, 3)
        argv += ["--data", str(data), "--split", "test"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    if setup == "gray":
        assert "valid.npz" in err
    assert not os.path.exists(tmp_path / "run" / "vae_z8_quick.npz")          # stopped before training


# ------------------------------------------------------------------ chapter 13
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_MNIST, "train.npz")),
                    reason="binarized MNIST not found (set AVB_DATA)")
def test_chapter_13_runs_quick(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg", AVB_DATA=SHARED_MNIST)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "chapters", "13_mnist.py"), "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[ok]" in proc.stdout and "What goes wrong" in proc.stdout
    assert (tmp_path / "13_mnist.png").stat().st_size > 10_000


def test_paired_differences_across_files_use_the_images_they_share():
    vae = {"settings": {"eval_file": "v.npz"}, "vae": {"ais_per_example": [-90.0, -100.0, -80.0, -95.0]}}
    avb = {"settings": {"eval_file": "v.npz"}, "avb": {"ais_per_example": [-91.0, -102.0]}}
    text = MN.format_paired_across({"a.json": vae, "b.json": avb})
    assert text == "avb (b.json) - vae (a.json), paired over the first 2 images: -1.50 +- 0.50 nats"
    other = {"settings": {"eval_file": "test.npz"}, "avb": avb["avb"]}
    assert "different images" in MN.format_paired_across({"a.json": vae, "b.json": other})


@pytest.mark.parametrize("kind", ["vae", "avb", "avb_ac"])
def test_the_kept_models_in_results_still_load(kind):
    """results/mnist holds Table 2's trained 8-d models; a setting added to Arch since they were
    written (its default is what they trained with) must not orphan them."""
    path = os.path.join(os.path.dirname(__file__), "..", "results", "mnist", f"{kind}_z8.npz")
    params, meta = MN.load_pretrained(path, kind, MN.mnist_arch(8))
    assert meta["kind"] == kind and meta["trained_iterations"] == 40000
    assert params["dec"][0][0].shape == (8, 300) and params["dec"][-1][0].shape[1] == 784

