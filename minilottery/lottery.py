"""The lottery ticket experiment: train, prune, reset, repeat; and its controls.

Frankle & Carbin's iterative magnitude pruning, one *level* per round
(level 0 is the dense network, level k has been pruned k times):

1. Build the net with seed s and keep its initial weights theta_0.
2. Train the level's network, weights ``m ⊙ theta_0``, mask m fixed, for the
   full budget; record validation and test metrics every 100 iterations.
3. Prune: in each layer remove the given fraction of the *surviving* weights
   with the smallest trained magnitude |w|. That gives the next mask m'.
4. Reset the survivors to theta_0 (the winning ticket is ``m' ⊙ theta_0``)
   and go to 2.

At every level two controls train beside the ticket:

* **random reinit**: the ticket's mask m with a fresh random initialisation
  theta'_0 (the paper's control: the structure without the lucky init);
* **random pruning**: the ticket's init theta_0 with a random mask of the same
  per-layer sizes (the init without the found structure).

Variants: ``one_shot`` prunes the trained dense net once to each level's
size; ``rewind_iteration = k`` resets survivors to theta_k, the dense run's
weights after k iterations, instead of theta_0.

Each training (a ``Piece``) starts once its inputs are in the run directory
(``minilottery.rundir``). It goes to an executor (``minilottery.parallel``:
this process, worker processes, a Dask cluster) as a task that carries those
inputs (``minilottery.pieces``), and its result comes back here, where it is
written. So a killed run resumes from its last finished training and ends
with the same numbers as an uninterrupted one, wherever the trainings ran.
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import closing, contextmanager

import numpy as np

from . import pruning
from .config import load_config
from .parallel import ProcessExecutor, run_tasks
from .pieces import (DATA_ORDER_STREAM, INIT_STREAM, RANDOM_MASK_STREAM, REINIT_STREAM,  # noqa: F401
                     DataSpec, Training, build_model, derive_seed, make_optimizer, run_training)
from .results import summary_csv, summary_rows
from .resume import check_run
from .rundir import (Piece, RunDir, RunFileError, check_writable, level_pieces, load_arrays, read_json,
                     save_arrays, write_json, write_text)

BRANCHES = ("ticket", "reinit", "random")


def pruning_rates(config, model):
    """The per-layer rate map: the paper's fc/conv/output rule plus explicit overrides."""
    rates = pruning.layerwise_rates(model, config.fc_rate, conv_rate=config.conv_rate,
                                    output_rate=config.output_rate)
    by_layer = {name.rsplit(".", 1)[0]: name for name in rates}
    for layer, rate in config.layer_rates.items():
        if layer not in by_layer:
            raise ValueError(f"layer_rates names layer {layer!r}, which {config.net} does not "
                             f"have; prunable layers: {', '.join(by_layer)}")
        rates[by_layer[layer]] = rate
    return rates


def check_schedule(config):
    """Fail before any training if the schedule asks more rounds than a layer's weights allow.

    With ``floor(rate * survivors)`` pruned per round, a layer never empties;
    it stops shrinking once ``rate * survivors < 1``. A round that would prune
    nothing from a layer with a nonzero rate is an error, not a silent no-op.
    """
    model = build_model(config, seed=0)
    for name, size, rate in _pruned_units(config, model):
        for round_ in range(1, config.rounds + 1):
            if pruning.kept_after_rounds(size, rate, round_) == pruning.kept_after_rounds(
                    size, rate, round_ - 1):
                kept = pruning.kept_after_rounds(size, rate, round_ - 1)
                raise ValueError(
                    f"{config.rounds} rounds are more than {name} allows: at round {round_} "
                    f"it keeps {kept} of {size} weights and rate {rate} prunes none of them; "
                    f"use at most {round_ - 1} rounds")


def _pruned_units(config, model):
    """(what, weight count, rate) for each unit a round prunes: a layer (layer-wise), or
    a group of layers ranked together (global; pruning.pruning_groups)."""
    rates = pruning_rates(config, model)
    masks = model.named_masks()
    if config.pruning == "layerwise":
        return [(name, masks[name].size, rate) for name, rate in rates.items() if rate]
    groups = pruning.pruning_groups(rates, {name: m.shape for name, m in masks.items()})
    return [(names[0] if len(names) == 1 else f"the {len(names)} layers from {names[0]} "
             f"ranked together", sum(masks[n].size for n in names), rate)
            for names, rate in groups]


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------

class Reporter:
    """Progress hooks; the command line draws bars and tables from them. All optional."""

    def piece_progress(self, piece, iteration, val_acc):
        pass

    def piece_done(self, piece, metrics):
        pass

    def level_done(self, level, rows):
        pass


def run_experiment(config, run_dir, *, data=None, data_dir=None, executor=None, jobs=1,
                   reporter=None, shared_arrays=None, notice=None):
    """Run (or resume) the experiment ``config`` in ``run_dir``; return the summary rows.

    Trainings already finished in ``run_dir`` are not repeated; damaged
    files are set aside and their work redone (see ``open_run``, whose
    ``notice`` this is). ``executor`` says where the trainings run (see
    minilottery.parallel; default: ``jobs`` worker processes, or this process
    for ``jobs = 1``); the results do not depend on it. ``data`` is a loaded
    Dataset; else it is loaded from ``data_dir`` (see ``minilottery.data``) if
    anything is left to train, here, or by each worker of an executor that
    does not share this machine's files. Worker processes map the dataset's
    arrays from shared memory (``shared_arrays``: the SharedArrays that loaded
    ``data``, if any, see ``load_data``; else they are copied there).
    """
    executor = executor or ProcessExecutor(jobs)
    with open_run(config, run_dir, notice=notice) as run:
        todo = pieces_to_do(config, run.root)
        if todo:
            if data is None:
                data = (load_data(config, data_dir) if executor.shares_files
                        else DataSpec.of(config, data_dir))
            train_pieces(config, run, data, todo, executor=executor, reporter=reporter,
                         shared_arrays=shared_arrays)
        return write_summary(run, config)


@contextmanager
def open_run(config, run_dir, *, notice=None):
    """Lock ``run_dir`` for the ``with`` block and make it ready to train in; yield its RunDir.

    A new run: checks that the directory can take the run (writable, enough
    free space), then writes config.json. An existing one: checks that its
    config.json is ``config``, deletes the temporary files of writes a kill
    interrupted, and checks every file (``resume.check_run``): damaged ones
    are set aside, each reported by ``notice(line)`` (default: a
    RuntimeWarning), and their work redone. Then θ₀ and every mask that can
    be computed are written. Raises ``RunInUse`` if another process holds the
    directory; a new directory that fails before it holds a run is removed.
    """
    config.validate()
    check_schedule(config)
    notice = notice or (lambda line: warnings.warn(line, RuntimeWarning, stacklevel=4))
    run = RunDir(run_dir)
    existed = run.root.exists()
    if existed and not run.root.is_dir():
        raise NotADirectoryError(f"{run.root} is a file, not a run directory")
    with run.locked():
        try:
            template = build_model(config, seed=0)  # for the names and shapes only
            if run.config.exists():
                stored = load_config(run.config)
                if stored != config:
                    raise ValueError(f"{run.root} holds a run with a different config; resume it "
                                     f"with its own settings or choose another directory")
                run.remove_partial_files()  # left by a run killed in the middle of a write
                check_run(run, config, template, make_optimizer(config, template), notice)
            elif run.holds_other_files():
                raise ValueError(f"{run.root} exists and is not a minilottery run directory")
            check_writable(run.root, disk_needed(config, template,
                                                 pieces_to_do(config, run.root)))
            if not run.config.exists():
                write_text(run.config, config.to_json())
            write_inputs(run, config)
        except BaseException:
            if not existed:
                shutil.rmtree(run.root, ignore_errors=True)
            raise
        yield run


def train_pieces(config, run, data, todo, *, executor=None, jobs=1, reporter=None,
                 shared_arrays=None):
    """Train the pieces ``todo`` of an open run, each as soon as its inputs exist.

    Each training goes to ``executor`` (see ``run_experiment``) as a
    ``Training`` that carries its inputs, and comes back as a result that is
    written here (``save_result``). After each ticket, the masks it prunes to
    are written; after each level, summary.csv is rewritten and
    ``reporter.level_done`` called.
    """
    executor = executor or ProcessExecutor(jobs)
    reporter = reporter or Reporter()
    record_data(run, getattr(data, "provenance", None))
    reported = 0  # levels are reported in order, each once all its trainings are done
    finished = run_tasks(todo, ready=lambda piece: is_ready(run, config, piece),
                         prepare=lambda piece: make_training(run, config, piece,
                                                             executor.shares_files),
                         work=run_training, shared=(config, data), executor=executor,
                         priority=_critical_path_first, on_progress=reporter.piece_progress,
                         shared_arrays=shared_arrays)
    with closing(finished):  # an exception here stops the workers at once, not when collected
        for training, result in finished:
            piece = training.piece
            record_data(run, result.provenance)
            save_result(run, piece, result)
            reporter.piece_done(piece, result.metrics)
            if piece.branch == "ticket":
                # The ticket's trained weights give the next level's mask (every level's, one-shot).
                for level in range(piece.level + 1, config.rounds + 1):
                    if masks_computable(run, config, piece.trial, level):
                        write_masks(run, config, piece.trial, level)
            while reported <= config.rounds and all(
                    run.is_done(p) for p in level_pieces(config, reported)):
                rows = write_summary(run, config)
                reporter.level_done(reported, [row for row in rows if row["level"] == reported])
                reported += 1


def make_training(run, config, piece, shares_files=True):
    """The task that trains ``piece``: its starting weights and mask (``prepare_model``),
    and its checkpoint file in the run directory if the worker can see it."""
    model, _ = prepare_model(run, config, piece)
    state = model.state_dict()
    checkpoint = str(run.piece(piece) / "checkpoint.npz") if shares_files else None
    return Training(piece, state["params"], state["masks"], checkpoint)


def save_result(run, piece, result):
    """Write what a training sent back; metrics.json last, for it marks the training done."""
    out = run.piece(piece)
    if result.final is not None:
        save_arrays(out / "final.npz", result.final)
    if result.snapshot is not None:
        save_arrays(run.rewind(piece.trial), result.snapshot)
    write_text(out / "history.csv", result.history_csv)
    write_json(out / "metrics.json", result.metrics)
    (out / "checkpoint.npz").unlink(missing_ok=True)


def record_data(run, provenance):
    """Write where the run's data came from (folder, files, checksums) to data.json.

    ``provenance`` is a Dataset's (see minilottery.data); None or empty for
    data made in memory (tests, notebooks), which records nothing. A resumed
    run must train on the same data: if data.json lists files with other
    checksums, or other split sizes, that is an error naming both sources.
    The same files found in another place are fine (data.json then records
    the new place).
    """
    if not provenance:
        return
    path = run.root / "data.json"

    def content(record):
        return ([(f.get("algorithm"), f.get("checksum")) for f in record.get("files", [])],
                record.get("examples"))
    try:
        stored = read_json(path)
    except (FileNotFoundError, RunFileError):  # not written yet, or damaged: it is only a record
        stored = None
    if isinstance(stored, dict) and content(stored) != content(provenance):
        raise ValueError(f"{path}: the run was trained on other data ({stored.get('source')}) "
                         f"than was loaded now ({provenance['source']}); point --data-dir at "
                         f"the run's data")
    if stored != provenance:
        write_json(path, provenance)


def write_summary(run, config):
    """Rewrite summary.csv from the trainings' metrics if it differs (missing, stale, damaged).

    Returns the rows.
    """
    rows = summary_rows(run, config)
    text = summary_csv(rows)
    try:
        current = run.summary.read_bytes()
    except OSError:
        current = None
    if current != text.encode("utf-8"):
        write_text(run.summary, text)
    return rows


def disk_needed(config, model, todo):
    """Bytes the trainings ``todo`` will write, about: masks, final weights, checkpoints."""
    param_bytes = sum(p.nbytes for p in model.named_params().values())
    mask_bytes = sum(m.nbytes for m in model.named_masks().values())
    theta_bytes = config.trials * param_bytes * (2 if config.rewind_iteration else 1)
    tickets = sum(piece.branch == "ticket" for piece in todo)
    checkpoints = 2 * 5 * param_bytes  # a running training's weights, moments and snapshot
    return theta_bytes + tickets * param_bytes + len(todo) * mask_bytes + checkpoints + 10**7


def load_data(config, data_dir=None, download=True, allocate=np.empty):
    """The experiment's dataset with its validation split (see minilottery.data).

    ``allocate=shared_arrays.empty`` puts the images in shared memory, for workers.
    """
    return DataSpec.of(config, data_dir, download).load(allocate)


def pieces_to_do(config, run_dir):
    """The trainings of the whole experiment that ``run_dir`` has not finished yet."""
    run = RunDir(run_dir)
    return [piece for level in range(config.rounds + 1)
            for piece in level_pieces(config, level) if not run.is_done(piece)]


def write_inputs(run, config):
    """Write each trial's θ₀ and every mask whose source ticket has finished, if missing."""
    for trial in range(config.trials):
        if not run.theta0(trial).exists():
            model = build_model(config, derive_seed(config.seed, trial, INIT_STREAM))
            save_arrays(run.theta0(trial), model.state_dict()["params"])
        for level in range(config.rounds + 1):
            if masks_computable(run, config, trial, level):
                write_masks(run, config, trial, level)


def write_masks(run, config, trial, level):
    """Compute this level's mask (and the random-pruning controls' masks) once, from disk."""
    if not run.mask(trial, level).exists():
        template = build_model(config, seed=0)  # for the layer names and shapes only
        if level == 0:
            mask = {name: np.ones_like(m) for name, m in template.named_masks().items()}
        else:
            rates = pruning_rates(config, template)
            if config.one_shot:
                # Prune the trained dense network once, to level-many rounds' size.
                trained = load_arrays(run.piece(Piece(trial, 0, "ticket")) / "final.npz")
                dense = load_arrays(run.mask(trial, 0))
                weights = {name: trained[name] for name in dense}
                mask = pruning.one_shot_masks(weights, dense, rates, level)
            else:
                # Iterative: prune the previous level's trained ticket by one more round.
                trained = load_arrays(run.piece(Piece(trial, level - 1, "ticket")) / "final.npz")
                previous = load_arrays(run.mask(trial, level - 1))
                weights = {name: trained[name] for name in previous}
                if config.pruning == "global":
                    groups = pruning.pruning_groups(rates, {n: m.shape for n, m in previous.items()})
                    mask = pruning.prune_groups_globally(weights, previous, groups)
                else:
                    mask = pruning.prune_by_magnitude(weights, previous, rates)
        save_arrays(run.mask(trial, level), mask)
    if level > 0:
        mask = load_arrays(run.mask(trial, level))
        for r in range(config.random_prunes):
            path = run.piece(Piece(trial, level, "random", r)) / "mask.npz"
            if not path.exists():
                rng = np.random.default_rng(
                    derive_seed(config.seed, trial, level, RANDOM_MASK_STREAM, r))
                save_arrays(path, pruning.random_masks_like(mask, rng))


def masks_computable(run, config, trial, level):
    """Whether the ticket training that level ``level``'s mask is pruned from has finished."""
    source = 0 if config.one_shot else level - 1
    return level == 0 or run.is_done(Piece(trial, source, "ticket"))


def is_ready(run, config, piece):
    """Whether a training's inputs are on disk: its mask (the random control's own), and
    θ_k when it rewinds to it."""
    if piece.branch == "random":
        ready = (run.piece(piece) / "mask.npz").exists()
    else:
        ready = run.mask(piece.trial, piece.level).exists()
    if config.rewind_iteration > 0 and piece.level > 0 and piece.branch != "reinit":
        ready = ready and run.rewind(piece.trial).exists()
    return ready


def prepare_model(run, config, piece):
    """The network a piece starts training from, and its mask.

    ticket and random pruning: ``mask ⊙ theta_0`` (or ``mask ⊙ theta_k`` when
    rewinding; ``start_weights`` says which); random reinit: ``mask ⊙ theta'_0`` with
    a fresh init theta'_0.
    """
    trial, level = piece.trial, piece.level
    if piece.branch == "random":
        mask = load_arrays(run.piece(piece) / "mask.npz")
    else:
        mask = load_arrays(run.mask(trial, level))

    if piece.branch == "reinit":
        model = build_model(config, derive_seed(config.seed, trial, level, REINIT_STREAM,
                                                piece.replicate))
        model.set_masks(mask)
    else:
        ### BEGIN SOLUTION 5.1
        model = build_model(config, derive_seed(config.seed, trial, INIT_STREAM))
        pruning.reset_to(model, start_weights(run, config, piece), mask)
        ### END SOLUTION
    return model, mask


def start_weights(run, config, piece):
    """The weights a ticket or random-pruning level resets its survivors to: theta_0
    of its trial (``run.theta0(trial)``), or theta_k (``run.rewind(trial)``) when
    rewinding, i.e. when ``config.rewind_iteration`` = k > 0 and the level is > 0. The
    dense level 0 always starts from theta_0: it is the training that saves theta_k."""
    if config.rewind_iteration == 0:                      # the paper's reset
        return load_arrays(run.theta0(piece.trial))
    ### BEGIN SOLUTION 7.1
    rewinding = piece.level > 0
    return load_arrays(run.rewind(piece.trial) if rewinding else run.theta0(piece.trial))
    ### END SOLUTION


def _critical_path_first(piece):
    """Tickets before controls (the next level waits on the ticket), then by level."""
    return (piece.branch != "ticket", piece.level, piece.trial,
            BRANCHES.index(piece.branch), piece.replicate)
