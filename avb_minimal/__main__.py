"""Command line: python -m avb_minimal {reproduce,bench,train} ...  (also `avb-minimal`)."""
import argparse
import json
import os
import sys

# The 4-point experiments use small matrices, where BLAS threads cost more than they
# give (and a second thread fighting other jobs for the CPU costs a lot): train them on
# one thread unless the user says otherwise.  Must happen before numpy is imported.
if "numpy" not in sys.modules and len(sys.argv) > 1 and sys.argv[1] in ("reproduce", "train"):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _positive_int(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {s!r}")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {s!r}")
        return v
    return parse


def _models(s):
    from .models import KINDS
    kinds = [k.strip() for k in s.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"--models takes a comma list of {', '.join(KINDS)}; got {s!r}")
    return kinds


def build_parser():
    p = argparse.ArgumentParser(prog="avb-minimal",
                                description="Adversarial Variational Bayes (Mescheder et al., 2017), "
                                            "minimal NumPy + autograd implementation.")
    sub = p.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="reproduce an experiment of the paper")
    rsub = rep.add_subparsers(dest="experiment", required=True)
    t1 = rsub.add_parser("table1", help="Table 1 / Fig. 6: VAE, AVB, AVB+AC on the 4-point dataset",
                         description="Train VAE, AVB and AVB + adaptive contrast on the paper's 4-point "
                                     "dataset and evaluate them honestly: exact log-likelihood by "
                                     "integration over the 2-d latent, reconstruction error, ELBO (exact "
                                     "for the VAE, a k-NN entropy estimate for AVB, plus the adversary's "
                                     "own estimate, which is not a bound), and KL(q(z), p(z)).")
    t1.add_argument("--quick", action="store_true", help="small nets, few iterations (< 1 minute)")
    t1.set_defaults(func=_table1)
    t1.add_argument("--seeds", type=_positive_int("--seeds"), default=1, help="number of seeds (0..N-1)")
    t1.add_argument("--models", type=_models, default=["vae", "avb", "avb_ac"],
                    help="comma list of vae,avb,avb_ac (default: all three)")
    t1.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    t1.add_argument("--out", metavar="DIR", default="runs/table1",
                    help="checkpoints (runs resume from them) and figures go here (default: runs/table1)")
    t1.add_argument("--curve-every", type=int, default=0, metavar="N",
                    help="record the exact log-likelihood every N iterations (0: off)")
    t1.add_argument("--quiet", action="store_true", help="no progress output")

    es = rsub.add_parser("eight-schools", help="sec. 5.1: AVB vs Gaussian VB vs HMC on Eight Schools (Figs. 3, 4)",
                         description="HMC ground truth, then AVB (adaptive contrast), mean-field and "
                                     "full-rank Gaussian VB on the Eight Schools model with tau unconstrained; "
                                     "KL to HMC by k-NN, the mass on tau < 0, and the marginal figures.")
    es.add_argument("--quick", action="store_true", help="short chains and few iterations (seconds)")
    es.set_defaults(func=_eight_schools)
    es.add_argument("--seeds", type=_positive_int("--seeds"), default=3, help="number of seeds (0..N-1)")
    es.add_argument("--json", metavar="PATH", help="write the results as JSON here (default: OUT/results.json)")
    es.add_argument("--out", metavar="DIR", default="runs/eight_schools", help="figures go here")
    es.add_argument("--quiet", action="store_true", help="no progress output")

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="what", required=True)
    bs = bsub.add_parser("step", help="time one AVB training step (Algorithm 1)",
                         description="Time one simultaneous AVB step (2 x 512 encoder and decoder, "
                                     "inner-product adversary of two 2 x 512 nets, batch 512, float32), "
                                     "count its FLOPs with the fixed rule 2B(3P_enc + 3P_dec + 2P_f + 5P_g) "
                                     "and compare with this machine's measured 1024 x 1024 sgemm rate.")
    bs.add_argument("--batch", type=_positive_int("--batch"), default=512)
    bs.set_defaults(func=_bench_step)
    bs.add_argument("--width", type=_positive_int("--width"), default=512)
    bs.add_argument("--steps", type=_positive_int("--steps"), default=30, help="timed steps (median)")
    bs.add_argument("--json", metavar="PATH", help="write the figures as JSON here")

    bo = bsub.add_parser("ops", help="time the two hot ops against their naive forms",
                         description="For each op (row-wise and all-pairs inner-product logits, the fused "
                                     "eq. (3.3) loss, the Bernoulli log-likelihood) and each backend present, "
                                     "time per call over B in {64, 512, 4096} x H in {64, 512, 1024} against "
                                     "the naive NumPy/CuPy composition it replaces.")
    bo.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    bo.set_defaults(func=_bench_ops)

    tr = sub.add_parser("train", help="train one model on the 4-point dataset (resumable)")
    tr.add_argument("--model", choices=["vae", "avb", "avb_ac"], default="avb")
    tr.set_defaults(func=_train)
    tr.add_argument("--iters", type=_positive_int("--iters"), default=None,
                    help="iterations (default: the Table 1 setting)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--checkpoint", metavar="PATH", required=True,
                    help="checkpoint .npz: written atomically, resumed from if it exists")
    tr.add_argument("--quick", action="store_true", help="the quick Table 1 settings")
    tr.add_argument("--curve-every", type=int, default=0, metavar="N",
                    help="record the exact log-likelihood every N iterations")
    tr.add_argument("--json", metavar="PATH", help="write the final evaluation (and curve) as JSON")
    tr.add_argument("--quiet", action="store_true")
    return p


def _table1(args):
    from .experiments import format_table1, table1, table1_json, table1_settings, write_json
    from .data import four_points
    from .plots import latent_figure
    seeds = tuple(range(args.seeds))
    res = table1(seeds=seeds, quick=args.quick, out_dir=args.out, kinds=args.models,
                 quiet=args.quiet, curve_every=args.curve_every or None)
    print(format_table1(res))
    arch, _, _ = table1_settings(args.quick)
    models = {k: res["models"][k]["_params"][0] for k in args.models}
    stats = {k: f"log p(x) = {res['models'][k]['runs'][0]['log_likelihood']:.3f}" for k in args.models}
    fig = latent_figure(models, four_points(), arch, os.path.join(args.out, "figure6_latent.png"),
                        stats=stats)
    print(f"latent-space figure (Fig. 6): {fig}")
    if args.curve_every:
        from .plots import curve_figure
        from .experiments import OPTIMUM_LL
        curves = {f"{k} seed {i}": c for k in args.models for i, c in enumerate(res["models"][k]["curves"])}
        print("log-likelihood curves:", curve_figure(curves, os.path.join(args.out, "ll_curves.png"),
                                                     optimum=OPTIMUM_LL))
    if args.json:
        write_json(args.json, table1_json(res))
        print(f"results: {args.json}")


def _eight_schools(args):
    from .eight_schools import format_eight_schools, run_eight_schools
    res = run_eight_schools(quick=args.quick, seeds=tuple(range(args.seeds)), out_dir=args.out,
                            quiet=args.quiet, json_path=args.json)
    print(format_eight_schools(res))


def _bench_step(args):
    from .experiments import bench_step, write_json
    r = bench_step(batch=args.batch, width=args.width, steps=args.steps)
    print(f"AVB step, batch {r['batch']}, width {r['width']}: {r['ms_per_step']:.1f} ms/step, "
          f"{r['gflop_per_step']:.2f} GFLOP/step (fixed rule) -> {r['achieved_gflops']:.1f} GFLOP/s; "
          f"sgemm 1024^3: {r['sgemm_gflops']:.1f} GFLOP/s; fraction_of_peak {r['fraction_of_peak']:.3f}")
    if args.json:
        write_json(args.json, r)


def _bench_ops(args):
    from .bench_ops import bench_ops, format_bench_ops
    from .experiments import write_json
    r = bench_ops()
    print(format_bench_ops(r))
    if args.json:
        write_json(args.json, r)


def _train(args):
    from . import evaluate as E
    from .data import four_points
    from .experiments import table1_settings, write_json
    from .train import TrainConfig, train
    arch, cfgs, ev = table1_settings(args.quick)
    cfg = cfgs[args.model]
    if args.iters:
        cfg = TrainConfig(**dict(cfg.__dict__, iters=args.iters))
    data = four_points()
    eval_fn = None
    if args.curve_every:
        def eval_fn(p):
            return {"log_likelihood": float(np.mean(E.exact_log_likelihood(p["dec"], data, arch, 400)))}
    params, info = train(args.model, data, arch, cfg, seed=args.seed, checkpoint=args.checkpoint,
                         quiet=args.quiet, eval_fn=eval_fn, eval_every=args.curve_every,
                         desc=args.model)
    res = E.evaluate_model(params, args.model, data, arch, np.random.default_rng(10_000 + args.seed),
                           grid_n=ev["grid_n"], n_samples=ev["n_samples"])
    res["wall_seconds"] = info["wall_seconds"]
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()}))
    if args.json:
        write_json(args.json, dict(res, history=info["history"]))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)      # each sub-command names its function with set_defaults(func=...)
    except (ValueError, FileNotFoundError) as e:
        print(f"avb-minimal: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:      # TrainingDiverged (last good checkpoint kept), AVB_BACKEND=cupy without a GPU
        print(f"avb-minimal: stopped: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
