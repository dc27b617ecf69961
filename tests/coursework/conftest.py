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
pipe, signed with the secret.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings


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

# The same counterexamples on every run.
settings.register_profile("coursework", derandomize=True, database=None, deadline=None)
settings.load_profile("coursework")


def pytest_configure(config):
    for ex in coursework.EXERCISES:
        config.addinivalue_line("markers", f"{ex.marker}: exercise {ex.id}, {ex.title}")


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
        worker = grading.Worker(_spec, float(os.environ["MINILOTTERY_TIMEOUT"]))
        if "error" in worker.ready:
            problem = worker.ready["error"]
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


# -- the grader's report: one entry per test, the first line of its failure ----------

_results = []


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


def pytest_runtest_logreport(report):
    if not GRADING:
        return
    if report.when == "call" or report.failed:
        _results.append({"test": report.nodeid.split("::")[-1], "outcome": report.outcome,
                         "message": _message(report) if report.failed else ""})


def pytest_collectreport(report):
    if GRADING and report.failed:
        _results.append({"test": report.nodeid, "outcome": "failed",
                         "message": f"collecting the tests failed: {_message(report)}"})


def pytest_sessionfinish(session):
    if GRADING:
        payload = json.dumps({"token": _spec["token"], "tests": _results})
        message = json.dumps({"payload": payload, "mac": grading.sign(_secret, payload.encode())})
        with os.fdopen(int(os.environ["MINILOTTERY_REPORT_FD"]), "w", encoding="utf-8") as pipe:
            pipe.write(message)
