"""Course assignments: a student tree with chosen functions blanked, a handout per
task, and a grader that runs the tests task by task.

One source of truth for *where* the solutions are: the library code itself.  A
solution region is a run of lines inside a function body, between two comment lines

    (indent)### BEGIN SOLUTION task 3.1: eq. (3.3), the adversary's loss
    (indent)### END SOLUTION

`build` replaces each chosen region by ``raise NotImplementedError("Task 3.1: ...")``
at the BEGIN line's indentation and drops the marker lines of the others.  TASKS below
holds what a handout needs about each task (title, equations, chapter, prerequisites,
points); every task in it must have at least one region and every region a task in it.
The tests carry one pytest marker per task (``@pytest.mark.task3_1``; tests/conftest.py
registers them from TASKS), and `grade` runs them in a student tree.

    python -m avb_minimal assignments list
    python -m avb_minimal assignments build OUT [--tasks 3.1,3.2]
    python -m avb_minimal assignments grade DIR [--tasks ...] [--json PATH] [--require-all]

Only the standard library is imported here: tests/conftest.py imports this module.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass

# ------------------------------------------------------------------ the manifest
# id -> what a handout needs.  `where` names the functions only for the reader: the
# regions themselves are found from the markers (list_regions), nowhere else.
TASKS = {
    "0.1": dict(
        title="the MLP forward pass",
        where="nn.mlp",
        what="Compose the layers of a multilayer perceptron whose parameters are a list of "
             "(W, b) pairs: an affine layer `linear(h, W, b)` then the activation for every "
             "layer but the last, which stays linear (its outputs are logits, means or "
             "log-variances).  Every encoder, decoder and adversary of the library is built "
             "from this function.",
        equations=["h_0 = x",
                   "h_l = act(h_{l-1} W_l + b_l)          l = 1 .. L-1",
                   "out = h_{L-1} W_L + b_L               (B, n_in) -> (B, n_out)"],
        chapter="chapters/01_elbo.py",
        paper="sec. 2 (the encoder and decoder networks); avb_minimal/nn.py (linear, elu)",
        prerequisites=[],
        points=10),
    "0.2": dict(
        title="the Bernoulli log-likelihood (its NumPy form)",
        where="ops._bernoulli_numpy",
        what="The NumPy form of the hot op `ops.bernoulli_loglik` (the CPU fallback of "
             "kernels/bernoulli.cu): one log-likelihood per row of binary data x given "
             "decoder logits l.  It must be exact for |l| up to 1e4 in float32, where the "
             "naive log(sigmoid(l)) gives -inf or nan and where summing x.l and softplus(l) "
             "separately loses whole nats to cancellation.",
        equations=["log p(x | z) = sum_d [x_d l_d - softplus(l_d)],   softplus(l) = log(1 + e^l)",
                   "x l - softplus(l) = l (x - [l > 0]) - log1p(e^{-|l|})   (no large terms cancel)",
                   "x, l: (B, D) -> (B,)"],
        chapter="chapters/01_elbo.py",
        paper="eq. (2.1) (the term log p_theta(x | z)); the docstring of avb_minimal/ops.py",
        prerequisites=[],
        points=10),
    "0.3": dict(
        title="the Bernoulli log-likelihood's VJP",
        where="ops._bernoulli_vjp",
        what="The hand-written vector-Jacobian product of `ops.bernoulli_loglik` on the "
             "NumPy path: given the incoming gradient g (one value per row), the gradients "
             "with respect to x and to the logits.  autograd calls it whenever a loss "
             "containing log p(x|z) is differentiated.",
        equations=["d/dl_bd = g_b (x_bd - sigmoid(l_bd))",
                   "d/dx_bd = g_b l_bd                     g: (B,) -> dx, dl: (B, D)"],
        chapter="chapters/01_elbo.py",
        paper="eq. (2.1); autograd.extend.defvjp / defvjp_argnums",
        prerequisites=["0.2"],
        points=10),
    "2.1": dict(
        title="the VAE evidence lower bound, eq. (2.1)",
        where="objectives.vae_elbo",
        what="The ELBO of a VAE for each row of a batch, with one reparameterised sample "
             "z = mean + exp(log_var / 2) * eps from the Gaussian encoder "
             "(`models.gaussian_encoder`), the decoder's Bernoulli log-likelihood and the "
             "KL to the prior in closed form (`distributions.kl_diag_normal_std`).",
        equations=["ELBO(x) = -KL(q_phi(z|x), p(z)) + E_{q_phi(z|x)} log p_theta(x|z)      (2.1)",
                   "one sample z = mu(x) + exp(log_var(x) / 2) * eps, eps ~ N(0, I)",
                   "KL(N(mu, diag(s2)), N(0, I)) = 1/2 sum_j (s2_j + mu_j^2 - 1 - log s2_j)",
                   "-mean_x ELBO(x) is the loss of eq. (2.4) (objectives.vae_loss)"],
        chapter="chapters/01_elbo.py",
        paper="sec. 2, eq. (2.1)-(2.4)",
        prerequisites=["0.1", "0.2", "0.3"],
        points=10),
    "3.1": dict(
        title="the adversary's loss, eq. (3.3)",
        where="objectives.adversary_loss",
        what="The loss the adversary T minimises: the negative of eq. (3.3), a logistic "
             "regression that labels pairs (x, z ~ q(z|x)) 1 and pairs (x, z ~ p(z)) 0.  "
             "Write it with the stable `ops.softplus`; T_neg may be a vector of matched "
             "pairs or a (B, M) matrix of all pairs (average over all its entries).",
        equations=["max_T  E_{p_D(x)} E_{q(z|x)} log sigma(T(x, z))",
                   "     + E_{p_D(x)} E_{p(z)} log(1 - sigma(T(x, z)))                 (3.3)",
                   "-log sigma(t) = softplus(-t),   -log(1 - sigma(t)) = softplus(t)",
                   "optimum: T*(x, z) = log q(z|x) - log p(z)       (Proposition 1, eq. 3.4)"],
        chapter="chapters/03_adversary.py",
        paper="sec. 3.1, eq. (3.2)-(3.4); supplement I, eq. (I.1)-(I.4)",
        prerequisites=[],
        points=10),
    "3.2": dict(
        title="the generator objective, eq. (3.7)",
        where="objectives.generator_objective",
        what="The objective the encoder and decoder maximise in Algorithm 1, given the "
             "adversary's logits on encoder samples and the decoder's log-likelihoods.  With "
             "T = T* (held fixed) its gradient is the ELBO's gradient (Proposition 2).",
        equations=["max_{theta, phi} E_{p_D(x)} E_eps [-T(x, z_phi(x, eps)) + log p_theta(x | z_phi(x, eps))]  (3.7)",
                   "on a batch: the mean of -T_q + loglik"],
        chapter="chapters/04_gradient_identity.py",
        paper="sec. 3.1-3.2, eq. (3.5)-(3.7), Algorithm 1; chapter 05 puts it to work",
        prerequisites=["0.1", "0.2", "0.3", "2.1"],
        points=10),
    "4.1": dict(
        title="adaptive contrast, eq. (4.2)",
        where="models.normalise, objectives.ac_generator_objective",
        what="Two pieces of Algorithm 2: the normalised sample z_bar the adversary sees "
             "(mean and variance of q(z|x) are constants here, plus the variance floor "
             "models.AC_VAR_FLOOR), and the generator objective of eq. (4.2), in which "
             "-log r_alpha(z|x) reduces to ||z_bar||^2 / 2 up to a constant.",
        equations=["z_bar = (z - mu(x)) / sqrt(var(x) + 1e-4)                  (Algorithm 2, line 9)",
                   "max E[-T(x, z_bar) + ||z_bar||^2 / 2 + log p_theta(x | z) + log p(z)]",
                   "                                        (eq. 4.2 as in Algorithm 2, line 12)"],
        chapter="chapters/07_adaptive_contrast.py",
        paper="sec. 4, eq. (4.1)-(4.3); supplement II, Algorithm 2",
        prerequisites=[],
        points=10),
    "5.1": dict(
        title="the k-nearest-neighbour KL estimator",
        where="evaluate.knn_kl",
        what="KL(P || Q) from samples of both (Wang, Kulkarni & Verdu 2009; the ITE "
             "estimator the paper uses to score AVB against HMC on Eight Schools).  Use "
             "scipy.spatial.cKDTree (the helper `_kth_distance` is given); reject duplicate "
             "P samples (rho = 0) with a ValueError.",
        equations=["KL(P || Q) ~ d/n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))",
                   "rho_k(i): distance from x_i to its k-th nearest neighbour among the other n - 1 P samples",
                   "nu_k(i):  distance from x_i to its k-th nearest neighbour among the m Q samples",
                   "d: the dimension of the samples"],
        chapter="chapters/10_eight_schools.py",
        paper="sec. 5.1 (Eight Schools, KL to the HMC posterior); chapter 06 also uses it",
        prerequisites=[],
        points=10),
    "5.2": dict(
        title="the inner-product adversary's NumPy reference",
        where="ops.inner_product_rows, ops._rows_vjp, ops._pairs_T, ops._pairs_dF, ops._pairs_dG",
        what="The NumPy forms (the CPU fallback, and the reference the CUDA kernels of "
             "kernels/inner_product.cu are checked against) of the batched inner-product "
             "adversary: the row-wise logits and the all-pairs logits, and the VJPs of both.  "
             "The fastest honest NumPy form: no (B, M, H) temporaries, BLAS for the products "
             "(`_rowdot` is given for the row-wise inner products).",
        equations=["row-wise:  T_i = <F_i, G_i>;           dF_i = g_i G_i,  dG_i = g_i F_i",
                   "           F, G: (B, H), g: (B,)",
                   "all pairs: T_ij = <F_i, G_j> = (F G^T)_ij;  dF = g G,  dG = g^T F",
                   "           F: (B, H), G: (M, H), g: (B, M)"],
        chapter="chapters/03_adversary.py",
        paper="sec. 5.2 (T(x, z) = <f(x), g(z)>); the docstring of avb_minimal/ops.py",
        prerequisites=[],
        points=10),
}

SCAN_DIR = "avb_minimal"                 # where the regions live (library code only)
SCAN_EXCLUDE = ("avb_minimal/assignments.py",)
STUDENT_DIRS = ("avb_minimal", "kernels", "chapters", "tests")
STUDENT_FILES = ("setup.py", "README.md", "setup.cfg", "MANIFEST.in", "LICENSE")   # those present
STUDENT_DROP = ("tests/test_assignments.py",)    # checks the solution tree: meaningless there
TREE_TASKS = "handouts/tasks.json"                # the tasks a student tree hands out (grade's default)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".pytest_cache",
                                 "*.so", "*.o")

_TASK_ID = re.compile(r"^\d+\.\d+$")
_MARKER = re.compile(r"^(?P<indent>[ \t]*)### (?P<kind>BEGIN|END) SOLUTION(?P<rest>.*?)\s*$")
_LOOSE = re.compile(r"^\s*#.*\b(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE)
_BEGIN_REST = re.compile(r"^ task (?P<id>\d+\.\d+)(?:: (?P<desc>\S.*))?$")
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
_TEST_MARK = re.compile(r"^\s*@pytest\.mark\.task(\d+)_(\d+)\b")
_TEST_DEF = re.compile(r"^\s*def (test_\w+)")


def marker_name(task_id):
    """The pytest marker of a task: '3.1' -> 'task3_1'."""
    return "task" + task_id.replace(".", "_")


def handout_name(task_id):
    return f"task_{task_id.replace('.', '_')}.md"


@dataclass(frozen=True)
class Region:
    path: str          # relative to the source root, '/'-separated
    task: str
    desc: str          # the text after 'task X.Y: ' on the BEGIN line ('' if none)
    begin: int         # 1-based line of BEGIN SOLUTION
    end: int           # 1-based line of END SOLUTION
    indent: str
    function: str      # the enclosing function
    n_lines: int       # non-blank lines of solution

    def message(self, tasks=TASKS):
        """What the student tree's stub raises."""
        desc = self.desc or tasks[self.task]["title"]
        return f"Task {self.task}: {desc} (see handouts/{handout_name(self.task)})"


# ------------------------------------------------------------------ scanning
def scan_file(text, path, tasks=TASKS):
    """The solution regions of one file's text, checked strictly.  ValueError naming
    `path` and the line for: a malformed marker, BEGIN without a task id or with a task
    not in `tasks`, a nested BEGIN, an END without BEGIN or never reached, an empty
    region, a region at module level or outside a function body, an END indented
    unlike its BEGIN, or a line in the region indented less than its markers."""
    lines = text.splitlines()
    regions, open_ = [], None            # open_: (line, indent, task, desc)
    for i, line in enumerate(lines, 1):
        m = _MARKER.match(line)
        if not m:
            if _LOOSE.match(line):
                raise ValueError(f"{path}:{i}: malformed solution marker {line.strip()!r}; write "
                                 f"'### BEGIN SOLUTION task X.Y: description' or '### END SOLUTION'")
            if open_ is not None and line.strip() and not line.startswith(open_[1]):
                raise ValueError(f"{path}:{i}: this line of the solution region opened at line {open_[0]} "
                                 f"is indented less than its BEGIN SOLUTION marker")
            continue
        indent, kind, rest = m.group("indent"), m.group("kind"), m.group("rest")
        if kind == "BEGIN":
            if open_ is not None:
                raise ValueError(f"{path}:{i}: nested BEGIN SOLUTION (the region opened at line "
                                 f"{open_[0]} is not closed)")
            r = _BEGIN_REST.match(rest)
            if not r:
                raise ValueError(f"{path}:{i}: BEGIN SOLUTION needs a task id, as in "
                                 f"'### BEGIN SOLUTION task 3.1: eq. (3.3), the adversary's loss'; "
                                 f"got {line.strip()!r}")
            if r.group("id") not in tasks:
                raise ValueError(f"{path}:{i}: unknown task {r.group('id')} (the manifest "
                                 f"avb_minimal/assignments.py TASKS has {', '.join(tasks)})")
            if not indent:
                raise ValueError(f"{path}:{i}: a solution region must be inside a function body; "
                                 f"blanking module-level code would break imports")
            open_ = (i, indent, r.group("id"), r.group("desc") or "")
        else:
            if open_ is None:
                raise ValueError(f"{path}:{i}: END SOLUTION without a BEGIN SOLUTION")
            if rest.strip():
                raise ValueError(f"{path}:{i}: nothing may follow END SOLUTION, got {rest.strip()!r}")
            start, b_indent, task, desc = open_
            if indent != b_indent:
                raise ValueError(f"{path}:{i}: END SOLUTION must be indented like its BEGIN SOLUTION "
                                 f"(line {start})")
            body = [ln for ln in lines[start:i - 1] if ln.strip() and not ln.lstrip().startswith("#")]
            if not body:
                raise ValueError(f"{path}:{i}: empty solution region (opened at line {start})")
            func = _enclosing_function(lines, start, b_indent)
            if func is None:
                raise ValueError(f"{path}:{start}: a solution region must be inside a function body")
            regions.append(Region(path, task, desc, start, i, b_indent, func, len(body)))
            open_ = None
    if open_ is not None:
        raise ValueError(f"{path}:{open_[0]}: BEGIN SOLUTION is never closed by an END SOLUTION")
    return regions


def _enclosing_function(lines, begin, indent):
    """Dotted name of the functions whose body holds line `begin` (1-based), e.g.
    '_bernoulli_vjp.vjp', or None when the line is not inside a function."""
    names = []
    for ln in reversed(lines[:begin - 1]):
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        ind = ln[:len(ln) - len(ln.lstrip())]
        if len(ind) < len(indent):
            m = _DEF.match(ln)
            if m:
                names.append(m.group("name"))
            elif not ind and not names:
                return None          # module level (or a class body) before any def
            indent = ind
            if not ind:
                break
    return ".".join(reversed(names)) or None


def list_regions(root, tasks=TASKS):
    """Every solution region under root/avb_minimal, in file and line order, checked:
    besides scan_file's checks, every task in `tasks` has at least one region and the
    regions of one task share one description."""
    pkg = os.path.join(root, SCAN_DIR)
    if not os.path.isdir(pkg):
        raise ValueError(f"{root!r} has no {SCAN_DIR}/ folder")
    regions = []
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel in SCAN_EXCLUDE:
                continue
            with open(full, encoding="utf-8") as fh:
                regions += scan_file(fh.read(), rel, tasks)
    first = {}
    for r in regions:
        f = first.setdefault(r.task, r)
        if f.desc != r.desc:
            raise ValueError(f"{r.path}:{r.begin}: task {r.task} has regions with different descriptions: "
                             f"{r.desc!r} here, {f.desc!r} at {f.path}:{f.begin}")
    missing = [t for t in tasks if t not in first]
    if missing:
        raise ValueError(f"task(s) {', '.join(missing)} of the manifest have no solution region in "
                         f"{SCAN_DIR}/ (is this the solution tree?)")
    return regions


def parse_tasks(spec, tasks=TASKS):
    """'3.1,3.2' (or ['3.1', '3.2']) -> ['3.1', '3.2'] in manifest order; None or 'all' -> every task."""
    if isinstance(spec, (list, tuple)):
        spec = ",".join(spec)
    if spec is None or spec.strip() == "all":
        return list(tasks)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    if not wanted:
        raise ValueError("--tasks takes a comma list of task ids such as 3.1,3.2")
    unknown = [t for t in wanted if t not in tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the tasks are {', '.join(tasks)}")
    return [t for t in tasks if t in wanted]


def tests_by_task(tests_dir):
    """{task id: ['tests/test_x.py::test_name', ...]} from the @pytest.mark.taskX_Y decorators."""
    out = {}
    if not os.path.isdir(tests_dir):
        return out
    for fn in sorted(os.listdir(tests_dir)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        with open(os.path.join(tests_dir, fn), encoding="utf-8") as fh:
            pending = []
            for line in fh:
                m = _TEST_MARK.match(line)
                if m:
                    pending.append(f"{m.group(1)}.{m.group(2)}")
                    continue
                d = _TEST_DEF.match(line)
                if d:
                    for t in pending:
                        out.setdefault(t, []).append(f"tests/{fn}::{d.group(1)}")
                    pending = []
                elif line.strip() and not line.lstrip().startswith("@"):
                    pending = []
    return out


# ------------------------------------------------------------------ the student tree
def default_source():
    """The source checkout: the one this package was imported from (an editable install or a
    run from the repository root), else the working directory if it is one (a `pip install .`
    puts the package in site-packages, away from its checkout), else the package's parent
    (and `_check_source` then says what is missing and to pass --source)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (here, os.getcwd()):
        if _is_checkout(root):
            return root
    return here


def _is_checkout(root):
    return (all(os.path.isdir(os.path.join(root, d)) for d in STUDENT_DIRS)
            and all(os.path.isfile(os.path.join(root, f)) for f in ("setup.py", "README.md")))


def _check_source(root):
    need = [d + "/" for d in STUDENT_DIRS if not os.path.isdir(os.path.join(root, d))]
    need += [f for f in ("setup.py", "README.md") if not os.path.isfile(os.path.join(root, f))]
    if need:
        raise ValueError(f"building a student tree needs a source checkout; {root!r} lacks "
                         f"{', '.join(need)} (pass --source DIR)")


def _check_out(out, root):
    out_abs = os.path.realpath(out)
    if os.path.exists(out_abs):
        if not os.path.isdir(out_abs):
            raise ValueError(f"output {out!r} exists and is not a folder")
        if os.listdir(out_abs):
            raise ValueError(f"output folder {out!r} exists and is not empty; remove it or choose another")
    src = os.path.realpath(root)
    if out_abs == src or out_abs.startswith(src + os.sep):
        raise ValueError(f"output {out!r} lies inside the source tree {src}; a student tree is generated, "
                         f"never committed: build it outside the checkout")
    return out_abs


def blank(text, regions, chosen, tasks=TASKS):
    """The student version of one file: chosen regions -> one `raise NotImplementedError`,
    the other regions' marker lines dropped.  -> (text, {task: line of its stub})."""
    lines = text.splitlines(keepends=True)
    by_begin = {r.begin: r for r in regions}
    out, stubs, i = [], {}, 0
    while i < len(lines):
        r = by_begin.get(i + 1)
        if r is None:
            out.append(lines[i])
            i += 1
            continue
        if r.task in chosen:
            out.append(f"{r.indent}raise NotImplementedError({r.message(tasks)!r})\n")
            stubs.setdefault(r.task, []).append(len(out))
        else:
            out.extend(lines[r.begin:r.end - 1])
        i = r.end
    return "".join(out), stubs


def build(out, tasks=None, source=None, manifest=TASKS):
    """Write the student tree for `tasks` (ids; None: all) from the checkout `source`
    into `out`, which must not exist or be empty.  Everything is written into a
    temporary sibling folder and renamed at the end: on any error nothing is left.
    Returns a summary dict."""
    root = os.path.realpath(source or default_source())
    chosen = parse_tasks(tasks, manifest)
    _check_source(root)
    regions = list_regions(root, manifest)
    out_abs = _check_out(out, root)
    parent = os.path.dirname(out_abs)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_abs)}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)                 # mkdtemp makes it private (0700)
    try:
        for d in STUDENT_DIRS:
            shutil.copytree(os.path.join(root, d), os.path.join(tmp, d), ignore=_IGNORE)
        for f in STUDENT_FILES:
            if os.path.isfile(os.path.join(root, f)):
                shutil.copy2(os.path.join(root, f), os.path.join(tmp, f))
        for f in STUDENT_DROP:
            if os.path.exists(os.path.join(tmp, f)):
                os.remove(os.path.join(tmp, f))
        stubs = {}
        for path in sorted({r.path for r in regions}):
            with open(os.path.join(root, path), encoding="utf-8") as fh:
                text, where = blank(fh.read(), [r for r in regions if r.path == path], chosen, manifest)
            try:
                compile(text, path, "exec")
            except SyntaxError as e:
                raise ValueError(f"{path}: the student version does not compile ({e.msg}, line {e.lineno}); "
                                 f"check the solution markers around it") from None
            with open(os.path.join(tmp, path), "w", encoding="utf-8") as fh:
                fh.write(text)
            for t, lines in where.items():
                stubs.setdefault(t, []).extend((path, n) for n in lines)
        _check_no_markers(tmp)
        tests = tests_by_task(os.path.join(tmp, "tests"))
        os.makedirs(os.path.join(tmp, "handouts"))
        for t in chosen:
            regs = [r for r in regions if r.task == t]
            with open(os.path.join(tmp, "handouts", handout_name(t)), "w", encoding="utf-8") as fh:
                fh.write(handout(t, regs, stubs[t], tests.get(t, []), chosen, manifest))
        with open(os.path.join(tmp, "STUDENT.md"), "w", encoding="utf-8") as fh:
            fh.write(student_readme(chosen, regions, manifest))
        with open(os.path.join(tmp, TREE_TASKS), "w", encoding="utf-8") as fh:
            json.dump({"tasks": chosen, "points": {t: manifest[t]["points"] for t in chosen}}, fh, indent=1)
        if os.path.isdir(out_abs):
            os.rmdir(out_abs)                     # empty (checked above)
        os.rename(tmp, out_abs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out_abs, "tasks": chosen, "files": sorted({r.path for r in regions if r.task in chosen}),
            "handouts": [os.path.join(out_abs, "handouts", handout_name(t)) for t in chosen]}


def _check_no_markers(tree):
    for dirpath, _, filenames in os.walk(tree):
        for fn in filenames:
            if fn.endswith(".py"):
                full = os.path.join(dirpath, fn)
                with open(full, encoding="utf-8") as fh:
                    for i, line in enumerate(fh, 1):
                        if _MARKER.match(line) or _LOOSE.match(line):
                            raise ValueError(f"{os.path.relpath(full, tree)}:{i}: a solution marker "
                                             f"would reach the student tree")


def _prereq_text(t, chosen, manifest):
    pre = manifest[t]["prerequisites"]
    if not pre:
        return "none: this task's tests exercise it alone."
    items = [f"task {p} ({manifest[p]['title']}{'' if p in chosen else ', given in this copy'})" for p in pre]
    todo = [p for p in pre if p in chosen]
    text = "Some tests of this task also run " + "; ".join(items) + ".  "
    if todo:
        return text + (f"Until task(s) {', '.join(todo)} are done, those tests stop at their "
                       f"NotImplementedError and the grader reports this task as 'blocked by' them.")
    return text + "They come with their solutions in this copy."


def _lines(n):
    return f"{n} line{'s' if n != 1 else ''}"


def handout(t, regions, stubs, tests, chosen, manifest=TASKS):
    """The Markdown handout of task t."""
    m = manifest[t]
    where = "\n".join(f"- `{r.function}` in `{p}` (line {n}; the model solution: {_lines(r.n_lines)} of code)"
                      for r, (p, n) in zip(regions, stubs))
    test_list = "\n".join(f"- `{n}`" for n in tests) or "- (none found)"
    return f"""# Task {t}: {m['title']}  ({m['points']} points)

## What to implement

{where}

{textwrap.fill(m['what'], 88)}

Each place above raises `NotImplementedError("Task {t}: ...")` until you replace that line
with your code.  Keep the docstring's shapes and conventions: the rest of the library and
the chapters call these functions.

## Equations

{textwrap.indent(chr(10).join(m['equations']), '    ')}

## Read first

- `{m['chapter']}` (run it with `--quick` once your code is in)
- the paper (Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017): {m['paper']}

## Prerequisites

{textwrap.fill(_prereq_text(t, chosen, manifest), 88)}

## Check your work

    python -m pytest -q -m {marker_name(t)} tests
    python -m avb_minimal assignments grade . --tasks {t}

The tests of this task:

{test_list}
"""


def student_readme(chosen, regions, manifest=TASKS):
    rows = "\n".join(
        f"| {t} | {manifest[t]['title']} | "
        f"{', '.join(sorted({f'`{r.path}`' for r in regions if r.task == t}))} | "
        f"[handouts/{handout_name(t)}](handouts/{handout_name(t)}) | {manifest[t]['points']} |"
        for t in chosen)
    first = chosen[0]
    commands = "\n".join(f"    {c:<46} # {h}" for c, h in (
        (f"python -m pytest -q -m {marker_name(first)} tests", f"the tests of task {first}"),
        ("python -m avb_minimal assignments grade .", "the tasks of this copy: a score table"),
        (f"python {manifest[first]['chapter']} --quick", "a chapter, once its tasks are done")))
    given = [t for t in manifest if t not in chosen]
    given_txt = (f"\nThe other tasks ({', '.join(given)}) come with their solutions in this copy.\n"
                 if given else "")
    return f"""# avb-minimal: course assignments

This is a student copy of avb-minimal.  The functions of the tasks below raise
`NotImplementedError("Task X.Y: ...")` until you write them; each task has a handout.
{given_txt}
| task | what | file(s) | handout | points |
|---|---|---|---|---|
{rows}

## Set up

    python -m venv .venv && . .venv/bin/activate
    pip install -e ".[test]"        # editable: the chapters and the CLI then run *your* code

## Check one task, grade them all

{commands}

A task whose own code is done but whose tests still stop in another task's
`NotImplementedError` is reported as "blocked by" that task (its handout lists its
prerequisites).  The tests without a task marker (chapters, training, the command
line) pass once every task is done.
"""


# ------------------------------------------------------------------ grading
_PLUGIN = r'''
"""pytest plugin of `avb_minimal assignments grade`: records each test's task markers,
outcome and exception (NotImplementedError("Task X.Y: ...") and its task), and which
avb_minimal was imported."""
import json, os, re, sys
import pytest

_TASK = re.compile(r"^task(\d+)_(\d+)$")
_NIE = re.compile(r"^Task (\d+\.\d+)\b")
_tests, _collect_errors = {}, []


def _task_of(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError):
            m = _NIE.match(str(exc))
            if m:
                return m.group(1)
        exc = exc.__cause__ or exc.__context__
    return None


def pytest_collection_finish(session):
    for item in session.items:
        tasks = sorted({f"{m.group(1)}.{m.group(2)}" for m in
                        (_TASK.match(mk.name) for mk in item.iter_markers()) if m})
        _tests[item.nodeid] = {"tasks": tasks, "outcome": "passed", "error": None, "nie_task": None}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    t = _tests.get(item.nodeid)
    if t is None:
        return
    if rep.failed and t["outcome"] != "failed":
        t["outcome"] = "failed"
        if call.excinfo is not None:
            t["error"] = f"{call.excinfo.typename}: {str(call.excinfo.value)[:300]}"
            t["nie_task"] = _task_of(call.excinfo.value)
        else:
            t["error"] = str(rep.longrepr)[-300:]
    elif rep.skipped and t["outcome"] == "passed":
        t["outcome"] = "skipped"


def pytest_collectreport(report):
    if report.failed:
        _collect_errors.append({"nodeid": report.nodeid, "error": str(report.longrepr)[-1500:]})


def pytest_sessionfinish(session, exitstatus):
    mod = sys.modules.get("avb_minimal")
    with open(os.environ["AVB_GRADE_RESULTS"], "w", encoding="utf-8") as fh:
        json.dump({"tests": _tests, "collection_errors": _collect_errors, "exitstatus": int(exitstatus),
                   "avb_minimal": getattr(mod, "__file__", None)}, fh)
'''


def check_imported_from(module_file, tree):
    """RuntimeError unless the avb_minimal the tests imported lies in `tree`: a grade of
    the wrong code (an installed package shadowing the student's) must not pass."""
    tree = os.path.realpath(tree)
    if module_file is None:
        raise RuntimeError(f"the tests in {tree} never imported avb_minimal; nothing was graded")
    f = os.path.realpath(module_file)
    if not f.startswith(tree + os.sep):
        raise RuntimeError(f"the tests imported avb_minimal from {f}, not from the tree being "
                           f"graded ({tree}); check PYTHONPATH and installed copies")


def classify(task, tests):
    """Status of one task from the records of the tests marked with it:
    'passed', 'not implemented' (its own NotImplementedError), 'blocked by X.Y'
    (only other tasks' NotImplementedError), 'failed', 'skipped' or 'no tests'."""
    mine = [r for r in tests.values() if task in r["tasks"]]
    failed = [r for r in mine if r["outcome"] == "failed"]
    passed = sum(r["outcome"] == "passed" for r in mine)
    blocked = sorted({r["nie_task"] for r in failed if r["nie_task"] and r["nie_task"] != task})
    if not mine:
        status = "no tests"
    elif not failed:
        status = "passed" if passed else "skipped"
    elif any(r["nie_task"] == task for r in failed):
        status = "not implemented"
    elif any(r["nie_task"] is None for r in failed):
        status = "failed"
    else:
        status = "blocked by " + ", ".join(blocked)
    return {"status": status, "passed": passed, "failed": len(failed),
            "skipped": sum(r["outcome"] == "skipped" for r in mine), "total": len(mine),
            "blocked_by": blocked if status.startswith("blocked") else []}


def grade(tree, tasks=None, timeout=1800, manifest=TASKS, python=None):
    """Run the tests of `tasks` (None: those the tree's handouts/tasks.json lists, else
    all) in the student (or solution) tree `tree`
    with that tree's own avb_minimal, in one pytest session, and score each task.
    Returns the gradebook dict (also what --json writes)."""
    tree = os.path.realpath(tree)
    if not (os.path.isfile(os.path.join(tree, "avb_minimal", "__init__.py"))
            and os.path.isdir(os.path.join(tree, "tests"))):
        raise ValueError(f"{tree!r} is not a student or solution tree (no avb_minimal/ and tests/)")
    if tasks is None and os.path.isfile(os.path.join(tree, TREE_TASKS)):
        with open(os.path.join(tree, TREE_TASKS), encoding="utf-8") as fh:
            tasks = json.load(fh)["tasks"]           # the tasks this student tree hands out
    chosen = parse_tasks(tasks, manifest)
    with tempfile.TemporaryDirectory(prefix="avb-grade-") as work:
        with open(os.path.join(work, "_avb_grade_plugin.py"), "w", encoding="utf-8") as fh:
            fh.write(_PLUGIN)
        results = os.path.join(work, "results.json")
        env = dict(os.environ, AVB_GRADE_RESULTS=results, PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join([tree, work] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        cmd = [python or sys.executable, "-m", "pytest", "-q", "-p", "_avb_grade_plugin",
               "-p", "no:cacheprovider", "--continue-on-collection-errors", "--rootdir", tree,
               "-m", " or ".join(marker_name(t) for t in chosen), "tests"]
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the tests in {tree} ran past {timeout} s (an endless loop?)") from None
        if not os.path.isfile(results):
            raise RuntimeError(f"pytest did not finish in {tree} (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        with open(results, encoding="utf-8") as fh:
            raw = json.load(fh)
    check_imported_from(raw["avb_minimal"], tree)
    rows = []
    for t in chosen:
        c = classify(t, raw["tests"])
        if raw["collection_errors"]:
            c["status"] = "error"          # some test files did not import: the count is incomplete
        pts = manifest[t]["points"]
        rows.append(dict(task=t, title=manifest[t]["title"], **c,
                         points=pts if c["status"] == "passed" else 0, max_points=pts,
                         tests=[dict(nodeid=k, outcome=v["outcome"], error=v["error"])
                                for k, v in raw["tests"].items() if t in v["tasks"]]))
    return {"tree": tree, "avb_minimal": raw["avb_minimal"], "tasks": rows,
            "points": sum(r["points"] for r in rows), "max_points": sum(r["max_points"] for r in rows),
            "collection_errors": raw["collection_errors"], "pytest_exit": raw["exitstatus"]}


def format_grade(g):
    w = max(len(r["title"]) for r in g["tasks"])
    out = [f"{'task':<5} {'title':<{w}}  {'tests':>7}  {'status':<22} points"]
    for r in g["tasks"]:
        out.append(f"{r['task']:<5} {r['title']:<{w}}  {r['passed']:>3}/{r['total']:<3}  "
                   f"{r['status']:<22} {r['points']:>3}/{r['max_points']}")
    out.append(f"{'total':<5} {'':<{w}}  {'':>7}  {'':<22} {g['points']:>3}/{g['max_points']}")
    groups = {}
    for e in g["collection_errors"]:           # one line per distinct cause, with the files it broke
        lines = [ln.lstrip("E").strip() for ln in e["error"].strip().splitlines()]
        where = [ln for ln in lines if ln.startswith('File "')]
        cause = (where[-1] + ": " if where else "") + lines[-1]
        groups.setdefault(cause, []).append(e["nodeid"])
    for cause, files in groups.items():
        out.append(f"collection error in {len(files)} test file(s) ({', '.join(files[:3])}"
                   f"{', ...' if len(files) > 3 else ''}): {cause}")
    if g["collection_errors"]:
        out.append("some test files did not import: every task is marked 'error' until they do")
    return "\n".join(out)


def write_json_atomic(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grade-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def format_list(regions, manifest=TASKS):
    out = []
    for t, m in manifest.items():
        regs = [r for r in regions if r.task == t]
        pre = ", ".join(m["prerequisites"]) or "-"
        out.append(f"task {t}  {m['title']}  ({m['points']} points; prerequisites: {pre}; "
                   f"pytest -m {marker_name(t)})")
        for r in regs:
            out.append(f"    {r.path}:{r.begin}-{r.end}  {r.function}  ({_lines(r.n_lines)})")
    return "\n".join(out)
