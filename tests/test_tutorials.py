"""The tutorials: every notebook runs headless without error, and none is committed with outputs.

Each notebook is executed with nbclient in a fresh kernel whose working directory is a
temporary folder, so the run directories the notebooks write (under $MINILOTTERY_RUNS,
default ./runs) never land in the repository. MINILOTTERY_QUICK=1 selects the notebooks'
short schedules; PYTHONPATH puts this checkout first, so the kernel imports the
minilottery under test (and finds MNIST in its data/ folder).

Run only these with ``pytest -m tutorials``; skip them with ``pytest -m "not tutorials"``.
"""

import ast
import os
from pathlib import Path

import nbclient
import nbformat
import pytest

from minilottery import data, dataformats

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]-*.ipynb"))
CELL_TIMEOUT = 300          # seconds; a whole notebook in quick mode takes well under a minute
NEEDS_CIFAR = {"06-conv-tickets-cifar.ipynb"}


def cifar10_available():
    """True if load_cifar10(download=False) would find the files (without reading them)."""
    names = (dataformats.CIFAR10_FOLDER, dataformats.CIFAR10_TAR, dataformats.CIFAR10_NPZ,
             "data_batch_1")
    return any((folder / name).exists()
               for root, _ in data.data_roots()
               for folder in (root / "cifar10", root)
               for name in names)


def test_the_tutorials_exist_and_are_numbered_in_order():
    numbers = [int(path.name[:2]) for path in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)) and len(NOTEBOOKS) >= 8, \
        [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    """Valid nbformat 4, a python3 kernelspec, and no outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {index} has outputs"
            assert cell.get("execution_count") is None, f"{path.name}: cell {index} has an execution count"



@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_ends_with_its_closing_check(path):
    """The last cell is code that asserts: the check of the claims the notebook makes."""
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "code", f"{path.name} ends with a {last.cell_type} cell"
    source = "\n".join(line for line in last.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    asserts = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assert)]
    assert asserts, f"{path.name}: the last cell asserts nothing"

@pytest.mark.tutorials
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    if path.name in NEEDS_CIFAR and not cifar10_available():
        pytest.skip("CIFAR-10 not found (set MINILOTTERY_DATA to a folder holding cifar10/)")
    monkeypatch.setenv("MINILOTTERY_QUICK", "1")
    monkeypatch.setenv("MINILOTTERY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's inline backend draws the figures
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()      # raises CellExecutionError, naming the cell, on any error
    assert not any(output.get("output_type") == "error"
                   for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)
    if "run_experiment" in path.read_text(encoding="utf-8"):
        assert any((tmp_path / "runs").iterdir()), "run directories belong under $MINILOTTERY_RUNS"

