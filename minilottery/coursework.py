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
    python -m minilottery.coursework grade SUBMISSION   run each exercise's tests on a student's
                                                        copy, module or notebook; print a score

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
    which its tests (pytest marker ``marker``) call."""

    id: str
    title: str
    file: str      # a module (minilottery/....py) or a tutorial (tutorials/....ipynb)
    names: tuple

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
    Exercise("2.3", "convolution backward, with loops (dx, dW, db)",
             "minilottery/reference.py", ("conv2d_backward",)),
    Exercise("3.2", "the masked Adam update (a Numba kernel)",
             "minilottery/optim.py", ("adam_update",)),
    Exercise("4.1", "the magnitude mask: which survivors to prune",
             "minilottery/pruning.py", ("_smallest_survivors",)),
    Exercise("5.1", "reset the survivors to theta_0: the winning ticket",
             "minilottery/lottery.py", ("prepare_model",)),
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


def run_notebook(path, exercise_id, workdir=None):
    """Execute the code cells of a notebook, in order, up to and including the cell of
    exercise ``exercise_id``, in one fresh namespace; return the namespace.

    Each cell is written to a file first (so tracebacks show its lines and Numba's
    cache=True works) and run with __name__ == "__main__", as Jupyter does. A cell
    that stops on the stub of *another* exercise (say the check cell of exercise 1.1,
    run while grading 1.2) counts as run: each exercise is graded on its own."""
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
    for index, cell in enumerate(notebook["cells"][:cells[exercise_id]], start=1):
        if cell.get("cell_type") != "code":
            continue
        cell_file = workdir / f"{path.stem}_cell{index:03d}.py"
        cell_file.write_text(_python_source(_cell_source(cell)), encoding="utf-8")
        try:
            code = compile(cell_file.read_text(encoding="utf-8"), str(cell_file), "exec")
        except SyntaxError as error:
            raise ImplementationError(f"{path.name}, cell {index}: SyntaxError: {error.msg} "
                                      f"(line {error.lineno} of the cell)") from None
        try:
            exec(code, namespace)
        except Exception as error:
            if isinstance(error, NotImplementedError) and str(error) in other_stubs:
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
        _check_origin(module)
        namespace, where = vars(module), ex.file
    missing = [name for name in ex.names if not callable(namespace.get(name))]
    if missing:
        raise ImplementationError(f"{where} defines no function {', '.join(missing)} "
                                  f"(exercise {ex.id} asks for {', '.join(ex.names)})")
    return types.SimpleNamespace(**{name: namespace[name] for name in ex.names})


def _check_origin(module):
    """When grading, the module must come from the submission, not another installed copy."""
    expected = os.environ.get("MINILOTTERY_GRADE_PACKAGE")
    if expected and not Path(module.__file__).resolve().is_relative_to(Path(expected).resolve()):
        raise ImplementationError(f"{module.__name__} was imported from {module.__file__}, "
                                  f"not from the submission in {expected}")


# ----------------------------------------------------------------------------
# 5. Grade
# ----------------------------------------------------------------------------

@dataclass
class Target:
    """One exercise to grade: in ``package`` (the directory put on PYTHONPATH), or in a
    notebook run against that package; ``shown`` is the file named in the report."""

    exercise: Exercise
    package: Path
    shown: str
    notebook: Path = None
    problem: str = None      # set when the exercise cannot even be run (e.g. a missing file)


@dataclass
class Result:
    exercise: Exercise
    shown: str
    passed: bool
    message: str = ""


class GradeError(RuntimeError):
    """The submission cannot be graded at all (not a file or copy the grader knows)."""


def find_targets(submission, scratch):
    """What to grade in a submission: a student copy (a directory with minilottery/),
    one of its modules, or a notebook. ``scratch`` is a temporary directory."""
    submission = Path(submission).resolve()
    if submission.is_dir():
        return _directory_targets(submission)
    if not submission.is_file():
        raise GradeError(f"{submission} does not exist")
    if submission.suffix == ".ipynb":
        ids = notebook_exercise_cells(read_notebook(submission))
        targets = [Target(BY_ID[i], PROJECT_ROOT, submission.name, submission)
                   for i in sorted(ids) if i in BY_ID]
        if not targets:
            raise GradeError(f"{submission.name} has no exercise cells (no cell with "
                             f"minilottery exercise metadata or a BEGIN SOLUTION marker)")
        return targets
    if submission.suffix == ".py":
        exercises = [ex for ex in EXERCISES if Path(ex.file).name == submission.name]
        if not exercises:
            raise GradeError(f"{submission.name} holds no exercise; the graded modules are "
                             f"{', '.join(sorted({Path(ex.file).name for ex in EXERCISES if ex.file.endswith('.py')}))}")
        # The grader's own package with this one module swapped in.
        package = scratch / "package"
        shutil.copytree(PACKAGE_DIR, package / "minilottery",
                        ignore=shutil.ignore_patterns(*SKIPPED, *("*" + s for s in SKIPPED_SUFFIXES)))
        for ex in exercises:
            shutil.copy2(submission, package / ex.file)
        return [Target(ex, package, submission.name) for ex in exercises]
    raise GradeError(f"{submission.name}: grade a student copy (a directory), a .py module "
                     f"or an .ipynb notebook")


def _directory_targets(root):
    if not (root / "minilottery" / "__init__.py").is_file():
        raise GradeError(f"{root} is not a student copy: it has no minilottery/__init__.py")
    targets = []
    for ex in EXERCISES:
        path = root / ex.file
        if not path.is_file():
            targets.append(Target(ex, root, ex.file, problem=f"{ex.file} is missing"))
        elif path.suffix == ".py":
            targets.append(Target(ex, root, ex.file))
    for notebook in sorted((root / "tutorials").glob("*.ipynb")):
        try:
            ids = notebook_exercise_cells(read_notebook(notebook))
        except ValueError as error:
            targets += [Target(ex, root, notebook.relative_to(root).as_posix(), problem=str(error))
                        for ex in EXERCISES if ex.file == notebook.relative_to(root).as_posix()]
            continue
        targets += [Target(BY_ID[i], root, notebook.relative_to(root).as_posix(), notebook)
                    for i in sorted(ids) if i in BY_ID]
    return sorted(targets, key=lambda target: EXERCISES.index(target.exercise))


def run_exercise_tests(target, scratch, timeout):
    """Run the pytest marker of one exercise in a fresh interpreter whose ``import
    minilottery`` finds the submission; return its Result."""
    ex = target.exercise
    if target.problem:
        return Result(ex, target.shown, False, target.problem)
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{ex.marker}-", dir=scratch))
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")   # not the project's: no pythonpath = .
    report = workdir / "report.json"
    env = dict(os.environ, PYTHONPATH=str(target.package), PYTHONDONTWRITEBYTECODE="1",
               MINILOTTERY_GRADE_REPORT=str(report), MINILOTTERY_GRADE_PACKAGE=str(target.package),
               MPLBACKEND="Agg")
    env.setdefault("NUMBA_CACHE_DIR", str(scratch / "numba-cache"))  # never in the submission
    env.pop("MINILOTTERY_NOTEBOOK", None)
    if target.notebook is not None:
        env["MINILOTTERY_NOTEBOOK"] = str(target.notebook)
    command = [sys.executable, "-m", "pytest", str(TESTS_DIR), "-m", ex.marker, "-q", "-x",
               "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(workdir),
               "--confcutdir", str(TESTS_DIR)]
    try:
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(ex, target.shown, False,
                      f"timed out after {timeout:g} s (an endless loop? a very slow implementation?)")
    return _result_from_report(target, done, report)


def _result_from_report(target, done, report):
    ex = target.exercise
    try:
        tests = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tests = None
    if tests is None:   # pytest could not even start the tests: show its last error line
        output = (done.stdout + "\n" + done.stderr).strip().splitlines()
        errors = [line.strip() for line in output if re.search(r"Error\b|error:", line)]
        return Result(ex, target.shown, False,
                      f"the tests could not run: {(errors or output or ['no output'])[-1]}")
    failures = [test for test in tests if test["outcome"] == "failed"]
    if failures:
        return Result(ex, target.shown, False, failures[0]["message"])
    if not any(test["outcome"] == "passed" for test in tests) or done.returncode != 0:
        return Result(ex, target.shown, False,
                      f"no test of marker {ex.marker} passed (pytest exit status {done.returncode})")
    return Result(ex, target.shown, True)


def grade(submission, *, timeout=90.0, jobs=2):
    """Grade a submission: one Result per exercise found in it, in registry order."""
    if not TESTS_DIR.is_dir():
        raise GradeError(f"the exercise tests are missing: expected them in {TESTS_DIR}")
    with tempfile.TemporaryDirectory(prefix="minilottery-grade-") as scratch:
        scratch = Path(scratch)
        targets = find_targets(submission, scratch)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda t: run_exercise_tests(t, scratch, timeout), targets))
    return results


def format_report(results):
    lines = []
    for result in results:
        verdict = "PASS" if result.passed else "FAIL"
        lines.append(f"{verdict}  {result.exercise.id}  {result.exercise.title}  [{result.shown}]")
        if not result.passed:
            lines.append(f"      {result.message}")
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
