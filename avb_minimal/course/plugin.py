"""pytest plugin of `avb_minimal assignments grade`: records each test's task markers,
outcome and exception (NotImplementedError("Task X.Y: ...") and its task), and which
avb_minimal was imported, into the file named by --avb-grade-results (a private folder of
the grader's, not the environment)."""
import json
import os
import re
import sys

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


def pytest_addoption(parser):
    parser.addoption("--avb-grade-results", help="where the grader reads the outcomes (set by the grader)")


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
    path = session.config.getoption("--avb-grade-results") or os.environ["AVB_GRADE_RESULTS"]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"tests": _tests, "collection_errors": _collect_errors, "exitstatus": int(exitstatus),
                   "avb_minimal": getattr(mod, "__file__", None)}, fh)
