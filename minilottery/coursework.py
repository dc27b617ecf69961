"""Coursework: student versions of the package and the tutorials, and an autograder.

A teacher writes each solution once, in place, between two comment lines,
``### BEGIN SOLUTION 2.3`` (the exercise id) and ``### END SOLUTION``, each
alone on its line at the indentation of the code it encloses (see
conv2d_backward in reference.py). The markers are plain comments, so the
package runs unchanged with them in place. Everything else is generated from
that one source:

    python -m minilottery.coursework list               the exercises
    python -m minilottery.coursework build OUT_DIR      the student copy: every block replaced by
                                                        raise NotImplementedError("Exercise 2.3: ...")
    python -I -m minilottery.coursework grade SUBMISSION
                                                        grade a student's copy, module or
                                                        notebook; print a score

Grading never runs the student's code in the grading process, never trusts a file
or an exit status the student's code could write, and grades each exercise with the
teacher's solution of every other exercise in place: minilottery/grading.py says
how, and what this does not protect against. Run the grader with ``-I`` from the
teacher's installation (``python -I`` keeps the current directory off sys.path, so
grading from inside a submission cannot import the submission's copy of the grader).

The module reads top to bottom: 1. the registry of exercises, 2. stripping a
source (a module or a notebook) down to its student version, 3. building the
student copy, 4. loading a student's implementation (what the exercise tests
call), 5. grading, 6. the command line.

The exercise tests are ordinary pytest tests in tests/coursework/, one marker
per exercise (``exercise_2_3``), so a teacher can run one alone:

    python -m pytest tests/coursework -m exercise_2_3

This module uses only the standard library: the tests' conftest loads it by
file path, so it must work even when a student's copy of the package does not.
"""

import argparse
import atexit
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
from dataclasses import dataclass
from pathlib import Path

try:
    from . import grading
except ImportError:       # loaded by file path (the tests' conftest, the grader's worker)
    import importlib.util
    _spec = importlib.util.spec_from_file_location(
        "_minilottery_grading_for_tests", Path(__file__).resolve().parent / "grading.py")
    grading = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
    if not hasattr(grading, "Worker"):
        _spec.loader.exec_module(grading)

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent                  # the copy this module belongs to
TESTS_DIR = PROJECT_ROOT / "tests" / "coursework"  # the exercise tests, next to the package


# ----------------------------------------------------------------------------
# 1. The registry
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """One exercise: ``id`` "2.3" is tutorial 2's third; its solution block lives in
    ``file`` (relative to the project root) and defines the functions ``names``,
    which its tests (pytest marker ``marker``) call. ``points`` are its full marks;
    ``constraint`` names a stated requirement on the implementation ("loops": written
    with Python loops, no vectorised shortcut; "numba": a Numba-compiled kernel)."""

    id: str
    title: str
    file: str      # a module (minilottery/....py) or a tutorial (tutorials/....ipynb)
    names: tuple
    points: int = 10          # the exercise's full marks, shared among its tests
    constraint: str = ""      # what the implementation must be, checked: "loops", "numba" or ""

    @property
    def marker(self):
        return "exercise_" + self.id.replace(".", "_")

    @property
    def module(self):
        """The dotted module name of a .py file: minilottery/reference.py -> minilottery.reference
        (meaningless for a notebook exercise)."""
        return self.file[:-len(".py")].replace("/", ".")

    @property
    def stub_message(self):
        return f"Exercise {self.id}: {self.title}"


EXERCISES = (
    Exercise("1.1", "Dense backward: dx, dW, db from x, W and dout",
             "tutorials/01-layers-by-hand.ipynb", ("dense_backward",)),
    Exercise("1.2", "ReLU backward: dout where x > 0, else 0",
             "tutorials/01-layers-by-hand.ipynb", ("relu_backward",)),
    Exercise("1.3", "softmax cross-entropy: the stable loss and its gradient p - onehot(y)",
             "minilottery/losses.py", ("softmax_cross_entropy",)),
    Exercise("2.1", "convolution forward, with loops",
             "minilottery/reference.py", ("conv2d_forward",), constraint="loops"),
    Exercise("2.2", "im2col: every receptive field as a column",
             "minilottery/reference.py", ("im2col",)),
    Exercise("2.3", "convolution backward, with loops (dx, dW, db)",
             "minilottery/reference.py", ("conv2d_backward",), constraint="loops"),
    Exercise("2.4", "max-pooling forward: the maximum of each window",
             "minilottery/reference.py", ("maxpool2d_forward",), constraint="loops"),
    Exercise("2.5", "max-pooling backward: dout to each window's first maximum",
             "minilottery/reference.py", ("maxpool2d_backward",), constraint="loops"),
    Exercise("3.1", "the masked SGD update with momentum (a Numba kernel)",
             "minilottery/optim.py", ("sgd_update",), constraint="numba"),
    Exercise("3.2", "the masked Adam update (a Numba kernel)",
             "minilottery/optim.py", ("adam_update",), constraint="numba"),
    Exercise("3.3", "the early-stop iteration: the first minimum of the validation loss",
             "minilottery/train.py", ("early_stop_index",)),
    Exercise("4.1", "the magnitude mask: which survivors to prune",
             "minilottery/pruning.py", ("_smallest_survivors",)),
    Exercise("5.1", "reset the survivors to theta_0: the winning ticket",
             "minilottery/lottery.py", ("prepare_model",)),
    Exercise("5.2", "random pruning: a random mask with each layer's count of survivors",
             "minilottery/pruning.py", ("random_masks_like",)),
    Exercise("6.1", "dropout forward: keep where u >= p, scale by 1 / (1 - p)",
             "minilottery/layers.py", ("dropout_forward",)),
    Exercise("6.2", "dropout backward: the gradient through the kept entries",
             "minilottery/layers.py", ("dropout_backward",)),
    Exercise("7.1", "rewinding: start from theta_k instead of theta_0",
             "minilottery/lottery.py", ("start_weights",)),
    Exercise("8.1", "BatchNorm forward: each channel's batch mean and variance (a Numba kernel)",
             "minilottery/normalization.py", ("batch_statistics",), constraint="numba"),
    Exercise("8.2", "BatchNorm backward: dx, dgamma, dbeta (a Numba kernel)",
             "minilottery/normalization.py", ("batchnorm_backward",), constraint="numba"),
    Exercise("8.3", "global pruning: one magnitude ranking across layers",
             "minilottery/pruning.py", ("prune_globally",)),
)
BY_ID = {exercise.id: exercise for exercise in EXERCISES}


def exercise(exercise_id):
    try:
        return BY_ID[exercise_id]
    except KeyError:
        raise ValueError(f"unknown exercise {exercise_id!r}; the exercises are "
                         f"{', '.join(BY_ID)}") from None


# ----------------------------------------------------------------------------
# 2. Strip: a source and its student version
# ----------------------------------------------------------------------------

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+(?P<id>\S+))?[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
LOOKS_LIKE_A_MARKER = re.compile(r"^\s*#+\s*(BEGIN|END)\s+SOLUTION", re.IGNORECASE)


class MarkerError(ValueError):
    """A malformed solution block (names the file and line)."""


@dataclass
class Block:
    """One solution block: its exercise id, where it starts (1-based line of the
    BEGIN marker), its indentation and its solution lines (without the markers)."""

    id: str
    line: int
    indent: str
    lines: list


def find_blocks(text, where):
    """The solution blocks of a source text, checked: every BEGIN names an exercise
    of the registry and is closed by an END before the next BEGIN."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if current is not None:
                raise MarkerError(f"{where}, line {number}: BEGIN SOLUTION inside the block "
                                  f"opened on line {current.line}; close it with ### END SOLUTION")
            if begin["id"] is None:
                raise MarkerError(f"{where}, line {number}: BEGIN SOLUTION needs an exercise id, "
                                  f"e.g. '### BEGIN SOLUTION 2.3'")
            if begin["id"] not in BY_ID:
                raise MarkerError(f"{where}, line {number}: exercise {begin['id']!r} is not in "
                                  f"the registry (EXERCISES in minilottery/coursework.py holds "
                                  f"{', '.join(BY_ID)})")
            current = Block(begin["id"], number, begin["indent"], [])
        elif end:
            if current is None:
                raise MarkerError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
        elif LOOKS_LIKE_A_MARKER.match(line):
            raise MarkerError(f"{where}, line {number}: malformed solution marker {line.strip()!r}; "
                              f"write '### BEGIN SOLUTION 2.3' or '### END SOLUTION', alone "
                              f"on the line")
    if current is not None:
        raise MarkerError(f"{where}, line {current.line}: BEGIN SOLUTION {current.id} is never "
                          f"closed by ### END SOLUTION")
    return blocks


def stub_line(block):
    """What replaces a block: one line, at the block's indentation, that raises."""
    message = json.dumps(exercise(block.id).stub_message, ensure_ascii=False)
    return f"{block.indent}raise NotImplementedError({message})"


def strip_text(text, where):
    """The student version of a source text: each block, markers included, becomes
    its stub line. Returns (student text, blocks)."""
    blocks = find_blocks(text, where)
    if not blocks:
        return text, blocks
    out, inside = [], False
    starts = {block.line: block for block in blocks}
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if number in starts:
            out.append(stub_line(starts[number]) + "\n")
            inside = True
        elif inside:
            inside = not END.match(line)
        else:
            out.append(line)
    return "".join(out), blocks


# Notebooks are JSON: a list of cells, each with a "source" (a string or a list of
# lines). A code cell holding a block is stripped like a module; it also gets the
# exercise ids in its metadata, which survive the student's editing, so the
# grader finds the exercise cells of a filled-in notebook that has no markers left.

def _cell_source(cell):
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def read_notebook(path):
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable notebook: {error}") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is not a notebook (no list of cells)")
    return notebook


def strip_notebook(notebook, where):
    """The student version of a notebook (a new dict) and its blocks."""
    student = json.loads(json.dumps(notebook))
    all_blocks = []
    for index, cell in enumerate(student["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        text, blocks = strip_text(_cell_source(cell), f"{where}, cell {index}")
        if blocks:
            cell["source"] = text.splitlines(keepends=True)
            cell["outputs"] = []               # outputs could show the solution's results
            cell["execution_count"] = None
            cell.setdefault("metadata", {})["minilottery"] = {
                "exercises": [block.id for block in blocks]}
            all_blocks += blocks
    return student, all_blocks


def notebook_exercise_cells(notebook):
    """{exercise id: 1-based index of the code cell holding it}, from the markers of a
    solution notebook or the metadata of a student's."""
    cells = {}
    for index, cell in enumerate(notebook["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        ids = cell.get("metadata", {}).get("minilottery", {}).get("exercises", [])
        ids = list(ids) + [m["id"] for m in map(BEGIN.match, _cell_source(cell).splitlines())
                           if m and m["id"]]
        for exercise_id in ids:
            cells.setdefault(exercise_id, index)
    return cells


def write_notebook(path, notebook):
    Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                          encoding="utf-8")


# ----------------------------------------------------------------------------
# 3. Build the student copy
# ----------------------------------------------------------------------------

class BuildError(RuntimeError):
    pass


SKIPPED = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis"}
SKIPPED_SUFFIXES = (".pyc", ".nbi", ".nbc")   # bytecode and Numba's cache


def _files(root):
    for path in sorted(root.rglob("*")):
        if path.is_file() and not SKIPPED.intersection(path.relative_to(root).parts) \
                and not path.name.endswith(SKIPPED_SUFFIXES):
            yield path


def build(out_dir, source_root=PROJECT_ROOT):
    """Write the student copy of ``source_root`` to ``out_dir`` (which must not exist or be
    empty): the package and the tutorials with every solution block stubbed, the exercise
    tests, the data, the packaging files and a hand-out README. Built in a temporary
    directory beside ``out_dir`` and renamed into place, so a failure leaves nothing.
    Returns {exercise id: [files holding its block]}."""
    source_root, out = Path(source_root), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BuildError(f"{out} exists and is not an empty directory; choose a new "
                         f"OUT_DIR (nothing was written)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        found = {}
        for folder in ("minilottery", "tutorials", "tests/coursework", "data"):
            if (source_root / folder).is_dir():
                for path in _files(source_root / folder):
                    relative = path.relative_to(source_root).as_posix()
                    for block in _copy_student_version(path, staging / relative, relative):
                        found.setdefault(block.id, []).append(relative)
        for name in ("setup.cfg", "pyproject.toml"):
            if (source_root / name).is_file():
                shutil.copy2(source_root / name, staging / name)
        for ex in EXERCISES:
            if ex.file not in found.get(ex.id, []):
                raise BuildError(f"exercise {ex.id}: no ### BEGIN SOLUTION {ex.id} block in "
                                 f"{ex.file} (the file the registry names)")
            if len(found[ex.id]) != len(set(found[ex.id])):
                raise BuildError(f"exercise {ex.id}: more than one block in one file")
        (staging / "README.md").write_text(handout_readme(found), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return found


def _copy_student_version(source, target, where):
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".py":
        text, blocks = strip_text(source.read_text(encoding="utf-8"), where)
        target.write_text(text, encoding="utf-8")
    elif source.suffix == ".ipynb":
        notebook, blocks = strip_notebook(read_notebook(source), where)
        write_notebook(target, notebook)
    else:
        shutil.copy2(source, target)
        blocks = []
    return blocks


def handout_readme(found):
    rows = "\n".join(f"| {ex.id} | {ex.title} | {', '.join(f'`{f}`' for f in found[ex.id])} "
                     f"| `{ex.marker}` |" for ex in EXERCISES)
    return f"""# minilottery coursework

This is your copy of minilottery, a NumPy + Numba framework that finds lottery
tickets (Frankle & Carbin 2019). It runs, except for {len(EXERCISES)} pieces that you write.
Each one is a line

    raise NotImplementedError("Exercise 2.3: ...")

in the file below. Replace that line with your code; the docstring above it
states what to compute.

| Exercise | What you write | File | Test marker |
|---|---|---|---|
{rows}

## Check your work

From this directory:

    python -m minilottery.coursework grade .                          # every exercise, and a score
    python -m minilottery.coursework grade minilottery/reference.py   # the exercises of one file
    python -m pytest tests/coursework -m exercise_2_3                 # one exercise, full pytest output

The grader prints PASS or FAIL per exercise with the first failing check
(expected vs got) and exits with status 0 only when every exercise passes.

## What to hand in

The files of the table, as they are in this copy: only the functions named
there are graded, each on its own, with the teacher's version of everything
else (other functions, other files, the tests). Edit only those functions
(in a notebook, the exercise's cell, keeping its metadata); a syntax error
in one of them fails that exercise alone.
To step through a Numba kernel in plain Python, set NUMBA_DISABLE_JIT=1.
"""


# ----------------------------------------------------------------------------
# 4. A student's implementation: what the exercise tests call
# ----------------------------------------------------------------------------

class ImplementationError(Exception):
    """The student's code could not be loaded (a syntax error, a cell that raises,
    a missing function); the message says where."""


def _python_source(cell_text):
    """A notebook cell as plain Python: IPython magics and shell lines (% and !) become comments."""
    return "".join("# " + line if line.lstrip().startswith(("%", "!")) else line
                   for line in cell_text.splitlines(keepends=True))


def run_notebook(path, exercise_id, workdir=None, before_run=None):
    """Execute the code cells of a notebook, in order, up to and including the cell of
    exercise ``exercise_id``, in one fresh namespace; return the namespace.

    Each cell is written to a file first (so tracebacks show its lines and Numba's
    cache=True works) and run with __name__ == "__main__", as Jupyter does. A cell
    that stops on the stub of *another* exercise (say the check cell of exercise 1.1,
    run while grading 1.2), another exercise's own cell that does not compile or
    raises, and a cell that misses a function of another exercise (a NameError) count
    as run: each exercise is graded on its own. ``before_run()``, if given, is called
    once every cell file is written, before the first cell runs (the grader's worker
    forbids file writes there)."""
    path = Path(path)
    notebook = read_notebook(path)
    cells = notebook_exercise_cells(notebook)
    if exercise_id not in cells:
        raise ImplementationError(f"{path.name} holds no cell of exercise {exercise_id}")
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="minilottery-notebook-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    workdir = Path(workdir)
    namespace = {"__name__": "__main__"}
    other_stubs = {ex.stub_message for ex in EXERCISES if ex.id != exercise_id}
    other_cells = {index for other, index in cells.items() if other != exercise_id}
    other_names = {name for ex in EXERCISES if ex.id != exercise_id for name in ex.names}
    cell_files = {}
    for index, cell in enumerate(notebook["cells"][:cells[exercise_id]], start=1):
        if cell.get("cell_type") == "code":
            cell_files[index] = workdir / f"{path.stem}_cell{index:03d}.py"
            cell_files[index].write_text(_python_source(_cell_source(cell)), encoding="utf-8")
    if before_run is not None:
        before_run()
    for index, cell_file in cell_files.items():
        another = index in other_cells    # another exercise's cell: its errors are not ours
        try:
            code = compile(cell_file.read_text(encoding="utf-8"), str(cell_file), "exec")
        except SyntaxError as error:
            if another:
                continue
            raise ImplementationError(f"{path.name}, cell {index}: SyntaxError: {error.msg} "
                                      f"(line {error.lineno} of the cell)") from None
        try:
            exec(code, namespace)
        except Exception as error:
            if another or (isinstance(error, NotImplementedError) and str(error) in other_stubs) \
                    or (isinstance(error, NameError) and getattr(error, "name", None) in other_names):
                continue
            raise ImplementationError(f"{path.name}, cell {index} raised "
                                      f"{type(error).__name__}: {error}") from error
    return namespace


_loaded = {}


def load_implementation(exercise_id):
    """The functions a student wrote for an exercise, as attributes of a namespace.

    From the notebook named by the environment variable MINILOTTERY_NOTEBOOK when the
    grader sets it, else from the exercise's own file: a tutorial of this project, or
    a module imported the ordinary way (so PYTHONPATH decides whose package it is).
    Raises ImplementationError naming what is wrong; the result (or the error) is
    cached, so a notebook runs once per process."""
    ex = exercise(exercise_id)
    notebook = os.environ.get("MINILOTTERY_NOTEBOOK")
    key = (exercise_id, notebook)
    if key not in _loaded:
        try:
            _loaded[key] = _load(ex, notebook)
        except ImplementationError as error:
            _loaded[key] = error
    if isinstance(_loaded[key], ImplementationError):
        raise _loaded[key]
    return _loaded[key]


def _load(ex, notebook):
    if not notebook and ex.file.endswith(".ipynb"):
        notebook = str(PROJECT_ROOT / ex.file)
    if notebook:
        namespace, where = run_notebook(notebook, ex.id), Path(notebook).name
    else:
        import importlib
        try:
            module = importlib.import_module(ex.module)
        except Exception as error:
            raise ImplementationError(f"importing {ex.module} failed: "
                                      f"{type(error).__name__}: {error}") from error
        namespace, where = vars(module), ex.file
    missing = [name for name in ex.names if not callable(namespace.get(name))]
    if missing:
        raise ImplementationError(f"{where} defines no function {', '.join(missing)} "
                                  f"(exercise {ex.id} asks for {', '.join(ex.names)})")
    return types.SimpleNamespace(**{name: namespace[name] for name in ex.names})


# ----------------------------------------------------------------------------
# 5. Grade
# ----------------------------------------------------------------------------

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
    exercise: Exercise
    shown: str
    passed: bool
    message: str = ""


class GradeError(RuntimeError):
    """The submission cannot be graded at all (not a file or copy the grader knows)."""


def find_targets(submission, scratch=None):
    """What to grade in a submission: a student copy (a directory: every exercise of the
    registry, a missing one with its problem), one of its modules, or a notebook."""
    submission = Path(submission).resolve()
    if submission.is_dir():
        return _directory_targets(submission)
    if not submission.is_file():
        raise GradeError(f"{submission} does not exist")
    if submission.suffix == ".ipynb":
        ids = notebook_exercise_cells(read_notebook(submission))
        targets = [Target(BY_ID[i], submission, submission.name) for i in sorted(ids) if i in BY_ID]
        if not targets:
            raise GradeError(f"{submission.name} has no exercise cells (no cell with "
                             f"minilottery exercise metadata or a BEGIN SOLUTION marker)")
        return targets
    if submission.suffix == ".py":
        exercises = [ex for ex in EXERCISES if Path(ex.file).name == submission.name]
        if not exercises:
            raise GradeError(f"{submission.name} holds no exercise; the graded modules are "
                             f"{', '.join(sorted({Path(ex.file).name for ex in EXERCISES if ex.file.endswith('.py')}))}")
        return [Target(ex, submission, submission.name) for ex in exercises]
    raise GradeError(f"{submission.name}: grade a student copy (a directory), a .py module "
                     f"or an .ipynb notebook")


def _directory_targets(root):
    """One target per exercise of the teacher's registry, from the file the registry
    names: extra notebooks and extra exercise tags add nothing, a missing file or
    notebook cell scores 0."""
    targets = []
    for ex in EXERCISES:
        path = root / ex.file
        if not path.is_file():
            targets.append(Target(ex, None, ex.file, problem=f"{ex.file} is missing"))
        elif path.suffix == ".ipynb":
            try:
                found = ex.id in notebook_exercise_cells(read_notebook(path))
                problem = None if found else (f"{ex.file} has no cell of exercise {ex.id} "
                                              f"(its cell metadata is gone)")
            except ValueError as error:
                problem = str(error)
            targets.append(Target(ex, path, ex.file, problem=problem))
        else:
            targets.append(Target(ex, path, ex.file))
    return targets


def _teacher_copy(folder):
    """A pristine copy of the teacher's package and exercise tests in ``folder``."""
    grading.copy_tree(PACKAGE_DIR, folder / "minilottery")
    grading.copy_tree(TESTS_DIR, folder / "tests" / "coursework")
    return folder


def run_exercise_tests(target, scratch, timeout):
    """Grade one exercise in isolation (see minilottery/grading.py): the teacher's tests,
    in a process of the teacher's code, call the student's functions in a worker built
    from the teacher's package with only this exercise's functions swapped in. The
    verdict comes from the signed report of the tests' process, nothing else."""
    ex = target.exercise
    if target.problem:
        return Result(ex, target.shown, False, target.problem)
    work = Path(tempfile.mkdtemp(prefix=f"grade-{ex.marker}-", dir=scratch))
    teacher = _teacher_copy(work / "teacher")
    tree = grading.copy_tree(PACKAGE_DIR, work / "tree" / "minilottery").parent
    spec = {"tree": str(tree), "exercise": ex.id, "names": list(ex.names), "module": ex.module,
            "notebook": None, "token": grading.secrets.token_hex(16), "scratch": str(work)}
    try:
        if target.notebook:
            spec["notebook"] = str(shutil.copy(target.source, work / target.source.name))
        else:
            teacher_text = (PACKAGE_DIR.parent / ex.file).read_text(encoding="utf-8")
            student_text = target.source.read_text(encoding="utf-8", errors="replace")
            (tree / ex.file).write_text(grading.splice(teacher_text, student_text, ex.names,
                                                       target.shown, ex.id), encoding="utf-8")
    except grading.SubmissionError as error:
        return Result(ex, target.shown, False, str(error))
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    secret = grading.new_secret()
    # Non-dumpable first, then the secret: the tests' conftest finds it in __main__.
    boot = ("import ctypes, sys; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); "
            "GRADING_INPUT = sys.stdin.buffer.read().decode().splitlines(); "
            "sys.path.insert(0, sys.argv.pop(1)); import pytest; sys.exit(pytest.main(sys.argv[1:]))")
    command = [sys.executable, "-I", "-c", boot, str(teacher), str(teacher / "tests" / "coursework"),
               "-m", ex.marker, "-q", "-p", "no:cacheprovider", "-c", str(work / "pytest.ini"),
               "--rootdir", str(work)]
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
        return Result(ex, target.shown, False,
                      f"timed out after {timeout:g} s (an endless loop? a very slow implementation?)")
    finally:
        grading.kill_session(tests.pid, spec["token"])
        reader.join(5)
        os.close(read_end)
    return _verdict(target, b"".join(chunks), secret, spec["token"], output)


def _verdict(target, raw, secret, token, output):
    ex = target.exercise
    try:
        message = json.loads(raw.decode("utf-8"))
        payload = message["payload"]
        good = grading.hmac.compare_digest(message["mac"], grading.sign(secret, payload.encode()))
        report = json.loads(payload) if good else None
        tests = report["tests"] if report and report["token"] == token else None
    except (ValueError, KeyError, TypeError, AttributeError):
        tests = None
    if tests is None:   # the tests' process gave no valid report: show its last error line
        lines = output.decode("utf-8", errors="replace").strip().splitlines()
        errors = [line.strip() for line in lines if re.search(r"Error\b|error:", line)]
        return Result(ex, target.shown, False,
                      f"the tests could not run: {(errors or lines or ['no output'])[-1]}")
    failures = [test for test in tests if test["outcome"] == "failed"]
    if failures:
        return Result(ex, target.shown, False, failures[0]["message"])
    if not any(test["outcome"] == "passed" for test in tests):
        return Result(ex, target.shown, False, f"no test of marker {ex.marker} passed")
    return Result(ex, target.shown, True)


def grade(submission, *, timeout=90.0, jobs=2):
    """Grade a submission: one Result per exercise found in it, in registry order."""
    if not TESTS_DIR.is_dir():
        raise GradeError(f"the exercise tests are missing: expected them in {TESTS_DIR}")
    submission = Path(submission).resolve()
    before = grading.digest(PACKAGE_DIR), grading.digest(TESTS_DIR)
    with tempfile.TemporaryDirectory(prefix="minilottery-grade-") as scratch:
        scratch = Path(scratch)
        targets = find_targets(submission, scratch)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda t: run_exercise_tests(t, scratch, timeout), targets))
    if (grading.digest(PACKAGE_DIR), grading.digest(TESTS_DIR)) != before:
        raise GradeError(f"the teacher's package or tests ({PACKAGE_DIR}, {TESTS_DIR}) changed "
                         f"while grading {submission}: no verdict; restore them from git")
    return results


def format_report(results):
    lines = []
    for result in results:
        verdict = "PASS" if result.passed else "FAIL"
        shown = grading.strip_controls(result.shown)
        lines.append(f"{verdict}  {result.exercise.id}  {result.exercise.title}  [{shown}]")
        if not result.passed:
            message = " ".join(grading.strip_controls(result.message).split())
            lines.append(f"      {message}")
    passed = sum(result.passed for result in results)
    lines.append(f"Score: {passed}/{len(results)} exercises pass")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# 6. The command line
# ----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilottery.coursework",
                                     description="Student versions and an autograder for "
                                                 "the minilottery exercises.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the exercises")
    build_command = commands.add_parser("build", help="write the student copy to OUT_DIR")
    build_command.add_argument("out_dir", metavar="OUT_DIR")
    grade_command = commands.add_parser("grade", help="grade a student copy, module or notebook")
    grade_command.add_argument("submission", metavar="SUBMISSION")
    grade_command.add_argument("--timeout", type=float, default=90.0,
                               help="seconds allowed per exercise (default 90)")
    grade_command.add_argument("--jobs", type=int, default=2,
                               help="exercises graded at once (default 2)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for ex in EXERCISES:
            print(f"{ex.id}  {ex.title}  [{ex.file}]  -m {ex.marker}")
        return 0
    if args.command == "build":
        try:
            found = build(args.out_dir)
        except (BuildError, MarkerError, ValueError, OSError) as error:
            print(f"build failed: {error}", file=sys.stderr)
            return 2
        print(f"wrote the student copy to {args.out_dir}: "
              f"{sum(len(files) for files in found.values())} exercise blocks stubbed")
        return 0
    try:
        results = grade(args.submission, timeout=args.timeout, jobs=args.jobs)
    except (GradeError, ValueError, OSError) as error:
        print(f"cannot grade: {error}", file=sys.stderr)
        return 2
    print(format_report(results))
    return 0 if results and all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
