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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import minibatches, pad_crop_flip
from .protocol import walk
from .losses import softmax_cross_entropy
from .rundir import RunFileError, load_arrays, save_arrays, set_aside
from .threads import set_threads, use_threads

HISTORY_COLUMNS = (
    "iteration",
    "train_loss", "train_acc",
    "val_loss", "val_acc",
    "test_loss", "test_acc",
)


def evaluate(model, x, y, batch_size=500, threads=None):
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in chunks, forward only.

    Memory is that of one chunk, whatever ``len(x)``: the chunk is the only
    activation batch alive at a time. Dropout is off (``training=False``).
    ``threads`` (None: every core) as in ``train``; the result does not depend on it.
    """
    with use_threads(threads):
        return _evaluate(model, x, y, batch_size)


def _evaluate(model, x, y, batch_size):
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


def fixed_accuracy_column(iteration):
    """The summary's name for the test accuracy at a fixed ``iteration`` (§4's measure)."""
    return f"{FIXED_PREFIX}{iteration}"


FIXED_PREFIX = "test_acc_at_iteration_"


def early_stop_index(val_loss):
    """The early-stop evaluation: the index i of the minimum of ``val_loss`` (the
    validation losses of the evaluations, in order), the first such i on ties:
    val_loss[i] <= val_loss[j] for every j, and val_loss[j] > val_loss[i] for j < i."""
    ### BEGIN SOLUTION 3.3
    return int(np.argmin(val_loss))
    ### END SOLUTION


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
        return early_stop_index(self.column("val_loss"))

    def summary(self, accuracy_at=()):
        """The paper's measurements of this run, as a flat dict of plain numbers; and
        ``test_acc_at_K`` for each iteration K of ``accuracy_at`` (§4's fixed-iteration
        measure), which must be one of the evaluated iterations."""
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
            **{fixed_accuracy_column(k): self._test_acc_at(k) for k in accuracy_at},
        }

    def _test_acc_at(self, iteration):
        for row in self.rows:
            if row[0] == iteration:
                return float(row[HISTORY_COLUMNS.index("test_acc")])
        raise ValueError(f"iteration {iteration} was not evaluated; the history holds "
                         f"{[row[0] for row in self.rows]}")

    def to_csv(self):
        """The history as CSV text, numbers written with ``repr`` (exact round trip)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        for row in self.rows:
            writer.writerow([repr(value) for value in row])
        return out.getvalue()

    @classmethod
    def from_csv(cls, text):
        """The History that ``to_csv`` wrote; ValueError naming the first bad line."""
        lines = list(csv.reader(io.StringIO(text)))
        if not lines or tuple(lines[0]) != HISTORY_COLUMNS:
            raise ValueError(f"the header is not {','.join(HISTORY_COLUMNS)}")
        history = cls()
        for number, cells in enumerate(lines[1:], start=2):
            try:
                if len(cells) != len(HISTORY_COLUMNS):
                    raise ValueError(f"{len(cells)} cells")
                history.rows.append((int(cells[0]), *map(float, cells[1:])))
            except ValueError as error:
                raise ValueError(f"line {number} is not a row of numbers ({error})") from None
        return history


def evaluation_iterations(iterations, eval_every):
    """The iterations after which ``train`` evaluates: every ``eval_every``, and the last."""
    scheduled = list(range(eval_every, iterations + 1, eval_every))
    return scheduled if scheduled and scheduled[-1] == iterations else scheduled + [iterations]


@dataclass
class TrainResult:
    history: History
    snapshot: dict | None  # params at iteration ``snapshot_at`` (for rewinding), else None


def train(model, optimizer, data, *, iterations, batch_size, seed, eval_every=100,
          eval_batch_size=500, augment=False, snapshot_at=None, on_eval=None, checkpoint=None,
          checkpoint_seconds=60.0, threads=None):
    """Train ``model`` for exactly ``iterations`` minibatches of ``batch_size``.

    ``data`` has ``x_train, y_train, x_val, y_val, x_test, y_test``. The
    minibatch order comes from ``seed`` alone, so two runs with the same
    seed, model and optimizer are identical bit for bit.

    ``augment``: each minibatch is padded, cropped and flipped
    (``data.pad_crop_flip``) with a generator seeded by ``(seed, iteration)``. The
    draws are a function of the iteration, so a training continued from a
    checkpoint augments exactly as an uninterrupted one, with no generator state
    to save.

    ``snapshot_at=k`` returns a copy of the parameters after ``k`` iterations
    (``k = 0``: before training), the weights a rewound ticket restarts from.
    ``on_eval(iteration, history)`` is called after every evaluation (for
    progress bars).

    ``checkpoint``: a file path. If it exists, training continues from it;
    after an evaluation, at most every ``checkpoint_seconds``, the whole
    training state is saved there, so a killed training loses minutes, not
    hours, and continues to the same numbers bit for bit. A checkpoint that is
    damaged or not of this training (``read_checkpoint``) is set aside as
    ``checkpoint.npz.corrupt`` with a RuntimeWarning, and training starts over.

    ``threads``: how many cores to train on, None (the default) for every core
    this process may use; or a function called before every step that returns
    the count, for a count that changes while training (the lottery's worker
    processes share the cores among the trainings running at the moment). The
    numbers do not depend on it, bit for bit: every layer cuts its work into
    pieces fixed by the shapes alone, runs each on one BLAS thread, and adds
    partial sums in piece order (``minilottery.threads``). A seeded run gives
    the same numbers in a notebook, on the command line and in a worker
    process, on 1 core or on 16.
    """
    thread_count = threads if callable(threads) else (lambda: threads)
    with use_threads(thread_count()):
        return _train(model, optimizer, data, iterations, batch_size, seed, eval_every,
                      eval_batch_size, augment, snapshot_at, on_eval, checkpoint,
                      checkpoint_seconds, thread_count)


def augmentation_rng(seed, iteration):
    """The generator that augments minibatch ``iteration`` of the training seeded ``seed``:
    child ``iteration`` of SeedSequence(seed), independent of the minibatch order's stream."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(iteration,)))


def _train(model, optimizer, data, iterations, batch_size, seed, eval_every, eval_batch_size,
           augment, snapshot_at, on_eval, checkpoint, checkpoint_seconds, thread_count):
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
        try:
            done, history, snapshot = load_checkpoint(checkpoint, model, optimizer,
                                                      iterations, eval_every, snapshot_at)
        except RunFileError as error:
            moved = set_aside(checkpoint)
            warnings.warn(f"{error}; set aside as {moved.name}, the training restarts from "
                          f"iteration 0", RuntimeWarning, stacklevel=3)
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
        set_threads(thread_count())
        index = next(batches)
        xb, yb = data.x_train[index], data.y_train[index]
        if augment:
            xb = pad_crop_flip(xb, augmentation_rng(seed, iteration))
        logits = model.forward(xb, training=True)
        loss, dlogits = softmax_cross_entropy(logits, yb)
        model.backward(dlogits, input_grad=False)   # nobody needs dL/dimages
        optimizer.step()

        loss_sum += loss * len(index)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        seen += len(index)
        if iteration % eval_every == 0 or iteration == iterations:
            val_loss, val_acc = _evaluate(model, data.x_val, data.y_val, eval_batch_size)
            test_loss, test_acc = _evaluate(model, data.x_test, data.y_test, eval_batch_size)
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
    rewind snapshot if taken, and each layer's own state (``own_state``: a Dropout's
    random generator, a BatchNorm's running statistics): arrays as arrays, the rest
    in the metadata.
    Checkpoints are only taken right after an evaluation, where the running
    training loss/accuracy restart from zero, so those need no saving.
    """
    arrays = {f"param:{name}": p for name, p in model.named_params().items()}
    arrays.update({f"optimizer:{name}:{key}": a
                   for name, state in optimizer.state.items() for key, a in state.items()})
    arrays.update({f"snapshot:{name}": a for name, a in (snapshot or {}).items()})
    arrays["history"] = np.array(history.rows, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
    layers = {}
    for layer_path, layer in walk(model):
        for key, value in layer.own_state().items():
            if isinstance(value, np.ndarray):
                arrays[f"state:{layer_path}:{key}"] = value
            else:
                layers.setdefault(layer_path, {})[key] = value
    meta = {"iteration": iteration, "optimizer_iteration": optimizer.iteration, "layers": layers}
    arrays["meta"] = np.array(json.dumps(meta))
    save_arrays(path, arrays)


def load_checkpoint(path, model, optimizer, iterations, eval_every, snapshot_at=None):
    """Restore a ``save_checkpoint`` file into ``model`` and ``optimizer``.

    Returns ``(iteration, history, snapshot)``. The file is checked first
    (``read_checkpoint``), so a damaged or mismatched checkpoint raises
    ``RunFileError`` and changes nothing.
    """
    saved, meta, history, snapshot = read_checkpoint(path, model, optimizer, iterations,
                                                     eval_every, snapshot_at)
    for name, param in model.named_params().items():
        param[...] = saved[f"param:{name}"]
    for name, state in optimizer.state.items():
        for slot in state:
            state[slot] = saved[f"optimizer:{name}:{slot}"].copy()
    optimizer.iteration = meta["optimizer_iteration"]
    for layer_path, layer in walk(model):
        layer.load_own_state(_layer_state(saved, meta, layer_path, layer))
    return meta["iteration"], history, snapshot


def _layer_state(saved, meta, path, layer):
    """What save_checkpoint stored of this layer's own state, put back together."""
    state = dict(meta["layers"].get(path, {}))
    state.update({key: saved[f"state:{path}:{key}"] for key in layer.own_state()
                  if f"state:{path}:{key}" in saved})
    return state


def read_checkpoint(path, model, optimizer, iterations, eval_every, snapshot_at=None):
    """The contents of a checkpoint, checked against the training it would continue.

    It must read back whole and hold a float32 array of the right shape for
    every parameter and optimizer buffer (and for all or none of the rewind
    snapshot), an iteration within the budget, the evaluations the schedule
    makes up to it, each layer's own state (checked by the layer), and the snapshot if
    ``snapshot_at`` lies before that iteration. Anything else
    raises ``RunFileError``: such a file cannot continue this training.
    Returns ``(arrays, meta, history, snapshot or None)``.
    """
    saved = load_arrays(path)

    def require(condition, reason):
        if not condition:
            raise RunFileError(path, f"not a checkpoint of this training ({reason})")

    params = model.named_params()
    shapes = {f"param:{name}": p.shape for name, p in params.items()}
    shapes.update({f"optimizer:{name}:{slot}": buffer.shape
                   for name, state in optimizer.state.items() for slot, buffer in state.items()})
    shapes.update({f"state:{path}:{key}": value.shape for path, layer in walk(model)
                   for key, value in layer.own_state().items() if isinstance(value, np.ndarray)})
    snapshot_keys = {f"snapshot:{name}": p.shape for name, p in params.items()}
    if any(key.startswith("snapshot:") for key in saved):
        shapes.update(snapshot_keys)
    require(saved.keys() == shapes.keys() | {"meta", "history"},
            f"arrays {sorted(saved.keys() ^ (shapes.keys() | {'meta', 'history'}))} "
            f"missing or unexpected")
    for key, shape in shapes.items():
        require(saved[key].dtype == np.float32 and saved[key].shape == shape,
                f"{key} is {saved[key].dtype} {saved[key].shape}, expected float32 {shape}")
    try:
        meta = json.loads(str(saved["meta"][()]))
        iteration, optimizer_iteration = meta["iteration"], meta["optimizer_iteration"]
        layer_states = meta["layers"]
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise RunFileError(path, f"its metadata is unreadable ({error})") from None
    require(type(iteration) is int and 1 <= iteration <= iterations,
            f"iteration {iteration!r} is outside the budget of {iterations}")
    require(type(optimizer_iteration) is int and optimizer_iteration >= 0,
            f"optimizer iteration {optimizer_iteration!r}")
    layers = dict(walk(model))
    require(isinstance(layer_states, dict) and set(layer_states) <= set(layers),
            "its layer states name layers the model does not have")
    for layer_path, layer in layers.items():
        try:
            layer.check_own_state(_layer_state(saved, meta, layer_path, layer))
        except (ValueError, TypeError, AttributeError) as error:
            raise RunFileError(path, f"not a checkpoint of this training ({error})") from None
    evaluated = [i for i in evaluation_iterations(iterations, eval_every) if i <= iteration]
    rows = saved["history"]
    require(rows.dtype == np.float64 and rows.shape == (len(evaluated), len(HISTORY_COLUMNS))
            and np.array_equal(rows[:, 0], evaluated) and evaluated and evaluated[-1] == iteration,
            f"its history does not hold the evaluations up to iteration {iteration}")
    history = History()
    history.rows = [(int(row[0]), *map(float, row[1:])) for row in rows]
    snapshot = {key.split(":", 1)[1]: a for key, a in saved.items() if key.startswith("snapshot:")}
    require(bool(snapshot) == (snapshot_at is not None and snapshot_at < iteration),
            f"a rewind snapshot is {'present' if snapshot else 'absent'}")
    return saved, meta, history, snapshot or None
