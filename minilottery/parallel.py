"""Run tasks in the order their inputs appear, in this process or in worker processes.

The lottery's trainings form a chain per trial (level k's ticket needs level
k-1's) with independent controls hanging off every level. ``run_tasks``
starts a task as soon as ``ready(task)`` says its inputs exist, tickets
first (they are the critical path), and yields ``(task, result)`` as each
one finishes; the caller then writes the inputs of the next ones.

Where the tasks run is a *runner*'s business. A runner has a ``size`` (how many
tasks it runs at once), a count of ``running`` tasks, ``start(task)``, and
``next_result()``, which waits for a running task to finish and returns
``(task, result)``, passing on progress reports meanwhile. Two runners:

- ``InProcess`` runs one task at a time, here;
- ``WorkerPool`` runs ``jobs`` tasks at once in spawned worker processes (spawned,
  so nothing of this process's thread pools is inherited). Each worker receives
  ``shared`` once, when it starts, its large arrays through shared memory rather
  than as pickled bytes (see minilottery.shared: one copy of the dataset for all
  processes).

Stopping is the main process's job: Ctrl-C (SIGINT), SIGTERM inside
``sigterm_as_interrupt()``, or any exception ends the workers within a fraction
of a second, midway through their tasks (trainings checkpoint atomically, so a
resumed run redoes only the iterations since the last checkpoint). A worker that
dies unasked raises ``WorkerDied``; one whose task raises sends the exception
here, with its traceback. A main process killed outright takes its workers with
it (``_exit_with_parent``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import traceback
from contextlib import contextmanager, nullcontext

from .shared import SharedArrays
from .threads import available_cores


def run_tasks(tasks, *, ready, work, shared, executor=None, jobs=1, priority=None,
              prepare=None, on_progress=None, shared_arrays=None):
    """Yield ``(task, work(shared, task, progress))`` for every task, as each finishes.

    ``executor`` says where the tasks run (see "Executors" below); without
    one, ``ProcessExecutor(jobs)`` (which runs a lone job in this process).
    ``ready(task)`` tells whether a task's inputs exist; it is asked again
    after every finished task. ``prepare(task)``, if given, turns a ready task
    into what is sent to ``work`` (its inputs read, say); that is then the
    ``task`` yielded. ``progress(*args)`` inside ``work`` reaches
    ``on_progress(*args)`` here, from worker processes too. ``shared_arrays``:
    the SharedArrays that made arrays of ``shared`` (they are then sent as they
    are); without it, large arrays are copied into shared memory for the run.
    Worker processes unlink the segments' names as soon as every worker has
    mapped them (``SharedArrays.unlink``).
    """
    executor = executor or ProcessExecutor(jobs)
    pending = sorted(tasks, key=priority) if priority else list(tasks)
    report = on_progress or (lambda *args: None)
    with executor.runner(work, shared, report, tasks=len(pending),
                         shared_arrays=shared_arrays) as runner:
        while pending or runner.running:
            while pending and runner.running < runner.size:
                task = _next_ready(pending, ready, runner.running)
                if task is None:
                    break
                runner.start(prepare(task) if prepare else task)
            yield runner.next_result()


# ----------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------
#
# An executor is where tasks run. It has
#
#     size           how many tasks it runs at once
#     shares_files   whether its workers see this process's files (a run
#                    directory on the same machine): if not, tasks bring their
#                    inputs and take their outputs home as values
#     runner(work, shared, report, tasks=..., shared_arrays=...)
#                    a context manager giving a *runner* for one run_tasks: it
#                    has ``size``, ``running``, ``start(task)`` and ``next_result()``,
#                    which waits for a running task and returns ``(task, result)``,
#                    calling ``report(*args)`` for the progress its tasks send.
#                    Leaving the block stops whatever still runs.
#
# Three implement it: InProcessExecutor and ProcessExecutor here, and
# minilottery.cluster.DaskExecutor for a Dask cluster.

class InProcessExecutor:
    """Run one task at a time, here."""

    size = 1
    shares_files = True

    @contextmanager
    def runner(self, work, shared, report, tasks=None, shared_arrays=None):
        yield InProcess(work, shared, report)

    def __repr__(self):
        return "InProcessExecutor()"


class ProcessExecutor:
    """Run ``jobs`` tasks at once in spawned worker processes of this machine (a WorkerPool)."""

    shares_files = True

    def __init__(self, jobs):
        if type(jobs) is not int or jobs < 1:
            raise ValueError(f"ProcessExecutor: jobs must be an integer >= 1, got {jobs!r}")
        self.size = jobs

    @contextmanager
    def runner(self, work, shared, report, tasks=None, shared_arrays=None):
        """A WorkerPool of ``size`` workers (no more than ``tasks``); one task at a time runs here."""
        size = self.size if tasks is None else min(self.size, tasks)
        if size <= 1:
            yield InProcess(work, shared, report)
            return
        with (SharedArrays() if shared_arrays is None else nullcontext(shared_arrays)) as arrays, \
                WorkerPool(size, work, arrays.dumps(shared), report) as pool:
            arrays.unlink()  # every worker has mapped the segments: no process needs their names
            yield pool

    def __repr__(self):
        return f"ProcessExecutor({self.size})"


def _next_ready(pending, ready, running):
    """Remove and return the first ready task; None if none is ready but some are running."""
    for index, task in enumerate(pending):
        if ready(task):
            return pending.pop(index)
    if running:
        return None
    raise RuntimeError(f"no task can start: {pending[0]} waits for inputs nothing will write")


class InProcess:
    """The runner of one task at a time, in this process: it runs when its result is asked for."""

    size = 1

    def __init__(self, work, shared, report):
        self.work, self.shared, self.report = work, shared, report
        self.task = None

    @property
    def running(self):
        return 0 if self.task is None else 1

    def start(self, task):
        self.task = task

    def next_result(self):
        task, self.task = self.task, None
        return task, self.work(self.shared, task, self.report)


# ----------------------------------------------------------------------------
# Worker processes
# ----------------------------------------------------------------------------

class WorkerDied(RuntimeError):
    """A worker process ended unasked: killed (by the out-of-memory killer, say) or crashed.

    ``task`` is the task it was running (None: it was starting or idle) and
    ``exitcode`` its exit status as multiprocessing gives it: -N if signal N killed it.
    """

    def __init__(self, task, pid, exitcode):
        super().__init__(task, pid, exitcode)
        self.task, self.pid, self.exitcode = task, pid, exitcode

    def __str__(self):
        doing = f"running {self.task!r}" if self.task is not None else "starting or idle"
        return f"worker process {self.pid}, {doing}, {_how_it_ended(self.exitcode)}"


def _how_it_ended(exitcode):
    if exitcode is None:
        return "closed its pipe"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"was killed by {name}" + (" (as the out-of-memory killer does)" * (name == "SIGKILL"))


class RemoteTraceback(Exception):
    """The traceback, as text, of an exception raised in a worker: the cause of its copy here."""

    def __str__(self):
        return "\n" + self.args[0]


class WorkerPool:
    """The runner of ``size`` tasks at once, in spawned processes with a pipe each.

    Down a worker's pipe go ``shared`` (once) and then its tasks; up come
    progress reports and outcomes. Why not ``concurrent.futures.ProcessPoolExecutor``:
    its queues rest on named POSIX semaphores (/dev/shm/sem.mp-*), which a killed
    process group leaves behind; its ``shutdown`` waits for running tasks rather
    than stopping them; and a dead worker breaks the pool without saying which
    task it ran. A pipe needs no semaphore, and waiting on every pipe and every
    process's sentinel at once tells the moment a worker speaks or ends.

    The pool is ready when made: every worker has mapped ``shared``.
    """

    def __init__(self, size, work, shared_pickle, report):
        self.size, self.report, self.workers = size, report, []
        context = multiprocessing.get_context("spawn")
        try:
            with _threads_per_worker(), _sigint_ignored():
                for _ in range(size):
                    self.workers.append(_Worker(context, work))
            for worker in self.workers:
                worker.send_bytes(shared_pickle)
            while not all(worker.ready for worker in self.workers):
                worker, _, _ = self._receive()
                worker.ready = True  # a worker's first message says it has mapped `shared`
        except BaseException:
            self.close()
            raise

    @property
    def running(self):
        return sum(worker.task is not None for worker in self.workers)

    def start(self, task):
        worker = next(worker for worker in self.workers if worker.task is None)
        worker.task = task
        worker.send_bytes(pickle.dumps(task))
        self._share_cores()

    def next_result(self):
        while True:
            worker, kind, value = self._receive()
            if kind == "progress":
                self.report(*value)
            else:  # "done"
                task, worker.task = worker.task, None
                self._share_cores()
                return task, value

    def _share_cores(self):
        """Tell every busy worker its share of the cores: all of them divided by the
        tasks running now. A lone task (the ticket chain's, say) gets every core."""
        busy = [worker for worker in self.workers if worker.task is not None]
        for worker in busy:
            worker.set_threads(max(1, available_cores() // len(busy)))

    def _receive(self):
        """Wait for the next message of any worker: ``(worker, kind, value)``.

        Raises the exception of a failed task (its cause: the worker's traceback),
        and WorkerDied as soon as a worker has ended.
        """
        handles = {}
        for worker in self.workers:
            handles[worker.conn] = handles[worker.process.sentinel] = worker
        worker = handles[multiprocessing.connection.wait(list(handles))[0]]
        kind, value = worker.receive()
        if kind == "failed":
            error, text = value
            raise error from RemoteTraceback(text)
        return worker, kind, value

    def close(self):
        """End every worker and wait for it: idle ones are told to stop, busy ones terminated.

        A worker busy now is one whose task is abandoned: by an interrupt, or
        because another worker failed. SIGKILL follows if SIGTERM is not enough.
        """
        for worker in self.workers:
            if worker.ready and worker.task is None:
                worker.stop()
            else:
                worker.process.terminate()
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            worker.cores.close()
            worker.process.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class _Worker:
    """A worker process, the main process's end of its pipe, and what it is doing."""

    def __init__(self, context, work):
        self.conn, child_end = context.Pipe()
        cores_end, self.cores = context.Pipe(duplex=False)   # thread counts, down only
        self.process = context.Process(target=_worker_main, args=(child_end, work, cores_end),
                                       daemon=True)
        self.process.start()
        child_end.close()  # the worker holds the only copy now: its death closes the pipe
        cores_end.close()
        self.ready = False
        self.task = None
        self.threads = None

    def set_threads(self, count):
        if count != self.threads:
            self.threads = count
            try:
                self.cores.send(count)
            except OSError:
                pass  # it has died; the task pipe reports that

    def send_bytes(self, message):
        try:
            self.conn.send_bytes(message)
        except OSError:  # its end is closed: it has died
            self.died()

    def receive(self):
        """The next message of this worker, which has one or has ended (then WorkerDied)."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass  # its end closed, perhaps in the middle of a message
        self.died()

    def died(self):
        self.process.join(timeout=1)
        raise WorkerDied(self.task, self.process.pid, self.process.exitcode)

    def stop(self):
        try:
            self.conn.send_bytes(pickle.dumps(None))
        except OSError:
            pass  # already gone


def _worker_main(conn, work, cores):
    """A worker's life: map ``shared``, say so, then run each task that comes, until None comes.

    Meanwhile a thread listens on ``cores`` for the share of the cores that the
    main process gives this worker's training (``worker_threads``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # see _sigint_ignored
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    threading.Thread(target=_listen_for_cores, args=(cores,), daemon=True).start()
    try:
        shared = pickle.loads(conn.recv_bytes())
        conn.send(("ready", None))
        for task in iter(conn.recv, None):
            conn.send_bytes(_outcome(work, shared, task,
                                     lambda *args: conn.send(("progress", args))))
    except (EOFError, ConnectionError):
        pass  # the main process is gone, and _exit_with_parent is about to end this one


_cores_given = None   # in a worker: the thread count the main process gave it last


#: Elsewhere (a Dask worker, say), the threads a training uses, if set; else every core.
THREADS_ENV = "MINILOTTERY_THREADS"


def worker_threads():
    """The threads a training should use now: in a worker process of ours, its share of
    the cores (which changes as other trainings start and end); elsewhere
    $MINILOTTERY_THREADS if set, else None (every core)."""
    if _cores_given is not None:
        return _cores_given
    setting = os.environ.get(THREADS_ENV)
    return int(setting) if setting and setting.isdigit() and int(setting) > 0 else None


def _listen_for_cores(cores):
    global _cores_given
    try:
        while True:
            _cores_given = cores.recv()
    except (EOFError, OSError):
        pass


def _outcome(work, shared, task, progress):
    """The pickled message that reports ``work(shared, task, progress)``.

    ``("done", result)``, or ``("failed", (exception, its traceback as text))``;
    an exception (or result) that does not survive pickling is sent as a
    RuntimeError that says what it was.
    """
    try:
        return pickle.dumps(("done", work(shared, task, progress)))
    except Exception as error:
        text = "".join(traceback.format_exception(error))
        try:
            message = pickle.dumps(("failed", (error, text)))
            pickle.loads(message)  # some exceptions pickle but cannot be rebuilt
            return message
        except Exception:
            return pickle.dumps(("failed", (RuntimeError(f"{type(error).__name__}: {error}"), text)))


def _exit_with_parent():
    """End this worker once the main process is gone.

    A main process killed outright (SIGKILL) cannot stop its workers, and they
    would go on training, or wait for tasks forever, holding their memory.
    """
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


@contextmanager
def _sigint_ignored():
    """SIGINT ignored while workers are spawned, so that they start out ignoring it.

    Ctrl-C in a terminal sends SIGINT to the whole process group. A worker must
    neither print a KeyboardInterrupt traceback nor stop by itself: the main
    process stops it (``WorkerPool.close``). An ignored signal stays ignored
    across exec, so this covers the worker's start-up too, before any of its
    Python code runs; ``_worker_main`` ignores it again for pools made outside
    the main thread, which cannot change signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _threads_per_worker():
    """The thread settings that spawned workers start with: BLAS and OpenMP at 1 thread
    (a training's parallelism is minilottery's own, ``worker_threads``), Numba's pool
    as large as the machine."""
    settings = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "NUMBA_NUM_THREADS": str(available_cores())}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ----------------------------------------------------------------------------
# SIGTERM
# ----------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as KeyboardInterrupt is for SIGINT (see ``sigterm_as_interrupt``)."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


#: The signals that ``sigterm_as_interrupt`` turns into Terminated: ``kill PID``, a
#: cluster job ended, and SIGHUP, a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM or SIGHUP to this process raises Terminated, a KeyboardInterrupt.

    So ``kill PID`` stops a run the way Ctrl-C does: workers stopped, shared
    memory unlinked, the ``except KeyboardInterrupt`` of the caller run. To tell
    them apart (exit status 128 + signal, 143 for SIGTERM, rather than 130),
    read ``error.signum`` of a Terminated. The handlers serve once: a second
    signal ends the process at once, as it would outside the block. Main
    thread only, as every signal handler.
    """
    def interrupt(signum, frame):
        for number, handler in previous.items():
            signal.signal(number, handler)
        raise Terminated(signum)

    previous = {number: signal.signal(number, interrupt) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
