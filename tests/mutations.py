"""Mutation testing of the objectives: does tests/test_propositions.py, on its own, catch a
wrong objective or a wrong gradient cut?

    python tests/mutations.py [--all] [--only NAME,...]

Each mutation changes one line of the library (in a temporary copy of the checkout), then
runs tests/test_propositions.py there (--all: the whole suite too) and reports which tests
fail.  The unmutated copy must pass first.  Exit status 1 if any mutation survives.
About 20 s per mutation on one core (not part of the default test run)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, the line as it is, the line mutated): each `old` occurs exactly once.
MUTATIONS = [
    ("adversary receives the encoder's gradient", "avb_minimal/objectives.py",
     "_adversary_logits(adv, x, getval(z_adv), z_neg,", "_adversary_logits(adv, x, z_adv, z_neg,"),
    ("generator's T not frozen (g's psi)", "avb_minimal/objectives.py",
     "M.adversary_features_z(adv_fixed, z_adv, act, unary))", "M.adversary_features_z(adv, z_adv, act, unary))"),
    ("generator's T not frozen (f's psi)", "avb_minimal/objectives.py",
     "T_gen = (inner_product_rows(getval(F), ", "T_gen = (inner_product_rows(F, "),
    ("folded prior's sign flipped", "avb_minimal/models.py",
     "return 0.5 * np.sum(z * z, axis=-1)", "return -0.5 * np.sum(z * z, axis=-1)"),
    ("eq. (III.3) with |a| instead of a^2", "avb_minimal/models.py",
     "onp.sum(a ** 2 * v_var[None], axis=1)", "onp.sum(onp.abs(a) * v_var[None], axis=1)"),
    ("eq. (3.3) labels swapped", "avb_minimal/objectives.py",
     "return np.mean(softplus(-T_pos)) + np.mean(softplus(T_neg))",
     "return np.mean(softplus(T_pos)) + np.mean(softplus(-T_neg))"),
    ("eq. (3.7) with +T", "avb_minimal/objectives.py",
     "return np.mean(-T_q + loglik)", "return np.mean(T_q + loglik)"),
    ("eq. (4.2) without ||z_bar||^2 / 2", "avb_minimal/objectives.py",
     "return np.mean(-T_bar + 0.5 * np.sum(z_bar * z_bar, axis=-1) + loglik + log_prior)",
     "return np.mean(-T_bar + loglik + log_prior)"),
    ("z_bar not divided by sigma (Alg. 2 line 9)", "avb_minimal/models.py",
     "return (z - mean) / onp.sqrt(var + AC_VAR_FLOOR)", "return (z - mean) + 0 * onp.sqrt(var + AC_VAR_FLOOR)"),
    ("eq. (4.2)'s log p(z) taken at z_bar", "avb_minimal/objectives.py",
     "ac_generator_objective(T_gen, z_adv, loglik, log_std_normal(z))",
     "ac_generator_objective(T_gen, z_adv, loglik, log_std_normal(z_adv))"),
    ("negatives scored on q's samples", "avb_minimal/objectives.py",
     "T_neg = inner_product_rows(F, G_neg) + M.fold_prior(z_neg)",
     "T_neg = inner_product_rows(F, G_pos) + M.fold_prior(z_neg)"),
    ("folded prior missing on the negatives", "avb_minimal/objectives.py",
     "T_neg = inner_product_rows(F, G_neg) + M.fold_prior(z_neg)", "T_neg = inner_product_rows(F, G_neg)"),
]


def _copy(dst):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", ".venv", ".git")
    for d in ("avb_minimal", "kernels", "tests", "chapters"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(dst, d), ignore=ignore)
    for f in ("setup.py", "README.md"):
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dst, f))


def _failing(tree, files, timeout):
    env = dict(os.environ, PYTHONPATH=tree, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *files]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    failed = re.findall(r"^FAILED (\S+?)(?: - |$)", r.stdout, re.MULTILINE)
    return r.returncode, [f.split("::", 1)[1] if "::" in f else f for f in failed]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also run the whole suite (slow)")
    ap.add_argument("--only", help="comma list of mutation numbers (1-based)")
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args(argv)
    files = ["tests"] if args.all else ["tests/test_propositions.py"]
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(1, len(MUTATIONS) + 1)
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="avb-mutations-") as work:
        tree = os.path.join(work, "tree")
        _copy(tree)
        rc, failed = _failing(tree, files, args.timeout)
        if rc != 0:
            print(f"the unmutated tree fails: {failed}")
            return 2
        print(f"{'#':>2}  {'mutation':<45} caught by ({' '.join(files)})")
        for i in chosen:
            name, path, old, new = MUTATIONS[i - 1]
            full = os.path.join(tree, path)
            with open(full, encoding="utf-8") as fh:
                text = fh.read()
            if text.count(old) != 1:
                raise SystemExit(f"mutation {i} ({name}): {old!r} occurs {text.count(old)} times in {path}")
            with open(full, "w", encoding="utf-8") as fh:
                fh.write(text.replace(old, new))
            try:
                rc, failed = _failing(tree, files, args.timeout)
            finally:
                with open(full, "w", encoding="utf-8") as fh:
                    fh.write(text)
            survivors += not failed
            print(f"{i:>2}  {name:<45} {', '.join(failed) if failed else 'SURVIVED'}", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} mutations caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
