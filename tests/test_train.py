"""Training loops: every kind runs, checkpoints resume exactly, NaN stops cleanly."""
import numpy as np
import pytest

from avb_minimal import models as M
from avb_minimal import train as T
from avb_minimal.checkpoint import load_checkpoint, save_checkpoint
from avb_minimal.data import four_points
from avb_minimal.trees import tree_flatten

ARCH = M.Arch(hidden=(16, 16), adv_hidden=(16,), adv_dim=8, eps_dim=4, n_basis=4, basis_hidden=8)


@pytest.mark.parametrize("kind", ["vae", "avb", "avb_ac"])
def test_each_kind_trains_and_improves(kind):
    cfg = T.TrainConfig(iters=150, batch=64, lr_gen=3e-3, lr_adv=3e-3, log_every=50, adv_steps=2)
    from avb_minimal.evaluate import exact_log_likelihood
    p0 = M.init_params(np.random.default_rng(0), kind, ARCH)
    ll0 = np.mean(exact_log_likelihood(p0["dec"], four_points(), ARCH, 128))
    params, info = T.train(kind, four_points(), ARCH, cfg, seed=0)
    ll1 = np.mean(exact_log_likelihood(params["dec"], four_points(), ARCH, 128))
    assert ll1 > ll0 + 0.05
    assert len(info["history"]) == 3
    assert all(np.all(np.isfinite(a)) for a in tree_flatten(params))


def test_resume_from_checkpoint_is_exact(tmp_path):
    cfg = T.TrainConfig(iters=20, batch=32, log_every=5, checkpoint_every=10)
    ref, _ = T.train("avb", four_points(), ARCH, cfg, seed=3)
    ck = tmp_path / "run.npz"
    T.train("avb", four_points(), ARCH, T.TrainConfig(**dict(cfg.__dict__, iters=10)), seed=3, checkpoint=ck)
    resumed, info = T.train("avb", four_points(), ARCH, cfg, seed=3, checkpoint=ck)
    for a, b in zip(tree_flatten(ref), tree_flatten(resumed)):
        assert np.array_equal(a, b)
    assert [h["iteration"] for h in info["history"]] == [5, 10, 15, 20]
    assert not list(tmp_path.glob(".tmp-*"))            # no temporary file left behind


def _poison_step(monkeypatch, at, poison):
    """Make T.make_step's step call `poison(step, args)` instead of `step(*args)` on its
    `at`-th call (call 1 is iteration 0)."""
    real = T.make_step

    def poisoned(kind, arch, cfg, device="cpu"):
        step = real(kind, arch, cfg, device)
        calls = {"n": 0}

        def wrapped(*args):
            calls["n"] += 1
            return poison(step, args) if calls["n"] == at else step(*args)
        return wrapped

    monkeypatch.setattr(T, "make_step", poisoned)


def test_nan_stops_with_a_clear_message_and_keeps_last_good(tmp_path, monkeypatch):
    ck = tmp_path / "run.npz"

    def nan_objective(step, args):
        new, states, aux = step(*args)
        aux["gen_objective"] = float("nan")
        return new, states, aux

    _poison_step(monkeypatch, 7, nan_objective)
    with pytest.raises(T.TrainingDiverged, match="iteration 6.*last good parameters"):
        T.train("avb", four_points(), ARCH, T.TrainConfig(iters=20, batch=16, step="readable"), seed=0,
                checkpoint=ck)
    params = T.load_params(ck, "avb", ARCH)
    assert all(np.all(np.isfinite(a)) for a in tree_flatten(params))
    _, meta = load_checkpoint(ck, {})
    assert meta["iteration"] == 6
    assert meta["opt_t"] == {"gen": 6, "adv": 6}      # the optimiser state of those parameters, too


def test_weights_turned_nan_in_place_leave_the_last_checkpoint_alone(tmp_path, monkeypatch):
    """The fast step updates the weights in place: when they (not the losses) turn NaN there
    are no good weights of that iteration to save, and the last checkpoint must stay as it was."""
    ck = tmp_path / "run.npz"

    def in_place_nan(step, args):                    # iteration 6: a weight goes NaN in place
        params, states = args[0], args[1]
        params["dec"][0][0][0, 0] = np.nan
        return params, states, {"gen_objective": 1.0, "adv_loss": 1.0}

    _poison_step(monkeypatch, 7, in_place_nan)
    cfg = T.TrainConfig(iters=20, batch=16, log_every=3, checkpoint_every=3)
    with pytest.raises(T.TrainingDiverged, match="iteration 6.*keeps the last checkpoint"):
        T.train("avb", four_points(), ARCH, cfg, seed=0, checkpoint=ck)
    _, meta = load_checkpoint(ck, {})
    assert meta["iteration"] == 6
    assert all(np.all(np.isfinite(a)) for a in tree_flatten(T.load_params(ck, "avb", ARCH)))


def test_checkpoint_mismatch_names_the_arrays(tmp_path, rng):
    p = M.init_params(rng, "avb", ARCH)
    ck = tmp_path / "c.npz"
    save_checkpoint(ck, {"params": {"dec": p["dec"]}}, {"kind": "avb"})
    with pytest.raises(ValueError, match="missing arrays: params/enc/0/W"):
        load_checkpoint(ck, {"params": p})
    other = M.init_params(rng, "avb", M.Arch(hidden=(8, 16), adv_hidden=(16,), adv_dim=8, eps_dim=4))
    save_checkpoint(ck, {"params": other}, {"kind": "avb"})
    with pytest.raises(ValueError, match=r"mis-shaped arrays: .*params/enc/0/W: expected \(8, 16\), found \(8, 8\)"):
        load_checkpoint(ck, {"params": p})


def test_bad_config_and_data():
    with pytest.raises(ValueError, match="iters must be a positive integer"):
        T.TrainConfig(iters=0)
    with pytest.raises(ValueError, match="negatives must be one of"):
        T.TrainConfig(negatives="all")
    with pytest.raises(ValueError, match="data must be binary"):
        T.train("avb", np.full((4, 4), 0.5), ARCH, T.TrainConfig(iters=1))
    with pytest.raises(ValueError, match="data must have 4 columns"):
        T.train("avb", np.eye(3), ARCH, T.TrainConfig(iters=1))


def test_lr_schedule():
    cfg = T.TrainConfig(iters=100, decay_from=0.5, lr_final=0.1)
    assert cfg.lr_scale(10) == 1.0 and cfg.lr_scale(50) == 1.0
    assert np.isclose(cfg.lr_scale(75), 0.55) and cfg.lr_scale(99) < 0.12
