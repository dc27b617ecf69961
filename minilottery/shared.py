"""Arrays in shared memory, so that worker processes map the dataset instead of copying it.

With ``--jobs 2`` every worker process needs the whole dataset (CIFAR-10: 737 MB
of float32). Pickled into each worker, as a process pool's initializer
arguments are, it would exist once per process, plus transient copies while
it is pickled and unpickled. Instead (``benchmarks/run_memory.py`` measures
what a whole run then uses):

1. the main process loads the dataset straight into shared memory: the
   loaders take an ``allocate`` function, and ``SharedArrays.empty`` makes
   each array in its own named segment;
2. ``SharedArrays.dumps`` pickles what the workers need with every large
   array replaced by its segment's name (an array not made by ``empty`` is
   copied into a new segment once), so the pickle holds little more than the labels;
3. unpickling it in a worker maps the segments (read-only there): every
   process reads the same physical pages, whatever the number of workers.

Lifetime: the segments belong to the ``with SharedArrays()`` block that made
them, which unlinks them when it ends, normally or by an exception or Ctrl-C;
``run_tasks`` unlinks them sooner, as soon as every worker has mapped them
(``SharedArrays.unlink``). A name is all that can outlive a process, and after
that no process needs it: a mapping ends with its process, and the memory goes
with the last mapping.

A process killed outright (SIGKILL, or SIGHUP from a closed terminal) while
it loads the dataset cannot unlink anything, and its helper processes die
with it when the whole process group is killed. So every ``SharedArrays()``
first removes the segments of such dead runs (``remove_dead_segments``):
their names say whose they were. This needs /dev/shm to list segments
(Linux); elsewhere only the unlinking above applies.
"""

from __future__ import annotations

import io
import os
import pickle
import secrets
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

#: Arrays smaller than this are pickled as bytes: a segment costs a file
#: descriptor and at least a page in every process that maps it.
MIN_SHARED_BYTES = 1 << 20

#: Where POSIX shared-memory segments appear as files, on Linux.
SHM_DIR = Path("/dev/shm")


class SharedArrays:
    """Named shared-memory segments, one per array, unlinked when the ``with`` block ends.

    Making one first removes the segments that dead runs left (``remove_dead_segments``).
    """

    def __init__(self):
        remove_dead_segments()
        self._segments = []   # the SharedMemory objects this process created, still named
        self._locks = []      # a file descriptor holding each one's lock (see _lock)
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
        self._locks.append(_lock(segment.name))
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

    def unlink(self):
        """Unlink every segment: its name goes now, its memory once no process maps it.

        The arrays stay usable in every process that has mapped them (here too);
        a process can no longer map them by name. Arrays sent after this, made by
        ``empty`` or not, are copied into new segments, unlinked at the block's end.
        """
        self._made.clear()
        while self._segments:
            self._segments.pop().unlink()
        while self._locks:
            lock = self._locks.pop()
            if lock is not None:
                os.close(lock)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.unlink()


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


def remove_dead_segments(directory=SHM_DIR) -> list[str]:
    """Unlink the segments that minilottery processes killed outright left; return their names.

    ``minilottery-PID-RANDOM`` is removed when all three hold:

    1. this user owns it: other users' segments are theirs to judge;
    2. no process holds the lock its creator took on it (``_lock``). The kernel
       drops a lock when its process ends, so this is sound whatever happened to
       the PID since: reused by an unrelated process, or the creator living in
       another PID namespace (a container sharing /dev/shm);
    3. no process has that PID. This covers the instant between a segment's
       creation and its lock; a PID reused since only delays the removal until
       that process ends.
    """
    if not directory.is_dir():
        return []
    import fcntl  # not on Windows, which has no /dev/shm either

    removed = []
    for path in sorted(directory.glob("minilottery-*-*")):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or _pid_exists(int(pid)):
            continue
        try:
            if path.stat().st_uid != os.getuid():
                continue
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:  # removed meanwhile, or not ours to open
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed.append(path.name)
        except OSError:
            pass  # its creator is alive (the lock is taken), or another run removed it first
        finally:
            os.close(descriptor)
    return removed


def _lock(name):
    """A descriptor of segment ``name`` holding a shared lock on it, or None without /dev/shm.

    The lock says "my creator is alive" to ``remove_dead_segments`` of other
    processes, for as long as the descriptor stays open: until ``unlink``, or the
    end of this process, however it ends.
    """
    if not SHM_DIR.is_dir():
        return None
    import fcntl

    descriptor = os.open(SHM_DIR / name, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    return descriptor


def _pid_exists(pid) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it does, and belongs to another user
        return True
    return True


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
