"""A run on disk: one directory per experiment, every file written atomically.

Layout (``t`` = trial, ``k`` = level, two digits; level 0 is the dense net)::

    RUN/config.json                      the resolved Config
    RUN/summary.csv                      one row per finished training (see lottery.SUMMARY_COLUMNS)
    RUN/figures/*.png                    drawn by minilottery.plots
    RUN/trial{t}/theta0.npz              the trial's initial weights theta_0
    RUN/trial{t}/rewind.npz              theta_k of the dense run, when rewinding (k > 0)
    RUN/trial{t}/level{k}/mask.npz       the level's mask (winning ticket and random reinit)
    RUN/trial{t}/level{k}/ticket/        final.npz, history.csv, metrics.json
    RUN/trial{t}/level{k}/reinit{r}/     history.csv, metrics.json
    RUN/trial{t}/level{k}/random{r}/     mask.npz, history.csv, metrics.json

A training in progress also keeps ``checkpoint.npz`` in its directory (see
``train.save_checkpoint``), deleted once the training is done.

Atomic means: written to a temporary file in the same directory, flushed to
disk, then renamed over the target with ``os.replace``. A run killed at any
moment leaves each file either absent or complete. ``metrics.json`` is the
last file a training writes, so its presence marks that training as done.

Reading is checked: ``load_arrays`` and ``read_json`` raise ``RunFileError``
(naming the file and what is wrong with it) for a file that is truncated,
garbled or does not hold what it should, never a zipfile or JSON traceback.
A damaged file can be set aside (``set_aside``: renamed with a ``.corrupt``
suffix) so that its work is redone.

One process at a time: ``RunDir.locked()`` holds an exclusive ``flock`` on
``RUN/.lock`` (the kernel releases it when the process dies, however it
dies); a second process gets ``RunInUse`` naming the holder's PID.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None

LOCK_NAME = ".lock"
CORRUPT_SUFFIX = ".corrupt"


class RunFileError(ValueError):
    """A file of a run directory that cannot be read or does not hold what it should."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self):  # worker processes send it back pickled
        return type(self), (self.path, self.reason)


class RunWriteError(OSError):
    """A file of a run directory that could not be written (disk full, read-only, ...)."""

    def __str__(self):
        return f"cannot write {self.filename}: {self.strerror}"


class RunInUse(RuntimeError):
    """Another process holds the run directory's lock."""


@dataclass(frozen=True)
class Piece:
    """One training of the experiment: a ticket or a control, at one level of one trial."""

    trial: int
    level: int
    branch: str        # "ticket", "reinit" or "random"
    replicate: int = 0  # which control, for reinit and random

    def __str__(self):
        control = "" if self.branch == "ticket" else f" #{self.replicate}"
        return f"trial {self.trial} level {self.level} {self.branch}{control}"


def level_pieces(config, level):
    """The trainings of one level: each trial's ticket and, once pruned, its controls."""
    pieces = []
    for trial in range(config.trials):
        pieces.append(Piece(trial, level, "ticket"))
        if level > 0:  # at level 0 every control would be just another dense net
            pieces += [Piece(trial, level, "reinit", r) for r in range(config.reinits)]
            pieces += [Piece(trial, level, "random", r) for r in range(config.random_prunes)]
    return pieces


def write_atomic(path, write):
    """Create ``path`` by calling ``write(file_object)`` on a temporary file, then renaming it.

    An operating-system error (disk full, no permission) is raised as
    ``RunWriteError`` naming ``path``; nothing of the write is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise RunWriteError(error.errno, error.strerror, str(path)) from error
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, RunWriteError):
            raise RunWriteError(error.errno, error.strerror, str(path)) from error
        raise


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path, text):
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The value in a JSON file; ``RunFileError`` if it is not valid UTF-8 JSON.

    A missing file raises ``FileNotFoundError``, as ``open`` does: absent is
    not damaged.
    """
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RunFileError(path, f"not readable as JSON ({error})") from error


def save_arrays(path, arrays):
    """Save a dict of arrays (names like "fc1.W") as an uncompressed .npz, atomically."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_arrays(path, shapes=None, *, binary=False):
    """The arrays of a ``save_arrays`` file, checked; ``RunFileError`` names what is wrong.

    The archive must read back whole (every member's CRC-32 is checked). With
    ``shapes`` ({name: shape}), it must hold exactly those names, each a
    float32 array of that shape; with ``binary=True`` every value must be 0
    or 1 (a mask). A missing file raises ``FileNotFoundError``.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except Exception as error:  # BadZipFile, EOFError, ValueError, ...: all mean "damaged"
        raise RunFileError(path, f"not a readable .npz archive ({type(error).__name__}: "
                                 f"{error})") from error
    if shapes is not None:
        if arrays.keys() != shapes.keys():
            missing, extra = sorted(shapes.keys() - arrays.keys()), sorted(arrays.keys() - shapes.keys())
            raise RunFileError(path, f"holds the wrong arrays (missing {missing}, unexpected {extra})")
        for name, shape in shapes.items():
            array = arrays[name]
            if array.dtype != np.float32 or array.shape != tuple(shape):
                raise RunFileError(path, f"{name} is {array.dtype} {array.shape}, "
                                         f"expected float32 {tuple(shape)}")
    if binary:
        for name, array in arrays.items():
            if not np.isin(array, (0, 1)).all():
                raise RunFileError(path, f"{name} holds values other than 0 and 1")
    return arrays


def set_aside(path):
    """Rename a damaged file to ``NAME.corrupt`` (``NAME.corrupt1``, ... if taken); return the new path."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    number = 0
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{number}")
    os.replace(path, target)
    return target


def check_writable(directory, needed_bytes):
    """Raise ``RunWriteError`` unless ``directory`` (or, if it does not exist yet, the
    folder it would be made in) takes a new file and has ``needed_bytes`` free."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RunWriteError(errno.ENOTDIR, "it is a file, not a directory", str(directory))
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunWriteError(errno.ENOTDIR, f"{existing} is a file, not a directory", str(directory))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise RunWriteError(error.errno, error.strerror, str(directory)) from error
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise RunWriteError(errno.ENOSPC, f"the run needs about {needed_bytes / 1e6:,.0f} MB and "
                                          f"only {free / 1e6:,.0f} MB are free", str(directory))


class RunDir:
    """Paths of one run directory (see the module docstring for the layout)."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def config(self):
        return self.root / "config.json"

    @property
    def summary(self):
        return self.root / "summary.csv"

    @property
    def figures(self):
        return self.root / "figures"

    def trial(self, trial):
        return self.root / f"trial{trial}"

    def level(self, trial, level):
        return self.trial(trial) / f"level{level:02d}"

    def theta0(self, trial):
        return self.trial(trial) / "theta0.npz"

    def rewind(self, trial):
        return self.trial(trial) / "rewind.npz"

    def mask(self, trial, level):
        return self.level(trial, level) / "mask.npz"

    def piece(self, piece):
        """Directory of one training: ticket, reinit{r} or random{r}."""
        name = "ticket" if piece.branch == "ticket" else f"{piece.branch}{piece.replicate}"
        return self.level(piece.trial, piece.level) / name

    def remove_partial_files(self):
        """Delete the temporary files of writes that a killed run never finished.

        Call it only while holding ``locked()``: another run's in-flight
        temporary files look the same.
        """
        for partial in self.root.rglob(".*.tmp"):
            partial.unlink(missing_ok=True)

    def holds_other_files(self):
        """Whether the directory exists and holds something that is not part of a run."""
        return self.root.is_dir() and not self.config.exists() and any(
            entry.name != LOCK_NAME for entry in self.root.iterdir())

    @contextmanager
    def locked(self):
        """Hold the run's exclusive lock for the ``with`` block.

        Creates the directory if need be. Raises ``RunInUse`` at once if anyone
        holds it (this process too, through another ``locked()``). The kernel
        drops the lock when this process ends.
        """
        if fcntl is None:
            raise RuntimeError("locking a run directory needs a POSIX system (fcntl)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise RunWriteError(error.errno, error.strerror, str(self.root / LOCK_NAME)) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(f"{self.root} is in use by process {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield self
        finally:
            os.close(fd)  # releases the lock; the file stays, empty of meaning


    def is_done(self, piece):
        return (self.piece(piece) / "metrics.json").exists()
