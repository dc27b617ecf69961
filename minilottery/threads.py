"""Threads: how minilottery shares the cores between OpenBLAS and Numba.

Two thread pools do the work: OpenBLAS runs NumPy's matrix products, Numba
runs our kernels. Two facts shape how we use them:

* **Contention.** Numba's default OpenMP layer and OpenBLAS both keep their
  threads spinning for a while after each call; interleaved on two cores they
  fight, and a LeNet step became 7x slower in our measurements. Numba's own
  ``workqueue`` layer does not spin, so we select it (unless the user chose a
  layer with ``NUMBA_THREADING_LAYER``). This must happen before the first
  parallel kernel runs, hence at import of the package.
  OpenBLAS's own threads spin too: after each product they wait about 2^28
  cycles (a tenth of a second) for the next one, so with 2 BLAS threads every
  Numba kernel that follows a matrix product (im2col, col2im, the moves to
  NCHW) shared the cores with two spinning threads and took twice as long
  (a Conv-4 step: 430 -> 375 ms without it). ``OPENBLAS_THREAD_TIMEOUT=14``
  (2^14 cycles, a few microseconds) makes them sleep almost at once. OpenBLAS
  reads it when NumPy loads it, so it is set here, at the import of the
  package, and it only takes effect when minilottery is imported before
  NumPy (as ``python -m minilottery.run`` does; scripts: import minilottery
  first). A value the user set wins. With 1 BLAS thread (training) nothing spins.
* **Reproducibility.** OpenBLAS splits a float32 product differently over one
  or two threads, and the sums then differ in their last bits. Our kernels do
  not (they never split a sum across threads). So a seeded training is
  reproducible bit for bit only at a fixed BLAS thread count: ``train``
  always runs with ``blas_threads(1)``, in every process, whatever
  ``--jobs`` is, and the lottery gets its parallelism from running
  trainings side by side.
* **Lanes.** A convolution works on small groups of images (so that its im2col
  matrix stays in cache) and splits the groups over as many threads as BLAS
  has, each running its products with one BLAS thread (``run_lanes``). Like
  BLAS, it then sums dW in a different order: the lane count is the BLAS
  thread count, so the rule above covers it.

``blas_threads`` works with the OpenBLAS that NumPy's wheels bundle. With
another BLAS it does nothing (``blas_thread_control()`` says so), and
results may then depend on the BLAS's own thread count.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
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


_lane_pool = None            # (threads in it, the pool), kept from one call to the next


def run_lanes(work, lanes):
    """Call ``work(lane)`` for lane = 0 .. lanes-1 at the same time, one thread per lane.

    The calling thread runs lane 0; a small pool of threads, kept for the next call,
    runs the others. While the lanes run, BLAS uses one thread, so ``lanes`` is the
    number of busy cores (no lane's matrix product wakes further BLAS threads).
    The lanes' NumPy products and ``nogil`` Numba kernels release the GIL, so the
    lanes really run in parallel. An exception raised in a lane is re-raised here,
    after every lane has finished.
    """
    global _lane_pool
    if lanes <= 1:
        work(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    if _lane_pool is None or _lane_pool[0] < lanes - 1:
        if _lane_pool is not None:
            _lane_pool[1].shutdown(wait=False)   # its idle threads end; a bigger pool replaces it
        _lane_pool = (lanes - 1, ThreadPoolExecutor(lanes - 1, thread_name_prefix="minilottery-lane"))
    pool = _lane_pool[1]
    with blas_threads(1):
        others = [pool.submit(work, lane) for lane in range(1, lanes)]
        try:
            work(0)
        finally:
            for future in others:
                future.exception()          # wait for it; its error is raised below
        for future in others:
            future.result()
