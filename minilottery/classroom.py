"""Grading: one submission, or a class folder of them, into points, CSV, JSON and feedback.

A *course* is the teacher's project (``Course``): its package (``root/minilottery``),
its exercise tests (``root/tests/coursework``, hidden ones in ``hidden/`` included) and
its registry of exercises. The grader's own modules (coursework.py, grading.py) always
come from this installation. Every exercise of a submission is graded on its own, in
parallel with the others (``jobs`` at a time, over the whole class), by the isolated
runner of minilottery/grading.py.

Points. An exercise is worth ``Exercise.points``, shared among its tests: equally, or
in proportion to ``@pytest.mark.weight(w)`` (w > 0, default 1) on a test, so

    points = Exercise.points * sum(w of the passed tests) / sum(w of all its tests),

counted from the report the tests' process signed; a test that did not report
(the process died) earns nothing. A violated constraint (minilottery/constraints.py)
scores 0. A missing exercise scores 0; the list of exercises and their points come from
the teacher's registry only, so extra notebooks or metadata in a submission add nothing.
A submission, or an exercise's file in it, that is a symbolic link scores 0 (it could
point at the teacher's solution).

A class folder holds one entry per student: a folder (a student copy), a notebook,
a module, or an archive (.zip, .tar, .tar.gz, .tgz; extracted by
minilottery/archives.py); the student's name is the entry's name without its suffix.
``write_results`` writes results.csv (a row per student and exercise), results.json,
scores.csv (a row per student) and feedback/<student>.txt, each atomically.
"""

import concurrent.futures
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from . import archives, constraints, coursework, grading
from .rundir import write_atomic
from .coursework import Exercise


@dataclass(frozen=True)
class Course:
    """The teacher's project: ``root`` holds the package ``minilottery/`` and the
    exercise tests ``tests/coursework/``; ``exercises`` is its registry."""

    root: Path
    exercises: tuple = coursework.EXERCISES

    @property
    def package(self):
        return Path(self.root) / "minilottery"

    @property
    def tests(self):
        return Path(self.root) / "tests" / "coursework"


THIS_COURSE = Course(coursework.PROJECT_ROOT)
GRADER_MODULES = ("coursework.py", "grading.py")   # what the tests' process loads by path


class GradeError(RuntimeError):
    """The submission cannot be graded at all (not a file or copy the grader knows)."""


@dataclass
class Target:
    """One exercise to grade, from the student's file ``source`` (a module, or a notebook
    run against the teacher's package); ``shown`` is the file named in the report."""

    exercise: Exercise
    source: Path
    shown: str
    problem: str = None      # set when the exercise cannot even be run (e.g. a missing file)

    @property
    def notebook(self):
        return self.source is not None and self.source.suffix == ".ipynb"


@dataclass
class Result:
    """One exercise's grade: ``points`` of ``exercise.points``; ``tests`` the signed
    per-test outcomes ({"test", "weight", "outcome", "message"}), empty when the tests
    could not run; ``message`` the first problem, stripped of control sequences."""

    exercise: Exercise
    shown: str
    passed: bool
    message: str = ""
    points: float = 0.0
    tests: list = field(default_factory=list)

    def __post_init__(self):
        self.message = shorten(self.message)
        self.shown = grading.strip_controls(self.shown)


MAX_SHOWN = 500      # characters of a message shown (a student's exception can be huge)


def shorten(message):
    """A message as shown: control sequences stripped, whitespace collapsed, at most
    MAX_SHOWN characters."""
    text = " ".join(grading.strip_controls(message).split())
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def failed(target, message):
    return Result(target.exercise, target.shown, False, message)


# ----------------------------------------------------------------------------
# What to grade in one submission
# ----------------------------------------------------------------------------

def find_targets(submission, course=THIS_COURSE):
    """What to grade in a submission: a student copy (a directory: every exercise of the
    registry, a missing one with its problem), one of its modules, or a notebook."""
    submission = Path(submission).resolve()
    if submission.is_dir():
        return _directory_targets(submission, course)
    if not submission.is_file():
        raise GradeError(f"{submission} does not exist")
    if submission.suffix == ".ipynb":
        ids = coursework.notebook_exercise_cells(coursework.read_notebook(submission))
        targets = [Target(ex, submission, submission.name) for ex in course.exercises
                   if ex.id in ids]
        if not targets:
            raise GradeError(f"{submission.name} has no exercise cells (no cell with "
                             f"minilottery exercise metadata or a BEGIN SOLUTION marker)")
        return targets
    if submission.suffix == ".py":
        exercises = [ex for ex in course.exercises if Path(ex.file).name == submission.name]
        if not exercises:
            modules = sorted({Path(ex.file).name for ex in course.exercises
                              if ex.file.endswith(".py")})
            raise GradeError(f"{submission.name} holds no exercise; the graded modules are "
                             f"{', '.join(modules)}")
        return [Target(ex, submission, submission.name) for ex in exercises]
    raise GradeError(f"{submission.name}: grade a student copy (a directory), a .py module "
                     f"or an .ipynb notebook")


def _directory_targets(root, course):
    """One target per exercise of the teacher's registry, from the file the registry
    names: extra notebooks and extra exercise tags add nothing, a missing file or
    notebook cell scores 0."""
    targets = []
    for ex in course.exercises:
        path = root / ex.file
        if _linked(root, ex.file):
            targets.append(Target(ex, None, ex.file, problem=f"{ex.file} is a symbolic link "
                                                             f"(or lies in a linked folder); "
                                                             f"hand in the file itself"))
        elif not path.is_file():
            targets.append(Target(ex, None, ex.file, problem=f"{ex.file} is missing"))
        elif path.suffix == ".ipynb":
            try:
                found = ex.id in coursework.notebook_exercise_cells(coursework.read_notebook(path))
                problem = None if found else (f"{ex.file} has no cell of exercise {ex.id} "
                                              f"(its cell metadata is gone)")
            except ValueError as error:
                problem = str(error)
            targets.append(Target(ex, path, ex.file, problem=problem))
        else:
            targets.append(Target(ex, path, ex.file))
    return targets


def _linked(root, relative):
    """Whether ``root/relative`` or a folder on the way is a symbolic link (it could point
    at the teacher's solution)."""
    path = root
    for part in Path(relative).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def student_sources(target):
    """The student's Python texts for the exercise, as (text, where) pairs: the module,
    or the notebook's code cells up to the exercise's cell (what the worker runs)."""
    if not target.notebook:
        return [(target.source.read_text(encoding="utf-8", errors="replace"), target.shown)]
    notebook = coursework.read_notebook(target.source)
    last = coursework.notebook_exercise_cells(notebook)[target.exercise.id]
    return [(coursework._python_source(coursework._cell_source(cell)),
             f"{target.shown}, cell {index}")
            for index, cell in enumerate(notebook["cells"][:last], start=1)
            if cell.get("cell_type") == "code"]


# ----------------------------------------------------------------------------
# One exercise, in isolation
# ----------------------------------------------------------------------------

def _teacher_copy(folder, course):
    """A pristine copy of the teacher's package and exercise tests in ``folder``, with
    this installation's grader modules (the tests' conftest loads them by path)."""
    grading.copy_tree(course.package, folder / "minilottery")
    grading.copy_tree(course.tests, folder / "tests" / "coursework")
    for name in GRADER_MODULES:
        shutil.copy2(coursework.PACKAGE_DIR / name, folder / "minilottery" / name)
    return folder


def _registry(course):
    return [{"id": ex.id, "title": ex.title, "file": ex.file, "names": list(ex.names)}
            for ex in course.exercises]


BOOT = ("import ctypes, sys; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); "
        "GRADING_INPUT = sys.stdin.buffer.read().decode().splitlines(); "
        "sys.path.insert(0, sys.argv.pop(1)); import pytest; sys.exit(pytest.main(sys.argv[1:]))")


def run_exercise_tests(target, scratch, timeout, course=THIS_COURSE):
    """Grade one exercise in isolation (see minilottery/grading.py): the teacher's tests,
    in a process of the teacher's code, call the student's functions in a worker built
    from the teacher's package with only this exercise's functions swapped in. The
    verdict comes from the signed report of the tests' process, nothing else."""
    ex = target.exercise
    if target.problem:
        return failed(target, target.problem)
    try:
        problems = constraints.violations(ex.constraint, student_sources(target), ex.names)
    except (OSError, ValueError) as error:
        return failed(target, str(error))
    if problems:
        return failed(target, constraints.message(ex.constraint, problems))
    work = Path(tempfile.mkdtemp(prefix=f"grade-{ex.marker}-", dir=scratch))
    teacher = _teacher_copy(work / "teacher", course)
    tree = grading.copy_tree(course.package, work / "tree" / "minilottery").parent
    spec = {"tree": str(tree), "exercise": ex.id, "names": list(ex.names), "module": ex.module,
            "notebook": None, "token": grading.secrets.token_hex(16), "scratch": str(work),
            "constraint": ex.constraint, "registry": _registry(course)}
    try:
        if target.notebook:
            spec["notebook"] = str(shutil.copy(target.source, work / target.source.name))
        else:
            teacher_text = (Path(course.root) / ex.file).read_text(encoding="utf-8")
            student_text = target.source.read_text(encoding="utf-8", errors="replace")
            (tree / ex.file).write_text(grading.splice(teacher_text, student_text, ex.names,
                                                       target.shown, ex.id), encoding="utf-8")
    except grading.SubmissionError as error:
        return failed(target, str(error))
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    secret = grading.new_secret()
    command = [sys.executable, "-I", "-c", BOOT, str(teacher), str(teacher / "tests" / "coursework"),
               "-m", ex.marker, "-q", "--tb=line", "-p", "no:cacheprovider",
               "-c", str(work / "pytest.ini"), "--rootdir", str(work)]
    read_end, write_end = os.pipe()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "NUMBA_CACHE_DIR": str(work / "numba"), "MINILOTTERY_GRADING": "1",
           "MINILOTTERY_REPORT_FD": str(write_end), "MINILOTTERY_TIMEOUT": f"{timeout:g}"}
    tests = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    chunks = []

    def read_all():
        while True:
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                return
            chunks.append(chunk)
    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        output, _ = tests.communicate(f"{secret.hex()}\n{json.dumps(spec)}\n".encode(),
                                      timeout=timeout * 4 + 30)
    except subprocess.TimeoutExpired:
        return failed(target, f"timed out after {timeout:g} s (an endless loop? a very slow "
                              f"implementation?)")
    finally:
        grading.kill_session(tests.pid, spec["token"])
        reader.join(5)
        os.close(read_end)
        shutil.rmtree(work, ignore_errors=True)
    return verdict(target, b"".join(chunks), secret, spec["token"], output)


def _signed_report(raw, secret, token):
    """The report of the tests' process if its signature and token are right, else None."""
    try:
        message = json.loads(raw.decode("utf-8"))
        payload = message["payload"]
        if not grading.hmac.compare_digest(message["mac"], grading.sign(secret, payload.encode())):
            return None
        report = json.loads(payload)
        return report if report["token"] == token and isinstance(report["tests"], list) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def verdict(target, raw, secret, token, output):
    """Points from the signed report ``raw``; ``output`` (the tests' process's output,
    which the student's code may have written) is only shown when there is no report."""
    ex = target.exercise
    report = _signed_report(raw, secret, token)
    if report is None:
        lines = output.decode("utf-8", errors="replace").strip().splitlines()
        errors = [line.strip() for line in lines if re.search(r"Error\b|error:", line)]
        return failed(target, f"the tests could not run: {errors[-1]}" if errors else
                      "the tests' process ended without a signed report (killed?)")
    tests = report["tests"]
    if not tests:
        return failed(target, f"no test of marker {ex.marker} ran")
    if report.get("constraint"):
        return Result(ex, target.shown, False, constraints.message(ex.constraint,
                                                                   report["constraint"]),
                      tests=tests)
    total = sum(Fraction(str(test["weight"])) for test in tests)
    earned = sum(Fraction(str(test["weight"])) for test in tests if test["outcome"] == "passed")
    points = float(ex.points * earned / total) if total else 0.0
    # the first problem shown: a visible test's before a hidden one's
    problems = sorted((test for test in tests if test["outcome"] != "passed"), key=is_hidden)
    message = ""
    if problems:
        first = problems[0]
        message = first["message"] or f"{first['test']}: {first['outcome']}"
    return Result(ex, target.shown, not problems, message, points, tests)


def _check_course(course):
    if not course.tests.is_dir():
        raise GradeError(f"the exercise tests are missing: expected them in {course.tests}")
    for ex in course.exercises:
        constraints.describe(ex.constraint)


def _fingerprint(course):
    return grading.digest(course.package), grading.digest(course.tests)


def _run_all(tasks, scratch, timeout, jobs, course):
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda t: run_exercise_tests(t, scratch, timeout, course), tasks))


def grade(submission, *, timeout=90.0, jobs=2, course=THIS_COURSE):
    """Grade one submission (a copy, a module, a notebook or an archive of one): a
    Result per exercise found in it, in registry order."""
    _check_course(course)
    submission = Path(submission).resolve()
    before = _fingerprint(course)
    with tempfile.TemporaryDirectory(prefix="minilottery-grade-") as scratch:
        scratch = Path(scratch)
        if archives.is_archive(submission):
            try:
                submission = _unpacked(archives.extract(submission, scratch / "unpacked"), course)
            except archives.ArchiveError as error:
                raise GradeError(str(error)) from None
        (scratch / "work").mkdir()
        results = _run_all(find_targets(submission, course), scratch / "work", timeout, jobs,
                           course)
    _unchanged(course, before)
    return results


def _unchanged(course, before):
    if _fingerprint(course) != before:
        raise GradeError(f"the teacher's package or tests ({course.package}, {course.tests}) "
                         f"changed while grading: no verdict; restore them from git")


# ----------------------------------------------------------------------------
# A class folder
# ----------------------------------------------------------------------------

SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar", ".ipynb", ".py")


def student_name(path):
    """alice.tar.gz -> alice, bob.ipynb -> bob, dave.txt -> dave, carol/ -> carol."""
    path = Path(path)
    for suffix in SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return path.stem if path.is_file() else path.name


def is_submission(path, course=THIS_COURSE):
    """Whether ``path`` is one student's submission (a file, or a copy holding a file the
    registry names), rather than a class folder."""
    path = Path(path)
    return path.is_file() or (path / "minilottery").is_dir() or \
        any((path / ex.file).exists() for ex in course.exercises)


def class_entries(folder):
    """{student: entry} for a class folder (hidden entries skipped), sorted by name."""
    entries = {}
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        name = student_name(entry)
        if name in entries:
            raise GradeError(f"two submissions for {name!r}: {entries[name].name} and "
                             f"{entry.name}; keep one")
        entries[name] = entry
    return entries


def _unpacked(folder, course):
    """What to grade in an extracted archive: the folder itself if it is a copy, else
    the one file or folder at its top (alice.zip holding alice/ or alice.ipynb)."""
    top = [entry for entry in folder.iterdir() if not entry.name.startswith(("__MACOSX", "."))]
    return top[0] if len(top) == 1 and not is_submission(folder, course) else folder


def _student_targets(entry, unpack_dir, course):
    """The targets of one class entry, one per exercise of the registry (an exercise not
    in the submission, or a submission that cannot be read, gives a target with its
    problem)."""
    try:
        if entry.is_symlink():
            raise GradeError(f"{entry.name} is a symbolic link; hand in the submission itself")
        if archives.is_archive(entry):
            entry = _unpacked(archives.extract(entry, unpack_dir), course)
        elif not (entry.is_dir() or entry.suffix in (".ipynb", ".py")):
            raise GradeError(f"{entry.name} is not a submission: hand in a folder, a notebook, "
                             f"a module or a .zip/.tar/.tar.gz archive")
        found = {target.exercise.id: target for target in find_targets(entry, course)}
    except (GradeError, archives.ArchiveError, ValueError, OSError) as error:
        message = grading.strip_controls(str(error))
        return [Target(ex, None, ex.file, problem=message) for ex in course.exercises]
    return [found.get(ex.id) or Target(ex, None, ex.file,
                                       problem=f"exercise {ex.id} is not in the submission")
            for ex in course.exercises]


def grade_class(folder, *, timeout=90.0, jobs=2, course=THIS_COURSE):
    """Grade every submission of a class folder: {student: [Result per exercise]}."""
    _check_course(course)
    entries = class_entries(folder)
    before = _fingerprint(course)
    with tempfile.TemporaryDirectory(prefix="minilottery-class-") as scratch:
        scratch = Path(scratch)
        tasks = {name: _student_targets(entry, scratch / "unpacked" / str(i), course)
                 for i, (name, entry) in enumerate(entries.items())}
        flat = [target for targets in tasks.values() for target in targets]
        (scratch / "work").mkdir()
        results = iter(_run_all(flat, scratch / "work", timeout, jobs, course))
        graded = {name: [next(results) for _ in targets] for name, targets in tasks.items()}
    _unchanged(course, before)
    return graded


# ----------------------------------------------------------------------------
# Reports: text, CSV, JSON, feedback
# ----------------------------------------------------------------------------

def show_points(value):
    """Points as shown: at most two decimals, no trailing zeros (6.67, 10, 0)."""
    return f"{round(value + 0.0, 2):g}"


def format_report(results):
    lines = []
    for result in results:
        verdict = "PASS" if result.passed else "FAIL"
        ex = result.exercise
        lines.append(f"{verdict}  {ex.id}  {ex.title}  [{result.shown}]  "
                     f"{show_points(result.points)}/{ex.points}")
        if not result.passed:
            lines.append(f"      {result.message}")
    passed = sum(result.passed for result in results)
    lines.append(f"Score: {passed}/{len(results)} exercises pass")
    lines.append(f"Points: {show_points(sum(r.points for r in results))}/"
                 f"{sum(r.exercise.points for r in results)}")
    return "\n".join(lines)


HIDDEN_WITHHELD = "a hidden test failed (its name and message are not shown)"


def is_hidden(test):
    """True for an outcome of a test in tests/coursework/hidden/."""
    return test["test"].startswith("hidden/")


def feedback(student, results):
    """A student's readable report: per exercise the points, the first problem, and
    every test's outcome. It is written for the student, so a hidden test is shown
    only as "hidden test K" with its outcome: its name and message (which may hold
    the expected answer) stay in results.csv and results.json, for the teacher."""
    total = show_points(sum(r.points for r in results))
    lines = [f"Coursework feedback for {grading.strip_controls(student)}",
             f"Total: {total} of {sum(r.exercise.points for r in results)} points", ""]
    for result in results:
        ex = result.exercise
        lines.append(f"Exercise {ex.id}: {ex.title} ({result.shown})")
        lines.append(f"  {show_points(result.points)} of {ex.points} points")
        hidden_messages = {test["message"] or f"{test['test']}: {test['outcome']}"
                           for test in result.tests if is_hidden(test)}
        if result.message:
            visible_failed = any(not is_hidden(test) and test["outcome"] != "passed"
                                 for test in result.tests)
            withheld = result.message in hidden_messages and not visible_failed
            lines.append(f"  {HIDDEN_WITHHELD if withheld else result.message}")
        hidden = 0
        for test in result.tests:
            if is_hidden(test):
                hidden += 1
                lines.append(f"    {test['outcome']:8} hidden test {hidden}")
                continue
            message = shorten(test["message"])
            lines.append(f"    {test['outcome']:8} {test['test']}"
                         + (f": {message}" if message else ""))
        lines.append("")
    return "\n".join(lines)


def _write_text(path, text):
    """``text`` to ``path`` atomically (rundir.write_atomic): a reader sees the old
    file or the new one, never a part."""
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def _csv(rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def safe_file_name(student):
    """A student's name as a file name: no control characters, no path separators."""
    return re.sub(r"[/\\]", "_", grading.strip_controls(student)).lstrip(".") or "student"


def write_results(out_dir, graded):
    """results.csv, results.json, scores.csv and feedback/<student>.txt in ``out_dir``
    for {student: [Result]}; returns the paths written."""
    out = Path(out_dir)
    written = []
    for student, results in graded.items():
        path = out / "feedback" / f"{safe_file_name(student)}.txt"
        _write_text(path, feedback(student, results))
        written.append(path)
    rows = [["student", "exercise", "points", "max_points", "message"]]
    scores = [["student", "points", "max_points"]]
    nested = []
    for student, results in graded.items():
        shown_student = grading.strip_controls(student)
        for r in results:
            rows.append([shown_student, r.exercise.id, show_points(r.points), r.exercise.points,
                         r.message])
        total, top = sum(r.points for r in results), sum(r.exercise.points for r in results)
        scores.append([shown_student, show_points(total), top])
        nested.append({"student": shown_student, "points": round(total, 2), "max_points": top,
                       "exercises": [{"exercise": r.exercise.id, "title": r.exercise.title,
                                      "file": r.shown, "points": round(r.points, 2),
                                      "max_points": r.exercise.points, "message": r.message,
                                      "tests": [{**t, "message": shorten(t["message"])}
                                                for t in r.tests]}
                                     for r in results]})
    for name, text in (("results.json", json.dumps({"students": nested}, indent=1) + "\n"),
                       ("results.csv", _csv(rows)), ("scores.csv", _csv(scores))):
        _write_text(out / name, text)
        written.append(out / name)
    return written
