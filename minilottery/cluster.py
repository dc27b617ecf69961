"""Run the lottery's trainings on a Dask cluster: the executor behind ``--cluster ADDRESS``.

``DaskExecutor`` is the third executor of ``minilottery.parallel`` (see
"Executors" there), beside the in-process runner and the process pool. It
sends each task to a ``distributed`` cluster: one you started (``tcp://HOST:PORT``,
e.g. a Slurm allocation through dask-jobqueue) or a ``LocalCluster`` it starts
itself (``local:N``, N single-threaded worker processes of this machine).

Its workers share nothing with this process but the package: no file system,
no shared memory (``shares_files = False``). So a task travels with its inputs
as values (``shared`` once pickled, with every task) and its result comes back
as a value, for the client to write.

Three things the cluster does for us, and how:

- **Progress.** A running task's ``progress(*args)`` becomes an event of the
  scheduler's event log (``Worker.log_event``) on a topic of this run, which
  the client subscribes to (``Client.subscribe_topic``). It is the channel
  distributed itself uses to forward workers' ``print`` calls: the messages
  ride the worker's and the client's existing connections to the scheduler,
  with no second connection, no polling and no experimental API (Pub/Sub).
  Each finished task says how many reports it sent, so its result is
  returned only after all of them (or a few seconds' wait).
- **Faults.** A worker whose process dies mid-task (killed, preempted, out of
  memory) is restarted by its nanny, and the scheduler runs the task again
  elsewhere: trainings are deterministic, so the rerun gives the same
  result. A task whose workers die ``allowed_failures + 1`` times is lost
  for good: ``TaskLost``, a ``parallel.WorkerDied``. An exception *raised* by
  a task is not retried (it would only fail again): it reaches the caller
  with the worker's traceback.
- **Stopping.** Leaving the runner cancels every future. Dask cannot interrupt
  a running task, so ours check at each progress report whether their task
  was cancelled, and stop there; a worker is then free within one report's
  time (an evaluation, for a training), not at the end of the training.

distributed is an optional dependency (``pip install -e ".[cluster]"``): this
module imports it only when a DaskExecutor is made.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import time
import uuid
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .parallel import WorkerDied

INSTALL_HINT = 'pip install -e ".[cluster]" (or pip install "minilottery[cluster]")'

#: How long a finished task's result waits for progress reports still on their way.
REPORT_WAIT_SECONDS = 5.0

#: ``shared`` travels with every task, so it must stay small: a config and a data
#: specification (workers load datasets themselves), not the data.
MAX_SHARED_BYTES = 32 * 2**20


def _distributed():
    """The ``distributed`` module, or an ImportError that says which extra to install."""
    try:
        import distributed
    except ImportError as error:
        raise ImportError(f"running on a Dask cluster needs dask.distributed, which is not "
                          f"installed ({error}); install the cluster extra: {INSTALL_HINT}") from error
    return distributed


def _dask():
    """The ``dask`` module (installed with distributed)."""
    _distributed()
    import dask
    return dask


class TaskLost(WorkerDied):
    """A task the cluster could not run: every worker that tried died, or the cluster dropped it.

    ``task`` is the task and ``why`` says what happened. A WorkerDied, so that
    callers treat it as one (the run can be resumed).
    """

    def __init__(self, task, why):
        RuntimeError.__init__(self, task, why)
        self.task, self.why, self.pid, self.exitcode = task, why, None, None

    def __str__(self):
        return f"the Dask cluster lost task {self.task!r}: {self.why}"


class DaskExecutor:
    """Run tasks on the Dask cluster at ``address``: ``tcp://HOST:PORT``, or ``local:N``.

    ``local:N`` starts a LocalCluster of N worker processes with one thread
    each, each restarted by its nanny if it dies; ``allowed_failures`` (for
    ``local:N`` only; a remote scheduler has its own
    ``distributed.scheduler.allowed-failures``, 3 by default) is how many of a
    task's workers may die before the task is lost.

    ``size``: N for ``local:N`` (a dead worker's nanny restarts it); for a
    remote cluster, the worker threads it has now, at least 1 (tasks wait on
    the scheduler for workers still to come). ``run_tasks`` reads it after
    each result, so a remote cluster that grows (jobs of a batch system
    starting) is used fully once a task of the smaller one has finished.
    ``dashboard_link`` is the address of the scheduler's dashboard, or None.
    ``close()`` (or leaving a ``with`` block) disconnects, and stops a cluster
    it started.
    """

    shares_files = False

    def __init__(self, address, *, allowed_failures=None):
        self.address, self.cluster, self.client = address, None, None
        self.local_workers = _local_workers(address)
        if self.local_workers is None and allowed_failures is not None:
            raise ValueError(f"DaskExecutor({address!r}): allowed_failures applies to local:N "
                             "only; a remote cluster's scheduler is configured where it is started")
        distributed = _distributed()
        if self.local_workers is None:
            try:
                self.client = distributed.Client(address, set_as_default=False)
            except (OSError, TimeoutError) as error:
                raise OSError(f"DaskExecutor: no Dask scheduler answered at {address} "
                              f"({error})") from error
            return
        self.cluster = _local_cluster(distributed, self.local_workers, allowed_failures)
        try:
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except BaseException:
            self.cluster.close()
            raise

    @property
    def size(self):
        if self.local_workers is not None:
            return self.local_workers
        return max(1, sum(self.client.nthreads().values()))

    @property
    def dashboard_link(self):
        """The URL of the scheduler's dashboard, or None if it serves none."""
        services = self.client.scheduler_info(n_workers=0).get("services", {})
        return self.client.dashboard_link if "dashboard" in services else None

    @contextmanager
    def runner(self, work, shared, report, tasks=None, shared_arrays=None):
        """A DaskRunner for one ``run_tasks``; leaving the block cancels what still runs.

        ``shared_arrays`` is ignored: a cluster's workers share no memory with
        this process, so ``shared`` is pickled whole.
        """
        runner = DaskRunner(self, work, shared, report)
        try:
            yield runner
        finally:
            runner.close()

    def close(self):
        """Disconnect from the cluster, and stop it if this executor started it."""
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"DaskExecutor({self.address!r})"


def _local_workers(address):
    """N for ``local:N``, None for a scheduler's address; ValueError for anything else."""
    if isinstance(address, str):
        if address.startswith("local:"):
            count = address[len("local:"):]
            if count.isdigit() and int(count) >= 1:
                return int(count)
        elif "://" in address:
            return None
    raise ValueError(f"DaskExecutor: address must be 'tcp://HOST:PORT' (a running scheduler) "
                     f"or 'local:N' (N >= 1 worker processes here), got {address!r}")


def _local_cluster(distributed, workers, allowed_failures):
    """A quiet LocalCluster of ``workers`` single-threaded processes with nannies.

    Its scheduler lives in this process, so the settings below apply to it:
    one task per worker thread at a time (worker-saturation 1.0), so that the
    rest wait on the scheduler, where ``priority`` orders them. The dashboard
    takes any free port. Logs: critical only, for every failure reaches the
    caller as an exception (a task's own, or TaskLost), which the caller
    reports once.
    Each worker's trainings get the cores divided among the workers
    ($MINILOTTERY_THREADS, see ``parallel.worker_threads``).
    """
    settings = {"distributed.scheduler.worker-saturation": 1.0}
    if allowed_failures is not None:
        if type(allowed_failures) is not int or allowed_failures < 0:
            raise ValueError(f"DaskExecutor: allowed_failures must be an integer >= 0, "
                             f"got {allowed_failures!r}")
        settings["distributed.scheduler.allowed-failures"] = allowed_failures
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    with _dask().config.set(settings):
        return distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=":0", silence_logs=logging.CRITICAL,
            env={"NUMBA_NUM_THREADS": threads, "MINILOTTERY_THREADS": threads,
                 "OPENBLAS_NUM_THREADS": "1"})


@dataclass
class _Outcome:
    """What a task sends back: its result, and how many progress reports its attempt sent."""

    result: Any
    attempt: str
    reports: int


class TaskCancelled(Exception):
    """Raised inside a task, at a progress report, once the client has cancelled the task."""


def _run_task(work, shared_pickle, task, topic):
    """The Dask task: ``work(shared, task, progress)`` on a worker, with progress as events.

    Each run of a task is an *attempt* (a rerun after a worker died is a new
    one); its reports carry its id, and its outcome the number it sent.
    """
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    attempt, sent = uuid.uuid4().hex, 0

    def progress(*args):
        nonlocal sent
        if _cancelled(worker, key):
            raise TaskCancelled(key)
        worker.log_event(topic, (attempt, pickle.dumps(args)))  # msgpack takes bytes, not any tuple
        sent += 1

    result = work(pickle.loads(shared_pickle), task, progress)
    return _Outcome(result, attempt, sent)


def _cancelled(worker, key):
    """Whether the scheduler has released the task ``key`` that this worker runs.

    A cancelled task stays in the worker's state machine as "cancelled" until
    it returns; one already forgotten is gone from it.
    """
    state = worker.state.tasks.get(key)
    return state is None or state.state == "cancelled"


class DaskRunner:
    """The runner of one ``run_tasks`` on a DaskExecutor's cluster (see ``parallel``).

    One queue receives, from distributed's threads, the progress events of
    this run's topic and the futures as they finish; ``next_result`` takes them
    in order, reporting progress until a future is done.
    """

    def __init__(self, executor, work, shared, report):
        self.executor, self.client = executor, executor.client
        self.work, self.report = work, report
        self.shared_pickle = pickle.dumps(shared)
        if len(self.shared_pickle) > MAX_SHARED_BYTES:
            raise ValueError(f"DaskExecutor: `shared` pickles to {len(self.shared_pickle) / 2**20:.0f} "
                             f"MiB, above {MAX_SHARED_BYTES // 2**20} MiB: it travels with every task, "
                             "so send a specification of large data (workers load it themselves)")
        self.token = uuid.uuid4().hex[:8]
        self.topic = f"minilottery-progress-{self.token}"
        self.inbox = queue.Queue()  # ("progress", event) and ("done", key), from distributed's threads
        self.finished = deque()  # keys of futures done, in the order they finished
        self.tasks = {}  # future key -> (task, future), for the tasks started and not yet returned
        self.received = Counter()  # attempt -> progress reports received
        self.started = 0
        self.client.subscribe_topic(self.topic, lambda event: self.inbox.put(("progress", event[1])))

    @property
    def size(self):
        return self.executor.size

    @property
    def running(self):
        return len(self.tasks)

    def start(self, task):
        """Submit ``task``, to run as soon as a worker thread is free.

        Among this run's tasks waiting for a worker, earlier-started ones go
        first (``priority``, higher first). Dask's own order is nearly that
        (graph generations, then first in, first out), but a task back in the
        queue after its worker died would wait behind the ones submitted in the
        same 60 ms; with the priority it goes first, as run_tasks meant.

        The task travels inside the graph, with its inputs (a training's
        weights and mask: megabytes), rather than scattered to a worker
        beforehand: the scheduler can then rerun it after any worker's death,
        while scattered data dies with the worker that holds it. So Dask's
        warning about large graphs does not apply. The key names the task, for
        the dashboard.
        """
        key = f"{getattr(self.work, '__name__', 'task')}-{self.started}-{str(task)[:100]}-{self.token}"
        with _dask().config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            future = self.client.submit(_run_task, self.work, self.shared_pickle, task, self.topic,
                                        key=key, pure=False, retries=0, priority=-self.started)
        self.started += 1
        self.tasks[future.key] = (task, future)
        future.add_done_callback(lambda done: self.inbox.put(("done", done.key)))

    def next_result(self):
        """Wait for the next task to finish and return ``(task, result)``, reporting progress meanwhile.

        Raises the task's exception (with the worker's traceback), or TaskLost.
        The task's own reports all come first: they and its result travel by
        different routes and may arrive in either order, so the result waits
        for them, but only a few seconds (progress is advisory).
        """
        while not self.finished:
            self._take(self.inbox.get())
        task, future = self.tasks.pop(self.finished.popleft())
        outcome = self._outcome(task, future)
        deadline = time.monotonic() + REPORT_WAIT_SECONDS
        while self.received[outcome.attempt] < outcome.reports:
            try:
                self._take(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        self.received.pop(outcome.attempt, None)
        return task, outcome.result

    def _take(self, message):
        """Report a progress event, or note a finished future for ``next_result``."""
        kind, value = message
        if kind == "progress":
            attempt, args = value
            self.received[attempt] += 1
            self.report(*pickle.loads(args))
        else:
            self.finished.append(value)

    def _outcome(self, task, future):
        """The finished future's _Outcome; its task's exception, or TaskLost."""
        distributed = _distributed()
        try:
            return future.result()
        except distributed.KilledWorker as error:
            raise TaskLost(task, f"the worker running it died {error.allowed_failures + 1} times, "
                                 f"the last time {error.last_worker.address} (the scheduler gives "
                                 "a task up after distributed.scheduler.allowed-failures = "
                                 f"{error.allowed_failures} deaths)") from error
        except distributed.CancelledError as error:
            raise TaskLost(task, f"the cluster cancelled it ({error})") from error

    def close(self):
        """Cancel every task still running or waiting, and stop listening to this run's progress."""
        futures = [future for _, future in self.tasks.values()]
        self.tasks.clear()
        try:
            if futures:
                self.client.cancel(futures, force=True, reason="the run stopped")
        finally:
            self.client.unsubscribe_topic(self.topic)
