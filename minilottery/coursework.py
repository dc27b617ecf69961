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
    python -I -m minilottery.coursework grade SUBMISSION [--out DIR] [--jobs N]
                                                        grade a student's copy, module,
                                                        notebook or archive, or a class
                                                        folder of them; print the points,
                                                        write CSV, JSON and feedback to DIR

Grading never runs the student's code in the grading process, never trusts a file
or an exit status the student's code could write, and grades each exercise with the
teacher's solution of every other exercise in place: minilottery/grading.py says
how, and what this does not protect against; minilottery/classroom.py turns the
tests' reports into points (class folders, CSV, JSON, feedback), and
minilottery/constraints.py checks what an exercise states about its implementation
("loops", "numba"). Run the grader from the teacher's installation, as the console
script ``minilottery-coursework`` that pip installs or with ``python -I -m``: both keep
the current directory off sys.path, so grading from inside a submission cannot import
the submission's copy of the grader.

The module reads top to bottom: 1. the registry of exercises, 2. stripping a
source (a module or a notebook) down to its student version, 3. building the
student copy (only files git tracks; never tests/coursework/hidden), 4. loading a
student's implementation (what the exercise tests call), 5. the command line.

The exercise tests are ordinary pytest tests in tests/coursework/, one marker
per exercise (``exercise_2_3``), so a teacher can run one alone:

    python -m pytest tests/coursework -m exercise_2_3

Tests in tests/coursework/hidden/ (``test_2_3_*.py``, same markers) run when the
teacher runs pytest and when grading, and are never handed out. An exercise's
points are shared among its tests equally, or by ``@pytest.mark.weight(w)``.

This module uses only the standard library: the tests' conftest loads it by
file path, so it must work even when a student's copy of the package does not.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

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


HANDED_OUT = ("minilottery", "tutorials", "tests/coursework", "data", "setup.cfg", "pyproject.toml")
HIDDEN = "tests/coursework/hidden"      # the teacher's hidden tests: graded, never handed out
# Without git: what a working tree holds that is not the project (runs, caches, builds).
SKIPPED = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis", "runs", ".git",
           ".venv", "venv", ".venv-ci", "build", "dist", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".nbi", ".nbc", ".egg-info", "~", ".swp")


def tracked_files(source_root):
    """The paths (relative, POSIX) that git tracks in ``source_root``, or None when it is
    not a git checkout (or git is missing)."""
    try:
        done = subprocess.run(["git", "-C", str(source_root), "ls-files", "-z", "--cached"],
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    files = [name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
    return set(files) if done.returncode == 0 and files else None


def handout_files(source_root):
    """The files of ``source_root`` that go into the student copy, relative and sorted: the
    tracked ones (all of them, when not a git checkout, less SKIPPED) under HANDED_OUT,
    never the hidden tests."""
    tracked = tracked_files(source_root)
    if tracked is None:
        tracked = set()
        for path in source_root.rglob("*"):
            parts = path.relative_to(source_root).parts
            if path.is_file() and not SKIPPED.intersection(parts) \
                    and not any(part.endswith(SKIPPED_SUFFIXES) for part in parts):
                tracked.add(path.relative_to(source_root).as_posix())
    chosen = []
    for name in sorted(tracked):
        inside = any(name == top or name.startswith(top + "/") for top in HANDED_OUT)
        if inside and not (name + "/").startswith(HIDDEN + "/") \
                and (source_root / name).is_file() and not (source_root / name).is_symlink():
            chosen.append(name)
    return chosen


def build(out_dir, source_root=PROJECT_ROOT):
    """Write the student copy of ``source_root`` to ``out_dir`` (which must not exist or be
    empty): the package and the tutorials with every solution block stubbed, the exercise
    tests (not the hidden ones), the data, the packaging files and a hand-out README; only
    files git tracks (see handout_files), with modes 0644 and 0755. Built in a temporary
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
        for relative in handout_files(source_root):
            for block in _copy_student_version(source_root / relative, staging / relative,
                                               relative):
                found.setdefault(block.id, []).append(relative)
        for ex in EXERCISES:
            if ex.file not in found.get(ex.id, []):
                raise BuildError(f"exercise {ex.id}: no ### BEGIN SOLUTION {ex.id} block in "
                                 f"{ex.file} (the file the registry names, tracked by git)")
            if len(found[ex.id]) != len(set(found[ex.id])):
                raise BuildError(f"exercise {ex.id}: more than one block in one file")
        (staging / "README.md").write_text(handout_readme(found), encoding="utf-8")
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
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
        shutil.copyfile(source, target)
        blocks = []
    return blocks


def handout_readme(found):
    rows = "\n".join(f"| {ex.id} | {ex.title} | {', '.join(f'`{f}`' for f in found[ex.id])} "
                     f"| {', '.join(f'`{name}`' for name in ex.names)} | {ex.points} "
                     f"| `{ex.marker}` |" for ex in EXERCISES)
    files = {}
    for ex in EXERCISES:
        files.setdefault(ex.file, []).extend(ex.names)
    editable = "\n".join(f"- `{file}`: {', '.join(f'`{name}`' for name in names)}"
                         for file, names in files.items())
    from .constraints import HANDOUT_TEXT
    rules = "\n".join(f"- Exercise {ex.id} must be {HANDOUT_TEXT[ex.constraint]}."
                      for ex in EXERCISES if ex.constraint)
    if rules:
        rules = ("\nSome exercises state how they must be written; the grader checks it, "
                 "and an\nexercise that breaks its constraint scores 0:\n\n" + rules)
    return f"""# minilottery coursework

This is your copy of minilottery, a NumPy + Numba framework that finds lottery
tickets (Frankle & Carbin 2019). It runs, except for {len(EXERCISES)} pieces that you write.
Each one is a line

    raise NotImplementedError("Exercise 2.3: ...")

in the file below. Replace that line with your code; the docstring above it
states what to compute.

| Exercise | What you write | File | Functions | Points | Test marker |
|---|---|---|---|---|---|
{rows}

## Check your work

From this directory:

    python -m minilottery.coursework grade .                          # every exercise, and a score
    python -m minilottery.coursework grade minilottery/reference.py   # the exercises of one file
    python -m pytest tests/coursework -m exercise_2_3                 # one exercise, full pytest output

The grader prints PASS or FAIL per exercise with the first failing check
(expected vs got), your points, and exits with status 0 only when every
exercise passes. Your teacher grades with their own copy of the grader and
tests, and may add tests you do not see; an exercise's points are shared
among its tests, so a partly right function earns part of them.

## What you may edit

Only these functions, in these files (in a notebook, the exercise's cell,
keeping the cell's metadata):

{editable}

Each exercise is graded on its own, with the teacher's version of
everything else (other functions, other files, the tests): a change
anywhere else is ignored, and a syntax error in one function fails that
exercise alone.
{rules}

## What to hand in

This whole folder (or a .zip or .tar.gz of it), named after you, e.g.
`alice/` or `alice.zip`: the grader reads the files of the table from it.
Leave out run directories and caches. A single notebook or module can be
handed in on its own when your teacher asks for one exercise only.

To step through a Numba kernel in plain Python, set NUMBA_DISABLE_JIT=1
(the grader compiles it with Numba all the same).
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


def run_notebook(path, exercise_id, workdir=None, before_run=None, exercises=None):
    """Execute the code cells of a notebook, in order, up to and including the cell of
    exercise ``exercise_id``, in one fresh namespace; return the namespace.

    Each cell is written to a file first (so tracebacks show its lines and Numba's
    cache=True works) and run with __name__ == "__main__", as Jupyter does. A cell
    that stops on the stub of *another* exercise (say the check cell of exercise 1.1,
    run while grading 1.2), another exercise's own cell that does not compile or
    raises, and a cell that misses a function of another exercise (a NameError) count
    as run: each exercise is graded on its own. ``before_run()``, if given, is called
    once every cell file is written, before the first cell runs (the grader's worker
    forbids file writes there). ``exercises`` is the registry (default EXERCISES)."""
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
    exercises = EXERCISES if exercises is None else exercises
    other_stubs = {ex.stub_message for ex in exercises if ex.id != exercise_id}
    other_cells = {index for other, index in cells.items() if other != exercise_id}
    other_names = {name for ex in exercises if ex.id != exercise_id for name in ex.names}
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
# 5. The command line
# ----------------------------------------------------------------------------

def _jobs(text):
    jobs = int(text)
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be at least 1, got {jobs}")
    return jobs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilottery.coursework",
                                     description="Student versions and an autograder for "
                                                 "the minilottery exercises.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the exercises")
    build_command = commands.add_parser("build", help="write the student copy to OUT_DIR")
    build_command.add_argument("out_dir", metavar="OUT_DIR")
    grade_command = commands.add_parser(
        "grade", help="grade a student copy, module or notebook, or a class folder of them")
    grade_command.add_argument("submission", metavar="SUBMISSION",
                               help="one submission, or a folder with one folder, notebook, "
                                    "module or archive (.zip/.tar/.tar.gz) per student")
    grade_command.add_argument("--out", metavar="DIR",
                               help="write results.csv, results.json, scores.csv and "
                                    "feedback/<student>.txt to DIR")
    grade_command.add_argument("--timeout", type=float, default=90.0,
                               help="seconds allowed per exercise (default 90)")
    grade_command.add_argument("--jobs", type=_jobs, default=min(2, os.cpu_count() or 1),
                               help="exercises graded at once (default min(2, cores))")
    args = parser.parse_args(argv)

    if args.command == "list":
        for ex in EXERCISES:
            constraint = f"  ({ex.constraint})" if ex.constraint else ""
            print(f"{ex.id}  {ex.title}  [{ex.file}]  -m {ex.marker}  "
                  f"{ex.points} points{constraint}")
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
    from . import classroom
    try:
        submission = Path(args.submission)
        in_class = submission.is_dir() and not classroom.is_submission(submission)
        if in_class:
            graded = classroom.grade_class(submission, timeout=args.timeout, jobs=args.jobs)
            for student, results in graded.items():
                total = sum(result.points for result in results)
                top = sum(result.exercise.points for result in results)
                print(f"{classroom.grading.strip_controls(student)}  "
                      f"{classroom.show_points(total)}/{top}")
        else:
            results = classroom.grade(submission, timeout=args.timeout, jobs=args.jobs)
            graded = {classroom.student_name(submission.resolve()): results}
            print(classroom.format_report(results))
        if args.out:
            classroom.write_results(args.out, graded)
            print(f"wrote {args.out}/results.csv, results.json, scores.csv and feedback/")
    except (classroom.GradeError, ValueError, OSError) as error:
        print(f"cannot grade: {error}", file=sys.stderr)
        return 2
    if in_class:
        return 0          # graded; the students' verdicts are in the report
    return 0 if results and all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
