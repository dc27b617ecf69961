"""The exercise tests' setup: one pytest marker per exercise, the ``student`` fixture
that hands a test the functions under grading, and a JSON report for the grader.

The coursework module is loaded from its file beside this folder (not imported
through the package), so the markers and the loader work even when a student's
package does not import.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest


def _load_coursework():
    path = Path(__file__).resolve().parents[2] / "minilottery" / "coursework.py"
    name = "_minilottery_coursework_for_tests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


coursework = _load_coursework()


def pytest_configure(config):
    for ex in coursework.EXERCISES:
        config.addinivalue_line("markers", f"{ex.marker}: exercise {ex.id}, {ex.title}")


@pytest.fixture(scope="session")
def student():
    """student("2.3") -> namespace of the functions exercise 2.3 asks for, from the
    student's module or notebook; a loading problem fails the calling test with a
    message naming the file (a syntax error, a cell that raises, a missing function)."""
    def load(exercise_id):
        try:
            return coursework.load_implementation(exercise_id)
        except coursework.ImplementationError as error:
            pytest.fail(str(error), pytrace=False)
    return load


# -- the grader's report: one entry per test, the first line of its failure ----------

_results = []


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.strip().splitlines() if line.strip()] or ["(no message)"]
    first = lines[0]
    for prefix in ("AssertionError: ", "Failed: "):
        if first.startswith(prefix):
            first = first[len(prefix):]
    return first


def pytest_runtest_logreport(report):
    if os.environ.get("MINILOTTERY_GRADE_REPORT") is None:
        return
    if report.when == "call" or report.failed:
        _results.append({"test": report.nodeid.split("::")[-1], "outcome": report.outcome,
                         "message": _message(report) if report.failed else ""})


def pytest_collectreport(report):
    if os.environ.get("MINILOTTERY_GRADE_REPORT") is not None and report.failed:
        _results.append({"test": report.nodeid, "outcome": "failed",
                         "message": f"collecting the tests failed: {_message(report)}"})


def pytest_sessionfinish(session):
    path = os.environ.get("MINILOTTERY_GRADE_REPORT")
    if path is not None:
        partial = Path(path).with_suffix(".partial")
        partial.write_text(json.dumps(_results, indent=1), encoding="utf-8")
        os.replace(partial, path)
