"""The exercise tests' setup: one pytest marker per exercise, the ``student`` fixture
that hands a test the functions under grading, and the signed report for the grader.

The coursework and grading modules are loaded from their files beside this folder
(not imported through the package), so the markers and the loader work even when a
student's package does not import.

Run by a teacher (``python -m pytest tests/coursework``), ``student`` loads the
functions in this process. Run by the grader (MINILOTTERY_GRADING set), this process
imports no student code: it reads the run's secret and spec from stdin, makes itself
non-dumpable, and ``student`` returns proxies that call the student's functions in
an isolated worker (see minilottery/grading.py). The report goes to an inherited
pipe, signed with the secret: every collected test with its weight and outcome, and
any constraint the worker found broken; the grader computes the points from it.

This conftest also covers tests/coursework/hidden/ (the teacher's hidden tests).
``@pytest.mark.weight(w)`` sets a test's share of its exercise's points (default 1),
and every hypothesis test runs under the derandomized "coursework" profile; both
are checked when the tests are collected.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, settings


def _load(stem):
    path = Path(__file__).resolve().parents[2] / "minilottery" / f"{stem}.py"
    name = f"_minilottery_{stem}_for_tests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


coursework = _load("coursework")
grading = _load("grading")
GRADING = os.environ.get("MINILOTTERY_GRADING") is not None
if GRADING:
    import __main__                       # the grader's boot line read stdin there
    grading.make_undumpable()
    _secret, _spec = bytes.fromhex(__main__.GRADING_INPUT[0]), json.loads(__main__.GRADING_INPUT[1])

# The same counterexamples on every run: a test's own @settings inherit this profile
# (they are created after it is loaded), and pytest_collection_modifyitems checks it.
# No "explain" phase (extra runs that only annotate the traceback), one bug per test.
settings.register_profile("coursework", derandomize=True, database=None, deadline=None,
                          phases=[phase for phase in Phase if phase.name != "explain"],
                          report_multiple_bugs=False)
settings.load_profile("coursework")
HERE = Path(__file__).resolve().parent


def _registry():
    """(marker, id, title) of every exercise: the grader's registry when grading."""
    if GRADING:
        return [("exercise_" + e["id"].replace(".", "_"), e["id"], e["title"])
                for e in _spec["registry"]]
    return [(ex.marker, ex.id, ex.title) for ex in coursework.EXERCISES]


def pytest_configure(config):
    for marker, exercise_id, title in _registry():
        config.addinivalue_line("markers", f"{marker}: exercise {exercise_id}, {title}")
    config.addinivalue_line("markers", "weight(w): the test's share of its exercise's points "
                                       "(w > 0; default 1)")


def weight(item):
    marker = item.get_closest_marker("weight")
    if marker is None:
        return 1
    value = marker.args[0] if marker.args else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.weight needs one number > 0, "
                                f"got {marker.args!r}")
    return value


def pytest_collection_modifyitems(items):
    for item in items:
        if not Path(str(item.fspath)).resolve().is_relative_to(HERE):
            continue
        weight(item)
        held = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
        if held is not None and not (held.derandomize and held.database is None):
            raise pytest.UsageError(f"{item.nodeid}: hypothesis settings must be derandomized "
                                    f"with no database (the 'coursework' profile), so that a "
                                    f"counterexample is the same on every run")


@pytest.fixture(scope="session")
def student():
    """student("2.3") -> namespace of the functions exercise 2.3 asks for, from the
    student's module or notebook; a loading problem fails the calling test with a
    message naming the file (a syntax error, a cell that raises, a missing function)."""
    if not GRADING:
        def load(exercise_id):
            try:
                return coursework.load_implementation(exercise_id)
            except coursework.ImplementationError as error:
                pytest.fail(str(error), pytrace=False)
        yield load
        return
    worker, problem = None, None
    try:
        worker = _state["worker"] = grading.Worker(_spec, float(os.environ["MINILOTTERY_TIMEOUT"]))
        problem = worker.ready.get("error") or worker.ready.get("violation")
    except grading.WorkerError as error:
        problem = str(error)

    def load(exercise_id):
        if exercise_id != _spec["exercise"]:
            pytest.fail(f"this run grades exercise {_spec['exercise']}, not {exercise_id}",
                        pytrace=False)
        if problem:
            pytest.fail(problem, pytrace=False)
        return grading.student_proxy(worker, _spec["names"])
    yield load
    if worker is not None:
        worker.kill()


# -- the grader's report: one entry per collected test, in order, with its weight and
# outcome (a test that never reports stays "not run"), and any broken constraint -------

_state = {"worker": None}
_results = {}
_problems = []


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.strip().splitlines() if line.strip()] or ["(no message)"]
    first = lines[0]
    for prefix in ("AssertionError: ", "Failed: ", "_minilottery_grading_for_tests.StudentError: ",
                   "_minilottery_grading_for_tests.WorkerError: "):
        if first.startswith(prefix):
            first = first[len(prefix):]
    return first


def _name(nodeid):
    """tests/coursework/hidden/test_1_2_x.py::test_y -> hidden/test_1_2_x.py::test_y."""
    path, _, test = nodeid.partition("::")
    parts = Path(path).parts
    if "coursework" in parts:
        parts = parts[len(parts) - parts[::-1].index("coursework"):]
    return "/".join(parts) + "::" + test


def pytest_collection_finish(session):
    if GRADING:
        for item in session.items:
            _results[item.nodeid] = {"test": _name(item.nodeid), "weight": weight(item),
                                     "outcome": "not run", "message": ""}


def pytest_runtest_logreport(report):
    entry = _results.get(report.nodeid) if GRADING else None
    if entry is None:
        return
    if report.failed:
        if entry["outcome"] != "failed":
            entry["outcome"], entry["message"] = "failed", _message(report)
    elif report.when == "call" or report.skipped:
        entry["outcome"] = report.outcome


def pytest_collectreport(report):
    if GRADING and report.failed:
        _problems.append(f"collecting the tests failed: {_message(report)}")


def pytest_sessionfinish(session):
    if GRADING:
        tests = list(_results.values())
        if _problems:      # a teacher's test file that does not import: nothing is graded
            tests = [{"test": "collection", "weight": 1, "outcome": "failed",
                      "message": _problems[0]}]
        worker = _state["worker"]
        payload = json.dumps({"token": _spec["token"], "tests": tests,
                              "constraint": worker.violations if worker else []})
        message = json.dumps({"payload": payload, "mac": grading.sign(_secret, payload.encode())})
        with os.fdopen(int(os.environ["MINILOTTERY_REPORT_FD"]), "w", encoding="utf-8") as pipe:
            pipe.write(message)
