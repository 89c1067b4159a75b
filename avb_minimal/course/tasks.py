"""Course assignments: a student tree with chosen functions blanked, a handout per
task, and a grader that runs the tests task by task.  This module: the task list and
the scan for solution regions; `build` writes the student tree, `grade` scores it.

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

The code forms of each answer, which the build greps the student tree for, are in
`answers.py` (a student tree gets that module empty).  Longer than 400 lines because the
manifest (what each handout says) is data that belongs with the scanner.
"""
import os
import re
import shutil
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
             "`floor`, by default models.AC_VAR_FLOOR), and the generator objective of eq. (4.2), in which "
             "-log r_alpha(z|x) reduces to ||z_bar||^2 / 2 up to a constant.",
        equations=["z_bar = (z - mu(x)) / sqrt(var(x) + floor), floor = 1e-4  (Algorithm 2, line 9)",
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
    "5.3": dict(
        title="the row-wise inner-product CUDA kernel",
        where="kernels/inner_product.cu: row_dot",
        what="The body of `row_dot`, the device function behind the kernels ip_rows and "
             "ip_rows_logistic: each block of (bx, by) threads handles by rows at a time; "
             "thread (tx, ty) adds up the products of row row0 + ty at columns tx, tx + bx, "
             "tx + 2 bx, ... into `acc` (neighbouring threads read neighbouring addresses); "
             "`row_sum(acc)` then tree-reduces the bx partial sums of each row.  Rows past B "
             "contribute 0, and every thread must reach row_sum (it holds a __syncthreads).  "
             "The grader compiles the unchanged .cu file with g++ through "
             "kernels/cuda_emulation.h (one std::thread per CUDA thread) and compares with NumPy.",
        equations=["T_i = <F_i, G_i> = sum_h F_ih G_ih              F, G: (B, H) row-major -> T: (B,)",
                   "row = row0 + threadIdx.y;   F_ih at F[row * H + h]  (64-bit offsets)",
                   "thread tx: h = tx, tx + blockDim.x, ...  < H",
                   "blocks: row0 = blockIdx.x * blockDim.y, + gridDim.x * blockDim.y each round (given)"],
        chapter="chapters/14_kernels.py",
        paper="sec. 5.2 (T(x, z) = <f(x), g(z)>); the comments at the top of kernels/inner_product.cu",
        prerequisites=[],
        points=10),
}

SCAN_DIR = "avb_minimal"                 # where the regions live (library code only)
SCAN_EXCLUDE = ("avb_minimal/course/",)   # the tooling mentions the markers itself
SCAN_KERNELS = "kernels"                 # .cu regions: the same markers as `// ###` comments
STUDENT_DIRS = ("avb_minimal", "kernels", "chapters", "tests")
STUDENT_FILES = ("setup.py", "README.md", "setup.cfg", "MANIFEST.in", "LICENSE")   # those present
GRADER_DROP = ("tests/test_assignments.py",)     # checks the solution tree: meaningless elsewhere
# what a student tree does not get: the above, and the float64 formulas of the tests' expected
# values (several are answers; the tree gets their values, tests/reference_values.npz, instead)
STUDENT_DROP = GRADER_DROP + ("tests/reference_formulas.py",
                              "tests/mutations.py")    # mutates the solution's objectives: spells them
REFERENCE_FORMULAS = "tests/reference_formulas.py"   # run in the source: writes the store below
REFERENCE_STORE = "tests/reference_values.npz"
ANSWERS_MODULE = "avb_minimal/course/answers.py"     # the answers' code forms: emptied in a student tree
# where the grep for answers does not look: the handouts and the manifest state the equations
ANSWER_SKIP = ("handouts/", "avb_minimal/course/tasks.py")
TREE_TASKS = "handouts/tasks.json"                # the tasks a student tree hands out (grade's default)
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".pytest_cache",
                                 "*.so", "*.o")

_TASK_ID = re.compile(r"^\d+\.\d+$")
MARKER = re.compile(r"^(?P<indent>[ \t]*)(?:// )?### (?P<kind>BEGIN|END) SOLUTION(?P<rest>.*?)\s*$")
LOOSE_MARKER = re.compile(r"^\s*(#|//).*\b(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE)
_BEGIN_REST = re.compile(r"^ task (?P<id>\d+\.\d+)(?:: (?P<desc>\S.*))?$")
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
_C_DEF = re.compile(r"^(?P<indent>)(?:extern|__global__|__device__|static|inline)\b[^(;]*?\b(?P<name>\w+)\s*\(")
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
        m = MARKER.match(line)
        if not m:
            if LOOSE_MARKER.match(line):
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
            func = _enclosing_function(lines, start, b_indent, path.endswith(".cu"))
            if func is None:
                raise ValueError(f"{path}:{start}: a solution region must be inside a function body")
            regions.append(Region(path, task, desc, start, i, b_indent, func, len(body)))
            open_ = None
    if open_ is not None:
        raise ValueError(f"{path}:{open_[0]}: BEGIN SOLUTION is never closed by an END SOLUTION")
    return regions


def _enclosing_function(lines, begin, indent, c=False):
    """Dotted name of the functions whose body holds line `begin` (1-based), e.g.
    '_bernoulli_vjp.vjp', or None when the line is not inside a function.  In a .cu file
    (c=True) the CUDA function's name."""
    if c:
        for ln in reversed(lines[:begin - 1]):
            m = _C_DEF.match(ln)
            if m:
                return m.group("name")
        return None
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
    walks = [(d, f, ".py") for d, _, f in os.walk(pkg)]
    kdir = os.path.join(root, SCAN_KERNELS)
    walks += [(kdir, sorted(os.listdir(kdir)), ".cu")] if os.path.isdir(kdir) else []
    for dirpath, filenames, ext in sorted(walks):
        if "__pycache__" in dirpath:
            continue
        for fn in sorted(filenames):
            if not fn.endswith(ext):
                continue
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel.startswith(SCAN_EXCLUDE):
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


def format_list(regions, manifest=TASKS):
    out = []
    for t, m in manifest.items():
        regs = [r for r in regions if r.task == t]
        pre = ", ".join(m["prerequisites"]) or "-"
        out.append(f"task {t}  {m['title']}  ({m['points']} points; prerequisites: {pre}; "
                   f"pytest -m {marker_name(t)})")
        for r in regs:
            out.append(f"    {r.path}:{r.begin}-{r.end}  {r.function}  ({lines_text(r.n_lines)})")
    return "\n".join(out)


def lines_text(n):
    """'1 line', '3 lines'."""
    return f"{n} line{'s' if n != 1 else ''}"
