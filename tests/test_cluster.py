"""DaskExecutor: run_tasks on a Dask cluster gives what it gives in this process, and survives
dead workers.

One LocalCluster of two single-threaded workers serves the session (it takes a
few seconds to start: ``local_dask`` in conftest.py). Two tests use a scheduler
and two workers started as ``dask scheduler`` and ``dask worker`` commands, each
in a folder of its own. The work functions are toys (tests/cluster_tasks.py);
the lottery's trainings are tested in test_lottery_cluster.py.
"""

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import cluster_tasks  # the toy work functions, importable by the workers too
import numpy as np
import pytest

import minilottery.cluster
from minilottery.cluster import DaskExecutor, DaskRunner, TaskLost, _Outcome
from minilottery.parallel import InProcessExecutor, WorkerDied, run_tasks

NOT_INSTALLED = 'the cluster extra is not installed: pip install -e ".[cluster]"'
dask = pytest.importorskip("dask", reason=NOT_INSTALLED)
distributed = pytest.importorskip("distributed", reason=NOT_INSTALLED)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def executor(local_dask):
    """The session's LocalCluster of 2 workers (conftest.py)."""
    return local_dask


def run(executor, tasks, work, shared, ready=lambda task: True, on_progress=None):
    """``run_tasks`` through ``executor``: ``({task: result}, [progress report, ...])``."""
    reports = []

    def report(*args):
        reports.append(args)
        if on_progress:
            on_progress(*args)
    results = dict(run_tasks(tasks, ready=ready, work=work, shared=shared,
                             executor=executor, on_progress=report))
    return results, reports


def test_a_local_cluster_gives_the_results_and_progress_of_the_in_process_runner(executor):
    assert (executor.size, executor.shares_files) == (2, False)
    done = set()

    def ready(task):  # 2 and up wait for the task two before, as a level waits for its ticket
        return task < 2 or task - 2 in done

    def run_recording(executor_):
        done.clear()
        results, reports = {}, []
        for task, result in run_tasks(range(6), ready=ready, work=cluster_tasks.square,
                                      shared={"offset": 1}, executor=executor_,
                                      on_progress=lambda *args: reports.append(args)):
            done.add(task)
            results[task] = result
        return results, reports

    results, reports = run_recording(executor)
    expected_results, expected_reports = run_recording(InProcessExecutor())
    assert results == expected_results == {task: task * task + 1 for task in range(6)}
    assert Counter(reports) == Counter(expected_reports)


def test_a_tasks_exception_reaches_the_caller_with_the_workers_traceback(executor):
    with pytest.raises(ValueError, match="task 'bad' failed on a worker") as raised:
        run(executor, ["slow", "bad"], cluster_tasks.fail_if_bad, {"seconds": 30})
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert any(frame.name == "fail_if_bad" and frame.filename.endswith("cluster_tasks.py")
               for frame in frames), "".join(traceback.format_exception(raised.value))


def test_a_task_with_megabytes_of_inputs_runs_without_a_warning(executor):
    """A Conv-6 training carries about 18 MB of weights and masks: by design, not by mistake."""
    weights = np.ones(3 * 2**20, np.float32)  # 12 MiB, above Dask's 10 MB large-graph warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = list(run_tasks([weights], ready=lambda task: True, work=cluster_tasks.total,
                              shared=None, executor=executor))
    assert [result for _, result in done] == [weights.size]


def test_leaving_the_runner_stops_the_tasks_it_started(executor):
    class Stop(Exception):
        pass

    started = set()

    def stop_once_both_run(task, what, *pid):
        started.add(task) if what == "started" else None
        if started == {1, 2}:
            raise Stop

    with pytest.raises(Stop):
        run(executor, [1, 2], cluster_tasks.wait, {"seconds": 60}, on_progress=stop_once_both_run)
    begin = time.monotonic()
    results, _ = run(executor, [3, 4], cluster_tasks.square, {"offset": 0})
    # Tasks left running would hold both worker threads for a minute.
    assert results == {3: 9, 4: 16} and time.monotonic() - begin < 15


def test_a_task_whose_worker_is_killed_runs_again_and_gives_the_same_result(executor):
    pids = []  # of the processes that started task 1

    def kill_the_first_worker_of_task_1(task, what, *pid):
        if (task, what) == (1, "started"):
            pids.append(pid[0])
            if len(pids) == 1:
                worker_pids = set(executor.client.run(os.getpid).values())
                assert pid[0] in worker_pids and pid[0] != os.getpid()  # a worker, not a nanny
                os.kill(pid[0], signal.SIGKILL)

    results, _ = run(executor, [0, 1, 2, 3], cluster_tasks.wait, {"seconds": 1.0},
                     on_progress=kill_the_first_worker_of_task_1)
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert len(pids) == 2 and pids[0] != pids[1]  # killed once, then run by another process


def test_a_task_that_kills_every_worker_it_runs_on_is_lost_by_name(executor):
    with pytest.raises(TaskLost, match="lost task 'doomed': the worker running it died 2 times") as raised:
        run(executor, ["doomed"], cluster_tasks.die, None)
    assert isinstance(raised.value, WorkerDied) and raised.value.task == "doomed"
    executor.client.wait_for_workers(2, timeout=30)  # the nannies restart them, for what follows


class StubClient:
    """Just enough of a distributed.Client for a DaskRunner whose events the test delivers."""

    def subscribe_topic(self, topic, handler):
        self.deliver = handler

    def unsubscribe_topic(self, topic):
        pass

    def submit(self, function, *args, key, **options):
        return StubFuture(key)

    def cancel(self, futures, **options):
        pass


class StubFuture:
    """A future that the test finishes, with an outcome or an error."""

    def __init__(self, key):
        self.key, self.outcome, self.error = key, None, None

    def add_done_callback(self, callback):
        self.callback = callback

    def finish(self, outcome=None, error=None):
        self.outcome, self.error = outcome, error
        self.callback(self)

    def result(self):
        if self.error is not None:
            raise self.error
        return self.outcome


def test_a_result_waits_for_the_progress_reports_that_its_task_sent_before_it():
    """The result and the reports travel by different routes: the result may come first."""
    client, reports = StubClient(), []
    runner = DaskRunner(SimpleNamespace(client=client, size=1), cluster_tasks.square, None,
                        lambda *args: reports.append(args))
    runner.start("task")
    (future,) = [future for _, future in runner.tasks.values()]
    future.finish(_Outcome("result", attempt="a", reports=2))
    late = threading.Timer(0.3, lambda: [client.deliver((0.0, ("a", pickle.dumps(("task", step)))))
                                         for step in (1, 2)])
    late.start()
    assert runner.next_result() == ("task", "result") and reports == [("task", 1), ("task", 2)]
    late.join()


def test_a_result_does_not_wait_long_for_a_report_that_never_comes(monkeypatch):
    monkeypatch.setattr(minilottery.cluster, "REPORT_WAIT_SECONDS", 0.2)
    runner = DaskRunner(SimpleNamespace(client=StubClient(), size=1), cluster_tasks.square, None,
                        lambda *args: None)
    runner.start("task")
    (future,) = [future for _, future in runner.tasks.values()]
    future.finish(_Outcome("result", attempt="a", reports=1))
    begin = time.monotonic()
    assert runner.next_result() == ("task", "result") and time.monotonic() - begin < 2


def test_a_task_the_cluster_cancelled_is_lost_by_name():
    runner = DaskRunner(SimpleNamespace(client=StubClient(), size=1), cluster_tasks.square, None,
                        lambda *args: None)
    runner.start("task")
    (future,) = [future for _, future in runner.tasks.values()]
    future.finish(error=distributed.CancelledError("the scheduler left"))
    with pytest.raises(TaskLost, match="lost task 'task': the cluster cancelled it"):
        runner.next_result()


def test_a_large_shared_is_refused_with_its_size():
    with pytest.raises(ValueError, match=r"`shared` pickles to 33 MiB, above 32 MiB"):
        DaskRunner(SimpleNamespace(client=StubClient(), size=1), cluster_tasks.square,
                   bytes(33 * 2**20), lambda *args: None)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bad_addresses_are_named():
    for address in ("local:0", "local:two", "localhost:8786", 8786):
        with pytest.raises(ValueError, match="'tcp://HOST:PORT'.*'local:N'"):
            DaskExecutor(address)
    with pytest.raises(ValueError, match="applies to local:N only"):
        DaskExecutor("tcp://127.0.0.1:8786", allowed_failures=2)
    address = f"tcp://127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(OSError, match=f"no Dask scheduler answered at {address}"):
        DaskExecutor(address)


@pytest.fixture(scope="module")
def separate_workers(tmp_path_factory):
    """A scheduler and two workers started as commands, each in a folder of its own.

    Yields the scheduler's address and the workers' folders. The processes
    are this fixture's children, ended here.
    """
    tmp_path = tmp_path_factory.mktemp("cluster")
    folders = [tmp_path / name for name in ("scheduler", "worker-0", "worker-1")]
    for folder in folders:
        folder.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": cluster_tasks.worker_path()}
    commands = [
        ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0"],
        *[["distributed.cli.dask_worker", "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
           "--local-directory", str(folder / "scratch")] for folder in folders[1:]],
    ]
    processes = []
    try:
        for folder, command in zip(folders, commands):
            with open(folder / "log", "wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", *command, "--scheduler-file", str(scheduler_file)],
                    cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
            if folder is folders[0]:
                wait_for_file(scheduler_file, processes[0], timeout=30)
        yield json.loads(scheduler_file.read_text())["address"], {str(f) for f in folders[1:]}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_file(path, process, timeout):
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert process.poll() is None, f"the scheduler exited with code {process.returncode}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def test_workers_in_folders_of_their_own_run_the_tasks_of_a_remote_cluster(separate_workers):
    address, worker_folders = separate_workers
    with DaskExecutor(address) as executor:
        executor.client.wait_for_workers(2, timeout=60)
        assert set(executor.client.run(os.getcwd).values()) == worker_folders
        assert executor.size == 2
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", executor.dashboard_link)
        results, _ = run(executor, range(4), cluster_tasks.where, None)
        assert set(results) == set(range(4)) and set(results.values()) == worker_folders
        results, reports = run(executor, range(4), cluster_tasks.square, {"offset": 0})
        assert results == {task: task * task for task in range(4)}
        assert Counter(reports) == Counter((task, what) for task in range(4)
                                           for what in ("started", "half"))


CLIENT = """
import sys
from minilottery.cluster import DaskExecutor
from minilottery.parallel import run_tasks
import cluster_tasks

with DaskExecutor(sys.argv[1]) as executor:
    for _ in run_tasks([1, 2], ready=lambda task: True, work=cluster_tasks.wait,
                       shared={"seconds": 60}, executor=executor,
                       on_progress=lambda task, what, *pid: what == "started" and print(task, flush=True)):
        pass
"""


def test_the_tasks_of_a_killed_client_stop_and_free_the_workers(separate_workers):
    """The scheduler drops a dead client's futures; its running tasks stop at their next report."""
    address, _ = separate_workers
    client = subprocess.Popen([sys.executable, "-c", CLIENT, address], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": cluster_tasks.worker_path()})
    try:
        assert {client.stdout.readline().strip() for _ in range(2)} == {"1", "2"}
    finally:
        client.kill()
        client.wait()
    with DaskExecutor(address) as executor:
        begin = time.monotonic()
        results, _ = run(executor, [3, 4], cluster_tasks.square, {"offset": 0})
        # The killed client's tasks, left running, would hold both workers for a minute.
        assert results == {3: 9, 4: 16} and time.monotonic() - begin < 15


def test_without_distributed_the_executor_names_the_extra_to_install():
    """In a process where dask cannot be imported: the package imports, the executor says what to do."""
    script = (
        "import sys\n"
        "sys.modules['dask'] = sys.modules['distributed'] = None  # import of either fails\n"
        "import minilottery.cluster, minilottery.lottery, minilottery.run\n"
        "try:\n"
        "    minilottery.cluster.DaskExecutor('local:2')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'pip install -e ".[cluster]"' in done.stdout
