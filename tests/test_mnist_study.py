"""The study behind Table 2 (experiments/mnist_study.py): variants, resumable runs, paired differences."""
import json

import numpy as np
import pytest

from avb_minimal.experiments import mnist_study as S


def test_variants_change_only_what_they_say():
    arch0, cfg0 = S.variant_settings("base", "avb_ac", iters=100)
    assert cfg0.lr_gen == 2e-4 and cfg0.lr_adv == 5e-4                       # the first setting AVB ran with
    assert S.variant_settings("lr1e-3", "vae")[1].lr_gen == 1e-3             # the VAE's own
    arch, cfg = S.variant_settings("lr1e-3_wide", "avb_ac", iters=100)
    assert cfg.lr_gen == cfg.lr_adv == 1e-3 and arch.adv_dim == 512 and arch.adv_hidden == (512, 512, 512)
    assert arch.z_dim == arch0.z_dim and arch.hidden == arch0.hidden          # the decoder is Table 2's
    assert cfg.iters == cfg0.iters == 100 and cfg.batch == cfg0.batch
    arch, cfg = S.variant_settings("lr1e-3_floor1e-2", "avb_ac", iters=100)
    assert arch.ac_var_floor == 1e-2 and arch0.ac_var_floor == 1e-4 and arch.adv_dim == arch0.adv_dim
    with pytest.raises(ValueError, match="applies to avb_ac, not 'avb'"):
        S.variant_settings("lr1e-3_floor1e-2", "avb")
    with pytest.raises(ValueError, match="applies to vae"):
        S.variant_settings("vae_lr3e-4", "avb")
    with pytest.raises(ValueError, match="variant must be one of"):
        S.variant_settings("fastest", "avb")


def test_paired_difference_is_the_mean_and_standard_error_of_per_image_differences():
    rng = np.random.default_rng(0)
    b = rng.normal(-100, 10, 400)                      # images differ by far more than the models
    a = b + 0.5 + rng.normal(0, 0.1, 400)
    d, se = S.paired_difference(a, b)
    assert abs(d - 0.5) < 0.02 and se < 0.01           # unpaired, the s.e. would be ~0.7
    d2, _ = S.paired_difference([a, a + 1], [b, b])    # seeds averaged per image first
    assert abs(d2 - (d + 0.5)) < 1e-12
    with pytest.raises(ValueError, match="same images"):
        S.paired_difference(a[:10], b)


def test_screen_runs_resume_and_gather_into_a_table(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.random((64, 784)) < 0.3).astype(np.float32)
    out = tmp_path / "study"
    for seed in (0, 1):
        for v, k in (("base", "avb_ac"), ("lr1e-3", "avb_ac")):
            S.screen_run(v, k, x, x[:6], str(out), iters=10, seed=seed, ais_steps=3, quick=True)
    rec_path = out / "lr1e-3_avb_ac_10_seed1_quick.json"
    rec = json.loads(rec_path.read_text())
    assert rec["config"]["lr_gen"] == 1e-3 and len(rec["ais_per_example"]) == 6
    again = S.screen_run("lr1e-3", "avb_ac", x, x[:6], str(out), iters=10, seed=1, ais_steps=3, quick=True)
    assert again == rec                                # a finished run is read back, not repeated
    table = S.study_table(str(out))
    rows = {(r["variant"], r["kind"]): r for r in table["rows"]}
    # each row against the same model at Table 2's settings (variant lr1e-3)
    assert rows[("lr1e-3", "avb_ac")]["seeds"] == [0, 1] and "vs_reference" not in rows[("lr1e-3", "avb_ac")]
    r = rows[("base", "avb_ac")]
    ref = [json.loads((out / f"lr1e-3_avb_ac_10_seed{s}_quick.json").read_text())["ais_per_example"] for s in (0, 1)]
    mine = [json.loads((out / f"base_avb_ac_10_seed{s}_quick.json").read_text())["ais_per_example"] for s in (0, 1)]
    assert r["vs_reference"] == pytest.approx(float(np.mean(np.mean(mine, 0) - np.mean(ref, 0))))
    assert r["vs_reference_seeds"] == [0, 1]
    text = S.format_study(table)
    assert "| avb_ac | lr1e-3 | lr_adv=0.001 | 10 | 0,1 | 6 |" in text     # against the quick settings, 1e-3 / 2e-3
    assert "| avb_ac | base | lr_gen=0.0002, lr_adv=0.0005 | 10 | 0,1 | 6 |" in text


def test_table2_runs_join_the_study_as_full_length_runs(tmp_path):
    """Training length as a lever, and the claim under each VAE setting: a Table 2 record's
    models on the study's images, paired with the same model's shorter run and with the VAE."""
    out = tmp_path / "study"
    out.mkdir()

    def record(variant, kind, iters, per):
        (out / f"{variant}_{kind}_{iters}_seed0.json").write_text(json.dumps({
            "variant": variant, "kind": kind, "seed": 0, "latent": 8, "iters": iters, "quick": False,
            "arch_changes": {}, "config": {}, "n_eval": len(per), "ais_log_likelihood": float(np.mean(per)),
            "ais_per_example": per, "train_seconds": 1.0}))
    short = [-100.0, -90.0, -80.0, -95.0]
    record("lr1e-3", "avb_ac", 10, short)
    vae_tuned = [-99.5, -89.0, -81.0, -95.5]
    record("vae_lr2e-3", "vae", 40, vae_tuned)                        # the VAE's own tuning, full length
    full = [-99.0, -88.5, -80.0, -94.5, -50.0, -60.0]                 # 6 images; the study scored 4
    vae = [-99.2, -89.5, -80.5, -95.0, -51.0, -61.0]
    js = tmp_path / "t2.json"
    js.write_text(json.dumps({"settings": {"iterations": {"avb_ac": 40, "vae": 40}, "seed": 0, "latent": 8,
                                           "quick": False},
                              "avb_ac": {"ais_per_example": full}, "vae": {"ais_per_example": vae}}))
    table = S.study_table(str(out), full_length=[str(js)])
    rows = {(r["variant"], r["kind"], r["iters"]): r for r in table["rows"]}
    r = rows[("lr1e-3", "avb_ac", 40)]
    assert r["source"] == str(js) and r["n_eval"] == 4 and r["vs_reference_iters"] == 10
    assert r["vs_reference"] == pytest.approx(np.mean(np.subtract(full[:4], short)))     # +0.75
    assert r["vs_reference_se"] == pytest.approx(np.std(np.subtract(full[:4], short), ddof=1) / 2)
    t = rows[("vae_lr2e-3", "vae", 40)]                   # against Table 2's VAE at the same length
    assert "vs_reference_iters" not in t and t["vs_reference"] == pytest.approx(np.mean(np.subtract(vae_tuned, vae[:4])))
    claims = {c["vae"]: c for c in table["vs_vae"]}
    assert set(claims) == {"lr1e-3", "vae_lr2e-3"} and claims["vae_lr2e-3"]["n_eval"] == 4
    assert claims["vae_lr2e-3"]["difference"] == pytest.approx(np.mean(np.subtract(full[:4], vae_tuned)))
    text = S.format_study(table)
    assert "| avb_ac | lr1e-3 (Table 2) | - | 40 | 0 | 4 |" in text and "(against 10 iterations)" in text
    assert "avb_ac (lr1e-3) - vae (vae_lr2e-3), 40 iterations, paired over the first 4 images, seeds 0:" in text
    with pytest.raises(ValueError, match="not the record of a full reproduce mnist run"):
        js.write_text(json.dumps({"settings": {"quick": True}}))
        S.study_table(str(out), full_length=[str(js)])


def test_a_bad_variant_or_model_is_one_line_naming_the_flag(capsys):
    from avb_minimal.__main__ import main
    for argv, needle in ((["--variants", "fastest"], "--variants takes a comma list of base,"),
                         (["--models", "gan"], "--models takes a comma list of vae, avb, avb_ac")):
        with pytest.raises(SystemExit) as e:
            main(["reproduce", "mnist-study", "--table"] + argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and "Traceback" not in err
    assert main(["reproduce", "mnist-study", "--table", "--full-length", "nope.json"]) == 2
    err = capsys.readouterr().err
    assert "--full-length: nope.json: no such file" in err and "Traceback" not in err
