"""Course assignments (avb_minimal.assignments): the solution markers of the library,
the student tree built from them, and the grader.

What CI checks here: the solution tree passes every task; a freshly built student
tree imports (every module, with every task blanked), its chapters start, and each
task's tests fail there with the NotImplementedError of a task, not with a syntax or
import error; no code form of an answer is left in it (the manifest's `answers` patterns,
each of which does occur in the solution tree); build's own check (each task's tests fail
with that task alone blanked) holds for every task and refuses a tree where it does not;
bad markers and bad command lines give a clear error and write nothing.
This file is not copied into student trees.  About 1 minute on 2 idle cores.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from avb_minimal.__main__ import main
from avb_minimal.course import build as CB
from avb_minimal.course import grade as CG
from avb_minimal.course import tasks as CT
from avb_minimal.course.answers import ANSWERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")

# what the issue asks the tasks to cover: (file, function) of at least one region each
COVERAGE = {("avb_minimal/nn.py", "mlp"), ("avb_minimal/ops.py", "_bernoulli_numpy"),
            ("avb_minimal/ops.py", "_bernoulli_vjp.vjp"), ("avb_minimal/objectives.py", "vae_elbo"),
            ("avb_minimal/objectives.py", "adversary_loss"), ("avb_minimal/objectives.py", "generator_objective"),
            ("avb_minimal/objectives.py", "ac_generator_objective"), ("avb_minimal/evaluate.py", "knn_kl"),
            ("avb_minimal/ops.py", "_pairs_T")}


# ------------------------------------------------------------------ the solution tree
def test_every_task_has_regions_in_the_library_and_marked_tests(request):
    regions = CT.list_regions(ROOT)                    # raises on any bad marker
    assert len(CT.TASKS) >= 8 and {r.task for r in regions} == set(CT.TASKS)
    assert COVERAGE <= {(r.path, r.function) for r in regions}
    tests = CT.tests_by_task(os.path.join(ROOT, "tests"))
    registered = "\n".join(request.config.getini("markers"))
    for t, m in CT.TASKS.items():
        assert tests.get(t), f"task {t} has no test marked @pytest.mark.{CT.marker_name(t)}"
        assert f"{CT.marker_name(t)}: course task {t}" in registered
        assert set(m["prerequisites"]) <= set(CT.TASKS) and m["points"] > 0
        assert {"title", "what", "equations", "chapter", "paper"} <= set(m)
        assert os.path.isfile(os.path.join(ROOT, m["chapter"])), m["chapter"]


@pytest.mark.slow
def test_the_solution_tree_passes_every_task(tmp_path, capsys):
    out = tmp_path / "grades" / "solution.json"
    assert main(["assignments", "grade", ROOT, "--require-all", "--json", str(out)]) == 0
    g = json.loads(out.read_text())
    assert [r["task"] for r in g["tasks"]] == list(CT.TASKS)
    assert all(r["status"] == "passed" and r["passed"] == r["total"] > 0 for r in g["tasks"]), g["tasks"]
    assert g["points"] == g["max_points"] == sum(m["points"] for m in CT.TASKS.values())
    assert os.path.realpath(g["avb_minimal"]) == os.path.realpath(os.path.join(ROOT, "avb_minimal", "__init__.py"))
    text = capsys.readouterr().out
    assert "task" in text and "passed" in text and f"{g['points']}/{g['max_points']}" in text


# ------------------------------------------------------------------ the student tree
@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "student"
    assert main(["assignments", "build", str(out), "--source", ROOT, "--no-check"]) == 0
    return out


def test_student_tree_layout_and_handouts(student):
    for d in ("avb_minimal", "kernels", "chapters", "tests", "handouts"):
        assert (student / d).is_dir(), d
    assert (student / "setup.py").is_file() and (student / "STUDENT.md").is_file()
    for f in CT.STUDENT_DROP:                             # nor the formulas, the mutations, ...
        assert not (student / f).exists(), f
    assert (student / CT.REFERENCE_STORE).is_file()       # ... but the values the tests compare with
    assert "ANSWERS = {}" in (student / CT.ANSWERS_MODULE).read_text()
    assert not list(student.rglob("__pycache__")) and not (student / ".git").exists()
    assert json.loads((student / CT.TREE_TASKS).read_text())["tasks"] == list(CT.TASKS)
    for t, m in CT.TASKS.items():
        h = (student / "handouts" / CT.handout_name(t)).read_text()
        assert h.startswith(f"# Task {t}: {m['title']}")
        assert f"python -m pytest -q -m {CT.marker_name(t)} tests" in h and m["chapter"] in h
        assert all(f"task {p} (" in h for p in m["prerequisites"])
        for fn, path, n in re.findall(r"^- `(\w+)` in `([^`]+)` \(line (\d+);", h, re.M):
            lines = (student / path).read_text().splitlines()      # the handout names the right place
            assert "NotImplementedError" in lines[int(n) - 1] or "__trap" in lines[int(n) - 1], (t, path, n)
            defs = [ln for ln in lines[:int(n)] if re.match(r"\s*(def |__device__ )", ln)]
            assert re.search(rf"\b{fn}\b", defs[-1]), (t, fn, path, defs[-1])
    for r in CT.list_regions(ROOT):                       # each region is one stub, no solution left
        stub = (f"__trap();  // {r.message()}" if r.path.endswith(".cu")
                else f"raise NotImplementedError({r.message()!r})")
        assert f"\n{r.indent}{stub}\n" in (student / r.path).read_text()
    marker = re.compile(r"^\s*(#+|//)\s*#*\s*(BEGIN|END)\s+SOLUTION", re.MULTILINE | re.IGNORECASE)
    assert not [f for f in [*student.rglob("*.py"), *student.rglob("*.cu")] if marker.search(f.read_text())]
    objectives = (student / "avb_minimal" / "objectives.py").read_text()
    assert "np.mean(softplus(-T_pos))" not in objectives and "def adversary_loss(T_pos: np.ndarray, T_neg: np.ndarray) -> np.ndarray:" in objectives


@pytest.mark.slow
def test_student_tree_imports_and_its_chapters_start(student, tmp_path):
    env = dict(ENV, PYTHONPATH=str(student))
    code = ("import importlib, pkgutil, avb_minimal\n"
            "for m in pkgutil.iter_modules(avb_minimal.__path__):\n"
            "    importlib.import_module('avb_minimal.' + m.name)\n"
            "print(avb_minimal.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.realpath(r.stdout.strip()).startswith(os.path.realpath(student) + os.sep)
    chapters = sorted(f for f in os.listdir(student / "chapters") if f[:2].isdigit() and f.endswith(".py"))
    assert len(chapters) >= 8
    procs = {c: subprocess.Popen([sys.executable, str(student / "chapters" / c), "--help"], cwd=student,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in chapters}
    for c, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "usage" in out, (c, err[-3000:])
    # and a chapter that runs goes as far as the first stub, which names its task
    r = subprocess.run([sys.executable, str(student / "chapters" / "03_adversary.py"), "--quick",
                        "--out", str(tmp_path)], cwd=student, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "NotImplementedError: Task " in r.stderr, r.stderr[-3000:]


@pytest.mark.slow
def test_each_task_fails_in_the_student_tree_with_its_not_implemented_error(student, tmp_path):
    out = tmp_path / "student.json"
    assert main(["assignments", "grade", str(student), "--json", str(out)]) == 0
    g = json.loads(out.read_text())
    assert os.path.realpath(g["avb_minimal"]).startswith(os.path.realpath(student) + os.sep)
    assert not g["collection_errors"] and g["points"] == 0
    for r in g["tasks"]:
        assert r["status"] == "not implemented", r
        for t in r["tests"]:       # every marked test fails, with a task's NotImplementedError
            assert t["outcome"] == "failed" and t["error"].startswith("NotImplementedError: Task "), t


@pytest.mark.slow
def test_a_partial_tree_grades_its_own_tasks_and_reports_blocked_ones(tmp_path):
    tree = tmp_path / "s"
    CB.build(str(tree), tasks="0.1,3.1", source=ROOT, check=False)
    g = CG.grade(str(tree))                                    # default: the tasks handed out
    assert [(r["task"], r["status"]) for r in g["tasks"]] == [("0.1", "not implemented"),
                                                               ("3.1", "not implemented")]
    g = CG.grade(str(tree), tasks="all")
    status = {r["task"]: r["status"] for r in g["tasks"]}
    assert status["2.1"] == "blocked by 0.1" and status["3.2"] == "blocked by 0.1"
    assert status["0.2"] == status["5.1"] == status["5.2"] == "passed"
    assert g["points"] == sum(m["points"] for t, m in CT.TASKS.items() if status[t] == "passed")
    assert "raise NotImplementedError" not in (tree / "avb_minimal" / "ops.py").read_text()


# ------------------------------------------------------------------ a grader the student cannot talk to
HOOK = """
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    rep.outcome = "passed"
"""


def _tamper(tree):
    """What a student could do to its own tree to turn 'not implemented' into 'passed'."""
    for name in ("conftest.py", "tests/conftest.py", "student_hooks.py"):
        with open(tree / name, "a", encoding="utf-8") as fh:
            fh.write(HOOK)
    for ini in ("pytest.ini", "tox.ini", "setup.cfg"):
        (tree / ini).write_text("[pytest]\naddopts = -p student_hooks\n[tool:pytest]\naddopts = -p student_hooks\n")
    (tree / "sitecustomize.py").write_text("import os\nos.environ['PYTEST_ADDOPTS'] = '-p student_hooks'\n")
    for f in (tree / "tests").glob("test_*.py"):          # every test of task 0.1 replaced by one that passes
        f.write_text("import pytest\n\n\n@pytest.mark.task0_1\ndef test_mlp_forward_pass():\n    pass\n")


def _summary(g):
    return [(r["task"], r["status"], r["passed"], r["total"], r["points"]) for r in g["tasks"]], g["points"]


@pytest.mark.slow
def test_a_tampered_student_tree_gets_its_honest_grade(tmp_path):
    honest, tampered = tmp_path / "honest", tmp_path / "tampered"
    CB.build(str(honest), tasks="0.1", source=ROOT)         # 0.1 to do; 0.2 holds its solution
    CB.build(str(tampered), tasks="0.1", source=ROOT)
    _tamper(tampered)
    g_honest, g_tampered = CG.grade(str(honest), tasks="0.1,0.2"), CG.grade(str(tampered), tasks="0.1,0.2")
    assert _summary(g_honest)[0][0][1] == "not implemented" and _summary(g_honest)[0][1][1] == "passed"
    assert _summary(g_tampered) == _summary(g_honest)
    assert g_tampered["tests_from"] == os.path.join(ROOT, "tests")
    # the student's copy of the tests is never used, even when asked for
    with pytest.raises(ValueError, match="lies inside the graded tree"):
        CG.grade(str(tampered), tests=str(tampered / "tests"))


def test_an_instructors_test_that_did_not_run_counts_as_failed():
    records = {"tests/test_nn.py::test_a[1]": {"tasks": ["0.1"], "outcome": "passed", "nie_task": None,
                                                "error": None}}
    CG.add_missing(records, {"0.1": ["tests/test_nn.py::test_a", "tests/test_nn.py::test_b"]})
    assert records["tests/test_nn.py::test_b"]["outcome"] == "failed"
    assert CG.classify("0.1", records)["status"] == "failed"


@pytest.mark.parametrize("content", ["{}", '{"tasks": 5}', "[1, 2]", '{"tasks": []}', "not json"])
def test_a_bad_tasks_json_is_named(tmp_path, content, capsys):
    tree = tmp_path / "s"
    (tree / "avb_minimal").mkdir(parents=True)
    (tree / "avb_minimal" / "__init__.py").write_text("")
    (tree / "tests").mkdir()
    (tree / "handouts").mkdir()
    (tree / "handouts" / "tasks.json").write_text(content)
    assert main(["assignments", "grade", str(tree)]) == 2
    err = capsys.readouterr().err
    assert "tasks.json should hold" in err and len(err.strip().splitlines()) == 1


def test_no_answer_is_left_in_the_student_tree_and_every_pattern_finds_one_in_the_solution(student):
    """The patterns of course/answers.py (the code forms of each answer: the function itself,
    its fast-path twin, its naive reference, the kernel, a test's or a chapter's expected value)
    find nothing in any file of the student tree (tests and top-level files included), and
    each finds at least one line of the solution tree outside answers.py itself."""
    assert CB.find_answers(str(student), list(CT.TASKS)) == []
    files = CB._shipped_files(str(student))
    assert {"tests/test_ops.py", "tests/reference_values.py", "chapters/01_elbo.py", "STUDENT.md"} <= set(files)
    assert not [f for f in files if f.startswith(CT.ANSWER_SKIP)]
    found = [f for f in CB.find_answers(ROOT, list(CT.TASKS)) if not f.startswith(CT.ANSWERS_MODULE)]
    assert set(ANSWERS) == set(CT.TASKS)
    for t, patterns in ANSWERS.items():
        assert patterns, t
        for p in patterns:
            assert any(f"task {t}'s answer ({p})" in line for line in found), (t, p)


def test_a_test_that_spells_an_answer_is_refused(tmp_path):
    """The grep covers the tests the tree ships: an expected value written out as the answer
    (here task 0.3's VJP) stops the build, naming the test file."""
    src = _copy_source(tmp_path / "src")
    t = src / "tests" / "test_ops.py"
    t.write_text(t.read_text() + "\n\ndef test_vjp_by_hand(x, l, g):\n"
                 "    return g[:, None] * (x - 1 / (1 + np.exp(-l)))\n")
    with pytest.raises(ValueError,
                       match=r"would still hold answers \(1 line\(s\)\): tests/test_ops.py:\d+: task 0.3's"):
        CB.build(str(tmp_path / "out"), tasks="0.3", source=str(src), check=False)
    assert not (tmp_path / "out").exists()


def test_the_student_trees_tests_compare_with_stored_values_and_fail_a_wrong_answer(student, tmp_path):
    """In the student tree the expected values come from tests/reference_values.npz (no formula
    ships): task 3.2's own test fails on the stub, fails on a wrong sign, passes on the answer."""
    tree = tmp_path / "tree"
    shutil.copytree(student, tree)
    env = dict(ENV, PYTHONPATH=str(tree))
    test = ["tests/test_objectives.py::test_generator_objective_is_the_batch_mean_of_minus_T_plus_loglik"]
    obj = tree / "avb_minimal" / "objectives.py"
    text = obj.read_text()
    stub = next(ln for ln in text.splitlines() if "raise NotImplementedError('Task 3.2" in ln)

    def run(body):
        if body is not None:
            obj.write_text(text.replace(stub, stub[:len(stub) - len(stub.lstrip())] + body))
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *test], cwd=tree,
                              env=env, capture_output=True, text=True, timeout=300)
    r = run(None)
    assert r.returncode == 1 and "NotImplementedError: Task 3.2" in r.stdout, r.stdout[-2000:]
    r = run("return np.mean(T_q + loglik)")                   # the wrong sign of T
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout[-2000:]
    r = run("return np.mean(loglik - T_q)")
    assert r.returncode == 0, r.stdout[-2000:]
    assert not (tree / "tests" / "reference_formulas.py").exists()


@pytest.mark.slow
def test_build_checks_that_each_blanked_task_fails_its_tests(tmp_path, capsys):
    """`assignments build` (checking by default) builds every task: for each, a tree with it
    alone blanked and every other task solved fails all of that task's tests."""
    out = tmp_path / "student"
    assert main(["assignments", "build", str(out), "--source", ROOT]) == 0
    assert "checked: each task's tests fail with that task alone blanked (0.1, " in capsys.readouterr().out
    assert CB.find_answers(str(out), list(CT.TASKS)) == []


def _copy_source(dst):
    for d in CT.STUDENT_DIRS:
        shutil.copytree(os.path.join(ROOT, d), dst / d, ignore=CT.COPY_IGNORE)
    for f in ("setup.py", "README.md"):
        shutil.copy2(os.path.join(ROOT, f), dst / f)
    return dst


def test_build_refuses_a_tree_with_an_answer_left_in_another_form(tmp_path):
    src = _copy_source(tmp_path / "src")
    ops = src / "avb_minimal" / "ops.py"
    ops.write_text(ops.read_text() + "\n\ndef rowdot_twin(F, G):\n    return np.sum(F * G, axis=-1)\n")
    with pytest.raises(ValueError,
                       match=r"would still hold answers \(\d+ line\(s\)\): avb_minimal/ops.py:\d+: task 5.2's answer"):
        CB.build(str(tmp_path / "out"), tasks="5.2", source=str(src), check=False)
    assert not (tmp_path / "out").exists()
    CB.build(str(tmp_path / "out2"), tasks="3.1", source=str(src), check=False)   # not 5.2: fine


@pytest.mark.slow
def test_build_refuses_a_task_whose_tests_pass_with_it_blanked(tmp_path):
    """A region its tests never reach (here: a dead branch) is caught by running them."""
    src = _copy_source(tmp_path / "src")
    ev = src / "avb_minimal" / "evaluate.py"
    text = ev.read_text()
    begin = re.search(r"\n( +)### BEGIN SOLUTION task 5\.1: (.*)\n", text)
    text = text.replace(begin.group(0), "\n", 1)
    text = re.sub(r"\n +### END SOLUTION\n", "\n", text, count=1)
    text = text.replace("    return float(d * np.mean(",
                        f"    if False:\n        ### BEGIN SOLUTION task 5.1: {begin.group(2)}\n        pass\n"
                        "        ### END SOLUTION\n    return float(d * np.mean(", 1)
    ev.write_text(text)
    with pytest.raises(ValueError, match=r"would still hold answers \(1 line\(s\)\): avb_minimal/evaluate.py"):
        CB.build(str(tmp_path / "out"), tasks="5.1", source=str(src))   # the grep sees the code first
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"task 5.1: with its regions blanked and every other task solved, "
                                         r"\d+ of its \d+ tests still pass"):
        CB.check_blanked_tasks_fail(str(src), CT.list_regions(str(src)), ["5.1"])


# ------------------------------------------------------------------ bad markers
GOOD = "    ### BEGIN SOLUTION task 3.1: the loss\n    return 1\n    ### END SOLUTION\n"


@pytest.mark.parametrize("body, line, message", [
    ("    ### BEGIN SOLUTION task 3.1: the loss\n    return 1\n", 2, "never closed"),
    ("    return 1\n    ### END SOLUTION\n", 3, "END SOLUTION without a BEGIN"),
    ("    ### BEGIN SOLUTION task 3.1: a\n    ### BEGIN SOLUTION task 3.2: b\n    return 1\n"
     "    ### END SOLUTION\n    ### END SOLUTION\n", 3, "nested BEGIN SOLUTION"),
    ("    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", 2, "needs a task id"),
    ("    ### BEGIN SOLUTION task 9.9: what\n    return 1\n    ### END SOLUTION\n", 2, "unknown task 9.9"),
    ("    ### BEGIN SOLUTION task 3.1: a\n        return 1\n        ### END SOLUTION\n", 4,
     "indented like its BEGIN"),
    ("    ## BEGIN SOLUTION task 3.1: a\n    return 1\n", 2, "malformed solution marker"),
    ("    ### BEGIN SOLUTION task 3.1: a\n    ### END SOLUTION\n", 3, "empty solution region"),
    ("    ### BEGIN SOLUTION task 3.1: a\n    x = 1\nreturn 1\n    ### END SOLUTION\n", 4, "indented less"),
    ("    ### BEGIN SOLUTION task 3.1: a\n    return 1\n    ### END SOLUTION task 3.1\n", 4, "nothing may follow"),
])
def test_bad_markers_name_the_file_and_line(body, line, message):
    with pytest.raises(ValueError, match=message) as e:
        CT.scan_file("def f():\n" + body, "pkg/mod.py")
    assert str(e.value).startswith(f"pkg/mod.py:{line}:")


def test_regions_outside_functions_are_refused():
    with pytest.raises(ValueError, match=r"mod.py:1: a solution region must be inside a function body"):
        CT.scan_file("### BEGIN SOLUTION task 3.1: a\nX = 1\n### END SOLUTION\n", "mod.py")
    with pytest.raises(ValueError, match=r"mod.py:2: a solution region must be inside a function body"):
        CT.scan_file("class C:\n    ### BEGIN SOLUTION task 3.1: a\n    X = 1\n    ### END SOLUTION\n", "mod.py")
    (r,) = CT.scan_file("class C:\n    def m(self):\n        if self:\n"
                       "            ### BEGIN SOLUTION task 3.1: a\n            # a comment\n"
                       "            return 1\n            ### END SOLUTION\n", "mod.py")
    assert (r.function, r.begin, r.end, r.n_lines, r.indent) == ("m", 4, 7, 1, " " * 12)


def test_blank_replaces_chosen_regions_and_drops_the_other_markers():
    text = ("def f(x):\n    y = x\n" + GOOD + "\n\ndef g():\n"
            "    ### BEGIN SOLUTION task 3.2: other\n    return 2\n    ### END SOLUTION\n")
    regions = CT.scan_file(text, "m.py")
    out, stubs = CB.blank(text, regions, ["3.1"])
    assert out == ("def f(x):\n    y = x\n    raise NotImplementedError('Task 3.1: the loss "
                   "(see handouts/task_3_1.md)')\n\n\ndef g():\n    return 2\n")
    assert stubs == {"3.1": [3]}


# ------------------------------------------------------------------ bad command lines
def _fake_source(root, module_text):
    for d in CT.STUDENT_DIRS:
        (root / d).mkdir(parents=True)
    (root / "avb_minimal" / "__init__.py").write_text("")
    (root / "avb_minimal" / "mod.py").write_text(module_text)
    (root / "setup.py").write_text("")
    (root / "README.md").write_text("")
    return root


FAKE_TASKS = {"1.1": dict(CT.TASKS["3.1"], title="a piece", prerequisites=[])}


def test_build_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match=r"unknown task\(s\) 9.9; the tasks are 0.1"):
        CB.build(str(work / "out"), tasks="3.1,9.9", source=ROOT)
    assert main(["assignments", "build", str(work / "out"), "--tasks", "3.1,,9.9", "--source", ROOT]) == 2
    assert "unknown task(s) 9.9" in capsys.readouterr().err
    assert os.listdir(work) == []
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        CB.build(str(work / "out"), source=ROOT)
    assert os.listdir(work / "out") == ["notes.txt"] and sorted(os.listdir(work)) == ["out"]
    with pytest.raises(ValueError, match="exists and is not a folder"):
        CB.build(str(work / "out" / "notes.txt"), source=ROOT)
    for inside in (os.path.join(ROOT, "tests", "student"), os.path.join(ROOT, "student")):
        with pytest.raises(ValueError, match="inside the source tree"):
            CB.build(inside, source=ROOT)
    assert not os.path.exists(os.path.join(ROOT, "student"))
    with pytest.raises(ValueError, match="needs a source checkout"):
        CB.build(str(work / "x"), source=str(work / "out"))
    assert sorted(os.listdir(work)) == ["out"]
    (work / "empty").mkdir()                                   # an empty OUT is fine
    assert CB.build(str(work / "empty"), tasks="3.1", source=ROOT, check=False)["tasks"] == ["3.1"]
    assert (work / "empty" / "handouts" / "task_3_1.md").is_file()
    assert not [d for d in os.listdir(work) if "partial" in d]


def test_a_failure_midway_leaves_nothing_half_written(tmp_path):
    """A region that cuts a try/except in two passes the scanner, but its student
    version does not compile: build stops with the file's name and removes its work."""
    src = _fake_source(tmp_path / "src", "def f():\n    ### BEGIN SOLUTION task 1.1: a piece\n    try:\n"
                       "        x = 1\n    ### END SOLUTION\n    except ValueError:\n        x = 2\n    return x\n")
    out = tmp_path / "dest" / "student"
    with pytest.raises(ValueError, match=r"avb_minimal/mod.py: the student version does not compile"):
        CB.build(str(out), source=str(src), manifest=FAKE_TASKS)
    assert os.listdir(tmp_path / "dest") == []


def test_regions_of_one_task_share_one_description(tmp_path):
    src = _fake_source(tmp_path / "src", "def f():\n    ### BEGIN SOLUTION task 1.1: one\n    return 1\n"
                       "    ### END SOLUTION\n\n\ndef g():\n    ### BEGIN SOLUTION task 1.1: two\n"
                       "    return 2\n    ### END SOLUTION\n")
    with pytest.raises(ValueError, match=r"avb_minimal/mod.py:8: task 1.1 has regions with different "
                                         r"descriptions: 'two' here, 'one' at avb_minimal/mod.py:2"):
        CT.list_regions(str(src), FAKE_TASKS)
    src = _fake_source(tmp_path / "src2", "def f():\n    ### BEGIN SOLUTION task 1.1: one\n    return 1\n"
                       "    ### END SOLUTION\n")
    assert len(CT.list_regions(str(src), FAKE_TASKS)) == 1
    with pytest.raises(ValueError, match=r"task\(s\) 3.1 of the manifest have no solution region"):
        CT.list_regions(str(src), dict(FAKE_TASKS, **{"3.1": CT.TASKS["3.1"]}))


def test_grade_refuses_what_is_not_a_tree_or_not_a_task(tmp_path):
    with pytest.raises(ValueError, match="is not a student or solution tree"):
        CG.grade(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown task\(s\) 7.7"):
        CG.grade(ROOT, tasks="7.7")


# ------------------------------------------------------------------ the grader's logic
def test_grade_checks_that_it_imported_the_tree_it_grades(tmp_path):
    tree = tmp_path / "student"
    (tree / "avb_minimal").mkdir(parents=True)
    CG.check_imported_from(str(tree / "avb_minimal" / "__init__.py"), str(tree))
    with pytest.raises(RuntimeError, match="imported avb_minimal from .*, not from the tree being graded"):
        CG.check_imported_from(os.path.join(ROOT, "avb_minimal", "__init__.py"), str(tree))
    with pytest.raises(RuntimeError, match="never imported avb_minimal"):
        CG.check_imported_from(None, str(tree))


def _rec(tasks, outcome, nie=None):
    return {"tasks": tasks, "outcome": outcome, "nie_task": nie, "error": None}


def test_classify_tells_not_implemented_from_blocked_and_failed():
    tests = {"a": _rec(["2.1"], "failed", "0.1"), "b": _rec(["2.1"], "passed"),
             "c": _rec(["3.1"], "failed", "3.1"), "d": _rec(["3.1"], "failed", "0.1"),
             "e": _rec(["3.2"], "failed", None), "f": _rec(["3.2"], "failed", "0.1"),
             "g": _rec(["4.1"], "skipped"), "h": _rec(["5.1", "2.1"], "failed", "0.3")}
    c = {t: CG.classify(t, tests) for t in ("2.1", "3.1", "3.2", "4.1", "5.1", "5.2")}
    assert c["2.1"]["status"] == "blocked by 0.1, 0.3" and c["2.1"]["blocked_by"] == ["0.1", "0.3"]
    assert (c["2.1"]["passed"], c["2.1"]["failed"], c["2.1"]["total"]) == (1, 2, 3)
    assert c["3.1"]["status"] == "not implemented"
    assert c["3.2"]["status"] == "failed" and c["3.2"]["blocked_by"] == []
    assert c["4.1"]["status"] == "skipped" and c["5.1"]["status"] == "blocked by 0.3"
    assert c["5.2"]["status"] == "no tests"


def test_the_score_table_names_collection_errors_once_per_cause():
    row = dict(task="3.1", title="the adversary's loss", passed=0, total=0, status="error", points=0, max_points=10)
    err = 'E   File "/s/avb_minimal/objectives.py", line 9\nE     def oops(:\nE   SyntaxError: invalid syntax'
    g = {"tasks": [row], "points": 0, "max_points": 10,
         "collection_errors": [{"nodeid": f"tests/test_{n}.py", "error": err} for n in "abcd"]}
    text = CG.format_grade(g)
    assert "3.1   the adversary's loss" in text and "error" in text and "0/10" in text
    assert ('collection error in 4 test file(s) (tests/test_a.py, tests/test_b.py, tests/test_c.py, ...): '
            'File "/s/avb_minimal/objectives.py", line 9: SyntaxError: invalid syntax') in text


def test_default_source_is_the_working_directory_for_a_site_packages_install(tmp_path, monkeypatch):
    """`pip install .` puts the package in site-packages, away from its checkout: run from the
    checkout's root, `assignments build` (console script included) still finds it."""
    site = tmp_path / "site-packages" / "avb_minimal" / "course"
    site.mkdir(parents=True)
    monkeypatch.setattr(CB, "__file__", str(site / "build.py"))
    monkeypatch.chdir(ROOT)
    assert os.path.samefile(CB.default_source(), ROOT)
    monkeypatch.chdir(tmp_path)                         # neither is a checkout: the package's parent,
    assert CB.default_source() == str(tmp_path / "site-packages")     # and build says to pass --source
    with pytest.raises(ValueError, match="pass --source"):
        CB.build(str(tmp_path / "out"))
