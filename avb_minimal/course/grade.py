"""The grader: the instructor's tests of each task run against a student's (or the
solution's) `avb_minimal`, one pytest session, scored task by task.

    python -m avb_minimal assignments grade DIR [--tasks ...] [--tests TESTS] [--json PATH] [--require-all]

What the student controls, and so what is never used: the tree's own `tests/`, its
`conftest.py` files, its pytest configuration (pytest.ini, setup.cfg, tox.ini,
pyproject.toml) and anything else at its top level (a `sitecustomize.py`, say).  The grader
copies the instructor's tests (the `tests/` of the checkout the grader runs from, or
--tests) into a fresh private folder with a configuration of its own, puts only the tree's
`avb_minimal/`, `kernels/` and `chapters/` on the import path (through links), and runs
pytest there in a separate process with plugin autoloading off; the plugin that records
the outcomes (`plugin.py`, copied beside the tests) writes them to a file in another
private folder, and every marked test of the chosen tasks must appear in them.  What
remains trusted: the student's `avb_minimal` itself runs inside that process as the
grading user, so it could still reach pytest or the file system; grade untrusted code
in a container or as an unprivileged user without network (README, "For instructors").
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from .tasks import (
    STUDENT_DIRS,
    GRADER_DROP,
    TASKS,
    TREE_TASKS,
    marker_name,
    parse_tasks,
    tests_by_task,
)

PLUGIN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py")
# the checkout the grader runs from: course/ -> avb_minimal/ -> root
GRADER_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the grader's own pytest configuration: nothing of the student's is read
PYTEST_INI = "[pytest]\naddopts =\nfilterwarnings =\n    ignore::DeprecationWarning\n"


def instructor_tests(tree, tests=None):
    """The folder of the tests to grade with: `tests` if given, else the `tests/` of the
    checkout this grader runs from.  ValueError if there is none, or if it lies inside the
    graded tree (the student's copy) unless that tree is the grader's own checkout."""
    tree = os.path.realpath(tree)
    root = os.path.realpath(GRADER_ROOT)
    found = os.path.realpath(tests if tests is not None else os.path.join(root, "tests"))
    if not os.path.isfile(os.path.join(found, "conftest.py")):
        raise ValueError(f"no instructor's tests in {found!r} (a tests/ folder with conftest.py): run the grader "
                         "from the course's checkout, or pass --tests DIR (its tests/ folder)")
    if (found == tree or found.startswith(tree + os.sep)) and tree != root:
        raise ValueError(f"--tests {found!r} lies inside the graded tree {tree!r}: a student's copy of the "
                         "tests is never used; pass the instructor's tests/ folder")
    return found


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


def tree_tasks(tree):
    """The tasks listed in TREE/handouts/tasks.json (None if there is no such file);
    ValueError naming the file if it does not hold {"tasks": [ids]}."""
    path = os.path.join(tree, TREE_TASKS)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            tasks = json.load(fh).get("tasks")
    except (ValueError, AttributeError, UnicodeDecodeError):
        tasks = None
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
        raise ValueError(f"{path} should hold {{\"tasks\": [\"3.1\", ...]}} (written by assignments build); "
                         "pass --tasks instead")
    return tasks


def grade(tree, tasks=None, timeout=1800, manifest=TASKS, python=None, tests=None):
    """Run the instructor's tests of `tasks` (None: those TREE/handouts/tasks.json lists,
    else all) against the `avb_minimal` of the student (or solution) tree `tree`, in one
    pytest session isolated from the tree's own tests and configuration (see the module
    docstring), and score each task.  tests: the instructor's tests/ folder (default: see
    `instructor_tests`).  Returns the gradebook dict (also what --json writes)."""
    tree = os.path.realpath(tree)
    if not (os.path.isfile(os.path.join(tree, "avb_minimal", "__init__.py"))
            and os.path.isdir(os.path.join(tree, "tests"))):
        raise ValueError(f"{tree!r} is not a student or solution tree (no avb_minimal/ and tests/)")
    from_tree = tasks is None and tree_tasks(tree) is not None
    chosen = parse_tasks(tree_tasks(tree) if from_tree else tasks, manifest)
    source = instructor_tests(tree, tests)
    expected = {t: ids for t, ids in tests_by_task(source).items() if t in chosen}
    files = sorted({i.split("::")[0] for ids in expected.values() for i in ids})
    with tempfile.TemporaryDirectory(prefix="avb-grade-") as work, \
            tempfile.TemporaryDirectory(prefix="avb-grade-results-") as private:
        run = os.path.join(work, "run")
        shutil.copytree(source, os.path.join(run, "tests"),
                        ignore=shutil.ignore_patterns(*[os.path.basename(d) for d in GRADER_DROP], "__pycache__",
                                                      "*.pyc", ".pytest_cache"))
        shutil.copyfile(PLUGIN_FILE, os.path.join(run, "_avb_grade_plugin.py"))
        with open(os.path.join(run, "pytest.ini"), "w", encoding="utf-8") as fh:
            fh.write(PYTEST_INI)
        code = os.path.join(work, "code")            # the student's code, and nothing else of the tree
        os.mkdir(code)
        for d in STUDENT_DIRS:
            if d != "tests" and os.path.isdir(os.path.join(tree, d)):
                os.symlink(os.path.join(tree, d), os.path.join(code, d))
        results = os.path.join(private, "results.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
        env.update(PYTHONPATH=os.pathsep.join([code, run]), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
                   PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        cmd = [python or sys.executable, "-m", "pytest", "-q", "-c", os.path.join(run, "pytest.ini"),
               "--rootdir", run, "--confcutdir", run, "-p", "_avb_grade_plugin", "--avb-grade-results", results,
               "-p", "no:cacheprovider", "--continue-on-collection-errors",
               "-m", " or ".join(marker_name(t) for t in chosen), *files]
        try:
            proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the tests of {tree} ran past {timeout} s (an endless loop?)") from None
        if not os.path.isfile(results):
            raise RuntimeError(f"pytest did not finish for {tree} (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        with open(results, encoding="utf-8") as fh:
            raw = json.load(fh)
        if raw.get("avb_minimal"):       # through the links of `code`, while they exist
            raw["avb_minimal"] = os.path.realpath(raw["avb_minimal"])
    check_imported_from(raw["avb_minimal"], tree)
    add_missing(raw["tests"], expected)
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
    return {"tree": tree, "avb_minimal": raw["avb_minimal"], "tests_from": source,
            "tasks_from": os.path.join(tree, TREE_TASKS) if from_tree else None, "tasks": rows,
            "points": sum(r["points"] for r in rows), "max_points": sum(r["max_points"] for r in rows),
            "collection_errors": raw["collection_errors"], "pytest_exit": raw["exitstatus"]}


def add_missing(records, expected):
    """Every marked test of the instructor's tests must have run: one that did not (deselected,
    skipped at collection, hidden) is recorded as failed."""
    ran = {(k.split("::")[0], k.split("::")[-1].split("[")[0]) for k in records}
    for t, ids in expected.items():
        for i in ids:
            f, name = i.split("::")[0], i.split("::")[-1]
            if (f, name) not in ran:
                rec = records.setdefault(i, {"tasks": [], "outcome": "failed", "nie_task": None,
                                             "error": "this test of the instructor's did not run"})
                rec["tasks"] = sorted(set(rec["tasks"]) | {t})


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
    if g.get("tasks_from"):
        out.append(f"tasks as listed in {g['tasks_from']} (the student can edit it: pass --tasks for a grade of "
                   "record)")
    return "\n".join(out)
