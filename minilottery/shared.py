"""Arrays in shared memory, so that worker processes map the dataset instead of copying it.

With ``--jobs 2`` every worker process needs the whole dataset (CIFAR-10: 737 MB
of float32). Pickled into each worker, as a process pool's initializer
arguments are, it would exist once per process, plus transient copies while
it is pickled and unpickled: a shrunk Conv-6 run with two workers peaked at
3565 MB over its processes, 2077 MB with what follows (benchmarks/README.md). Instead:

1. the main process loads the dataset straight into shared memory: the
   loaders take an ``allocate`` function, and ``SharedArrays.empty`` makes
   each array in its own named segment;
2. ``SharedArrays.dumps`` pickles what the workers need with every large
   array replaced by its segment's name (an array not made by ``empty`` is
   copied into a new segment once), so the pickle holds little more than the labels;
3. unpickling it in a worker maps the segments (read-only there): every
   process reads the same physical pages, whatever the number of workers.

Lifetime: the segments belong to the ``with SharedArrays()`` block that made
them, which unlinks them when it ends, normally or by an exception or Ctrl-C.
A process killed outright (SIGKILL) cannot clean up; multiprocessing's
resource tracker, a helper process that outlives it, then unlinks the
segments it was told about. Mappings themselves end with their process.
"""

from __future__ import annotations

import io
import os
import pickle
import secrets
from multiprocessing import shared_memory

import numpy as np

#: Arrays smaller than this are pickled as bytes: a segment costs a file
#: descriptor and at least a page in every process that maps it.
MIN_SHARED_BYTES = 1 << 20


class SharedArrays:
    """Named shared-memory segments, one per array, unlinked when the ``with`` block ends."""

    def __init__(self):
        self._segments = []   # the SharedMemory objects this process created
        self._made = {}       # id(array) -> (array, its segment's name), for arrays of empty()

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """Like ``np.empty(shape, dtype)``, the array in a new shared-memory segment."""
        shape, dtype = tuple(int(n) for n in np.atleast_1d(shape)), np.dtype(dtype)
        if dtype.hasobject:
            raise ValueError(f"SharedArrays.empty: dtype {dtype} holds Python objects, "
                             f"which cannot live in shared memory")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        segment = shared_memory.SharedMemory(create=True, size=max(nbytes, 1), name=_new_name())
        self._segments.append(segment)
        array = _array_in(segment, shape, dtype)
        self._made[id(array)] = (array, segment.name)
        return array

    def dumps(self, obj) -> bytes:
        """``pickle.dumps(obj)``, every array of at least MIN_SHARED_BYTES sent by name.

        ``pickle.loads`` of the result, in any process while this block is open,
        gives ``obj`` back with those arrays mapped read-only from shared memory.
        """
        buffer = io.BytesIO()
        _SegmentPickler(buffer, self).dump(obj)
        return buffer.getvalue()

    def segment_of(self, array: np.ndarray):
        """(name, shape, dtype) of the segment holding ``array``, copied into one if need be."""
        made = self._made.get(id(array))
        if made is None or made[0] is not array:
            copy = self.empty(array.shape, array.dtype)
            copy[...] = array
            made, array = self._made[id(copy)], copy
        return made[1], array.shape, array.dtype.str

    def close(self):
        """Unlink every segment: its name goes now, its memory once no process maps it."""
        self._made.clear()
        while self._segments:
            self._segments.pop().unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class _SegmentPickler(pickle.Pickler):
    def __init__(self, file, shared):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared = shared

    def reducer_override(self, obj):
        if (type(obj) is np.ndarray and obj.nbytes >= MIN_SHARED_BYTES
                and not obj.dtype.hasobject):
            return _attach, self.shared.segment_of(obj)
        return NotImplemented  # everything else pickles as usual


def _new_name() -> str:
    """minilottery-PID-RANDOM: says whose it is (e.g. in /dev/shm), under macOS's 31 characters."""
    return f"minilottery-{os.getpid()}-{secrets.token_hex(4)}"


def _attach(name, shape, dtype) -> np.ndarray:
    """Map segment ``name`` as a read-only array (what unpickling a ``dumps`` array calls)."""
    array = _array_in(shared_memory.SharedMemory(name=name), shape, np.dtype(dtype))
    array.flags.writeable = False  # one worker must not change what the others read
    return array


def _array_in(segment, shape, dtype) -> np.ndarray:
    """An array over ``segment``'s memory that keeps the segment open for as long as it lives.

    ``np.ndarray(buffer=segment.buf)`` alone would not: a SharedMemory unmaps its
    memory when it is garbage-collected, whatever arrays still point into it
    (and then reading them crashes the process). So the array's ``base`` is an
    object holding the segment, and the segment is closed only after the last
    array or view of it is gone.
    """
    return np.asarray(_Mapping(segment, shape, dtype))


class _Mapping:
    def __init__(self, segment, shape, dtype):
        self.segment = segment
        self.__array_interface__ = np.ndarray(shape, dtype, buffer=segment.buf).__array_interface__
