"""Shared test setup: a session-wide Numba warm-up, an isolated data search path,
hypothesis strategies."""


import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from minilottery import data

# A shell without job control starts a background job with SIGINT ignored, and an ignored
# signal stays ignored across exec: every process the tests start would then shrug off
# the Ctrl-C that the interrupt tests send. Handled (not ignored) here, it is reset to the
# default in each child, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def numba_warmup():
    """Compile (or load from cache) every kernel once, in float32 and float64, before the
    tests run, so no single test pays the compilation time (hypothesis deadlines aside)."""
    from minilottery import kernels

    for dtype in (np.float32, np.float64):
        x = np.ones((1, 1, 3, 3), dtype=dtype)
        cols = np.empty((4, 4), dtype=dtype)
        kernels.im2col(x, 2, 1, 0, cols)
        kernels.col2im(cols, 2, 1, 0, x)
        out = np.empty((1, 1, 1, 1), dtype=dtype)
        argmax = np.empty((1, 1, 1, 1), dtype=np.int32)
        kernels.maxpool_forward(x, 2, 2, out, argmax)
        kernels.maxpool_backward(out, argmax, x)
        y = np.ones((2, 2), dtype=dtype)
        kernels.relu_backward(y, y, y.copy())
    yield


@pytest.fixture(scope="session")
def small_mnist():
    """2,000 training, 500 validation and 500 test images of MNIST: a lottery level in a second."""
    from types import SimpleNamespace
    mnist = data.load_mnist()
    return SimpleNamespace(x_train=mnist.x_train[:2000], y_train=mnist.y_train[:2000],
                           x_val=mnist.x_val[:500], y_val=mnist.y_val[:500],
                           x_test=mnist.x_test[:500], y_test=mnist.y_test[:500])


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env var, an empty project data/ folder and an empty cache: only what a test writes exists."""
    monkeypatch.delenv("MINILOTTERY_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", tmp_path / "project")
    return tmp_path


# -- hypothesis strategies shared by the test modules --------------------------------

seeds = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def conv_cases(draw):
    """(N, C, H, W, O, k, stride, padding) with an output of at least 1x1."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    o = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 2))
    low = max(1, k - 2 * padding)
    h = draw(st.integers(low, low + 6))
    w = draw(st.integers(low, low + 6))
    return n, c, h, w, o, k, stride, padding


@st.composite
def pool_cases(draw):
    """(N, C, H, W, k, stride) with H, W >= k."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    h = draw(st.integers(k, k + 6))
    w = draw(st.integers(k, k + 6))
    return n, c, h, w, k, stride


@pytest.fixture(scope="module")
def local_dask(tmp_path_factory):
    """A DaskExecutor on a LocalCluster of 2 single-threaded workers, for the tests that need one.

    It starts in a few seconds, so a test module shares it; it ends with the
    module, so that no later test sees its processes or its threads. Its workers import
    this checkout and the toy tasks of tests/cluster_tasks.py, keep their
    checkpoints in a temporary folder, and let a task see one of its workers
    die, not two. The tests that use it skip when distributed is not installed.
    """
    pytest.importorskip("distributed", reason='the cluster extra is not installed: '
                                              'pip install -e ".[cluster]"')
    import cluster_tasks

    from minilottery.cluster import DaskExecutor
    from minilottery.pieces import CHECKPOINTS_ENV

    with pytest.MonkeyPatch.context() as patch:  # workers, and those restarted later, inherit these
        patch.setenv("PYTHONPATH", cluster_tasks.worker_path())
        patch.setenv(CHECKPOINTS_ENV, str(tmp_path_factory.mktemp("worker-checkpoints")))
        with DaskExecutor("local:2", allowed_failures=1) as executor:
            yield executor


def processes_carrying(marker):
    """The pids of the running processes whose command line contains ``marker`` (a
    submission's hostile child carries one, so a test can tell it outlived the grader)."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                alive.append(entry.name)
        except OSError:
            pass
    return alive


# -- a run killed with SIGKILL --------------------------------------------------------

def run_killed_and_resumed(tmp_path, script_text, kill_when, after_kill=None, timeout=300):
    """Run ``script_text`` (a program taking a run directory) to the end in tmp_path/whole;
    run it again in tmp_path/killed, SIGKILL it as soon as the file ``kill_when(killed)``
    exists, call ``after_kill(killed)``, and run it once more to resume. Returns the two
    run directories, for the caller to compare."""
    script = tmp_path / "run.py"
    script.write_text(script_text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(whole)], check=True, env=env)
    process = subprocess.Popen([sys.executable, str(script), str(killed)], env=env)
    deadline = time.monotonic() + timeout
    while not kill_when(killed).exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{kill_when(killed)} did not appear in {timeout} s"
        time.sleep(0.01)
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if after_kill is not None:
        after_kill(killed)
    subprocess.run([sys.executable, str(script), str(killed)], check=True, env=env)
    return whole, killed
