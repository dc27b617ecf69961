"""Grading a class: a toy course (two pure-Python exercises, its own tests and a hidden
one) and a folder of 33 generated submissions, correct, wrong, broken and hostile,
graded in parallel. Every CSV row is checked exactly, and the teacher's files are
byte-identical afterwards. Also: the constraint checks on the real exercises, the
archive checks, and the seeded counterexample."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import processes_carrying
from minilottery import archives, classroom, constraints, coursework, grading
from minilottery.coursework import Exercise

ROOT = coursework.PROJECT_ROOT
TIMEOUT = 5.0

TOY = '''"""A toy course: two exercises."""


def add(a, b):
    """a + b."""
{add}

def total(values):
    """The sum of ``values``, with a loop."""
{total}
'''
ADD = "    return a + b\n"
TOTAL = "    result = 0\n    for value in values:\n        result += value\n    return result\n"

TESTS = {
    "test_1_1_add.py": '''
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_1_1


def test_small(student):
    got = student("1.1").add(2, 3)
    assert got == 5, f"add(2, 3) is {got!r}, should be 5"


@pytest.mark.weight(3)
@settings(max_examples=10)
@given(a=st.integers(-100, 100), b=st.integers(-100, 100))
def test_any(student, a, b):
    got = student("1.1").add(a, b)
    assert got == a + b, f"add({a}, {b}) is {got!r}, should be {a + b}"
''',
    "test_1_2_total.py": '''
import pytest

pytestmark = pytest.mark.exercise_1_2


def test_empty(student):
    got = student("1.2").total([])
    assert got == 0, f"total([]) is {got!r}, should be 0"


def test_three(student):
    got = student("1.2").total([1, 2, 3])
    assert got == 6, f"total([1, 2, 3]) is {got!r}, should be 6"
''',
    "hidden/test_1_2_negatives.py": '''
import pytest

pytestmark = pytest.mark.exercise_1_2


def test_negatives(student):
    got = student("1.2").total([-4, 1])
    assert got == -3, f"total([-4, 1]) is {got!r}, should be -3"
''',
}
TOY_EXERCISES = (Exercise("1.1", "add two numbers", "minilottery/toy.py", ("add",)),
                 Exercise("1.2", "a sum, with a loop", "minilottery/toy.py", ("total",),
                          points=6, constraint="loops"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The teacher's toy project: minilottery/toy.py (the solutions) and tests/coursework
    with this project's conftest, as a Course."""
    root = tmp_path_factory.mktemp("toy-course")
    package = root / "minilottery"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "toy.py").write_text(TOY.format(add=ADD, total=TOTAL), encoding="utf-8")
    for name in classroom.GRADER_MODULES:          # the conftest loads them by path
        shutil.copy2(ROOT / "minilottery" / name, package / name)
    tests = root / "tests" / "coursework"
    (tests / "hidden").mkdir(parents=True)
    for folder in (tests, tests / "hidden"):
        (folder / "__init__.py").write_text("", encoding="utf-8")
    shutil.copy2(ROOT / "tests" / "coursework" / "conftest.py", tests / "conftest.py")
    for name, text in TESTS.items():
        (tests / name).write_text(text.lstrip(), encoding="utf-8")
    return classroom.Course(root, TOY_EXERCISES)


def toy_module(add=ADD, total=TOTAL, extra=""):
    return TOY.format(add=add, total=total) + extra


def copy_folder(folder, module_text):
    (folder / "minilottery").mkdir(parents=True)
    (folder / "minilottery" / "toy.py").write_text(module_text, encoding="utf-8")
    return folder


def zip_of(path, members):
    """A zip archive of {name: text}."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


def tar_of(path, members, mode="w", links=()):
    with tarfile.open(path, mode) as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)


CONSTRAINT = "constraint 'loops' violated (written with Python loops, no vectorised shortcut): "


@pytest.fixture(scope="module")
def classfolder(toy, tmp_path_factory):
    """33 submissions and, for each, the rows its honest content earns:
    {student: {exercise: (points, message)}}."""
    folder = tmp_path_factory.mktemp("class") / "submissions"
    folder.mkdir()
    marker = uuid.uuid4().hex
    full = {"1.1": ("10", ""), "1.2": ("6", "")}
    expected = {}

    def student(name, rows=None, **module):
        copy_folder(folder / name, toy_module(**module))
        expected[name] = {**full, **(rows or {})}

    # -- correct, as folders and archives --------------------------------------------
    student("c01_folder")
    zip_of(folder / "c02_zip.zip", {"c02/minilottery/toy.py": toy_module()})
    tar_of(folder / "c03_targz.tar.gz", {"minilottery/toy.py": toy_module()}, "w:gz")
    tar_of(folder / "c04_tar.tar", {"minilottery/toy.py": toy_module()})
    student("c05_extra")
    extra = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {"minilottery": {"exercises": ["1.1", "1.2", "9.9"]}},
         "source": ["def add(a, b):\n", "    return a + b\n"], "outputs": [],
         "execution_count": None}]}
    (folder / "c05_extra" / "tutorials").mkdir()
    coursework.write_notebook(folder / "c05_extra" / "tutorials" / "99-extra.ipynb", extra)
    student("c06_nested_loop", total="    result = 0\n    for value in values:\n"
                                     "        for _ in range(1):\n            result = result + value\n"
                                     "    return result\n")
    for key in ("c02_zip", "c03_targz", "c04_tar"):
        expected[key] = dict(full)
    # -- wrong --------------------------------------------------------------------------
    student("w07_add_off", {"1.1": ("2.5", "add(8, 0) is 9, should be 8")},
            add="    return a + b + (1 if a > 7 else 0)\n")
    student("w08_positive_only", {"1.2": ("4", "total([-4, 1]) is 1, should be -3")},
            total="    result = 0\n    for value in values:\n        if value > 0:\n"
                  "            result += value\n    return result\n")
    student("w09_both", {"1.1": ("0", "add(2, 3) is -1, should be 5"),
                         "1.2": ("2", "total([1, 2, 3]) is 0, should be 6")},
            add="    return a - b\n",
            total="    result = 0\n    for value in values:\n        result = 0\n    return result\n")
    student("w10_builtin_sum", {"1.2": ("0", CONSTRAINT + "total has no for or while loop "
                                                          "that does the work")},
            total="    return sum(values)\n")
    line = toy_module().splitlines().index("def total(values):") + 7
    student("w11_dot", {"1.2": ("0", CONSTRAINT + f"minilottery/toy.py, line {line}: total "
                                                  f"calls dot outside a loop")},
            total="    result = 0\n    for _ in values:\n        result = 0\n    import numpy as np\n"
                  "    return int(np.dot(values, [1] * len(values)))\n")
    copy_folder(folder / "w12_missing_function", toy_module().split("def total")[0])
    expected["w12_missing_function"] = {**full, "1.2": ("0", "minilottery/toy.py defines no "
                                                             "function total (exercise 1.2 "
                                                             "asks for total)")}
    (folder / "w13_missing_file").mkdir()
    (folder / "w13_missing_file" / "README.md").write_text("my work\n", encoding="utf-8")
    expected["w13_missing_file"] = {ex: ("0", "minilottery/toy.py is missing") for ex in full}
    # -- broken -------------------------------------------------------------------------
    line = toy_module().splitlines().index("def add(a, b):") + 1
    copy_folder(folder / "b14_syntax_in_add",
                toy_module().replace("def add(a, b):", "def add(a, b)"))
    expected["b14_syntax_in_add"] = {**full, "1.1": ("0", f"minilottery/toy.py, line {line}: "
                                                          f"SyntaxError: expected ':'")}
    student("b15_syntax_elsewhere", extra="\n\ndef broken(:\n    pass\n")
    (folder / "b16_notes.txt").write_text("I did not do it\n", encoding="utf-8")
    expected["b16_notes"] = {ex: ("0", "b16_notes.txt is not a submission: hand in a folder, "
                                       "a notebook, a module or a .zip/.tar/.tar.gz archive")
                             for ex in full}
    (folder / "b17_corrupt.zip").write_bytes(b"PK\x03\x04 not really a zip")
    expected["b17_corrupt"] = {ex: ("0", "b17_corrupt.zip is not a readable zip archive: "
                                         "File is not a zip file") for ex in full}
    coursework.write_notebook(folder / "b18_notebook.ipynb",
                              {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})
    expected["b18_notebook"] = {ex: ("0", "b18_notebook.ipynb has no exercise cells (no cell "
                                          "with minilottery exercise metadata or a BEGIN "
                                          "SOLUTION marker)") for ex in full}
    # -- hostile ------------------------------------------------------------------------
    student("h19_fake_report", {"1.1": ("0", "the student's code stopped the process "
                                             "(PASS everything)")},
            add="    import json, os\n"
                "    for place in (os.getcwd(), os.environ.get('HOME', '.')):\n"
                "        try:\n"
                "            open(os.path.join(place, 'report.json'), 'w').write("
                "json.dumps([{'outcome': 'passed'}]))\n"
                "        except OSError:\n            pass\n"
                "    print('\\x1b[32mPASS\\x1b[0m  everything\\x1b]0;title\\x07')\n"
                "    os._exit(0)\n")
    student("h20_forged_exit", {"1.1": ("0", "the student's code stopped the process "
                                             "(no message)")},
            add="    raise SystemExit(0)\n")
    student("h21_fork", add=f"    import os, subprocess\n"
                            f"    subprocess.Popen(['/bin/sh', '-c', 'sleep 300; : {marker}'],\n"
                            f"                     start_new_session=True)\n"
                            f"    return a + b\n")
    teacher_files = [toy.root / "tests" / "coursework" / "conftest.py",
                     toy.root / "minilottery" / "toy.py",
                     ROOT / "tests" / "coursework" / "conftest.py"]
    student("h22_writes_teacher", total=f"    for path in {[str(p) for p in teacher_files]!r}:\n"
                                        f"        try:\n"
                                        f"            open(path, 'a').write('def test_x(): pass')\n"
                                        f"        except OSError:\n            pass\n" + TOTAL)
    student("h23_endless", {"1.1": ("0", f"timed out after {TIMEOUT:g} s (an endless loop? a "
                                         f"very slow implementation?)")},
            add="    while True:\n        pass\n")
    student("h24_huge_output", add="    print('x' * 2_000_000)\n    return a + b\n")
    student("h25_ansi", {"1.1": ("0", "ValueError: red done")},
            add='    raise ValueError("\\x1b[2J\\x1b]0;owned\\x07\\x1b[31mred\\x1b[0m\\x08 done")\n')
    student("h25_long_message", {"1.2": ("0", "ValueError: " + "y" * 485 + "...")},
            total="    for value in values:\n        value = 0\n    raise ValueError('y' * 1_000_000)\n")
    zip_of(folder / "h26_dotdot.zip", {"../escaped.py": "print('out')\n",
                                       "minilottery/toy.py": toy_module()})
    expected["h26_dotdot"] = {ex: ("0", "h26_dotdot.zip: member '../escaped.py' leaves the "
                                        "folder (..)") for ex in full}
    tar_of(folder / "h27_symlink.tar", {}, links=[("minilottery/toy.py", "/etc/passwd")])
    expected["h27_symlink"] = {ex: ("0", "h27_symlink.tar: member 'minilottery/toy.py' is a "
                                         "link or a special file; only files and folders are "
                                         "accepted") for ex in full}
    tar_of(folder / "h28_absolute.tar.gz", {"/tmp/h28/minilottery/toy.py": toy_module()}, "w:gz")
    expected["h28_absolute"] = {ex: ("0", "h28_absolute.tar.gz: member "
                                          "'/tmp/h28/minilottery/toy.py' is an absolute path")
                                for ex in full}
    student("h29_kills_the_tests", {"1.1": ("0", "the tests' process ended without a signed "
                                                 "report (killed?)")},
            add="    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                "    return a + b\n")
    student("h30_forges_on_fds", {"1.1": ("0", "add(2, 3) is 6, should be 5")},
            add="    import json, os\n"
                "    forged = json.dumps({'payload': '{}', 'mac': ''}).encode()\n"
                "    for fd in range(3, 64):\n"
                "        try:\n            os.write(fd, forged)\n"
                "        except OSError:\n            pass\n"
                "    return a + b + 1\n")
    (folder / "h32_links_the_solution" / "minilottery").mkdir(parents=True)
    (folder / "h32_links_the_solution" / "minilottery" / "toy.py").symlink_to(
        toy.package / "toy.py")
    expected["h32_links_the_solution"] = {
        ex: ("0", "minilottery/toy.py is a symbolic link (or lies in a linked folder); hand in "
                  "the file itself") for ex in full}
    (folder / "h33_linked_folder").symlink_to(toy.root)
    expected["h33_linked_folder"] = {ex: ("0", "h33_linked_folder is a symbolic link; hand in "
                                               "the submission itself") for ex in full}
    assert len(expected) == 33
    return folder, expected, marker, teacher_files


@pytest.fixture(scope="module")
def graded(toy, classfolder, tmp_path_factory):
    folder, expected, marker, teacher_files = classfolder
    before = {path: path.read_bytes() for path in teacher_files}
    fingerprint = grading.digest(toy.root), grading.digest(ROOT / "minilottery")
    graded = classroom.grade_class(folder, timeout=TIMEOUT, jobs=2, course=toy)
    assert {path: path.read_bytes() for path in teacher_files} == before
    assert (grading.digest(toy.root), grading.digest(ROOT / "minilottery")) == fingerprint
    out = tmp_path_factory.mktemp("results")
    classroom.write_results(out, graded)
    return graded, out


def test_every_csv_row_of_a_class_is_right(graded, classfolder):
    _, expected, _, _ = classfolder
    results, out = graded
    with open(out / "results.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["student", "exercise", "points", "max_points", "message"]
    want = [[name, ex, points, {"1.1": "10", "1.2": "6"}[ex], message]
            for name in sorted(expected) for ex, (points, message) in expected[name].items()]
    mismatched = [(got, wanted) for got, wanted in zip(rows[1:], want) if got != wanted]
    assert not mismatched and len(rows) - 1 == len(want), "\n".join(map(repr, mismatched))
    with open(out / "scores.csv", newline="", encoding="utf-8") as stream:
        scores = list(csv.reader(stream))
    assert scores[0] == ["student", "points", "max_points"]
    assert scores[1:] == [[name, classroom.show_points(sum(float(p) for p, _ in rows.values())),
                           "16"] for name, rows in sorted(expected.items())]
    assert "\x1b" not in (out / "results.csv").read_text(encoding="utf-8")


def test_the_json_and_the_feedback_match_the_csv(graded, classfolder):
    _, expected, _, _ = classfolder
    results, out = graded
    nested = json.loads((out / "results.json").read_text(encoding="utf-8"))["students"]
    assert [entry["student"] for entry in nested] == sorted(expected)
    for entry in nested:
        assert [(e["exercise"], classroom.show_points(e["points"]), e["message"])
                for e in entry["exercises"]] == \
            [(ex, points, message) for ex, (points, message) in expected[entry["student"]].items()]
    text = (out / "feedback" / "w08_positive_only.txt").read_text(encoding="utf-8")
    assert "Total: 14 of 16 points" in text
    # the student's feedback withholds the hidden test; the teacher's JSON and CSV have it
    assert "  " + classroom.HIDDEN_WITHHELD + "\n" in text and "failed   hidden test 1\n" in text
    assert "test_negatives" not in text and "total([-4, 1])" not in text, text
    assert "passed   test_1_2_total.py::test_three" in text
    assert sorted(p.name for p in (out / "feedback").iterdir()) == \
        sorted(f"{name}.txt" for name in expected)
    assert not [p for p in out.rglob(".*")], "a temporary file was left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "results.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_no_process_of_the_class_outlives_the_grading(graded, classfolder):
    _, _, marker, _ = classfolder
    alive = processes_carrying(marker)
    assert not alive, f"processes {alive} of a submission are still running"


def test_nothing_escapes_an_archive(graded, classfolder, tmp_path):
    folder, _, _, _ = classfolder
    assert not Path("/tmp/h28").exists()
    target = tmp_path / "unpack" / "here"
    with pytest.raises(archives.ArchiveError, match="leaves"):
        archives.extract(folder / "h26_dotdot.zip", target)
    assert not (tmp_path / "unpack" / "escaped.py").exists() and not target.exists()


def test_a_counterexample_is_the_same_on_every_grading(toy, graded, classfolder):
    folder, expected, _, _ = classfolder
    again = classroom.grade(folder / "w07_add_off" / "minilottery" / "toy.py", timeout=TIMEOUT,
                            course=toy)
    first = {r.exercise.id: r for r in graded[0]["w07_add_off"]}
    assert [(r.exercise.id, r.points, r.message) for r in again] == \
        [(i, first[i].points, first[i].message) for i in ("1.1", "1.2")]
    assert first["1.1"].message == expected["w07_add_off"]["1.1"][1]


def test_one_archive_is_graded_as_one_submission(toy, tmp_path):
    zip_of(tmp_path / "dan.zip", {"dan/minilottery/toy.py": toy_module(add="    return a * b\n")})
    results = classroom.grade(tmp_path / "dan.zip", timeout=TIMEOUT, course=toy)
    assert [(r.exercise.id, r.points, r.message) for r in results] == \
        [("1.1", 0.0, "add(2, 3) is 6, should be 5"), ("1.2", 6.0, "")]
    zip_of(tmp_path / "eve.zip", {"/etc/toy.py": "x"})
    with pytest.raises(classroom.GradeError, match="member '/etc/toy.py' is an absolute path"):
        classroom.grade(tmp_path / "eve.zip", course=toy)


def test_the_command_line_grades_a_class_folder(tmp_path):
    """`grade FOLDER --out DIR` on the real course: a folder of two notebooks, one right
    (the project's own tutorial), one without exercise cells."""
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy2(ROOT / coursework.BY_ID["1.1"].file, folder / "ann.ipynb")
    coursework.write_notebook(folder / "bob.ipynb",
                              {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})
    done = subprocess.run([sys.executable, "-I", "-c",
                           "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                           "from minilottery.coursework import main; sys.exit(main(sys.argv[1:]))",
                           str(ROOT), "grade", str(folder), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "out" / "scores.csv", newline="", encoding="utf-8") as stream:
        scores = {row[0]: row[1:] for row in csv.reader(stream)}
    top = str(sum(ex.points for ex in coursework.EXERCISES))
    notebook_points = sum(ex.points for ex in coursework.EXERCISES if ex.file.endswith(".ipynb")
                          and ex.file == coursework.BY_ID["1.1"].file)
    assert scores == {"student": ["points", "max_points"], "ann": [str(notebook_points), top],
                      "bob": ["0", top]}, done.stdout


# -- the constraints, on the real exercises ---------------------------------------------

def real_source(ex):
    return [((ROOT / ex.file).read_text(encoding="utf-8"), ex.file)]


def test_the_solutions_keep_their_constraints():
    stated = [ex for ex in coursework.EXERCISES if ex.constraint]
    assert {ex.constraint for ex in stated} == {"loops", "numba"}
    for ex in stated:
        if ex.file.endswith(".py"):
            assert constraints.violations(ex.constraint, real_source(ex), ex.names) == [], ex.id


def without_its_decorators(text, name):
    """``text`` with the decorator lines above ``def name(`` removed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
    above = start
    while above > 0 and lines[above - 1].lstrip().startswith("@"):
        above -= 1
    return "\n".join(lines[:above] + lines[start:]) + "\n"


@pytest.mark.parametrize("ex", [ex for ex in coursework.EXERCISES if ex.constraint],
                         ids=lambda ex: f"{ex.id}-{ex.constraint}")
def test_every_stated_constraint_is_checked(ex):
    """Each exercise with a constraint: its solution keeps it, and a stand-in that breaks
    it (the solution without @njit; a vectorised one-liner without a loop) is caught."""
    name = ex.names[0]
    if ex.constraint == "numba":
        broken = without_its_decorators(real_source(ex)[0][0], name)
        complaint = f"{name} is not decorated with numba's @njit"
    else:
        broken = f"import numpy as np\n\ndef {name}(x, *rest):\n    return np.einsum('...', x)\n"
        complaint = f"{name} has no for or while loop that does the work"
    problems = constraints.violations(ex.constraint, [(broken, ex.file)], ex.names)
    assert any(complaint in problem for problem in problems), problems


VECTORISED_CONV = '''
def conv2d_backward(dout, x, W, stride=1, padding=0):
    n, c, h, w = x.shape
    k = W.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    dW = np.einsum("nohw,nchwij->ocij", dout, windows)
    return None, dW, dout.sum(axis=(0, 2, 3))
'''
IM2COL_CONV = '''
def conv2d_backward(dout, x, W, stride=1, padding=0):
    from minilottery import kernels
    cols = np.empty((1, 1), x.dtype)
    kernels.im2col(x, W.shape[2], stride, padding, cols)
    return None, dout.reshape(len(W), -1) @ cols.T, dout.sum(axis=(0, 2, 3))
'''
NUMPY_ADAM = '''
def adam_update(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay,
                bias_correction1, bias_correction2):
    g = g + weight_decay * w
    m[:] = beta1 * m + (1 - beta1) * g
    v[:] = beta2 * v + (1 - beta2) * g * g
    w -= lr * (m / bias_correction1) / (np.sqrt(v / bias_correction2) + eps)
'''


@pytest.mark.parametrize("source, complaint", [
    (VECTORISED_CONV, "conv2d_backward uses sliding_window_view"),
    (VECTORISED_CONV, "conv2d_backward calls einsum outside a loop"),
    (IM2COL_CONV, "conv2d_backward uses kernels"),
    (IM2COL_CONV, "conv2d_backward uses the @ operator outside a loop"),
    ("e = np.einsum\n" + VECTORISED_CONV.replace("np.einsum", "e"), "calls einsum outside a loop"),
    ("def conv2d_backward(dout, x, W, stride=1, padding=0):\n    return helper(x)\n\n"
     "def helper(x):\n    return getattr(np, 'ein' + 'sum')('ii', x)\n", "helper uses getattr"),
    # a stub's raise exempts a function only when nothing returns before it
    ("def conv2d_backward(dout, x, W, stride=1, padding=0):\n    if x.size:\n"
     "        return np.einsum('i', x)\n    raise NotImplementedError('Exercise 2.3: ...')\n",
     "calls einsum outside a loop"),
])
def test_a_vectorised_conv_backward_breaks_loops(source, complaint):
    problems = constraints.violations("loops", [(source, "mine.py")], ("conv2d_backward",))
    assert any(complaint in problem for problem in problems), problems


def kernel_notebook(path, source):
    coursework.write_notebook(path, {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {"minilottery": {"exercises": ["1.1"]}},
         "source": source.splitlines(keepends=True), "outputs": [], "execution_count": None}]})
    return path


def test_a_kernel_that_only_looks_jitted_fails_in_the_worker(toy, tmp_path):
    """A notebook exercise with the "numba" constraint: a real @njit kernel passes; a
    decorator merely named njit passes the static check, and the worker's check, sent
    through the signed report, fails it."""
    course = classroom.Course(tmp_path / "kernels", (
        Exercise("1.1", "double, a Numba kernel", "tutorials/k.ipynb", ("double",),
                 constraint="numba"),))
    shutil.copytree(toy.package, course.package)
    course.tests.mkdir(parents=True)
    shutil.copy2(toy.tests / "conftest.py", course.tests / "conftest.py")
    (course.tests / "__init__.py").write_text("", encoding="utf-8")
    (course.tests / "test_1_1_double.py").write_text(
        "import numpy as np\nimport pytest\n\npytestmark = pytest.mark.exercise_1_1\n\n\n"
        "def test_double(student):\n    got = student('1.1').double(np.arange(3.0))\n"
        "    assert np.array_equal(got, [0.0, 2.0, 4.0]), f'double gave {got}'\n",
        encoding="utf-8")
    body = "def double(x):\n    out = np.empty_like(x)\n    for i in range(x.size):\n" \
           "        out[i] = 2 * x[i]\n    return out\n"
    real = kernel_notebook(tmp_path / "real.ipynb",
                           "import numpy as np\nfrom numba import njit\n\n@njit\n" + body)
    fake = kernel_notebook(tmp_path / "fake.ipynb",
                           "import numpy as np\n\ndef njit(f):\n    return f\n\n@njit\n" + body)
    [passed] = classroom.grade(real, timeout=60, course=course)
    assert (passed.passed, passed.points, passed.message) == (True, 10.0, "")
    [failed] = classroom.grade(fake, timeout=60, course=course)
    assert (failed.points, failed.message) == (
        0.0, "constraint 'numba' violated (a Numba-compiled (nopython) kernel): double is a "
             "plain function, not a Numba-compiled function (decorate it with @njit)")


def test_a_plain_numpy_adam_breaks_numba():
    assert constraints.violations("numba", [(NUMPY_ADAM, "optim.py")], ("adam_update",)) == \
        ["optim.py, line 2: adam_update is not decorated with numba's @njit (or @jit in "
         "nopython mode)"]
    assert constraints.violations("numba", [("@jit(forceobj=True)" + NUMPY_ADAM, "o.py")],
                                  ("adam_update",))


def test_the_worker_checks_that_a_kernel_really_compiles():
    import numba
    import numpy as np

    def plain(x):
        return x + 1
    compiled, objectmode = numba.njit(plain), numba.jit(forceobj=True)(plain)
    assert "not a Numba-compiled function" in grading._not_compiled("f", plain, called=False)
    assert grading._not_compiled("f", compiled, called=False) is None
    assert "without being compiled" in grading._not_compiled("f", compiled, called=True)
    compiled(np.ones(2))
    assert grading._not_compiled("f", compiled, called=True) is None
    objectmode(np.ones(2))
    assert "object mode" in grading._not_compiled("f", objectmode, called=True)


@pytest.mark.parametrize("exercise_id, file, text", [
    ("2.3", "reference.py", VECTORISED_CONV), ("3.2", "optim.py", NUMPY_ADAM)])
def test_grading_a_broken_constraint_scores_0(exercise_id, file, text, tmp_path):
    ex = coursework.BY_ID[exercise_id]
    module = tmp_path / file
    module.write_text("import numpy as np\n" + text, encoding="utf-8")
    [result] = [r for r in classroom.grade(module, timeout=30) if r.exercise == ex]
    assert (result.passed, result.points) == (False, 0)
    assert result.message.startswith(f"constraint '{ex.constraint}' violated"), result.message


# -- archives ---------------------------------------------------------------------------

def test_archive_limits(tmp_path, monkeypatch):
    zip_of(tmp_path / "many.zip", {f"f{i}.txt": "x" for i in range(5)})
    monkeypatch.setattr(archives, "MAX_MEMBERS", 4)
    with pytest.raises(archives.ArchiveError, match="has 5 members, more than 4"):
        archives.extract(tmp_path / "many.zip", tmp_path / "out1")
    monkeypatch.setattr(archives, "MAX_MEMBERS", 100)
    monkeypatch.setattr(archives, "MAX_BYTES", 3)
    with pytest.raises(archives.ArchiveError, match="unpacks to 5 bytes, more than 3"):
        archives.extract(tmp_path / "many.zip", tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    tar_of(tmp_path / "many.tar.gz", {f"f{i}.txt": "x" for i in range(5)}, "w:gz")
    with pytest.raises(archives.ArchiveError, match="many.tar.gz unpacks to more than 3 bytes"):
        archives.extract(tmp_path / "many.tar.gz", tmp_path / "out4")
    monkeypatch.setattr(archives, "MAX_BYTES", 100)
    monkeypatch.setattr(archives, "MAX_MEMBERS", 4)
    with pytest.raises(archives.ArchiveError, match="many.tar.gz has more than 4 members"):
        archives.extract(tmp_path / "many.tar.gz", tmp_path / "out5")
    monkeypatch.setattr(archives, "MAX_MEMBERS", 100)
    with tarfile.open(tmp_path / "fifo.tar", "w") as archive:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        archive.addfile(info)
    with pytest.raises(archives.ArchiveError, match="'pipe' is a link or a special file"):
        archives.extract(tmp_path / "fifo.tar", tmp_path / "out3")


def test_extracted_files_have_normal_modes(tmp_path):
    with tarfile.open(tmp_path / "modes.tar", "w") as archive:
        info = tarfile.TarInfo("bin/run.py")
        info.mode, info.size = 0o4777, 2
        archive.addfile(info, io.BytesIO(b"x\n"))
    out = archives.extract(tmp_path / "modes.tar", tmp_path / "out")
    assert oct((out / "bin" / "run.py").stat().st_mode & 0o7777) == "0o644"
    assert oct((out / "bin").stat().st_mode & 0o777) == "0o755"


def test_the_seeded_profile_is_checked_at_collection(toy, tmp_path):
    """Every coursework test, hidden ones included, runs derandomized: a test that asks
    otherwise is refused when the tests are collected."""
    tests = tmp_path / "project" / "tests" / "coursework"
    shutil.copytree(toy.tests, tests)
    shutil.copytree(toy.package, tmp_path / "project" / "minilottery")
    command = [sys.executable, "-m", "pytest", str(tests), "--collect-only", "-q",
               "-p", "no:cacheprovider", "--rootdir", str(tmp_path / "project")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINILOTTERY")}

    def collect(hidden_test=None):
        """(exit status, output) of collecting the toy tests, with ``hidden_test`` added."""
        if hidden_test is not None:
            (tests / "hidden" / "test_1_1_extra.py").write_text(
                "import pytest\nfrom hypothesis import given, settings, strategies as st\n"
                + hidden_test, encoding="utf-8")
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=120)
        return done.returncode, done.stdout + done.stderr

    status, output = collect()
    assert status == 0 and "5 tests collected" in output, output
    status, output = collect("@pytest.mark.exercise_1_1\n@settings(derandomize=False)\n"
                             "@given(st.integers())\ndef test_random(student, a):\n    pass\n")
    assert status != 0
    assert "hidden/test_1_1_extra.py::test_random: hypothesis settings must be derandomized" \
        in output, output
    status, output = collect("@pytest.mark.exercise_1_1\n@pytest.mark.weight(0)\n"
                             "def test_weightless(student):\n    pass\n")
    assert status != 0
    assert "test_weightless: @pytest.mark.weight needs one number > 0, got (0,)" in output, output


def test_an_interrupted_write_leaves_the_old_results(tmp_path, monkeypatch):
    ex = TOY_EXERCISES[0]
    first = {"ann": [classroom.Result(ex, ex.file, True, "", 10.0)]}
    classroom.write_results(tmp_path, first)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def interrupted(source, target):
        raise KeyboardInterrupt
    monkeypatch.setattr(classroom.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        classroom.write_results(tmp_path, {"ann": [classroom.Result(ex, ex.file, False, "x")]})
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
