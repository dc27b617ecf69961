"""Threads: how minilottery uses the cores, and why its numbers do not depend on how many.

A training runs on ``threads`` cores (``train(..., threads=N)``, every core by
default) and gives the same numbers, bit for bit, for any N. Two facts shape
how:

* **Sums depend on how work is split.** float32 addition is not associative,
  so a sum split differently over threads rounds differently. OpenBLAS splits
  a matrix product by its own thread count, so with 1 or 2 BLAS threads the
  same product differs in its last bits. So inside ``use_threads`` every
  matrix product runs on ONE BLAS thread, and the parallelism is ours: a layer
  cuts its work into pieces whose boundaries depend on the shapes alone (groups
  of images for a convolution, blocks of columns for a dense product), runs the
  pieces on the threads of ``parallel_pieces``, each with one BLAS thread, and
  adds the pieces' partial sums (a convolution's dW and db) in piece order,
  whichever thread computed them. The thread count only decides who computes
  which piece, so it can even change during a training (``set_threads``), as
  the lottery's worker processes share the cores among the trainings running
  at the moment (``minilottery.parallel``).
* **Spinning threads.** OpenBLAS's and Numba's thread pools keep their threads
  spinning for a while after each call, and interleaved on two cores they
  fought (a LeNet step became 7x slower in our measurements). Numba's own
  ``workqueue`` layer does not spin, so it is selected here, at the import of
  the package (unless ``NUMBA_THREADING_LAYER`` is set). OpenBLAS's threads
  are never woken inside ``use_threads`` (one BLAS thread); elsewhere
  ``OPENBLAS_THREAD_TIMEOUT=14`` (a few microseconds, instead of about a tenth
  of a second) makes them sleep at once, but only if minilottery is imported
  before NumPy, because OpenBLAS reads it when NumPy loads it. Training and
  evaluation do not depend on that order: a notebook that imports NumPy first
  trains as fast.

Outside ``use_threads`` (a layer called directly in a notebook), pieces run one
after the other and each product uses OpenBLAS's own threads: fast, but then the
last bits may depend on OpenBLAS's thread count.

``blas_threads`` works with the OpenBLAS that NumPy's wheels bundle. With
another BLAS it does nothing (``blas_thread_control()`` says so), and results
may then depend on the BLAS's own thread count.
"""

from __future__ import annotations

import ctypes
import glob
import operator
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# Both settings are read when the libraries load, so they are set before
# anything imports NumPy or Numba; numba's config is also set directly in case
# it was imported first. A value the user set wins. (Numba itself is not
# imported here: loading data does not need it.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "14")
if "NUMBA_THREADING_LAYER" not in os.environ:
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    if "numba" in sys.modules:
        sys.modules["numba"].config.THREADING_LAYER = "workqueue"


def _find_openblas():
    """(get, set) functions of NumPy's bundled OpenBLAS, or None if there is none."""
    import numpy

    package = Path(numpy.__file__).parent
    patterns = [package.parent / "numpy.libs" / "*openblas*",  # Linux wheels
                package / ".dylibs" / "*openblas*",            # macOS wheels
                package.parent / "numpy.libs" / "*openblas*.dll"]
    for path in sorted(p for pattern in patterns for p in glob.glob(str(pattern))):
        try:
            library = ctypes.CDLL(path)  # already loaded by NumPy: the same handle
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                               ("openblas_", "64_"), ("openblas_", "")):
            get = getattr(library, f"{prefix}get_num_threads{suffix}", None)
            set_ = getattr(library, f"{prefix}set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                return get, set_
    return None


_OPENBLAS = _find_openblas()


def blas_thread_control():
    """True when ``blas_threads`` can set NumPy's BLAS thread count."""
    return _OPENBLAS is not None


@contextmanager
def blas_threads(count):
    """Run the body with ``count`` BLAS threads, then restore the previous count."""
    if _OPENBLAS is None:
        yield
        return
    get, set_ = _OPENBLAS
    previous = get()
    set_(count)
    try:
        yield
    finally:
        set_(previous)


def blas_thread_count():
    """How many threads NumPy's BLAS uses now (1 when that cannot be read)."""
    return _OPENBLAS[0]() if _OPENBLAS is not None else 1


def available_cores():
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                      # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_threads(threads, what="threads"):
    """``threads`` as a positive int; None means every available core."""
    if threads is None:
        return available_cores()
    try:
        count = None if isinstance(threads, bool) else operator.index(threads)
    except TypeError:
        count = None
    if count is None or count < 1:
        raise ValueError(f"{what} must be a positive integer (or None: every core), got {threads!r}")
    return count


_state = threading.local()      # .threads: the count use_threads set in this thread; .inside: in a piece


def thread_count():
    """How many threads ``parallel_pieces`` uses here: what ``use_threads`` set, else 1."""
    return getattr(_state, "threads", 1)


@contextmanager
def use_threads(threads):
    """Run the body with ``threads`` threads (None: every core) for minilottery's pieces
    of work, and BLAS at 1 thread.

    Inside, every matrix product runs on one BLAS thread and the parallelism is
    ours (``parallel_pieces``); Numba's parallel loops (the optimizers') get the
    same count. Results do not depend on ``threads``: see the module docstring.
    ``set_threads`` changes the count inside the body.
    """
    count = check_threads(threads)
    previous = getattr(_state, "threads", None)
    numba_previous = _set_numba_threads(count)
    _state.threads = count
    try:
        with blas_threads(1):
            yield count
    finally:
        if previous is None:
            del _state.threads
        else:
            _state.threads = previous
        _set_numba_threads(numba_previous)


def set_threads(threads):
    """Change the thread count of the enclosing ``use_threads`` (None: every core)."""
    count = check_threads(threads)
    if count != thread_count():
        _state.threads = count
        _set_numba_threads(count)


def _set_numba_threads(count):
    """Set Numba's thread count for this thread (capped at its pool size); return the old one."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    previous = numba.get_num_threads()
    if count is not None:
        numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    return previous


class _Pool:
    """Threads kept from one call of ``parallel_pieces`` to the next (they sleep in between)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.executor = None
        self.size = 0

    def submit(self, count, function):
        with self.lock:
            if self.size < count:
                from concurrent.futures import ThreadPoolExecutor
                if self.executor is not None:
                    self.executor.shutdown(wait=False)
                self.executor = ThreadPoolExecutor(count, thread_name_prefix="minilottery")
                self.size = count
            return [self.executor.submit(function, worker) for worker in range(1, count + 1)]


_pool = _Pool()


def parallel_pieces(count, work):
    """Call ``work(piece, worker)`` for every piece in ``range(count)``, on up to
    ``thread_count()`` threads; ``worker`` (0 .. threads-1) names the thread, so that
    each thread can keep scratch buffers of its own.

    Which thread runs which piece is decided at run time, so a piece must not depend
    on that: pieces write disjoint outputs, or partial sums that the caller adds in
    piece order. Then the result is the same, bit for bit, for any thread count.
    The calling thread works too (as worker 0). A piece's exception is raised here,
    after every thread has stopped. Called from inside a piece, it runs serially.
    """
    threads = min(thread_count(), count)
    if threads <= 1 or getattr(_state, "inside", False):
        for piece in range(count):
            work(piece, 0)
        return
    pieces = iter(range(count))
    lock = threading.Lock()
    failed = []

    def loop(worker):
        _state.inside = True
        try:
            while not failed:
                with lock:
                    piece = next(pieces, None)
                if piece is None:
                    return
                work(piece, worker)
        except BaseException as error:       # noqa: B902 (re-raised by the caller)
            failed.append(error)
        finally:
            _state.inside = False

    with blas_threads(1):
        others = _pool.submit(threads - 1, lambda worker: loop(worker))
        loop(0)
        for future in others:
            future.result()
    if failed:
        raise failed[0]
