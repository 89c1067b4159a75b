"""The grader: the tests of each task run in a student (or solution) tree, one pytest
session, scored task by task.

    python -m avb_minimal assignments grade DIR [--tasks ...] [--json PATH] [--require-all]

The pytest plugin that records each test's outcome is `plugin.py` beside this file; it
is copied into a temporary folder for each grading run.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from .tasks import TASKS, TREE_TASKS, marker_name, parse_tasks

PLUGIN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py")


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
        shutil.copyfile(PLUGIN_FILE, os.path.join(work, "_avb_grade_plugin.py"))
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
