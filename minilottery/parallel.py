"""Run tasks in the order their inputs appear, in this process or in worker processes.

The lottery's trainings form a chain per trial (level k's ticket needs level
k-1's) with independent controls hanging off every level. ``run_tasks``
starts a task as soon as ``ready(task)`` says its inputs exist, tickets
first (they are the critical path), and yields ``(task, result)`` as each
one finishes; the caller then writes the inputs of the next ones.

With ``jobs > 1`` the tasks run in a ``concurrent.futures`` process pool
(spawned, so nothing of this process's thread pools is inherited). Each
worker receives ``shared`` once, when it starts, its large arrays through
shared memory rather than as pickled bytes (see minilottery.shared: one copy
of the dataset for all processes), and reports progress through a queue that
this process drains while it waits.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext

from .shared import SharedArrays


def run_tasks(tasks, *, ready, work, shared, jobs=1, priority=None, on_progress=None,
              shared_arrays=None):
    """Yield ``(task, work(shared, task, progress))`` for every task, as each finishes.

    ``ready(task)`` tells whether a task's inputs exist; it is asked again
    after every finished task. ``progress(*args)`` inside ``work`` reaches
    ``on_progress(*args)`` here, from worker processes too. ``shared_arrays``:
    the SharedArrays that made arrays of ``shared`` (they are then sent as they
    are); without it, large arrays are copied into shared memory for the run.
    """
    pending = sorted(tasks, key=priority) if priority else list(tasks)
    report = on_progress or (lambda *args: None)
    if jobs <= 1 or len(pending) <= 1:
        while pending:
            task = _next_ready(pending, ready, running=0)
            yield task, work(shared, task, report)
        return

    workers = min(jobs, len(pending))
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    # Workers are spawned on demand, so these settings (and the segments) must last until shutdown.
    with (SharedArrays() if shared_arrays is None else nullcontext(shared_arrays)) as arrays, \
            _threads_per_worker(max(1, (os.cpu_count() or 1) // workers)):
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                   initargs=(work, arrays.dumps(shared), progress_queue))
        try:
            running = {}
            while pending or running:
                while pending and len(running) < workers:
                    task = _next_ready(pending, ready, len(running))
                    if task is None:
                        break
                    running[pool.submit(_worker_run, task)] = task
                finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, report)
                for future in finished:
                    yield running.pop(future), future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _drain(progress_queue, report)


def _next_ready(pending, ready, running):
    """Remove and return the first ready task; None if none is ready but some are running."""
    for index, task in enumerate(pending):
        if ready(task):
            return pending.pop(index)
    if running:
        return None
    raise RuntimeError(f"no task can start: {pending[0]} waits for inputs nothing will write")


def _drain(progress_queue, report):
    while True:
        try:
            report(*progress_queue.get_nowait())
        except queue.Empty:
            return


@contextmanager
def _threads_per_worker(threads):
    """Thread counts that spawned workers start with (BLAS, OpenMP, Numba)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(threads) for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_worker = {}


def _worker_start(work, shared_pickle, progress_queue):
    _worker.update(work=work, shared=pickle.loads(shared_pickle), queue=progress_queue)
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent():
    """End this worker once the main process is gone.

    A main process killed outright (SIGKILL) cannot shut its pool down, and its
    idle workers would wait for tasks forever, holding their memory and keeping
    the resource tracker from unlinking the dataset's shared memory.
    """
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _worker_run(task):
    return _worker["work"](_worker["shared"], task, lambda *args: _worker["queue"].put(args))
