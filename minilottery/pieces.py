"""One training of the experiment as a task that can run anywhere.

The lottery (``minilottery.lottery``) decides *what* to train: a ticket or a
control at some level, starting from some weights with some mask. This
module is *how* one such training runs, wherever an executor puts it (this
process, a worker process, a machine of a Dask cluster):

* a ``Training`` carries everything the training needs as values: the piece
  it is, the weights and mask it starts from, where it may keep its
  checkpoint. Nothing is read from the run directory;
* ``run_training`` trains it and returns a ``TrainingResult``: the history,
  the metrics, the final weights of a ticket, the rewind snapshot. Nothing is
  written to the run directory: the lottery writes the result, in the process
  that owns the run;
* the dataset is either sent along (the in-process runner, the worker
  processes, which map it from shared memory) or described by a ``DataSpec``
  that each worker loads itself, once per process, from its own data folder.

The seeds of every random stream derive from the experiment's seed and the
piece alone (``derive_seed``), so a training gives the same numbers, bit for
bit, wherever it runs and however often it is retried.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pruning
from .data import load_cifar10, load_mnist
from .models import BUILDERS
from .optim import SGD, Adam, LinearWarmup, StepDecay
from .parallel import worker_threads
from .rundir import Piece
from .train import HISTORY_COLUMNS, train

# The streams of randomness in an experiment, kept apart by derive_seed.
INIT_STREAM, REINIT_STREAM, RANDOM_MASK_STREAM, DATA_ORDER_STREAM = range(4)

#: Where a worker without the run directory keeps its checkpoints (default: the temp folder).
CHECKPOINTS_ENV = "MINILOTTERY_CHECKPOINTS"


def derive_seed(*keys):
    """An independent 32-bit seed for each tuple of integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def build_model(config, seed):
    builder = BUILDERS[config.builder]
    return builder(seed=seed, dropout=config.dropout) if config.dropout else builder(seed=seed)


def learning_rate(config):
    """The config's lr as a schedule: step decay at ``lr_milestones``, inside a linear
    warmup over ``warmup_iterations``; the plain number when it has neither."""
    lr = config.lr
    if config.lr_milestones:
        lr = StepDecay(lr, config.lr_milestones)
    if config.warmup_iterations:
        lr = LinearWarmup(lr, config.warmup_iterations)
    return lr


def make_optimizer(config, model):
    lr = learning_rate(config)
    if config.optimizer == "adam":
        return Adam(model, lr=lr, weight_decay=config.weight_decay)
    return SGD(model, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class DataSpec:
    """Which dataset to load, and from where, for a worker that loads it itself.

    ``data_dir`` None means the worker's own search path (``MINILOTTERY_DATA``,
    the package's data/ folder, the per-user cache; see minilottery.data).
    """

    dataset: str
    val_size: int
    val_seed: int
    data_dir: str | None = None
    download: bool = True

    @classmethod
    def of(cls, config, data_dir=None, download=True):
        return cls(config.dataset, config.val_size, config.val_seed,
                   None if data_dir is None else str(data_dir), download)

    def load(self, allocate=np.empty):
        load = {"mnist": load_mnist, "cifar10": load_cifar10}[self.dataset]
        return load(self.data_dir, val_size=self.val_size, val_seed=self.val_seed,
                    download=self.download, allocate=allocate)


_loaded = {}  # DataSpec -> Dataset: each worker process loads its data once


def dataset_for(data):
    """``data`` itself, or, for a DataSpec, the dataset it names (loaded once per process)."""
    if not isinstance(data, DataSpec):
        return data
    if data not in _loaded:
        _loaded[data] = data.load()
    return _loaded[data]


@dataclass(frozen=True, repr=False)
class Training:
    """A training task: ``piece`` from ``params`` with ``masks`` (a pruned weight is 0).

    ``checkpoint``: the file it keeps its checkpoint in (in the run directory,
    when the worker shares the client's files); None: a folder of the
    worker's own machine (``local_checkpoint``).
    """

    piece: Piece
    params: dict
    masks: dict
    checkpoint: str | None = None

    def __repr__(self):  # errors name the training, not its arrays
        return repr(self.piece)


@dataclass(frozen=True)
class TrainingResult:
    """What a training sends back: everything the run directory records of it."""

    metrics: dict        # the summary's fields (see results.SUMMARY_COLUMNS)
    history_csv: str     # train.History.to_csv()
    final: dict | None   # trained weights, for a ticket (the next level is pruned from them)
    snapshot: dict | None  # theta_k of the dense ticket, when rewinding to k
    provenance: dict     # where the worker's data came from (data.Dataset.provenance)


def run_training(shared, training, progress):
    """Train ``training`` (``shared`` = (config, dataset or DataSpec)); return its TrainingResult.

    Module level, so that worker processes and Dask workers can run it.
    ``progress(piece, iteration, val_acc)`` is called after every evaluation.
    """
    config, data = shared
    data = dataset_for(data)
    piece = training.piece
    model = build_model(config, seed=0)  # the architecture; its weights come from the task
    model.load_state_dict({"params": training.params, "masks": training.masks})
    data_seed = derive_seed(config.seed, piece.trial, piece.level, DATA_ORDER_STREAM)
    model.reseed_dropout(data_seed)
    saves_rewind = piece == Piece(piece.trial, 0, "ticket") and config.rewind_iteration > 0
    checkpoint = Path(training.checkpoint or local_checkpoint(config, piece))

    def on_eval(iteration, history):
        progress(piece, iteration, history.rows[-1][HISTORY_COLUMNS.index("val_acc")])
    result = train(model, make_optimizer(config, model), data,
                   iterations=config.iterations, batch_size=config.batch_size,
                   seed=data_seed, eval_every=config.eval_every,
                   eval_batch_size=config.eval_batch_size, augment=config.augment,
                   snapshot_at=config.rewind_iteration if saves_rewind else None,
                   on_eval=on_eval, checkpoint=checkpoint, threads=worker_threads)
    metrics = {
        "trial": piece.trial, "level": piece.level, "branch": piece.branch,
        "replicate": piece.replicate,
        "weights_remaining": pruning.sparsity_report(training.masks).fraction_remaining,
        **result.history.summary(config.accuracy_at),
    }
    if training.checkpoint is None:  # a worker's own file: the result makes it useless
        checkpoint.unlink(missing_ok=True)
    return TrainingResult(
        metrics=metrics, history_csv=result.history.to_csv(),
        final=model.state_dict()["params"] if piece.branch == "ticket" else None,
        snapshot=result.snapshot if saves_rewind else None,
        provenance=getattr(data, "provenance", None) or {})


def local_checkpoint(config, piece):
    """The checkpoint file of ``piece`` on a worker that does not share the run directory.

    ``$MINILOTTERY_CHECKPOINTS`` (default: the temp folder) / minilottery-checkpoints /
    a digest of the config / trial / level / branch. A training retried on the
    same machine, after its worker was killed, continues from it.
    """
    root = Path(os.environ.get(CHECKPOINTS_ENV) or tempfile.gettempdir())
    digest = hashlib.sha256(config.to_json().encode("utf-8")).hexdigest()[:16]
    name = "ticket" if piece.branch == "ticket" else f"{piece.branch}{piece.replicate}"
    return (root / "minilottery-checkpoints" / digest / f"trial{piece.trial}"
            / f"level{piece.level:02d}" / name / "checkpoint.npz")
