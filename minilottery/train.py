"""Training, counted in iterations as the paper counts it.

One iteration is one minibatch: forward, loss, backward, optimizer step.
Every ``eval_every`` iterations (the paper: 100) the network is evaluated on
the validation and the test set; neither affects training. The history of
those evaluations gives the paper's two measurements:

* the **early-stop iteration**: the evaluation of minimum validation loss
  (Frankle & Carbin, footnote 2 and App. C), a proxy for learning speed;
* the **test accuracy at early stop**: test accuracy at that same evaluation.

The test set never chooses anything: only validation loss picks the iteration.
Training always runs the whole budget; early stopping is read afterwards.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import minibatches
from .layers import Dropout
from .losses import softmax_cross_entropy
from .rundir import load_arrays, save_arrays
from .threads import blas_threads

HISTORY_COLUMNS = (
    "iteration",
    "train_loss", "train_acc",
    "val_loss", "val_acc",
    "test_loss", "test_acc",
)


def evaluate(model, x, y, batch_size=500):
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in chunks.

    Memory is that of one chunk, whatever ``len(x)``: the chunk is the only
    activation batch alive at a time. Dropout is off (``training=False``).
    """
    if len(x) != len(y):
        raise ValueError(f"evaluate: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise ValueError("evaluate: the set is empty")
    total_loss = 0.0
    correct = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model.forward(xb, training=False)
        loss, _ = softmax_cross_entropy(logits, yb)
        total_loss += loss * len(xb)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
    return total_loss / len(x), correct / len(x)


@dataclass
class History:
    """The evaluations of one training run, one row per ``eval_every`` iterations.

    ``train_loss``/``train_acc`` are the running means over the minibatches
    since the previous evaluation (free to compute, unlike a pass over the
    whole training set).
    """

    rows: list = field(default_factory=list)

    def append(self, **row):
        self.rows.append(tuple(row[name] for name in HISTORY_COLUMNS))

    def column(self, name):
        index = HISTORY_COLUMNS.index(name)
        return np.array([row[index] for row in self.rows])

    @property
    def early_stop_index(self):
        """Index of the evaluation of minimum validation loss (first, on ties)."""
        if not self.rows:
            raise ValueError("History is empty: no evaluation was recorded")
        return int(np.argmin(self.column("val_loss")))

    def summary(self):
        """The paper's measurements of this run, as a flat dict of plain numbers."""
        best = self.rows[self.early_stop_index]
        last = self.rows[-1]
        at = dict(zip(HISTORY_COLUMNS, best))
        final = dict(zip(HISTORY_COLUMNS, last))
        return {
            "early_stop_iteration": int(at["iteration"]),
            "val_loss_at_early_stop": float(at["val_loss"]),
            "val_acc_at_early_stop": float(at["val_acc"]),
            "test_acc_at_early_stop": float(at["test_acc"]),
            "final_iteration": int(final["iteration"]),
            "final_train_acc": float(final["train_acc"]),
            "final_val_acc": float(final["val_acc"]),
            "final_test_acc": float(final["test_acc"]),
        }

    def to_csv(self):
        """The history as CSV text, numbers written with ``repr`` (exact round trip)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        for row in self.rows:
            writer.writerow([repr(value) for value in row])
        return out.getvalue()


@dataclass
class TrainResult:
    history: History
    snapshot: dict | None  # params at iteration ``snapshot_at`` (for rewinding), else None


def train(model, optimizer, data, *, iterations, batch_size, seed, eval_every=100,
          eval_batch_size=500, snapshot_at=None, on_eval=None, checkpoint=None,
          checkpoint_seconds=60.0):
    """Train ``model`` for exactly ``iterations`` minibatches of ``batch_size``.

    ``data`` has ``x_train, y_train, x_val, y_val, x_test, y_test``. The
    minibatch order comes from ``seed`` alone, so two runs with the same
    seed, model and optimizer are identical bit for bit.

    ``snapshot_at=k`` returns a copy of the parameters after ``k`` iterations
    (``k = 0``: before training), the weights a rewound ticket restarts from.
    ``on_eval(iteration, history)`` is called after every evaluation (for
    progress bars).

    ``checkpoint``: a file path. If it exists, training continues from it;
    after an evaluation, at most every ``checkpoint_seconds``, the whole
    training state is saved there, so a killed training loses minutes, not
    hours, and continues to the same numbers bit for bit.

    Training runs with one BLAS thread, whoever calls it: the float32 sums of
    a matrix product depend on OpenBLAS's thread count (see
    ``minilottery.threads``), and a seeded run must give the same numbers in
    a notebook, on the command line and in a worker process.
    """
    with blas_threads(1):
        return _train(model, optimizer, data, iterations, batch_size, seed, eval_every,
                      eval_batch_size, snapshot_at, on_eval, checkpoint, checkpoint_seconds)


def _train(model, optimizer, data, iterations, batch_size, seed, eval_every, eval_batch_size,
           snapshot_at, on_eval, checkpoint, checkpoint_seconds):
    if iterations <= 0 or batch_size <= 0 or eval_every <= 0:
        raise ValueError(
            f"train: iterations ({iterations}), batch_size ({batch_size}) and "
            f"eval_every ({eval_every}) must be positive")
    if snapshot_at is not None and not 0 <= snapshot_at <= iterations:
        raise ValueError(f"train: snapshot_at={snapshot_at} is outside [0, {iterations}]")

    history = History()
    snapshot = None
    done = 0
    if checkpoint is not None and Path(checkpoint).exists():
        done, history, snapshot = load_checkpoint(checkpoint, model, optimizer)
    last_saved = time.monotonic()
    batches = minibatches(len(data.x_train), batch_size, seed)
    for _ in range(done):  # the batches the checkpointed iterations consumed
        next(batches)
    loss_sum = 0.0
    correct = 0
    seen = 0
    for iteration in range(done + 1, iterations + 1):
        if iteration - 1 == snapshot_at:
            snapshot = {name: p.copy() for name, p in model.named_params().items()}
        index = next(batches)
        xb, yb = data.x_train[index], data.y_train[index]
        logits = model.forward(xb, training=True)
        loss, dlogits = softmax_cross_entropy(logits, yb)
        model.backward(dlogits, input_grad=False)   # nobody needs dL/dimages
        optimizer.step()

        loss_sum += loss * len(index)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        seen += len(index)
        if iteration % eval_every == 0 or iteration == iterations:
            val_loss, val_acc = evaluate(model, data.x_val, data.y_val, eval_batch_size)
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test, eval_batch_size)
            history.append(iteration=iteration,
                           train_loss=loss_sum / seen, train_acc=correct / seen,
                           val_loss=val_loss, val_acc=val_acc,
                           test_loss=test_loss, test_acc=test_acc)
            loss_sum, correct, seen = 0.0, 0, 0
            if checkpoint is not None and time.monotonic() - last_saved >= checkpoint_seconds:
                save_checkpoint(checkpoint, model, optimizer, iteration, history, snapshot)
                last_saved = time.monotonic()
            if on_eval is not None:
                on_eval(iteration, history)
    if snapshot_at == iterations:
        snapshot = {name: p.copy() for name, p in model.named_params().items()}
    return TrainResult(history=history, snapshot=snapshot)


def save_checkpoint(path, model, optimizer, iteration, history, snapshot):
    """Everything training needs to continue after ``iteration``, in one .npz (atomic).

    Parameters, optimizer moments and step count, the evaluation history, the
    rewind snapshot if taken, and each Dropout layer's random-generator state.
    Checkpoints are only taken right after an evaluation, where the running
    training loss/accuracy restart from zero, so those need no saving.
    """
    arrays = {f"param:{name}": p for name, p in model.named_params().items()}
    arrays.update({f"optimizer:{name}:{key}": a
                   for name, state in optimizer.state.items() for key, a in state.items()})
    arrays.update({f"snapshot:{name}": a for name, a in (snapshot or {}).items()})
    arrays["history"] = np.array(history.rows, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
    meta = {"iteration": iteration, "optimizer_iteration": optimizer.iteration,
            "dropout": {layer.name: layer.rng.bit_generator.state
                        for layer in model.layers if isinstance(layer, Dropout)}}
    arrays["meta"] = np.array(json.dumps(meta))
    save_arrays(path, arrays)


def load_checkpoint(path, model, optimizer):
    """Restore a ``save_checkpoint`` file into ``model`` and ``optimizer``.

    Returns ``(iteration, history, snapshot)``.
    """
    saved = load_arrays(path)
    meta = json.loads(str(saved["meta"]))
    for name, param in model.named_params().items():
        param[...] = saved[f"param:{name}"]
    for key, array in saved.items():
        if key.startswith("optimizer:"):
            _, name, slot = key.split(":")
            optimizer.state.setdefault(name, {})[slot] = array.copy()
    optimizer.iteration = meta["optimizer_iteration"]
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.rng.bit_generator.state = meta["dropout"][layer.name]
    history = History()
    history.rows = [(int(row[0]), *map(float, row[1:])) for row in saved["history"]]
    snapshot = {key.split(":", 1)[1]: a for key, a in saved.items() if key.startswith("snapshot:")}
    return meta["iteration"], history, snapshot or None
