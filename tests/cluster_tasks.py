"""Toy work functions for tests/test_cluster.py, in a module of their own so that Dask
workers can import them by name (``worker_path`` puts this folder on the workers' path).

Each has the signature of ``run_tasks``' work: ``work(shared, task, progress)``.
"""

import os
import signal
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def worker_path():
    """PYTHONPATH for workers: this checkout's package and these tasks, wherever the workers run."""
    return os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])


def square(shared, task, progress):
    """``task**2 + shared["offset"]``, with two progress reports and a short wait between."""
    progress(task, "started")
    time.sleep(0.2)
    progress(task, "half")
    return task * task + shared["offset"]


def total(shared, task, progress):
    """The sum of the array ``task``, as an int."""
    return int(task.sum())


def fail_if_bad(shared, task, progress):
    """Raise ValueError for the task "bad"; sleep a few seconds for the others."""
    if task == "bad":
        raise ValueError(f"task {task!r} failed on a worker")
    return wait(shared, task, progress)


def wait(shared, task, progress):
    """Report ``(task, "started", pid)``, then sleep ``shared["seconds"]`` in short steps.

    Each step reports ``(task, "tick")``, so that a cancelled task stops at once.
    Returns ``task * 10``.
    """
    progress(task, "started", os.getpid())
    deadline = time.monotonic() + shared["seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.05)
        progress(task, "tick")
    return task * 10


def die(shared, task, progress):
    """Kill this worker process, as the out-of-memory killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def where(shared, task, progress):
    """The working directory the task ran in, after a short wait (so both workers get tasks)."""
    time.sleep(0.3)
    return os.getcwd()
