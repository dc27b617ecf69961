"""Worker processes: interrupts stop them, deaths are named, and killed runs leave nothing behind.

The tests that signal a run start it as a process of its own (``run_long_tasks``
below, in a new session, as a terminal or a cluster job would), with two workers
on tasks that would last a minute: whatever stops sooner was stopped, not finished.
"""

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minilottery.parallel import Terminated, WorkerDied, run_tasks, sigterm_as_interrupt
from minilottery.shared import MIN_SHARED_BYTES, SharedArrays

ROOT = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")
needs_shm = pytest.mark.skipif(not SHM.is_dir(), reason="lists segments in /dev/shm (Linux)")
TASK_SECONDS = 60


# -- what the workers run (module level, so that spawned workers can import it) --------

def report_then_sleep(shared, task, progress):
    """Report this worker's pid, then sleep for a minute: a long training."""
    progress(task, os.getpid())
    time.sleep(TASK_SECONDS)
    return task


def square(shared, task, progress):
    progress(task, "half")
    return task * task + int(shared.x[0])


def fail_or_sleep(shared, task, progress):
    if task == "bad":
        raise ValueError(f"task {task!r} failed in a worker")
    return report_then_sleep(shared, task, progress)


def run_long_tasks():
    """The process the tests signal: tasks 'a' and 'b' on two workers, the dataset in a segment.

    Prints ``TASK PID`` as each worker starts its task, then ``stopped`` and exits
    130 (SIGINT) or 143 (SIGTERM) if interrupted, as the command line does.
    """
    data = SimpleNamespace(x=np.ones(MIN_SHARED_BYTES, np.uint8))
    with sigterm_as_interrupt():
        try:
            for _ in run_tasks(["a", "b"], ready=lambda task: True, work=report_then_sleep,
                               shared=data, jobs=2,
                               on_progress=lambda task, pid: print(task, pid, flush=True)):
                pass
        except KeyboardInterrupt as stop:
            print("stopped", flush=True)
            sys.exit(143 if isinstance(stop, Terminated) else 130)


def hold_a_segment():
    """A run killed while it loads the dataset: one segment made, no worker yet."""
    shared = SharedArrays()
    shared.empty((MIN_SHARED_BYTES,), np.uint8)
    print("made", flush=True)
    time.sleep(TASK_SECONDS)


# -- helpers -----------------------------------------------------------------------------

def alive(pid):
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel, which counts zombies as alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in "ZX"


def wait_until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def shm_names_mapped_by(pids):
    """The /dev/shm files (segments, semaphores) that processes ``pids`` map, named or not."""
    names = set()
    for pid in pids:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
            if path.startswith(f"{SHM}/"):
                names.add(path[len(f"{SHM}/"):].removesuffix(" (deleted)"))
    return names


class Run:
    """A ``python -c`` process running one function of this module, in a session of its own."""

    def __init__(self, function):
        environment = {**os.environ,
                       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import test_parallel; test_parallel.{function}()"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
            start_new_session=True)
        self.pid = self.process.pid
        self.lines, self.errors = queue.Queue(), []  # its stdout line by line, its stderr
        self.readers = [threading.Thread(target=lambda: [self.lines.put(line.split())
                                                         for line in self.process.stdout]),
                        threading.Thread(target=lambda: self.errors.extend(self.process.stderr))]
        for reader in self.readers:
            reader.start()

    def read(self, count, seconds=30):
        """The next ``count`` lines it prints, as lists of words."""
        try:
            return [self.lines.get(timeout=seconds) for _ in range(count)]
        except queue.Empty:
            raise AssertionError(f"it printed nothing for {seconds} s; stderr:\n"
                                 f"{self.stop_all()}") from None

    def worker_pids(self):
        """Once both workers have started their tasks: {task: worker pid}."""
        return {task: int(pid) for task, pid in self.read(2)}

    def finish(self, seconds):
        """Wait for it to end: (the rest of its stdout, as lists of words; its stderr)."""
        self.process.wait(timeout=seconds)
        for reader in self.readers:
            reader.join()
        return list(self.lines.queue), "".join(self.errors)

    def stop_all(self):
        """Kill whatever is left of its process group; its stderr."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.finish(None)[1]


@pytest.fixture
def start():
    runs = []
    yield lambda function: runs.append(Run(function)) or runs[-1]
    for run in runs:
        run.stop_all()


# -- interrupts --------------------------------------------------------------------------

@pytest.mark.parametrize("signum, whole_group, code", [
    (signal.SIGINT, False, 130),   # kill -INT of the main process
    (signal.SIGINT, True, 130),    # Ctrl-C in a terminal: the whole foreground group
    (signal.SIGTERM, False, 143),  # kill of the main process
])
def test_an_interrupt_stops_the_workers_within_seconds(start, signum, whole_group, code):
    run = start("run_long_tasks")
    workers = run.worker_pids()
    started = time.monotonic()
    (os.killpg if whole_group else os.kill)(run.pid, signum)
    try:
        stdout, stderr = run.finish(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 10 s after {signum.name}: it waits for the tasks")
    seconds = time.monotonic() - started
    assert run.process.returncode == code, stderr
    assert stdout == [["stopped"]] and "Traceback" not in stderr, stderr
    assert seconds < 5, f"{seconds:.1f} s to stop"
    assert not [pid for pid in workers.values() if alive(pid)], "a worker outlived the run"


# -- deaths ------------------------------------------------------------------------------

def test_a_killed_worker_raises_worker_died_naming_its_task_and_stops_the_others():
    pids = {}

    def kill_b(task, pid):
        pids[task] = pid
        if task == "b":
            os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer does
    started = time.monotonic()
    with pytest.raises(WorkerDied, match=r"'b'.*SIGKILL") as died:
        list(run_tasks(["a", "b"], ready=lambda task: True, work=report_then_sleep,
                       shared=SimpleNamespace(), jobs=2, on_progress=kill_b))
    assert died.value.task == "b" and died.value.exitcode == -signal.SIGKILL
    assert time.monotonic() - started < 10, "it waited for the other worker's task"
    assert set(pids) == {"a", "b"} and not [pid for pid in pids.values() if alive(pid)]
    assert multiprocessing.active_children() == []


def test_a_failing_task_raises_its_exception_with_the_workers_traceback():
    data = SimpleNamespace(x=np.zeros(1, np.uint8))
    started = time.monotonic()
    with pytest.raises(ValueError, match="task 'bad' failed in a worker") as failed:
        list(run_tasks(["slow", "bad"], ready=lambda task: True, work=fail_or_sleep,
                       shared=data, jobs=2))
    remote = str(failed.value.__cause__)
    assert "Traceback" in remote and "in fail_or_sleep" in remote
    assert time.monotonic() - started < 10, "it waited for the other worker's task"
    assert multiprocessing.active_children() == []


@needs_shm
def test_a_killed_main_process_leaves_no_worker_and_no_segment(start):
    run = start("run_long_tasks")
    workers = run.worker_pids()
    os.kill(run.pid, signal.SIGKILL)
    run.process.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in workers.values()), 5), \
        "workers outlived the main process"
    SharedArrays()
    assert not list(SHM.glob(f"minilottery-{run.pid}-*"))


# -- what a killed run leaves in /dev/shm ------------------------------------------------

@needs_shm
def test_a_killed_process_group_leaves_no_named_segment_or_semaphore(start):
    run = start("run_long_tasks")
    workers = run.worker_pids()
    mapped = shm_names_mapped_by([run.pid, *workers.values()])
    assert any(name.startswith(f"minilottery-{run.pid}-") for name in mapped)
    os.killpg(run.pid, signal.SIGKILL)  # a closed terminal, a cluster job's end
    run.process.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in workers.values()), 5)
    SharedArrays()  # a later run starts
    left = sorted(name for name in mapped if (SHM / name).exists())
    assert left == [], f"the killed run left {left} in {SHM}"


@needs_shm
def test_segments_of_a_run_killed_while_loading_are_removed_by_the_next_run(start):
    run = start("hold_a_segment")
    run.read(1)
    os.killpg(run.pid, signal.SIGKILL)
    run.process.wait()
    assert len(list(SHM.glob(f"minilottery-{run.pid}-*"))) == 1  # nothing else could remove it
    SharedArrays()
    assert not list(SHM.glob(f"minilottery-{run.pid}-*"))


@needs_shm
def test_the_sweep_spares_segments_that_may_be_alive_or_are_not_ours(tmp_path):
    import fcntl
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = ended.pid   # no process has this pid now
    paths = {kind: SHM / f"minilottery-{pid}-{index:08x}" for index, (kind, pid) in enumerate(
        [("dead", dead), ("locked", dead), ("pid alive", os.getpid()), ("foreign", dead)])}
    for path in paths.values():
        path.write_bytes(b"x")
    lock = os.open(paths["locked"], os.O_RDONLY)  # a live creator in another pid namespace
    fcntl.flock(lock, fcntl.LOCK_SH)
    if os.getuid() == 0:
        os.chown(paths["foreign"], 65534, 65534)  # another user's
    else:
        paths["foreign"].unlink()
        del paths["foreign"]
    try:
        SharedArrays()
        assert {kind for kind, path in paths.items() if path.exists()} == set(paths) - {"dead"}
    finally:
        os.close(lock)
        for path in paths.values():
            path.unlink(missing_ok=True)


@needs_shm
def test_segments_lose_their_names_once_every_worker_has_mapped_them():
    named = []
    with SharedArrays() as arrays:
        x = arrays.empty((MIN_SHARED_BYTES,), np.uint8)
        x[:] = 7
        assert len(list(SHM.glob(f"minilottery-{os.getpid()}-*"))) == 1
        done = run_tasks([1, 2, 3], ready=lambda task: True, work=square,
                         shared=SimpleNamespace(x=x), jobs=2, shared_arrays=arrays,
                         on_progress=lambda *_: named.append(
                             list(SHM.glob(f"minilottery-{os.getpid()}-*"))))
        assert sorted(done) == [(1, 8), (2, 11), (3, 16)]
        assert x[0] == 7  # still mapped here
    assert named and not any(named), f"named while the workers ran: {named}"


# -- what any number of workers gives ----------------------------------------------------

def test_results_progress_and_order_do_not_depend_on_jobs():
    """Task t needs t - 1's result (a chain, as a trial's levels are) except 10 and 11."""
    data = SimpleNamespace(x=np.full(3, 5, np.uint8))
    outcomes = []
    for jobs in (1, 2):
        done, progress = [], []
        ready = lambda task: task >= 10 or task == 0 or task - 1 in done  # noqa: E731
        for task, result in run_tasks([3, 2, 1, 0, 10, 11], ready=ready, work=square, shared=data,
                                      jobs=jobs, priority=lambda task: task,
                                      on_progress=lambda *args: progress.append(args)):
            done.append(task)
            outcomes.append((jobs, task, result))
        assert [task for task in done if task < 10] == [0, 1, 2, 3]
        assert sorted(progress) == sorted((task, "half") for task in [0, 1, 2, 3, 10, 11])
    by_jobs = [sorted((task, result) for j, task, result in outcomes if j == jobs) for jobs in (1, 2)]
    assert by_jobs[0] == by_jobs[1] == [(t, t * t + 5) for t in [0, 1, 2, 3, 10, 11]]
