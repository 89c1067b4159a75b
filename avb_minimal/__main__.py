"""Command line: python -m avb_minimal {reproduce,bench,train,assignments} ...  (also `avb-minimal`).

Longer than 400 lines because every command's flags and their help live here, each command
in one small function; the work itself is in the modules the commands import.
"""
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
# `bench step|ais --threads N`: the BLAS thread count is fixed when numpy loads, so it is set
# here (bench ais: one thread unless --threads says otherwise).
if "numpy" not in sys.modules and sys.argv[1:3] in (["bench", "step"], ["bench", "ais"]):
    if sys.argv[2] == "ais":
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
    for i, a in enumerate(sys.argv):
        if a.startswith("--threads"):
            n = a.partition("=")[2] or (sys.argv[i + 1] if i + 1 < len(sys.argv) else "")
            os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = n

import numpy as np  # noqa: E402

from .argcheck import (  # noqa: E402
    check_paths,
    non_negative_int,
    positive_int,
    remove_created_folders,
    seed_list,
)
from .checkpoint import note_start, package_version, write_json  # noqa: E402

# Each command imports the modules it runs inside its own function: the experiments load
# matplotlib and scipy, which would cost every command (even --help) a second at start-up.


def _kinds_list(s, valid, flag="--models"):
    kinds = list(dict.fromkeys(k.strip() for k in s.split(",") if k.strip()))     # no model twice
    bad = [k for k in kinds if k not in valid]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"{flag} takes a comma list of {', '.join(valid)}; got {s!r}")
    return kinds


def _study_variants(s):
    from .experiments.mnist_study import VARIANTS
    return _kinds_list(s, list(VARIANTS), "--variants")


def _study_models(s):
    from .models import KINDS
    return _kinds_list(s, KINDS)


def _mnist_models(s):
    """mnist also trains the Biadversarial VAE ('bavae', its eq. 19) and its ablation."""
    from .experiments.mnist import MNIST_KINDS
    return _kinds_list(s, MNIST_KINDS)


def _table1_models(s):
    """table1 also trains the Biadversarial VAE ('bavae')."""
    from .experiments.table1 import TABLE1_KINDS
    return _kinds_list(s, TABLE1_KINDS)


def _device_flag(p, default="cpu"):
    p.add_argument("--device", choices=("cpu", "gpu"), default=default,
                   help="where the arrays live: cpu (NumPy) or gpu (CuPy and the CUDA kernels; needs cupy-cuda13x "
                        "or cupy-cuda12x and an NVIDIA GPU)" + (" (default gpu)" if default == "gpu" else ""))


def _step_flag(p, what="training"):
    p.add_argument("--step", choices=["auto", "readable", "fast", "graph"], default="auto",
                   help=f"which {what} step: the readable autograd one, the hand-written fast one (the same "
                        "numbers, faster), graph: the fast one on the project's own kernels, captured once as "
                        "a CUDA graph on a GPU (plain launches elsewhere); fast and graph are refused where "
                        "they do not apply.  auto: the fastest that applies, fast on the CPU and graph on the "
                        "GPU (default auto; the Biadversarial VAE always takes the readable step)")


def _seed_flags(p, n_default):
    """--seed S or --seeds N|A,B,...: one seed, the first N, or a list (mutually exclusive)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=non_negative_int, default=None, metavar="S",
                   help="run the one seed S")
    g.add_argument("--seeds", type=seed_list, default=tuple(range(n_default)), metavar="N|A,B,...",
                   help=f"N: the seeds 0..N-1; A,B,...: those seeds (a comma list; default {n_default}: "
                        + ("seed 0)" if n_default == 1 else f"seeds 0..{n_default - 1})"))


def _seeds(args):
    return (args.seed,) if args.seed is not None else tuple(args.seeds)


def _add_reproduce(sub):
    """`reproduce table1|eight-schools|mnist`: the paper's experiments."""
    rep = sub.add_parser("reproduce", help="reproduce an experiment of the paper",
                         description="Reproduce an experiment of the AVB paper (arXiv:1701.04722): Table 1 on "
                                     "the 4-point dataset, Eight Schools (sec. 5.1) or Table 2 on binarized "
                                     "MNIST.  Every JSON written records the command line, the version, the "
                                     "git commit, the date, the BLAS threads and the device.")
    rsub = rep.add_subparsers(dest="experiment", required=True)
    t1 = rsub.add_parser("table1", help="Table 1 / Fig. 6: VAE, AVB, AVB+AC on the 4-point dataset",
                         description="Train VAE, AVB and AVB + adaptive contrast on the paper's 4-point "
                                     "dataset and evaluate them honestly: exact log-likelihood by "
                                     "integration over the 2-d latent, reconstruction error, ELBO (exact "
                                     "for the VAE, a k-NN entropy estimate for AVB, plus the adversary's "
                                     "own estimate, which is not a bound), and KL(q(z), p(z)).")
    t1.add_argument("--quick", action="store_true",
                    help="short run: small nets, 3000 iterations, about 1.5 minutes on a 2-core CPU, "
                         "enough for the paper's ranking; its checkpoints and figures are "
                         "named *_quick, apart from a full run's")
    t1.set_defaults(func=_table1)
    _device_flag(t1)
    _seed_flags(t1, 1)
    _step_flag(t1)
    t1.add_argument("--models", type=_table1_models, default=["vae", "avb", "avb_ac"],
                    help="comma list of vae,avb,avb_ac,bavae (bavae: the Biadversarial VAE, "
                         "Fickinger; default: vae,avb,avb_ac)")
    t1.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    t1.add_argument("--out", metavar="DIR", default="runs/table1",
                    help="checkpoints (runs resume from them) and figures go here (default: runs/table1)")
    t1.add_argument("--curve-every", type=non_negative_int, default=0, metavar="N",
                    help="record the exact log-likelihood every N iterations (0: off)")
    t1.add_argument("--quiet", action="store_true", help="no progress output")

    es = rsub.add_parser("eight-schools", help="sec. 5.1: AVB vs Gaussian VB vs HMC on Eight Schools (Figs. 3, 4)",
                         description="HMC ground truth, then AVB (adaptive contrast), mean-field and "
                                     "full-rank Gaussian VB on the Eight Schools model with tau unconstrained; "
                                     "KL to HMC by k-NN, the mass on tau < 0, and the marginal figures.  "
                                     "There is no --step: its AVB is black-box VI of a density (vi.py), which "
                                     "has one readable step; --seed/--seeds pick the VI seeds (HMC: seed 0).")
    es.add_argument("--quick", action="store_true", help="short chains and few iterations (seconds)")
    es.set_defaults(func=_eight_schools)
    _device_flag(es)
    _seed_flags(es, 3)
    es.add_argument("--json", metavar="PATH", help="write the results as JSON here (default: OUT/results.json)")
    es.add_argument("--out", metavar="DIR", default="runs/eight_schools", help="figures go here")
    es.add_argument("--quiet", action="store_true", help="no progress output")

    mn = rsub.add_parser("mnist", help="Table 2: VAE, AVB, AVB+AC (and the BAVAE) on binarized MNIST, AIS "
                                       "log-likelihood",
                         description="Train (or resume from OUT's checkpoints) VAE, AVB and AVB + adaptive "
                                     "contrast (noise-basis encoder, supplement III), and on request the "
                                     "Biadversarial VAE, with one decoder architecture on DATA/train.npz, then "
                                     "evaluate each on the first --ais-examples rows of DATA/<split>.npz: AIS "
                                     "log-likelihood, ELBO (exact for the VAE; for the others only the "
                                     "adversary's estimate 'elbo_from_T', which is not a bound) and "
                                     "reconstruction.")
    mn.add_argument("--data", metavar="DIR", default=None,
                    help="folder with train.npz and <split>.npz (key 'x', uint8 0/1, N x 784) or the "
                         "binarized_mnist_*.amat files (default: $AVB_DATA); nothing is downloaded")
    mn.set_defaults(func=_mnist)
    _device_flag(mn)
    mn.add_argument("--split", default="valid", help="the evaluation file's name in DIR (default: valid)")
    mn.add_argument("--latent", type=positive_int, default=8, help="latent dimension (default 8)")
    mn.add_argument("--quick", action="store_true",
                    help="small nets, 300 iterations, AIS 50 steps on 64 examples (10-20 s); its "
                         "files are named *_quick, apart from a full run's")
    mn.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    mn.add_argument("--out", metavar="DIR", default="runs/mnist",
                    help="checkpoints (runs resume from them) and the figure (default: runs/mnist)")
    mn.add_argument("--models", type=_mnist_models, default=["vae", "avb", "avb_ac"],
                    help="comma list of vae,avb,avb_ac,bavae,bavae_exact (default: vae,avb,avb_ac); "
                         "bavae: the Biadversarial VAE (Fickinger, eq. 19) with AVB's architecture and "
                         "settings; bavae_exact: its ablation, eq. (6) + the exact reconstruction term")
    mn.add_argument("--ais-examples", type=positive_int, default=None,
                    help="evaluate the first N rows of the split (default 2048; quick 64)")
    mn.add_argument("--ais-steps", type=positive_int, default=None,
                    help="AIS intermediate distributions (default 1000; quick 50)")
    mn.add_argument("--ais-chains", type=positive_int, default=None,
                    help="AIS chains per example (default 5)")
    mn.add_argument("--leapfrog", type=positive_int, default=None,
                    help="leapfrog steps per HMC transition (default 10)")
    mn.add_argument("--pretrained", metavar="DIR", default=None,
                    help="evaluate the trained models in DIR (<model>_z<latent>.npz, e.g. results/mnist) "
                         "instead of training: Table 2 in the time of its evaluation")
    mn.add_argument("--export-pretrained", metavar="DIR", default=None,
                    help="after training, write each model's parameters to DIR/<model>_z<latent>.npz")
    mn.add_argument("--table", metavar="JSON", nargs="+", default=None,
                    help="only print the table of results JSONs written before (e.g. results/mnist_z8.json); "
                         "with several, also each model against the VAE over the images they share")
    _seed_flags(mn, 1)
    _step_flag(mn)
    mn.add_argument("--quiet", action="store_true", help="no progress output")
    _add_study(rsub)


def _add_study(rsub):
    """`reproduce mnist-study`: the screening study behind Table 2."""
    st = rsub.add_parser("mnist-study", help="the study behind Table 2: short runs of each setting, AIS-scored, "
                                             "compared by paired differences",
                         description="Train each --variants x --models pair (a variant changes some of Table 2's "
                                     "settings: learning rates, adversary steps, width, batch, decay, AC's variance floor) for --iters "
                                     "iterations per seed, score it by AIS (1000 distributions, 5 chains) on the "
                                     "first --ais-examples rows of DATA/valid.npz, and print the table: each "
                                     "model's mean over seeds and its paired difference to the same model at "
                                     "Table 2's settings (variant lr1e-3) over the same images.  Each run's record is OUT/<variant>_<model>_<iters>"
                                     "_seed<S>.json; runs already there are not repeated.")
    st.add_argument("--data", metavar="DIR", default=None,
                    help="folder with train.npz and valid.npz (default: $AVB_DATA)")
    st.add_argument("--variants", type=_study_variants, default=None, metavar="A,B,...",
                    help="comma list of variants (default: all); --list-variants shows them")
    st.add_argument("--list-variants", action="store_true", help="print the variants and their changes, and stop")
    st.add_argument("--models", type=_study_models, default=["vae", "avb", "avb_ac"], metavar="A,B,...",
                    help="comma list of vae,avb,avb_ac; each variant runs for the models it applies to")
    st.add_argument("--iters", type=positive_int, default=10000, help="training iterations per run (default 10000)")
    st.add_argument("--ais-examples", type=positive_int, default=256, help="evaluation images (default 256)")
    st.add_argument("--ais-steps", type=positive_int, default=1000, help="AIS distributions (default 1000)")
    st.add_argument("--latent", type=positive_int, default=8, help="latent dimension (default 8)")
    _seed_flags(st, 2)
    st.add_argument("--out", metavar="DIR", default="runs/study", help="runs and records (default runs/study)")
    st.add_argument("--json", metavar="PATH", help="write the gathered table here (e.g. results/mnist_study.json)")
    st.add_argument("--table", action="store_true", help="only gather OUT's records and print the table")
    st.add_argument("--full-length", metavar="JSON", nargs="+", default=None,
                    help="add the full-length models of Table 2 records (e.g. results/mnist_z8.json) as runs "
                         "of lr1e-3, on the study's images: against the same model's shorter lr1e-3 runs "
                         "(training length as a lever) and against the VAE runs of their length")
    st.add_argument("--bench-steps", action="store_true",
                    help="instead: time 200 training iterations of AVB and AVB + AC on the readable and the "
                         "fast step (one BLAS thread) and stop")
    st.add_argument("--quiet", action="store_true", help="no progress output")
    st.set_defaults(func=_mnist_study)


def _add_bench(sub):
    """`bench step|ops|ais`: the speed of one training step, of the two hot ops, of AIS."""
    bench = sub.add_parser("bench", help="benchmarks",
                           description="Time one AVB training step against this machine's matrix-product "
                                       "rate (bench step), the two hot ops against their naive forms "
                                       "(bench ops), or an AIS log-likelihood estimate (bench ais).")
    bsub = bench.add_subparsers(dest="what", required=True)
    bs = bsub.add_parser("step", help="time one AVB training step (Algorithm 1)",
                         description="Time one simultaneous AVB step (2 x 512 encoder and decoder, "
                                     "inner-product adversary of two 2 x 512 nets, batch 512, float32), "
                                     "count its FLOPs with the fixed rule 2B(3P_enc + 3P_dec + 2P_f + 5P_g) "
                                     "and compare with this machine's measured 1024 x 1024 sgemm rate.")
    bs.add_argument("--batch", type=positive_int, default=512, help="batch size (default 512)")
    bs.set_defaults(func=_bench_step)
    _device_flag(bs)
    bs.add_argument("--width", type=positive_int, default=512,
                    help="hidden width of every net, encoder, decoder and both adversary nets (default 512)")
    bs.add_argument("--steps", type=positive_int, default=30, help="timed steps (median)")
    bs.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    _step_flag(bs, "timed")
    bs.add_argument("--negatives", choices=["pairs", "all_pairs"], default="pairs",
                    help="the adversary's negatives: pairs (x_i, z_i ~ p(z)), one per example, or all_pairs "
                         "(every x_i with every prior z_j: B^2 negatives from one matrix product; default pairs)")
    bs.add_argument("--threads", type=positive_int, default=None,
                    help="BLAS threads for the step and the sgemm alike (sets OPENBLAS_NUM_THREADS "
                         "before numpy loads; default: the environment's)")
    bs.add_argument("--sweep", action="store_true",
                    help="batch 64, 512, 4096 x width 128, 512, 1024 (few timed steps for big cells)")
    bs.add_argument("--plot", metavar="PNG", help="with --sweep: bar chart of fraction_of_peak per cell")
    bs.add_argument("--also", metavar="JSON", nargs="+", default=[],
                    help="with --plot: earlier --sweep --json results to draw beside this one")
    bs.add_argument("--plot-cpu", action="store_true",
                    help="with --plot: draw the CPU-time fraction (the robust one on a loaded machine)")
    bs.add_argument("--profile", action="store_true",
                    help="where the time goes: matrix products alone, ELU, Adam, the rest; and cProfile")
    bs.add_argument("--time-to-result", metavar="KIND", choices=["avb", "avb_ac"],
                    help="instead: train KIND on the 4-point data (Table 1 settings) until the exact "
                         "log-likelihood reaches -1.40; training wall time per seed, evaluation excluded")
    bs.add_argument("--seeds", type=seed_list, default=(0, 1, 2), metavar="N|A,B,...",
                    help="with --time-to-result: N, the seeds 0..N-1, or a comma list A,B,... (default 3)")

    bo = bsub.add_parser("ops", help="time the two hot ops against their naive forms",
                         description="For each op (row-wise and all-pairs inner-product logits, the fused "
                                     "eq. (3.3) loss, the Bernoulli log-likelihood) and each backend present, "
                                     "time per call over B in {64, 512, 4096} x H in {64, 512, 1024} against "
                                     "the naive NumPy/CuPy composition it replaces.")
    bo.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    bo.set_defaults(func=_bench_ops)

    ba = bsub.add_parser("ais", help="time an AIS log-likelihood estimate (Table 2's protocol)",
                         description="Time AIS (1000 sigmoid-schedule distributions, 5 chains, 10 leapfrog "
                                     "steps, adaptive step size) on a decoder of the MNIST architecture, "
                                     "random-initialised or from a checkpoint of reproduce mnist; print "
                                     "seconds per example and the mean log p(x).  One BLAS thread unless "
                                     "--threads says otherwise.")
    ba.set_defaults(func=_bench_ais)
    _device_flag(ba)
    ba.add_argument("--examples", type=positive_int, default=64, help="examples (default 64)")
    ba.add_argument("--data", metavar="FILE",
                    help="binary data: the first --examples rows of this .npz / .amat / IDX file "
                         "(default: random binary pixels)")
    ba.add_argument("--model", metavar="CHECKPOINT", help="a model checkpoint written by reproduce mnist "
                                                         "(default: a random-initialised decoder)")
    ba.add_argument("--kind", default="vae", metavar="KIND",
                    help="the model kind of --model, as reproduce mnist names it (default vae)")
    ba.add_argument("--latent", type=positive_int, default=8, help="latent dimension (default 8)")
    ba.add_argument("--steps", type=positive_int, default=1000, help="intermediate distributions (default 1000)")
    ba.add_argument("--chains", type=positive_int, default=5, help="chains per example (default 5)")
    ba.add_argument("--leapfrog", type=positive_int, default=10, help="leapfrog steps (default 10)")
    ba.add_argument("--seed", type=non_negative_int, default=0, help="seed of the chains and the init (default 0)")
    ba.add_argument("--repeats", type=positive_int, default=1,
                    help="run the estimate this many times and report the fastest (default 1)")
    ba.add_argument("--threads", type=positive_int, default=None,
                    help="BLAS threads (sets OPENBLAS_NUM_THREADS before numpy loads; default 1)")
    ba.add_argument("--json", metavar="PATH", help="write the figures as JSON here")


def _add_train(sub):
    """`train`: one model on the 4-point dataset, resumable."""
    tr = sub.add_parser("train", help="train one model on the 4-point dataset (resumable)",
                        description="Train one model (VAE, AVB, AVB + adaptive contrast or the Biadversarial "
                                    "VAE) on the paper's 4-point dataset with the Table 1 settings, resuming "
                                    "from --checkpoint if it exists, then print its Table 1 numbers (exact "
                                    "log-likelihood, reconstruction error, ELBO, KL(q(z), p(z))) as one "
                                    "JSON line.")
    tr.add_argument("--model", choices=["vae", "avb", "avb_ac", "bavae"], default="avb",
                    help="vae, avb, avb_ac, or bavae (the Biadversarial VAE, Fickinger; default avb)")
    tr.set_defaults(func=_train)
    _device_flag(tr)
    tr.add_argument("--iters", type=positive_int, default=None,
                    help="iterations (default: the Table 1 setting)")
    tr.add_argument("--seed", type=non_negative_int, default=0, help="training seed (default 0)")
    tr.add_argument("--checkpoint", metavar="PATH", required=True,
                    help="checkpoint .npz: written atomically, resumed from if it exists")
    tr.add_argument("--quick", action="store_true", help="the quick Table 1 settings")
    tr.add_argument("--curve-every", type=non_negative_int, default=0, metavar="N",
                    help="record the exact log-likelihood every N iterations")
    tr.add_argument("--json", metavar="PATH", help="write the final evaluation (and curve) as JSON")
    tr.add_argument("--allow-config-change", action="store_true",
                    help="resume a checkpoint even if its seed or settings differ from the asked ones (the "
                         "differences are printed); without it such a resume stops and lists them")
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    _step_flag(tr)


def _add_assignments(sub):
    """`assignments list|build|grade`: the course tooling."""
    asg = sub.add_parser("assignments", help="course assignments: student tree, handouts, grader",
                         description="Build a student copy of the project with chosen solution regions "
                                     "(### BEGIN SOLUTION / ### END SOLUTION in the library) blanked, "
                                     "and grade a student tree task by task (pytest -m taskX_Y).")
    asub = asg.add_subparsers(dest="action", required=True)
    al = asub.add_parser("list", help="the tasks and where their solution regions are",
                         description="List the course's tasks: id, title, points, prerequisites, and the "
                                     "pytest marker that grades each.")
    al.add_argument("--source", metavar="DIR", help="source checkout (default: the one imported)")
    al.set_defaults(func=_assignments_list)
    ab = asub.add_parser("build", help="write a student tree with the chosen tasks blanked",
                         description="Copy the library, kernels, chapters and tests into OUT with the "
                                     "chosen tasks' solution regions replaced by raise NotImplementedError, "
                                     "plus a Markdown handout per task (OUT/handouts) and OUT/STUDENT.md.  "
                                     "OUT must not exist or be empty; nothing is left behind on an error.  "
                                     "It refuses a tree in which a task's answer can still be found "
                                     "(a twin of the code, a test or a chapter that writes it out) or a blanked "
                                     "task's tests pass.")
    ab.add_argument("out", metavar="OUT", help="output folder (generated: never commit it)")
    ab.add_argument("--tasks", metavar="LIST", help="comma list of task ids, e.g. 3.1,3.2 (default: all)")
    ab.add_argument("--source", metavar="DIR", help="source checkout (default: the one imported)")
    ab.add_argument("--no-check", action="store_true",
                    help="skip running each task's tests with that task alone blanked (the grep for "
                         "answers left in the tree still runs)")
    ab.set_defaults(func=_assignments_build)
    ag = asub.add_parser("grade", help="run each task's tests in a student tree and score them",
                         description="Run the instructor's tests marked with each task (one pytest session "
                                     "in a private folder, against DIR's avb_minimal; DIR's own tests, conftest.py "
                                     "and pytest settings are never used) and print a score table: task, tests passed, status "
                                     "(passed / not implemented / blocked by X.Y / failed), points.")
    ag.add_argument("dir", metavar="DIR", help="the student (or solution) tree")
    ag.add_argument("--tasks", metavar="LIST", help="comma list of task ids (default: those DIR/handouts/tasks.json "
                                                    "lists, else all; the student can edit that file)")
    ag.add_argument("--tests", metavar="TESTS", help="the instructor's tests/ folder (default: the one of the checkout "
                                                     "the grader runs from); the tree's own tests are never used")
    ag.add_argument("--json", metavar="PATH", help="write the gradebook entry as JSON (atomically)")
    ag.add_argument("--timeout", type=positive_int, default=1800,
                    help="seconds before the test run is stopped (default 1800)")
    ag.add_argument("--require-all", action="store_true",
                    help="exit with status 3 unless every task passed (for CI on the solution tree)")
    ag.set_defaults(func=_assignments_grade)


def _add_selfcheck(sub):
    """`selfcheck`: one command that checks a GPU (or, with --device cpu, the strict stand-in)."""
    sc = sub.add_parser("selfcheck", help="check the device path: device tests, bench ops, bench step, a short "
                                          "Table 1; one JSON",
                        description="Runs, in a few minutes: the device tests of tests/test_device.py "
                                    "(pytest -m device, from the checkout), bench ops, bench step on the "
                                    "device at three sizes, and a quick Table 1 on the device; writes one "
                                    "JSON that names the device.  With --device cpu the tests run on the "
                                    "strict stand-in and the benchmarks on NumPy.")
    sc.set_defaults(func=_selfcheck)
    _device_flag(sc, "gpu")
    sc.add_argument("--json", metavar="PATH", help="write the results here")
    sc.add_argument("--sizes", default="512x512,4096x1024,16384x1024",
                    help="bench step sizes, BATCHxWIDTH, comma-separated (default: 512x512,4096x1024,16384x1024)")
    sc.add_argument("--no-tests", action="store_true", help="skip the device tests (the benchmarks only)")


def build_parser():
    p = argparse.ArgumentParser(prog="avb-minimal",
                                description="Adversarial Variational Bayes (Mescheder et al., 2017), "
                                            "minimal NumPy + autograd implementation.")
    p.add_argument("--version", action="version", version=f"avb-minimal {package_version()}",
                   help="print the package's version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_reproduce, _add_bench, _add_train, _add_assignments, _add_selfcheck):
        add(sub)
    return p


def _table1(args):
    from .data import four_points
    from .experiments.plots import latent_figure
    from .experiments.table1 import format_table1, table1, table1_json, table1_settings
    res = table1(seeds=_seeds(args), quick=args.quick, out_dir=args.out, kinds=args.models, quiet=args.quiet,
                 curve_every=args.curve_every or None, device=args.device, step=args.step)
    print(format_table1(res))
    arch, _, _ = table1_settings(args.quick)
    models = {k: res["models"][k]["_params"][0] for k in args.models}
    stats = {k: f"log p(x) = {res['models'][k]['runs'][0]['log_likelihood']:.3f}" for k in args.models}
    q = "_quick" if args.quick else ""                     # quick and full runs share --out without clashing
    fig = latent_figure(models, four_points(), arch, os.path.join(args.out, f"figure6_latent{q}.png"),
                        stats=stats)
    print(f"latent-space figure (Fig. 6): {fig}")
    if args.curve_every:
        from .experiments.plots import curve_figure
        from .experiments.table1 import OPTIMUM_LL
        curves = {f"{k} seed {i}": c for k in args.models for i, c in zip(_seeds(args), res["models"][k]["curves"])}
        print("log-likelihood curves:", curve_figure(curves, os.path.join(args.out, f"ll_curves{q}.png"),
                                                     optimum=OPTIMUM_LL))
    if args.json:
        write_json(args.json, table1_json(res), device=args.device)
        print(f"results: {args.json}")


def _eight_schools(args):
    from .experiments.eight_schools import format_eight_schools, run_eight_schools
    res = run_eight_schools(quick=args.quick, seeds=_seeds(args), out_dir=args.out,
                            quiet=args.quiet, json_path=args.json, device=args.device)
    print(format_eight_schools(res))


def _mnist(args):
    from .experiments.mnist import (
        export_pretrained,
        format_mnist,
        format_paired_across,
        format_mnist_over_seeds,
        load_mnist_model,
        mnist_arch,
        mnist_over_seeds,
        pretrained_path,
        reproduce_mnist,
    )
    if args.pretrained and args.export_pretrained:
        raise ValueError("--export-pretrained writes the models a run trains; with --pretrained it trains none")
    if args.table:
        tables = {}
        for path in args.table:
            with open(path) as fh:
                tables[path] = json.load(fh)
            print(format_mnist(tables[path]))
        if len(tables) > 1:
            print(format_paired_across(tables))
        return
    seeds, per_seed = _seeds(args), {}
    for seed in seeds:               # several seeds: each its own checkpoints, figure and JSON
        json_path = args.json
        if args.json and len(seeds) > 1:
            json_path = f"{os.path.splitext(args.json)[0]}_seed{seed}.json"
        res = reproduce_mnist(args.data, args.split, args.latent, args.quick, args.out, args.models,
                              args.ais_examples, args.ais_steps, args.ais_chains, args.leapfrog, seed=seed,
                              quiet=args.quiet, json_path=json_path, device=args.device, step=args.step,
                              pretrained=args.pretrained)
        per_seed[seed] = res
        print(format_mnist(res))
        print(f"figure (samples and reconstructions): {res['figure']}")
        if res.get("figure7"):
            print(f"Figure 7 (samples of AVB + AC beside training images): {res['figure7']}")
        if args.export_pretrained:
            for k in ("vae", "avb", "avb_ac"):
                if k in args.models:
                    params, _ = load_mnist_model(k, res[k]["checkpoint"], mnist_arch(args.latent, args.quick))
                    path = export_pretrained(params, k, mnist_arch(args.latent, args.quick),
                                             pretrained_path(args.export_pretrained, k, args.latent),
                                             res[k]["trained_iterations"], seed)
                    print(f"{k}: parameters for --pretrained written to {path}")
        if json_path:
            print(f"results: {json_path}")
    if len(seeds) > 1:
        summary = mnist_over_seeds(per_seed)
        print(format_mnist_over_seeds(summary))
        if args.json:
            write_json(args.json, dict(summary, per_seed_json={
                s: f"{os.path.splitext(args.json)[0]}_seed{s}.json" for s in seeds}), device=args.device)
            print(f"summary over seeds: {args.json}")


def _mnist_study(args):
    from .data import data_dir, dataset_file, load_binary
    from .experiments import mnist_study as S
    if args.list_variants:
        for name, (kinds, arch_ch, cfg_ch) in S.VARIANTS.items():
            ch = ", ".join(f"{k}={v}" for k, v in {**arch_ch, **cfg_ch}.items()) or "Table 2's settings"
            print(f"{name:18s} {'/'.join(kinds):16s} {ch}")
        return
    if args.bench_steps:
        folder = data_dir(args.data)
        x_train = load_binary(dataset_file(folder, "train"), np.random.default_rng([0, 0]))
        res = S.bench_steps(x_train, latent=args.latent)
        for kind, r in res.items():
            print(f"{kind:7s} " + "   ".join(f"{step} step {v['wall_ms']:.1f} ms wall, {v['cpu_ms']:.1f} ms CPU"
                                             for step, v in r.items())
                  + f"   (fast: {r['readable']['cpu_ms'] / r['fast']['cpu_ms']:.2f}x less CPU)")
        if args.json:
            write_json(args.json, res)
        return
    for path in args.full_length or ():
        if not os.path.isfile(path):
            raise ValueError(f"--full-length: {path}: no such file (a JSON of reproduce mnist --json)")
    if not args.table:
        variants = S.VARIANTS if args.variants is None else args.variants
        models = args.models
        folder = data_dir(args.data)
        x_train = load_binary(dataset_file(folder, "train"), np.random.default_rng([0, 0]))
        x_eval = load_binary(dataset_file(folder, "valid"), np.random.default_rng([0, 1]))[:args.ais_examples]
        for seed in _seeds(args):
            for v in variants:
                for k in models:
                    if k in S.VARIANTS[v][0]:
                        r = S.screen_run(v, k, x_train, x_eval, args.out, args.iters, seed, args.latent,
                                         args.ais_steps, quiet=args.quiet)
                        print(f"{v} {k} seed {seed}: AIS log p(x) {r['ais_log_likelihood']:.2f} on {r['n_eval']} "
                              f"images ({r['train_seconds']:.0f} s training, {r['ais_seconds']:.0f} s AIS)",
                              flush=True)
    table = S.study_table(args.out, full_length=args.full_length or ())
    print(S.format_study(table))
    if args.json:
        write_json(args.json, table)
        print(f"table: {args.json}")


def _bench_step(args):
    from .fast import bench_step as BS
    if args.threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        raise ValueError("--threads only works from the command line (before numpy loads); "
                         "set OPENBLAS_NUM_THREADS instead")
    if args.time_to_result:
        runs = []
        for seed in args.seeds:
            runs.append(BS.time_to_result(args.time_to_result, seed, step=args.step, device=args.device))
            print(f"{args.time_to_result} seed {seed} ({runs[-1]['step']} step, {runs[-1]['device_name']}): "
                  + (f"log-likelihood >= -1.40 after {runs[-1]['seconds']:.1f} s of training "
                     f"({runs[-1]['cpu_seconds']:.1f} CPU s; iteration {runs[-1]['iteration']})"
                     if runs[-1]["reached"] else
                     f"never reached -1.40 (best {runs[-1]['best_log_likelihood']:.4f})"), flush=True)
        secs = [x["seconds"] if x["reached"] else float("inf") for x in runs]
        cpus = [x["cpu_seconds"] if x["reached"] else float("inf") for x in runs]
        print(f"median over {len(runs)} seeds: {float(np.median(secs)):.1f} s of training "
              f"({float(np.median(cpus)):.1f} CPU s: the wall time on an idle core)")
        r = {"runs": runs, "median_seconds": float(np.median(secs)), "median_cpu_seconds": float(np.median(cpus))}
    elif args.profile:
        r = BS.profile_step(args.batch, args.width, steps=min(args.steps, 15), step=args.step)
        print(BS.format_profile(r))
        print(r["cprofile"])
    elif args.sweep:
        r = BS.bench_sweep(step=args.step, negatives=args.negatives,
                           progress=lambda c: print(BS.format_cell(c), flush=True))
        if args.plot:
            sweeps = {}
            for path in args.also:
                with open(path) as fh:
                    old = json.load(fh)
                sweeps[f"{old['step']}, {old['threads']} thread(s)"] = old
            sweeps[f"{r['step']}, {r['threads']} thread(s)"] = r
            key = "fraction_of_peak_cpu" if args.plot_cpu else "fraction_of_peak"
            print("figure:", BS.sweep_figure(sweeps, args.plot, key))
    elif args.device == "gpu":
        r = BS.bench_graph(args.device, steps=min(args.steps, 20))
        print(BS.format_graph(r))
    else:
        r = BS.bench_step(batch=args.batch, width=args.width, steps=args.steps,
                          negatives=args.negatives, step=args.step, device=args.device)
        print(BS.format_cell(r))
    if args.json:
        write_json(args.json, r, device=args.device)


def _bench_ops(args):
    from .fast.bench_ops import bench_ops, format_bench_ops
    r = bench_ops()
    print(format_bench_ops(r))
    if args.json:      # the device: 'gpu' where the CuPy backend was timed too
        write_json(args.json, r, device="gpu" if "cupy" in r["backends"] else "cpu")


def _bench_ais(args):
    from .experiments.mnist import check_mnist_kind
    from .fast.bench_ais import bench_ais, format_bench_ais
    if args.threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        raise ValueError("--threads only works from the command line (before numpy loads); "
                         "set OPENBLAS_NUM_THREADS instead")
    r = bench_ais(examples=args.examples, steps=args.steps, chains=args.chains, leapfrog=args.leapfrog,
                  data=args.data, checkpoint=args.model, kind=check_mnist_kind(args.kind),
                  latent=args.latent, seed=args.seed, repeats=args.repeats, device=args.device)
    print(format_bench_ais(r))
    if args.json:
        write_json(args.json, r, device=args.device)


def _train(args):
    from .data import four_points
    from .experiments.table1 import loglik_curve_fn, table1_settings, train_and_evaluate
    from .train import TrainConfig
    arch, cfgs, ev = table1_settings(args.quick)
    cfg = cfgs[args.model]
    cfg = TrainConfig(**dict(cfg.__dict__, step=args.step, **({"iters": args.iters} if args.iters else {})))
    data = four_points()
    eval_fn = loglik_curve_fn(data, arch) if args.curve_every else None
    params, info, res = train_and_evaluate(args.model, data, arch, cfg, ev, seed=args.seed,
                                           checkpoint=args.checkpoint, quiet=args.quiet, eval_fn=eval_fn,
                                           eval_every=args.curve_every, desc=args.model, device=args.device,
                                           allow_config_change=args.allow_config_change)
    res["wall_seconds"] = info["wall_seconds"]
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()}))
    if args.json:
        write_json(args.json, dict(res, history=info["history"]), device=args.device)


def _selfcheck(args):
    from .fast.selfcheck import format_selfcheck, parse_sizes, selfcheck
    r = selfcheck(args.device, parse_sizes(args.sizes), tests=not args.no_tests)
    print(format_selfcheck(r))
    if args.json:
        write_json(args.json, r, device=args.device)
        print(f"results: {args.json}")
    if r["tests"] is not None and r["tests"]["exit_code"] != 0:
        raise RuntimeError("the device tests failed (see above)")


def _assignments_list(args):
    from .course.build import default_source
    from .course.tasks import format_list, list_regions
    print(format_list(list_regions(args.source or default_source())))


def _assignments_build(args):
    from .course.build import build
    r = build(args.out, tasks=args.tasks, source=args.source, check=not args.no_check)
    if not args.no_check:
        print(f"checked: each task's tests fail with that task alone blanked ({', '.join(r['tasks'])})")
    print(f"student tree for task(s) {', '.join(r['tasks'])}: {r['out']}")
    print(f"blanked: {', '.join(r['files'])}; handouts: {os.path.join(r['out'], 'handouts')}; "
          f"start with {os.path.join(r['out'], 'STUDENT.md')}")


def _assignments_grade(args):
    from .course.grade import format_grade, grade
    g = grade(args.dir, tasks=args.tasks, timeout=args.timeout, tests=args.tests)
    print(format_grade(g))
    if args.json:
        write_json(args.json, g, device="cpu")
        print(f"gradebook: {args.json}")
    if args.require_all:
        bad = [r["task"] for r in g["tasks"] if r["status"] != "passed"]
        if bad:
            raise RuntimeError(f"--require-all: task(s) {', '.join(bad)} did not pass")


def main(argv=None):
    args = build_parser().parse_args(argv)
    note_start()             # provenance names the commit this command started from
    try:
        check_paths(args)
        args.func(args)      # each sub-command names its function with set_defaults(func=...)
        sys.stdout.flush()   # a closed pipe shows here, not at exit
    except BrokenPipeError:  # `... | head -1`: the reader has gone; stop quietly (Python's docs' recipe)
        try:                 # stdout to devnull, so that the flush at exit does not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):     # a stdout without a file (pytest's capture)
            pass
        return 141           # 128 + SIGPIPE: what a shell reports for a program stopped by a closed pipe
    except (ValueError, OSError, MemoryError) as e:          # OSError: a path that went bad during the run
        remove_created_folders(args)
        print(f"avb-minimal: error: {e or 'out of memory'}", file=sys.stderr)
        return 2
    except RuntimeError as e:      # TrainingDiverged (last good checkpoint kept), --device gpu without one
        remove_created_folders(args)
        print(f"avb-minimal: stopped: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
