"""The student tree: the library with the chosen tasks' solution regions blanked, a
handout per task, and a short README of its own.

    python -m avb_minimal assignments build OUT [--tasks 3.1,3.2] [--no-check]

Before it writes OUT, build checks that the tree hands out no answers: (1) no code form of a
chosen task's answer (the patterns of `answers.py`) is left anywhere in the tree (library,
kernels, chapters, tests, top-level files; the handouts and the manifest state the equations
on purpose); (2) for each chosen task, a tree with that task alone blanked (every other task
solved) fails every test of that task.  A fast-path twin, a naive reference, a helper or a
test's expected value that computes the answer in another form would make (1) or (2) fail.

The tests' expected values that would spell an answer are computed by
tests/reference_formulas.py, which the student tree does not get: build runs it in the source
(the solution) and writes their values into the tree as tests/reference_values.npz.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

from .answers import ANSWERS
from .grade import grade
from .tasks import (
    ANSWER_SKIP,
    ANSWERS_MODULE,
    COPY_IGNORE,
    LOOSE_MARKER,
    MARKER,
    REFERENCE_FORMULAS,
    REFERENCE_STORE,
    STUDENT_DIRS,
    STUDENT_DROP,
    STUDENT_FILES,
    TASKS,
    TREE_TASKS,
    handout_name,
    lines_text,
    list_regions,
    marker_name,
    parse_tasks,
    tests_by_task,
)


def default_source():
    """The source checkout: the one this package was imported from (an editable install or a
    run from the repository root), else the working directory if it is one (a `pip install .`
    puts the package in site-packages, away from its checkout), else the package's parent
    (and `_check_source` then says what is missing and to pass --source)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # course/ -> avb_minimal/ -> root
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
    parent = os.path.dirname(out_abs)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"output {out!r} cannot be made: {parent!r} is a file, not a folder")
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
            if r.path.endswith(".cu"):     # a kernel traps: its launch fails and its output is wrong
                out.append(f"{r.indent}__trap();  // {r.message(tasks)}\n")
            else:
                out.append(f"{r.indent}raise NotImplementedError({r.message(tasks)!r})\n")
            stubs.setdefault(r.task, []).append(len(out))
        else:
            out.extend(lines[r.begin:r.end - 1])
        i = r.end
    return "".join(out), stubs


def build(out, tasks=None, source=None, manifest=TASKS, check=True, timeout=1800, answers=ANSWERS):
    """Write the student tree for `tasks` (ids; None: all) from the checkout `source`
    into `out`, which must not exist or be empty.  Everything is written into a
    temporary sibling folder and renamed at the end: on any error nothing is left.
    check: also run each chosen task's tests in a tree with that task alone blanked and
    refuse (ValueError) if any of them passes.  Returns a summary dict."""
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
        stubs = _write_tree(tmp, root, regions, chosen, manifest)
        tests = tests_by_task(os.path.join(tmp, "tests"))
        os.makedirs(os.path.join(tmp, "handouts"))
        for t in chosen:
            regs = sorted((r for r in regions if r.task == t), key=lambda r: (r.path, r.begin))  # as stubs
            with open(os.path.join(tmp, "handouts", handout_name(t)), "w", encoding="utf-8") as fh:
                fh.write(handout(t, regs, stubs[t], tests.get(t, []), chosen, manifest))
        for name in ("STUDENT.md", "README.md"):     # the project's README is not the student's
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                fh.write(student_readme(chosen, regions, manifest))
        with open(os.path.join(tmp, TREE_TASKS), "w", encoding="utf-8") as fh:
            json.dump({"tasks": chosen, "points": {t: manifest[t]["points"] for t in chosen}}, fh, indent=1)
        leaks = find_answers(tmp, chosen, answers)          # everything the tree ships, as written
        if leaks:
            raise ValueError(f"the student tree would still hold answers ({len(leaks)} line(s)): "
                             + "; ".join(leaks))
        write_references(root, tmp, timeout)
        if check:
            check_blanked_tasks_fail(root, regions, chosen, manifest, timeout)
        if os.path.isdir(out_abs):
            os.rmdir(out_abs)                     # empty (checked above)
        os.rename(tmp, out_abs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out_abs, "tasks": chosen, "files": sorted({r.path for r in regions if r.task in chosen}),
            "handouts": [os.path.join(out_abs, "handouts", handout_name(t)) for t in chosen]}


def _write_tree(tmp, root, regions, chosen, manifest):
    """Copy the checkout into tmp with the `chosen` tasks blanked. -> {task: [(path, line)]}."""
    for d in STUDENT_DIRS:
        shutil.copytree(os.path.join(root, d), os.path.join(tmp, d), ignore=COPY_IGNORE)
    for f in STUDENT_FILES:
        if os.path.isfile(os.path.join(root, f)):
            shutil.copy2(os.path.join(root, f), os.path.join(tmp, f))
    for f in STUDENT_DROP:
        if os.path.exists(os.path.join(tmp, f)):
            os.remove(os.path.join(tmp, f))
    if os.path.exists(os.path.join(tmp, ANSWERS_MODULE)):
        with open(os.path.join(tmp, ANSWERS_MODULE), "w", encoding="utf-8") as fh:
            fh.write(ANSWERS_STUB)
    stubs = {}
    for path in sorted({r.path for r in regions}):
        with open(os.path.join(root, path), encoding="utf-8") as fh:
            text, where = blank(fh.read(), [r for r in regions if r.path == path], chosen, manifest)
        if path.endswith(".py"):
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
    return stubs


ANSWERS_STUB = ('"""The code forms of each task\'s answer, which `assignments build` greps a student\n'
                'tree for.  This is a student tree: the instructor\'s copy of this module holds them."""\n'
                '\nANSWERS = {}\n')


def write_references(root, tree, timeout=1800):
    """Run the source's tests/reference_formulas.py (with the source's code) to write the
    expected values the student tree's tests compare with into TREE/tests/reference_values.npz."""
    script = os.path.join(root, REFERENCE_FORMULAS)
    if not os.path.isfile(script):
        raise ValueError(f"{root!r} lacks {REFERENCE_FORMULAS}: the student tree's tests need the values it records")
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, script, os.path.join(tree, REFERENCE_STORE)], cwd=root, env=env,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{REFERENCE_FORMULAS} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")


def _shipped_files(tree):
    """Every file of `tree` a student tree holds (its folders and top-level files), but the
    ANSWER_SKIP ones and compiled caches: '/'-separated paths relative to tree."""
    out = sorted(f for f in os.listdir(tree) if os.path.isfile(os.path.join(tree, f)))
    for top in [*STUDENT_DIRS, "handouts"]:
        for dirpath, dirnames, filenames in os.walk(os.path.join(tree, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            out += [os.path.relpath(os.path.join(dirpath, f), tree).replace(os.sep, "/") for f in sorted(filenames)]
    return [f for f in out if not f.startswith(ANSWER_SKIP) and not f.endswith((".pyc", ".pyo"))]


def find_answers(tree, tasks, answers=ANSWERS):
    """'path:line: task X.Y's answer (pattern)' for every line of a text file in `tree` (see
    `_shipped_files`; binary files such as figures are skipped) that matches one of the
    `answers` patterns of `tasks`."""
    pats = [(t, p, re.compile(p)) for t in tasks for p in answers.get(t, [])]
    found = []
    for rel in _shipped_files(tree):
        try:
            with open(os.path.join(tree, rel), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (UnicodeDecodeError, OSError):
            continue                                     # not text: a figure, the reference values
        for i, line in enumerate(lines, 1):
            found += [f"{rel}:{i}: task {t}'s answer ({p})" for t, p, rx in pats if rx.search(line)]
    return found


def check_blanked_tasks_fail(root, regions, chosen, manifest=TASKS, timeout=1800):
    """For each chosen task: a tree with that task alone blanked (every other task solved)
    must fail every test of that task (ValueError naming those that pass)."""
    for t in chosen:
        work = tempfile.mkdtemp(prefix=f"avb-check-{t}-")
        try:
            _write_tree(os.path.join(work, "tree"), root, regions, [t], manifest)
            g = grade(os.path.join(work, "tree"), tasks=[t], timeout=timeout, manifest=manifest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        (row,) = g["tasks"]
        passing = [x["nodeid"] for x in row["tests"] if x["outcome"] == "passed"]
        if passing or not row["failed"] or g["collection_errors"]:
            raise ValueError(f"task {t}: with its regions blanked and every other task solved, "
                             f"{len(passing)} of its {row['total']} tests still pass "
                             f"({', '.join(passing[:4]) or 'none fails'}"
                             f"{'; collection errors' if g['collection_errors'] else ''}): some other "
                             f"code computes its answer, or its tests do not reach its code")


def _check_no_markers(tree):
    for dirpath, _, filenames in os.walk(tree):
        for fn in filenames:
            if fn.endswith((".py", ".cu")):
                full = os.path.join(dirpath, fn)
                with open(full, encoding="utf-8") as fh:
                    for i, line in enumerate(fh, 1):
                        if MARKER.match(line) or LOOSE_MARKER.match(line):
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


def handout(t, regions, stubs, tests, chosen, manifest=TASKS):
    """The Markdown handout of task t."""
    m = manifest[t]
    where = "\n".join(f"- `{r.function}` in `{p}` (line {n}; the model solution: {lines_text(r.n_lines)} of code)"
                      for r, (p, n) in zip(regions, stubs))
    test_list = "\n".join(f"- `{n}`" for n in tests) or "- (none found)"
    return f"""# Task {t}: {m['title']}  ({m['points']} points)

## What to implement

{where}

{textwrap.fill(m['what'], 88)}

Each place above raises `NotImplementedError("Task {t}: ...")` (in a `.cu` kernel: calls
`__trap()`, and the emulated launch reports it) until you replace that line with your code.  Keep the docstring's shapes and conventions: the rest of the library and
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
