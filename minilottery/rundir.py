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
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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


def write_atomic(path, write):
    """Create ``path`` by calling ``write(file_object)`` on a temporary file, then renaming it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
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
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_arrays(path, arrays):
    """Save a dict of arrays (names like "fc1.W") as an uncompressed .npz, atomically."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_arrays(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


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
        """Delete the temporary files of writes that a killed run never finished."""
        for partial in self.root.rglob(".*.tmp"):
            partial.unlink()

    def is_done(self, piece):
        return (self.piece(piece) / "metrics.json").exists()
