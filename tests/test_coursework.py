"""The coursework tooling: solution markers, the student copy, and the grader.

The grader runs each exercise's tests in subprocesses, so the tests that call it
share one student copy (a module-scoped fixture) and grade single files where
one file is enough."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minilottery import classroom, coursework
from minilottery.coursework import EXERCISES, MarkerError, find_blocks, strip_text

ROOT = coursework.PROJECT_ROOT


def run_cli(*args, cwd):
    """python -m minilottery.coursework ARGS, with this project's package on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "minilottery.coursework", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def grade(submission, cwd):
    """Grade via the command line: (exit status, {exercise id: (verdict, message)}, stdout)."""
    status, out, err = run_cli("grade", submission, cwd=cwd)
    assert "Traceback" not in out + err, f"the grader crashed:\n{out}\n{err}"
    verdicts, lines = {}, out.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(PASS|FAIL)  (\S+)  ", line)
        if match:
            message = lines[i + 1].strip() if match[1] == "FAIL" else ""
            verdicts[match[2]] = (match[1], message)
    return status, verdicts, out


def copy_package(target):
    """A copy of this project's package and exercise notebooks (the solutions), as a
    submission directory."""
    shutil.copytree(ROOT / "minilottery", target / "minilottery",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    for file in {ex.file for ex in EXERCISES if ex.file.endswith(".ipynb")}:
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / file, target / file)
    return target


def replace_once(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} not found exactly once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def source_text(path):
    """A file's text; for a notebook, the sources of its cells (markers sit at line starts)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        cells = coursework.read_notebook(path)["cells"]
        return "\n".join(coursework._cell_source(cell) for cell in cells) + "\n"
    return path.read_text(encoding="utf-8")


def solution_source(ex):
    return source_text(ROOT / ex.file)


def distinctive_lines(ex):
    """The lines of an exercise's block that occur nowhere else in its file: a student
    file that contains one of them contains solution text."""
    text = solution_source(ex)
    block_lines = {line.strip() for block in find_blocks(text, ex.file) for line in block.lines}
    student_text, _ = strip_text(text, ex.file)
    elsewhere = {line.strip() for line in student_text.splitlines()}
    return {line for line in block_lines - elsewhere if line and not line.startswith("#")}


def git(*args, cwd):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


JUNK = ("runs/lenet-quick/log.txt", "tutorials/runs/conv2/weights.npz",
        "minilottery/__pycache__/layers.cpython-312.pyc", "minilottery/my_notes.py",
        ".venv/lib/site.py", "tests/coursework/.hypothesis/examples/x", "data/download.tmp",
        "tutorials/.ipynb_checkpoints/01-checkpoint.ipynb")


@pytest.fixture(scope="module")
def working_tree(tmp_path_factory):
    """A git checkout of this project's files (the tracked ones the handout draws from,
    as they are now) with what a teacher's working tree also holds: run directories,
    caches, a virtual environment, untracked files. Returns (tree, tracked files)."""
    if coursework.tracked_files(ROOT) is None or shutil.which("git") is None:
        pytest.skip("the project is not a git checkout (or git is missing)")
    tree = tmp_path_factory.mktemp("working-tree")
    tracked = [name for name in git("ls-files", "-z", cwd=ROOT).split("\0")
               if name and (ROOT / name).is_file()
               and name.split("/")[0] in ("minilottery", "tutorials", "tests", "data")
               or name in ("setup.cfg", "pyproject.toml")]
    for name in tracked:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    git("init", "-q", cwd=tree)
    git("add", "--", *tracked, cwd=tree)
    for name in JUNK:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("not for students\n", encoding="utf-8")
    return tree, tracked


@pytest.fixture(scope="module")
def student_copy(working_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "student"
    coursework.build(out, source_root=working_tree[0])
    return out


def test_the_student_copy_holds_only_tracked_files_with_normal_modes(student_copy, working_tree):
    tree, tracked = working_tree
    files = {p.relative_to(student_copy).as_posix() for p in student_copy.rglob("*") if p.is_file()}
    expected = {name for name in tracked if not name.startswith("tests/")
                or name.startswith("tests/coursework/")} - {n for n in tracked if
                                                             n.startswith(coursework.HIDDEN + "/")}
    assert files == expected | {"README.md"}
    assert any(name.startswith(coursework.HIDDEN + "/") for name in tracked), \
        "no hidden test is tracked: the check that they stay out would be vacuous"
    modes = {oct(p.stat().st_mode & 0o7777) for p in student_copy.rglob("*") if p.is_file()}
    folders = {oct(p.stat().st_mode & 0o7777) for p in [student_copy, *student_copy.rglob("*")]
               if p.is_dir()}
    assert (modes, folders) == ({"0o644"}, {"0o755"})


def test_without_git_the_skip_list_keeps_runs_and_caches_out(working_tree, tmp_path):
    tree, _ = working_tree
    plain = tmp_path / "plain"
    shutil.copytree(tree, plain, ignore=shutil.ignore_patterns(".git"))
    chosen = coursework.handout_files(plain)
    for name in JUNK:
        if name not in ("minilottery/my_notes.py", "data/download.tmp"):
            assert name not in chosen, name
    assert not [name for name in chosen if name.startswith(coursework.HIDDEN + "/")]
    assert "minilottery/coursework.py" in chosen


# -- markers ----------------------------------------------------------------------------

def test_every_exercise_has_one_block_in_its_file():
    for file in {ex.file for ex in EXERCISES}:
        expected = [ex.id for ex in EXERCISES if ex.file == file]
        ids = [block.id for block in find_blocks(source_text(ROOT / file), file)]
        assert ids == expected, f"{file} holds blocks {ids}, expected exactly {expected}"


def test_a_block_becomes_one_indented_stub_that_compiles():
    source = ("def f(x):\n    y = 2\n    ### BEGIN SOLUTION 4.1\n    y = y * x\n"
              "    return y\n    ### END SOLUTION\n\nZ = 1\n")
    student, blocks = strip_text(source, "f.py")
    assert [(b.id, b.line, b.lines) for b in blocks] == [("4.1", 3, ["    y = y * x", "    return y"])]
    assert student == ("def f(x):\n    y = 2\n    raise NotImplementedError(\"Exercise 4.1: "
                       f"{coursework.BY_ID['4.1'].title}\")\n\nZ = 1\n")
    namespace = {}
    exec(compile(student, "f.py", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=r"^Exercise 4\.1: "):
        namespace["f"](3)


@pytest.mark.parametrize("source, complaint", [
    ("### BEGIN SOLUTION 2.3\nx = 1\n", "line 1: BEGIN SOLUTION 2.3 is never closed"),
    ("### BEGIN SOLUTION 2.3\n### BEGIN SOLUTION 4.1\n### END SOLUTION\n", "line 2: BEGIN SOLUTION inside"),
    ("x = 1\n### END SOLUTION\n", "line 2: END SOLUTION without a BEGIN"),
    ("### BEGIN SOLUTION\n### END SOLUTION\n", "line 1: BEGIN SOLUTION needs an exercise id"),
    ("### BEGIN SOLUTION 9.9\n### END SOLUTION\n", "line 1: exercise '9.9' is not in the registry"),
    ("# BEGIN SOLUTION 2.3\n", "line 1: malformed solution marker"),
])
def test_malformed_markers_are_named_with_file_and_line(source, complaint):
    with pytest.raises(MarkerError, match=re.escape(f"m.py, {complaint}")):
        find_blocks(source, "m.py")


# -- build ------------------------------------------------------------------------------

def test_student_copy_has_no_solution_text_and_no_markers(student_copy):
    files = [path for path in student_copy.rglob("*")
             if path.is_file() and path.suffix in (".py", ".ipynb", ".md", ".cfg", ".toml")]
    texts = {path: source_text(path) for path in files}
    for ex in EXERCISES:
        secret = distinctive_lines(ex)
        assert secret, f"exercise {ex.id}'s block has no line of its own: the check would be vacuous"
        for path, text in texts.items():
            leaked = secret & {line.strip() for line in text.splitlines()}
            assert not leaked, f"{path} contains solution text of exercise {ex.id}: {leaked}"
        assert f'raise NotImplementedError("Exercise {ex.id}: ' in texts[student_copy / ex.file]
    for path, text in texts.items():
        for line in text.splitlines():
            assert not coursework.LOOKS_LIKE_A_MARKER.match(line), f"{path}: marker {line!r} left"


def test_student_copy_has_the_handout_and_the_exercise_tests(student_copy):
    readme = (student_copy / "README.md").read_text(encoding="utf-8")
    for ex in EXERCISES:
        functions = ", ".join(f"`{name}`" for name in ex.names)
        assert f"| {ex.id} | {ex.title} | `{ex.file}` | {functions} | {ex.points} " \
               f"| `{ex.marker}` |" in readme
        assert f"- `{ex.file}`: " in readme and f"`{ex.names[0]}`" in readme
    for ex in EXERCISES:
        if ex.constraint:
            assert f"- Exercise {ex.id} must be " in readme
    assert "python -m minilottery.coursework grade ." in readme
    assert "## What to hand in" in readme and "## What you may edit" in readme
    assert (student_copy / "tests" / "coursework" / "conftest.py").is_file()
    assert not list(student_copy.rglob("__pycache__"))


def test_student_copy_imports(student_copy):
    modules = sorted({ex.module for ex in EXERCISES if ex.file.endswith(".py")}
                     | {"minilottery.models", "minilottery.train"})
    done = subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}; import minilottery; "
                           "print(minilottery.__file__)"], cwd=student_copy,
                          env=dict(os.environ, PYTHONPATH=str(student_copy)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(student_copy.resolve())


def test_build_refuses_a_non_empty_out_dir(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    status, stdout, stderr = run_cli("build", out, cwd=tmp_path)
    assert status == 2
    assert "is not an empty directory" in stderr and "nothing was written" in stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_failed_build_leaves_nothing(tmp_path):
    source = copy_package(tmp_path / "source")
    replace_once(source / "minilottery" / "pruning.py", "    ### BEGIN SOLUTION 4.1\n", "")
    with pytest.raises(MarkerError, match="END SOLUTION without a BEGIN"):
        coursework.build(tmp_path / "out" / "student", source_root=source)
    assert list((tmp_path / "out").iterdir()) == []


# -- grade ------------------------------------------------------------------------------

def test_grading_the_student_copy_fails_every_exercise(student_copy, tmp_path):
    status, verdicts, out = grade(student_copy, cwd=tmp_path)
    assert status == 1
    assert set(verdicts) == {ex.id for ex in EXERCISES}
    for ex in EXERCISES:
        assert verdicts[ex.id] == ("FAIL", f"NotImplementedError: {ex.stub_message}"), out
    assert f"Score: 0/{len(EXERCISES)} exercises pass" in out
    assert f"Points: 0/{sum(ex.points for ex in EXERCISES)}" in out


def test_grading_the_solutions_passes_every_exercise(tmp_path):
    status, verdicts, out = grade(ROOT, cwd=tmp_path)
    assert status == 0, out
    assert {ex.id for ex in EXERCISES} <= set(verdicts)
    assert all(verdict == "PASS" for verdict, _ in verdicts.values()), out
    top = sum(ex.points for ex in EXERCISES)
    assert f"Points: {top}/{top}" in out


def test_one_wrong_exercise_fails_alone_with_expected_vs_got(tmp_path):
    submission = copy_package(tmp_path / "submission")
    # dW summed over the wrong kernel axes: the transpose of each k x k slice
    replace_once(submission / "minilottery" / "reference.py",
                 "dW += np.tensordot(g, patch, axes=([0], [0]))",
                 "dW += np.tensordot(g, patch, axes=([0], [0])).transpose(0, 1, 3, 2)")
    status, verdicts, out = grade(submission, cwd=tmp_path)
    assert status == 1
    assert {i for i, (verdict, _) in verdicts.items() if verdict == "FAIL"} == {"2.3"}, out
    assert re.match(r"dW relative error \d\.\de[-+]\d\d, should be below 1e-06 \(x ",
                    verdicts["2.3"][1]), out


def test_a_syntax_error_is_reported_per_exercise(tmp_path):
    """A syntax error in another function of the module fails none of its exercises; one
    inside exercise 4.1's function fails 4.1 alone, with the file and line."""
    broken = tmp_path / "pruning.py"
    shutil.copy(ROOT / "minilottery" / "pruning.py", broken)
    replace_once(broken, "def prune_by_magnitude(weights, masks, rates):",
                 "def prune_by_magnitude(weights, masks, rates)")
    in_pruning = [ex.id for ex in coursework.EXERCISES if ex.file == "minilottery/pruning.py"]
    assert "4.1" in in_pruning and len(in_pruning) > 1
    status, verdicts, out = grade(broken, cwd=tmp_path)
    assert (status, verdicts) == (0, {i: ("PASS", "") for i in in_pruning}), out
    replace_once(broken, "def _smallest_survivors(magnitudes, mask, n_prune):",
                 "def _smallest_survivors(magnitudes, mask, n_prune)")
    status, verdicts, out = grade(broken, cwd=tmp_path)
    assert status == 1
    assert sorted(verdicts) == sorted(in_pruning)
    assert all(verdicts[i] == ("PASS", "") for i in in_pruning if i != "4.1"), out
    line = (ROOT / "minilottery" / "pruning.py").read_text(encoding="utf-8").splitlines().index(
        "def _smallest_survivors(magnitudes, mask, n_prune):") + 1
    assert verdicts["4.1"] == ("FAIL", f"pruning.py, line {line}: SyntaxError: expected ':'"), out


def test_a_missing_function_is_reported(tmp_path):
    broken = tmp_path / "pruning.py"
    shutil.copy(ROOT / "minilottery" / "pruning.py", broken)
    replace_once(broken, "def _smallest_survivors(", "def smallest_survivors(")
    status, verdicts, out = grade(broken, cwd=tmp_path)
    assert status == 1
    assert verdicts["4.1"] == ("FAIL", "pruning.py defines no function "
                                       "_smallest_survivors (exercise 4.1 asks for "
                                       "_smallest_survivors)"), out


def test_a_missing_module_in_a_student_copy_is_reported(tmp_path):
    submission = copy_package(tmp_path / "submission")
    (submission / "minilottery" / "reference.py").unlink()
    targets = {t.exercise.id: t for t in classroom.find_targets(submission)}
    assert targets["2.3"].problem == "minilottery/reference.py is missing"
    result = classroom.run_exercise_tests(targets["2.3"], tmp_path, timeout=60)
    assert not result.passed and result.message == "minilottery/reference.py is missing"


def test_list_names_every_exercise_with_its_points_and_constraint(tmp_path):
    status, out, err = run_cli("list", cwd=tmp_path)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == len(EXERCISES)
    for ex, line in zip(EXERCISES, lines):
        assert line.startswith(f"{ex.id}  {ex.title}  [{ex.file}]  -m {ex.marker}  "
                               f"{ex.points} points"), line
        assert line.endswith(f"({ex.constraint})" if ex.constraint else "points"), line


def test_grading_something_unknown_exits_2(tmp_path):
    status, stdout, stderr = run_cli("grade", tmp_path / "nothing-here", cwd=tmp_path)
    assert status == 2 and "does not exist" in stderr and "Traceback" not in stderr
    other = tmp_path / "notes.py"
    other.write_text("x = 1\n", encoding="utf-8")
    status, stdout, stderr = run_cli("grade", other, cwd=tmp_path)
    assert status == 2 and "notes.py holds no exercise" in stderr


# -- notebooks --------------------------------------------------------------------------

def code_cell(source):
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}


def conv_backward_definition():
    """reference.conv2d_backward's source, markers and all: the cell a tutorial would hold."""
    text = solution_source(coursework.BY_ID["2.3"])
    start = text.index("def conv2d_backward(")
    return text[start:text.index("\n\n\n", start)] + "\n"


def make_notebook(*cells):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 2. Convolution\n"]},
                      *cells]}


def write(path, notebook):
    coursework.write_notebook(path, notebook)
    return path


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    """A solution notebook with exercise 2.3 in its third cell and a last cell that must
    never run, and its student version."""
    folder = tmp_path_factory.mktemp("notebooks")
    solution = make_notebook(code_cell("import numpy as np\n"),
                             code_cell("%matplotlib inline\nscale = 1.0\n"),
                             code_cell(conv_backward_definition()),
                             code_cell("raise RuntimeError('cells after the exercise do not run')\n"))
    student, blocks = coursework.strip_notebook(solution, "02-convolution.ipynb")
    return folder, solution, student, blocks


def test_a_notebook_is_stripped_like_a_module(notebooks):
    _, solution, student, blocks = notebooks
    assert [block.id for block in blocks] == ["2.3"]
    cell = student["cells"][3]
    assert cell["metadata"]["minilottery"] == {"exercises": ["2.3"]}
    text = "".join(cell["source"])
    assert 'raise NotImplementedError("Exercise 2.3: ' in text
    assert not distinctive_lines(coursework.BY_ID["2.3"]) & {l.strip() for l in text.splitlines()}
    assert student["cells"][:3] == solution["cells"][:3]
    assert "### BEGIN" in "".join(solution["cells"][3]["source"])   # the input is not modified


def test_grading_a_student_notebook(notebooks, tmp_path):
    folder, _, student, _ = notebooks
    status, verdicts, out = grade(write(tmp_path / "02-convolution.ipynb", student), cwd=tmp_path)
    assert status == 1
    assert verdicts == {"2.3": ("FAIL", f"NotImplementedError: {coursework.BY_ID['2.3'].stub_message}")}, out


def test_grading_a_filled_in_notebook_finds_the_exercise_by_its_metadata(notebooks, tmp_path):
    folder, _, student, _ = notebooks
    filled = json.loads(json.dumps(student))
    answer = "".join(line for line in conv_backward_definition().splitlines(keepends=True)
                     if "SOLUTION" not in line)
    filled["cells"][3]["source"] = answer.splitlines(keepends=True)
    status, verdicts, out = grade(write(tmp_path / "mine.ipynb", filled), cwd=tmp_path)
    assert (status, verdicts) == (0, {"2.3": ("PASS", "")}), out


def test_a_notebook_cell_that_raises_is_reported(notebooks, tmp_path):
    folder, solution, _, _ = notebooks
    broken = json.loads(json.dumps(solution))
    broken["cells"][2] = code_cell("scale = 1 / 0\n")
    status, verdicts, out = grade(write(tmp_path / "broken.ipynb", broken), cwd=tmp_path)
    assert status == 1
    assert verdicts == {"2.3": ("FAIL", "broken.ipynb, cell 3 raised ZeroDivisionError: "
                                        "division by zero")}, out


def test_a_notebook_syntax_error_is_reported(notebooks):
    folder, solution, _, _ = notebooks
    broken = json.loads(json.dumps(solution))
    broken["cells"][3]["source"][0] = "def conv2d_backward(dout, x, W, stride=1, padding=0)\n"
    path = write(folder / "syntax.ipynb", broken)
    with pytest.raises(coursework.ImplementationError,
                       match=r"^syntax.ipynb, cell 4: SyntaxError: .*\(line 1 of the cell\)$"):
        coursework.run_notebook(path, "2.3", workdir=folder)


def test_a_cell_stopped_by_another_exercise_does_not_fail_this_one(tmp_path):
    """Grading 1.2 runs the check cell of 1.1, which raises 1.1's stub in a student
    notebook: that is 1.1's failure, not 1.2's. Any other error still fails 1.2."""
    solution = make_notebook(
        code_cell("def f(x):\n    ### BEGIN SOLUTION 1.1\n    return x\n    ### END SOLUTION\n"),
        code_cell("checked = f(1)\n"),
        code_cell("def relu_backward(x, dout):\n    ### BEGIN SOLUTION 1.2\n"
                  "    return dout * (x > 0)\n    ### END SOLUTION\n"))
    student, _ = coursework.strip_notebook(solution, "01.ipynb")
    namespace = coursework.run_notebook(write(tmp_path / "student.ipynb", student), "1.2",
                                        workdir=tmp_path)
    assert "checked" not in namespace
    with pytest.raises(NotImplementedError, match=r"^Exercise 1\.2: "):
        namespace["relu_backward"](1.0, 2.0)
    student["cells"][2] = code_cell("raise NotImplementedError('not an exercise stub')\n")
    with pytest.raises(coursework.ImplementationError,
                       match=r"^other.ipynb, cell 3 raised NotImplementedError: not an exercise stub$"):
        coursework.run_notebook(write(tmp_path / "other.ipynb", student), "1.2", workdir=tmp_path)


def test_a_tutorial_exercise_loads_from_the_projects_notebook(monkeypatch):
    monkeypatch.delenv("MINILOTTERY_NOTEBOOK", raising=False)
    notebook_exercises = [ex for ex in EXERCISES if ex.file.endswith(".ipynb")]
    assert notebook_exercises
    for ex in notebook_exercises:
        implementation = coursework.load_implementation(ex.id)
        assert all(callable(getattr(implementation, name)) for name in ex.names), ex.id


def test_a_wrong_tutorial_answer_fails_alone_with_expected_vs_got(tmp_path):
    notebook = tmp_path / "01-layers-by-hand.ipynb"
    notebook.write_text((ROOT / coursework.BY_ID["1.1"].file).read_text(encoding="utf-8"),
                        encoding="utf-8")
    replace_once(notebook, "x.T @ dout,               # dW", "x.T @ dout / len(x),      # dW")  # a mean
    status, verdicts, out = grade(notebook, cwd=tmp_path)
    assert status == 1
    assert {i: verdict for i, (verdict, _) in verdicts.items()} == {"1.1": "FAIL", "1.2": "PASS"}, out
    assert re.match(r"dW relative error \d\.\de[-+]\d\d, should be below 1e-06 \(x \(",
                    verdicts["1.1"][1]), out
