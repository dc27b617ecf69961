"""The exercise registry (EXERCISES in minilottery/coursework.py) against what it points
at: the notebooks that announce the exercises, the solution blocks, the functions, the
exercise tests and the tutorials' README. Fast: files are read and parsed, nothing is
graded. (The exercise tests themselves run against the solutions as part of the suite:
tests/coursework is collected like every other test folder.)"""

import ast
import json
import re
from pathlib import Path

import pytest

from minilottery.coursework import EXERCISES, find_blocks

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "coursework"
ID = re.compile(r"^([1-9])\.([1-9][0-9]*)$")


def notebook_of(ex):
    """The tutorial that teaches exercise N.M: tutorials/0N-*.ipynb."""
    found = sorted((ROOT / "tutorials").glob(f"0{ex.id.split('.')[0]}-*.ipynb"))
    assert len(found) == 1, f"exercise {ex.id}: expected one notebook tutorials/0{ex.id[0]}-*.ipynb, found {found}"
    return found[0]


def cells(path):
    return [(cell["cell_type"], "".join(cell["source"]) if isinstance(cell["source"], list)
             else cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]]


def source_of(ex):
    """The exercise's file as text: a module, or the code cells of a notebook."""
    path = ROOT / ex.file
    if path.suffix == ".ipynb":
        return "\n".join(text for kind, text in cells(path) if kind == "code")
    return path.read_text(encoding="utf-8")


def test_at_least_twenty_exercises_with_unique_well_formed_ids():
    ids = [ex.id for ex in EXERCISES]
    assert len(ids) >= 20, f"the registry holds {len(ids)} exercises, the course needs at least 20"
    assert len(set(ids)) == len(ids), f"repeated exercise ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for ex in EXERCISES:
        assert ID.match(ex.id), f"exercise id {ex.id!r} is not of the form N.M"
        notebook_of(ex)
        assert ex.constraint in ("", "loops", "numba"), f"exercise {ex.id}: unknown constraint {ex.constraint!r}"
        assert isinstance(ex.points, int) and ex.points > 0, f"exercise {ex.id}: points {ex.points!r}"
        assert ex.names and all(isinstance(name, str) for name in ex.names), f"exercise {ex.id}: names {ex.names!r}"
        assert (ROOT / ex.file).is_file(), f"exercise {ex.id}: {ex.file} does not exist"


def test_ids_are_in_order_and_numbered_without_gaps_per_notebook():
    keys = [tuple(map(int, ex.id.split("."))) for ex in EXERCISES]
    assert keys == sorted(keys), "the registry lists the exercises in the order of their ids"
    for notebook in {major for major, _ in keys}:
        minors = [minor for major, minor in keys if major == notebook]
        assert minors == list(range(1, len(minors) + 1)), \
            f"the exercises of notebook {notebook} are numbered {minors}, expected 1..{len(minors)}"


@pytest.mark.parametrize("ex", EXERCISES, ids=[ex.id for ex in EXERCISES])
def test_every_exercise_is_announced_in_its_notebook(ex):
    notebook = notebook_of(ex)
    heading = f"### Exercise {ex.id}:"
    announced = [text for kind, text in cells(notebook) if kind == "markdown" and text.startswith(heading)]
    assert len(announced) == 1, \
        f"{notebook.name} should have one markdown cell starting with {heading!r}, found {len(announced)}"
    text = announced[0]
    for name in ex.names:
        assert f"`{name}" in text, f"the announcement of exercise {ex.id} does not name the function {name}"
    if ex.file.endswith(".py"):
        assert ex.file in text, f"the announcement of exercise {ex.id} does not name its file {ex.file}"
        assert ex.marker in text, f"the announcement of exercise {ex.id} does not say how to check it ({ex.marker})"
    else:
        assert ex.file == f"tutorials/{notebook.name}", \
            f"exercise {ex.id} lives in {ex.file}, but its number names {notebook.name}"


@pytest.mark.parametrize("ex", EXERCISES, ids=[ex.id for ex in EXERCISES])
def test_every_exercise_has_one_solution_block_defining_its_functions(ex):
    text = source_of(ex)
    blocks = [block for block in find_blocks(text, ex.file) if block.id == ex.id]
    assert len(blocks) == 1, f"{ex.file} holds {len(blocks)} blocks of exercise {ex.id}, expected exactly 1"
    assert any(line.strip() for line in blocks[0].lines), f"the block of exercise {ex.id} is empty"
    tree = ast.parse(text)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name in ex.names:
        assert name in functions, f"{ex.file} defines no top-level function {name} (exercise {ex.id})"
    node = functions[ex.names[0]]
    block_start = blocks[0].line
    assert node.lineno < block_start <= node.end_lineno, \
        f"the block of exercise {ex.id} (line {block_start}) is not inside {ex.names[0]}"


@pytest.mark.parametrize("ex", [ex for ex in EXERCISES if ex.constraint],
                         ids=[ex.id for ex in EXERCISES if ex.constraint])
def test_the_solution_meets_its_constraint(ex):
    text = source_of(ex)
    node = next(node for node in ast.parse(text).body
                if isinstance(node, ast.FunctionDef) and node.name == ex.names[0])
    if ex.constraint == "numba":
        decorators = [ast.unparse(d) for d in node.decorator_list]
        assert any(re.match(r"(numba\.)?n?jit\b", d) for d in decorators), \
            f"exercise {ex.id} asks for a Numba kernel, but {node.name} has decorators {decorators}"
    if ex.constraint in ("loops", "numba"):
        assert any(isinstance(inner, ast.For) for inner in ast.walk(node)), \
            f"exercise {ex.id} ({ex.constraint}): {node.name} has no for loop"


@pytest.mark.parametrize("ex", EXERCISES, ids=[ex.id for ex in EXERCISES])
def test_every_exercise_has_a_test_file_with_its_marker(ex):
    files = sorted(TESTS.glob(f"test_{ex.id.replace('.', '_')}_*.py"))
    assert len(files) == 1, f"exercise {ex.id}: expected one tests/coursework/test_{ex.marker[9:]}_*.py, found {files}"
    text = files[0].read_text(encoding="utf-8")
    assert f"pytestmark = pytest.mark.{ex.marker}" in text, f"{files[0].name} does not set the marker {ex.marker}"
    tests = [node for node in ast.parse(text).body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    assert len(tests) >= 3, f"{files[0].name} holds {len(tests)} tests, expected at least 3"
    for node in tests:
        assert "student" in [arg.arg for arg in node.args.args], \
            f"{files[0].name}::{node.name} does not take the student fixture: it tests nothing of the student's"


def test_hidden_tests_belong_to_registered_exercises():
    markers = {ex.marker for ex in EXERCISES}
    for path in sorted((TESTS / "hidden").glob("test_*.py")):
        match = re.match(r"test_(\d+)_(\d+)_", path.name)
        assert match and f"exercise_{match[1]}_{match[2]}" in markers, \
            f"hidden/{path.name} is named after no registered exercise"
        assert f"pytestmark = pytest.mark.exercise_{match[1]}_{match[2]}" in path.read_text(encoding="utf-8"), \
            f"hidden/{path.name} does not set its exercise's marker"


def test_the_tutorials_readme_lists_every_exercise():
    readme = (ROOT / "tutorials" / "README.md").read_text(encoding="utf-8")
    assert "python -m minilottery.coursework build" in readme, "the README should say how to build the student copy"
    rows = {match[1]: match[0] for match in re.finditer(r"^\| \d \| (\d\.\d+) .*$", readme, re.M)}
    assert sorted(rows) == sorted(ex.id for ex in EXERCISES), \
        f"the README's table lists exercises {sorted(rows)}, the registry {[ex.id for ex in EXERCISES]}"
    for ex in EXERCISES:
        assert f"`{ex.file}`" in rows[ex.id] and all(f"`{name}`" in rows[ex.id] for name in ex.names), \
            f"the README's row of exercise {ex.id} should name {ex.file} and {', '.join(ex.names)}"
