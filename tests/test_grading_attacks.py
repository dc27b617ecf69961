"""The grader against hostile submissions: each test builds a real submission that
tries one attack, grades it with a copy of the teacher's installation (``python -I``,
so nothing of the submission is on sys.path), and checks that it scores what its
honest content earns and that the teacher's files are byte-identical afterwards."""

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import processes_carrying
from minilottery import coursework, grading

ROOT = coursework.PROJECT_ROOT
IDS = [ex.id for ex in coursework.EXERCISES]
STUB_LINE = 'raise NotImplementedError("Exercise {id}: '


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A copy of the teacher's installation: the package, the exercise tests, the tutorials."""
    folder = tmp_path_factory.mktemp("teacher")
    grading.copy_tree(ROOT / "minilottery", folder / "minilottery")
    grading.copy_tree(ROOT / "tests" / "coursework", folder / "tests" / "coursework")
    (folder / "tutorials").mkdir()
    for file in {ex.file for ex in coursework.EXERCISES if ex.file.endswith(".ipynb")}:
        shutil.copy2(ROOT / file, folder / file)
    return folder


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "student"
    coursework.build(out)
    return out


@pytest.fixture
def stubs(handout, tmp_path):
    """A fresh student copy in which every exercise is still a stub."""
    return grading.copy_tree(handout, tmp_path / "submission")


def fingerprint(teacher):
    return grading.digest(teacher / "minilottery"), grading.digest(teacher / "tests")


def grade(teacher, submission, cwd=None):
    """Grade with the teacher's copy: (exit status, {id: (verdict, message)}, output)."""
    boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from minilottery.coursework import main; sys.exit(main(sys.argv[1:]))")
    before = fingerprint(teacher)
    done = subprocess.run([sys.executable, "-I", "-c", boot, str(teacher), "grade", str(submission)],
                          cwd=cwd or submission.parent, capture_output=True, text=True, timeout=300)
    assert fingerprint(teacher) == before, "the teacher's files changed"
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    verdicts, lines = {}, done.stdout.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(PASS|FAIL)  (\S+)  ", line)
        if match:
            verdicts[match[2]] = (match[1], lines[i + 1].strip() if match[1] == "FAIL" else "")
    return done.returncode, verdicts, out


def replace_stub(submission, exercise_id, code):
    """Put ``code`` (lines at the stub's indentation) in place of an exercise's stub."""
    ex = coursework.BY_ID[exercise_id]
    path = submission / ex.file
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^([ \t]*)" + re.escape(STUB_LINE.format(id=exercise_id)) + r".*$",
                      text, re.MULTILINE)
    assert match, f"no stub of {exercise_id} in {path}"
    body = "".join(match[1] + line + "\n" for line in code.strip("\n").splitlines())
    path.write_text(text[:match.start()] + body + text[match.end() + 1:], encoding="utf-8")


def assert_all_fail(status, verdicts, out, failing=IDS):
    assert status == 1, out
    assert set(verdicts) == set(IDS), out
    assert {i for i, (verdict, _) in verdicts.items() if verdict == "FAIL"} == set(failing), out
    assert f"Score: {len(IDS) - len(failing)}/{len(IDS)} exercises pass" in out


FAKE_REPORT = '''
import json, os, sys
for name in ("report.json", "result.json"):
    for folder in (os.getcwd(), os.environ.get("HOME", "."), os.environ.get("TMPDIR", ".")):
        try:
            open(os.path.join(folder, name), "w").write(json.dumps([{"outcome": "passed"}]))
        except OSError:
            pass
print("PASS  everything")
os._exit(0)
'''


def test_an_init_writing_a_passed_report_and_exiting_0_scores_0(teacher, stubs):
    with open(stubs / "minilottery" / "__init__.py", "a", encoding="utf-8") as init:
        init.write(FAKE_REPORT)
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)
    assert verdicts["2.3"][1].startswith("NotImplementedError: Exercise 2.3"), out


def test_the_same_attack_inside_an_exercise_function_scores_0(teacher, stubs):
    replace_stub(stubs, "4.1", FAKE_REPORT)
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)
    assert "4.1" in verdicts and verdicts["4.1"][0] == "FAIL"


PLUGIN = '''
import pytest
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome, report.longrepr = "passed", None
'''


def test_sitecustomize_usercustomize_conftest_and_plugins_of_the_submission_do_not_load(teacher, stubs):
    (stubs / "always_pass.py").write_text(PLUGIN, encoding="utf-8")
    loader = ("import os, sys\nsys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
              "os.environ['PYTEST_PLUGINS'] = 'always_pass'\n")
    for place in (stubs, stubs / "minilottery"):
        (place / "sitecustomize.py").write_text(loader, encoding="utf-8")
        (place / "usercustomize.py").write_text(loader, encoding="utf-8")
        (place / "conftest.py").write_text(PLUGIN, encoding="utf-8")
    with open(stubs / "tests" / "coursework" / "conftest.py", "a", encoding="utf-8") as conftest:
        conftest.write(PLUGIN)
    (stubs / "pytest.ini").write_text("[pytest]\naddopts = -p always_pass\n", encoding="utf-8")
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)


def test_appending_a_hook_to_the_teachers_conftest_fails_and_changes_nothing(teacher, stubs):
    target = teacher / "tests" / "coursework" / "conftest.py"
    replace_stub(stubs, "4.1", f"""
for path in ({str(target)!r}, {str(teacher / 'minilottery' / 'coursework.py')!r}):
    with open(path, "a") as teacher_file:
        teacher_file.write({PLUGIN!r})
raise NotImplementedError("Exercise 4.1: still a stub")
""")
    status, verdicts, out = grade(teacher, stubs)      # asserts the fingerprint is unchanged
    assert_all_fail(status, verdicts, out)
    assert verdicts["4.1"][1] == "OSError: [Errno 27] File too large", out


def test_grading_from_inside_the_submission_runs_the_teachers_grader(stubs):
    (stubs / "minilottery" / "coursework.py").write_text(
        "import sys\nprint('PASS  1.1  fake\\nScore: 6/6 exercises pass')\nsys.exit(0)\n",
        encoding="utf-8")
    before = grading.digest(ROOT / "tests" / "coursework")
    done = subprocess.run([sys.executable, "-I", "-m", "minilottery.coursework", "grade", "."],
                          cwd=stubs, capture_output=True, text=True, timeout=300)
    assert grading.digest(ROOT / "tests" / "coursework") == before
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fake" not in done.stdout and f"Score: 0/{len(IDS)} exercises pass" in done.stdout


def test_the_installed_command_runs_the_teachers_grader_from_inside_the_submission(stubs):
    """``minilottery-coursework`` (the console script pip installs) keeps the current
    directory off sys.path without -I: a teacher who forgets the flag is not fooled."""
    script = Path(sys.executable).with_name("minilottery-coursework")
    if not script.exists():
        pytest.skip("the console script is not installed (pip install -e .)")
    (stubs / "minilottery" / "coursework.py").write_text(
        "import sys\nprint('PASS  1.1  fake\\nScore: 6/6 exercises pass')\nsys.exit(0)\n",
        encoding="utf-8")
    done = subprocess.run([str(script), "grade", "."], cwd=stubs, capture_output=True, text=True,
                          timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fake" not in done.stdout and f"Score: 0/{len(IDS)} exercises pass" in done.stdout


def solution_notebook_cells(exercise_ids):
    notebook = coursework.read_notebook(ROOT / coursework.BY_ID["1.1"].file)
    return [cell for cell in notebook["cells"]
            if set(coursework.notebook_exercise_cells({"cells": [cell]})) & set(exercise_ids)]


def test_deleted_metadata_scores_0_and_extra_tagged_notebooks_add_nothing(teacher, stubs):
    path = stubs / coursework.BY_ID["1.2"].file
    notebook = coursework.read_notebook(path)
    for cell in notebook["cells"]:
        if "1.2" in cell.get("metadata", {}).get("minilottery", {}).get("exercises", []):
            del cell["metadata"]["minilottery"]
    coursework.write_notebook(path, notebook)
    extra = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
             "cells": solution_notebook_cells(IDS)}
    for cell in extra["cells"]:
        cell.setdefault("metadata", {})["minilottery"] = {"exercises": IDS}
    coursework.write_notebook(stubs / "tutorials" / "99-extra.ipynb", extra)
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)
    assert "has no cell of exercise 1.2" in verdicts["1.2"][1], out
    assert "99-extra" not in out


def test_forked_children_do_not_outlive_the_grader(teacher, stubs):
    marker = uuid.uuid4().hex
    replace_stub(stubs, "4.1", f"""
import os, subprocess
subprocess.Popen(["/bin/sh", "-c", "sleep 300; : {marker}"])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 300; : {marker}"])
    os._exit(0)
raise NotImplementedError("Exercise 4.1: still a stub")
""")
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)
    alive = processes_carrying(marker)
    assert not alive, f"processes {alive} of the submission are still running"


def test_syntax_errors_fail_only_their_own_exercise(teacher, tmp_path):
    """A copy of the solutions with a syntax error in exercise 2.3, one in a module that
    is no exercise, and one in the notebook cell of 1.1: the others still pass."""
    submission = tmp_path / "submission"
    grading.copy_tree(ROOT / "minilottery", submission / "minilottery")
    (submission / "tutorials").mkdir()
    notebook_file = submission / coursework.BY_ID["1.1"].file
    shutil.copy2(ROOT / coursework.BY_ID["1.1"].file, notebook_file)
    reference = submission / "minilottery" / "reference.py"
    text = reference.read_text(encoding="utf-8")
    line = text[:text.index("    db = ")].count("\n") + 1
    reference.write_text(text.replace("    db = ", "    db == = ", 1), encoding="utf-8")
    models = submission / "minilottery" / "models.py"
    models.write_text(models.read_text(encoding="utf-8") + "\ndef broken(:\n", encoding="utf-8")
    notebook = json.loads(notebook_file.read_text(encoding="utf-8"))
    cell = solution_notebook_cells(["1.1"])[0]
    index = next(i for i, c in enumerate(notebook["cells"]) if c["source"] == cell["source"])
    notebook["cells"][index]["source"] = ["def dense_backward(x, W, dout)\n", "    pass\n"]
    notebook["cells"][index].setdefault("metadata", {})["minilottery"] = {"exercises": ["1.1"]}
    coursework.write_notebook(notebook_file, notebook)
    status, verdicts, out = grade(teacher, submission)
    assert_all_fail(status, verdicts, out, failing=["1.1", "2.3"])
    assert verdicts["2.3"][1] == f"minilottery/reference.py, line {line}: SyntaxError: invalid syntax", out
    assert "SyntaxError" in verdicts["1.1"][1] and "cell" in verdicts["1.1"][1], out


def test_terminal_control_sequences_are_stripped_from_the_report(teacher, stubs):
    replace_stub(stubs, "4.1", r'raise ValueError("\x1b[2J\x1b]0;owned\x07\x1b[31mred\x1b[0m\x08\x00 done")')
    status, verdicts, out = grade(teacher, stubs)
    assert_all_fail(status, verdicts, out)
    assert verdicts["4.1"][1] == "ValueError: red done", out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out), repr(out)


def test_a_notebook_cell_cannot_write_to_the_teachers_files(teacher, stubs):
    path = stubs / coursework.BY_ID["1.1"].file
    notebook = coursework.read_notebook(path)
    cell = next(c for c in notebook["cells"]
                if "1.1" in c.get("metadata", {}).get("minilottery", {}).get("exercises", []))
    target = teacher / "tests" / "coursework" / "conftest.py"
    cell["source"] = [f"with open({str(target)!r}, 'a') as teacher_file:\n",
                      f"    teacher_file.write({PLUGIN!r})\n"]
    coursework.write_notebook(path, notebook)
    status, verdicts, out = grade(teacher, stubs)      # asserts the fingerprint is unchanged
    assert_all_fail(status, verdicts, out)
    assert verdicts["1.1"][1].endswith("raised OSError: [Errno 27] File too large"), out
    assert verdicts["1.2"][1].startswith("NotImplementedError: Exercise 1.2"), out


def test_an_endless_loop_is_stopped_by_the_time_limit(tmp_path, handout):
    module = tmp_path / "pruning.py"
    shutil.copy2(handout / "minilottery" / "pruning.py", module)
    text = module.read_text(encoding="utf-8")
    module.write_text(re.sub(r'raise NotImplementedError\("Exercise 4\.1: [^\n]*',
                             "while True:\n        pass", text), encoding="utf-8")
    done = subprocess.run([sys.executable, "-I", "-m", "minilottery.coursework", "grade",
                           str(module), "--timeout", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 3 s" in done.stdout, done.stdout
